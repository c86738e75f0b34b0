"""``make tokenizer-bench`` end to end on a tiny trunk: kinds trained two at a time in their own
processes, then measured in one run (no timing asserts; the figures live in
``benchmarks/results/tokenizer_kinds/``)."""

from __future__ import annotations

import json

from benchmarks import tokenizer_kinds
from tessera.data import shapes


def test_parallel_training_then_one_table(tmp_path):
    shapes.prepare(tmp_path / "data", per_combo=1)
    argv = ["--dataset", "shapes", "--data-dir", str(tmp_path / "data"), "--preset", "tiny",
            "--steps", "3", "--kinds", "vqgan", "kl", "--jobs", "2", "--runs",
            str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--prior-samples", "4"]  # fmt: skip
    assert tokenizer_kinds.main(argv) == 0
    runs = tmp_path / "runs" / "shapes"
    for name in ("vqgan", "kl"):  # each trained by its own process, its log beside it
        assert tokenizer_kinds.trained_steps(runs / name) == 3
        assert "tessera train tokenizer" in (runs / f"{name}.log").read_text()
    metrics = json.loads((tmp_path / "results" / "shapes" / "metrics.json").read_text())
    assert {m["kind"] for m in metrics["models"].values()} == {"vq", "kl"}
    assert set(metrics["models"]) >= {"vqgan", "kl"}  # + the VQ-GAN's snapshot at its GAN switch
    table = (tmp_path / "results" / "shapes" / "TABLE.md").read_text()
    assert "| vqgan | vq |" in table and "| kl | kl |" in table and "checker acc" in table
    # a second call reuses what is trained instead of training again
    assert tokenizer_kinds.main([*argv, "--train-only"]) == 0
    assert "is trained" in (runs / "kl.log").read_text()


def test_the_downstream_row_renders():
    results = {
        "prompts_per_split": 100,
        "vqgan": {
            "decoder_steps": 4000,
            "decoder_minutes": 15.0,
            "train_judge_acc": 0.5,
            "heldout_judge_acc": 0.25,
        },  # fmt: skip
        "kl": {
            "decoder_steps": 3900,
            "decoder_minutes": 15.0,
            "train_judge_acc": 0.625,
            "heldout_judge_acc": 0.375,
        },  # fmt: skip
    }
    md = tokenizer_kinds.downstream_table(results)
    assert "| kl | kl latents (latent diffusion) | 3900 (15.0) | 0.625 | 0.375 |" in md
    assert "| vqgan | VQ codes (snapped) | 4000 (15.0) | 0.500 | 0.250 |" in md
