"""The SDK parses exactly what the server sends: responses, jobs and SSE events built by the
server's own code (gateway + jobs API) parse to the same typed results over HTTP and gRPC."""

from __future__ import annotations

from PIL import Image

from tessera.gateway.http import images_response
from tessera.jobs.api import _progress_event, _sse, job_view
from tessera.jobs.queue import JobRecord, JobUpdate
from tessera.routes.schemas import GenerationParams
from tessera.v1 import common_pb2, generation_pb2
from tessera_client import GeneratedImages, TokenGrid
from tessera_client import _parse as parse
from tessera_client import _wire as wire
from tessera_client._http import SSEDecoder
from tessera_client.types import numbered_paths
from tessera_client.v1 import common_pb2 as client_common_pb2
from tessera_client.v1 import tokenizer_pb2 as client_tokenizer_pb2

from .conftest import png

RESULT = generation_pb2.GenerateResponse(
    images=[common_pb2.Image(png=png(8, (1, 2, 3)), width=8, height=8),
            common_pb2.Image(png=png(8, (9, 9, 9)), width=8, height=8)],
    seed=42, route="unclip", model="tiny", elapsed_ms=12.5,
)  # fmt: skip


def record(state: str = "succeeded", **kw) -> JobRecord:
    base = dict(
        id="job-1", state=state, priority="high", attempts=1, created_at=100.0,
        request=GenerationParams(prompt="a cat", seed=42), started_at=101.0,
        finished_at=102.5 if state in ("succeeded", "failed") else None,
        result_expires_at=3700.0 if state == "succeeded" else None, step=3, total_steps=4,
        stage="decoder", result=RESULT if state == "succeeded" else None,
    )  # fmt: skip
    base.update(kw)
    return JobRecord(**base)


def sse_events(text: str) -> list[tuple[str, str, str | None]]:
    decoder = SSEDecoder()
    return [e for line in text.split("\n") if (e := decoder.feed(line)) is not None]


def test_images_parse_the_same_from_json_and_proto():
    body = images_response(RESULT, "b64_json").model_dump(mode="json")
    a, b = parse.images_from_json(body), parse.images_from_proto(RESULT)
    assert a == b
    assert a.seed == 42 and a.route == "unclip" and a.model == "tiny" and len(a) == 2
    assert [img.size for img in a.images] == [(8, 8), (8, 8)]
    assert a.images[0].getpixel((0, 0)) == (1, 2, 3)


def test_jobs_parse_the_same_from_json_and_proto():
    for state in ("queued", "running", "succeeded", "failed", "cancelled"):
        rec = record(state, error="boom" if state == "failed" else None)
        from_json = parse.job_from_json(job_view(rec).model_dump(mode="json"))
        from_proto = parse.job_from_proto(rec.to_proto())
        assert from_json == from_proto, state
        assert from_json.state == state and from_json.priority == "high"
        assert from_json.progress.step == 3 and from_json.progress.total_steps == 4
        assert from_json.done == (state in ("succeeded", "failed", "cancelled"))
    done = parse.job_from_json(job_view(record()).model_dump(mode="json"))
    assert done.result == parse.images_from_proto(RESULT)
    assert done.created_at == 100.0 and done.finished_at == 102.5
    queued = parse.job_from_proto(record("queued", started_at=None).to_proto())
    assert queued.started_at is None and queued.result is None and queued.error is None


def test_sse_progress_and_done_events_parse_like_grpc_job_events():
    preview = common_pb2.Image(png=png(4), width=4, height=4)
    update = JobUpdate(event_id="5-0", job=record("running"), previews=[preview])
    final = JobUpdate(event_id="6-0", job=record("succeeded"), final=True)
    text = (
        ": keepalive\n\n"
        + _sse("progress", _progress_event(update), update.event_id)
        + _sse("done", job_view(final.job), final.event_id)
    )
    events = sse_events(text)
    assert [(name, eid) for name, _, eid in events] == [("progress", "5-0"), ("done", "6-0")]
    progress, done = (parse.job_event_from_sse(n, wire.parse_sse_data(d)) for n, d, _ in events)
    grpc_progress = parse.job_event_from_proto(update.to_proto())
    assert progress.preview_png_bytes == grpc_progress.preview_png_bytes == [preview.png]
    assert progress.progress == grpc_progress.progress and progress.state == "running"
    assert not progress.done and progress.job is None
    assert progress.previews[0].size == (4, 4)
    grpc_done = parse.job_event_from_proto(final.to_proto())
    assert done.done and grpc_done.done and done.job == grpc_done.job
    assert done.job.result.seed == 42


