"""``tessera variations image.png -o out.png``: variations of an image, written as PNGs."""

from __future__ import annotations

import argparse
import sys

from tessera_client import _wire
from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="source image file (PNG)")
    parser.add_argument("-o", "--output", default="out.png", help="default: %(default)s")
    _common.add_image_arguments(parser, "variations")
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    with _common.make_client(args) as client:
        result = client.variations(args.image, **_common.options(args, _wire.VARIATION_FIELDS))
    _common.write_images(result, args.output)
    print(f"seed {result.seed}, model {result.model}", file=sys.stderr)
    return _common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
