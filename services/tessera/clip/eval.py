"""``tessera eval clip``: held-out retrieval and zero-shot classification.

* Retrieval: held-out images against their canonical captions (caption [0]). Images that share
  a canonical caption share its text, so a hit means "the right caption string", and
  text -> image counts a hit when any top-k image carries that caption.
* Zero-shot: for every label kind of the data set (Twemoji: group, subgroup; shapes: its
  attributes) each held-out image is classified by the nearest prompt built from the label
  names ("face-smiling" -> "face smiling"); chance is reported beside it.

Writes ``eval_clip.json`` and ``retrieval.png`` (query caption, its image, the top-5
retrieved images) to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tessera.clip.model import CLIPModel
from tessera.common.checkpoint import load_component
from tessera.training.captions import caption_table, encode_captions, text_cache_dir
from tessera.training.cli import add_dataset_arguments, add_runtime_arguments, start_command
from tessera.training.images import to_float
from tessera.training.plots import pyplot
from tessera.training.reports import write_report


@torch.no_grad()
def embed_images(
    model: CLIPModel, images: torch.Tensor, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """uint8 (N,H,W,3) -> (N,D) normalised image embeddings (on ``device``)."""
    chunks = [
        model.embed_image(to_float(images[i : i + batch_size]).to(device))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def recall_at(scores: torch.Tensor, correct: torch.Tensor, ks: tuple[int, ...]) -> dict:
    """scores (Q,C), correct (Q,C) bool -> {"r@k": fraction of queries with a hit in top k}."""
    order = scores.argsort(dim=1, descending=True)
    hits = correct.gather(1, order)  # (Q,C) sorted by score
    return {f"r@{k}": float(hits[:, :k].any(1).float().mean()) for k in ks}


def retrieval_metrics(
    image_emb: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor, ks: tuple = (1, 5)
) -> dict:
    """image_emb (N,D), text_emb (M,D) unique captions, caption_ids (N,) in [0,M)."""
    sim = image_emb @ text_emb.t()  # (N,M)
    correct = caption_ids.to(sim.device)[:, None] == torch.arange(sim.shape[1], device=sim.device)
    return {
        "image_to_text": recall_at(sim, correct, ks),
        "text_to_image": recall_at(sim.t(), correct.t(), ks),
        "n_images": int(sim.shape[0]),
        "n_captions": int(sim.shape[1]),
    }


def zero_shot(image_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor) -> dict:
    """Nearest-prompt classification: image_emb (N,D), class_emb (C,D), labels (N,)."""
    sim = image_emb @ class_emb.t()
    correct = labels.to(sim.device)[:, None] == torch.arange(sim.shape[1], device=sim.device)
    acc = recall_at(sim, correct, (1, 5))
    present = labels.unique()
    majority = float(torch.bincount(labels).max()) / len(labels)
    return {
        "top1": acc["r@1"],
        "top5": acc["r@5"],
        "n_classes": int(sim.shape[1]),
        "n_classes_present": int(len(present)),
        "chance_uniform": 1.0 / sim.shape[1],
        "chance_majority": majority,
    }


# Label kinds whose names are identifiers, not words (Twemoji's concept = base hexcode):
# prompts made from them mean nothing; concept-level matching is what retrieval measures.
NOT_PROMPTS = {"concept"}


def label_prompt(name: str, template: str) -> str:
    return template.format(name.replace("-", " ").replace("_", " "))


def plot_retrieval(
    path: Path,
    texts: list[str],
    top: np.ndarray,
    truth: list[np.ndarray],
    images: np.ndarray,
    hits: np.ndarray,
) -> None:
    """One row per query: the caption, its true image, then the top-k retrieved images."""
    plt = pyplot()

    rows, k = top.shape
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.3 * (k + 1) + 2.5, 1.35 * rows), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(truth[r])
        axes[r, 0].set_ylabel(texts[r][:28], rotation=0, ha="right", va="center", fontsize=8)
        for c in range(k):
            ax = axes[r, c + 1]
            ax.imshow(images[top[r, c]])
            if hits[r, c]:
                for spine in ax.spines.values():
                    spine.set_edgecolor("green")
                    spine.set_linewidth(2.5)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("truth", fontsize=8)
    for c in range(k):
        axes[0, c + 1].set_title(f"#{c + 1}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip", type=Path, required=True, help="CLIP checkpoint directory")
    add_dataset_arguments(parser, split=True)
    parser.add_argument("--out", type=Path, default=None, help="default: CLIP/eval")
    parser.add_argument(
        "--labels", nargs="+", default=None, help="label kinds for zero-shot; default: all worded"
    )
    parser.add_argument("--template", default="{}", help="zero-shot prompt, {} = label name")
    add_runtime_arguments(parser, threads=1, training=False)


@torch.no_grad()
def run(args: argparse.Namespace) -> int:
    from tessera.data import load_dataset

    device = start_command(args)
    out = Path(args.out or Path(args.clip) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    cache = text_cache_dir(args.data_dir)
    model = load_component(args.clip, device=device)
    data = load_dataset(args.dataset, args.split, data_dir=args.data_dir)

    images = torch.from_numpy(np.ascontiguousarray(data.images))
    img = embed_images(model, images, device)
    texts, ids = caption_table([caps[:1] for caps in data.captions])
    ids_t = torch.tensor([i[0] for i in ids])
    txt = model.embed_text(encode_captions(texts, cache)["pooled"].to(device))
    with torch.no_grad():
        report: dict = {"dataset": args.dataset, "split": args.split, "clip": str(args.clip)}
        report["retrieval"] = retrieval_metrics(img, txt, ids_t)
        report["zero_shot"] = {}
        for kind, names in sorted(data.label_names.items()):
            wanted = kind in args.labels if args.labels else kind not in NOT_PROMPTS
            if not wanted:
                continue
            prompts = [label_prompt(n, args.template) for n in names]
            class_emb = model.embed_text(encode_captions(prompts, cache)["pooled"].to(device))
            labels = torch.as_tensor(np.asarray(data.labels[kind]), dtype=torch.long)
            report["zero_shot"][kind] = zero_shot(img, class_emb, labels)
        report["zero_shot_template"] = args.template
        report["logit_scale_exp"] = model.logit_scale.exp().item()

        # A picture: 8 query captions spread over the split, top-5 images each.
        q = np.linspace(0, len(texts) - 1, num=min(8, len(texts))).round().astype(int)
        sim = (txt[q] @ img.t()).cpu()
        top = sim.topk(min(5, sim.shape[1]), dim=1).indices.numpy()
        first = {}
        for n, i in enumerate(ids_t.tolist()):
            first.setdefault(i, n)
        hits = ids_t.numpy()[top] == q[:, None]
        truth = [data.images[first[i]] for i in q]
        plot_retrieval(out / "retrieval.png", [texts[i] for i in q], top, truth, data.images, hits)

    write_report(out / "eval_clip.json", report)
    r = report["retrieval"]
    print(f"{args.dataset}/{args.split}: {r['n_images']} images, {r['n_captions']} captions")
    print(f"image->text R@1 {r['image_to_text']['r@1']:.3f}  R@5 {r['image_to_text']['r@5']:.3f}")
    print(f"text->image R@1 {r['text_to_image']['r@1']:.3f}  R@5 {r['text_to_image']['r@5']:.3f}")
    for kind, z in report["zero_shot"].items():
        print(
            f"zero-shot {kind}: top1 {z['top1']:.3f} top5 {z['top5']:.3f} "
            f"(chance {z['chance_uniform']:.3f}, majority {z['chance_majority']:.3f})"
        )
    print(f"wrote {out / 'eval_clip.json'} and {out / 'retrieval.png'}")
    return 0
