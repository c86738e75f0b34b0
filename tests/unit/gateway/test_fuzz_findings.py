"""Regression tests for what the fuzz suite (tests/integration/test_fuzz_*.py) found: each
input here once got a 500 / UNKNOWN, or a schema that allowed what the server refused.
Pure: the request models, the proto conversions and the gRPC ingress, no stack."""

from __future__ import annotations

import re

import grpc
import pytest
from pydantic import ValidationError

from tessera.common import limits
from tessera.common.errors import InvalidArgument
from tessera.common.grpc_ingress import MalformedRequest, tolerant
from tessera.common.serving import check_parsed
from tessera.gateway.http import (
    B64_PATTERN,
    DetokenizeBody,
    EmbedTextBody,
    LatentBody,
    TokenizeBody,
)
from tessera.routes.pipelines import candidate_seed, int64
from tessera.routes.schemas import NOT_BLANK, WHITESPACE, GenerationParams, validate
from tessera.v1 import common_pb2, generation_pb2


def _detok(body: dict) -> DetokenizeBody:
    return DetokenizeBody.model_validate(body)


# -- the 500: out-of-range numbers reached the protobuf constructors ---------------
@pytest.mark.parametrize(
    "body",
    [
        {"latents": [{"shape": [-3058, 730663, -34931949], "values": []}], "quantize": True},
        {"latents": [{"shape": [2**40, 1, 1], "values": []}]},
        {"grids": [{"tokens": [2**40], "height": 1, "width": 1}]},
        {"grids": [{"tokens": [-1], "height": 1, "width": 1}]},
        {"latents": [{"shape": [1, 1, 1], "values": [1e300]}]},  # inf as a float32
        {"latents": [{"shape": [1, 1, 2], "values": [0.0]}]},  # values do not fill the shape
        {"grids": [{"tokens": [1, 2, 3], "height": 2, "width": 2}]},
        {
            "grids": [{"tokens": [0], "height": 1, "width": 1}],
            "latents": [{"shape": [1, 1, 1], "values": [0.0]}],
        },
        {"grids": [], "latents": []},
        {},
    ],
)
def test_detokenize_bodies_that_cannot_be_converted_are_rejected_by_the_model(body):
    with pytest.raises(ValidationError):
        _detok(body)


def test_detokenize_bodies_that_pass_convert_to_protos():
    body = _detok({"latents": [{"shape": [2, 1, 2], "values": [0.0, 1.0, -1.5, 3e38]}]})
    tensor = common_pb2.Tensor(**body.latents[0].model_dump())
    assert list(tensor.shape) == [2, 1, 2]
    body = _detok(
        {
            "grids": [{"tokens": [0, limits.MAX_CODEBOOK_SIZE - 1], "height": 1, "width": 2}],
            "latents": [],
        }
    )
    common_pb2.TokenGrid(**body.grids[0].model_dump())


def test_latent_dims_and_values_are_bounded_in_the_schema():
    schema = LatentBody.model_json_schema()
    dim = schema["properties"]["shape"]["items"]
    assert dim["minimum"] == 1 and dim["maximum"] == limits.MAX_LATENT_VALUES
    value = schema["properties"]["values"]["items"]
    assert value["maximum"] == limits.FLOAT32_MAX and value["minimum"] == -limits.FLOAT32_MAX
    assert "oneOf" in DetokenizeBody.model_json_schema()


# -- lone surrogates in JSON strings could not be put into protobuf strings ---------------
@pytest.mark.parametrize("text", ["\ud800", "a\udc80b"])
def test_texts_with_lone_surrogates_are_a_400(text):
    with pytest.raises(ValidationError, match="lone surrogates"):
        EmbedTextBody.model_validate({"texts": [text]})
    with pytest.raises(InvalidArgument, match="lone surrogates"):
        validate(GenerationParams, {"prompt": text})
    with pytest.raises(InvalidArgument):
        validate(GenerationParams, {"prompt": "a", "user": text})


