"""`tessera eval bundle` end to end on a tiny random shapes bundle (routes and grids only)."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np

from tessera.bundle.random_init import build_random_bundle
from tessera.common.checkpoint import write_bundle_index
from tessera.data import shapes
from tessera.evaluation import bundle as report


def test_report_on_a_tiny_bundle(tmp_path):
    data_dir = tmp_path / "data"
    shapes.prepare(data_dir, per_combo=1)
    out = tmp_path / "shapes"
    build_random_bundle(out, "shapes", tiny=True)
    # routes and grids only: the mixed model's section has its own test (test_mixed_report)
    shutil.rmtree(out / "mixed")
    write_bundle_index(out, "shapes", {"kind": "random-init"})
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    args = parser.parse_args(
        ["--bundle", str(out), "--skip-components", "--per-split", "4", "--data-dir", str(data_dir)]
    )
    assert report.run(args) == 0
    written = json.loads((out / "report.json").read_text())
    for split in ("train", "heldout"):
        for route in report.ROUTES:
            acc = written["routes"][split][route]["checker_acc"]
            assert 0.0 <= acc <= 1.0  # random weights: low, but measured
    assert len(written["fast_subset"]["prompts"]["ar"]) == 4
    assert (out / "REPORT.md").read_text().startswith("# Bundle report: shapes")
    assert (out / "eval" / "grid_ar.png").is_file() and (out / "eval" / "grid_unclip.png").is_file()


def test_distinct_caption_rows_skip_repeated_captions():
    class Data:
        captions = [["a"], ["a"], ["b"], ["c"], ["c"], ["d"]]

    rows = report.distinct_caption_rows(Data(), 10)
    assert rows.tolist() == [0, 2, 3, 5]


def test_checker_reads_back_a_rendered_prompt():
    attrs = shapes.all_attrs()[0]
    image = shapes.render(attrs)
    assert report.checks(image, shapes.caption_for(attrs))
    assert not report.checks(np.full_like(image, 255), shapes.caption_for(attrs))


def test_render_only_rerenders_the_committed_report_with_a_fresh_pixel_section(tmp_path):
    from tessera.common.settings import REPO_ROOT

    shapes_dir = REPO_ROOT / "models" / "shapes"
    (tmp_path / "eval" / "pixel").mkdir(parents=True)
    (tmp_path / "report.json").write_text((shapes_dir / "report.json").read_text())
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.run(parser.parse_args(["--bundle", str(tmp_path), "--render-only"])) == 0
    assert (tmp_path / "REPORT.md").read_text() == (shapes_dir / "REPORT.md").read_text()
    metrics = json.loads((shapes_dir / "eval" / "pixel" / "metrics.json").read_text())
    metrics["likelihood"]["image_transformer"]["heldout_bpd"] = 0.1234
    (tmp_path / "eval" / "pixel" / "metrics.json").write_text(json.dumps(metrics))
    assert report.run(parser.parse_args(["--bundle", str(tmp_path), "--render-only"])) == 0
    assert "| 0.123 |" in (tmp_path / "REPORT.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["pixel"] == metrics
