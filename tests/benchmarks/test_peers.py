"""The peer comparisons run on tiny models and report consistent numbers (no timing asserts)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.peers import decoder_vs_diffusers, lm_vs_transformers, matmul_peak
from benchmarks.report import peer_lines, quality_lines, write_report
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
        "decoder": decoder_vs_diffusers(
            decoder, batch=2, steps=3, repeats=1, summarize=summarize, solver_steps=2
        ),
    }


def test_models_are_matched_in_size(results):
    lm, dec = results["lm"]["params"], results["decoder"]["params"]
    assert 0.5 < lm["tessera"] / lm["transformers"] < 2
    assert dec["ratio"] == dec["diffusers"] / dec["tessera"]
    assert abs(dec["ratio"] - 1) <= 0.05  # the same architecture: parameters within 5%


def test_the_equal_quality_row_runs_the_solver_at_its_steps(results):
    row = results["decoder"]["equal_quality"]
    assert row["scheduler"] == "dpmsolver++" and row["steps"] == 2 and row["speedup"] > 0


def test_solver_quality_finds_steps_on_a_tiny_bundle(tmp_path):
    """Runs end to end on a random tiny bundle (the numbers mean nothing there)."""
    from benchmarks.decoder_quality import solver_quality
    from tessera.bundle.random_init import build_random_bundle

    build_random_bundle(tmp_path, "tiny", tiny=True, seed=0)
    q = solver_quality(tmp_path, n=2, steps=(2, 4), reference_steps=12)
    assert set(q["dpmsolver++"]) == {"2", "4", "10"} and set(q["ddim"]) == {"2", "4"}
    assert q["baseline"]["steps"] == 10 and q["baseline"]["ode_error"] > 0
    assert q["fewest_steps"] in (None, 2, 4) and q["fewest_steps_clip"] in (None, 2, 4)
    text = "\n".join(quality_lines(q))
    assert "DPM-Solver++" in text and "Fewest DPM-Solver++ steps" in text


def test_guidance_doubles_the_counted_work(results):
    for name in ("lm", "decoder"):
        plain, guided = results[name]["no_guidance"], results[name]["guidance"]
        if name == "decoder":
            assert guided["flops_per_run"] == pytest.approx(2 * plain["flops_per_run"], rel=0.1)
        else:  # the LM's null-condition rows share one prefill: less than double, not much
            assert 1.5 < guided["flops_per_run"] / plain["flops_per_run"] < 2.0
        assert plain["speedup"] > 0 and guided["speedup"] > 0


def test_report_lines_name_both_peers(results):
    text = "\n".join(peer_lines(results))
    assert (
        "transformers" in text
        and "diffusers" in text
        and "% of peak" in text.replace("(% of peak)", "% of peak")
    )


def test_the_diffusers_peer_matches_the_committed_decoder_within_five_percent():
    """The committed bundle's decoder config (48/96 channels: GroupNorm groups must divide
    both): the peer UNet2DConditionModel and its conditioning layers hold within 5% of its
    parameters, with the same levels, attention blocks and heads."""
    import json
    from pathlib import Path

    from benchmarks.peers import conditioned_unet

    config = json.loads(
        (Path(__file__).parents[2] / "models/twemoji/decoder/config.json").read_text()
    )
    config.pop("_class_name")
    cfg = DecoderConfig(**config)
    ours = LatentDecoder(cfg)
    unet, cond = conditioned_unet(cfg)
    theirs = sum(p.numel() for m in (unet, cond) for p in m.parameters())
    assert abs(theirs / ours.num_params() - 1) <= 0.05
    blocks = [type(m).__name__ for m in unet.modules()]
    ours_blocks = [type(m).__name__ for m in ours.modules()]
    assert blocks.count("BasicTransformerBlock") == ours_blocks.count("TransformerBlock")
    assert blocks.count("ResnetBlock2D") == ours_blocks.count("ResBlock")
    attn = next(m for m in unet.modules() if type(m).__name__ == "Attention")
    assert attn.heads == cfg.num_heads


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


def test_the_lm_makes_fewer_torch_calls_per_token_than_generate(results):
    """Counted, not timed: the Python -> torch dispatches of one sampled token."""
    for g in ("no_guidance", "guidance"):
        calls = results["lm"][g]["torch_calls_per_token"]
        assert 0 < calls["tessera"] < calls["transformers"]


def test_the_jacobi_row_reports_acceptance(results):
    for label in ("no_guidance", "guidance"):
        row = results["lm"][label]["jacobi"]
        assert row["tokens_per_forward"] >= 1  # every round takes at least one token
        assert 1 < row["forwards"] <= results["lm"]["new_tokens"]
    assert "speculative Jacobi" in "\n".join(peer_lines_lm_only(results))


def peer_lines_lm_only(results: dict) -> list[str]:
    from benchmarks.report import jacobi_lines

    return jacobi_lines(results["lm"])


def test_the_lm_bench_reports_every_round_and_their_median():
    from benchmarks import lm_bench

    torch.manual_seed(0)
    results = lm_bench.run(ImageGPT(LMConfig.tiny()).eval(), rounds=2, repeats=1, batch=2)
    results["meta"] = {"bundle": "tiny", "when": "now", "threads": 1, "load": "0.0"}
    assert len(results["rounds"]) == 2
    for g in ("no_guidance", "guidance"):
        ratios = [r[g]["cpu_speedup"] for r in results["rounds"]]
        assert min(ratios) <= results["median"][g]["cpu_speedup"] <= max(ratios)
    text = lm_bench.report(results)
    assert text.count("| 1 |") == 2 and text.count("| 2 |") == 2 and "Round 2:" in text
