"""``tessera generate "prompt" -o out.png``: generate images and write them as PNGs."""

from __future__ import annotations

import argparse
import sys

from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common.add_prompt_argument(parser)
    parser.add_argument(
        "-o",
        "--output",
        default="out.png",
        help="first image path; more images go to out-1.png, out-2.png, … (default: %(default)s)",
    )
    parser.add_argument(
        "--progress", action="store_true", help="stream progress (a bar per stage on stderr)"
    )
    _common.add_generation_arguments(parser)
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        opts = _common.options(args)
        if args.progress:
            bar = _common.ProgressBar()
            try:
                for event in client.generate_stream(args.prompt, timeout=args.timeout, **opts):
                    bar.update(event)
                    result = event.result
            finally:
                bar.close()
        else:
            result = client.generate(args.prompt, **opts)
    _common.write_images(result, args.output)
    print(f"seed {result.seed}, route {result.route}, model {result.model}", file=sys.stderr)
    return _common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
