"""The continuous-vs-static batching benchmark runs on a tiny LM and reports both schedules."""

from __future__ import annotations

import torch

from benchmarks.batching import continuous_vs_static
from benchmarks.report import bar_lines
from benchmarks.run import summarize
from tessera.lm.model import ImageGPT, LMConfig


def test_both_schedules_are_measured_on_the_same_arrivals():
    torch.manual_seed(0)
    model = ImageGPT(LMConfig.tiny(guidance_scale=1.5)).eval()
    result = continuous_vs_static(model, repeats=2, summarize=summarize, requests=4)
    assert result["guided"] and result["requests"] == 4
    for mode in ("continuous", "static"):
        assert result[mode]["p99"]["n"] == 2
        assert 0 < result[mode]["p50"]["median"] <= result[mode]["p99"]["median"]
    assert result["p99_static_over_continuous"] > 0


def test_bar_lines_judge_each_bar_from_the_numbers():
    def served(median: float, rps: float) -> dict:
        return {"median": median, "throughput_rps": rps}

    results = {
        "paired": {
            "in_process": {"ar": {"median": 1.0}, "unclip": {"median": 1.0}},
            "served": {"ar": {"median": 1.2}, "unclip": {"median": 1.5}},
            "served_grpc": {"ar": {"median": 1.1}, "unclip": {"median": 1.2}},
        },
        "served": {
            "ar": {"1": served(1.2, 1.0), "16": served(2.0, 4.0)},
            "unclip": {"1": served(1.5, 1.0), "16": served(2.0, 2.0)},
        },
        "overhead": {
            "concurrency": 16,
            "ar": {"served_over_in_process": 0.9},
            "unclip": {"served_over_in_process": 0.8},
        },
        "batching": {"p99_static_over_continuous": 1.4},
        "kv_cache": {"speedup": 6.0},
    }
    text = "\n".join(bar_lines(results))
    assert "| served (HTTP API) / in-process latency, ar, c=1 | 1.20 | <= 1.15 | NO |" in text
    assert "| served (HTTP API) / in-process latency, unclip, c=1 | 1.50 | <= 1.1 | NO |" in text
    assert "| served (gRPC API) / in-process latency, ar, c=1 | 1.10 | <= 1.15 | yes |" in text
    assert "| served (gRPC API) / in-process latency, unclip, c=1 | 1.20 | <= 1.1 | NO |" in text
    assert "| served / in-process throughput, ar, c=16 | 0.90 | >= 0.85 | yes |" in text
    assert "| served / in-process throughput, unclip, c=16 | 0.80 | >= 0.85 | NO |" in text
    assert "c=16 / c=1" not in text  # bounded by the machine's cores, not a bar any more
    assert "static / continuous p99 under staggered arrivals | 1.40 | > 1 | yes" in text


def test_overhead_lines_show_both_sides_and_every_stage():
    from benchmarks.overhead import CLIENT
    from benchmarks.report import overhead_lines

    def side(v: float) -> dict:
        return summarize([v, v * 1.1])

    def cpu(route: str) -> dict:
        served = {"Gateway": 20.0, "LanguageModel" if route == "ar" else "Decoder": 60.0}
        return {"served": {**served, CLIENT: 5.0}, "in_process": {CLIENT: 70.0}}

    results = {
        "overhead": {
            "concurrency": 16,
            "rounds": 2,
            "requests_per_round": 128,
            **{
                r: {
                    "served": side(9.0),
                    "in_process": side(10.0),
                    "served_over_in_process": 0.9,
                    "cpu_ms_per_request": cpu(r),
                }
                for r in ("ar", "unclip")
            },
        },
        "serialisation": {
            r: {"hops": 4, "messages": 9, "bytes": 40960, "cpu_ms": 0.5} for r in ("ar", "unclip")
        },
    }
    text = "\n".join(overhead_lines(results))
    assert "| ar | 9.45 (9.00–9.90) | 10.50 (10.00–11.00) | 0.90 |" in text
    assert "| Gateway | 20.0 | – | 20.0 | – |" in text
    assert f"| {CLIENT} | 5.0 | 70.0 (all the work) | 5.0 | 70.0 (all the work) |" in text
    assert "| **total** | 85.0 | 70.0 | 85.0 | 70.0 |" in text
    assert "ar 0.50 ms for 9 messages, 40 KiB" in text


