"""``tessera models import DIR [-o OUT]``: write a Tessera bundle for a local model directory
in its library's layout (see ``tessera.imports``); nothing is downloaded or copied."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tessera.imports import ImportRefused, import_directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir", type=Path, help="the library directory (e.g. a Kandinsky 2.2 prior + decoder pair)"
    )
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="bundle directory to write (default: <models_dir>/<DIR's name>)",
    )

    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="Kandinsky: the served side in pixels (default: the UNet's sample_size x the "
        "MoVQ's scale)",
    )


def run(args: argparse.Namespace) -> int:
    from tessera.common.checkpoint import read_bundle_index
    from tessera.common.settings import get_settings

    out = args.out or get_settings().models_dir / args.dir.resolve().name
    try:
        options = {"image_size": args.image_size} if args.image_size else {}
        bundle = import_directory(args.dir, out, **options)
    except ImportRefused as e:
        print(f"tessera models import: refused: {e}", file=sys.stderr)
        return 2
    index = read_bundle_index(bundle)
    components = ", ".join(f"{k} ({v['format']})" for k, v in index["components"].items())
    print(f"imported {index['family']} bundle {bundle}: {components}")
    print(f"serve it: tessera serve --bundle-dir {bundle}")
    return 0
