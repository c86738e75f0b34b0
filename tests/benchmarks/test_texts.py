"""Prompt encodings written where MiniLM runs read back as the encoder's own rows."""

from __future__ import annotations

import pytest
import torch

from benchmarks import texts
from tessera.common.text_encoder import shared_text_encoder


@pytest.fixture
def clean_rows():
    saved = dict(texts._LOADED)
    texts._LOADED.clear()
    yield
    texts._LOADED.clear()
    texts._LOADED.update(saved)


def test_rows_from_the_file_equal_the_encoders_batch(tmp_path, clean_rows):
    prompts = ["grinning face", "a much longer prompt about a small red fruit on a plate", "sun"]
    path = tmp_path / "texts.safetensors"
    texts.save(path, prompts)
    assert texts.load(path) == 3
    # Another order and a repeat: the batch is stacked row by row from the file.
    asked = ["sun", "grinning face", "sun", prompts[1]]
    from_file = texts.encode(asked)
    direct = shared_text_encoder("cpu").encode(asked)
    for got, want in zip(
        (from_file.states, from_file.mask, from_file.pooled),
        (direct.states, direct.mask, direct.pooled),
        strict=True,
    ):
        assert got.shape == want.shape and torch.equal(got, want)


def test_a_prompt_missing_from_the_file_falls_back_to_minilm(tmp_path, clean_rows):
    path = tmp_path / "texts.safetensors"
    texts.save(path, ["sun"])
    texts.load(path)
    batch = texts.encode(["sun", "rocket"])
    assert torch.equal(batch.states, shared_text_encoder("cpu").encode(["sun", "rocket"]).states)


def test_the_bench_prompts_cover_every_in_process_part():
    from benchmarks import batching, decoder_quality

    prompts = texts.bench_prompts()
    assert len(prompts) == len(set(prompts))
    assert {*batching.PROMPTS, *decoder_quality.PROMPTS, "grinning face"} <= set(prompts)
