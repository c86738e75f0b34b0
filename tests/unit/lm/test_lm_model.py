"""ImageGPT: shapes, masking, the KV cache against the full forward, training, checkpoints."""

from __future__ import annotations

import torch
from lm_helpers import fake_text

from tessera.common.checkpoint import load_component, save_component
from tessera.lm.model import ImageGPT, LMConfig, trim_text
from tessera.lm.sampling import SamplingParams, sample_tokens


def make(**overrides) -> ImageGPT:
    torch.manual_seed(0)
    return ImageGPT(LMConfig.tiny(**overrides)).eval()


def test_forward_shapes_and_loss():
    model = make()
    cfg = model.config
    text = fake_text(3, seed=0)
    codes = torch.randint(0, cfg.vocab_size, (3, cfg.n_tokens))
    logits, loss = model(codes[:, :-1], text.states, text.mask, targets=codes)
    assert logits.shape == (3, cfg.n_tokens, cfg.vocab_size)
    # An untrained model is close to uniform: loss ~ ln(vocab).
    assert abs(loss.item() - torch.log(torch.tensor(float(cfg.vocab_size))).item()) < 0.3
    logits0, _ = model(codes[:, :0], text.states, text.mask)
    assert logits0.shape == (3, 1, cfg.vocab_size)


def test_padding_positions_are_ignored():
    model = make()
    text = fake_text(2, seed=0)
    codes = torch.randint(0, model.config.vocab_size, (2, 5))
    noisy = text.states.clone()
    noisy[~text.mask] = 1e3 * torch.randn_like(noisy[~text.mask])
    a, _ = model(codes, text.states, text.mask)
    b, _ = model(codes, noisy, text.mask)
    torch.testing.assert_close(a, b)


def test_null_condition_ignores_text_and_training_dropout_uses_it():
    model = make(cond_dropout=1.0)
    codes = torch.randint(0, model.config.vocab_size, (2, 6))
    t1, t2 = fake_text(2, seed=1), fake_text(2, seed=2)
    drop = torch.ones(2, dtype=torch.bool)
    a, _ = model(codes, t1.states, t1.mask, drop_cond=drop)
    b, _ = model(codes, t2.states, t2.mask, drop_cond=drop)
    torch.testing.assert_close(a, b)
    c, _ = model(codes, t1.states, t1.mask)  # eval: no dropout -> conditional
    assert not torch.allclose(a, c)
    model.train()  # train with cond_dropout=1: every row sees the null prefix
    d, _ = model(codes, t1.states, t1.mask)
    torch.testing.assert_close(a, d)


