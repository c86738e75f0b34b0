"""The mixed-modal model's section of the bundle report, on a tiny random shapes bundle with a
tiny random `mixed` component, refreshed alone into a committed report (`--only mixed`): the
numbers are measured (low: random weights) and rendered; the rest of the report is kept."""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from tessera.bundle.random_init import build_random_bundle
from tessera.common.checkpoint import save_component, write_bundle_index
from tessera.data import edit_sets, shapes
from tessera.data.edits import EDIT_KINDS
from tessera.evaluation import bundle as report
from tessera.evaluation.mixed import SKIN_TONES, skin_tone
from tessera.mixed.data import corpus
from tessera.mixed.model import MixedConfig, MixedTransformer
from tessera.mixed.text import TextCodec, train_text_tokenizer
from tessera.tokenizer.model import VQConfig, VQModel


def test_mixed_section_refreshed_alone(tmp_path):
    data_dir = tmp_path / "data"
    shapes.prepare(data_dir, per_combo=1)
    edit_sets.prepare("edits-shapes", data_dir, per_kind=3, progress=False)
    out = tmp_path / "shapes"
    build_random_bundle(out, "shapes", tiny=True)
    torch.manual_seed(0)  # a tiny tokenizer for the data's 64 px images (a 4x4 grid)
    vq_config = VQConfig.tiny(image_size=64, patch_size=4, channel_mult=(1, 2, 2))
    save_component(out / "tokenizer", VQModel(vq_config), vq_config)
    write_bundle_index(out, "shapes", {"kind": "random-init"})
    codec = TextCodec(train_text_tokenizer(corpus(["shapes", "edits-shapes"], data_dir), 300), 8)
    (out / "mixed").mkdir(exist_ok=True)  # replaces the random bundle's own mixed model
    codec.save(out / "mixed")
    config = MixedConfig.tiny(text_vocab=codec.vocab_size, image_vocab=64, grid_size=4)
    save_component(out / "mixed", MixedTransformer(config), config)
    routes = {
        split: {"prompts": 3, "checker_on_reconstructions": 1.0,
                "ar": {"checker_acc": 0.25, "clean_single_shape": 1.0, "seconds_per_image": 0.1}}
        for split in ("train", "heldout")
    }  # fmt: skip
    committed = {"bundle": "shapes", "dataset": "shapes", "commit": "abc", "wall_s": 1.0,
                 "routes": routes, "variants": ["ar"], "grids": {}, "grid_seeds": 4,
                 "bundle_dir": "."}  # fmt: skip
    (out / "report.json").write_text(json.dumps(committed))
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    args = ["--bundle", str(out), "--per-split", "3", "--data-dir", str(data_dir),
            "--edits-per-kind", "2"]  # fmt: skip
    assert report.run(parser.parse_args([*args, "--only", "mixed"])) == 0
    written = json.loads((out / "report.json").read_text())
    assert written["routes"] == routes and written["commit"] == "abc"  # the rest: as it was
    mixed = written["mixed"]
    for split in ("train", "heldout"):
        edits = mixed["edits"][split]
        assert set(edits) - {"all"} <= set(EDIT_KINDS) and edits["all"]["count"] > 0
        assert all(d["count"] <= 2 for k, d in edits.items() if k != "all")
        lo, hi = edits["all"]["interval95"]
        assert 0.0 <= lo <= edits["all"]["accuracy"] <= hi <= 1.0
        assert 0.0 <= edits["all"]["tokenizer_ceiling"] <= 1.0
        assert 0.0 <= mixed["captions"][split]["exact_attributes"] <= 1.0
        t2i = mixed["t2i"][split]
        assert t2i["ar_checker_acc"] == 0.25 and 0.0 <= t2i["checker_acc"] <= 1.0
    assert (out / mixed["grid"]).is_file()
    md = (out / "REPORT.md").read_text()
    assert md.startswith("# Bundle report: shapes") and "## Mixed-modal model" in md
    assert "(95%: " in md


def test_skin_tone_reads_the_palette():
    for name, rgb in SKIN_TONES.items():
        img = np.full((64, 64, 3), 255, np.uint8)
        img[16:48, 16:48] = rgb
        img[20:24, 20:24] = (40, 40, 40)  # eyes: ink, not skin
        assert skin_tone(img) == name
