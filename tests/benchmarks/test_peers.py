"""The peer comparisons run on tiny models and report consistent numbers (no timing asserts)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.peers import decoder_vs_diffusers, lm_vs_transformers, matmul_peak
from benchmarks.run import peer_lines, summarize
from tessera.decoder.model import DecoderConfig, LatentDecoder
from tessera.lm.model import ImageGPT, LMConfig


@pytest.fixture(scope="module")
def results():
    torch.manual_seed(0)
    lm = ImageGPT(LMConfig.tiny()).eval()
    decoder = LatentDecoder(DecoderConfig.tiny()).eval()
    return {
        "matmul_peak": matmul_peak(repeats=2, n=256),
        "lm": lm_vs_transformers(lm, batch=2, repeats=1, summarize=summarize),
        "decoder": decoder_vs_diffusers(decoder, batch=2, steps=3, repeats=1, summarize=summarize),
    }


def test_models_are_matched_in_size(results):
    lm, dec = results["lm"]["params"], results["decoder"]["params"]
    assert 0.5 < lm["tessera"] / lm["transformers"] < 2
    assert 0.3 < dec["tessera"] / dec["diffusers"] < 3


def test_guidance_doubles_the_counted_work(results):
    for name in ("lm", "decoder"):
        plain, guided = results[name]["no_guidance"], results[name]["guidance"]
        assert guided["flops_per_run"] == pytest.approx(2 * plain["flops_per_run"], rel=0.1)
        assert plain["speedup"] > 0 and guided["speedup"] > 0


def test_report_lines_name_both_peers(results):
    text = "\n".join(peer_lines(results))
    assert (
        "transformers" in text
        and "diffusers" in text
        and "% of peak" in text.replace("(% of peak)", "% of peak")
    )


def test_the_diffusers_peer_builds_for_the_committed_decoders_widths():
    """48/96 channels (the bundles' small decoder): GroupNorm groups must divide both."""
    decoder = LatentDecoder(DecoderConfig.tiny(widths=(48, 96))).eval()
    result = decoder_vs_diffusers(decoder, batch=1, steps=1, repeats=1, summarize=summarize)
    assert result["params"]["diffusers"] > 0