def test_kv_cache_logits_match_full_forward():
    model = make()
    cfg = model.config
    text = fake_text(3, seed=3)
    codes = torch.randint(0, cfg.vocab_size, (3, cfg.n_tokens))
    drop = torch.tensor([False, True, False])
    full, _ = model(codes[:, :-1], text.states, text.mask, drop_cond=drop)  # (3, L, V)
    cache = model.new_cache(3)
    steps = [model.prefill(text.states, text.mask, cache, drop_cond=drop)]
    for i in range(cfg.n_tokens - 1):
        steps.append(model.decode_step(codes[:, i], cache))
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_null_rows_of_a_prefill_run_once_and_match_a_row_by_row_prefill():
    """A guided batch's null-condition rows are one row repeated: prefill runs it once and
    copies it. The cache and logits must be those of running every row on its own."""
    model = make()
    cfg = model.config
    text = fake_text(5, seed=4)
    states, mask = trim_text(text.states, text.mask)
    drop = torch.tensor([False, True, True, False, True])  # the engine interleaves rows
    cache = model.new_cache(5)
    rows_run: list[int] = []
    run = model._run
    model._run = lambda x, *rest: rows_run.append(x.shape[0]) or run(x, *rest)
    logits = model.prefill(states, mask, cache, drop_cond=drop)
    del model._run
    assert rows_run == [3]  # two conditional rows and one null row
    ran: list[torch.Tensor] = []
    for rows in torch.arange(5).view(-1, 1).unbind(0):  # one row at a time
        alone = model.new_cache(1)
        ran.append(model.prefill(states[rows], mask[rows], alone, drop_cond=drop[rows]))
        used = alone.length
        assert cache.length == used and cache.prefix_len == alone.prefix_len
        for shared, own in zip(cache.k + cache.v, alone.k + alone.v, strict=True):
            torch.testing.assert_close(shared[rows, :, :used], own[:, :, :used])
        assert torch.equal(cache.key_mask[rows], alone.key_mask[:, : cache.key_mask.shape[1]])
    torch.testing.assert_close(logits, torch.cat(ran))
    # the three null rows are bit-for-bit one row, whatever their text was
    assert torch.equal(logits[1], logits[2]) and torch.equal(logits[1], logits[4])
    assert all(torch.equal(k[1], k[4]) for k in cache.k + cache.v)
    # and the cache goes on decoding like one built without sharing
    codes = torch.randint(0, cfg.vocab_size, (5, 3))
    full, _ = model(codes, states, mask, drop_cond=drop)
    steps = [logits] + [model.decode_step(codes[:, i], cache) for i in range(3)]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_a_cache_sized_to_the_prefix_samples_what_the_full_block_samples():
    model = make()
    text = fake_text(3, seed=6)
    states, mask = trim_text(text.states, text.mask)
    short = model.new_cache(3, positions=states.shape[1] + model.config.n_tokens)
    assert short.k[0].shape[2] < model.new_cache(3).k[0].shape[2]
    codes = torch.randint(0, model.config.vocab_size, (3, model.config.n_tokens - 1))
    got = [model.prefill(states, mask, short)]
    got += [model.decode_step(codes[:, i], short) for i in range(codes.shape[1])]
    full = model.new_cache(3)
    want = [model.prefill(states, mask, full)]
    want += [model.decode_step(codes[:, i], full) for i in range(codes.shape[1])]
    assert torch.equal(torch.stack(got), torch.stack(want))


def test_decode_step_is_bit_for_bit_the_blocks_forward():
    """``Block.decode`` (the functional decode path) against the modules' own forward."""
    model = make()
    cfg = model.config
    text = fake_text(3, seed=7)
    states, mask = trim_text(text.states, text.mask)
    fast, slow = model.new_cache(3), model.new_cache(3)
    first = model.prefill(states, mask, fast)
    assert torch.equal(first, model.prefill(states, mask, slow))
    for token in torch.randint(0, cfg.vocab_size, (cfg.n_tokens - 1, 3)):
        got = model.decode_step(token, fast)
        model.train()  # in training mode decode_step runs the modules (dropout is 0 here)
        want = model.decode_step(token, slow)
        model.eval()
        assert torch.equal(got, want)
    assert all(torch.equal(a, b) for a, b in zip(fast.k + fast.v, slow.k + slow.v, strict=True))


def test_tiny_model_overfits_a_small_batch(trained):
    model, text, codes, losses = trained
    assert losses[0] > 3.0 and losses[-1] < 0.1, (losses[0], losses[-1])
    # Near-greedy conditional sampling reproduces each memorised grid.
    params = [
        SamplingParams(temperature=0.1, top_k=1, guidance_scale=1.0, seed=i) for i in range(4)
    ]
    got = sample_tokens(model, text, params)
    assert torch.equal(got, codes)


def test_checkpoint_round_trip(tmp_path, trained):
    model, text, codes, _ = trained
    save_component(tmp_path / "lm", model, model.config)
    loaded = load_component(tmp_path / "lm")
    assert isinstance(loaded, ImageGPT) and loaded.config == model.config
    flat = codes.view(4, -1)
    a, _ = model(flat[:, :-1], text.states, text.mask)
    b, _ = loaded(flat[:, :-1], text.states, text.mask)
    assert torch.equal(a, b)
    params = [SamplingParams(seed=7, guidance_scale=2.0)] * 4
    assert torch.equal(sample_tokens(model, text, params), sample_tokens(loaded, text, params))


def test_trimming_the_text_padding_changes_nothing():
    model = make()
    text = fake_text(3, seed=5)
    states, mask = trim_text(text.states, text.mask)
    assert states.shape[1] == int(text.mask.sum(1).max()) < 32
    codes = torch.randint(0, model.config.vocab_size, (3, 7))
    drop = torch.tensor([False, True, False])
    a, _ = model(codes, text.states, text.mask, drop_cond=drop)
    b, _ = model(codes, states, mask, drop_cond=drop)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
