"""``tessera cancel JOB_ID``: cancel a queued or running job; prints its state after."""

from __future__ import annotations

import argparse

from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")
    parser.add_argument("--json", action="store_true", help="print the job as JSON")
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        job = client.cancel(args.job_id)
    if args.json:
        _common.print_json(_common.job_json(job))
    else:
        print(_common.describe_job(job))
    return _common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
