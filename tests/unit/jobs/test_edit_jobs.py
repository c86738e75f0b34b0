"""Edit jobs through the real queue (real Redis): the payload carries the source image and
the mask to the worker intact, the HTTP router takes them as multipart and refuses bad ones
before anything is queued, and stored generation jobs still read back."""

from __future__ import annotations

import asyncio
import contextlib
import io

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from tessera.common.errors import InvalidArgument
from tessera.common.limits import MAX_JOB_IMAGE_BYTES
from tessera.jobs.api import build_jobs_router
from tessera.jobs.queue import wait_for
from tessera.jobs.worker import Worker
from tessera.routes.edit_requests import EditJobRequest, job_executor, parse_job_request
from tessera.routes.schemas import EditParams, GenerationParams
from tessera.v1 import common_pb2, generation_pb2

from .conftest import open_queue


def png(side: int = 8, color: tuple[int, ...] = (10, 20, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side), color).save(buf, format="PNG")
    return buf.getvalue()


class EchoRoutes:
    """Route code's shape (generate, edit): an edit answers its source image and mask as
    the result's images, after one progress event with a preview."""

    def __init__(self) -> None:
        self.edits: list[tuple[bytes, EditParams, bytes | None]] = []

    async def generate(self, params, on_event):
        raise AssertionError("an edit job must run edit")

    async def edit(self, image, params, mask, on_event):
        self.edits.append((image, params, mask))
        preview = common_pb2.Image(png=image, width=8, height=8)
        await on_event(
            generation_pb2.GenerateStreamResponse(
                progress=common_pb2.Progress(step=1, total_steps=2, stage="mixed"),
                previews=[preview],
            )
        )
        images = [common_pb2.Image(png=p) for p in (image, mask) if p is not None]
        return generation_pb2.GenerateResponse(images=images, seed=params.seed or 0, route="edit")


@contextlib.asynccontextmanager
async def running(queue, executor):
    worker = Worker(queue, executor, concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


async def test_an_edit_job_carries_its_images_to_edit(redis_url):
    routes = EchoRoutes()
    source, mask = png(color=(1, 2, 3)), png(mode="RGBA", color=(0, 0, 0, 0))
    params = EditParams(prompt="make the circle red", seed=5, image_guidance_scale=1.5)
    async with open_queue(redis_url) as q:
        job = await q.submit(EditJobRequest.build(source, params, mask))
        assert isinstance(job.request, EditJobRequest) and job.request.image == source
        async with running(q, job_executor(routes)):
            done = await wait_for(q, job.id, 20)
    assert done.state == "succeeded", done.error
    assert [img.png for img in done.result.images] == [source, mask]
    (image, got, got_mask), *_ = routes.edits
    assert (image, got_mask) == (source, mask) and got == params


async def test_edit_jobs_over_http(redis_url):
    checked = []

    def check_edit(image: bytes, params: EditParams, mask: bytes | None) -> None:
        checked.append((image, params.prompt, mask))
        if params.prompt.startswith("bad"):
            raise InvalidArgument("image is 8x8; model 'x' edits 16x16 images")

    async with open_queue(redis_url) as q:
        app = FastAPI()
        app.include_router(build_jobs_router(lambda: q, check_edit=check_edit))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            files = {"image": ("a.png", png(), "image/png"), "mask": ("m.png", png(), "image/png")}
            r = await http.post(
                "/v1/jobs/edits",
                files=files,
                data={"prompt": "remove the square", "n": "2", "priority": "high"},
            )
            assert r.status_code == 202, r.text
            body = r.json()
            assert body["priority"] == "high" and r.headers["location"].endswith(body["id"])
            assert body["request"]["prompt"] == "remove the square"
            assert body["request"]["n"] == 2 and "image" not in body["request"]
            stored = await q.get(body["id"])
            assert stored.request.image == png() and stored.request.mask == png()
            before = (await q.depth()).total
            refused = [
                {"files": files, "data": {"prompt": "bad size"}},  # the check's own 400
                {"files": files, "data": {"prompt": " "}},  # blank instruction
                {
                    "files": {"image": ("a.png", bytes(MAX_JOB_IMAGE_BYTES + 1))},
                    "data": {"prompt": "x"},
                },
                {"files": {"mask": ("m.png", png())}, "data": {"prompt": "x"}},  # no image
            ]
            for form in refused:
                r = await http.post("/v1/jobs/edits", **form)
                assert r.status_code == 400, r.text
                assert r.json()["error"]["message"]
            assert (await q.depth()).total == before
    assert [c[1] for c in checked] == ["remove the square", "bad size"]


def test_stored_requests_read_back_by_kind():
    generation = GenerationParams(prompt="a cat", seed=2).model_dump_json(exclude_none=True)
    assert parse_job_request(generation) == GenerationParams(prompt="a cat", seed=2)
    edit = EditJobRequest.build(png(), EditParams(prompt="x", n=2), None)
    back = parse_job_request(edit.model_dump_json(exclude_none=True))
    assert isinstance(back, EditJobRequest) and back.image == png() and back.mask is None
    assert back.params() == EditParams(prompt="x", n=2) and back.route == "edit"
    with pytest.raises(InvalidArgument, match="limit"):
        EditJobRequest.build(bytes(MAX_JOB_IMAGE_BYTES + 1), EditParams(prompt="x"), None)
    with pytest.raises(ValueError):
        parse_job_request('{"kind": "edit", "prompt": "x", "image": "not base64!"}')
