"""The gRPC fuzzer's driver: hypothesis messages and raw payloads against every public method
(runnable against any stack: ``run_method(channel, method, ...)``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc
from google.protobuf import message_factory
from hypothesis import HealthCheck, Phase, given, settings

from tests.integration.fuzz.protos import Method, messages

DEADLINE_S = 120  # a call that takes longer is a hang
STREAM_CAP = 64  # events read from a stream before it is cancelled
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass
class Tally:
    calls: int = 0
    codes: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)

    def record(self, method: Method, code: grpc.StatusCode, details: str, payload: bytes) -> None:
        self.calls += 1
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        if code in NEVER:
            self.findings.append((method.path, code.name, details[:200], payload[:120]))


def call_raw(channel: grpc.Channel, method: Method, payload: bytes) -> tuple:
    """Send ``payload`` as the request bytes; (code, details, the response messages' bytes)."""
    if method.streaming:
        rpc = channel.unary_stream(method.path)
        stream = rpc(payload, timeout=DEADLINE_S)
        replies = []
        try:
            for reply in stream:
                replies.append(reply)
                if len(replies) >= STREAM_CAP:
                    stream.cancel()
                    return grpc.StatusCode.OK, "capped", replies
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED and len(replies) >= STREAM_CAP:
                return grpc.StatusCode.OK, "capped", replies
            return e.code(), e.details() or "", replies
        return grpc.StatusCode.OK, "", replies
    rpc = channel.unary_unary(method.path)
    try:
        return grpc.StatusCode.OK, "", [rpc(payload, timeout=DEADLINE_S)]
    except grpc.RpcError as e:
        return e.code(), e.details() or "", []


def cleanup(channel: grpc.Channel, method: Method, replies: list) -> None:
    """A fuzzed SubmitJob that got queued is cancelled, so the workers do not run it."""
    if not method.path.endswith("/SubmitJob") or not replies:
        return
    from tessera.v1 import generation_pb2

    job = generation_pb2.SubmitJobResponse.FromString(replies[0]).job
    cancel = channel.unary_unary("/tessera.v1.GenerationService/CancelJob")
    try:
        cancel(generation_pb2.CancelJobRequest(id=job.id).SerializeToString(), timeout=30)
    except grpc.RpcError:
        pass


def fuzz_messages(channel: grpc.Channel, method: Method, examples: int, tally: Tally) -> None:
    """``examples`` hypothesis-generated messages (edge and random values in every field)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: the finding is reported as drawn
        suppress_health_check=list(HealthCheck),
    )
    @given(messages(method.request))
    def one(msg):
        payload = msg.SerializeToString()
        code, details, replies = call_raw(channel, method, payload)
        tally.record(method, code, details, payload)
        cleanup(channel, method, replies)

    one()


def raw_payloads(method: Method) -> list[bytes]:
    """Payloads that are not the method's message: invalid UTF-8 in each string field,
    truncated, a length running past the end, garbage, and one far above the proxy's limit."""
    cls = message_factory.GetMessageClass(method.request)
    out = [b"\xff", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"\x0a\xff\xff\xff\xff\x0f"]
    for f in method.request.fields:
        tag = bytes([(f.number << 3) | 2])
        if f.type == f.TYPE_STRING:
            out.append(tag + b"\x03\xff\xfe\xfd")  # invalid UTF-8
        if f.type in (f.TYPE_STRING, f.TYPE_BYTES, f.TYPE_MESSAGE):
            out.append(tag + b"\x10" + b"ab")  # says 16 bytes, carries 2
    full = _example(cls)
    if len(full) > 1:
        out += [full[:-1], full[: len(full) // 2]]
    out.append(b"\x0a" + b"\xff\xff\xff\x03" + b"x" * (8 * 1024 * 1024))  # oversize
    return out


def _example(cls: type) -> bytes:
    msg = cls()
    for f in cls.DESCRIPTOR.fields:
        if f.type == f.TYPE_STRING and not f.is_repeated:
            setattr(msg, f.name, "a blue square")
        elif f.type == f.TYPE_STRING:
            getattr(msg, f.name).append("a blue square")
    return msg.SerializeToString()


def fuzz_raw(channel: grpc.Channel, method: Method, tally: Tally) -> None:
    for payload in raw_payloads(method):
        code, details, replies = call_raw(channel, method, payload)
        tally.record(method, code, details, payload)
        cleanup(channel, method, replies)


def run_method(channel: grpc.Channel, method: Method, examples: int) -> tuple[Tally, float]:
    start = time.perf_counter()
    tally = Tally()
    fuzz_raw(channel, method, tally)
    fuzz_messages(channel, method, examples, tally)
    return tally, time.perf_counter() - start
