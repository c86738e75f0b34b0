"""Reports record paths the reader's clone can resolve."""

from __future__ import annotations

import json
from pathlib import Path

from tessera.common.settings import REPO_ROOT
from tessera.training.reports import repo_relative, write_report


def test_paths_inside_the_repository_become_relative(tmp_path):
    report = {
        "checkpoint": str(REPO_ROOT / "models" / "shapes" / "lm"),
        "inputs": [REPO_ROOT / ".data" / "shapes", "/elsewhere/x"],
        "steps": 3,
    }
    write_report(tmp_path / "r.json", report)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written == {
        "checkpoint": "models/shapes/lm",
        "inputs": [".data/shapes", "/elsewhere/x"],
        "steps": 3,
    }
    assert repo_relative(str(REPO_ROOT)) == str(REPO_ROOT)  # the root itself stays as it is


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def test_committed_reports_name_no_machine_paths():
    for path in Path(REPO_ROOT, "models").rglob("*.json"):
        absolute = [s for s in strings(json.loads(path.read_text())) if s.startswith("/")]
        assert not absolute, f"{path.relative_to(REPO_ROOT)}: {absolute[:3]}"
