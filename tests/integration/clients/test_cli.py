"""The ``tessera`` client commands as users run them (``.venv/bin/tessera`` in a subprocess)
against the running stack, checked by exit code and the files they write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tessera_client import Client

from .test_sdk import TIMEOUT, skip_without_jobs

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
TESSERA = Path(sys.executable).parent / "tessera"


def tessera(*argv: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "services"), **(env or {})}
    return subprocess.run(
        [str(TESSERA), *argv], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def native(stack) -> int:
    with Client(stack["http"]) as client:
        return client.models()[0].image_size


def conn_args(stack: dict, transport: str) -> list[str]:
    if transport == "http":
        return ["--url", stack["http"]]
    return ["--grpc", "--grpc-target", stack["grpc"]]


def sizes(paths: list[Path]) -> list[tuple[int, int]]:
    return [Image.open(p).size for p in paths]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_generate_writes_pngs(stack, native, tmp_path, transport):
    conn = conn_args(stack, transport)
    run = tessera("generate", "a red apple", "-o", "out.png", "--n", "2", "--seed", "3",
                  "--route", "unclip", "--steps", "4", *conn, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    paths = [tmp_path / "out.png", tmp_path / "out-1.png"]
    assert run.stdout.split() == ["out.png", "out-1.png"]  # as given, one per line
    assert sizes(paths) == [(native, native)] * 2
    assert "seed 3" in run.stderr


def test_generate_with_progress_from_env_url(stack, native, tmp_path):
    run = tessera("generate", "a tree", "-o", "t.png", "--progress", "--grpc", cwd=tmp_path,
                  env={"TESSERA_GRPC_TARGET": stack["grpc"]})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sizes([tmp_path / "t.png"]) == [(native, native)]
    assert "/" in run.stderr  # the bar's step counts
    run = tessera("generate", "a tree", "-o", "e.png", "--size", f"{native * 2}x{native * 2}",
                  cwd=tmp_path, env={"TESSERA_URL": stack["http"]})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sizes([tmp_path / "e.png"]) == [(native * 2, native * 2)]


def test_variations_tokenize_embed(stack, native, tmp_path):
    conn = ["--url", stack["http"]]
    Image.new("RGB", (native, native), (30, 200, 30)).save(tmp_path / "src.png")
    run = tessera("variations", "src.png", "-o", "var.png", "--n", "2", "--steps", "4", *conn,
                  cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sizes([tmp_path / "var.png", tmp_path / "var-1.png"]) == [(native, native)] * 2
    run = tessera("tokenize", "src.png", "var.png", *conn, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    grids = json.loads(run.stdout)["grids"]
    assert len(grids) == 2 and len(grids[0]["tokens"]) == grids[0]["height"] * grids[0]["width"]
    run = tessera("embed", "--text", "a cat", "--text", "a dog", "-o", "emb.json", "--grpc",
                  "--grpc-target", stack["grpc"], cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    emb = json.loads((tmp_path / "emb.json").read_text())
    assert len(emb["embeddings"]) == 2 and len(emb["embeddings"][0]) == emb["dim"]
    run = tessera("embed", "--image", "src.png", *conn, cwd=tmp_path)
    assert run.returncode == 0 and len(json.loads(run.stdout)["embeddings"]) == 1


def test_exit_codes(stack, tmp_path):
    conn = ["--url", stack["http"]]
    run = tessera("generate", "a cat", "--n", "9", "-o", "x.png", *conn, cwd=tmp_path)
    assert run.returncode == 2 and "tessera: error:" in run.stderr
    assert not (tmp_path / "x.png").exists()
    run = tessera("generate", "a cat", "--model", "nope", "--grpc", "--grpc-target", stack["grpc"],
                  cwd=tmp_path)  # fmt: skip
    assert run.returncode == 3 and "nope" in run.stderr  # unknown model
    run = tessera("status", "no-such-job", *conn, cwd=tmp_path)
    assert run.returncode == 3, run.stderr
    run = tessera("generate", "a", "--url", "http://127.0.0.1:9", "--retries", "0", cwd=tmp_path)
    assert run.returncode == 4 and "cannot connect" in run.stderr
    run = tessera("generate", cwd=tmp_path)  # no prompt
    assert run.returncode == 2


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_job_commands(stack, native, tmp_path, transport):
    skip_without_jobs(stack)
    conn = conn_args(stack, transport)
    run = tessera("submit", "a red apple", "--seed", "4", "--n", "2", *conn, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    run = tessera("watch", job_id, "-o", "job.png", *conn, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "succeeded" in run.stdout and "/" in run.stderr
    assert sizes([tmp_path / "job.png", tmp_path / "job-1.png"]) == [(native, native)] * 2
    run = tessera("status", job_id, "--json", *conn, cwd=tmp_path)
    assert run.returncode == 0 and json.loads(run.stdout)["state"] == "succeeded"
    run = tessera("submit", "a tree", "--wait", "-o", "w.png", *conn, cwd=tmp_path)
    assert run.returncode == 0 and (tmp_path / "w.png").exists()
    run = tessera("submit", "a dog", "--route", "unclip", *conn, cwd=tmp_path)
    other = run.stdout.strip()
    assert tessera("cancel", other, *conn, cwd=tmp_path).returncode == 0
    run = tessera("watch", other, "--no-progress", *conn, cwd=tmp_path)
    assert run.returncode in (0, 5)  # cancelled (5) unless it finished first (0)
