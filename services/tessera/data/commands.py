"""``tessera data prepare twemoji|shapes|edits-shapes|edits-twemoji``: build a data set's cache
under the data dir."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tessera.data.dataset import DATASETS, default_data_dir, read_dataset
from tessera.data.edit_sets import EDIT_SETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", choices=(*DATASETS, *EDIT_SETS), help="which data set to prepare"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: TESSERA_DATA_DIR or .data/"
    )
    parser.add_argument("--seed", type=int, default=0, help="shapes: jitter seed")
    parser.add_argument("--per-combo", type=int, default=8, help="shapes: renders per combination")
    parser.add_argument("--per-kind", type=int, default=1500, help="edits-shapes: edits per kind")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_dir = default_data_dir(args.data_dir)
    if args.dataset in EDIT_SETS:
        return _prepare_edits(args, data_dir)
    if args.dataset == "twemoji":
        from tessera.data import twemoji

        out = twemoji.prepare(data_dir, progress=not args.no_progress)
    else:
        from tessera.data import shapes

        out = shapes.prepare(data_dir, seed=args.seed, per_combo=args.per_combo)
    ds = read_dataset(args.dataset, data_dir)  # read back: what was written must load
    heldout = int(ds.heldout.sum())
    print(
        f"{args.dataset}: {len(ds)} images ({len(ds) - heldout} train, {heldout} held out) "
        f"in {out}; montage: {out / 'montage.png'}"
    )
    return 0


def _prepare_edits(args: argparse.Namespace, data_dir: Path) -> int:
    from tessera.data import edit_sets

    if args.dataset == "edits-twemoji" and not (data_dir / "twemoji").is_dir():
        from tessera.data import twemoji

        twemoji.prepare(data_dir, progress=not args.no_progress)
    out = edit_sets.prepare(
        args.dataset, data_dir, seed=args.seed, per_kind=args.per_kind,
        progress=not args.no_progress,
    )  # fmt: skip
    edits = edit_sets.read_edit_set(args.dataset, data_dir)  # what was written must load
    heldout = int(edits.heldout.sum())
    kinds = ", ".join(f"{k} {edits.kinds.count(k)}" for k in dict.fromkeys(edits.kinds))
    print(
        f"{args.dataset}: {len(edits)} edits ({len(edits) - heldout} train, {heldout} held out; "
        f"{kinds}) in {out}; montage: {out / edit_sets.MONTAGE_FILE}"
    )
    return 0
