import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.common.checkpoint import load_component
from tessera.data import shapes
from tessera.tokenizer import eval as tok_eval
from tessera.tokenizer import train as tok_train
from tessera.tokenizer.eval import evaluate
from tessera.tokenizer.model import VQConfig
from tessera.tokenizer.train import TrainConfig, Trainer


def _small_images(n, size=16, seed=0):
    ds, _ = shapes.make_dataset(seed=seed, per_combo=1)
    rows = np.random.default_rng(seed).permutation(len(ds))[:n]
    return np.stack(
        [
            np.asarray(Image.fromarray(ds.images[i]).resize((size, size), Image.BILINEAR))
            for i in rows
        ]
    )


def test_tiny_model_overfits_a_small_batch(tmp_path):
    images = _small_images(8)
    cfg = TrainConfig(steps=100, batch_size=8, lr=3e-3, warmup=10, use_gan=False, flip=False,
                      ckpt_every=10_000, log_every=50, eval_images=8)  # fmt: skip
    trainer = Trainer(VQConfig.tiny(), cfg, tmp_path / "tok", images, images)
    before = evaluate(trainer.model, images)["psnr_db"]
    final = trainer.fit(progress=False)
    assert final["eval_psnr_db"] > before + 8
    assert final["eval_psnr_db"] > 20


def test_codebook_usage_stays_high_in_a_short_run(tmp_path):
    # 16x16 images of 4x4 flat colour blocks: one block per token, colours spread evenly,
    # so a healthy quantizer should spread its 32 codes over them
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (128, 4, 4, 3), dtype=np.uint8)
    images = blocks.repeat(4, axis=1).repeat(4, axis=2)
    cfg = TrainConfig(steps=60, batch_size=16, lr=2e-3, warmup=10, use_gan=False, flip=False,
                      ckpt_every=10_000, log_every=60, eval_images=128)  # fmt: skip
    trainer = Trainer(VQConfig.tiny(codebook_size=32), cfg, tmp_path / "tok", images, images)
    final = trainer.fit(progress=False)
    assert final["eval_usage_pct"] >= 75


def _trainer(out, images, steps):
    cfg = TrainConfig(steps=steps, batch_size=4, gan_start=4, warmup=2, ckpt_every=6,
                      log_every=2, eval_images=4)  # fmt: skip
    return Trainer(VQConfig.tiny(), cfg, out, images, images)


def test_resume_continues_exactly(tmp_path):
    images = _small_images(16)
    a = _trainer(tmp_path / "a", images, steps=6)
    a.fit(progress=False)
    assert (tmp_path / "a" / "vqvae" / "model.safetensors").is_file()  # VQ-VAE phase kept
    snapshot = json.loads((tmp_path / "a" / "vqvae" / "train_state" / "state.json").read_text())
    assert snapshot["step"] == 4 and not snapshot["gan_active"]  # resumable as a baseline
    assert (tmp_path / "a" / "loss_curves.png").is_file()
    assert any("d_loss" in row for row in a.history)  # the GAN phase ran
    b = _trainer(tmp_path / "a", images, steps=8)
    b.load()
    assert b.step == 6 and b.gan_active
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    a.cfg.steps = 8
    a.fit(progress=False)
    b.fit(progress=False)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_train_and_eval_commands(tmp_path, capsys):
    shapes.prepare(tmp_path / "data", per_combo=1)
    parser = argparse.ArgumentParser()
    tok_train.add_arguments(parser)
    out = tmp_path / "tok"
    args = parser.parse_args(["--dataset", "shapes", "--out", str(out), "--preset", "tiny",
                              "--steps", "3", "--batch-size", "4", "--ckpt-every", "2",
                              "--data-dir", str(tmp_path / "data"), "--no-progress"])  # fmt: skip
    assert tok_train.run(args) == 0
    model = load_component(out)
    assert model.grid_size == 8
    parser = argparse.ArgumentParser()
    tok_eval.add_arguments(parser)
    args = parser.parse_args(["--checkpoint", str(out), "--dataset", "shapes", "--compare",
                              str(out), "--data-dir", str(tmp_path / "data"),
                              "--grid-images", "8"])  # fmt: skip
    assert tok_eval.run(args) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    for key in ("psnr_db", "ssim", "usage_pct", "perplexity", "sharpness_ratio"):
        assert key in metrics["model"] and key in metrics["compare"]
    grid = np.asarray(Image.open(out / "eval" / "reconstructions.png"))
    assert grid.shape[0] > 3 * 64  # three rows: originals, compared model, model
    assert "PSNR" in capsys.readouterr().out


