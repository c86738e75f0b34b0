"""BundleInfo on bundles whose tokenizer is another kind: a continuous (kl) tokenizer serves
unclip without snapping latents, and has no ar route; an LM beside it is refused."""

from __future__ import annotations

import shutil

import pytest

from tessera.bundle.random_init import build_random_bundle
from tessera.common.checkpoint import write_bundle_index
from tessera.common.errors import ModelNotReady
from tessera.routes.bundle import BundleInfo


@pytest.mark.parametrize("kind", ["vq", "gumbel", "kl"])
def test_bundle_info_reads_the_tokenizer_kind(kind, tmp_path):
    build_random_bundle(tmp_path, "tiny", tokenizer_kind=kind)
    info = BundleInfo.read(tmp_path)
    assert info.tokenizer_kind == kind
    assert ("ar" in info.routes) == (kind != "kl") and "unclip" in info.routes
    assert info.quantize_latents == (kind != "kl")  # latent diffusion: no codebook to snap to


def test_a_kl_bundle_with_an_lm_is_refused(tmp_path):
    build_random_bundle(tmp_path / "vq", "vq")
    build_random_bundle(tmp_path / "kl", "kl", tokenizer_kind="kl")
    shutil.copytree(tmp_path / "vq" / "lm", tmp_path / "kl" / "lm")
    write_bundle_index(tmp_path / "kl", "kl")
    with pytest.raises(ModelNotReady, match="discrete tokenizer"):
        BundleInfo.read(tmp_path / "kl")
