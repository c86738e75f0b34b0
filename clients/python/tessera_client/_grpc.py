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
STUBS = {
    "Generation": generation_pb2_grpc.GenerationStub,
    "Tokenizer": tokenizer_pb2_grpc.TokenizerStub,
    "Detokenizer": tokenizer_pb2_grpc.DetokenizerStub,
    "Prior": prior_pb2_grpc.PriorStub,
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
        req, deadline, retry = call.grpc, deadline_after(timeout), 0
        method = self._method(req)
        while True:
            responses = method(req.message, timeout=remaining(deadline), metadata=self.metadata)
            received = False
            try:
                for msg in responses:
                    received = True
                    event = call.parse_grpc(msg)
                    yield event
                    if event.done:
                        return
                return
            except grpc.RpcError as e:
                error: TesseraAPIError = from_grpc(e)
                wait = None if received else self.policy.next_wait(error, retry, deadline, self.rng)
                if wait is None:
                    raise error from None
            finally:
                responses.cancel()
            time.sleep(wait)
            retry += 1


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
        req, deadline, retry = call.grpc, deadline_after(timeout), 0
        method = self._method(req)
        while True:
            responses = method(req.message, timeout=remaining(deadline), metadata=self.metadata)
            received = False
            try:
                async for msg in responses:
                    received = True
                    event = call.parse_grpc(msg)
                    yield event
                    if event.done:
                        return
                return
            except grpc.RpcError as e:
                error: TesseraAPIError = from_grpc(e)
                wait = None if received else self.policy.next_wait(error, retry, deadline, self.rng)
                if wait is None:
                    raise error from None
            finally:
                responses.cancel()
            await asyncio.sleep(wait)
            retry += 1
