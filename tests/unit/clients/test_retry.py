"""Retries against real servers: 429 with Retry-After then 200, 503 backoff, giving up after
the bounded attempts, never retrying what must not be retried, and deadlines."""

from __future__ import annotations

import random
import socket
import time

import grpc
import pytest

from tessera_client import (
    AsyncClient,
    Client,
    InvalidRequest,
    RateLimited,
    RetryPolicy,
    Unavailable,
)
from tessera_client.errors import ServerError

from .conftest import MODELS_JSON, MODELS_PB, Abort, Reply

RATE_LIMITED = Reply(
    429,
    {"error": {"code": "resource_exhausted", "message": "queue is full", "type": "request_error"}},
    {"Retry-After": "1"},
)


def test_429_with_retry_after_then_200_sync(http_server):
    http_server.replies = [RATE_LIMITED, Reply(200, MODELS_JSON)]
    with Client(http_server.url) as client:
        start = time.monotonic()
        models = client.models()
        elapsed = time.monotonic() - start
    assert [m.id for m in models] == ["tiny"] and models[0].routes == ["ar", "unclip"]
    assert len(http_server.seen) == 2
    gap = http_server.seen[1].at - http_server.seen[0].at
    assert 1.0 <= gap < 1.5, gap  # waited what the server asked, plus a little jitter
    assert elapsed >= 1.0


async def test_429_with_retry_after_then_200_async(http_server):
    http_server.replies = [RATE_LIMITED, Reply(200, MODELS_JSON)]
    async with AsyncClient(http_server.url) as client:
        models = await client.models()
    assert models[0].image_size == 16
    assert len(http_server.seen) == 2
    assert http_server.seen[1].at - http_server.seen[0].at >= 1.0


def test_503_without_retry_after_backs_off_exponentially(http_server):
    http_server.replies = [Reply(503, "overloaded")] * 3 + [Reply(200, MODELS_JSON)]
    policy = RetryPolicy(max_retries=3, base_backoff=0.05, max_backoff=0.2)
    with Client(http_server.url, retry=policy) as client:
        assert client.models()[0].id == "tiny"
    assert len(http_server.seen) == 4


def test_gives_up_after_bounded_attempts_with_the_servers_message(http_server):
    http_server.replies = [RATE_LIMITED]
    policy = RetryPolicy(max_retries=1)
    with Client(http_server.url, retry=policy) as client, pytest.raises(RateLimited) as info:
        client.models()
    assert len(http_server.seen) == 2  # one try + one retry
    err = info.value
    assert err.status == 429 and err.code == "resource_exhausted"
    assert err.message == "queue is full" and err.retry_after == 1.0
    assert "queue is full" in str(err) and "429" in str(err)


def test_client_errors_are_not_retried(http_server):
    http_server.replies = [
        Reply(400, {"error": {"code": "invalid_argument", "message": "n: must be <= 4"}})
    ]
    with Client(http_server.url) as client, pytest.raises(InvalidRequest, match="n: must be <= 4"):
        client.generate("a cat", n=9)
    assert len(http_server.seen) == 1
    http_server.replies = [Reply(500, {"error": {"code": "internal", "message": "internal error"}})]
    with Client(http_server.url) as client, pytest.raises(ServerError):
        client.models()
    assert len(http_server.seen) == 2


def test_retry_after_beyond_the_deadline_fails_fast(http_server):
    http_server.replies = [Reply(429, {"error": {"message": "busy"}}, {"Retry-After": "30"})]
    with Client(http_server.url, timeout=2) as client:
        start = time.monotonic()
        with pytest.raises(RateLimited):
            client.models()
    assert time.monotonic() - start < 1.0
    assert len(http_server.seen) == 1


