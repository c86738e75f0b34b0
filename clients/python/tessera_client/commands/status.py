"""``tessera status JOB_ID``: a job's state (exit 5 when it failed or was cancelled)."""

from __future__ import annotations

import argparse

from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_job_arguments(parser)
    parser.add_argument("-o", "--output", default=None, help="write a finished job's images here")
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        job = client.job(args.job_id)
    _common.show_job(job, as_json=args.json, output=args.output)
    return _common.job_exit_code(job)


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
