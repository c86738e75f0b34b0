"""Error mapping: the server's own error bodies and status codes (built with the server's
error table, so a change there shows up here) become the SDK's typed exceptions."""

from __future__ import annotations

import json

import grpc
import pytest

from tessera.common import errors as server_errors
from tessera.common.http import error_response
from tessera_client import (
    AsyncClient,
    AuthError,
    Client,
    ConflictError,
    InvalidRequest,
    NotFoundError,
    RateLimited,
    ServerError,
    TesseraAPIError,
    Unavailable,
)
from tessera_client.errors import Cancelled, from_code_name, from_http

from .conftest import Abort, Reply

CASES = [
    (server_errors.InvalidArgument("prompt: too long"), InvalidRequest),
    (server_errors.Unauthenticated("missing or wrong API key"), AuthError),
    (server_errors.NotFound("unknown job abc"), NotFoundError),
    (server_errors.AlreadyExists("idempotency key reused"), ConflictError),
    (server_errors.ResourceExhausted("queue is full", retry_after_s=2.4), RateLimited),
    (server_errors.Cancelled("job cancelled"), Cancelled),
    (server_errors.Unavailable("redis is down"), Unavailable),
    (RuntimeError("a bug"), ServerError),
]


@pytest.mark.parametrize(("server_error", "expected"), CASES, ids=lambda c: type(c).__name__)
def test_http_error_bodies_map_to_typed_exceptions(server_error, expected):
    response = error_response(server_error)  # the gateway's own renderer
    err = from_http(response.status_code, response.body, response.headers)
    assert type(err) is expected
    assert err.status == response.status_code
    assert err.message == server_errors.public_message(server_error)
    assert err.code == server_errors.error_code_name(server_error)
    if isinstance(server_error, server_errors.ResourceExhausted):
        assert err.retry_after == 3.0  # whole seconds, rounded up (2.4 s -> 3)


@pytest.mark.parametrize(("server_error", "expected"), CASES, ids=lambda c: type(c).__name__)
def test_sse_error_events_map_like_statuses(server_error, expected):
    err = from_code_name(server_errors.error_code_name(server_error), "msg")
    assert type(err) is expected and err.message == "msg"


def test_non_project_bodies_still_carry_a_message():
    err = from_http(404, json.dumps({"detail": "Not Found"}).encode(), {})
    assert isinstance(err, NotFoundError) and err.message == "Not Found"
    err = from_http(503, b"Service Unavailable: no healthy replicas", {"retry-after": "3"})
    assert isinstance(err, Unavailable) and "no healthy replicas" in err.message
    assert err.retry_after == 3.0 and err.retryable
    err = from_http(418, b"", {})
    assert isinstance(err, ServerError) and err.message == "HTTP 418"
    assert all(issubclass(cls, TesseraAPIError) for _, cls in CASES)


def test_http_errors_raised_by_calls(http_server):
    http_server.replies = [
        Reply(404, {"error": {"code": "not_found", "message": "no job nope", "type": "x"}})
    ]
    with Client(http_server.url) as client, pytest.raises(NotFoundError) as info:
        client.job("nope")
    assert info.value.message == "no job nope" and info.value.status == 404
    assert http_server.seen[0].method == "GET" and http_server.seen[0].path == "/v1/jobs/nope"
    http_server.replies = [Reply(401, {"error": {"code": "unauthenticated", "message": "no key"}})]
    with Client(http_server.url) as client, pytest.raises(AuthError, match="no key"):
        client.cancel("a/b")
    assert http_server.seen[1].method == "DELETE" and http_server.seen[1].path == "/v1/jobs/a%2Fb"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequest),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.UNAUTHENTICATED, AuthError),
        (grpc.StatusCode.ALREADY_EXISTS, ConflictError),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNIMPLEMENTED, NotFoundError),
    ],
)
async def test_grpc_status_codes_map_to_typed_exceptions(grpc_server, code, expected):
    servicer, target = grpc_server
    servicer.script["GetJob"] = [Abort(code, f"details of {code.name}")]
    with Client(transport="grpc", grpc_target=target) as client, pytest.raises(expected) as info:
        client.job("abc")
    assert info.value.grpc_code == code and info.value.message == f"details of {code.name}"
    async with AsyncClient(transport="grpc", grpc_target=target) as client:
        with pytest.raises(expected):
            await client.job("abc")
    assert len(servicer.calls) == 2  # none of these is retried


def test_empty_job_id_is_rejected_before_sending():
    with Client("http://127.0.0.1:9") as client, pytest.raises(InvalidRequest):
        client.job("")


def test_unknown_parameters_fail_loudly():
    with Client("http://127.0.0.1:9") as client:
        with pytest.raises(TypeError, match="colour"):
            client.generate("a cat", colour="red")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="route"):
            client.variations(b"png", route="ar")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="not both"):
            client.embed(["a"], images=[b"x"])
    with pytest.raises(ValueError, match="transport"):
        Client(transport="carrier-pigeon")  # type: ignore[arg-type]
