"""The API key: the shared check, and the public gRPC edge on a real grpc.aio server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from tessera.common import metrics
from tessera.common.auth import check_api_key
from tessera.common.errors import InvalidArgument, Unauthenticated
from tessera.common.serving import grpc_edge, returns
from tessera.common.settings import get_settings
from tessera.v1 import common_pb2, generation_pb2, generation_pb2_grpc


@pytest.fixture
def api_key(monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("TESSERA_API_KEY", "s3cret-key")
    get_settings.cache_clear()
    yield "s3cret-key"
    monkeypatch.delenv("TESSERA_API_KEY")
    get_settings.cache_clear()


def test_no_key_configured_lets_every_call_through():
    get_settings.cache_clear()
    assert get_settings().api_key is None
    check_api_key(None)
    check_api_key("Bearer anything")


def test_configured_key_must_be_sent_as_a_bearer_token(api_key):
    check_api_key(f"Bearer {api_key}")
    check_api_key(f"bearer  {api_key} ")
    for sent in (None, "", api_key + "x", f"Basic {api_key}", "Bearer "):
        with pytest.raises(Unauthenticated, match="API key"):
            check_api_key(sent)


class Generation(generation_pb2_grpc.GenerationServiceServicer):
    """Two methods behind the edge: one unary, one stream, and one that fails validation."""

    @grpc_edge
    @returns(generation_pb2.ListModelsResponse)
    async def ListModels(self, request: Any, grpc_context: Any) -> Any:
        return generation_pb2.ListModelsResponse(
            models=[generation_pb2.ModelInfo(id="m", routes=["ar"])]
        )

    @grpc_edge
    async def GenerateStream(self, request: Any, grpc_context: Any) -> AsyncIterator[Any]:
        if not request.request.prompt:
            raise InvalidArgument("prompt must not be empty")
        yield generation_pb2.GenerateStreamResponse(
            progress=common_pb2.Progress(step=1, total_steps=1)
        )


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[generation_pb2_grpc.GenerationServiceStub]:
    server = grpc.aio.server()
    generation_pb2_grpc.add_GenerationServiceServicer_to_server(Generation(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield generation_pb2_grpc.GenerationServiceStub(channel)
    await server.stop(None)


async def stream_status(stub: Any, metadata: tuple = ()) -> grpc.StatusCode:
    try:
        async for _ in stub.GenerateStream(
            generation_pb2.GenerateStreamRequest(
                request=generation_pb2.GenerateRequest(prompt="x")
            ),
            metadata=metadata,
        ):
            pass
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def test_grpc_edge_without_a_key_configured_is_open():
    get_settings.cache_clear()
    async with serving() as stub:
        reply = await stub.ListModels(generation_pb2.ListModelsRequest())
        assert reply.models[0].id == "m"
        assert await stream_status(stub) == grpc.StatusCode.OK


async def test_grpc_edge_refuses_calls_without_the_key(api_key):
    good = (("authorization", f"Bearer {api_key}"),)
    metrics.reset("local")
    async with serving() as stub:
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ListModels(generation_pb2.ListModelsRequest(), metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "API key" in err.value.details()
            assert await stream_status(stub, metadata) == grpc.StatusCode.UNAUTHENTICATED
        assert (await stub.ListModels(generation_pb2.ListModelsRequest(), metadata=good)).models
        assert await stream_status(stub, good) == grpc.StatusCode.OK
    refused = metrics.value(metrics.REQUESTS, route="other", status="unauthenticated")
    assert refused == 4  # two unary calls, two streams


async def test_an_authorized_bad_request_is_still_invalid_argument(api_key):
    good = (("authorization", f"Bearer {api_key}"),)
    async with serving() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            empty = generation_pb2.GenerateStreamRequest(request=generation_pb2.GenerateRequest())
            async for _ in stub.GenerateStream(empty, metadata=good):
                pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt" in err.value.details()
