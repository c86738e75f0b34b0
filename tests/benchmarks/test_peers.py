"""The peer comparisons run on tiny models and report consistent numbers (no timing asserts)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.peers import decoder_vs_diffusers, lm_vs_transformers, matmul_peak
from benchmarks.report import peer_lines, write_report
from benchmarks.run import summarize
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


def test_a_run_without_the_served_parts_reports_what_it_measured(results, tmp_path):
    """`--no-served` (e.g. the GPU profile on a box without Ray): model tables and bars only."""
    run = {
        "meta": {"bundle": "tiny", "when": "now", "device": "cpu"},
        "batching": {
            "requests": 4,
            "arrival_gap_s": 0.01,
            "solo_s": 0.04,
            "continuous": {"p50": summarize([0.05]), "p99": summarize([0.06])},
            "static": {"p50": summarize([0.07]), "p99": summarize([0.09])},
            "p99_static_over_continuous": 1.5,
        },
        "kv_cache": {
            "speedup": 6.0,
            "grid_tokens": 64,
            "cached": summarize([0.1]),
            "uncached": summarize([0.6]),
        },
        "peers": results,
    }
    write_report(run, tmp_path)
    text = (tmp_path / "latest.md").read_text()
    assert "# Benchmarks (tiny, cpu, now)" in text and "transformers" in text
    assert "served / in-process" not in text and "throughput" not in text
    assert "| static / continuous p99 under staggered arrivals | 1.50 | > 1 | yes |" in text
    assert (tmp_path / "latest.png").stat().st_size > 0 and (tmp_path / "latest.json").exists()


def test_the_gpu_profile_refuses_without_cuda(capsys):
    from benchmarks.run import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit) as exit_info:
        main(["--profile", "gpu", "--quick"])
    assert exit_info.value.code == 2 and "needs a CUDA device" in capsys.readouterr().err
