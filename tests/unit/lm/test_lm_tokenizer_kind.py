"""The ar LM models token ids: a continuous (kl) tokenizer is refused with a clear error."""

from __future__ import annotations

import pytest

from tessera.bundle.random_init import build_random_bundle
from tessera.common.errors import InvalidArgument
from tessera.lm.train import load_tokenizer


def test_the_lm_trainer_refuses_a_kl_tokenizer(tmp_path):
    build_random_bundle(tmp_path, "kl", tokenizer_kind="kl")
    with pytest.raises(InvalidArgument, match="discrete tokenizer"):
        load_tokenizer(tmp_path / "tokenizer")
    build_random_bundle(tmp_path / "gumbel", "gumbel", tokenizer_kind="gumbel")
    assert load_tokenizer(tmp_path / "gumbel" / "tokenizer")[0].discrete  # dVAE codes: fine
