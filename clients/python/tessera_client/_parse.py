"""The parsers that turn an HTTP (JSON) or gRPC (protobuf) reply into the same typed result;
``_wire`` pairs each call with its parser. Nothing here does I/O."""

from __future__ import annotations

import base64
from typing import Any

from tessera_client.errors import from_code_name
from tessera_client.types import (
    TERMINAL_STATES,
    Embeddings,
    GeneratedImages,
    Job,
    Progress,
    ProgressEvent,
)
from tessera_client.v1 import common_pb2, generation_pb2, prior_pb2


def images_from_json(body: dict) -> GeneratedImages:
    """OpenAI images response (+ seed/route/model) → GeneratedImages (``url`` items skipped)."""
    pngs = [base64.b64decode(d["b64_json"]) for d in body.get("data", []) if d.get("b64_json")]
    return GeneratedImages(
        png_bytes=pngs,
        seed=body.get("seed", 0),
        route=body.get("route", ""),
        model=body.get("model") or "",
        elapsed_ms=body.get("elapsed_ms") or 0.0,
    )


def images_from_proto(msg: generation_pb2.GenerateResponse) -> GeneratedImages:
    return GeneratedImages(
        png_bytes=[img.png for img in msg.images],
        seed=msg.seed,
        route=msg.route,
        model=msg.model,
        elapsed_ms=msg.elapsed_ms,
    )


def variations_from_proto(msg: generation_pb2.VariationsResponse) -> GeneratedImages:
    return images_from_proto(msg.result)


def job_from_json(body: dict) -> Job:
    result = body.get("result")
    return Job(
        id=body["id"],
        state=body["state"],
        priority=body.get("priority", "normal"),
        attempts=body.get("attempts", 0),
        created_at=body.get("created_at"),
        started_at=body.get("started_at"),
        finished_at=body.get("finished_at"),
        result_expires_at=body.get("result_expires_at"),
        result=images_from_json(result) if result else None,
        error=body.get("error") or None,
        progress=Progress(**(body.get("progress") or {})),
        cancel_requested=bool(body.get("cancel_requested", False)),
    )


def job_from_proto(msg: generation_pb2.Job) -> Job:
    def when(t: float) -> float | None:
        return t or None  # the proto uses 0 for "not reached"

    return Job(
        id=msg.id,
        state=msg.state,
        priority=msg.priority or "normal",
        attempts=msg.attempts,
        created_at=when(msg.created_at),
        started_at=when(msg.started_at),
        finished_at=when(msg.finished_at),
        result_expires_at=when(msg.result_expires_at),
        result=images_from_proto(msg.result) if msg.HasField("result") else None,
        error=msg.error or None,
        progress=progress_from_proto(msg.progress),
    )


def job_reply_from_proto(
    msg: generation_pb2.SubmitJobResponse
    | generation_pb2.GetJobResponse
    | generation_pb2.CancelJobResponse,
) -> Job:
    """SubmitJob, GetJob and CancelJob answer with the job, wrapped."""
    return job_from_proto(msg.job)


def progress_from_proto(msg: common_pb2.Progress) -> Progress:
    return Progress(step=msg.step, total_steps=msg.total_steps, stage=msg.stage)


def job_event_from_sse(event: str, data: Any) -> ProgressEvent:
    """``GET /v1/jobs/{id}/events``: ``progress`` events, one ``done`` event, or ``error``."""
    if event == "error":
        raise from_code_name(str(data.get("code", "internal")), str(data.get("message", "")))
    if event == "done":
        job = job_from_json(data)
        return ProgressEvent(
            progress=job.progress, job_id=job.id, state=job.state, job=job, done=True
        )
    previews = [base64.b64decode(p["b64_png"]) for p in data.get("previews", [])]
    return ProgressEvent(
        progress=Progress(**(data.get("progress") or {})),
        preview_png_bytes=previews,
        job_id=data.get("id"),
        state=data.get("state"),
    )


def job_event_from_proto(msg: generation_pb2.WatchJobResponse) -> ProgressEvent:
    done = msg.job.state in TERMINAL_STATES
    return ProgressEvent(
        progress=progress_from_proto(msg.job.progress),
        preview_png_bytes=[p.png for p in msg.previews],
        job_id=msg.job.id,
        state=msg.job.state,
        job=job_from_proto(msg.job) if done else None,
        done=done,
    )


def generate_event_from_proto(msg: generation_pb2.GenerateStreamResponse) -> ProgressEvent:
    done = msg.HasField("result")
    return ProgressEvent(
        progress=progress_from_proto(msg.progress),
        preview_png_bytes=[p.png for p in msg.previews],
        result=images_from_proto(msg.result) if done else None,
        done=done,
    )


def embeddings_from_json(body: dict) -> Embeddings:
    return Embeddings(vectors=body["embeddings"], dim=body["dim"])


def embeddings_from_proto(
    msg: prior_pb2.EmbedTextResponse | prior_pb2.EmbedImageResponse,
) -> Embeddings:
    vectors = [list(e.values) for e in msg.embeddings]
    return Embeddings(vectors=vectors, dim=msg.embeddings[0].dim if msg.embeddings else 0)
