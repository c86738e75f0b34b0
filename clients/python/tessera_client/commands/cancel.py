"""``tessera cancel JOB_ID``: cancel a queued or running job; prints its state after."""

from __future__ import annotations

import argparse

from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_job_arguments(parser)
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        job = client.cancel(args.job_id)
    _common.show_job(job, as_json=args.json)
    return _common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
