"""``tessera edit in.png "make the circle red" -o out.png``: edit an image by an instruction
(the mixed-modal model) and write the results as PNGs."""

from __future__ import annotations

import argparse
import sys

from tessera_client import _edits
from tessera_client._limits import (
    MAX_GUIDANCE,
    MAX_IMAGES_PER_REQUEST,
    MAX_PROMPT_CHARS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
)
from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per ``EditRequest`` field besides the image, prompt and mask."""
    parser.add_argument("image", help="source image file (a PNG of the model's native size)")
    parser.add_argument("prompt", help=f"the instruction, 1..{MAX_PROMPT_CHARS} characters")
    parser.add_argument(
        "-o", "--output", default="out.png", help="first image path (default: %(default)s)"
    )
    parser.add_argument(
        "--mask",
        default=None,
        help="PNG of the image's size; its transparent pixels mark where the image may change",
    )
    parser.add_argument(
        "--progress", action="store_true", help="stream progress (a bar per stage on stderr)"
    )
    group = parser.add_argument_group("edit")
    group.add_argument(
        "-n", "--n", type=int, default=None, help=f"edited images, 1..{MAX_IMAGES_PER_REQUEST}"
    )
    group.add_argument("--size", default=None, metavar="WxH", help="native or an integer upscale")
    group.add_argument("--seed", type=int, default=None, help="image i uses seed + i")
    group.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help=f"on the instruction, [0, {MAX_GUIDANCE:g}]",
    )
    group.add_argument(
        "--image-guidance-scale",
        type=float,
        default=None,
        help=f"on the source image, [0, {MAX_GUIDANCE:g}]",
    )
    group.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"[{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]",
    )
    group.add_argument("--top-k", type=int, default=None, help=f"0..{MAX_TOP_K}; 0 = off")
    group.add_argument("--model", default=None, help="bundle name (default: the served one)")
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    opts = _common.options(args, _edits.EDIT_FIELDS)
    with _common.make_client(args) as client:
        if args.progress:
            bar = _common.ProgressBar()
            try:
                stream = client.edit_stream(
                    args.image, args.prompt, args.mask, timeout=args.timeout, **opts
                )
                for event in stream:
                    bar.update(event)
                    result = event.result
            finally:
                bar.close()
        else:
            result = client.edit(args.image, args.prompt, args.mask, **opts)
    _common.write_images(result, args.output)
    print(f"seed {result.seed}, model {result.model}", file=sys.stderr)
    return _common.EXIT_OK


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
