"""Value types of the job queue: its configuration, the job record as stored in Redis, the
updates watchers receive, queue depth, and what a worker is handed. No Redis calls here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from tessera.routes.edit_requests import JobRequest, parse_job_request
from tessera.v1 import common_pb2, generation_pb2

Priority = Literal["normal", "high"]
PRIORITIES: tuple[str, ...] = ("high", "normal")  # read order
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_IDEMPOTENCY_KEY = 128


@dataclass(frozen=True)
class QueueConfig:
    """Knobs of one queue; every process using the queue must agree on them."""

    prefix: str = "tessera:jobs"
    group: str = "workers"
    max_depth: int = 1000  # queued + running jobs; beyond: ResourceExhausted (429)
    max_attempts: int = 3  # attempts (incl. ones whose worker died) before dead-letter
    visibility_timeout_s: float = 30.0  # a message idle this long is reclaimed
    result_ttl_s: int = 3600
    record_ttl_s: int = 7 * 86400  # job records and event streams of finished jobs
    idempotency_ttl_s: int = 86400
    events_maxlen: int = 200  # per-job event stream length
    block_s: float = 2.0  # longest blocking read (must stay under the socket timeout)
    # One attempt running longer than this fails (and is retried while attempts remain): the
    # heartbeat keeps a stuck job's lease alive, so without a limit it would hold a slot for good.
    run_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_depth < 1 or self.max_attempts < 1:
            raise ValueError("max_depth and max_attempts must be >= 1")
        if self.visibility_timeout_s <= 0 or self.block_s <= 0 or self.run_timeout_s <= 0:
            raise ValueError("visibility_timeout_s, block_s and run_timeout_s must be > 0")
        if self.result_ttl_s > self.record_ttl_s:
            raise ValueError("result_ttl_s must not exceed record_ttl_s")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> QueueConfig:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown queue config keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class JobRecord:
    """One job as stored; ``to_proto()`` gives the public ``tessera.v1.Job``."""

    id: str
    state: str
    priority: str
    attempts: int
    created_at: float
    request: JobRequest  # a generation, or an edit with its images (routes/edit_requests.py)
    started_at: float | None = None
    finished_at: float | None = None
    result_expires_at: float | None = None
    error: str | None = None
    step: int = 0
    total_steps: int = 0
    stage: str = ""
    cancel_requested: bool = False
    commits: int = 0
    result: generation_pb2.GenerateResponse | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def result_expired(self) -> bool:
        return self.state == "succeeded" and self.result is None

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> JobRecord:
        h = {k.decode(): v.decode() for k, v in raw.items()}

        def num(name: str) -> float | None:
            value = h.get(name)
            return float(value) if value not in (None, "") else None

        return cls(
            id=h["id"],
            state=h["state"],
            priority=h.get("priority", "normal"),
            attempts=int(h.get("attempts") or 0),
            created_at=float(h["created_at"]),
            request=parse_job_request(h["request"]),
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            result_expires_at=num("result_expires_at"),
            error=h.get("error") or None,
            step=int(h.get("step") or 0),
            total_steps=int(h.get("total") or 0),
            stage=h.get("stage", ""),
            cancel_requested=h.get("cancel") == "1",
            commits=int(h.get("commits") or 0),
        )

    def to_proto(self, *, include_result: bool = True) -> generation_pb2.Job:
        job = generation_pb2.Job(
            id=self.id,
            state=self.state,
            priority=self.priority,
            attempts=self.attempts,
            created_at=self.created_at,
            started_at=self.started_at or 0.0,
            finished_at=self.finished_at or 0.0,
            result_expires_at=self.result_expires_at or 0.0,
            error=self.error or "",
            progress=common_pb2.Progress(
                step=self.step, total_steps=self.total_steps, stage=self.stage
            ),
        )
        if include_result and self.result is not None:
            job.result.CopyFrom(self.result)
        return job


@dataclass
class JobUpdate:
    """One item of ``JobQueue.watch``: the job as now known, previews, and whether it ended."""

    event_id: str
    job: JobRecord
    previews: list[common_pb2.Image] = field(default_factory=list)
    final: bool = False
    keepalive: bool = False  # nothing happened for block_s (SSE sends a comment)

    def to_proto(self) -> generation_pb2.WatchJobResponse:
        return generation_pb2.WatchJobResponse(job=self.job.to_proto(), previews=self.previews)


@dataclass(frozen=True)
class QueueDepth:
    """Unfinished jobs, for backpressure, autoscaling and metrics."""

    queued: int  # waiting for a worker (incl. read by one but not yet started)
    running: int  # delivered and not yet acknowledged
    by_priority: dict[str, int]
    workers: int  # workers that heartbeated within 3 visibility timeouts
    slots: int  # their total concurrency

    @property
    def total(self) -> int:
        return self.queued + self.running


@dataclass(frozen=True)
class Delivery:
    """A stream message handed to this worker."""

    stream: str
    msg_id: str
    job_id: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.stream, self.msg_id)


@dataclass(frozen=True)
class StartResult:
    run: bool
    reason: str = ""
    request_json: str = ""
    attempts: int = 0


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
