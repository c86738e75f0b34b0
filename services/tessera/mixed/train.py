"""``tessera train mixed``: one transformer over text and image tokens, on mixed sequences.

Reads image data sets (``shapes``, ``twemoji``: captions both ways) and edit sets
(``edits-shapes``, ``edits-twemoji``), encoded by a bundle's image tokenizer
(``--tokenizer``); trains a text BPE on the training captions and instructions (kept beside
the weights as ``tokenizer.json``); minimises the cross-entropy of each sequence's output
span. ``OUT`` gets ``config.json`` + ``model.safetensors`` + ``tokenizer.json``, the kit's
resume state, ``loss.png`` (loss and held-out loss per task; edit and caption accuracy) and
``samples/step_*.png`` (per row: source, target, result).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from tessera.common.checkpoint import load_component, save_component
from tessera.common.images import make_grid
from tessera.data.dataset import default_data_dir
from tessera.lm.train import load_tokenizer
from tessera.mixed import evaluate
from tessera.mixed.data import TASK_MIX, Batches, corpus, load_parts
from tessera.mixed.model import MixedConfig, MixedTransformer
from tessera.mixed.sequences import TASKS, Builder, collate
from tessera.mixed.text import TOKENIZER_FILE, TextCodec, train_text_tokenizer
from tessera.training.cli import add_training_arguments, start_model, training_run
from tessera.training.loop import Steps, due
from tessera.training.optim import bf16_autocast, optimizer_step, set_lr
from tessera.training.plots import plot_curves
from tessera.training.state import save_train_state

PRESETS: dict[str, dict] = {
    "small": dict(n_layer=6, n_head=4, n_embd=192),  # ~3M params
    "mini": dict(n_layer=4, n_head=4, n_embd=128),
    "tiny": dict(n_layer=2, n_head=2, n_embd=32),
}
EVAL_EDITS = 48  # held-out and training shapes edits scored at each evaluation
EVAL_CAPTIONS = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", nargs="+", default=["shapes", "edits-shapes"],
        help="image data sets and edit sets to train on",
    )  # fmt: skip
    parser.add_argument("--tokenizer", type=Path, required=True, help="bundle (or its dir)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    parser.add_argument("--preset", choices=list(PRESETS), default="mini")
    parser.add_argument(
        "--layers", type=int, default=None, choices=range(1, 33), metavar="N",
        help="blocks, overriding the preset's; with --init-from, more blocks than the "
        "checkpoint's grow it deeper (the new ones on top, starting as the identity)",
    )  # fmt: skip
    parser.add_argument("--text-vocab", type=int, default=512, help="BPE vocabulary size")
    parser.add_argument("--text-len", type=int, default=24, help="text tokens, at most")
    parser.add_argument(
        "--cell-slots", choices=["copy", "separate"], default="separate",
        help="separate: every output cell its own slot (the committed models); copy: an "
        "output position shares the embedding of the source cell it predicts (not yet "
        "better: docs/decisions/mixed-modal-sequences.md)",
    )  # fmt: skip
    parser.add_argument(
        "--edit-targets", choices=["reencoded", "canonical"], default="reencoded",
        help="reencoded: the target image's own codes (the committed models); canonical: the "
        "source's codes wherever the edit left the picture alone (data.canonical_targets)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-token", action="store_true",
        help="edits answer a cell the source already has right with <keep> (its code is "
        "then the source's exactly); best with --edit-targets canonical",
    )  # fmt: skip
    parser.add_argument(
        "--edit-share", type=float, default=TASK_MIX["edit"],
        help="share of each batch that is edits (the rest is t2i and i2t, 3:2)",
    )  # fmt: skip
    parser.add_argument(
        "--init-from", type=Path, default=None,
        help="a mixed checkpoint to start from (its text tokenizer and sizes; new parameters "
        "start at zero)",
    )  # fmt: skip
    parser.add_argument(
        "--dropout", type=float, default=0.0,
        help="dropout in every block while training (small sets such as Twemoji's)",
    )  # fmt: skip
    parser.add_argument(
        "--image-guidance", type=float, default=MixedConfig.image_guidance,
        help="the checkpoint's default guidance scale on an edit's source image",
    )  # fmt: skip
    parser.add_argument(
        "--text-guidance", type=float, default=MixedConfig.text_guidance,
        help="the checkpoint's default guidance scale on the instruction / caption",
    )  # fmt: skip
    parser.add_argument(
        "--t2i-guidance", type=float, default=None,
        help="the checkpoint's default caption scale for text -> image (default: --text-guidance)",
    )  # fmt: skip
    parser.add_argument(
        "--bf16", action="store_true",
        help="bfloat16 autocast for the training steps on the CPU too (weights, optimizer and "
        "evaluation stay float32; always on for CUDA); ~1.3-1.7x the steps a minute on CPUs "
        "with AVX512-BF16 or AMX",
    )  # fmt: skip
    add_training_arguments(
        parser, batch_size=32, lr=1e-3, weight_decay=0.05, warmup=100, every=250, threads=2
    )


def _build(config: MixedConfig, init_from: Path | None) -> MixedTransformer:
    """A fresh model, or one holding ``init_from``'s weights (same sizes; parameters it lacks,
    such as ``copy_cells``' output vector, keep their fresh values; a ``<keep>`` token it
    lacks is one more row of the embedding and the head, fresh, the others its own). A
    config with more blocks grows the checkpoint deeper: its blocks come first and the new
    ones on top start with zero output projections, so the grown model computes exactly
    what the checkpoint did and the extra depth is learned from there (ReZero-style)."""
    model = MixedTransformer(config)
    if init_from is None:
        return model
    start = load_component(Path(init_from))
    if not isinstance(start, MixedTransformer):
        raise SystemExit(f"--init-from {init_from} is not a mixed-modal checkpoint")
    theirs = start.config.to_dict()
    ours = config.to_dict()
    # what a leg may change: no weight's shape depends on these (dropout and the guidance
    # defaults are settings; copy_cells and keep_token are handled below)
    free = ("copy_cells", "keep_token", "dropout", "image_guidance", "text_guidance",
            "t2i_guidance")  # fmt: skip
    differ = {k for k in ours if k not in free and theirs.get(k, False) != ours[k]}
    if ours["n_layer"] > theirs["n_layer"]:  # growing deeper
        differ.discard("n_layer")
    if differ:
        raise SystemExit(f"--init-from {init_from} differs in {sorted(differ)}")
    if start.config.keep_token and not config.keep_token:
        raise SystemExit(f"--init-from {init_from} has a <keep> token; pass --keep-token")
    state = start.state_dict()
    for name in ("tok_emb.weight", "lm_head.weight"):  # rows [0, V) are the same ids
        grown = model.state_dict()[name].clone()
        grown[: len(state[name])] = state[name]
        state[name] = grown
    new_blocks = range(start.config.n_layer, config.n_layer)
    for i in new_blocks:  # identities: nothing they compute reaches the residual stream yet
        for proj in (model.blocks[i].attn.c_proj, model.blocks[i].mlp.c_proj):
            nn.init.zeros_(proj.weight)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise SystemExit(f"--init-from {init_from} has unknown weights {unexpected}")
    if new_blocks:
        print(f"growing {init_from} to {config.n_layer} blocks: {len(new_blocks)} new on top")
    missing = [m for m in missing if not m.startswith(tuple(f"blocks.{i}." for i in new_blocks))]
    print(f"starting from {init_from}" + (f" (new: {', '.join(missing)})" if missing else ""))
    return model


def _held_out_batches(builder: Builder, parts: tuple, seed: int, size: int = 64) -> dict:
    """Fixed held-out batches, one per task present (their loss is a curve)."""
    out = {}
    for task in TASKS:
        try:
            batches = Batches(builder, *parts, np.random.default_rng(seed), {task: 1.0})
        except ValueError:
            continue
        out[task] = collate(batches(size), builder.layout.vocab.special("<pad>"))
    return out


def run_body(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    torch.manual_seed(args.seed)
    data_dir = default_data_dir(args.data_dir)
    tokenizer, digest = load_tokenizer(args.tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    if args.init_from and not (out / TOKENIZER_FILE).is_file():
        # the text ids must be the ones the weights learned
        shutil.copyfile(Path(args.init_from) / TOKENIZER_FILE, out / TOKENIZER_FILE)
    if (out / TOKENIZER_FILE).is_file():
        codec = TextCodec.load(out, args.text_len)
    else:
        codec = TextCodec(train_text_tokenizer(corpus(args.data, data_dir), args.text_vocab),
                          args.text_len)  # fmt: skip
        codec.save(out)
    config = MixedConfig(
        text_vocab=codec.vocab_size,
        image_vocab=tokenizer.codebook_size,
        grid_size=tokenizer.grid_size,
        text_len=args.text_len,
        copy_cells=args.cell_slots == "copy",
        keep_token=args.keep_token,
        dropout=args.dropout,
        image_guidance=args.image_guidance,
        text_guidance=args.text_guidance,
        t2i_guidance=args.t2i_guidance,
        **{**PRESETS[args.preset], **({"n_layer": args.layers} if args.layers else {})},
    )
    canonical = args.edit_targets == "canonical"
    train = load_parts(args.data, "train", tokenizer, digest, codec, data_dir, canonical)
    held = load_parts(args.data, "heldout", tokenizer, digest, codec, data_dir, canonical)
    model, optimizer, step, history = start_model(
        args, out, lambda: _build(config, args.init_from), device
    )
    config = model.config
    builder = Builder(config.layout)
    share = args.edit_share
    mix = {"t2i": 0.6 * (1 - share), "i2t": 0.4 * (1 - share), "edit": share}
    batches = Batches(builder, *train, np.random.default_rng(args.seed + step), mix)
    fixed = _held_out_batches(builder, held, args.seed)
    counts = [f"{p.name} {len(p)}" for p in (*train[0], *train[1])]
    print(
        f"MixedTransformer {model.num_params() / 1e6:.2f}M params; text vocab "
        f"{config.text_vocab}, image vocab {config.image_vocab} ({config.grid_size}^2 cells); "
        f"train: {', '.join(counts)}"
    )
    shapes_edits = [p for p in held[1] if p.name == "edits-shapes"]
    train_shapes_edits = [p for p in train[1] if p.name == "edits-shapes"]
    shapes_captions = [p for p in held[0] if p.name == "shapes"]
    extra = {"data": args.data, "tokenizer": str(args.tokenizer), "tokenizer_digest": digest}

    def evaluate_now() -> None:
        h = history[-1]
        model.eval()
        with torch.no_grad():
            for task, batch in fixed.items():
                _, loss = model(*(batch[k].to(device) for k in ("inputs", "slots", "targets")))
                h[f"heldout_loss_{task}"] = loss.item()
        for label, parts in (("heldout", shapes_edits), ("train", train_shapes_edits)):
            if parts:
                part = parts[0]
                rows = np.linspace(0, len(part.source) - 1, EVAL_EDITS).astype(int).tolist()
                results = evaluate.run_edits(model, tokenizer, part, rows)
                scores = evaluate.score_shapes_edits(part, rows, results)
                h[f"edit_accuracy_{label}"] = scores["all"]["accuracy"]
                if label == "heldout":
                    picture = [
                        im for i, r in zip(rows[:8], results[:8], strict=True)
                        for im in (part.source_images[i], part.target_images[i], r)
                    ]  # fmt: skip
                    (out / "samples").mkdir(exist_ok=True)
                    grid = make_grid(picture, columns=3)
                    Image.fromarray(grid).save(out / "samples" / f"step_{step:06d}.png")
        if shapes_captions:
            part = shapes_captions[0]
            rows = np.linspace(0, len(part.codes) - 1, EVAL_CAPTIONS).astype(int).tolist()
            h["caption_accuracy_heldout"], _ = evaluate.shapes_caption_accuracy(
                model, codec, part, rows
            )
        shown = {k: round(v, 3) for k, v in h.items() if k not in ("step", "seconds")}
        bar.write(f"step {step}: {shown}")

    saved = [step]
    panels: list = [
        ("loss", *(f"heldout_loss_{t}" for t in TASKS)),
        ("edit_accuracy_train", "edit_accuracy_heldout", "caption_accuracy_heldout"),
    ]

    def checkpoint() -> None:
        saved[0] = step
        save_component(out, model, config, extra={**extra, "step": step})
        save_train_state(out, optimizer, step, history)
        plot_curves(out / "loss.png", history, panels, "mixed-modal transformer")

    loop = Steps(step, args.steps, args.max_minutes, "train mixed")
    bar = loop.bar
    pad = config.layout.vocab.special("<pad>")
    autocast = bf16_autocast(device, on_cpu=args.bf16)
    while loop.running(step):
        batch = collate(batches(args.batch_size), pad)
        set_lr(optimizer, loop.clock.lr(step, args.lr, args.warmup))
        model.train()
        with autocast:
            _, loss = model(*(batch[k].to(device) for k in ("inputs", "slots", "targets")))
        optimizer_step(model, optimizer, loss)
        step += 1
        history.append(
            {"step": step, "loss": loss.item(), "seconds": round(loop.clock.elapsed(), 1)}
        )
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if due(step, args.eval_every, args.steps):
            evaluate_now()
        if due(step, args.ckpt_every, args.steps):
            checkpoint()
    if history and "heldout_loss_edit" not in history[-1] and fixed:
        evaluate_now()
    if saved[0] != step:
        checkpoint()
    loop.finish(out, checkpoint)
    print(f"done: {step} steps in {loop.clock.elapsed():.0f}s -> {out}")
    return 0


run = training_run(run_body)
