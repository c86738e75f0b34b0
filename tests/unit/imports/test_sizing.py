"""Sizing from configs: the published Kandinsky 2.2 configs written in ``sizing.PUBLISHED``
agree with the model cards' parameter counts, and an imported bundle's estimate counts its
real parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.imports.sizing import (
    PUBLISHED_PARAMS,
    bundle_configs,
    estimate,
    gpu_options,
    published_params,
)


def test_published_configs_match_the_model_cards() -> None:
    counted = published_params()
    for name, card in PUBLISHED_PARAMS.items():
        assert counted[name] == pytest.approx(card, rel=0.05), name


def test_bundle_estimate_counts_the_real_parameters(kandinsky_bundle: Path) -> None:
    from tessera.common.checkpoint import load_bundle_component

    configs, side = bundle_configs(kandinsky_bundle)
    sizes = estimate(configs, side)
    unet = load_bundle_component(kandinsky_bundle, "decoder").unet
    assert sizes["Decoder"]["params"] == sum(p.numel() for p in unet.parameters())
    for size in sizes.values():
        memory = size["memory_gib"]
        assert memory["fp16"] == memory["bf16"] <= memory["fp32"]
        assert size["gflops_per_row"] > 0
    options = gpu_options(sizes, gpu_gib=80)
    assert all(o["ray_actor_options"]["num_gpus"] == 0.05 for o in options.values())  # tiny