def test_sse_error_event_raises_the_typed_error():
    import pytest

    from tessera_client import Unavailable

    with pytest.raises(Unavailable, match="job store"):
        parse.job_event_from_sse("error", {"code": "unavailable", "message": "job store down"})


def test_generate_events_end_with_the_result():
    mid = generation_pb2.GenerateStreamResponse(
        progress=common_pb2.Progress(step=2, total_steps=8, stage="lm"),
        previews=[common_pb2.Image(png=png(4))],
    )
    last = generation_pb2.GenerateStreamResponse(
        progress=common_pb2.Progress(step=1, total_steps=1, stage="done"), result=RESULT
    )
    a, b = parse.generate_event_from_proto(mid), parse.generate_event_from_proto(last)
    assert not a.done and a.result is None and a.progress.fraction == 0.25
    assert b.done and b.result.seed == 42


def test_sse_decoder_joins_data_lines_and_skips_comments():
    events = sse_events('event: a\ndata: {"x":\ndata: 1}\nid: 7\n\n: ping\n\ndata: 2\n\n')
    assert events == [("a", '{"x":\n1}', "7"), ("message", "2", None)]


def test_requests_carry_only_the_fields_set():
    fields = wire.generation_fields("a cat", route="unclip", seed=0, steps=None)
    assert fields == {"prompt": "a cat", "route": "unclip", "seed": 0}
    call = wire.generate(fields)
    assert call.http.json == fields
    assert call.grpc.message.HasField("seed") and call.grpc.message.seed == 0
    assert not call.grpc.message.HasField("steps")
    sub = wire.submit(fields, "high", "key-1")
    assert sub.http.json["priority"] == "high" and sub.http.headers["Idempotency-Key"] == "key-1"
    assert (
        sub.grpc.message.request.route == "unclip" and sub.grpc.message.idempotency_key == "key-1"
    )


def test_images_save_as_numbered_pngs(tmp_path):
    result = GeneratedImages(png_bytes=[png(), png(), png()], seed=1, route="ar")
    paths = result.save(tmp_path / "sub" / "out.png")
    assert [p.name for p in paths] == ["out.png", "out-1.png", "out-2.png"]
    assert all(Image.open(p).size == (8, 8) for p in paths)
    assert [p.name for p in numbered_paths("x", 2)] == ["x.png", "x-1.png"]


def test_image_inputs_accept_bytes_paths_and_pil(tmp_path):
    data = png()
    (tmp_path / "a.png").write_bytes(data)
    img = Image.new("RGB", (8, 8), (200, 30, 30))
    call = wire.tokenize([data, tmp_path / "a.png", str(tmp_path / "a.png"), img], True, False)
    assert len(set(call.grpc.message.images)) == 1  # all four are the same PNG


def test_token_grid_rows():
    assert TokenGrid(tokens=[1, 2, 3, 4, 5, 6], height=2, width=3).rows() == [[1, 2, 3], [4, 5, 6]]


def test_a_continuous_tokenizers_answer_parses_on_both_transports():
    """A kl tokenizer answers latents only, with its kind; an older server sends no kind."""
    call = wire.tokenize([png()], False, False)
    body = {"codebook_size": 0, "kind": "kl", "grids": [],
            "latents": [{"values": [0.5] * 4, "shape": [1, 2, 2]}]}  # fmt: skip
    for got in (
        call.parse_http(body),
        call.parse_grpc(
            client_tokenizer_pb2.TokenizeResponse(
                kind="kl", latents=[client_common_pb2.Tensor(values=[0.5] * 4, shape=[1, 2, 2])]
            )
        ),
    ):
        assert got.kind == "kl" and not got.grids and got.latents[0].shape == [1, 2, 2]
    assert call.parse_http({"codebook_size": 4, "grids": []}).kind == "vq"
