"""The README's Python SDK example runs as written against the running stack.

The example is the first ```python block under the heading "Python SDK" of the top-level
README.md (the SDK's own clients/python/README.md holds the same text). Later blocks of that
section (jobs) run too once /v1/jobs is wired into the gateway."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_sdk import skip_without_jobs

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
READMES = [REPO / "README.md", REPO / "clients" / "python" / "README.md"]


def python_blocks(readme: Path, heading: str = "Python SDK") -> list[str]:
    """The ```python blocks of the section under ``heading``, up to the next heading of the
    same or a higher level (lines inside code fences are never headings)."""
    blocks: list[str] = []
    level, fence, current = None, None, None
    for line in readme.read_text().splitlines():
        if fence is None and (m := re.match(r"^(#+)\s+(.*?)\s*$", line)):
            if level is not None and len(m.group(1)) <= level:
                break
            if level is None and m.group(2) == heading:
                level = len(m.group(1))
            continue
        if line.startswith("```"):
            if fence is None:
                fence = line[3:].strip()
                current = [] if level is not None and fence == "python" else None
            else:
                if current is not None:
                    blocks.append("\n".join(current) + "\n")
                fence, current = None, None
        elif current is not None:
            current.append(line)
    return blocks


def run_block(code: str, stack: dict, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TESSERA_URL": stack["http"], "TESSERA_GRPC_TARGET": stack["grpc"]}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("readme", READMES, ids=["README.md", "clients/python/README.md"])
def test_python_sdk_example_runs(stack, readme, tmp_path):
    blocks = python_blocks(readme)
    if not blocks:
        assert readme != READMES[1], "clients/python/README.md lost its Python SDK example"
        pytest.skip(f"{readme.name} has no 'Python SDK' section yet (the lead merges it)")
    run = run_block(blocks[0], stack, tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "face.png").exists() and (tmp_path / "face-1.png").exists()
    assert "rejected: 400" in run.stdout


def test_python_sdk_jobs_example_runs(stack, tmp_path):
    skip_without_jobs(stack)
    blocks = python_blocks(READMES[1])
    assert len(blocks) >= 2
    run = run_block(blocks[1], stack, tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "square.png").exists()
