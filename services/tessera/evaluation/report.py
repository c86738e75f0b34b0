"""REPORT.md for ``tessera eval bundle``: the numbers a person looks for first, then pictures."""

from __future__ import annotations

from pathlib import Path


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


def render_markdown(report: dict) -> str:
    """REPORT.md: the numbers a person looks for first, then the pictures."""
    name, dataset = report["bundle"], report["dataset"]
    c = report.get("components", {})
    lines = [
        f"# Bundle report: {name}",
        "",
        f"Data set `{dataset}`; written by `tessera eval bundle` at commit {report['commit']} "
        f"in {report['wall_s']:.0f} s. Generations go through the served route code "
        "(in-process), one image per prompt, fixed seeds and the default settings "
        f"(ar: best of {report.get('ar_candidates', 1)} candidates by CLIP score).",
        "",
    ]
    if c:
        t, clip, prior = c["tokenizer"], c["clip"], c["prior"]
        lines += [
            "## Components (held-out data)",
            "",
            "| component | metric | value |",
            "|---|---|---|",
            f"| tokenizer | PSNR dB / SSIM / codebook usage % | {fmt(t['psnr_db'])} / "
            f"{fmt(t['ssim'])} / {fmt(t['usage_pct'])} |",
            f"| CLIP | image→text R@1 / R@5 | {fmt(clip['image_to_text']['r@1'])} / "
            f"{fmt(clip['image_to_text']['r@5'])} |",
            f"| CLIP | text→image R@1 / R@5 | {fmt(clip['text_to_image']['r@1'])} / "
            f"{fmt(clip['text_to_image']['r@5'])} |",
            f"| LM | bits per token, held-out (train) | {fmt(c['lm']['heldout_bits_per_token'])} "
            f"({fmt(c['lm']['train_bits_per_token'])}) |",
            f"| prior | cosine to the true image embedding (text-embedding baseline) | "
            f"{fmt(prior['cosine'])} ({fmt(prior['text_embedding_baseline'])}) |",
        ]
        if "checker_accuracy" in t:
            lines.append(
                f"| tokenizer | checker on reconstructions | {fmt(t['checker_accuracy'])} |"
            )
        for split, d in c["decoder"].items():
            cmp = d["ddim_vs_ddpm"]
            lines.append(
                f"| decoder ({split}) | CLIP cosine DDIM-{d['ddim']['steps']} / "
                f"DDPM-{d['ddpm']['steps']} (margin {cmp['margin']}) | "
                f"{fmt(d['ddim']['clip_cosine'])} / {fmt(d['ddpm']['clip_cosine'])} "
                f"({'within' if cmp['within'] else 'outside'}) |"
            )
        lines.append("")
    lines += ["## Routes", ""]
    if dataset == "twemoji":
        lines += [
            "Judge subgroup accuracy (102 subgroups, chance ≈1%); Fréchet distance in the "
            "judge's feature space, beside the real-vs-real floor at the same sample size.",
            "",
            "| split | route | prompts | judge subgroup acc | judge group acc | Fréchet "
            "(floor) | s/image |",
            "|---|---|---|---|---|---|---|",
        ]
        for split, e in report["routes"].items():
            floor = e["frechet_floor_real_vs_real"]
            floor = "–" if floor is None else f"{floor:.3g}"
            for route in report["variants"]:
                r = e[route]
                lines.append(
                    f"| {split} | {route} | {e['prompts']} | {fmt(r['judge_subgroup_acc'])} | "
                    f"{fmt(r['judge_group_acc'])} | {r['frechet']:.3g} "
                    f"({floor}) | "
                    f"{fmt(r['seconds_per_image'])} |"
                )
            lines.append(
                f"| {split} | *real images / VQ reconstructions* | {e['prompts']} | "
                f"{fmt(e['judge_on_real'])} / {fmt(e['judge_on_reconstructions'])} | | | |"
            )
    else:
        lines += [
            "The exact shapes checker: a generation counts when colour, shape, size and "
            "position all match the prompt.",
            "",
            "| split | route | prompts | checker acc | clean single shape | s/image |",
            "|---|---|---|---|---|---|",
        ]
        for split, e in report["routes"].items():
            for route in report["variants"]:
                r = e[route]
                lines.append(
                    f"| {split} | {route} | {e['prompts']} | {fmt(r['checker_acc'])} | "
                    f"{fmt(r['clean_single_shape'])} | {fmt(r['seconds_per_image'])} |"
                )
            lines.append(
                f"| {split} | *VQ reconstructions* | {e['prompts']} | "
                f"{fmt(e['checker_on_reconstructions'])} | | |"
            )
    lines += ["", "## Samples", ""]
    for route, path in report["grids"].items():
        rel = Path(path).relative_to(report["bundle_dir"])
        seeds = report["grid_seeds"]
        lines += [f"`{route}` route, {seeds} seeds per prompt:", "", f"![{route}]({rel})", ""]
    if c:
        lines += [
            "Component pictures: `eval/tokenizer/reconstructions.png`, "
            "`eval/clip/retrieval.png`, `eval/prior/cosine.png`, `eval/decoder/grid_*.png`.",
            "",
        ]
    text = "\n".join(lines)
    if "mixed" in report:  # the mixed-modal model's section (tessera.evaluation.mixed)
        from tessera.evaluation.mixed import render

        text += "\n" + render(report["mixed"], dataset)
    if "pixel" in report:  # `tessera eval pixel`'s section (tessera.pixel.eval)
        from tessera.pixel.eval import render

        text += "\n" + render(report["pixel"])
    return text
