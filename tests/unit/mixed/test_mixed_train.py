"""`tessera train mixed` end to end: a tiny shapes set, its edit set, a tiny random VQ
tokenizer, a few steps, a resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tessera.cli import main
from tessera.common.checkpoint import load_component, save_component
from tessera.mixed.text import TextCodec


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from tessera.data import edit_sets
    from tessera.data.dataset import save_dataset
    from tessera.data.shapes import make_dataset
    from tessera.tokenizer.model import VQConfig, VQModel

    root = tmp_path_factory.mktemp("mixed")
    ds, heldout = make_dataset(per_combo=1)
    rows = np.arange(0, len(ds), 12)
    save_dataset(ds.subset(rows), heldout[rows], root / "data" / "shapes", {})
    edit_sets.prepare("edits-shapes", root / "data", per_kind=4, progress=False)
    torch.manual_seed(0)
    vq_config = VQConfig.tiny(image_size=64, patch_size=4, channel_mult=(1, 2, 2))
    save_component(root / "tok", VQModel(vq_config), vq_config)
    return root


def train(root, *extra: str) -> int:
    return main(
        ["train", "mixed", "--tokenizer", str(root / "tok"), "--out", str(root / "mixed"),
         "--data-dir", str(root / "data"), "--preset", "tiny", "--text-vocab", "300",
         "--batch-size", "4", "--eval-every", "3", "--ckpt-every", "3", "--threads", "1",
         *extra]
    )  # fmt: skip


def test_train_and_resume(workdir):
    out = workdir / "mixed"
    assert train(workdir, "--steps", "3") == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "loss.png",
                 "samples/step_000003.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert train(workdir, "--steps", "4") == 2  # refuses to overwrite without --resume
    assert train(workdir, "--steps", "4", "--resume") == 0
    state = json.loads((out / "train_state.json").read_text())
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4]
    evaluated = state["history"][2]
    for key in ("heldout_loss_edit", "heldout_loss_t2i", "edit_accuracy_heldout",
                "caption_accuracy_heldout"):  # fmt: skip
        assert key in evaluated, key
    model = load_component(out)
    assert (model.config.grid_size, model.config.image_vocab) == (4, 64)
    codec = TextCodec.load(out, model.config.text_len)
    assert codec.vocab_size == model.config.text_vocab
    assert codec.decode(codec.encode("make the circle red")) == "make the circle red"


def test_copy_slots_and_canonical_targets_from_a_checkpoint(workdir):
    """A second leg: starts from a separate-slot checkpoint, switches to copy slots and
    canonical edit targets; the text ids (tokenizer.json) and learned weights carry over."""
    start = workdir / "mixed"
    if not (start / "model.safetensors").is_file():
        assert train(workdir, "--steps", "3") == 0
    out = workdir / "copy"
    args = ["--out", str(out), "--steps", "3", "--cell-slots", "copy",
            "--edit-targets", "canonical", "--init-from", str(start)]  # fmt: skip
    assert train(workdir, *args) == 0
    model, before = load_component(out), load_component(start)
    assert model.config.copy_cells and not before.config.copy_cells
    assert (out / "tokenizer.json").read_bytes() == (start / "tokenizer.json").read_bytes()
    assert model.output_emb.shape == (model.config.n_embd,)
    assert list((workdir / "data" / "cache" / "lm").glob("canonical-*.npy"))  # cached


def test_keep_token_from_a_checkpoint_without_it(workdir):
    """``--keep-token`` from a checkpoint without it: one more row in the embedding and the
    head, the others the checkpoint's; the reverse is refused."""
    start = workdir / "mixed"
    if not (start / "model.safetensors").is_file():
        assert train(workdir, "--steps", "3") == 0
    out = workdir / "keep"
    args = ["--out", str(out), "--steps", "1", "--lr", "0", "--keep-token",
            "--edit-targets", "canonical", "--init-from", str(start)]  # fmt: skip
    assert train(workdir, *args) == 0
    model, before = load_component(out), load_component(start)
    assert model.config.keep_token and not before.config.keep_token
    V = before.config.layout.vocab.size
    assert model.lm_head.weight.shape[0] == V + 1
    for name in ("tok_emb.weight", "lm_head.weight"):  # lr 0: the old rows as they were
        assert torch.equal(model.state_dict()[name][:V], before.state_dict()[name].float())
    with pytest.raises(SystemExit, match="keep"):
        train(workdir, "--out", str(workdir / "back"), "--steps", "1", "--init-from", str(out))


