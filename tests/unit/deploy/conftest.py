"""Fixtures for the static deployment checks: the repository, the upstream schemas beside
the checkout (../shared/schemas), and promtool (Debian's `prometheus` package)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCHEMAS = REPO / ".." / "shared" / "schemas"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def schemas() -> Path:
    if not SCHEMAS.is_dir():
        pytest.skip(f"upstream schemas not found at {SCHEMAS.resolve()} (../shared/schemas)")
    return SCHEMAS


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path