# -- "not blank" in the schema must mean what strip() means on the server ------------------
def test_whitespace_is_exactly_what_strip_removes():
    assert set(WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


@pytest.mark.parametrize("text", ["\x1c", " \x85\u3000", "\t\n"])
def test_blank_texts_fail_both_the_schema_pattern_and_the_server(text):
    assert not re.search(NOT_BLANK, text)
    with pytest.raises(ValidationError, match="blank"):
        EmbedTextBody.model_validate({"texts": [text]})
    with pytest.raises(InvalidArgument, match="blank"):
        validate(GenerationParams, {"prompt": text})


def test_optional_texts_state_their_bounds_in_the_schema():
    """On `Text | None` a Field's pattern was enforced but left out of /openapi.json (the job
    fuzzer sent size "" as schema-valid)."""
    from tessera.jobs.api import JobSubmitRequest

    for model in (GenerationParams, JobSubmitRequest):
        props = model.model_json_schema()["properties"]
        assert props["size"]["anyOf"][0]["pattern"].startswith("^([0-9]")
        assert props["model"]["anyOf"][0]["maxLength"] == limits.MAX_MODEL_NAME_CHARS
        assert props["user"]["anyOf"][0]["maxLength"] == 256


def test_prompt_schema_states_the_pattern():
    prompt = GenerationParams.model_json_schema()["properties"]["prompt"]
    assert prompt["pattern"] == NOT_BLANK and prompt["maxLength"] == limits.MAX_PROMPT_CHARS


# -- sizes: `\d` matched any Unicode digit, int() read them --------------------------------
def test_sizes_take_ascii_digits_only():
    with pytest.raises(InvalidArgument):
        validate(GenerationParams, {"prompt": "a", "size": "\u0661\u0666x\u0661\u0666"})


# -- images: the schema states base64, its length and the bytes limit ----------------------
def test_image_strings_are_bounded_base64():
    assert re.fullmatch(B64_PATTERN, "iVBORw0KGgo=")
    assert re.fullmatch(B64_PATTERN, "data:image/png;base64,iVBORw0KGgo=")
    assert not re.fullmatch(B64_PATTERN, "not base64!!")
    with pytest.raises(ValidationError):
        TokenizeBody.model_validate({"images": ["A" * (limits.MAX_IMAGE_B64_CHARS + 4)]})
    assert limits.MAX_IMAGE_B64_CHARS >= 4 * limits.MAX_IMAGE_BYTES // 3


# -- ar: candidate seeds near MAX_SEED overflowed int64 in SampleTokensRequest.seeds -------
def test_candidate_seeds_stay_int64_and_draw_the_same_numbers():
    import torch

    from tessera.common.device import make_generator

    base = limits.MAX_SEED
    seeds = [int64(candidate_seed(base, j) + i) for j in range(3) for i in range(4)]
    assert all(-(2**63) <= s < 2**63 for s in seeds)
    assert seeds[0] == base and seeds[1] == -(2**63)
    wrapped = torch.rand(3, generator=make_generator(seeds[1], torch.device("cpu")))
    unwrapped = torch.rand(3, generator=make_generator(base + 1, torch.device("cpu")))
    assert torch.equal(wrapped, unwrapped)


# -- gRPC: payloads that do not parse were UNKNOWN from grpcio ------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x02\xff\xfe",  # prompt: invalid UTF-8
        generation_pb2.GenerateRequest(prompt="hello").SerializeToString()[:-2],  # truncated
        b"\xff\xff\xff\xff",
        b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end
    ],
)
def test_payloads_that_do_not_parse_are_invalid_argument(payload):
    parse = tolerant(generation_pb2.GenerateRequest.FromString, "Generate")
    request = parse(payload)
    assert isinstance(request, MalformedRequest)
    with pytest.raises(InvalidArgument, match="not a valid Generate message"):
        check_parsed(request)
    assert parse(b"\x0a\x01a").prompt == "a"


def test_ingress_registers_every_generated_handler_tolerant():
    from tessera.common import grpc_ingress

    added: dict = {}

    class Server:
        def add_generic_rpc_handlers(self, handlers):
            for h in handlers:
                added.update(h._method_handlers)

        def add_registered_method_handlers(self, service, handlers):
            added.update({f"{service}/{k}": v for k, v in handlers.items()})

    class Servicer:
        def __getattr__(self, name):
            return lambda request, context: None

    grpc_ingress.add_GenerationServiceServicer_to_server(Servicer(), Server())
    assert "/tessera.v1.GenerationService/Generate" in added  # the generic handler
    assert "tessera.v1.GenerationService/Generate" in added  # the registered one
    for handler in added.values():
        assert isinstance(handler, grpc.RpcMethodHandler)
        assert isinstance(handler.request_deserializer(b"\xff"), MalformedRequest)
    with pytest.raises(AttributeError):
        grpc_ingress.add_NoSuchServicer_to_server  # noqa: B018


# -- grpc.health.v1: Watch and List were registered but not implemented (INTERNAL) ----------
class _Context:
    code = details = None

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details


async def test_health_check_watch_and_list_answer():
    from grpc_health.v1 import health_pb2

    from tessera.gateway.deployment import GatewayService

    serving = health_pb2.HealthCheckResponse.SERVING
    request = health_pb2.HealthCheckRequest()
    assert (await GatewayService.Check(None, request, _Context())).status == serving
    events = [e async for e in GatewayService.Watch(None, request, _Context())]
    assert [e.status for e in events] == [serving]
    listed = await GatewayService.List(None, health_pb2.HealthListRequest(), _Context())
    assert listed.statuses[""].status == serving
    context = _Context()
    await GatewayService.Check(None, MalformedRequest("Check", "DecodeError"), context)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
