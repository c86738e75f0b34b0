"""``tessera embed --text "a cat" --text "a dog"`` (or ``--image a.png``): CLIP embeddings,
as JSON ``{"dim": D, "embeddings": [[...], ...]}``."""

from __future__ import annotations

import argparse

from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", action="append", help="a text to embed (repeatable)")
    what.add_argument("--image", action="append", help="an image file to embed (repeatable)")
    parser.add_argument("-o", "--output", default=None, help="write JSON here (default: stdout)")
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        result = client.embed(args.text, images=args.image)
    _common.print_json({"dim": result.dim, "embeddings": result.vectors}, args.output)
    return _common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