def test_bf16_dropout_and_guidance_defaults(workdir):
    """``--bf16`` trains under bfloat16 autocast (a finite, falling loss on a repeated tiny
    set) and still saves float32 weights; ``--dropout``, ``--image-guidance``,
    ``--text-guidance`` and ``--t2i-guidance`` land in the checkpoint's config."""
    out = workdir / "bf16"
    args = ["--out", str(out), "--steps", "6", "--bf16", "--lr", "3e-3", "--dropout", "0.1",
            "--image-guidance", "1.25", "--text-guidance", "2.5",
            "--t2i-guidance", "1.5"]  # fmt: skip
    assert train(workdir, *args) == 0
    model = load_component(out)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert (model.config.image_guidance, model.config.text_guidance) == (1.25, 2.5)
    assert model.config.t2i_guidance == model.config.t2i_scale == 1.5
    assert model.config.dropout == 0.1
    losses = [h["loss"] for h in json.loads((out / "train_state.json").read_text())["history"]]
    assert all(np.isfinite(losses)) and min(losses[3:]) < losses[0]


def test_a_leg_may_add_dropout_but_not_change_sizes(workdir):
    """``--init-from`` with ``--dropout``: the weights carry over (a second leg regularised);
    a different size is refused, since no weight would fit."""
    start = workdir / "mixed"
    if not (start / "model.safetensors").is_file():
        assert train(workdir, "--steps", "3") == 0
    out = workdir / "dropout-leg"
    args = ["--out", str(out), "--steps", "1", "--lr", "0", "--dropout", "0.1",
            "--init-from", str(start)]  # fmt: skip
    assert train(workdir, *args) == 0
    model, before = load_component(out), load_component(start)
    assert model.config.dropout == 0.1 and before.config.dropout == 0.0
    for name, weight in before.state_dict().items():  # lr 0: as they were
        assert torch.equal(model.state_dict()[name], weight.float()), name
    with pytest.raises(SystemExit, match="text_len"):
        train(workdir, "--out", str(workdir / "longer"), "--steps", "1", "--text-len", "12",
              "--init-from", str(start))  # fmt: skip


def test_a_leg_may_grow_the_model_deeper(workdir):
    """``--layers`` above the checkpoint's: its blocks come first, the new ones on top start
    as identities (zero output projections), so the grown model's logits are the
    checkpoint's; then the new blocks train. Fewer blocks than the checkpoint's are refused."""
    start = workdir / "mixed"
    if not (start / "model.safetensors").is_file():
        assert train(workdir, "--steps", "3") == 0
    before = load_component(start)
    n = before.config.n_layer
    grown_dir = workdir / "grown"
    args = ["--out", str(grown_dir), "--steps", "1", "--lr", "0", "--layers", str(n + 2),
            "--init-from", str(start)]  # fmt: skip
    assert train(workdir, *args) == 0
    grown = load_component(grown_dir)
    assert grown.config.n_layer == n + 2
    for name, weight in before.state_dict().items():  # lr 0: the checkpoint's, as they were
        assert torch.equal(grown.state_dict()[name], weight.float()), name
    for i in range(n, n + 2):
        assert not grown.blocks[i].attn.c_proj.weight.any()
        assert not grown.blocks[i].mlp.c_proj.weight.any()
    layout = before.config.layout
    tokens = torch.randint(0, layout.vocab.size, (2, 10))
    slots = torch.arange(10).expand(2, 10)
    before.eval(), grown.eval()
    with torch.no_grad():
        torch.testing.assert_close(grown(tokens, slots)[0], before(tokens, slots)[0])

    trained = workdir / "grown-trained"
    args = ["--out", str(trained), "--steps", "2", "--lr", "1e-2", "--layers", str(n + 2),
            "--init-from", str(start)]  # fmt: skip
    assert train(workdir, *args) == 0
    assert load_component(trained).blocks[n].mlp.c_proj.weight.any()  # the new depth learns
    with pytest.raises(SystemExit, match="n_layer"):
        train(workdir, "--out", str(workdir / "shallower"), "--steps", "1",
              "--layers", str(n - 1), "--init-from", str(start))  # fmt: skip
