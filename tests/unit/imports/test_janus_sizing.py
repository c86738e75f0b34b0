"""Sizing an imported Janus from its config: the counts are the loaded modules', the FLOPs
what a guided image costs the LM, and the published sizes give a gpu profile that fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from tessera.app import AppArgs
from tessera.common.checkpoint import load_bundle_component
from tessera.imports import import_directory
from tessera.imports.janus_sizing import (
    JANUS_PRO,
    bundle_estimate,
    estimate,
    gpu_options,
    published_config,
    serve_config,
)
from tessera.imports.janus_tiny import GRID, build_tiny_janus
from tessera.lm.janus import read_janus_config

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("janus")
    return import_directory(build_tiny_janus(root / "Janus-tiny"), root / "janus-tiny")


def test_counts_are_the_loaded_modules(bundle: Path) -> None:
    fp32, fp16 = bundle_estimate(bundle, "fp32"), bundle_estimate(bundle, "fp16")
    lm = load_bundle_component(bundle, "lm")
    vq = load_bundle_component(bundle, "tokenizer")
    assert fp32["LanguageModel"].params == sum(p.numel() for p in lm.parameters())
    assert fp32["Detokenizer"].params == sum(p.numel() for p in vq.parameters())
    assert fp32["LanguageModel"].weight_bytes == 2 * fp16["LanguageModel"].weight_bytes
    cache = lm.new_cache(1)
    row = sum(t.numel() * t.element_size() for t in [*cache.k, *cache.v])
    assert fp32["LanguageModel"].unit_bytes == row  # one KV-cache row, as allocated


def test_lm_flops_match_a_counted_guided_image(bundle: Path) -> None:
    """The formula against torch's FLOP counter over the adapter's prefill + decode steps
    for one guided image (two rows); the counter sees matmuls only, as the formula does."""
    lm = load_bundle_component(bundle, "lm")
    text = lm.encode(["a red cat"])
    p = int(text.mask.sum())
    ids, mask = torch.cat([text.states[:, :p]] * 2), torch.cat([text.mask[:, :p]] * 2)
    cache = lm.new_cache(2)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        lm.prefill(ids, mask, cache, torch.tensor([False, True]))
        cache.key_mask[:, p:] = True
        offsets = torch.full((2,), p - 1)
        for count in range(1, GRID * GRID):
            lm.decode_rows(
                torch.zeros(2, dtype=torch.long), torch.full((2,), count), offsets, cache
            )
    janus = read_janus_config(lm.config.source)
    formula = estimate(janus, "fp32", lm.config.prompt_len, prompt_tokens=p)["LanguageModel"]
    counted = counter.get_total_flops() / 1e9
    assert formula.gflops_per_image == pytest.approx(counted, rel=0.1)


@pytest.mark.parametrize(("name", "billions"), [("Janus-Pro-1B", 1.49), ("Janus-Pro-7B", 6.59)])
def test_published_sizes_fit_the_gpu_profile(name: str, billions: float) -> None:
    est = estimate(published_config(name), "bf16")
    lm, vq = est["LanguageModel"], est["Detokenizer"]
    assert lm.params / 1e9 == pytest.approx(billions, abs=0.01)
    assert vq.params / 1e6 == pytest.approx(72, abs=1)  # VQ-16, the same in both
    assert lm.unit_bytes == 2 * 2 * JANUS_PRO[name]["text"]["num_hidden_layers"] * (
        JANUS_PRO[name]["text"]["hidden_size"] * (256 + 576)
    )
    options = gpu_options(est)
    rows = options["LanguageModel"]["user_config"]["max_rows"]
    assert 16 <= rows <= 128  # at least one maximal request of 8 guided images
    for deployment, o in options.items():
        assert 0 < o["ray_actor_options"]["num_gpus"] <= 1
        assert o["memory_gib"] <= 80 * o["ray_actor_options"]["num_gpus"], deployment
    assert sum(o["ray_actor_options"]["num_gpus"] for o in options.values()) <= 1
    assert estimate(published_config(name), "fp32")["LanguageModel"].weight_bytes == (
        2 * lm.weight_bytes
    )


def test_a_sized_serve_config_for_the_bundle(bundle: Path) -> None:
    config = serve_config(bundle, REPO / "deploy" / "serve" / "gpu.yaml")
    (app,) = config["applications"]
    AppArgs.model_validate(app["args"])
    assert app["args"]["bundle_dir"] == str(bundle.absolute())
    names = [d["name"] for d in app["deployments"]]
    assert "Prior" not in names and "Decoder" not in names
    (lm,) = [d for d in app["deployments"] if d["name"] == "LanguageModel"]
    assert lm["user_config"]["max_rows"] == 128 and lm["ray_actor_options"]["num_gpus"] == 0.05
    yaml.safe_dump(config)
