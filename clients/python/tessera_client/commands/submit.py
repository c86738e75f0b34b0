"""``tessera submit "prompt"``: queue an async job and print its id (``--wait`` to block
until it ends, writing the images with ``-o``)."""

from __future__ import annotations

import argparse

from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_prompt_argument(parser)
    parser.add_argument("--priority", choices=["normal", "high"], default="normal")
    parser.add_argument(
        "--idempotency-key", default=None, help="same key, same job: safe to re-run the command"
    )
    parser.add_argument("--wait", action="store_true", help="wait for the job, showing progress")
    parser.add_argument("-o", "--output", default=None, help="with --wait: write the images here")
    parser.add_argument("--json", action="store_true", help="print the job as JSON")
    _common.add_generation_arguments(parser)
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        job = client.submit(
            args.prompt,
            priority=args.priority,
            idempotency_key=args.idempotency_key,
            **_common.options(args),
        )
        if args.wait:
            from tessera_client.commands.watch import follow

            return follow(client, job.id, output=args.output, as_json=args.json)
    if args.json:
        _common.print_json(_common.job_json(job))
    else:
        print(job.id)  # alone on stdout: ID=$(tessera submit "…")
    return _common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
