"""Hypothesis strategies for protobuf request messages, read off their descriptors, and the
list of every public gRPC method on the gateway's port."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2
from hypothesis import strategies as st
from PIL import Image

from tessera import registry
from tessera.v1 import generation_pb2

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
EDGE_INTS = [0, 1, -1, 2, 3, 4, 5, 8, 9, 16, 17, 64, 65, 100, 250, 251, 500, 501, 1000, 1001]
ODD_TEXT = ["", " ", "\x00", "\u3000", "\ufeff", "a" * 501, "🦀" * 200, "\u202e", "ar", "unclip"]


def _png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 90)).save(buf, format="PNG")
    return buf.getvalue()


PNGS = [_png(16), _png(3), _png(64)]


def _int(bits: tuple[int, int], unsigned: bool = False) -> st.SearchStrategy[int]:
    low, high = (0, 2 * bits[1] + 1) if unsigned else bits
    edges = [v for v in (*EDGE_INTS, low, high, low + 1, high - 1, -5) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return _int(INT32)
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return _int(INT64)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return _int(INT32, unsigned=True)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _int(INT64, unsigned=True)
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        edges = [0.0, 1.0, -1.0, 20.0, 20.5, 2.0, 1e-45, 3.4e38, -3.4e38]
        return st.one_of(
            st.sampled_from(edges), st.floats(width=32, allow_nan=True, allow_infinity=True)
        )
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=40))
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.sampled_from(PNGS), st.binary(max_size=64))
    if t == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    raise NotImplementedError(field.type)


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        single = messages(field.message_type, depth + 1)
    else:
        single = _scalar(field)
    if field.is_repeated:
        small = st.lists(single, max_size=4 if depth else 20)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return small
        # huge repeated fields: many copies of one value (cheap to draw, big on the wire)
        huge = st.builds(lambda v, k: [v] * k, single, st.sampled_from([65, 4097, 70000]))
        return st.one_of(small, huge)
    return single


# Valid (cheap) requests that messages() also mutates, so that fuzzing reaches past the first
# check: a few fields at edge or random values over an otherwise valid request.
BASES = {
    "GenerateRequest": {"prompt": "a red circle", "n": 1, "steps": 2, "candidates": 1},
    "VariationsRequest": {"image": PNGS[0], "n": 1, "steps": 2},
    "SubmitJobRequest": {"request": {"prompt": "a red circle", "steps": 2, "candidates": 1}},
    "SampleTokensRequest": {"prompt": "a red circle", "n": 1},
    "SamplePriorRequest": {"prompt": "a red circle", "n": 1, "steps": 2},
    "EmbedTextRequest": {"texts": ["a red circle"]},
    "EmbedImageRequest": {"images": [PNGS[0]]},
    "TokenizeRequest": {"images": [PNGS[0]]},
}


def messages(descriptor: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Messages of ``descriptor`` with any subset of its fields set to edge or random values;
    half of them over a valid request (``BASES``) when there is one."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 2:
        return st.just(cls())
    fields = {f.name: _field(f, depth) for f in descriptor.fields}
    anything = st.fixed_dictionaries({}, optional=fields).map(lambda kw: _build(cls, kw))
    base = BASES.get(descriptor.name) if depth == 0 else None
    if base is None:
        return anything
    mutated = st.dictionaries(
        st.sampled_from(sorted(fields)), st.none(), min_size=0, max_size=2
    ).flatmap(
        lambda names: st.fixed_dictionaries({n: fields[n] for n in names}).map(
            lambda kw: _build(cls, {**base, **kw})
        )
    )
    return st.one_of(anything, mutated)


def _build(cls: type, kw: dict) -> Any:
    msg = cls()
    for name, value in kw.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        if field.is_repeated:
            getattr(msg, name).extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(value, dict):
            getattr(msg, name).CopyFrom(_build(type(getattr(msg, name)), value))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


@dataclass(frozen=True)
class Method:
    path: str  # /package.Service/Name
    request: Any  # descriptor
    streaming: bool
    costly: bool  # runs a sampler


SAMPLERS = {"Generate", "GenerateStream", "Variations", "SubmitJob"}
SAMPLERS |= {"Edit", "EditStream", "Caption"}  # the mixed model's public methods
# ... and its own contract's (forwarded by the gateway like every registered service)
SAMPLERS |= {"GenerateGrids", "GenerateGridsStream", "EditGrids", "EditGridsStream"}
SAMPLERS |= {"CaptionGrids"}


def public_methods() -> list[Method]:
    """Every method the gateway's gRPC port serves: GenerationService, each registered model
    contract (forwarded), and the standard health check."""
    services = [generation_pb2.DESCRIPTOR.services_by_name["GenerationService"]]
    services += [entry.service_descriptor() for entry in registry.SERVICES]
    services.append(health_pb2.DESCRIPTOR.services_by_name["Health"])
    out = []
    for service in services:
        for rpc in service.methods:
            if rpc.client_streaming:
                continue  # none in the contracts; a client stream would need its own driver
            costly = rpc.name in SAMPLERS or rpc.name.startswith("Sample")
            out.append(
                Method(
                    f"/{service.full_name}/{rpc.name}", rpc.input_type, rpc.server_streaming, costly
                )
            )
    return out
