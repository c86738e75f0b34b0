"""`make bench`'s report: latest.json, a markdown table ending with the bars, a PNG plot.

Sections appear for the parts a run measured: a ``--no-served`` run (the model benchmarks
alone, e.g. on a GPU box without Ray) has no served-latency or throughput tables, and judges
only the bars it measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROUTES = ("ar", "unclip")


# Issue 23's serving bars: served / in-process latency at one client (at most), per route,
# and served / in-process throughput at the top concurrency (at least)
LATENCY_BAR = {"ar": 1.15, "unclip": 1.1}
THROUGHPUT_BAR = 0.85
# Who took the requests of a stack the run started (`tessera serve --ingress`)
INGRESS_LABEL = {"direct": "direct ingress", "proxy": "Serve's proxy"}


def ingress_of(results: dict) -> str | None:
    """The first stack's ingress (None: a ``--url`` run, or results from before it was kept)."""
    return results.get("meta", {}).get("ingress")


def stacks_of(results: dict) -> list[tuple[dict, str | None]]:
    """(results, ingress) of the run's stacks: the first (the default ingress), then the
    second stack measured with the other ingress, if the run had one."""
    stacks = [(results, ingress_of(results))]
    if "second_stack" in results:
        stacks.append((results["second_stack"], results["second_stack"]["ingress"]))
    return stacks


def label_suffix(ingress: str | None) -> str:
    """The ingress after a bar's label (", direct ingress"); "" when the run does not know it."""
    return f", {INGRESS_LABEL[ingress]}" if ingress in INGRESS_LABEL else ""


def ingress_note(results: dict) -> str:
    """The first stack's ingress in brackets, after a phrase; "" when the run does not know it."""
    kind = ingress_of(results)
    return f" ({INGRESS_LABEL[kind]})" if kind in INGRESS_LABEL else ""


