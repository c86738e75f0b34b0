"""The generation options are named once, by the proto: the SDK's field lists derive from the
shipped descriptor, and every proto field has a CLI option and a typed ``**params`` entry."""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest

from tessera_client import _wire
from tessera_client.commands import _common, generate, submit, variations
from tessera_client.options import GenerationOptions, VariationOptions
from tessera_client.v1 import generation_pb2

GENERATE_OPTIONS = [
    f.name for f in generation_pb2.GenerateRequest.DESCRIPTOR.fields if f.name != "prompt"
]
VARIATION_OPTIONS = [
    f.name for f in generation_pb2.VariationsRequest.DESCRIPTOR.fields if f.name != "image"
]


def test_field_lists_are_the_proto_fields_in_proto_order():
    assert list(_wire.GENERATION_FIELDS) == GENERATE_OPTIONS
    assert list(_wire.VARIATION_FIELDS) == VARIATION_OPTIONS
    # What the SDK has always sent: a rename in the proto must be seen here too.
    assert set(GENERATE_OPTIONS) >= {
        "route", "n", "size", "seed", "guidance_scale", "steps", "temperature", "top_k", "top_p",
        "candidates", "model",
    }  # fmt: skip
    assert set(VARIATION_OPTIONS) == {"n", "size", "seed", "guidance_scale", "steps", "model"}


def test_typed_options_name_every_proto_field():
    assert set(GenerationOptions.__annotations__) == set(GENERATE_OPTIONS)
    assert set(VariationOptions.__annotations__) == set(VARIATION_OPTIONS)


def _dests(command: ModuleType) -> set[str]:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return {action.dest for action in parser._actions}


@pytest.mark.parametrize(
    ("command", "names"),
    [(generate, GENERATE_OPTIONS), (submit, GENERATE_OPTIONS), (variations, VARIATION_OPTIONS)],
)
def test_every_proto_field_has_a_cli_option(command, names):
    missing = set(names) - _dests(command)
    assert not missing, f"tessera {command.__name__.rsplit('.', 1)[-1]}: no option for {missing}"


def test_cli_passes_only_the_options_set():
    parser = argparse.ArgumentParser()
    generate.add_arguments(parser)
    args = parser.parse_args(["a cat", "--seed", "0", "--top-k", "5"])
    assert _common.options(args) == {"seed": 0, "top_k": 5}
    parser = argparse.ArgumentParser()
    variations.add_arguments(parser)
    args = parser.parse_args(["img.png", "--steps", "3"])
    assert _common.options(args, _wire.VARIATION_FIELDS) == {"steps": 3}


def test_unknown_options_are_refused_by_name():
    with pytest.raises(TypeError, match="unknown generation parameters: \\['colour'\\]"):
        _wire.generation_fields("a cat", colour="red")
    with pytest.raises(TypeError, match="unknown variation parameters: \\['top_k'\\]"):
        _wire.variation_fields(top_k=3)
    assert _wire.variation_fields(seed=1, steps=None) == {"seed": 1}
