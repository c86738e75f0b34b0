"""The committed bundles: intact, small, and still as good as their reports say.

The fast subset of ``tessera eval bundle``: a fixed set of training prompts per route (stored
in each bundle's report.json), generated through the served route code and scored by the
judge (Twemoji) or the exact checker (shapes). Needs neither the data sets nor Ray.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessera.common.checkpoint import read_bundle_index, verify_component
from tessera.common.settings import REPO_ROOT
from tessera.evaluation.bundle import DEFAULT_JUDGE, checks, generate

MODELS = REPO_ROOT / "models"
BUNDLES = ("twemoji", "shapes")
MAX_BUNDLE_BYTES = 40 * 2**20  # the Twemoji bundle's budget, weights and all
# Floors on the fast subset (24 prompts per route): below the full report's numbers by a
# sampling margin, far above chance (~1% for the judge's 102 subgroups, ~0.2% for shapes).
FLOORS = {
    ("twemoji", "ar"): 0.45,
    ("twemoji", "unclip"): 0.45,
    ("shapes", "ar"): 0.8,
    ("shapes", "unclip"): 0.8,
}


def weight_bytes(bundle: str) -> int:
    return sum(p.stat().st_size for p in (MODELS / bundle).rglob("*") if p.is_file())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_verifies_against_its_index(bundle):
    index = read_bundle_index(MODELS / bundle)
    # `tessera train all` trains the five; the pixel route's model (`tessera train pixel`,
    # shapes only) and the mixed-modal model (`tessera train mixed`) are trained on their own
    # and added to the bundle.
    trained_together = {"tokenizer", "clip", "lm", "prior", "decoder"}
    assert set(index["components"]) - {"pixel", "mixed"} == trained_together
    for component in index["components"]:
        verify_component(MODELS / bundle, component)
    training = index["training"]
    assert training["dataset"] == bundle and training["seed"] == 0
    assert set(training["components"]) == trained_together


def test_twemoji_bundle_fits_its_size_budget():
    assert weight_bytes("twemoji") <= MAX_BUNDLE_BYTES


@pytest.fixture(scope="module")
def pipelines():
    from tessera.routes.local import local_pipelines

    return {name: local_pipelines(MODELS / name) for name in BUNDLES}


@pytest.fixture(scope="module")
def judge():
    from tessera.evaluation.judge import load_judge

    return load_judge(DEFAULT_JUDGE)


@pytest.mark.parametrize(("bundle", "route"), sorted(FLOORS))
def test_fast_subset_meets_its_floor(bundle, route, pipelines, judge):
    report = json.loads((MODELS / bundle / "report.json").read_text())
    fast = report["fast_subset"]
    items = fast["prompts"][route]
    prompts = [item["prompt"] for item in items]
    images = generate(pipelines[bundle], route, prompts, seeds=[item["seed"] for item in items])
    if bundle == "twemoji":
        truth = np.array([item["subgroup"] for item in items])
        accuracy = float(np.mean(judge.score(images)["subgroup"] == truth))
    else:
        accuracy = float(np.mean([checks(img, p) for img, p in zip(images, prompts, strict=True)]))
    assert accuracy >= FLOORS[bundle, route], f"{bundle}/{route}: {accuracy:.2f}"
    # the committed report was measured on this bundle: the subset reproduces its number
    assert accuracy >= fast["measured"][route] - 0.15, (accuracy, fast["measured"][route])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_report_md_is_rendered_from_report_json(bundle):
    """The two committed report files say the same thing (neither was edited by hand)."""
    from tessera.evaluation.report import render_markdown

    report = json.loads((MODELS / bundle / "report.json").read_text())
    assert render_markdown(report) == (MODELS / bundle / "REPORT.md").read_text()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_mixed_component_is_trained_on_its_own(bundle):
    """The mixed-modal model is trained by ``tessera train mixed`` on the bundle's tokenizer
    (not by ``tessera train all``) and verified like every component."""
    index = read_bundle_index(MODELS / bundle)
    assert "mixed" in index["components"]
    assert "tokenizer.json" in index["components"]["mixed"]["files"]  # its text BPE
    training = json.loads((MODELS / bundle / "training.json").read_text())
    assert "mixed" in training


def test_shapes_mixed_model_captions_training_shapes(pipelines):
    """Greedy captions of canonical training-combination shapes, through the route code,
    read back by the caption parser (the report measures 99% on 200 training images)."""
    import asyncio

    from tessera.common.images import encode_png
    from tessera.data.shapes import all_attrs, is_heldout, parse_caption, render
    from tessera.routes.schemas import CaptionParams

    seen = [a for a in all_attrs() if not is_heldout(a)]
    picked = [seen[i] for i in np.linspace(0, len(seen) - 1, 16).round().astype(int)]
    shapes = pipelines["shapes"]

    async def caption_all() -> list[str]:
        params = CaptionParams()
        return [(await shapes.caption(encode_png(render(a)), params))[0].text for a in picked]

    texts = asyncio.run(caption_all())
    hits = [parse_caption(t) == a for t, a in zip(texts, picked, strict=True)]
    assert np.mean(hits) >= 0.75, list(zip(texts, [a.key for a in picked], strict=True))
