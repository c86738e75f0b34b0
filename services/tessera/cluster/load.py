"""Closed-loop HTTP load for a cluster under test: ``concurrency`` threads, each sending the
next synchronous generation as soon as the last one answered, plus async jobs; every outcome
is recorded with its time. Used by the cluster integration test and benchmarks/cluster_ramp.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

REQUEST = {"prompt": "grinning face", "route": "ar", "n": 1, "candidates": 1}
FINAL_JOB_STATES = ("succeeded", "failed", "cancelled", "expired")


@dataclass
class Outcome:
    start: float
    end: float
    status: int  # HTTP status; 0 when the connection itself failed
    code: str = ""  # the error body's code ("unavailable", ...), "" on success

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Load:
    """Synchronous generations at a fixed concurrency (changeable while running)."""

    base_url: str
    concurrency: int = 2
    body: dict[str, Any] = field(default_factory=lambda: dict(REQUEST))
    timeout_s: float = 280.0
    pause_s: float = 0.0  # between one thread's requests
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _loop(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                if index >= self.concurrency:  # ramped down: this thread idles
                    time.sleep(0.2)
                    continue
                start = time.time()
                try:
                    reply = client.post("/v1/images/generations", json=self.body)
                    code = "" if reply.status_code == 200 else _error_code(reply)
                    outcome = Outcome(start, time.time(), reply.status_code, code)
                except httpx.HTTPError as e:
                    outcome = Outcome(start, time.time(), 0, type(e).__name__)
                with self._lock:
                    self.outcomes.append(outcome)
                if self.pause_s:
                    self._stop.wait(self.pause_s)

    def start(self, max_concurrency: int | None = None) -> Load:
        """Start the threads (``max_concurrency`` of them, for a later ramp up)."""
        for index in range(max(max_concurrency or 0, self.concurrency)):
            thread = threading.Thread(target=self._loop, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout_s: float = 300.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def between(self, start: float, end: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if start <= o.start < end]


def _error_code(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["code"])
    except Exception:  # noqa: BLE001 - not our error body
        return f"http_{reply.status_code}"


def submit_jobs(base_url: str, count: int, body: dict[str, Any] | None = None) -> list[str]:
    """Submit ``count`` async jobs; returns their ids."""
    ids = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for i in range(count):
            reply = client.post("/v1/jobs", json={**(body or REQUEST), "seed": i})
            reply.raise_for_status()
            ids.append(reply.json()["id"])
    return ids


def job_records(base_url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each job's public record now (``state``, ``attempts``, ...)."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        return {job: client.get(f"/v1/jobs/{job}").json() for job in ids}


def job_states(base_url: str, ids: list[str]) -> dict[str, str]:
    """Each job's state now."""
    return {job: record["state"] for job, record in job_records(base_url, ids).items()}
