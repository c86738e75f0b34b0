"""The Image Transformer: local attention (what each sub-pixel may see), the bounded KV cache
agreeing with the full pass, and the LM's engine serving it; the PixelCNN's masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tessera.common.checkpoint import WEIGHTS_NAME, load_component
from tessera.common.text_encoder import TextBatch
from tessera.lm.prefix import TextConditioned
from tessera.lm.sampling import SamplingParams
from tessera.pixel.data import histogram_bits
from tessera.pixel.engine import PixelSampler, sample_pixels
from tessera.pixel.model import ImageTransformer, PixelConfig
from tessera.pixel.pixelcnn import PixelCNN, PixelCNNConfig


def text(batch: int, length: int = 5) -> TextBatch:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False
    return TextBatch(torch.randn(batch, length, 384, generator=g), mask, torch.randn(batch, 384))


@pytest.fixture(scope="module")
def model() -> ImageTransformer:
    torch.manual_seed(0)
    return ImageTransformer(PixelConfig.tiny(query_block=6, memory_block=9)).eval()


def test_the_cache_is_bounded_by_the_window_not_the_image(model):
    cfg = model.config
    cache = model.new_cache(2)
    assert cache.k[0].shape[2] == cfg.text_len + cfg.query_block + cfg.memory_block
    assert cache.k[0].shape[2] < cfg.text_len + cfg.n_tokens


def test_cached_decoding_equals_the_full_pass(model):
    B, L = 3, model.config.n_tokens
    t = text(B)
    values = torch.randint(0, 256, (B, L), generator=torch.Generator().manual_seed(2))
    drop = torch.tensor([False, True, False])
    with torch.no_grad():
        full, _ = model(values[:, :-1], t.states, t.mask, drop_cond=drop)
        cache = model.new_cache(B)
        steps = [model.prefill(t.states, t.mask, cache, drop_cond=drop)]
        for i in range(1, L):
            cell = torch.full((B,), i)
            steps.append(model.decode_rows(values[:, i - 1], cell, cell * 0, cache))
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_each_sub_pixel_sees_its_block_and_memory_only(model):
    """Through one layer, the gradient of position i's output reaches exactly the inputs of
    positions max(0, block_start(i) - memory) .. i (input j is value j - 1: BOS first); more
    layers widen it, a window per layer, as in the paper."""
    cfg = model.config
    t = text(1)
    L = cfg.n_tokens
    values = torch.randint(0, 256, (1, L - 1))
    prefix, pmask = model.embed_prefix(t.states, t.mask, None)
    prev = torch.nn.functional.pad(values, (1, 0), value=-1)
    image = model.embed_image(prev, torch.arange(L)).detach().requires_grad_(True)
    from tessera.pixel.model import local_mask

    wmask = local_mask(cfg, L, image.device)
    for i in (0, 5, 6, 13, L - 1):
        image.grad = None
        x = torch.cat([prefix, image], dim=1)
        x = model.blocks[0](x, prefix.shape[1], pmask, wmask, None)
        x[0, prefix.shape[1] + i].sum().backward(retain_graph=True)
        seen = (image.grad[0].abs().sum(-1) > 0).nonzero().view(-1).tolist()
        start = max(0, i // cfg.query_block * cfg.query_block - cfg.memory_block)
        assert seen == list(range(start, i + 1)), i


def test_the_engine_batches_images_without_changing_them(model):
    params = [SamplingParams(seed=s, guidance_scale=g) for s, g in ((1, 1.0), (2, 2.0), (3, 0.0))]
    together = sample_pixels(model, text(3), params)
    assert together.shape == (3, 4, 4, 3)
    assert int(together.min()) >= 0 and int(together.max()) <= 255
    alone = sample_pixels(model, _row(text(3), 1), params[1:2])
    assert torch.equal(together[1:2], alone)


def _row(batch: TextBatch, i: int) -> TextBatch:
    return TextBatch(batch.states[i : i + 1], batch.mask[i : i + 1], batch.pooled[i : i + 1])


def test_progress_reports_are_partial_images_row_by_row(model):
    engine = PixelSampler(model, max_rows=4)
    seen = []
    try:
        row = 3 * model.config.image_size
        future = engine.submit(
            _row(text(1), 0), [SamplingParams(seed=0)], lambda d, p: seen.append((d, p)), row
        )
        final = future.result(timeout=60)
    finally:
        engine.close()
    assert [d for d, _ in seen] == [row * k for k in range(1, 5)]
    done, partial = seen[0]
    assert (partial[0, 0] >= 0).all() and (partial[0, 1:] == -1).all()
    assert torch.equal(seen[-1][1], final)


def test_pixelcnn_never_sees_the_sub_pixel_it_predicts_or_later():
    torch.manual_seed(0)
    m = PixelCNN(PixelCNNConfig(image_size=4, n_layer=3, hidden=12, kernel=3)).eval()
    cond = torch.randn(1, 384)
    S = 4
    for i in range(3 * S * S):
        r, c, ch = i // 3 // S, i // 3 % S, i % 3
        x = torch.randint(0, 256, (1, 3, S, S)).float().requires_grad_(True)
        m.logits(x, cond)[0, :, ch, r, c].sum().backward()
        grad = x.grad[0].permute(1, 2, 0).reshape(-1)  # raster R, G, B order
        assert grad[i:].abs().sum() == 0, i
        if i > 0:
            assert grad[:i].abs().sum() > 0, i


def test_pixelcnn_samples_and_scores():
    torch.manual_seed(0)
    m = PixelCNN(PixelCNNConfig(image_size=2, n_layer=2, hidden=6, kernel=3))
    t = text(2)
    out = m.sample(t, [SamplingParams(seed=0), SamplingParams(seed=1, guidance_scale=2.0)])
    assert out.shape == (2, 2, 2, 3)
    values = torch.from_numpy(out.reshape(2, -1).astype("int64"))
    assert m.nll(values, t, None).item() > 0


def test_histogram_baseline_is_exact_for_a_constant_channel():
    train = torch.full((100, 300), 255)
    bits = histogram_bits(train, train)
    assert 0 < bits < 0.1  # add-one smoothing: a little above 0


REPO_MODELS = Path(__file__).resolve().parents[3] / "models"


@pytest.mark.parametrize("component", ["shapes/lm", "twemoji/lm", "shapes/pixel"])
def test_committed_weights_load_into_the_shared_text_prefix(component):
    """ImageGPT and ImageTransformer share their text conditioning (``TextConditioned``); the
    weights committed before that was shared still load, strictly, under the same names."""
    model = load_component(REPO_MODELS / component)
    assert isinstance(model, TextConditioned)
    saved = set(safe_open(str(REPO_MODELS / component / WEIGHTS_NAME), "pt").keys())
    assert saved == set(model.state_dict())
    assert {"text_norm.weight", "text_proj.weight", "text_pos", "null_cond"} <= saved
    t = text(2)
    prefix, mask = model.embed_prefix(t.states, t.mask, torch.tensor([False, True]))
    assert prefix.shape == (2, 5, model.config.n_embd)
    assert mask[1].tolist() == [True, False, False, False, False]
