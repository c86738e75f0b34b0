"""CLIP: the loss, the towers' outputs, training on a tiny batch, checkpoints, metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tessera.clip.eval import retrieval_metrics, zero_shot
from tessera.clip.model import CLIPConfig, CLIPModel, clip_loss
from tessera.common.checkpoint import load_component, save_component
from tessera.common.errors import InvalidArgument
from tessera.training.optim import make_optimizer


def unit(n: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=gen), dim=-1)


def test_infonce_is_symmetric_and_prefers_matched_pairs():
    img, txt = unit(8, 16, 0), unit(8, 16, 1)
    scale = torch.tensor(math.log(10.0))
    assert torch.allclose(clip_loss(img, txt, scale), clip_loss(txt, img, scale))
    # Matched pairs (text = image) beat random ones, and the loss is CE of the right size.
    assert clip_loss(img, img, scale) < clip_loss(img, txt, scale)
    logits = 10.0 * img @ txt.t()
    expected = F.cross_entropy(logits, torch.arange(8))
    expected = 0.5 * (expected + F.cross_entropy(logits.t(), torch.arange(8)))
    assert torch.allclose(clip_loss(img, txt, scale), expected)


def test_infonce_groups_treat_a_concepts_captions_as_positives():
    img, txt = unit(6, 16, 0), unit(6, 16, 1)
    scale = torch.tensor(2.0)
    # Distinct groups: identical to the plain loss.
    distinct = torch.arange(6)
    assert torch.allclose(clip_loss(img, txt, scale, distinct), clip_loss(img, txt, scale))
    # Rows 0 and 1 show one concept (two phrasings of the same caption): which image got which
    # phrasing must not matter with groups, and does without.
    groups = torch.tensor([0, 0, 1, 2, 3, 4])
    swapped = txt[[1, 0, 2, 3, 4, 5]]
    assert torch.allclose(
        clip_loss(img, txt, scale, groups), clip_loss(img, swapped, scale, groups)
    )
    assert not torch.allclose(clip_loss(img, txt, scale), clip_loss(img, swapped, scale))


def test_embeddings_are_normalised_with_the_right_shapes():
    model = CLIPModel(CLIPConfig.tiny()).eval()
    d = model.embed_dim
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    pooled = F.normalize(torch.randn(3, 384), dim=-1)
    img, txt = model.embed_image(x), model.embed_text(pooled)
    assert img.shape == txt.shape == (3, d)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(InvalidArgument):
        model.embed_image(torch.zeros(1, 3, 32, 32))
    with pytest.raises(InvalidArgument):
        model.embed_text(torch.zeros(1, 100))


def test_tiny_clip_overfits_a_batch_and_the_loss_decreases():
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig.tiny())
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 64, 64, generator=gen) * 2 - 1
    pooled = F.normalize(torch.randn(8, 384, generator=gen), dim=-1)
    opt = make_optimizer(model, 3e-3, 0.0)
    losses = []
    for _ in range(60):
        loss = model(x, pooled)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.clamp_logit_scale()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    with torch.no_grad():
        m = retrieval_metrics(model.embed_image(x), model.embed_text(pooled), torch.arange(8))
    assert m["image_to_text"]["r@1"] == 1.0 and m["text_to_image"]["r@1"] == 1.0


def test_logit_scale_is_clamped_at_100():
    model = CLIPModel(CLIPConfig.tiny())
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert math.isclose(model.logit_scale.exp().item(), 100.0, rel_tol=1e-5)


def test_save_load_round_trip(tmp_path):
    config = CLIPConfig.tiny(channels=[8, 16, 16], embed_dim=24)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.3)
    save_component(tmp_path / "clip", model, config)
    loaded = load_component(tmp_path / "clip")
    assert isinstance(loaded, CLIPModel) and loaded.config == config
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    pooled = F.normalize(torch.randn(2, 384), dim=-1)
    with torch.no_grad():
        assert torch.equal(model.embed_image(x), loaded.embed_image(x))
        assert torch.equal(model.embed_text(pooled), loaded.embed_text(pooled))
    assert loaded.logit_scale.item() == pytest.approx(3.3)


def test_retrieval_counts_shared_captions_and_zero_shot():
    # 3 images, 2 captions: images 0 and 1 share caption 0.
    txt = torch.eye(2, 4)
    img = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0]])
    m = retrieval_metrics(F.normalize(img, dim=-1), txt, torch.tensor([0, 0, 1]), ks=(1,))
    assert m["image_to_text"]["r@1"] == 1.0 and m["text_to_image"]["r@1"] == 1.0
    wrong = retrieval_metrics(img, txt, torch.tensor([1, 1, 0]), ks=(1, 2))
    assert wrong["image_to_text"]["r@1"] == 0.0 and wrong["image_to_text"]["r@2"] == 1.0
    z = zero_shot(img, txt, torch.tensor([0, 0, 0]))
    assert z["top1"] == pytest.approx(2 / 3) and z["chance_uniform"] == 0.5