def test_fsq_levels_choose_the_codebook(tmp_path):
    """`--quantizer fsq --fsq-levels` sets the bits per cell: the product of the levels."""
    shapes.prepare(tmp_path / "data", per_combo=1)
    parser = argparse.ArgumentParser()
    tok_train.add_arguments(parser)
    out = tmp_path / "tok"
    args = parser.parse_args(["--dataset", "shapes", "--out", str(out), "--preset", "tiny",
                              "--quantizer", "fsq", "--fsq-levels", "5,4,3", "--steps", "2",
                              "--batch-size", "4", "--data-dir", str(tmp_path / "data"),
                              "--no-progress"])  # fmt: skip
    assert tok_train.run(args) == 0
    model = load_component(out)
    assert model.codebook_size == 60
    codes = model.encode(torch.zeros(2, 3, 64, 64))
    assert codes.shape == (2, 8, 8) and int(codes.max()) < 60


def test_measures():
    from tessera.tokenizer.losses import code_statistics, psnr, ssim

    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert (psnr(x, x) > 90).all()
    assert (psnr(-x, x) < psnr(x + 0.05, x)).all()
    s = code_statistics(torch.tensor([0, 0, 1, 1]), 4)
    assert s["usage_pct"] == 50 and abs(s["perplexity"] - 2) < 1e-6


def test_data_of_the_wrong_size_is_refused(tmp_path):
    from tessera.common.errors import InvalidArgument

    images = _small_images(4, size=32)
    with pytest.raises(InvalidArgument):
        Trainer(VQConfig.tiny(), TrainConfig(), tmp_path, images, images)


def test_gmsd_ranks_blur_and_identity():
    import torch.nn.functional as F

    from tessera.tokenizer.losses import gmsd, sharpness

    x = torch.from_numpy(_small_images(4, size=64)).permute(0, 3, 1, 2).float() / 127.5 - 1
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert torch.allclose(gmsd(x, x), torch.zeros(4), atol=1e-6)
    assert (gmsd(blurred, x) > 0.01).all()
    assert (sharpness(blurred) < sharpness(x)).all()


