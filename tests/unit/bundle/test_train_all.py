"""`tessera train all`'s record: the same arguments it runs, with paths inside the repository
relative to its root (training.json must not name the machine that trained the bundle)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tessera.bundle.train_all import component_args, finalize_bundle, recorded_args, repo_relative
from tessera.common.checkpoint import load_component, save_component
from tessera.common.settings import REPO_ROOT
from tessera.lm.model import ImageGPT, LMConfig
from tessera.tokenizer.model import VQConfig, VQModel


def test_paths_in_the_repository_are_recorded_relative_to_its_root(tmp_path):
    out = REPO_ROOT / "models" / "shapes"
    argv = component_args("decoder", out, "shapes", seed=0, resume=False)
    recorded = recorded_args(argv, out)
    assert recorded[recorded.index("--out") + 1] == "models/shapes/decoder"
    assert recorded[recorded.index("--tokenizer") + 1] == "models/shapes/tokenizer"
    assert recorded[recorded.index("--clip") + 1] == "models/shapes/clip"
    # everything else is as run
    paths = {argv.index(f) + 1 for f in ("--out", "--tokenizer", "--clip")}
    assert [a for i, a in enumerate(argv) if i not in paths] == [
        a for i, a in enumerate(recorded) if i not in paths
    ]


def test_paths_outside_the_repository_stay_absolute(tmp_path):
    assert repo_relative(tmp_path / "b") == str((tmp_path / "b").resolve())
    assert repo_relative(REPO_ROOT / "models") == "models"
    assert recorded_args(["--out", str(tmp_path / "b" / "lm")], tmp_path / "b") == [
        "--out",
        str(Path(tmp_path / "b" / "lm").resolve()),
    ]


def test_committed_training_records_name_no_machine():
    for record in (REPO_ROOT / "models").glob("*/training.json"):
        assert '"/' not in record.read_text(), record


def test_a_tokenizer_kind_reaches_the_tokenizer_trainer_only(tmp_path):
    tok = component_args("tokenizer", tmp_path, "twemoji", seed=0, resume=False,
                         tokenizer_kind="gumbel")  # fmt: skip
    assert tok[tok.index("--kind") + 1] == "gumbel"
    assert "--kind" not in component_args("tokenizer", tmp_path, "twemoji", 0, False)
    assert "--kind" not in component_args("decoder", tmp_path, "twemoji", 0, False, 1, "kl")


def test_the_4k_wide_tokenizer_recipe_overrides_the_datasets_budget(tmp_path):
    tok = component_args("tokenizer", tmp_path, "twemoji", 0, False, 1, "vq", "4k-wide")
    # argparse keeps the last value of a repeated flag: the recipe's
    steps = [tok[i + 1] for i, a in enumerate(tok) if a == "--steps"]
    assert steps[-1] == "12000" and tok[tok.index("--codebook-size") + 1] == "4096"
    assert "--no-gan" in tok and tok[tok.index("--channels") + 1] == "48"
    lm = component_args("lm", tmp_path, "twemoji", 0, False, 1, "vq", "4k-wide")
    assert lm == component_args("lm", tmp_path, "twemoji", 0, False)  # the tokenizer's only


def test_half_precision_leaves_the_tokenizer_in_float32(tmp_path):
    """`--half` stores the LM in float16 but not the tokenizer: the LM was trained on the
    float32 tokenizer's codes, and rounding its weights would change them."""
    tok = VQModel(VQConfig(channels=8, channel_mult=(1, 2), codebook_size=16))
    save_component(tmp_path / "tokenizer", tok, tok.config)
    lm = ImageGPT(LMConfig(vocab_size=16, grid_size=4, n_layer=1, n_head=2, n_embd=16))
    save_component(tmp_path / "lm", lm, lm.config)
    finalize_bundle(tmp_path, "shapes", 0, {}, half=True, keep_train_state=False)
    dtypes = {
        c: {t.dtype for t in load_file(tmp_path / c / "model.safetensors").values()
            if t.is_floating_point()}
        for c in ("tokenizer", "lm")
    }  # fmt: skip
    assert dtypes["tokenizer"] == {torch.float32} and dtypes["lm"] == {torch.float16}
    restored = load_component(tmp_path / "tokenizer")
    for name, tensor in tok.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name