def test_submit_retries_reuse_one_idempotency_key(http_server):
    job = {"id": "j1", "state": "queued", "priority": "high", "attempts": 0, "created_at": 1.0}
    http_server.replies = [RATE_LIMITED, Reply(202, job)]
    with Client(http_server.url) as client:
        got = client.submit("a cat", priority="high", seed=3)
    assert got.id == "j1" and got.state == "queued"
    keys = {s.headers["idempotency-key"] for s in http_server.seen}
    assert len(http_server.seen) == 2 and len(keys) == 1


def test_connection_refused_is_unavailable_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    policy = RetryPolicy(max_retries=2, base_backoff=0.01)
    with Client(f"http://127.0.0.1:{port}", retry=policy) as client:
        with pytest.raises(Unavailable, match="cannot connect"):
            client.models()


def test_api_key_is_sent_as_bearer(http_server, monkeypatch):
    http_server.replies = [Reply(200, MODELS_JSON)]
    monkeypatch.setenv("TESSERA_API_KEY", "from-env")
    with Client(http_server.url) as client:
        client.models()
    with Client(http_server.url, api_key="explicit") as client:
        client.models()
    auth = [s.headers["authorization"] for s in http_server.seen]
    assert auth == ["Bearer from-env", "Bearer explicit"]


def test_base_url_from_environment(http_server, monkeypatch):
    http_server.replies = [Reply(200, MODELS_JSON)]
    monkeypatch.setenv("TESSERA_URL", http_server.url)
    with Client() as client:
        assert client.models()[0].id == "tiny"


# ---------------------------------------------------------------- gRPC
def test_grpc_resource_exhausted_then_ok_honours_retry_after(grpc_server):
    servicer, target = grpc_server
    servicer.script["ListModels"] = [
        Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue is full", retry_after="1"),
        MODELS_PB,
    ]
    with Client(transport="grpc", grpc_target=target, api_key="k") as client:
        models = client.models()
    assert models[0].routes == ["ar", "unclip"]
    (_, meta0, t0), (_, meta1, t1) = servicer.calls
    assert t1 - t0 >= 1.0
    assert meta0["authorization"] == "Bearer k"


async def test_grpc_unavailable_then_ok_async(grpc_server):
    servicer, target = grpc_server
    servicer.script["ListModels"] = [Abort(grpc.StatusCode.UNAVAILABLE, "warming up"), MODELS_PB]
    policy = RetryPolicy(base_backoff=0.05)
    async with AsyncClient(transport="grpc", grpc_target=target, retry=policy) as client:
        assert (await client.models())[0].id == "tiny"
    assert len(servicer.calls) == 2


def test_grpc_gives_up_with_the_status_and_message(grpc_server):
    servicer, target = grpc_server
    servicer.script["ListModels"] = [Abort(grpc.StatusCode.UNAVAILABLE, "no replicas")]
    policy = RetryPolicy(max_retries=2, base_backoff=0.01)
    with Client(transport="grpc", grpc_target=target, retry=policy) as client:
        with pytest.raises(Unavailable) as info:
            client.models()
    assert len(servicer.calls) == 3
    assert info.value.grpc_code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message == "no replicas" and info.value.status == 503


# ---------------------------------------------------------------- the policy itself
def test_full_jitter_backoff_stays_within_its_exponential_cap():
    policy = RetryPolicy(max_retries=10, base_backoff=0.5, max_backoff=4.0)
    rng = random.Random(0)
    err = Unavailable("x")
    for retry in range(6):
        cap = min(4.0, 0.5 * 2**retry)
        waits = [policy.next_wait(err, retry, None, rng) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > 0.7 * cap  # jitter spreads over the whole range
    assert policy.next_wait(err, 10, None, rng) is None  # out of retries
    assert policy.next_wait(InvalidRequest("x"), 0, None, rng) is None  # not retryable
    limited = RateLimited("x", retry_after=2.0)
    assert 2.0 <= policy.next_wait(limited, 0, None, rng) <= 2.25
    assert policy.next_wait(limited, 0, time.monotonic() + 1.0, rng) is None  # past deadline
