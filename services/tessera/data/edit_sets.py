"""Edit data sets: (source image, instruction, target image) triples on disk.

Two sets, built by ``tessera data prepare edits-shapes|edits-twemoji``:

- ``edits-shapes``: :mod:`tessera.data.edits`' grammar over shapes scenes, exact targets;
  held out by (edit kind x attribute), see ``HELDOUT_EDITS``.
- ``edits-twemoji``: variant pairs found in the Twemoji data itself — the same emoji in two
  skin tones ("give it a dark skin tone") and gender variants of one label (person / man /
  woman running: "make it a woman"). Held out by concept, as the Twemoji split is: a pair is
  held out when both of its emoji are, and pairs that would straddle the split are dropped.

On disk, ``<data_dir>/<name>/``: ``pairs.npz`` (``source``, ``target`` (N, 64, 64, 3) uint8,
``heldout`` (N,) bool), ``meta.json`` (instructions, kinds, attributes, keys, provenance) and
``montage.png`` (source above target). Read without pickle.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from tessera.common.errors import NotFound
from tessera.common.images import make_grid
from tessera.data.dataset import IMAGE_SIZE, ImageTextDataset, default_data_dir, prepare_hint
from tessera.data.edits import EDIT_KINDS, HELDOUT_EDITS, sample_edit
from tessera.data.scenes import render_scenes, scene_key

EDIT_SETS = ("edits-shapes", "edits-twemoji")
PAIRS_FILE, META_FILE, MONTAGE_FILE = "pairs.npz", "meta.json", "montage.png"
FORMAT_VERSION = 1
TWEMOJI_KINDS = ("skin_tone", "gender")
GENDER_WORDS = ("person", "man", "woman")


@dataclass
class EditSet:
    name: str
    source: np.ndarray  # (N, 64, 64, 3) uint8
    target: np.ndarray  # (N, 64, 64, 3) uint8
    instructions: list[str]
    kinds: list[str]
    attributes: list[str]  # what the held-out rule reads (shapes) or the target variant
    keys: list[str]  # "<source>><target>" ids
    heldout: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, rows: np.ndarray) -> EditSet:
        idx = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, np.int64)
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return EditSet(
            self.name, self.source[idx], self.target[idx], pick(self.instructions),
            pick(self.kinds), pick(self.attributes), pick(self.keys), self.heldout[idx],
        )  # fmt: skip


# --- shapes ------------------------------------------------------------------------------


def make_shapes_edits(seed: int = 0, per_kind: int = 1500, progress: bool = True) -> EditSet:
    """``per_kind`` edits of every kind, rendered with one jitter per pair (deterministic)."""
    rng = np.random.default_rng(seed)
    rows = [sample_edit(rng, kind) for kind in EDIT_KINDS for _ in range(per_kind)]
    source, target = [], []
    for n, edit in enumerate(tqdm(rows, desc="edits-shapes", disable=not progress)):
        before, after = render_scenes([edit.source, edit.target], seed=seed * 1_000_003 + n)
        source.append(before)
        target.append(after)
    return EditSet(
        name="edits-shapes",
        source=np.stack(source),
        target=np.stack(target),
        instructions=[e.instruction for e in rows],
        kinds=[e.kind for e in rows],
        attributes=[e.attribute for e in rows],
        keys=[f"{scene_key(e.source)}>{scene_key(e.target)}" for e in rows],
        heldout=np.array([e.heldout for e in rows], bool),
    )


# --- twemoji -----------------------------------------------------------------------------


def _gender_frame(label: str) -> tuple[str, str] | None:
    """'man running: light skin tone' -> ('man', '{} running: light skin tone'); None unless
    the label starts with a gender word ('family: man, woman, boy' is not a variant)."""
    first, sep, rest = label.partition(" ")
    word = first.rstrip(":")
    if word not in GENDER_WORDS or not sep:
        return None
    return word, "{}" + first[len(word) :] + " " + rest


def twemoji_pairs(ds: ImageTextDataset) -> list[tuple[int, int, str, str, str]]:
    """(source row, target row, kind, instruction, target variant) for every variant pair."""
    tones = ds.label_names["skin_tone"]
    pairs = []
    by_concept: dict[int, list[int]] = {}
    for i, c in enumerate(ds.labels["concept"]):
        by_concept.setdefault(int(c), []).append(i)
    for rows in by_concept.values():
        single = [r for r in rows if tones[int(ds.labels["skin_tone"][r])] != "mixed"]
        for s in single:
            for t in single:
                tone = tones[int(ds.labels["skin_tone"][t])]
                if s == t:
                    continue
                said = "give it the default yellow skin tone" if tone == "none" else (
                    f"give it a {tone} skin tone"
                )  # fmt: skip
                pairs.append((s, t, "skin_tone", said, tone))
    frames: dict[str, dict[str, int]] = {}
    for i, captions in enumerate(ds.captions):
        found = _gender_frame(captions[0])
        if found is not None:
            frames.setdefault(found[1], {})[found[0]] = i
    for variants in frames.values():
        for g_src, s in variants.items():
            for g_tgt, t in variants.items():
                if g_src != g_tgt:
                    pairs.append((s, t, "gender", f"make it a {g_tgt}", g_tgt))
    return pairs


def make_twemoji_edits(ds: ImageTextDataset) -> EditSet:
    pairs = [p for p in twemoji_pairs(ds) if ds.heldout[p[0]] == ds.heldout[p[1]]]
    src = np.array([p[0] for p in pairs], np.int64)
    tgt = np.array([p[1] for p in pairs], np.int64)
    return EditSet(
        name="edits-twemoji",
        source=ds.images[src],
        target=ds.images[tgt],
        instructions=[p[3] for p in pairs],
        kinds=[p[2] for p in pairs],
        attributes=[p[4] for p in pairs],
        keys=[f"{ds.keys[s]}>{ds.keys[t]}" for s, t in zip(src, tgt, strict=True)],
        heldout=ds.heldout[src].astype(bool),
    )


# --- on disk -----------------------------------------------------------------------------


def save_edit_set(edits: EditSet, directory: Path, meta_extra: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (PAIRS_FILE + ".tmp.npz")
    np.savez_compressed(tmp, source=edits.source, target=edits.target, heldout=edits.heldout)
    tmp.replace(directory / PAIRS_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "name": edits.name,
        "count": len(edits),
        "heldout_count": int(edits.heldout.sum()),
        "instructions": edits.instructions,
        "kinds": edits.kinds,
        "attributes": edits.attributes,
        "keys": edits.keys,
        **meta_extra,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    picks = np.linspace(0, len(edits) - 1, num=min(32, len(edits))).astype(int)
    grid = make_grid([*edits.source[picks], *edits.target[picks]], columns=len(picks))
    Image.fromarray(grid).save(directory / MONTAGE_FILE)
    return directory


def read_edit_set(name: str, data_dir: Path | None = None) -> EditSet:
    """A prepared edit set; NotFound naming the command when it is absent or corrupt."""
    directory = default_data_dir(data_dir) / name
    hint = prepare_hint(name)
    try:
        meta = json.loads((directory / META_FILE).read_text())
        with np.load(directory / PAIRS_FILE, allow_pickle=False) as npz:
            source, target, heldout = npz["source"], npz["target"], npz["heldout"].astype(bool)
        n = int(meta["count"])
        edits = EditSet(
            name, source, target, list(meta["instructions"]), list(meta["kinds"]),
            list(meta["attributes"]), list(meta["keys"]), heldout,
        )  # fmt: skip
    except FileNotFoundError as e:
        raise NotFound(f"edit set {name!r} is not prepared under {directory}; {hint}") from e
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise NotFound(f"edit set {name!r} under {directory} is corrupt ({e}); {hint}") from e
    shape = (n, IMAGE_SIZE, IMAGE_SIZE, 3)
    lists = (edits.instructions, edits.kinds, edits.attributes, edits.keys)
    if not (
        meta.get("format_version") == FORMAT_VERSION
        and source.shape == shape == target.shape
        and source.dtype == np.uint8 == target.dtype
        and heldout.shape == (n,)
        and all(len(x) == n for x in lists)
    ):
        raise NotFound(f"edit set {name!r} under {directory} is inconsistent; {hint}")
    return edits


def prepare(name: str, data_dir: Path, *, seed: int = 0, per_kind: int = 1500,
            progress: bool = True) -> Path:  # fmt: skip
    """Build and cache an edit set (``edits-twemoji`` reads the prepared Twemoji data)."""
    if name == "edits-shapes":
        edits = make_shapes_edits(seed=seed, per_kind=per_kind, progress=progress)
        meta = {
            "source": {"generator": "tessera.data.edits", "seed": seed, "per_kind": per_kind},
            "split": {"unit": "edit kind x attribute", "heldout": sorted(HELDOUT_EDITS)},
        }
    elif name == "edits-twemoji":
        from tessera.data.dataset import read_dataset

        edits = make_twemoji_edits(read_dataset("twemoji", data_dir))
        meta = {
            "source": {"from": "twemoji (prepared)", "kinds": list(TWEMOJI_KINDS)},
            "split": {"unit": "concept, as twemoji's split; straddling pairs dropped"},
        }
    else:
        raise NotFound(f"unknown edit set {name!r}; expected one of {', '.join(EDIT_SETS)}")
    return save_edit_set(edits, Path(data_dir) / name, meta)
