"""Small real servers the SDK talks to: a scripted HTTP server (stdlib ``http.server`` in a
thread) and a scripted gRPC server (grpcio) whose answers each test sets."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from PIL import Image

from tessera_client.v1 import generation_pb2, generation_pb2_grpc


def png(side: int = 8, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict/list → JSON; bytes/str → as is
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class ScriptedHTTP:
    """Answers requests with ``replies`` in order (the last one repeats); records them."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[Seen] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                script.seen.append(
                    Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                         body, time.monotonic())
                )  # fmt: skip
                reply = script.replies.pop(0) if len(script.replies) > 1 else script.replies[0]
                data = reply.body
                if isinstance(data, dict | list):
                    data, ctype = json.dumps(data).encode(), "application/json"
                else:
                    data = data.encode() if isinstance(data, str) else (data or b"")
                    ctype = reply.headers.get("content-type", "text/plain")
                self.send_response(reply.status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                for k, v in reply.headers.items():
                    if k != "content-type":
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server() -> Iterator[ScriptedHTTP]:
    server = ScriptedHTTP()
    yield server
    server.close()


@dataclass
class Abort:
    code: grpc.StatusCode
    details: str
    retry_after: str | None = None


class ScriptedGeneration(generation_pb2_grpc.GenerationServiceServicer):
    """The GenerationService; each method answers from ``script[name]`` (list of messages or
    Abort, the last one repeats) and records the metadata it saw."""

    def __init__(self) -> None:
        self.script: dict[str, list] = {}
        self.calls: list[tuple[str, dict, float]] = []

    def _next(self, name: str, context: grpc.ServicerContext) -> object:
        self.calls.append((name, dict(context.invocation_metadata()), time.monotonic()))
        replies = self.script[name]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, Abort):
            if reply.retry_after:
                context.set_trailing_metadata((("retry-after", reply.retry_after),))
            context.abort(reply.code, reply.details)
        return reply

    def ListModels(self, request, context):  # noqa: N802
        return self._next("ListModels", context)

    def Generate(self, request, context):  # noqa: N802
        self.calls.append(("Generate.request", {"request": request}, time.monotonic()))
        return self._next("Generate", context)

    def GetJob(self, request, context):  # noqa: N802
        return self._next("GetJob", context)

    def WatchJob(self, request, context):  # noqa: N802
        yield from self._next("WatchJob", context)

    def GenerateStream(self, request, context):  # noqa: N802
        yield from self._next("GenerateStream", context)

    def Edit(self, request, context):  # noqa: N802
        self.calls.append(("Edit.request", {"request": request}, time.monotonic()))
        return self._next("Edit", context)

    def Caption(self, request, context):  # noqa: N802
        self.calls.append(("Caption.request", {"request": request}, time.monotonic()))
        return self._next("Caption", context)


@pytest.fixture
def grpc_server() -> Iterator[tuple[ScriptedGeneration, str]]:
    servicer = ScriptedGeneration()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    generation_pb2_grpc.add_GenerationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


MODELS_JSON = {
    "object": "list",
    "data": [{"id": "tiny", "object": "model", "routes": ["ar", "unclip"], "image_size": 16}],
}
MODELS_PB = generation_pb2.ListModelsResponse(
    models=[generation_pb2.ModelInfo(id="tiny", routes=["ar", "unclip"], image_size=16)]
)
