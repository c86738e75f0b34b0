"""``tessera status JOB_ID``: a job's state (exit 5 when it failed or was cancelled)."""

from __future__ import annotations

import argparse

from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")
    parser.add_argument("--json", action="store_true", help="print the job as JSON")
    parser.add_argument("-o", "--output", default=None, help="write a finished job's images here")
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        job = client.job(args.job_id)
    if args.json:
        _common.print_json(_common.job_json(job))
    else:
        print(_common.describe_job(job))
    if args.output and job.result is not None:
        _common.write_images(job.result, args.output)
    return _common.job_exit_code(job)


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
