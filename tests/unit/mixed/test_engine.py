"""The mixed model through the LM's engine: K weighted rows, forced cells, per-sequence draws,
requests joining mid-run."""

from __future__ import annotations

import pytest
import torch

from tessera.common.errors import InvalidArgument
from tessera.mixed.engine import MixedSampler
from tessera.mixed.generate import edit_weights, generate_images, text_weights
from tessera.mixed.model import MixedConfig, MixedTransformer
from tessera.mixed.sequences import Builder

TIMEOUT = 60
CONFIG = MixedConfig.tiny(grid_size=3, image_vocab=32)
B = Builder(CONFIG.layout)
W0 = 7  # the first word id (after the specials)
N = CONFIG.layout.n_cells
BLANK = [0] * N


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MixedTransformer(CONFIG).eval()


@pytest.fixture()
def engine(model):
    sampler = MixedSampler(model, max_rows=12)
    yield sampler
    sampler.close()


def t2i(words, scale=3.0):
    return [B.prompt(B.t2i(words, BLANK)), B.prompt(B.t2i([], BLANK))], text_weights(scale)


def edit(words, source, s_img=1.5, s_txt=3.0):
    prompts = [B.prompt(B.edit(words, source, BLANK)), B.prompt(B.edit([], source, BLANK)),
               B.prompt(B.edit([], None, BLANK))]  # fmt: skip
    return prompts, edit_weights(s_img, s_txt)


def plain(words):
    return [B.prompt(B.t2i(words, BLANK))], [1.0]


SOURCE = [(3 * i + 1) % 32 for i in range(N)]
ITEMS = [t2i([W0, W0 + 5]), edit([W0 + 2, W0 + 9, W0 + 1], SOURCE), plain([W0 + 3])]


def test_greedy_k_row_mixing_equals_the_offline_formula(model, engine):
    """1, 2 and 3 rows per sequence in one batch: greedy codes equal generate_images', which
    mixes sum_k w_k logits_k over a plain (unpadded, uncached-across-requests) batch."""
    prompts = [p for p, _ in ITEMS]
    weights = [w for _, w in ITEMS]
    got = engine.submit(prompts, weights, [0, 0, 0], top_k=1).result(TIMEOUT)
    for i, (p, w) in enumerate(ITEMS):
        expected = generate_images(model, [p], w, temperature=0.0)
        assert torch.equal(got[i].view(-1), expected[0])


def test_mix_is_the_weighted_sum_of_the_rows(engine):
    """The hook alone: sequences of 2 and 3 rows, padded to 3 with weight 0."""
    engine.running = []
    engine.weights = torch.tensor([[2.0, -1.0, 0.0], [0.5, 1.0, -0.5]])

    class R:
        row_counts = [2]
        cache_rows = [0, 1]

    class S:
        row_counts = [3]
        cache_rows = [2, 3, 4]

    engine.running = [R(), S()]
    engine._layout()
    logits = torch.randn(5, CONFIG.layout.vocab.size)
    img = logits[:, CONFIG.text_vocab :]
    mixed = engine._mix(logits, 0, 2, 0)
    assert torch.allclose(mixed[0], 2 * img[0] - img[1])
    assert torch.allclose(mixed[1], 0.5 * img[2] + img[3] - 0.5 * img[4])
    engine.running = []
    engine._reset()


def test_forced_cells_are_kept_exactly(engine):
    forced = torch.full((2, N), -1, dtype=torch.long)
    forced[0, ::2] = torch.tensor(SOURCE[::2])
    forced[1, 1:4] = torch.tensor([31, 0, 17])
    p, w = edit([W0 + 4], SOURCE)
    got = engine.submit([p, p], [w, w], [5, 6], forced=forced, temperature=1.5).result(TIMEOUT)
    got = got.view(2, N)
    keep = forced >= 0
    assert torch.equal(got[keep], forced[keep])
    assert bool((got >= 0).all()) and bool((got < CONFIG.image_vocab).all())


def test_a_sequence_does_not_depend_on_its_batch_companions(model, engine):
    p, w = ITEMS[1]
    alone = engine.submit([p], [w], [42], temperature=1.0).result(TIMEOUT)
    prompts = [ITEMS[0][0], p, ITEMS[2][0]]
    weights = [ITEMS[0][1], w, ITEMS[2][1]]
    together = engine.submit(prompts, weights, [1, 42, 2], temperature=1.0).result(TIMEOUT)
    assert torch.equal(together[1], alone[0])
    other = MixedSampler(model, max_rows=12)  # and in another engine, with another load
    try:
        first = other.submit([ITEMS[0][0]] * 2, [ITEMS[0][1]] * 2, [8, 9])
        again = other.submit([p], [w], [42], temperature=1.0).result(TIMEOUT)
        first.result(TIMEOUT)
    finally:
        other.close()
    assert torch.equal(again[0], alone[0])


