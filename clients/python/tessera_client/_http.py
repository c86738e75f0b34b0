"""HTTP transports (httpx, sync and async): unary JSON calls with retries, and Server-Sent
Events streams that resume with ``Last-Event-ID`` when the connection drops."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import httpx

from tessera_client import __version__
from tessera_client._retry import RetryPolicy, deadline_after, remaining, run_async, run_sync
from tessera_client._wire import Call, HTTPRequest, StreamCall, parse_sse_data
from tessera_client.errors import DeadlineExceeded, TesseraAPIError, Unavailable, from_http
from tessera_client.types import ProgressEvent

T = TypeVar("T")


class SSEDecoder:
    """Server-Sent Events line decoder: feed lines, get ``(event, data, id)`` per event."""

    def __init__(self) -> None:
        self._event, self._data, self._id = "message", [], None

    def feed(self, line: str) -> tuple[str, str, str | None] | None:
        if not line:
            if not self._data:
                self._event = "message"
                return None
            out = (self._event, "\n".join(self._data), self._id)
            self._event, self._data, self._id = "message", [], None
            return out
        if line.startswith(":"):
            return None  # a comment: the server's keepalive
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"tessera-client/{__version__}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _transport_error(error: httpx.HTTPError, base_url: str, req: HTTPRequest) -> TesseraAPIError:
    """httpx's exceptions → ours. Only failures where the request surely never reached the
    server, or where repeating it is harmless, are marked retryable."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return Unavailable(f"cannot connect to {base_url}: {error}", code="unavailable")
    if isinstance(error, httpx.TimeoutException):
        return DeadlineExceeded(
            f"{req.method} {req.path} timed out: {error}", code="deadline_exceeded"
        )
    err = Unavailable(f"{req.method} {req.path} failed: {error!r}", code="unavailable")
    err.retryable = req.method in ("GET", "DELETE") or "Idempotency-Key" in req.headers
    return err


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise from_http(response.status_code, response.content, response.headers)


class _EventStream:
    """One SSE stream's state across reconnects, the same for both transports: the deadline,
    the last event id to resume from, and how many times the connection dropped."""

    def __init__(self, call: StreamCall, timeout: float | None, transport: _Base) -> None:
        self.call = call
        self.deadline = deadline_after(timeout)
        self.transport = transport
        self.last_id: str | None = None
        self.drops = 0
        self.decoder = SSEDecoder()

    def connected(self) -> None:
        self.decoder = SSEDecoder()  # a new connection starts a new event

    def feed(self, line: str) -> ProgressEvent | None:
        """The event a line completes, if any."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceeded("stream deadline exceeded", code="deadline_exceeded")
        item = self.decoder.feed(line)
        if item is None:
            return None
        name, data, event_id = item
        self.last_id = event_id or self.last_id
        return self.call.parse_sse(name, parse_sse_data(data))

    def failed(self, error: httpx.TransportError) -> None:
        """A read timed out (raised) or the connection dropped mid-stream (resumed)."""
        if isinstance(error, httpx.TimeoutException):
            raise _transport_error(error, self.transport.base_url, self.call.http) from error

    def ended(self) -> None:
        """The connection ended before the last event: resume from the last event id, unless
        it kept dropping."""
        self.drops += 1
        if self.drops > self.transport.policy.max_retries:
            raise Unavailable(
                "the event stream kept dropping before the job ended", code="unavailable"
            )


class _Base:
    client_class: type = httpx.Client

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        read_timeout: float | None,
        policy: RetryPolicy,
        rng: random.Random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.rng = rng
        # Between two events of a stream the server sends a keepalive well within this.
        self.read_timeout = read_timeout
        self.client = self.client_class(base_url=self.base_url, headers=_headers(api_key))

    def _request_kwargs(self, req: HTTPRequest, left: float | None) -> dict:
        kwargs: dict = {"headers": req.headers, "timeout": left}
        for name in ("json", "files", "data"):
            if getattr(req, name) is not None:
                kwargs[name] = getattr(req, name)
        return kwargs

    def _stream_request(
        self, req: HTTPRequest, last_id: str | None, deadline: float | None
    ) -> httpx.Request:
        left = remaining(deadline)
        read = self.read_timeout if left is None else min(left, self.read_timeout or left)
        headers = {**req.headers, "Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        return self.client.build_request(
            req.method,
            req.path,
            headers=headers,
            timeout=httpx.Timeout(read, connect=min(10.0, read) if read else 10.0),
        )


class HTTPTransport(_Base):
    client_class = httpx.Client

    def close(self) -> None:
        self.client.close()

    def unary(self, call: Call[T], timeout: float | None) -> T:
        req = call.http

        def attempt(left: float | None) -> T:
            try:
                response = self.client.request(
                    req.method, req.path, **self._request_kwargs(req, left)
                )
            except httpx.HTTPError as e:
                raise _transport_error(e, self.base_url, req) from e
            _raise_for_status(response)
            return call.parse_http(response.json())

        return run_sync(attempt, self.policy, deadline_after(timeout), self.rng)

    def _open(self, stream: _EventStream) -> httpx.Response:
        req = stream.call.http

        def attempt(_: float | None) -> httpx.Response:
            request = self._stream_request(req, stream.last_id, stream.deadline)
            try:
                response = self.client.send(request, stream=True)
            except httpx.HTTPError as e:
                raise _transport_error(e, self.base_url, req) from e
            if response.status_code >= 400:
                response.read()
                response.close()
                _raise_for_status(response)
            return response

        return run_sync(attempt, self.policy, stream.deadline, self.rng)

    def stream(self, call: StreamCall, timeout: float | None) -> Iterator[ProgressEvent]:
        stream = _EventStream(call, timeout, self)
        while True:
            response = self._open(stream)
            stream.connected()
            try:
                for line in response.iter_lines():
                    event = stream.feed(line)
                    if event is not None:
                        yield event
                        if event.done:
                            return
            except httpx.TransportError as e:
                stream.failed(e)
            finally:
                response.close()
            stream.ended()


class AsyncHTTPTransport(_Base):
    client_class = httpx.AsyncClient

    async def close(self) -> None:
        await self.client.aclose()

    async def unary(self, call: Call[T], timeout: float | None) -> T:
        req = call.http

        async def attempt(left: float | None) -> T:
            try:
                response = await self.client.request(
                    req.method, req.path, **self._request_kwargs(req, left)
                )
            except httpx.HTTPError as e:
                raise _transport_error(e, self.base_url, req) from e
            _raise_for_status(response)
            return call.parse_http(response.json())

        return await run_async(attempt, self.policy, deadline_after(timeout), self.rng)

    async def _open(self, stream: _EventStream) -> httpx.Response:
        req = stream.call.http

        async def attempt(_: float | None) -> httpx.Response:
            request = self._stream_request(req, stream.last_id, stream.deadline)
            try:
                response = await self.client.send(request, stream=True)
            except httpx.HTTPError as e:
                raise _transport_error(e, self.base_url, req) from e
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                _raise_for_status(response)
            return response

        return await run_async(attempt, self.policy, stream.deadline, self.rng)

    async def stream(self, call: StreamCall, timeout: float | None) -> AsyncIterator[ProgressEvent]:
        stream = _EventStream(call, timeout, self)
        while True:
            response = await self._open(stream)
            stream.connected()
            try:
                async for line in response.aiter_lines():
                    event = stream.feed(line)
                    if event is not None:
                        yield event
                        if event.done:
                            return
            except httpx.TransportError as e:
                stream.failed(e)
            finally:
                await response.aclose()
            stream.ended()
