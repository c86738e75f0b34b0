"""The train/eval commands end to end on a tiny prepared data set (real MiniLM, tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessera.cli import main
from tessera.clip.model import CLIPModel
from tessera.common.checkpoint import load_component
from tessera.data.dataset import ImageTextDataset, save_dataset
from tessera.prior.model import DiffusionPrior

COLORS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 230)}
SHAPES = ["square", "bar", "dot", "frame"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """24 images: 3 colours x 4 shapes x 2 renders; one colour x shape pair held out each."""
    images, captions, color, shape, keys, heldout = [], [], [], [], [], []
    for ci, (cname, rgb) in enumerate(COLORS.items()):
        for si, sname in enumerate(SHAPES):
            for r in range(2):
                img = np.full((64, 64, 3), 255, np.uint8)
                o = 4 * r
                box = {
                    "square": (16, 48, 16, 48),
                    "bar": (28, 36, 8, 56),
                    "dot": (26, 38, 26, 38),
                    "frame": (8, 56, 8, 56),
                }[sname]
                img[box[0] + o : box[1] + o, box[2] : box[3]] = rgb
                if sname == "frame":
                    img[14 + o : 50 + o, 14:50] = 255
                images.append(img)
                captions.append([f"a {cname} {sname}", f"{sname}, {cname}"])
                color.append(ci)
                shape.append(si)
                keys.append(f"{cname}-{sname}-{r}")
                heldout.append(si == ci)
    ds = ImageTextDataset(
        name="shapes",
        images=np.stack(images),
        captions=captions,
        labels={"color": np.array(color), "shape": np.array(shape)},
        label_names={"color": list(COLORS), "shape": SHAPES},
        keys=keys,
    )
    root = tmp_path_factory.mktemp("data")
    save_dataset(ds, np.array(heldout), root / "shapes", {})
    return root


@pytest.mark.slow
def test_train_resume_and_eval_clip_then_prior(data_dir, tmp_path):
    clip_dir, prior_dir = tmp_path / "clip", tmp_path / "prior"
    common = ["--dataset", "shapes", "--data-dir", str(data_dir), "--threads", "1"]
    train = [
        "train",
        "clip",
        *common,
        "--out",
        str(clip_dir),
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--eval-every",
        "2",
        "--ckpt-every",
        "2",
        "--warmup",
        "2",
    ]
    assert main([*train, "--steps", "2"]) == 0
    assert main([*train, "--steps", "4"]) == 2  # refuses to overwrite without --resume
    assert main([*train, "--steps", "4", "--resume"]) == 0
    state = json.loads((clip_dir / "train_state.json").read_text())
    assert state["step"] == 4 and [h["step"] for h in state["history"]] == [1, 2, 3, 4]
    assert (clip_dir / "loss.png").is_file()
    assert isinstance(load_component(clip_dir), CLIPModel)

    assert main(["eval", "clip", *common, "--clip", str(clip_dir)]) == 0
    report = json.loads((clip_dir / "eval" / "eval_clip.json").read_text())
    assert report["retrieval"]["n_images"] == 6 and report["retrieval"]["n_captions"] == 3
    assert set(report["zero_shot"]) == {"color", "shape"}
    assert (clip_dir / "eval" / "retrieval.png").is_file()

    prior_train = [
        "train",
        "prior",
        *common,
        "--clip",
        str(clip_dir),
        "--out",
        str(prior_dir),
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--steps",
        "3",
        "--eval-every",
        "3",
    ]
    assert main(prior_train) == 0
    prior = load_component(prior_dir)
    assert isinstance(prior, DiffusionPrior) and prior.config.embed_dim == 32
    assert float(prior.emb_std.min()) > 0 and (prior_dir / "loss.png").is_file()

    assert (
        main(
            [
                "eval",
                "prior",
                *common,
                "--prior",
                str(prior_dir),
                "--guidance",
                "1",
                "2",
                "--steps",
                "4",
            ]
        )
        == 0
    )
    report = json.loads((prior_dir / "eval" / "eval_prior.json").read_text())
    assert report["n"] == 6 and [g["guidance_scale"] for g in report["guidance"]] == [1.0, 2.0]
    assert -1 <= report["text_baseline"]["cosine_mean"] <= 1
    assert (prior_dir / "eval" / "cosine.png").is_file()