def test_a_request_joining_mid_run_gets_what_it_gets_alone(engine):
    p, w = ITEMS[0]
    q, v = ITEMS[1]
    alone = engine.submit([q], [v], [7]).result(TIMEOUT)
    late = {}

    def progress(done, grids):
        if done == 3 and "f" not in late:
            late["f"] = engine.submit([q], [v], [7])
            late["running"] = len(engine.running)
        return True

    first = engine.submit([p], [w], [3], on_progress=progress, progress_every=1)
    first.result(TIMEOUT)
    assert torch.equal(late["f"].result(TIMEOUT), alone)
    assert engine.max_running >= 5  # the late request's 3 rows ran beside the first's 2


def test_bad_requests_are_refused(engine):
    p, w = ITEMS[0]
    with pytest.raises(InvalidArgument):
        engine.submit([p], [w, w], [0])
    with pytest.raises(InvalidArgument):
        engine.submit([p], [[1.0]], [0])  # 2 prompts, 1 weight
    with pytest.raises(InvalidArgument):
        engine.submit([p], [w], [0], temperature=0.0)
    with pytest.raises(InvalidArgument):
        engine.submit([p], [w], [0], forced=torch.full((1, N), 99))


def test_copy_cells_engine_matches_the_offline_sampler():
    """The engine feeds each row's code at ``Layout.output_slot`` as the offline sampler does,
    whichever slot layout the model was trained with."""
    config = MixedConfig.tiny(grid_size=3, image_vocab=32, copy_cells=True)
    torch.manual_seed(1)
    model = MixedTransformer(config).eval()
    b = Builder(config.layout)
    items = [
        ([b.prompt(b.t2i([W0, W0 + 5], BLANK)), b.prompt(b.t2i([], BLANK))], text_weights(3.0)),
        ([b.prompt(b.edit([W0 + 2], SOURCE, BLANK))], [1.0]),
    ]
    sampler = MixedSampler(model, max_rows=12)
    try:
        got = sampler.submit([p for p, _ in items], [w for _, w in items], [0, 0], top_k=1).result(
            TIMEOUT
        )
    finally:
        sampler.close()
    for i, (p, w) in enumerate(items):
        assert torch.equal(got[i].view(-1), generate_images(model, [p], w, temperature=0.0)[0])


def test_keep_engine_matches_the_offline_sampler():
    """With ``<keep>`` the engine writes an edit's source code where ``<keep>`` is drawn,
    feeds it back, masks ``<keep>`` for a sequence without a source, as ``generate_images``."""
    config = MixedConfig.tiny(grid_size=3, image_vocab=32, keep_token=True)
    torch.manual_seed(2)
    model = MixedTransformer(config).eval()
    keep = config.layout.vocab.keep_id
    with torch.no_grad():  # a large <keep> row: it wins at some cells, not at others
        model.lm_head.weight[keep] = torch.randn(config.n_embd) * 0.5
    b = Builder(config.layout)
    source = torch.tensor(SOURCE)
    items = [
        ([b.prompt(b.t2i([W0, W0 + 5], BLANK)), b.prompt(b.t2i([], BLANK))], text_weights(3.0)),
        ([b.prompt(b.edit([W0 + 2], SOURCE, BLANK))], [1.0]),
    ]
    sources = torch.stack([torch.full((N,), -1), source])
    sampler = MixedSampler(model, max_rows=12)
    try:
        got = sampler.submit(
            [p for p, _ in items], [w for _, w in items], [0, 0], top_k=1, sources=sources
        ).result(TIMEOUT)
        with pytest.raises(InvalidArgument, match="sources"):
            sampler.submit([items[1][0]], [[1.0]], [0], sources=torch.full((1, N), 32))
    finally:
        sampler.close()
    for i, (p, w) in enumerate(items):
        want = generate_images(model, [p], w, temperature=0.0, sources=sources[i : i + 1])
        assert torch.equal(got[i].view(-1), want[0])
    assert (got[0] < 32).all()
    kept = got[1].view(-1) == source
    assert kept.any() and not kept.all(), kept
