"""The tokenizer kinds (vq, gumbel, kl) on tiny configs: one trunk, three bottlenecks."""

import json
import math

import numpy as np
import pytest
import torch

from tessera.common.checkpoint import load_component, save_component
from tessera.tokenizer.bottleneck import GaussianBottleneck, GumbelQuantizer
from tessera.tokenizer.model import VQConfig, VQModel
from tessera.tokenizer.train import TrainConfig, Trainer

KINDS = ("vq", "gumbel", "kl")


def tiny(kind: str, **kw) -> VQModel:
    torch.manual_seed(0)
    return VQModel(VQConfig.tiny(kind=kind, **kw)).eval()


def x_batch(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_round_trip(kind):
    m = tiny(kind)
    x = x_batch()
    z = m.encode_latents(x)
    assert z.shape == (2, m.latent_channels, 4, 4)
    assert m.decode_latents(z).shape == (2, 3, 16, 16)
    # the latents encode_latents returns decode to exactly what the forward pass reconstructs
    torch.testing.assert_close(m.decode_latents(z), m(x).reconstruction)
    assert m.sample_prior(3, torch.Generator().manual_seed(0)).shape == (3, 3, 16, 16)
    if kind == "kl":
        assert not m.discrete and m.codebook_size == 0 and m(x).indices is None
        for call in (lambda: m.encode(x), lambda: m.decode_indices(torch.zeros(1, 4, 4))):
            with pytest.raises(ValueError, match="continuous"):
                call()
    else:
        idx = m.encode(x)
        assert m.discrete and idx.shape == (2, 4, 4) and idx.max() < m.codebook_size
        torch.testing.assert_close(m.decode_indices(idx), m.decode_latents(z))


def test_the_encoder_emits_what_each_bottleneck_takes():
    assert tiny("vq").encoder.conv_out.out_channels == 4
    assert tiny("gumbel").encoder.conv_out.out_channels == 64  # logits over the codebook
    assert tiny("kl").encoder.conv_out.out_channels == 8  # mean and log-variance
    assert isinstance(tiny("gumbel").quantizer, GumbelQuantizer)
    assert isinstance(tiny("kl").quantizer, GaussianBottleneck)


def test_gumbel_is_relaxed_in_training_and_argmax_at_eval():
    m = tiny("gumbel")
    x = x_batch()
    logits = m.encoder(x)
    hard = m.quantizer.lookup(logits.argmax(1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(m.quantize(x).z_q, hard)  # eval: the argmax code, deterministic
    assert torch.equal(m.encode(x), logits.argmax(1))
    m.train()
    m.quantizer.temperature = 1.0
    soft = m.quantize(x).z_q
    assert not torch.allclose(soft, hard)  # a mixture of codes
    m.quantizer.temperature = 1e-6  # annealed: the relaxation approaches a one-hot sample
    cold = m.quantize(x).z_q
    codes = m.quantizer.codebook()  # every cold vector is (close to) one code
    dist = torch.cdist(cold.permute(0, 2, 3, 1).reshape(-1, 4), codes).min(1).values
    assert dist.max() < 1e-2
    # relaxed samples carry gradient to the encoder through the logits
    m.quantizer.temperature = 0.5
    out = m(x)
    (out.reconstruction.sum() + out.quantizer_loss).backward()
    assert m.encoder.conv_out.weight.grad.abs().sum() > 0


def test_gumbel_kl_term_is_zero_at_uniform_and_log_k_when_certain():
    q = GumbelQuantizer(size=8, dim=2, kl_weight=1.0, pixels=1)
    uniform = torch.zeros(1, 8, 2, 2)
    assert float(q(uniform).loss) == pytest.approx(0.0, abs=1e-6)
    certain = torch.full((1, 8, 2, 2), -1e4)
    certain[:, 3] = 1e4
    assert float(q(certain).loss) == pytest.approx(4 * math.log(8), rel=1e-4)  # 4 positions


def test_gumbel_usage_term_is_zero_for_even_use_and_grows_with_collapse():
    plain = GumbelQuantizer(size=8, dim=2, kl_weight=0.0, pixels=1)
    usage = GumbelQuantizer(size=8, dim=2, kl_weight=0.0, pixels=1, usage_weight=1.0)
    even = torch.full((1, 8, 2, 4), -1e4)  # 8 confident cells, each on another code
    for cell in range(8):
        even[0, cell, cell // 4, cell % 4] = 1e4
    assert float(usage(even).loss) == pytest.approx(0.0, abs=1e-5)
    collapsed = torch.full((1, 8, 2, 4), -1e4)
    collapsed[:, 3] = 1e4  # every cell on code 3: KL(one-hot || uniform) = log 8 per cell
    assert float(usage(collapsed).loss) == pytest.approx(8 * math.log(8), rel=1e-4)
    assert float(plain(collapsed).loss) == 0.0  # off by default: the dVAE as DALL-E trains it
    # its gradient raises the logits of the codes the batch does not use
    logits = torch.zeros(1, 8, 2, 4)
    logits[:, 3] = 2.0
    logits.requires_grad_(True)
    usage(logits).loss.backward()
    assert (logits.grad[:, 3] > 0).all() and (logits.grad[:, 0] < 0).all()


def test_gaussian_kl_term_matches_the_closed_form():
    b = GaussianBottleneck(dim=2, kl_weight=1.0, pixels=1).train()
    prior = torch.zeros(3, 4, 2, 2)  # mean 0, log-variance 0: the prior itself
    assert float(b(prior).loss) == pytest.approx(0.0, abs=1e-6)
    z = torch.zeros(1, 4, 1, 1)
    z[:, 0] = 2.0  # mean 2 in one channel, unit variance: KL = mu^2 / 2
    assert float(b(z).loss) == pytest.approx(2.0, rel=1e-6)
    z[:, 0], z[:, 2] = 0.0, math.log(4.0)  # variance 4: KL = (4 - 1 - ln 4) / 2
    assert float(b(z).loss) == pytest.approx((3 - math.log(4)) / 2, rel=1e-5)
    b.eval()
    torch.testing.assert_close(b(z).z_q, z[:, :2])  # eval: the mean


def test_kl_encode_takes_the_mean_or_a_sample():
    m = tiny("kl")
    x = x_batch()
    mean = m.encode_latents(x)
    torch.testing.assert_close(mean, m.encoder(x)[:, :4])
    a = m.encode_latents(x, sample=True, generator=torch.Generator().manual_seed(0))
    b = m.encode_latents(x, sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.allclose(a, mean)
    # decode_latents never snaps a kl latent (there is no codebook)
    torch.testing.assert_close(m.decode_latents(a, quantize=True), m.decode_latents(a, False))


def test_kl_weight_defaults_per_kind_and_a_plain_vae_weighs_one():
    assert VQConfig.tiny().kl_weight == 0.0
    assert VQConfig.tiny(kind="gumbel").kl_weight == 0.1
    assert VQConfig.tiny(kind="kl").kl_weight == 1e-3
    assert VQConfig.tiny(kind="kl", kl_weight=1.0).kl_weight == 1.0
    with pytest.raises(ValueError, match="kind"):
        VQConfig.tiny(kind="vqvae")


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip(kind, tmp_path):
    m = tiny(kind)
    x = x_batch()
    save_component(tmp_path / "tok", m, m.config)
    assert json.loads((tmp_path / "tok" / "config.json").read_text())["kind"] == kind
    loaded = load_component(tmp_path / "tok")
    assert loaded.config == m.config and loaded.kind == kind
    torch.testing.assert_close(loaded.encode_latents(x), m.encode_latents(x))


def test_a_config_without_a_kind_loads_as_vq(tmp_path):
    m = tiny("vq")
    save_component(tmp_path / "tok", m, m.config)
    path = tmp_path / "tok" / "config.json"
    meta = json.loads(path.read_text())
    for key in ("kind", "kl_weight", "tau_start", "tau_end"):  # what configs written before had
        del meta[key]
    path.write_text(json.dumps(meta))
    loaded = load_component(tmp_path / "tok")
    assert loaded.kind == "vq" and loaded.config == m.config
    x = x_batch()
    assert torch.equal(loaded.encode(x), m.encode(x))


@pytest.mark.parametrize("kind", ["gumbel", "kl"])
def test_trainer_lowers_the_loss_of_each_kind(kind, tmp_path):
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (32, 4, 4, 3), dtype=np.uint8)
    images = blocks.repeat(4, axis=1).repeat(4, axis=2)
    cfg = TrainConfig(steps=40, batch_size=8, lr=3e-3, warmup=5, use_gan=False, flip=False,
                      ckpt_every=10_000, log_every=10, eval_images=16)  # fmt: skip
    trainer = Trainer(VQConfig.tiny(kind=kind), cfg, tmp_path / "tok", images, images)
    final = trainer.fit(progress=False)
    rows = [r for r in trainer.history if "l1" in r]
    assert rows[-1]["l1"] < rows[0]["l1"]
    assert ("eval_usage_pct" in final) == (kind == "gumbel")
    if kind == "gumbel":  # annealed from tau_start toward tau_end
        assert rows[0]["tau"] > rows[-1]["tau"] >= trainer.model_cfg.tau_end
    assert load_component(tmp_path / "tok").kind == kind
