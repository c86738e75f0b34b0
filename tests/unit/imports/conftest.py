"""Tiny random Kandinsky 2.2 pipelines, built with diffusers once per session (~10 s)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kandinsky_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tessera.imports.kandinsky_tiny import build

    src = tmp_path_factory.mktemp("kandinsky") / "src"
    build(src)
    return src


@pytest.fixture(scope="session")
def kandinsky_bundle(kandinsky_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tessera.imports import import_directory

    return import_directory(kandinsky_src, tmp_path_factory.mktemp("bundles") / "kandinsky-tiny")
