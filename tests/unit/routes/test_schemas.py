import pytest

from tessera.common.errors import InvalidArgument
from tessera.common.limits import MIN_TEMPERATURE, MIN_TOP_P
from tessera.lm.options import request_options, sampling_fields
from tessera.routes.schemas import CaptionParams, GenerationParams, VariationParams, validate
from tessera.v1 import generation_pb2, lm_pb2


def test_proto_round_trip_keeps_unset_fields_unset():
    params = GenerationParams(prompt="a cat", route="unclip", n=2, seed=3, top_p=0.9)
    msg = params.to_proto()
    assert msg.HasField("seed") and not msg.HasField("temperature")
    back = GenerationParams.from_proto(msg)
    assert back.top_p == pytest.approx(0.9)  # proto floats are 32-bit
    assert back.model_dump(exclude={"top_p"}) == params.model_dump(exclude={"top_p"})


def test_grpc_requests_use_the_same_bounds():
    with pytest.raises(InvalidArgument, match="n"):
        GenerationParams.from_proto(generation_pb2.GenerateRequest(prompt="a", n=99))
    with pytest.raises(InvalidArgument, match="prompt"):
        GenerationParams.from_proto(generation_pb2.GenerateRequest(prompt=""))
    assert GenerationParams.from_proto(generation_pb2.GenerateRequest(prompt="a")).n == 1


@pytest.mark.parametrize("size", ["64x64", "128x128", "1024x1024"])
def test_sizes_accepted(size):
    assert GenerationParams(prompt="a", size=size).size == size
    assert validate(VariationParams, {"size": size}).size == size


@pytest.mark.parametrize("size", ["64x32", "0x0", "2048x2048", "64", "axb"])
def test_sizes_rejected(size):
    with pytest.raises(InvalidArgument, match="size"):
        validate(GenerationParams, {"prompt": "a", "size": size})


@pytest.mark.parametrize("candidates", [0, 9, -1])
def test_candidates_are_bounded_on_both_ingresses(candidates):
    with pytest.raises(InvalidArgument, match="candidates"):
        validate(GenerationParams, {"prompt": "a", "candidates": candidates})
    msg = generation_pb2.GenerateRequest(prompt="a", candidates=candidates)
    with pytest.raises(InvalidArgument, match="candidates"):
        GenerationParams.from_proto(msg)
    ok = GenerationParams.from_proto(generation_pb2.GenerateRequest(prompt="a", candidates=8))
    assert ok.candidates == 8 and ok.to_proto().candidates == 8


@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_sampling_floors_hold_over_http_and_grpc(field):
    """The floor itself passes both ways (over gRPC it arrives as a float32: 0.0099999998);
    a positive value a float32 makes 0 (the fuzzer's top_p=2.2e-311) is refused at the edge."""
    floor = {"temperature": MIN_TEMPERATURE, "top_p": MIN_TOP_P}[field]
    assert getattr(GenerationParams(prompt="a", **{field: floor}), field) == floor
    msg = generation_pb2.GenerateRequest(prompt="a", **{field: floor})
    assert getattr(GenerationParams.from_proto(msg), field) == floor
    for below in (floor / 2, 2.2e-311):
        with pytest.raises(InvalidArgument, match=field):
            validate(GenerationParams, {"prompt": "a", field: below})


def test_lm_contract_takes_the_floors_as_float32():
    fields = sampling_fields(lm_pb2.SampleTokensRequest)
    ok = lm_pb2.SampleTokensRequest(temperature=MIN_TEMPERATURE, top_p=MIN_TOP_P)
    assert request_options(ok, fields, 16)["temperature"] < MIN_TEMPERATURE  # float32's 0.01
    with pytest.raises(InvalidArgument, match="top_p"):
        request_options(lm_pb2.SampleTokensRequest(top_p=1e-7), fields, 16)
    with pytest.raises(InvalidArgument, match="temperature"):
        request_options(lm_pb2.SampleTokensRequest(temperature=0.005), fields, 16)


@pytest.mark.parametrize("temperature", [1e-300, 1e-30, 0.009])
def test_caption_temperature_is_greedy_zero_or_at_least_the_floor(temperature):
    with pytest.raises(InvalidArgument, match=r"0 \(greedy\) or at least 0.01"):
        validate(CaptionParams, {"temperature": temperature})
    assert validate(CaptionParams, {"temperature": 0.0}).temperature == 0.0  # greedy
    assert validate(CaptionParams, {"n": 2, "temperature": MIN_TEMPERATURE}).n == 2
