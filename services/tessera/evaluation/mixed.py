"""The mixed-modal model's section of the bundle report (``tessera eval bundle``; alone, into
an existing report, with ``tessera eval bundle --only mixed``).

Offline, through ``tessera.mixed.generate`` (the model sampled in-process, as its trainer
does), on the bundle's own image tokenizer and the data sets' splits:

- edits: shapes, exact by the scene checker per edit kind on training and held-out
  combinations, with the untouched region's PSNR against the source and the tokenizer's
  ceiling (its own reconstruction of the target); Twemoji, the judge's subgroup of the result
  against the target's, and skin-tone correctness read from the Twemoji skin palette;
- captions: shapes, exact attributes of a greedy caption; Twemoji, a greedy caption equal to
  one of the image's captions, and retrieval (the true caption scored above 15 others);
- text -> image on the prompts the ``ar`` route is scored on (same prompts, same measure);
- ``eval/mixed/edits.png``: source, instruction, result, target.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import Module

from tessera.common.checkpoint import load_component
from tessera.evaluation.bundle import (
    EDITS_PER_KIND,
    distinct_caption_rows,
    shapes_verdicts,
)
from tessera.evaluation.judge import Judge, load_judge
from tessera.evaluation.report import fmt
from tessera.mixed import evaluate as mixed_eval
from tessera.mixed.data import CaptionPart, EditPart, load_parts
from tessera.mixed.generate import generate_images, score_sequences, text_weights
from tessera.mixed.model import MixedTransformer
from tessera.mixed.sequences import Builder
from tessera.mixed.text import TextCodec

# Twemoji's skin palette (the main skin fill of each tone, and the default yellow)
SKIN_TONES = {
    "none": (255, 220, 93),
    "light": (247, 222, 206),
    "medium-light": (243, 210, 162),
    "medium": (212, 171, 136),
    "medium-dark": (175, 126, 87),
    "dark": (124, 83, 62),
}
SKIN_RADIUS = 18.0  # RGB distance that still counts as a tone's pixel
CAPTION_CANDIDATES = 16  # retrieval: the true caption among this many


def skin_tone(img: np.ndarray) -> str:
    """The skin tone whose palette colour covers the most pixels of ``img``."""
    px = img.reshape(-1, 3).astype(np.float32)
    names = list(SKIN_TONES)
    ref = np.array([SKIN_TONES[n] for n in names], np.float32)
    dist = np.linalg.norm(px[:, None, :] - ref[None], axis=-1)  # (P, tones)
    near = dist.min(1) < SKIN_RADIUS
    counts = np.bincount(dist.argmin(1)[near], minlength=len(names))
    return names[int(counts.argmax())]


def tones_right(images: np.ndarray, want: list[str]) -> float:
    return float(np.mean([skin_tone(im) == w for im, w in zip(images, want, strict=True)]))


def spread(n_total: int, n: int) -> list[int]:
    return np.unique(np.linspace(0, n_total - 1, num=min(n, n_total)).round().astype(int)).tolist()


def rows_per_kind(part: EditPart, per_kind: int) -> list[int]:
    """Up to ``per_kind`` evenly spread rows of each edit kind."""
    rows: list[int] = []
    for kind in dict.fromkeys(part.kinds):
        mine = [i for i, k in enumerate(part.kinds) if k == kind]
        rows += [mine[j] for j in spread(len(mine), per_kind)]
    return rows


def shapes_edits(
    model: MixedTransformer, tokenizer: Module, part: EditPart, rows: list[int]
) -> tuple[dict, np.ndarray]:
    results = mixed_eval.run_edits(model, tokenizer, part, rows)
    scores = mixed_eval.score_shapes_edits(part, rows, results)
    scores["all"]["tokenizer_ceiling"] = mixed_eval.tokenizer_ceiling(tokenizer, part, rows)
    return scores, results


def twemoji_edits(
    model: MixedTransformer, tokenizer: Module, judge: Judge, part: EditPart, rows: list[int]
) -> tuple[dict, np.ndarray]:
    results = mixed_eval.run_edits(model, tokenizer, part, rows)
    targets = part.target_images[rows]
    with torch.no_grad():
        recon = mixed_eval.decode(tokenizer, torch.as_tensor(part.target[rows]))
    same = judge.score(results)["subgroup"] == judge.score(targets)["subgroup"]
    out: dict = {}
    for kind in dict.fromkeys(part.kinds[i] for i in rows):
        pick = [j for j, i in enumerate(rows) if part.kinds[i] == kind]
        d = {"count": len(pick), "judge_subgroup_match": float(np.mean(same[pick]))}
        d["untouched_psnr"] = float(np.nanmean([
            mixed_eval.untouched_psnr(results[j], part.source_images[rows[j]], targets[j])
            for j in pick
        ]))  # fmt: skip
        if kind == "skin_tone":
            want = [part.attributes[rows[j]] for j in pick]
            d["skin_tone_correct"] = tones_right(results[pick], want)
            d["skin_tone_ceiling"] = tones_right(recon[pick], want)  # the tokenizer's own
            d["skin_tone_on_targets"] = tones_right(targets[pick], want)  # the reader, real
        out[kind] = d
    out["all"] = {"count": len(rows), "judge_subgroup_match": float(np.mean(same))}
    return out, results


def captions(
    model: MixedTransformer, codec: TextCodec, part: CaptionPart, rows: list[int], shapes: bool
) -> dict:
    if shapes:
        acc, said = mixed_eval.shapes_caption_accuracy(model, codec, part, rows)
        return {"count": len(rows), "exact_attributes": acc, "examples": said[:6]}
    b = Builder(model.config.layout)
    from tessera.mixed.generate import generate_text

    ids, _ = generate_text(model, [b.prompt(b.i2t(part.codes[i].tolist(), [])) for i in rows])
    said = [codec.decode(t) for t in ids]
    exact = [s in part.texts[i] for s, i in zip(said, rows, strict=True)]
    hits = []
    for n, i in enumerate(rows):  # the true caption vs the next rows' first captions
        others = [rows[(n + k) % len(rows)] for k in range(1, CAPTION_CANDIDATES)]
        cands = [part.captions[i][0]] + [part.captions[j][0] for j in others]
        scores = score_sequences(model, [b.i2t(part.codes[i].tolist(), c) for c in cands])
        hits.append(int(scores.argmax()) == 0)
    return {
        "count": len(rows), "exact_caption": float(np.mean(exact)),
        f"retrieval_r@1_of_{CAPTION_CANDIDATES}": float(np.mean(hits)), "examples": said[:6],
    }  # fmt: skip


def text_to_image(
    model: MixedTransformer,
    codec: TextCodec,
    tokenizer: Module,
    prompts: list[str],
    batch: int = 32,
) -> np.ndarray:
    b = Builder(model.config.layout)
    blank = [0] * model.config.layout.n_cells
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        items = [[b.prompt(b.t2i(codec.encode(p), blank)), b.prompt(b.t2i([], blank))]
                 for p in chunk]  # fmt: skip
        gen = torch.Generator().manual_seed(start)
        codes = generate_images(model, items, text_weights(model.config.t2i_scale),
                                generator=gen)  # fmt: skip
        out.append(mixed_eval.decode(tokenizer, codes))
    return np.concatenate(out)


def edit_grid(parts: list[tuple[str, EditPart, list[int], np.ndarray]], path: Path) -> Path:
    """Per row: source, result, target; the instruction (and split) on the left."""
    from tessera.common.images import labelled, make_grid

    tiles, labels = [], []
    for split, part, rows, results in parts:
        for j in spread(len(rows), 6):
            i = rows[j]
            tiles += [part.source_images[i], results[j], part.target_images[i]]
            labels.append(f"{split}: {part.texts[i]}")
    return labelled(make_grid(tiles, columns=3), labels, path)


def evaluate_mixed(bundle: Path, dataset: str, report: dict, judge_dir: Path | None,
                   per_split: int, data_dir: Path | None, out: Path,
                   edits_per_kind: int = EDITS_PER_KIND) -> dict:  # fmt: skip
    """The section: edits (``edits_per_kind`` of each kind a split), captions and text ->
    image (``per_split`` prompts a split) beside ``report``'s ``ar`` numbers."""
    from tessera.data import load_dataset
    from tessera.data.dataset import default_data_dir
    from tessera.lm.train import load_tokenizer

    data_dir = default_data_dir(data_dir)
    model = load_component(bundle / "mixed")
    assert isinstance(model, MixedTransformer)
    codec = TextCodec.load(bundle / "mixed", model.config.text_len)
    tokenizer, digest = load_tokenizer(bundle)
    shapes = dataset == "shapes"
    judge = None if shapes else load_judge(judge_dir)
    edit_set = "edits-shapes" if shapes else "edits-twemoji"
    section: dict = {"params": model.num_params(), "config": model.config.to_dict()}
    section["edits"], section["captions"], section["t2i"] = {}, {}, {}
    shown = []
    for split in ("train", "heldout"):
        caps, edits = load_parts([dataset, edit_set], split, tokenizer, digest, codec,
                                 data_dir)  # fmt: skip
        part = edits[0]
        rows = rows_per_kind(part, edits_per_kind)
        if shapes:
            scores, results = shapes_edits(model, tokenizer, part, rows)
        else:
            scores, results = twemoji_edits(model, tokenizer, judge, part, rows)
        section["edits"][split] = scores
        shown.append((split, part, rows, results))
        ds = load_dataset(dataset, split, data_dir)
        cap_rows = distinct_caption_rows(ds, per_split).tolist()
        section["captions"][split] = captions(model, codec, caps[0], cap_rows, shapes)
        prompts = [ds.captions[r][0] for r in cap_rows]
        images = text_to_image(model, codec, tokenizer, prompts)
        ar = report.get("routes", {}).get(split, {}).get("ar", {})
        if shapes:
            t2i = {"prompts": len(prompts), **shapes_verdicts(images, prompts)}
            t2i["ar_checker_acc"] = ar.get("checker_acc")
        else:
            truth = ds.labels["subgroup"][cap_rows]
            t2i = {"prompts": len(prompts)}
            t2i["judge_subgroup_acc"] = float(np.mean(judge.score(images)["subgroup"] == truth))
            t2i["ar_judge_subgroup_acc"] = ar.get("judge_subgroup_acc")
        section["t2i"][split] = t2i
        print(f"mixed {split}: edits {scores['all']}, captions "
              f"{ {k: v for k, v in section['captions'][split].items() if k != 'examples'} }, "
              f"t2i {t2i}", flush=True)  # fmt: skip
    section["grid"] = str(edit_grid(shown, out / "mixed" / "edits.png").relative_to(bundle))
    return section


