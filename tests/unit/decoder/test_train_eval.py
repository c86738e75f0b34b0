"""The training loop (checkpoint, EMA component, resume, PNGs) and the evaluation, on a
tiny shapes set with a stand-in VQ model (the real one lives in another package) and a tiny
real CLIP."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import fake_text
from torch import nn

from tessera.clip.model import CLIPConfig, CLIPModel
from tessera.common.checkpoint import load_component
from tessera.data.dataset import ImageTextDataset
from tessera.data.shapes import ShapeAttrs, captions_for, render
from tessera.decoder import eval as decoder_eval
from tessera.decoder import train as decoder_train
from tessera.decoder.model import LatentDecoder


class StandInVQ(nn.Module):
    """encode_latents/decode_latents with the VQModel shapes: (B,3,64,64) <-> (B,4,8,8)."""

    latent_channels, grid_size, image_size = 4, 8, 64

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Conv2d(3, 4, 8, stride=8)
        self.dec = nn.ConvTranspose2d(4, 3, 8, stride=8)

    def encode_latents(self, x):
        return self.enc(x)

    def decode_latents(self, z, quantize: bool = True):
        return torch.tanh(self.dec(z))


def shapes_set(n: int) -> ImageTextDataset:
    colors, shapes = ["red", "blue", "green"], ["circle", "square", "cross"]
    attrs = [ShapeAttrs(colors[i % 3], shapes[(i // 3) % 3], "center", "large") for i in range(n)]
    names = {"color": colors, "shape": shapes, "position": ["center"], "size": ["large"]}
    labels = {
        k: np.array([names[k].index(getattr(a, k)) for a in attrs], dtype=np.int64) for k in names
    }
    return ImageTextDataset(
        name="shapes",
        images=np.stack([render(a) for a in attrs]),
        captions=[captions_for(a) for a in attrs],
        labels=labels,
        label_names=names,
        keys=[str(i) for i in range(n)],
    )


def args(out, **kw):
    base = dict(
        out=out, steps=8, resume=False, batch_size=8, lr=1e-3, weight_decay=0.0, warmup=2,
        ema_decay=0.99, ckpt_every=4, sample_every=4, seed=0,
    )  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    ds = shapes_set(6)
    vq, clip = StandInVQ().eval(), CLIPModel(CLIPConfig.tiny()).eval()
    cache = tmp_path_factory.mktemp("cache")
    feats = decoder_train.cached_image_features(vq, clip, ds, cache, torch.device("cpu"))
    text = fake_text(18, seed=0)  # 3 captions per image, MiniLM-shaped
    data = decoder_train.TrainData(
        feats["latents"], feats["image_emb"], text.states.half(), text.mask,
        [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(6)], ds.images,
    )  # fmt: skip
    return ds, vq, clip, data, cache


def test_image_features_are_cached(setup):
    ds, vq, clip, data, cache = setup
    files = list(cache.glob("images-shapes-*.safetensors"))
    assert len(files) == 1
    again = decoder_train.cached_image_features(vq, clip, ds, cache, torch.device("cpu"))
    assert torch.equal(again["latents"], data.latents)
    assert data.latents.shape == (6, 4, 8, 8) and data.image_emb.shape == (6, 32)


def test_config_matches_components_and_normalises(setup):
    _, vq, _, data, _ = setup
    cfg = decoder_train.config_for("tiny", vq, data, prediction_type="epsilon")
    assert (cfg.latent_channels, cfg.grid_size, cfg.clip_dim) == (4, 8, 32)
    assert cfg.prediction_type == "epsilon" and cfg.num_train_timesteps == 1000
    z = LatentDecoder(cfg).normalize_latents(data.latents)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3


def test_train_checkpoint_resume(setup, tmp_path):
    _, vq, _, data, _ = setup
    out = tmp_path / "decoder"
    cfg = decoder_train.config_for("tiny", vq, data, num_train_timesteps=100, default_steps=4)
    summary = decoder_train.train_decoder(
        data, vq, out, args(out, steps=4), cfg, torch.device("cpu")
    )
    assert summary["steps"] == 4
    expected = ["config.json", "model.safetensors", "online.safetensors", "train_state.json"]
    expected += ["loss.png", "samples.png", "samples/step_000004.png", "train_summary.json"]
    for name in expected:
        assert (out / name).is_file(), name
    shipped = load_component(out)  # the EMA weights, loadable as the component
    assert isinstance(shipped, LatentDecoder)
    assert shipped.config.latent_scale == pytest.approx(cfg.latent_scale)

    summary = decoder_train.train_decoder(
        data, vq, out, args(out, steps=8, resume=True), cfg, torch.device("cpu")
    )
    assert summary["steps"] == 8
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 8 and state["history"][-1]["step"] == 8
    resumed = load_component(out)
    online = LatentDecoder(resumed.config)
    online.load_state_dict(decoder_train.load_file(str(out / "online.safetensors")))
    pairs = zip(resumed.parameters(), shipped.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # training went on from the checkpoint
    pairs = zip(resumed.parameters(), online.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # EMA and online weights are kept apart


def test_evaluate_split(setup):
    ds, vq, clip, data, _ = setup
    cfg = decoder_train.config_for("tiny", vq, data, num_train_timesteps=20)
    model = LatentDecoder(cfg).eval()

    class Encoder:
        def encode(self, texts):
            return fake_text(len(texts), seed=1)

    ns = argparse.Namespace(n=4, steps=5, ddpm_steps=None, guidance=2.0, margin=0.03, seed=0)
    with torch.inference_mode():
        result, grid, sweep = decoder_eval.evaluate_split(
            model, vq, clip, Encoder(), ds, ns, torch.device("cpu")
        )
    assert result["ddpm"]["steps"] == 20 and result["ddim"]["steps"] == 5
    for name in ("ddim", "ddpm"):
        assert -1 <= result[name]["clip_cosine"] <= 1 and result[name]["latent_mse"] >= 0
        assert 0 <= result[name]["checker_accuracy"] <= 1
    # The stand-in VQ is not a faithful autoencoder; the checker still runs on its output.
    assert "checker_accuracy" in result["vq_reconstruction"]
    assert isinstance(result["ddim_vs_ddpm"]["within"], bool)
    assert grid.shape[0] > 4 * 64 and sweep.shape[0] > 5 * 64
    assert len(result["captions"]) == len(result["rows"]) == 4
