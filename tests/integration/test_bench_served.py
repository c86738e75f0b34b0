"""`make bench`'s served measurements, run against the session's stack on the tiny bundle."""

from __future__ import annotations

from benchmarks.run import ROUTES, paired_latency, served


def test_paired_latency_times_both_paths_of_every_route(stack):
    result = paired_latency(stack["bundle_dir"], stack["http"], repeats=2)
    for side in ("in_process", "served"):
        for route in ROUTES:
            r = result[side][route]
            assert r["n"] == 2 and 0 < r["min"] <= r["median"] <= r["max"]


def test_served_load_reports_throughput_per_concurrency(stack):
    result = served(stack["http"], repeats=2, levels=(1, 2))
    for route in ROUTES:
        assert set(result[route]) == {"1", "2"}
        for c, r in result[route].items():
            assert r["concurrency"] == int(c) and r["n"] == max(2, 2 * int(c))
            assert r["throughput_rps"] > 0 and r["p50"] <= r["p99"]
