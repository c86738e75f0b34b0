"""gRPC transports (grpcio sync and ``grpc.aio``) over the generated ``tessera_client.v1``
stubs. Every contract is served on the gateway's one port, so one channel holds all stubs."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import grpc

from tessera_client._retry import RetryPolicy, deadline_after, remaining, run_async, run_sync
from tessera_client._wire import Call, GRPCRequest, StreamCall
from tessera_client.errors import TesseraAPIError, from_grpc
from tessera_client.types import ProgressEvent
from tessera_client.v1 import generation_pb2_grpc, prior_pb2_grpc, tokenizer_pb2_grpc

T = TypeVar("T")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # four 1024x1024 PNGs fit with room to spare
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
STUBS = {  # by gRPC service name (``GRPCRequest.service``)
    "GenerationService": generation_pb2_grpc.GenerationServiceStub,
    "TokenizerService": tokenizer_pb2_grpc.TokenizerServiceStub,
    "DetokenizerService": tokenizer_pb2_grpc.DetokenizerServiceStub,
    "PriorService": prior_pb2_grpc.PriorServiceStub,
}


class _Base:
    def __init__(
        self,
        target: str,
        *,
        api_key: str | None,
        credentials: grpc.ChannelCredentials | None,
        policy: RetryPolicy,
        rng: random.Random,
    ) -> None:
        self.target = target
        self.credentials = credentials
        self.policy = policy
        self.rng = rng
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._stubs: dict[str, Any] | None = None

    def _method(self, req: GRPCRequest) -> Any:
        if self._stubs is None:
            channel = self._channel()
            self._stubs = {name: stub(channel) for name, stub in STUBS.items()}
        return getattr(self._stubs[req.service], req.method)


class _EventStream:
    """One server stream's state across reopenings, the same for both transports: its
    deadline, and whether a failure may be retried (only before the first event)."""

    def __init__(self, call: StreamCall, timeout: float | None, transport: _Base) -> None:
        self.call = call
        self.deadline = deadline_after(timeout)
        self.transport = transport
        self.method = transport._method(call.grpc)
        self.retry = 0
        self.received = False

    def open(self) -> Any:
        self.received = False
        left = remaining(self.deadline)
        return self.method(self.call.grpc.message, timeout=left, metadata=self.transport.metadata)

    def event(self, msg: Any) -> ProgressEvent:
        self.received = True
        return self.call.parse_grpc(msg)

    def failed(self, e: grpc.RpcError) -> float:
        """The wait before reopening, or the error raised when it may not be retried."""
        error: TesseraAPIError = from_grpc(e)
        policy, rng = self.transport.policy, self.transport.rng
        wait = None if self.received else policy.next_wait(error, self.retry, self.deadline, rng)
        if wait is None:
            raise error from None
        self.retry += 1
        return wait


class GRPCTransport(_Base):
    def _channel(self) -> grpc.Channel:
        if self.credentials is not None:
            self.channel = grpc.secure_channel(self.target, self.credentials, CHANNEL_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(self.target, CHANNEL_OPTIONS)
        return self.channel

    def close(self) -> None:
        if self._stubs is not None:
            self.channel.close()
            self._stubs = None

    def unary(self, call: Call[T], timeout: float | None) -> T:
        req = call.grpc
        method = self._method(req)

        def attempt(left: float | None) -> T:
            try:
                msg = method(req.message, timeout=left, metadata=self.metadata)
            except grpc.RpcError as e:
                raise from_grpc(e) from None
            return call.parse_grpc(msg)

        return run_sync(attempt, self.policy, deadline_after(timeout), self.rng)

    def stream(self, call: StreamCall, timeout: float | None) -> Iterator[ProgressEvent]:
        """Events until the last one; a failure before the first event is retried."""
        stream = _EventStream(call, timeout, self)
        while True:
            responses = stream.open()
            try:
                for msg in responses:
                    event = stream.event(msg)
                    yield event
                    if event.done:
                        return
                return
            except grpc.RpcError as e:
                wait = stream.failed(e)
            finally:
                responses.cancel()
            time.sleep(wait)


class AsyncGRPCTransport(_Base):
    def _channel(self) -> grpc.aio.Channel:
        # Created on first use, inside the running event loop the channel then belongs to.
        if self.credentials is not None:
            self.channel = grpc.aio.secure_channel(self.target, self.credentials, CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(self.target, CHANNEL_OPTIONS)
        return self.channel

    async def close(self) -> None:
        if self._stubs is not None:
            await self.channel.close()
            self._stubs = None

    async def unary(self, call: Call[T], timeout: float | None) -> T:
        req = call.grpc
        method = self._method(req)

        async def attempt(left: float | None) -> T:
            try:
                msg = await method(req.message, timeout=left, metadata=self.metadata)
            except grpc.RpcError as e:
                raise from_grpc(e) from None
            return call.parse_grpc(msg)

        return await run_async(attempt, self.policy, deadline_after(timeout), self.rng)

    async def stream(self, call: StreamCall, timeout: float | None) -> AsyncIterator[ProgressEvent]:
        stream = _EventStream(call, timeout, self)
        while True:
            responses = stream.open()
            try:
                async for msg in responses:
                    event = stream.event(msg)
                    yield event
                    if event.done:
                        return
                return
            except grpc.RpcError as e:
                wait = stream.failed(e)
            finally:
                responses.cancel()
            await asyncio.sleep(wait)
