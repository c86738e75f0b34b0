"""What ``Client`` and ``AsyncClient`` share: constructor arguments and environment, resolved
once, and the end of a job followed as a generation."""

from __future__ import annotations

import os
import random
from typing import Literal

import grpc

from tessera_client._retry import RetryPolicy
from tessera_client.errors import JobFailed
from tessera_client.types import Job, ProgressEvent

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_GRPC_TARGET = "127.0.0.1:9000"
DEFAULT_TIMEOUT = 60.0
Transport = Literal["http", "grpc"]


def final_result(event: ProgressEvent, fetched: Job | None = None) -> ProgressEvent:
    """The last event of a job run as a generation: its images, or JobFailed."""
    job = fetched or event.job
    if job is None or job.state != "succeeded" or job.result is None:
        state = job.state if job else "unknown"
        reason = (job.error if job else None) or f"job ended {state}"
        raise JobFailed(f"job {event.job_id} {state}: {reason}", job=job, code=state)
    return event.model_copy(update={"result": job.result})


class Settings:
    """Constructor arguments and environment, resolved once for both clients."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        transport: Transport = "http",
        grpc_target: str | None = None,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        grpc_credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if transport not in ("http", "grpc"):
            raise ValueError(f"transport must be 'http' or 'grpc', not {transport!r}")
        self.transport: Transport = transport
        self.base_url = base_url or os.environ.get("TESSERA_URL") or DEFAULT_URL
        self.grpc_target = (
            grpc_target or os.environ.get("TESSERA_GRPC_TARGET") or DEFAULT_GRPC_TARGET
        )
        self.timeout = timeout
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        key = api_key if api_key is not None else os.environ.get("TESSERA_API_KEY") or None
        common = {"api_key": key, "policy": self.retry, "rng": random.Random()}
        if transport == "http":
            self._transport = self._http_transport(self.base_url, read_timeout=timeout, **common)
        else:
            self._transport = self._grpc_transport(
                self.grpc_target, credentials=grpc_credentials, **common
            )

    def _t(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def __repr__(self) -> str:
        where = self.base_url if self.transport == "http" else self.grpc_target
        return f"{type(self).__name__}({self.transport}: {where})"
