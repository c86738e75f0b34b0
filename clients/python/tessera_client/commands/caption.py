"""``tessera caption in.png``: captions of an image (the mixed-modal model), best first,
one per line with its score (or JSON with ``--json``)."""

from __future__ import annotations

import argparse

from tessera_client import _edits
from tessera_client._limits import MAX_CAPTIONS, MAX_TEMPERATURE
from tessera_client.commands import _common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per ``CaptionRequest`` field besides the image."""
    parser.add_argument("image", help="image file (a PNG of the model's native size)")
    parser.add_argument(
        "-n", "--n", type=int, default=None, help=f"captions, 1..{MAX_CAPTIONS} (>1: --temperature)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"[0, {MAX_TEMPERATURE:g}]; unset or 0: greedy (one caption)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--model", default=None, help="bundle name (default: the served one)")
    parser.add_argument("--json", action="store_true", help="print the captions as JSON")
    _common.add_connection_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    opts = _common.options(args, _edits.CAPTION_FIELDS)
    with _common.make_client(args) as client:
        found = client.caption(args.image, **opts)
    if args.json:
        _common.print_json(found.model_dump(mode="json"))
    else:
        for c in found.captions:  # one line each: control characters escaped
            print(f"{c.score:9.3f}  {printable(c.text)}")
    return _common.EXIT_OK


def printable(text: str) -> str:
    """``text`` with each non-printable character (a newline, a control code) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def run(args: argparse.Namespace) -> int:
    return _common.guarded(_run, args)