def test_init_from_and_edit_images(tmp_path, capsys):
    """`--init-from` starts from a tokenizer's weights; `--edit-images` adds an edit set's
    scenes to the training images and the monitor (read back by the checker per count)."""
    from tessera.data import edit_sets, load_dataset

    data = tmp_path / "data"
    shapes.prepare(data, per_combo=1)
    edit_sets.prepare("edits-shapes", data, per_kind=3, progress=False)
    base = ["--dataset", "shapes", "--preset", "tiny", "--batch-size", "4",
            "--data-dir", str(data), "--no-progress"]  # fmt: skip

    def train(*extra: str) -> int:
        parser = argparse.ArgumentParser()
        tok_train.add_arguments(parser)
        return tok_train.run(parser.parse_args([*base, *extra]))

    assert train("--out", str(tmp_path / "a"), "--steps", "2") == 0
    start = load_component(tmp_path / "a").state_dict()
    capsys.readouterr()
    out = tmp_path / "b"
    args = ["--out", str(out), "--init-from", str(tmp_path / "a"), "--edit-images",
            "edits-shapes", "--steps", "0"]  # fmt: skip
    assert train(*args) == 0
    said = capsys.readouterr().out
    edits = edit_sets.read_edit_set("edits-shapes", data)
    n_train = int((~load_dataset("shapes", "all", data).heldout).sum())
    expected = n_train + 2 * int((~edits.heldout).sum())  # every training source and target
    assert f"{expected} train images (shapes + edits-shapes)" in said
    assert f"from {tmp_path / 'a'}" in said
    after = load_component(out).state_dict()  # no steps: exactly the weights it started from
    assert all(torch.equal(start[k], after[k]) for k in start)
    final = json.loads((out / "history.json").read_text())[-1]
    assert "eval_read_1_shapes_pct" in final and "eval_read_2_shapes_pct" in final
    state = json.loads((out / "train_state" / "state.json").read_text())
    assert state["train_config"]["edit_images"] == ["edits-shapes"]
    parser = argparse.ArgumentParser()
    tok_eval.add_arguments(parser)
    args = parser.parse_args(["--checkpoint", str(out), "--dataset", "shapes", "--data-dir",
                              str(data), "--edit-set", "edits-shapes",
                              "--grid-images", "4"])  # fmt: skip
    assert tok_eval.run(args) == 0
    scored = json.loads((out / "eval" / "metrics.json").read_text())["model"]["edit_set"]
    assert set(scored["scene_read"]) <= {"1", "2"} and scored["images"] > 0
    assert 0 < scored["locality"]["untouched_cells"] < 1
    # --local-encoder on top of --init-from: the same weights, now encoding patch by patch
    assert train("--out", str(tmp_path / "c"), "--init-from", str(out), "--local-encoder",
                 "--steps", "0") == 0  # fmt: skip
    local = load_component(tmp_path / "c")
    assert local.config.local_encoder and not load_component(out).config.local_encoder
    assert all(torch.equal(after[k], local.state_dict()[k]) for k in after)


def test_decoder_only_keeps_every_code(tmp_path):
    """`--decoder-only` trains the decoder alone: the encoder and codebook (so every image's
    codes, which the LM and mixed models were trained on) stay exactly as they were."""
    images = _small_images(8)
    cfg = TrainConfig(steps=20, batch_size=8, lr=3e-3, warmup=1, use_gan=False, flip=False,
                      ckpt_every=10_000, log_every=10, eval_images=8)  # fmt: skip
    start = Trainer(VQConfig.tiny(), cfg, tmp_path / "start", images, images)
    start.fit(progress=False)
    tuned_cfg = dataclasses.replace(cfg, decoder_only=True, init_from=str(tmp_path / "start"))
    tuned = Trainer(VQConfig.tiny(), tuned_cfg, tmp_path / "tuned", images, images)
    tuned.model.load_state_dict(start.model.state_dict())
    tuned.fit(progress=False)
    before, after = start.model.state_dict(), tuned.model.state_dict()
    kept = [k for k in before if not k.startswith("decoder.")]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(start.model.eval().encode(x), tuned.model.eval().encode(x))


@pytest.mark.parametrize("extra", [[], ["--init-from", "{a}", "--local-encoder"]])
def test_decoder_only_refuses_what_would_change_the_codes(tmp_path, extra):
    images = _small_images(4)
    cfg = TrainConfig(steps=1, batch_size=4, use_gan=False, ckpt_every=10_000, eval_images=4)
    Trainer(VQConfig.tiny(), cfg, tmp_path / "a", images, images).fit(progress=False)
    parser = argparse.ArgumentParser()
    tok_train.add_arguments(parser)
    args = ["--dataset", "shapes", "--out", str(tmp_path / "b"), "--decoder-only", "--no-progress"]
    args += [a.format(a=tmp_path / "a") for a in extra]
    with pytest.raises(SystemExit, match="--decoder-only needs --init-from"):
        tok_train.run(parser.parse_args(args))