def write_report(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    meta = results["meta"]
    title = f"# Benchmarks ({meta['bundle']}, {meta.get('device', 'cpu')}, {meta['when']})"
    lines = [title]
    if "paired" in results:
        lines += served_lines(results)
    if "overhead" in results:
        lines += overhead_lines(results)
    if "second_stack" in results:
        lines += second_stack_lines(results)
    lines += batching_lines(results["batching"])
    kv = results["kv_cache"]
    lines += [
        "",
        f"KV cache: {kv['speedup']:.1f}x faster than cache-free sampling "
        f"({kv['grid_tokens']} tokens, batch 4; {kv['cached']['median']:.3f}s "
        f"vs {kv['uncached']['median']:.3f}s).",
    ]
    if "peers" in results:
        lines += peer_lines(results["peers"])
    if "jobs" in results:
        lines += [
            "",
            "| job workers | jobs/s | p50 submit→result (s) | p99 (s) |",
            "|---|---|---|---|",
        ]
        for w, r in results["jobs"].items():
            row = (w, r["jobs_per_s"], r["ideal_jobs_per_s"], r["p50_s"], r["p99_s"])
            lines.append("| {} | {:.1f} (ideal {:.0f}) | {:.3f} | {:.3f} |".format(*row))
    lines += bar_lines(results)
    (out_dir / "latest.md").write_text("\n".join(lines) + "\n")
    plot(results, out_dir / "latest.png")


def served_lines(results: dict) -> list[str]:
    lines = [
        "",
        "Concurrency 1, in-process and served requests alternating with the stack up (served:"
        " the HTTP API; the gRPC API's turn, where measured, on prompts of its own so that the"
        " replicas' text caches flatter neither):",
        "",
    ]
    paired = results["paired"]
    grpc = paired.get("served_grpc")
    if grpc:
        lines += [
            "| route | in-process median (s) | HTTP median (s) | HTTP / in-process "
            "| gRPC median (s) | gRPC / in-process |",
            "|---|---|---|---|---|---|",
        ]
    else:
        lines += [
            "| route | in-process median (s) | served median (s) | served / in-process |",
            "|---|---|---|---|",
        ]
    for route in ROUTES:
        ip, sv = paired["in_process"][route], paired["served"][route]
        ratio = sv["median"] / ip["median"]
        row = f"| {route} | {spread(ip)} | {spread(sv)} | {ratio:.2f} |"
        if grpc:
            g = grpc[route]
            row += f" {spread(g)} | {g['median'] / ip['median']:.2f} |"
        lines.append(row)
    lines += [
        "",
        "Closed-loop clients; throughput counts the steady part of a run (the first and last"
        " c completions left out), median (min–max) over rounds; p50 / p99 over every"
        " round's requests:",
        "",
        "| route | concurrency | throughput (req/s) | p50 (s) | p99 (s) |",
        "|---|---|---|---|---|",
    ]
    for route in ROUTES:
        for c, r in results["served"][route].items():
            rps = f"{r['throughput_rps']:.2f}"
            if "throughput_min" in r:
                rps += f" ({r['throughput_min']:.2f}–{r['throughput_max']:.2f})"
            lines.append(f"| {route} | {c} | {rps} | {r['p50']:.3f} | {r['p99']:.3f} |")
    return lines


def thread_lines(o: dict, c: int) -> list[str]:
    """The in-process side's CPU by thread: the same work as the served replicas' rows."""
    split = {r: o[r]["cpu_ms_per_request"]["in_process_by_thread"] for r in ROUTES}
    groups = sorted({g for r in ROUTES for g in split[r]}, key=lambda g: -sum(
        split[r].get(g, 0.0) for r in ROUTES))  # fmt: skip
    lines = [
        "",
        f"In-process at {c} callers, this process's CPU ms per request by thread (psutil per "
        "thread; the served side's model work is in its replicas' rows above):",
        "",
        "| thread | " + " | ".join(f"{r} in-process" for r in ROUTES) + " |",
        "|---|" + "---|" * len(ROUTES),
    ]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{split[r].get(g, 0.0):.1f}" for r in ROUTES) + " |")
    return lines


def hop_lines(results: dict) -> list[str]:
    """What each handle call adds served, at concurrency 1, and the rest of the paired gap."""
    h = results["hops"]
    lines = [
        "",
        "What each hop adds at concurrency 1 (every handle call of one request replayed "
        "through the in-process instance and through a Serve handle from the bench process, "
        f"alternating, median of {h['repeats']}); the rest of the paired gap above is the "
        f"HTTP ingress{ingress_note(results)} and the gateway:",
        "",
        "| route | hop | in-process (ms) | served (ms) | added (ms) |",
        "|---|---|---|---|---|",
    ]
    for route in ROUTES:
        for name, t in h[route]["hops"].items():
            lines.append(
                f"| {route} | {name} | {t['in_process']:.1f} | {t['served']:.1f} "
                f"| {t['served'] - t['in_process']:+.1f} |"
            )
        lines.append(f"| {route} | **all hops** | | | {h[route]['added_ms']:+.1f} |")
        paired = results.get("paired")
        if paired:
            gap = 1000 * (paired["served"][route]["median"] - paired["in_process"][route]["median"])
            rest = gap - h[route]["added_ms"]
            lines.append(
                f"| {route} | HTTP ingress, gateway (paired gap {gap:.1f}) | | | {rest:+.1f} |"
            )
    return lines


def overhead_lines(results: dict) -> list[str]:
    """Served vs in-process throughput under load, and CPU ms per request by stage."""
    o = results["overhead"]
    c = o["concurrency"]
    lines = [
        "",
        f"Platform overhead under load: {c} closed-loop clients over HTTP vs the same "
        f"`Pipelines` in-process with {c} concurrent callers (same engines and batching; "
        f"{o['rounds']} rounds of {o['requests_per_round']} requests each side, alternating; "
        "steady throughput, median (min–max)):",
        "",
        "| route | served (req/s) | in-process (req/s) | served / in-process |",
        "|---|---|---|---|",
    ]
    for route in ROUTES:
        r = o[route]
        lines.append(
            f"| {route} | {spread(r['served'], '{:.2f}')} | {spread(r['in_process'], '{:.2f}')} "
            f"| {r['served_over_in_process']:.2f} |"
        )
    if all("cpu_ms_per_request" in o[route] for route in ROUTES):
        lines += [
            "",
            f"CPU ms per request by stage at {c} clients (user + system CPU of each process "
            "over the rounds, read with psutil from /proc, divided by the requests; Ray names "
            "a replica's process `ray::ServeReplica:tessera:<Deployment>`):",
            "",
            "| stage | " + " | ".join(f"{r} served | {r} in-process" for r in ROUTES) + " |",
            "|---|" + "---|---|" * len(ROUTES),
        ]
        stages = sorted(
            {s for route in ROUTES for s in o[route]["cpu_ms_per_request"]["served"]},
            key=lambda s: -sum(o[r]["cpu_ms_per_request"]["served"].get(s, 0) for r in ROUTES),
        )
        for stage in stages:
            cells = []
            for route in ROUTES:
                cpu = o[route]["cpu_ms_per_request"]
                local = cpu["in_process"].get(stage) if stage.startswith("load generator") else None
                cells.append(f"{cpu['served'].get(stage, 0.0):.1f}")
                cells.append("–" if local is None else f"{local:.1f} (all the work)")
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        totals = []
        for route in ROUTES:
            cpu = o[route]["cpu_ms_per_request"]
            totals += [
                f"{sum(cpu['served'].values()):.1f}",
                f"{sum(cpu['in_process'].values()):.1f}",
            ]
        lines.append("| **total** | " + " | ".join(totals) + " |")
    if all("in_process_by_thread" in o[route].get("cpu_ms_per_request", {}) for route in ROUTES):
        lines += thread_lines(o, c)
    if "hops" in results:
        lines += hop_lines(results)
    if "serialisation" in results:
        s = results["serialisation"]
        lines += [
            "",
            "Serialisation (protobuf, part of the rows above): every message of one request "
            "between deployments, serialised and parsed once each (time.process_time): "
            + "; ".join(
                f"{r} {s[r]['cpu_ms']:.2f} ms for {s[r]['messages']} messages, "
                f"{s[r]['bytes'] / 1024:.0f} KiB"
                for r in ROUTES
            )
            + ".",
        ]
    return lines


def second_stack_lines(results: dict) -> list[str]:
    """The same pairing and load on a second stack that takes requests the other way."""
    d = results["second_stack"]
    paired, o = d["paired"], d["overhead"]
    c = o["concurrency"]
    kind, first = d["ingress"], ingress_of(results)
    how = (
        "the Gateway replica binds the public HTTP and gRPC ports itself, no Serve proxy actor "
        "in front"
        if kind == "direct"
        else "Serve's proxy actor takes the public ports and hands each request to the Gateway"
    )
    lines = [
        "",
        f"{INGRESS_LABEL[kind].capitalize()} (`tessera serve --ingress {kind}`: {how}; a second "
        f"stack, measured as above: concurrency 1 alternating with in-process, then {c} "
        "clients):",
        "",
        "| route | in-process median (s) | HTTP median (s) | HTTP / in-process | gRPC median (s) "
        f"| gRPC / in-process | served / in-process at {c} clients | served CPU ms / request "
        f"(first stack{label_suffix(first)}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = results.get("overhead", {})
    for route in ROUTES:
        ip, http, g = (paired[k][route] for k in ("in_process", "served", "served_grpc"))
        cpu = sum(o[route].get("cpu_ms_per_request", {}).get("served", {}).values())
        before = base.get(route, {}).get("cpu_ms_per_request", {}).get("served")
        cpu_cell = f"{cpu:.1f}" + (f" ({sum(before.values()):.1f})" if before else "")
        lines.append(
            f"| {route} | {spread(ip)} | {spread(http)} | {http['median'] / ip['median']:.2f} "
            f"| {spread(g)} | {g['median'] / ip['median']:.2f} "
            f"| {o[route]['served_over_in_process']:.2f} | {cpu_cell} |"
        )
    return lines


def batching_lines(b: dict) -> list[str]:
    lines = [
        "",
        f"LM batching under staggered arrivals ({b['requests']} one-image requests, one every "
        f"{b['arrival_gap_s']:.3f}s; one alone takes {b['solo_s']:.3f}s; median (min–max) over "
        f"{b['continuous']['p99']['n']} interleaved runs):",
        "",
        "| schedule | p50 (s) | p99 (s) |",
        "|---|---|---|",
    ]
    for mode in ("continuous", "static"):
        lines.append(f"| {mode} | {spread(b[mode]['p50'])} | {spread(b[mode]['p99'])} |")
    return lines


def spread(r: dict, fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(r['median'])} ({fmt.format(r['min'])}–{fmt.format(r['max'])})"


def peer_lines(p: dict) -> list[str]:
    peak = p["matmul_peak"]["gflops"]
    lm, dec = p["lm"], p["decoder"]
    lines = [
        "",
        f"Peers (median (min–max) over repeats, Tessera and peer alternating run by run; "
        f"matmul peak {peak:.1f} GFLOP/s with "
        f"{p['matmul_peak']['threads']} thread(s)):",
        "",
        "| sampler | guidance | Tessera | peer | Tessera / peer | Tessera GFLOP/s (% of peak) |",
        "|---|---|---|---|---|---|",
    ]

    def achieved(r: dict) -> str:
        return (
            f"{r['tessera_gflops_achieved']:.1f} ({100 * r['tessera_gflops_achieved'] / peak:.0f}%)"
        )

    samplers = (  # (results, what is measured, throughput key, peer, number format)
        (
            lm,
            f"LM tokens/s, batch {lm['batch']}, {lm['new_tokens']} tokens "
            "(vs transformers GPT-2 `generate`)",
            "tokens_per_s",
            "transformers",
            "{:.0f}",
        ),
        (
            dec,
            f"decoder images/s, batch {dec['batch']}, DDIM {dec['steps']} "
            "(vs diffusers UNet2DConditionModel, same architecture)",
            "images_per_s",
            "diffusers",
            "{:.2f}",
        ),
    )
    for results, title, unit, peer, fmt in samplers:
        for label in ("no_guidance", "guidance"):
            r = results[label]
            peer_gflops = r.get(f"{peer}_gflops_achieved")
            also = "" if peer_gflops is None else f"; {peer} {peer_gflops:.1f}"
            lines.append(
                f"| {title} | {label} | {spread(r[f'tessera_{unit}'], fmt)} | "
                f"{spread(r[f'{peer}_{unit}'], fmt)} | {r['speedup']:.2f} | {achieved(r)}{also} |"
            )
    if "equal_quality" in dec:
        r = dec["equal_quality"]
        title = (
            f"decoder images/s at equal quality: Tessera DPM-Solver++ {r['steps']} vs "
            f"UNet2DConditionModel DDIM {dec['steps']}"
        )
        lines.append(
            f"| {title} | guidance | {spread(r['tessera_images_per_s'], '{:.2f}')} | "
            f"{spread(r['diffusers_images_per_s'], '{:.2f}')} | {r['speedup']:.2f} | "
            f"{achieved(r)}; diffusers {r['diffusers_gflops_achieved']:.1f} |"
        )
    lines += jacobi_lines(lm)
    lines += [
        "",
        f"Parameters: LM {lm['params']['tessera']:,} vs GPT-2 {lm['params']['transformers']:,}; "
        f"decoder {dec['params']['tessera']:,} vs UNet2DConditionModel + the same conditioning "
        f"layers {dec['params']['diffusers']:,} ({dec['params']['ratio']:.3f}x).",
    ]
    if "decoder_quality" in p:
        lines += quality_lines(p["decoder_quality"])
    return lines


def jacobi_lines(lm: dict) -> list[str]:
    """Speculative Jacobi sampling beside plain sampling (same batch, alternating runs)."""
    rows = [(g, lm[g]["jacobi"]) for g in ("no_guidance", "guidance") if "jacobi" in lm[g]]
    if not rows:
        return []
    lines = [
        "",
        f"LM with speculative Jacobi decoding (window {rows[0][1]['window']}, "
        "distribution-preserving), batch "
        f"{lm['batch']}, {lm['new_tokens']} tokens, alternating with plain sampling:",
        "",
        "| guidance | Jacobi tokens/s | plain tokens/s | Jacobi / plain (wall; CPU) | tokens "
        "per sequence per forward | forwards for the batch |",
        "|---|---|---|---|---|---|",
    ]
    for g, r in rows:
        cpu = f"; {r['cpu_speedup_vs_plain']:.2f}" if "cpu_speedup_vs_plain" in r else ""
        lines.append(
            f"| {g} | {spread(r['tokens_per_s'], '{:.0f}')} | "
            f"{spread(r['plain_tokens_per_s'], '{:.0f}')} | {r['speedup_vs_plain']:.2f}{cpu} | "
            f"{r['tokens_per_forward']:.2f} | {r['forwards']} of {lm['new_tokens']} |"
        )
    return lines


def quality_lines(q: dict) -> list[str]:
    """DDIM vs DPM-Solver++ by steps: CLIP cosine and distance to the converged ODE."""
    base = q["baseline"]
    lines = [
        "",
        f"Decoder quality by solver and steps ({q['n']} Prior-sampled conditions, fixed seeds, "
        f"default guidance): CLIP cosine of the decoded image to its condition (the bundle "
        f"report's score, margin {q['margin']:g}) and RMS distance of the latents to the "
        f"converged ODE solution (DDIM {q['reference_steps']}). Baseline DDIM {base['steps']}: "
        f"cosine {base['clip_cosine']:.3f}, distance {base['ode_error']:.3f}.",
        "",
        "| steps | DDIM cosine | DDIM distance | DPM-Solver++ cosine | DPM-Solver++ distance |",
        "|---|---|---|---|---|",
    ]
    for k, dpm in q["dpmsolver++"].items():
        ddim = q["ddim"].get(k)
        cells = [f"{ddim['clip_cosine']:.3f}", f"{ddim['ode_error']:.3f}"] if ddim else ["", ""]
        lines.append(
            f"| {k} | {cells[0]} | {cells[1]} | {dpm['clip_cosine']:.3f} | {dpm['ode_error']:.3f} |"
        )
    lines += [
        "",
        f"Fewest DPM-Solver++ steps within the cosine margin: {q['fewest_steps_clip']}; "
        f"within it and no farther from the ODE solution than DDIM {base['steps']} (the step "
        f"count used for equal quality): {q['fewest_steps']}.",
    ]
    return lines


def bar_lines(results: dict) -> list[str]:
    """The serving-performance bars, each with its measured value and whether it holds."""
    checks = []
    stacks = [(stack, label_suffix(kind)) for stack, kind in stacks_of(results)]
    for stack, how in stacks:
        paired = stack.get("paired", {})
        for route in ROUTES if paired else ():
            for side, api in (("served", "HTTP"), ("served_grpc", "gRPC")):
                if side in paired:
                    ratio = paired[side][route]["median"] / paired["in_process"][route]["median"]
                    label = f"served ({api} API{how}) / in-process latency, {route}, c=1"
                    checks.append((label, ratio, "<=", LATENCY_BAR.get(route, 1.1)))
    for stack, how in stacks:
        o = stack.get("overhead")
        for route in ROUTES if o else ():
            label = f"served{how} / in-process throughput, {route}, c={o['concurrency']}"
            checks.append((label, o[route]["served_over_in_process"], ">=", THROUGHPUT_BAR))
    if "peers" in results:
        lm = results["peers"]["lm"]
        for g in ("no_guidance", "guidance"):
            label = f"LM tokens/s / transformers generate(), batch {lm['batch']}, {g}"
            checks.append((label, lm[g]["speedup"], ">=", 2.0))
        dec = results["peers"]["decoder"]
        for g in ("no_guidance", "guidance"):
            label = f"decoder images/s / diffusers UNet2DConditionModel, DDIM {dec['steps']}, {g}"
            checks.append((label, dec[g]["speedup"], ">=", 1.0))
        if "equal_quality" in dec:
            r = dec["equal_quality"]
            label = (
                f"decoder images/s at equal quality (DPM-Solver++ {r['steps']}) / "
                f"diffusers DDIM {dec['steps']}"
            )
            checks.append((label, r["speedup"], ">=", 1.5))
    checks.append(
        (
            "static / continuous p99 under staggered arrivals",
            results["batching"]["p99_static_over_continuous"],
            ">",
            1.0,
        )
    )
    checks.append(("KV cache speed-up, full grid", results["kv_cache"]["speedup"], ">=", 5.0))
    lines = ["", "Bars (measured in this run):", "", "| bar | measured | target | holds |"]
    lines.append("|---|---|---|---|")
    for label, value, op, target in checks:
        holds = {"<=": value <= target, ">=": value >= target, ">": value > target}[op]
        lines.append(f"| {label} | {value:.2f} | {op} {target:g} | {'yes' if holds else 'NO'} |")
    return lines


def ingress_panel(ax: Any, results: dict) -> None:
    """Served / in-process per measure, one ingress beside the other, with the bars."""
    stacks = [(INGRESS_LABEL.get(kind, "first stack"), s) for s, kind in stacks_of(results)]
    measures = []  # (label, ratio per stack, bar)
    for route in ROUTES:
        for side, api in (("served", "HTTP"), ("served_grpc", "gRPC")):
            ratios = [
                s["paired"][side][route]["median"] / s["paired"]["in_process"][route]["median"]
                for _, s in stacks
            ]
            measures.append((f"{route} c=1\n{api}", ratios, LATENCY_BAR.get(route, 1.1)))
        c = results["overhead"]["concurrency"]
        ratios = [s["overhead"][route]["served_over_in_process"] for _, s in stacks]
        measures.append((f"{route} c={c}\nthroughput", ratios, THROUGHPUT_BAR))
    width = 0.38
    for k, (name, _) in enumerate(stacks):
        xs = [i + (k - 0.5) * width for i in range(len(measures))]
        ax.bar(xs, [m[1][k] for m in measures], width, label=name, color=f"C{k + 2}")
    for i, (_, _, bar) in enumerate(measures):
        ax.plot([i - 0.45, i + 0.45], [bar, bar], "k-", lw=1.2)
    ax.set_xticks(range(len(measures)), [m[0] for m in measures], fontsize=7)
    ax.set_ylim(0.5, max(1.4, max(max(m[1]) for m in measures) + 0.05))
    ax.set(ylabel="served / in-process", title="ingress (black: bar; c=1 lower, c=16 higher)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def plot(results: dict, path: Path) -> None:
    """Throughput and p99 per concurrency (served runs), and Tessera / peer (with peers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (2 if "served" in results else 0) + (1 if "peers" in results else 0)
    panels += 1 if "second_stack" in results else 0
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    axes = list(axes[0])
    if "served" in results:
        throughput, p99 = axes.pop(0), axes.pop(0)
        for route in ROUTES:
            levels = sorted(results["served"][route], key=int)
            runs = [results["served"][route][c] for c in levels]
            rps = [r["throughput_rps"] for r in runs]
            throughput.errorbar(  # the bars span the rounds' min..max
                [int(c) for c in levels],
                rps,
                yerr=[
                    [v - r.get("throughput_min", v) for v, r in zip(rps, runs, strict=True)],
                    [r.get("throughput_max", v) - v for v, r in zip(rps, runs, strict=True)],
                ],
                fmt="o-",
                capsize=3,
                label=route,
            )
            p99.plot([int(c) for c in levels], [r["p99"] for r in runs], "o-", label=route)
        throughput.set(
            xlabel="concurrent clients", ylabel="requests / s", title="throughput", xscale="log"
        )
        p99.set(xlabel="concurrent clients", ylabel="seconds", title="p99 latency", xscale="log")
        for ax in (throughput, p99):
            ax.legend()
            ax.grid(alpha=0.3)
    if "second_stack" in results:
        ingress_panel(axes.pop(0), results)
    if "peers" in results:
        ax, p = axes.pop(0), results["peers"]
        labels, values = [], []
        for name, peer in (("lm", "transformers"), ("decoder", "diffusers")):
            for g in ("no_guidance", "guidance", "equal_quality"):
                if g not in p[name]:
                    continue
                labels.append(f"{name} vs {peer}\n{g.replace('_', ' ')}")
                values.append(p[name][g]["speedup"])
        ax.bar(range(len(values)), values, color=["C0"] * 2 + ["C1"] * (len(values) - 2))
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(values)), labels, fontsize=7)
        ax.set(ylabel="Tessera / peer (higher is faster)", title="vs peers, same machine")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
