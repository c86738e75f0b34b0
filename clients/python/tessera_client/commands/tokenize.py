"""``tessera tokenize a.png b.png``: token grids of images, as JSON."""

from __future__ import annotations

import argparse

from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument(
        "--no-resize", action="store_true", help="reject images not at the model's size"
    )
    parser.add_argument("--latents", action="store_true", help="also return quantized latents")
    parser.add_argument("-o", "--output", default=None, help="write JSON here (default: stdout)")
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        result = client.tokenize(
            args.images, resize=not args.no_resize, return_latents=args.latents
        )
    _common.print_json(result.model_dump(exclude_defaults=not args.latents), args.output)
    return _common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