def mixed_section(
    bundle: Path, dataset: str, report: dict, args: argparse.Namespace, out: Path
) -> dict:
    """``evaluate_mixed`` with ``tessera eval bundle``'s arguments, timed."""
    t0 = time.time()
    section = evaluate_mixed(
        bundle, dataset, report, args.judge, args.per_split, args.data_dir, out,
        args.edits_per_kind,
    )  # fmt: skip
    return {**section, "wall_s": round(time.time() - t0, 1)}


def render(section: dict, dataset: str) -> str:
    """REPORT.md's section for the mixed model."""
    c = section["config"]
    # text -> image's own scale, where the checkpoint sets one (older ones share the text's)
    t2i = f"; text → image {c['t2i_guidance']}" if c.get("t2i_guidance") is not None else ""
    lines = [
        "## Mixed-modal model (`mixed`: edits, captions, text → image)",
        "",
        f"One transformer over text and image tokens ({section['params'] / 1e6:.2f}M params, "
        f"{c['n_layer']} layers x {c['n_embd']}; text vocab {c['text_vocab']}, image vocab "
        f"{c['image_vocab']}), sampled offline through `tessera.mixed.generate` with its default "
        f"guidance (image {c['image_guidance']}, text {c['text_guidance']}{t2i}), greedy for edits "
        "and captions. Trained by `tessera train mixed` (arguments: the bundle's `training.json`).",
        "",
    ]
    edits = section["edits"]
    if dataset == "shapes":
        lines += [
            "Edits, exact: the result read back by the scene checker equals the target scene. "
            "Held-out: instruction x attribute combinations never trained on. Untouched PSNR: "
            "the result against the source where the edit changes no pixel.",
            "",
            "| split | kind | edits | exact | untouched PSNR dB |",
            "|---|---|---|---|---|",
        ]
        for split, scores in edits.items():
            for kind, d in scores.items():
                exact = fmt(d["accuracy"])
                if "interval95" in d:  # older reports lack it
                    lo, hi = d["interval95"]
                    exact += f" (95%: {lo:.3f}-{hi:.3f})"
                lines.append(f"| {split} | {kind} | {d['count']} | {exact} | "
                             f"{fmt(d['untouched_psnr'])} |")  # fmt: skip
            lines.append(f"| {split} | *ceiling: VQ reconstruction of the target* | "
                         f"{scores['all']['count']} | "
                         f"{fmt(scores['all']['tokenizer_ceiling'])} | |")  # fmt: skip
    else:
        lines += [
            "Edits (skin tone, gender variants; held out: concepts never trained on): the "
            "judge's subgroup of the result equals the target's; skin tone read from the "
            "Twemoji skin palette (most pixels), beside the same reader on the real targets "
            "and on the tokenizer's reconstructions of them.",
            "",
            "| split | kind | edits | judge subgroup match | skin tone right (real / VQ) | "
            "untouched PSNR dB |",
            "|---|---|---|---|---|---|",
        ]
        for split, scores in edits.items():
            for kind, d in scores.items():
                tone = ("–" if "skin_tone_correct" not in d else
                        f"{fmt(d['skin_tone_correct'])} ({fmt(d['skin_tone_on_targets'])} / "
                        f"{fmt(d['skin_tone_ceiling'])})")  # fmt: skip
                lines.append(f"| {split} | {kind} | {d['count']} | "
                             f"{fmt(d['judge_subgroup_match'])} | {tone} | "
                             f"{fmt(d.get('untouched_psnr'))} |")  # fmt: skip
    lines += ["", "Captions (greedy) and text → image beside the `ar` route on its prompts:", ""]
    if dataset == "shapes":
        lines += ["| split | captions | exact attributes | t2i prompts | mixed checker acc | "
                  "ar checker acc |", "|---|---|---|---|---|---|"]  # fmt: skip
        for split, cap in section["captions"].items():
            t = section["t2i"][split]
            lines.append(f"| {split} | {cap['count']} | {fmt(cap['exact_attributes'])} | "
                         f"{t['prompts']} | {fmt(t['checker_acc'])} | "
                         f"{fmt(t['ar_checker_acc'])} |")  # fmt: skip
    else:
        r = f"retrieval_r@1_of_{CAPTION_CANDIDATES}"
        lines += [f"| split | captions | exact caption | true caption first of "
                  f"{CAPTION_CANDIDATES} "
                  "| t2i prompts | mixed judge subgroup acc | ar judge subgroup acc |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for split, cap in section["captions"].items():
            t = section["t2i"][split]
            lines.append(f"| {split} | {cap['count']} | {fmt(cap['exact_caption'])} | "
                         f"{fmt(cap[r])} "
                         f"| {t['prompts']} | {fmt(t['judge_subgroup_acc'])} | "
                         f"{fmt(t['ar_judge_subgroup_acc'])} |")  # fmt: skip
    examples = "; ".join(f"“{s}”" for s in section["captions"]["heldout"]["examples"][:4])
    lines += ["", f"Held-out captions, first few: {examples}.", "",
              "Edits (per row: source, result, target; the instruction on the left):", "",
              f"![edits]({section['grid']})", ""]  # fmt: skip
    return "\n".join(lines)