def test_overhead_lines_split_in_process_cpu_by_thread_and_show_each_hop():
    from benchmarks.report import overhead_lines

    def route_row(engine: str) -> dict:
        threads = {f"engine thread {engine}-step-batch": 44.0, "worker threads (x)": 24.0}
        return {
            "served": summarize([9.0]),
            "in_process": summarize([10.0]),
            "served_over_in_process": 0.9,
            "cpu_ms_per_request": {
                "served": {"Gateway": 20.0},
                "in_process": {"client": 70.0},
                "in_process_by_thread": threads,
            },
        }

    def ms(seconds: float) -> dict:
        return summarize([seconds])

    results = {
        "overhead": {
            "concurrency": 16,
            "rounds": 1,
            "requests_per_round": 8,
            "ar": route_row("lm"),
            "unclip": route_row("decoder"),
        },
        "paired": {
            "in_process": {"ar": ms(0.090), "unclip": ms(0.220)},
            "served": {"ar": ms(0.120), "unclip": ms(0.240)},
        },
        "hops": {
            "repeats": 20,
            "ar": {
                "hops": {
                    "Prior.EmbedText": {"in_process": 1.5, "served": 5.5},
                    "Detokenizer.Detokenize": {"in_process": 12.0, "served": 20.0},
                },
                "added_ms": 12.0,
            },
            "unclip": {
                "hops": {"Decoder.SampleLatents": {"in_process": 170.0, "served": 178.0}},
                "added_ms": 8.0,
            },
        },
    }
    text = "\n".join(overhead_lines(results))
    assert "| engine thread lm-step-batch | 44.0 | 0.0 |" in text
    assert "| engine thread decoder-step-batch | 0.0 | 44.0 |" in text
    assert "| worker threads (x) | 24.0 | 24.0 |" in text
    assert "| ar | Detokenizer.Detokenize | 12.0 | 20.0 | +8.0 |" in text
    assert "| ar | **all hops** | | | +12.0 |" in text
    # the paired gap (30 ms) less what the hops added (12 ms) is the ingress's share
    assert "| ar | HTTP ingress, gateway (paired gap 30.0) | | | +18.0 |" in text
    assert "| unclip | HTTP ingress, gateway (paired gap 20.0) | | | +12.0 |" in text


def test_served_lines_put_the_grpc_api_beside_http_when_measured():
    from benchmarks.report import served_lines

    def timing(median: float) -> dict:
        return summarize([median, median])

    paired = {
        "in_process": {"ar": timing(0.1), "unclip": timing(0.2)},
        "served": {"ar": timing(0.12), "unclip": timing(0.24)},
    }
    load = {r: {"1": {"throughput_rps": 5.0, "p50": 0.1, "p99": 0.2}} for r in ("ar", "unclip")}
    plain = "\n".join(served_lines({"paired": paired, "served": load}))
    assert "| served / in-process |" in plain and "gRPC / in-process" not in plain
    paired["served_grpc"] = {"ar": timing(0.11), "unclip": timing(0.3)}
    both = "\n".join(served_lines({"paired": paired, "served": load}))
    assert "| HTTP / in-process | gRPC median (s) | gRPC / in-process |" in both
    assert "| 1.20 | 0.110 (0.110–0.110) | 1.10 |" in both


def test_the_second_stacks_lines_and_bars_sit_beside_the_first(tmp_path):
    from benchmarks.overhead import CLIENT
    from benchmarks.report import second_stack_lines

    def paired(ar: float, unclip: float) -> dict:
        return {"ar": summarize([ar]), "unclip": summarize([unclip])}

    def load(route: str, ratio: float, gateway: float) -> dict:
        cpu = {"served": {"Gateway": gateway, CLIENT: 2.0}, "in_process": {CLIENT: 70.0}}
        return {"served_over_in_process": ratio, "cpu_ms_per_request": cpu}

    results = {
        "meta": {"ingress": "proxy"},  # a run with TESSERA_INGRESS=proxy: direct second
        "overhead": {"concurrency": 16, "ar": load("ar", 0.8, 9.0), "unclip": load("u", 0.9, 9.0)},
        "second_stack": {
            "ingress": "direct",
            "paired": {
                "in_process": paired(0.1, 0.2),
                "served": paired(0.112, 0.23),
                "served_grpc": paired(0.116, 0.21),
            },
            "overhead": {
                "concurrency": 16,
                "ar": load("ar", 0.88, 4.0),
                "unclip": load("unclip", 0.95, 5.0),
            },
        },
        "batching": {"p99_static_over_continuous": 1.4},
        "kv_cache": {"speedup": 6.0},
    }
    table = "\n".join(second_stack_lines(results))
    assert "Direct ingress (`tessera serve --ingress direct`: the Gateway replica" in table
    assert "(first stack, Serve's proxy) |" in table
    # HTTP 1.12, gRPC 1.16, 0.88 at 16 clients; CPU per request 6.0 here, 11.0 behind the proxy
    assert "| 1.12 | 0.116 (0.116–0.116) | 1.16 | 0.88 | 6.0 (11.0) |" in table
    bars = "\n".join(bar_lines(results))
    assert "| served (HTTP API, direct ingress) / in-process latency, ar, c=1 | 1.12 |" in bars
    assert (
        "| served (gRPC API, direct ingress) / in-process latency, ar, c=1 | 1.16 | <= 1.15 | NO |"
        in bars
    )
    unclip = "| served (HTTP API, direct ingress) / in-process latency, unclip, c=1 | 1.15 |"
    assert unclip + " <= 1.1 | NO |" in bars
    assert (
        "| served, direct ingress / in-process throughput, ar, c=16 | 0.88 | >= 0.85 | yes |"
        in bars
    )
    proxy = "| served, Serve's proxy / in-process throughput, ar, c=16 | 0.80 | >= 0.85 | NO |"
    assert proxy in bars
    from benchmarks.report import plot

    results["paired"] = {k: paired(0.12, 0.24) for k in ("in_process", "served", "served_grpc")}
    plot(results, tmp_path / "ingress.png")  # the proxy / direct panel alone
    assert (tmp_path / "ingress.png").stat().st_size > 0
