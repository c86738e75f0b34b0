"""The training kit: caption tables, augmentation, LR schedules, train state, argument groups,
the clock, component lookup and loss plots."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

from tessera.training.captions import caption_table, sample_captions
from tessera.training.images import random_translate, to_float
from tessera.training.loop import Clock, Epochs, Steps, due
from tessera.training.optim import (
    cosine_decay,
    lr_at,
    make_optimizer,
    optimizer_step,
    planned_steps,
)
from tessera.training.plots import plot_curves
from tessera.training.state import (
    STATE_JSON,
    has_checkpoint,
    load_train_state,
    optimizer_from_files,
    optimizer_to_files,
    save_train_state,
)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


def trained_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    opt = make_optimizer(model, 1e-3, 0.1)
    optimizer_step(model, opt, model(torch.randn(3, 4)).square().mean())
    return opt


def assert_same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    as_json = json.dumps  # betas come back from JSON as lists
    assert as_json(sa["param_groups"]) == as_json(sb["param_groups"])
    for pid, state in sa["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][pid][key]))


def test_caption_table_and_sampling():
    texts, ids = caption_table([["a", "b"], ["b"], ["c", "a"]])
    assert texts == ["a", "b", "c"] and ids == [[0, 1], [1], [2, 0]]
    picked = sample_captions(ids, np.array([0, 1, 2, 1]), np.random.default_rng(0))
    assert picked.dtype == np.int64 and picked[1] == picked[3] == 1
    assert picked[0] in (0, 1) and picked[2] in (2, 0)


def test_images_to_float_and_random_translate():
    x = to_float(torch.tensor([[[[0, 255, 0]]]], dtype=torch.uint8))
    assert x.shape == (1, 3, 1, 1) and x.flatten().tolist() == [-1.0, 1.0, -1.0]
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(random_translate(x, 0, gen), x)
    moved = random_translate(x, 3, gen)
    assert moved.shape == x.shape and moved.max() <= 1.0


def test_lr_schedules():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)
    assert cosine_decay(0.0, 0.05) == 1.0 and cosine_decay(1.0, 0.05) == pytest.approx(0.05)
    # A time limit shortens the plan: 10 steps in 1 of 5 minutes -> ~50 steps.
    assert planned_steps(10, 1000, 60.0, 5.0) == 50
    assert planned_steps(10, 20, 60.0, 5.0) == 20 and planned_steps(10, 1000, 60.0, None) == 1000


def test_clock_and_cadence():
    clock = Clock(start=0, total=100, max_minutes=None)
    assert not clock.out_of_time()
    assert clock.lr(10, 1.0, 10) == lr_at(10, 100, 1.0, 10)
    limited = Clock(start=0, total=100, max_minutes=1.0)
    assert not limited.out_of_time()
    limited.t0 -= 61  # a minute and a second later
    assert limited.out_of_time() and limited.lr(50, 1.0, 10) < lr_at(50, 100, 1.0, 10)
    assert due(10, 5, 100) and due(7, 5, 7) and not due(7, 5, 100)


def test_steps_stop_at_the_total_or_the_time_limit_and_finish_saves(tmp_path):
    loop = Steps(3, 5, None, "test")
    assert loop.running(3) and loop.running(4) and not loop.running(5)
    assert not loop.timed_out
    saved = []
    loop.finish(tmp_path, lambda: saved.append("no checkpoint yet"))
    (tmp_path / "config.json").write_text("{}")
    limited = Steps(0, 100, 1.0, "test")
    assert limited.running(0)
    limited.clock.t0 -= 61
    assert not limited.running(1) and limited.timed_out
    limited.finish(tmp_path, lambda: saved.append("timed out"))
    Steps(0, 1, None, "test").finish(tmp_path, lambda: saved.append("never"))
    assert saved == ["no checkpoint yet", "timed out"]


def test_epochs_draw_a_permutation_per_epoch_and_drop_the_partial_batch():
    batches = Epochs(10, 4, np.random.default_rng(0))
    reference = np.random.default_rng(0)
    first, second = reference.permutation(10), reference.permutation(10)
    drawn = [batches.next() for _ in range(3)]
    assert [b.tolist() for b in drawn] == [
        first[:4].tolist(),
        first[4:8].tolist(),
        second[:4].tolist(),
    ]


def test_no_decay_on_vectors():
    groups = make_optimizer(small_model(), 1e-3, 0.1).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(p.dim() >= 2 for p in groups[0]["params"])
    assert all(p.dim() < 2 for p in groups[1]["params"])


def test_train_state_round_trip(tmp_path):
    model = small_model()
    opt = trained_optimizer(model)
    save_train_state(tmp_path, opt, 7, [{"step": 7, "loss": 1.5}])
    assert not has_checkpoint(tmp_path)  # no config.json beside it yet
    meta = json.loads((tmp_path / STATE_JSON).read_text())
    assert set(meta) == {"step", "history", "param_groups", "scalars"}
    fresh = make_optimizer(model, 5.0, 0.0)
    step, history = load_train_state(tmp_path, fresh)
    assert step == 7 and history == [{"step": 7, "loss": 1.5}]
    assert fresh.param_groups[0]["lr"] == 1e-3 and fresh.param_groups[0]["weight_decay"] == 0.1
    assert_same_state(opt, fresh)


def test_optimizers_share_a_file_by_prefix():
    a_model, b_model = small_model(), small_model()
    a, b = trained_optimizer(a_model), torch.optim.Adam(b_model.parameters(), lr=0.5)
    optimizer_step(b_model, b, b_model(torch.randn(2, 4)).sum())
    ta, ma = optimizer_to_files(a, "model")
    tb, mb = optimizer_to_files(b, "disc")
    assert all(k.startswith("model.") for k in ta) and all(k.startswith("disc.") for k in tb)
    a2 = make_optimizer(a_model, 9.0, 0.0)
    b2 = torch.optim.Adam(b_model.parameters(), lr=9.0)
    optimizer_from_files(a2, ta | tb, json.loads(json.dumps(ma)), "model")
    optimizer_from_files(b2, ta | tb, json.loads(json.dumps(mb)), "disc")
    assert_same_state(a, a2)
    assert_same_state(b, b2)


def test_argument_groups_and_overwrite_guard(tmp_path, capsys):
    from tessera.training.cli import (
        add_cadence_arguments,
        add_optimizer_arguments,
        add_run_arguments,
        add_runtime_arguments,
        refuses_overwrite,
    )

    parser = argparse.ArgumentParser()
    add_run_arguments(parser, steps=30, inputs={"--clip": "CLIP"})
    add_optimizer_arguments(parser, batch_size=8, lr=1e-3, weight_decay=0.1, warmup=5)
    add_cadence_arguments(parser, every=10, monitor="--sample-every")
    add_runtime_arguments(parser, threads=2)
    args = parser.parse_args(["--dataset", "shapes", "--clip", "c", "--out", str(tmp_path)])
    assert (args.steps, args.batch_size, args.lr, args.weight_decay, args.warmup) == (
        30, 8, 1e-3, 0.1, 5,
    )  # fmt: skip
    assert (args.ckpt_every, args.sample_every, args.threads, args.seed) == (10, 10, 2, 0)
    assert args.max_minutes is None and args.resume is False and args.device is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "shapes", "--out", "x"])  # --clip is required
    assert not refuses_overwrite(tmp_path, resume=False)
    (tmp_path / "config.json").write_text("{}\n")
    save_train_state(tmp_path, trained_optimizer(small_model()), 1, [])
    assert refuses_overwrite(tmp_path, resume=False) and not refuses_overwrite(tmp_path, True)
    assert "already holds a checkpoint" in capsys.readouterr().out


def test_plot_curves_writes_a_png_and_skips_empty_panels(tmp_path):
    history = [{"step": i, "loss": 1.0 / i, "eval": 0.5} for i in range(1, 5)]
    plot_curves(tmp_path / "loss.png", history, ["loss", ("eval", "missing"), "absent"], "t")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    plot_curves(tmp_path / "none.png", history, ["absent"], "t")
    assert not (tmp_path / "none.png").exists()


def test_component_dir_finds_a_component_its_bundle_or_its_parent(tmp_path):
    from tessera.clip.model import CLIPConfig, CLIPModel
    from tessera.common.checkpoint import save_component, write_bundle_index
    from tessera.common.errors import ModelNotReady, NotFound
    from tessera.training.components import component_dir, load_any

    config = CLIPConfig.tiny()
    save_component(tmp_path / "clip", CLIPModel(config), config)
    assert component_dir(tmp_path / "clip", "clip") == tmp_path / "clip"
    assert component_dir(tmp_path, "clip") == tmp_path / "clip"  # a parent
    write_bundle_index(tmp_path, "b")
    assert component_dir(tmp_path, "clip") == tmp_path / "clip"  # a bundle, verified
    assert isinstance(load_any(tmp_path, "clip"), CLIPModel)
    with pytest.raises(NotFound):
        component_dir(tmp_path / "missing", "lm")
    (tmp_path / "clip" / "config.json").write_text("{}\n")
    with pytest.raises(ModelNotReady):  # the bundle's checksum no longer matches
        component_dir(tmp_path, "clip")
