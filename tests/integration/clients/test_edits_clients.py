"""Edits and captions from the SDK (sync and async, HTTP and gRPC, jobs) and the ``tessera``
CLI (``tessera edit``, ``tessera caption``) against the running stack."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image, ImageDraw

from tessera_client import AsyncClient, InvalidRequest

from .test_cli import REPO, tessera
from .test_sdk import TIMEOUT, TRANSPORTS, make

pytestmark = pytest.mark.integration
# The commands resolve from this checkout's SDK (where `edit` and `caption` live).
CLIENT_PATH = {"PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("services", "clients/python"))}


@pytest.fixture(scope="module")
def native(stack) -> int:
    with make(stack, "http") as client:
        info = client.models()[0]
    assert info.edits and "mixed" in info.routes
    return info.image_size


def scene(side: int) -> bytes:
    img = Image.new("RGB", (side, side), (255, 255, 255))
    ImageDraw.Draw(img).rectangle((side // 4, side // 4, 3 * side // 4, 3 * side // 4), (0, 0, 220))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_edit_caption_and_edit_job(stack, native, transport):
    with make(stack, transport) as client:
        edited = client.edit(scene(native), "make the square red", n=2, seed=6)
        assert len(edited) == 2 and edited.seed == 6
        assert all(img.size == (native, native) for img in edited.images)
        clear = Image.new("RGBA", (native, native), (0, 0, 0, 0))
        masked = client.edit(Image.open(io.BytesIO(scene(native))), "remove it", mask=clear, seed=1)
        assert len(masked) == 1
        captions = client.caption(scene(native), n=2, temperature=1.0, seed=3)
        assert len(captions) == 2 and captions[0].score >= captions[1].score
        job = client.submit_edit(scene(native), "make the square red", seed=6, priority="high")
        done = client.wait(job.id, timeout=TIMEOUT)
        assert done.state == "succeeded" and done.result.png_bytes[0] == edited.png_bytes[0]
        events = list(client.edit_stream(scene(native), "make the square red", seed=6))
        assert events[-1].done and events[-1].result.png_bytes[0] == edited.png_bytes[0]
        assert any(e.preview_png_bytes for e in events[:-1])
        with pytest.raises(InvalidRequest):
            client.edit(scene(native * 2), "make the square red")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_async_sdk_edit_and_caption(stack, native, transport):
    async with make(stack, transport, AsyncClient) as client:
        edited = await client.edit(scene(native), "make the square red", seed=6)
        assert edited.images[0].size == (native, native)
        captions = await client.caption(scene(native))
        assert len(captions) == 1 and captions.texts[0] == captions[0].text
        events = [e async for e in client.edit_stream(scene(native), "remove it", seed=2)]
        assert events[-1].done and len(events[-1].result) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cli_edit_and_caption(stack, native, tmp_path, transport):
    conn = (
        ["--url", stack["http"]]
        if transport == "http"
        else ["--grpc-target", stack["grpc"], "--grpc"]
    )
    (tmp_path / "in.png").write_bytes(scene(native))
    Image.new("RGBA", (native, native), (0, 0, 0, 0)).save(tmp_path / "mask.png")
    run = tessera("edit", "in.png", "make the square red", "-o", "out.png", "--mask", "mask.png",
                  "--seed", "2", *conn, cwd=tmp_path, env=CLIENT_PATH)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["out.png"]
    assert Image.open(tmp_path / "out.png").size == (native, native)
    run = tessera("edit", "in.png", "remove it", "-o", "p.png", "--progress", *conn,
                  cwd=tmp_path, env=CLIENT_PATH)  # fmt: skip
    assert run.returncode == 0, run.stderr
    run = tessera("caption", "in.png", "-n", "2", "--temperature", "0.8", *conn, cwd=tmp_path,
                  env=CLIENT_PATH)  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 2 and all(float(line.split()[0]) <= 0 for line in lines)
    run = tessera("edit", "in.png", " ", *conn, cwd=tmp_path, env=CLIENT_PATH)
    assert run.returncode == 2 and "blank" in run.stderr
