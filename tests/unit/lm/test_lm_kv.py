"""The KV cache's helpers: grouping rows by how far their keys reach (continuous batching)."""

from __future__ import annotations

import copy

import pytest
import torch
from lm_helpers import fake_text

from tessera.lm import model as lm_model
from tessera.lm.kv import key_spans
from tessera.lm.model import ImageGPT, LMConfig, trim_text


def test_a_small_or_even_batch_stays_one_group():
    assert key_spans([]) == []
    assert key_spans([40] * 20) == [(0, 20, 40)]  # too few rows to split
    assert key_spans([77] * 128) == [(0, 128, 77)]  # nothing to save


def test_rows_in_arrival_order_split_where_the_reads_drop():
    ends = [77] * 64 + [20] * 64  # the older half is far ahead of the newer half
    assert key_spans(ends, depth=1) == [(0, 64, 77), (64, 128, 20)]
    staggered = [77 - r // 2 for r in range(128)]  # one request arriving every few steps
    spans = key_spans(staggered)
    assert 2 <= len(spans) <= 4
    assert spans[0][0] == 0 and spans[-1][1] == 128  # contiguous, covering every row
    assert all(b == c for (_, b, _), (c, _, _) in zip(spans, spans[1:], strict=False))
    assert all(n == max(staggered[a:b]) and b - a >= 16 for a, b, n in spans)
    reads = sum((b - a) * n for a, b, n in spans)
    assert reads <= 0.8 * 128 * 77


def test_grouped_attention_gives_the_one_group_logits(monkeypatch):
    """decode_rows over 48 rows at staggered positions, grouped and not."""
    torch.manual_seed(0)
    model = ImageGPT(LMConfig.tiny(grid_size=8)).eval()
    L = model.config.n_tokens
    rows = 48
    text = fake_text(rows, seed=1)
    states, mask = trim_text(text.states, text.mask)
    cache = model.new_cache(rows)
    with torch.inference_mode():
        model.prefill(states, mask, cache)
        P = cache.prefix_len
        # fill every row's image slots, then ask each row for a different cell
        for _ in range(1, L - 1):
            model.decode_step(torch.randint(0, model.config.vocab_size, (rows,)), cache)
        cell = torch.tensor([L - 1 - (r * (L - 2)) // rows for r in range(rows)])  # older first
        offset = torch.full((rows,), P)
        token = torch.randint(0, model.config.vocab_size, (rows,))
        assert len(key_spans((offset + cell + 1).tolist())) > 1
        grouped = model.decode_rows(token, cell, offset, copy.deepcopy(cache))
        monkeypatch.setattr(lm_model, "key_spans", lambda ends: [(0, len(ends), max(ends))])
        single = model.decode_rows(token, cell, offset, copy.deepcopy(cache))
    torch.testing.assert_close(grouped, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("min_rows", [1, 8])
def test_groups_never_leave_a_row_out(min_rows):
    ends = [5, 9, 3, 12, 12, 1, 7, 7, 30, 2, 2, 2, 8, 4, 6, 10]
    spans = key_spans(ends, min_rows=min_rows, min_saving=0.0, depth=3)
    covered = [r for a, b, _ in spans for r in range(a, b)]
    assert covered == list(range(len(ends)))
    assert all(n == max(ends[a:b]) for a, b, n in spans)
