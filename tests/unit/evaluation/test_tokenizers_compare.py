"""``tessera eval tokenizers``: tokenizers of every kind measured side by side in one run."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.common.checkpoint import save_component
from tessera.data import shapes
from tessera.evaluation import tokenizers
from tessera.evaluation.judge import Judge, JudgeConfig
from tessera.tokenizer.model import VQConfig, VQModel

KINDS = ("vq", "gumbel", "kl")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("toks")
    paths = {}
    for kind in KINDS:
        torch.manual_seed(0)
        cfg = VQConfig.tiny(image_size=64, channel_mult=(1, 2, 2), kind=kind)
        paths[kind] = save_component(root / kind, VQModel(cfg), cfg, extra={"step": 7})
    return paths


def test_compare_measures_every_kind_in_the_judges_space(checkpoints):
    torch.manual_seed(0)
    judge = Judge(JudgeConfig(channels=[8, 16], feature_dim=16, n_subgroups=3, n_groups=2))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 24)
    results, recon_rows, prior_rows = tokenizers.compare(
        checkpoints, images, labels, judge, grid_images=4, prior_samples=6
    )
    assert set(results["models"]) == set(KINDS) and len(recon_rows) == 4  # originals + 3
    assert all(row.shape == (6, 64, 64, 3) for row in prior_rows)
    for kind, m in results["models"].items():
        assert m["kind"] == kind and m["train_steps"] == 7
        assert m["frechet"] >= 0 and m["prior_frechet"] >= 0 and 0 <= m["judge_acc"] <= 1
        assert m["encode_images_per_s"] > 0 and m["decode_images_per_s"] > 0
        assert (m["usage_pct"] is None) == (kind == "kl")  # no codes, no codebook statistics
    assert 0 <= results["judge_on_originals"] <= 1
    md = tokenizers.table(results)
    assert sum(line.startswith("| ") for line in md.splitlines()) == 2 + len(KINDS)  # +head
    assert "| kl | kl |" in md and "prior FD" in md


def test_the_command_writes_the_table_and_the_grids(checkpoints, tmp_path, capsys):
    shapes.prepare(tmp_path / "data", per_combo=1)
    parser = argparse.ArgumentParser()
    tokenizers.add_arguments(parser)
    argv = ["--dataset", "shapes", "--data-dir", str(tmp_path / "data"), "--out",
            str(tmp_path / "out"), "--grid-images", "4", "--prior-samples", "4"]  # fmt: skip
    for kind, path in checkpoints.items():
        argv += ["--checkpoint", f"{kind}={path}"]
    assert tokenizers.run(parser.parse_args(argv)) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(metrics["models"]) == list(KINDS) and "judge_on_originals" not in metrics
    # shapes: the exact checker instead of the judge; it reads every generated original
    assert metrics["checker_on_originals"] == 1.0
    for m in metrics["models"].values():  # untrained tokenizers: grey blur, no clean shape
        assert m["checker_acc"] < 0.5 and 0 <= m["prior_clean"] <= 1
    recon = np.asarray(Image.open(tmp_path / "out" / "reconstructions.png"))
    prior = np.asarray(Image.open(tmp_path / "out" / "prior_samples.png"))
    assert recon.shape[0] > prior.shape[0] >= 2 * 64 * 3  # 4 rows and 3, scaled x2
    md = (tmp_path / "out" / "TABLE.md").read_text()
    assert "| vq | vq |" in md and "checker acc" in md and "judge FD" not in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in rows}) == 1  # every row has the header's columns
    with pytest.raises(SystemExit):
        tokenizers.parse_checkpoints(["no-equals-sign"])
