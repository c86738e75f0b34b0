"""`make bench`'s served measurements, run against the session's stack on the tiny bundle."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.run import ROUTES, load, paired_latency, served


def test_paired_latency_times_every_path_of_every_route(stack):
    result = paired_latency(
        stack["bundle_dir"], stack["http"], repeats=2, grpc_target=stack["grpc"]
    )
    for side in ("in_process", "served", "served_grpc"):
        for route in ROUTES:
            r = result[side][route]
            assert r["n"] == 2 and 0 < r["min"] <= r["median"] <= r["max"]


def test_served_load_reports_throughput_per_concurrency(stack):
    result = served(stack["http"], repeats=2, levels=(1, 2), rounds=2, per_client=4)
    for route in ROUTES:
        assert set(result[route]) == {"1", "2"}
        for c, r in result[route].items():
            per_round = max(2, 4 * int(c))
            assert r["concurrency"] == int(c) and r["requests_per_round"] == per_round
            assert r["n"] == 2 * per_round  # latencies pool both rounds
            assert 0 < r["throughput_min"] <= r["throughput_rps"] <= r["throughput_max"]
            assert r["p50"] <= r["p99"]


def test_steady_throughput_leaves_out_the_first_and_last_wave(stack):
    r = asyncio.run(load(stack["http"], "ar", concurrency=2, requests=8, first=50))
    assert r["n"] == 8 and len(r["latencies"]) == 8 and r["throughput_rps"] > 0
    short = asyncio.run(load(stack["http"], "ar", concurrency=2, requests=4, first=60))
    assert short["throughput_rps"] == short["wall_throughput_rps"]  # no steady part: whole run


def test_platform_overhead_reports_both_sides_and_cpu_by_stage(stack):
    from benchmarks.overhead import CLIENT, platform_overhead, serialisation_ms
    from benchmarks.run import prompt, summarize
    from tessera.routes.local import local_pipelines

    pipelines = local_pipelines(stack["bundle_dir"], "cpu")
    result = platform_overhead(
        pipelines, stack["http"], ROUTES, prompt, summarize, concurrency=2, requests=6, rounds=1
    )
    for route in ROUTES:
        r = result[route]
        assert r["served"]["n"] == r["in_process"]["n"] == 1
        assert r["served_over_in_process"] > 0
        served, local = r["cpu_ms_per_request"]["served"], r["cpu_ms_per_request"]["in_process"]
        # the stack this session started: its replicas are found and each did some work
        assert served["Gateway"] > 0 and served["Detokenizer"] > 0
        assert served["LanguageModel" if route == "ar" else "Decoder"] > 0
        assert local[CLIENT] > 0  # in-process, this process does all the work
        # ... which the thread split attributes: the route's engine ran on its own thread
        threads = r["cpu_ms_per_request"]["in_process_by_thread"]
        engine = "lm" if route == "ar" else "decoder"
        assert threads[f"engine thread {engine}-step-batch"] > 0
    ar = serialisation_ms(pipelines, "ar")
    # LM, Detokenize (reranking there; tiny bundle: 4 candidates, one call each)
    assert ar["hops"] == 2 and ar["messages"] == 5 and ar["bytes"] > 0 and ar["cpu_ms"] > 0


def test_hop_latency_replays_every_handle_call_of_a_route(stack):
    from benchmarks.overhead import hop_latency
    from tessera.routes.local import local_pipelines

    pipelines = local_pipelines(stack["bundle_dir"], "cpu")
    result = hop_latency(pipelines, ROUTES, repeats=2)
    assert list(result["ar"]["hops"]) == ["LanguageModel.SampleTokens", "Detokenizer.Detokenize"]
    assert list(result["unclip"]["hops"]) == [
        "Prior.SamplePrior",
        "Decoder.SampleLatents",
        "Detokenizer.Detokenize",
    ]
    for route in ROUTES:
        hops = result[route]["hops"].values()
        assert all(h["in_process"] > 0 and h["served"] > 0 for h in hops)
        added = sum(h["served"] - h["in_process"] for h in hops)
        assert result[route]["added_ms"] == pytest.approx(added)
