"""The protos' comments state the bounds of ``tessera.common.limits``, and the public request
models enforce them: one source, read by every layer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tessera.common import limits
from tessera.routes.schemas import GenerationParams, VariationParams

PROTOS = Path(__file__).resolve().parents[3] / "protos" / "tessera" / "v1"


def _g(x: float) -> str:
    return f"{x:g}"


TEMPERATURE_RANGE = f"[{_g(limits.MIN_TEMPERATURE)}, {_g(limits.MAX_TEMPERATURE)}]"


# (proto file, message, field, text its comment must contain)
DOCUMENTED = [
    ("generation", "GenerateRequest", "prompt", f"1..{limits.MAX_PROMPT_CHARS} characters"),
    ("generation", "GenerateRequest", "n", f"1..{limits.MAX_IMAGES_PER_REQUEST}"),
    ("generation", "GenerateRequest", "guidance_scale", f"[0, {_g(limits.MAX_GUIDANCE)}]"),
    ("generation", "GenerateRequest", "steps", f"1..{limits.MAX_STEPS}"),
    ("generation", "GenerateRequest", "temperature", TEMPERATURE_RANGE),
    ("generation", "GenerateRequest", "candidates", f"1..{limits.MAX_CANDIDATES}"),
    ("generation", "VariationsRequest", "n", f"1..{limits.MAX_IMAGES_PER_REQUEST}"),
    ("lm", "SampleTokensRequest", "prompt", f"1..{limits.MAX_PROMPT_CHARS} characters"),
    ("lm", "SampleTokensRequest", "n", f"1..{limits.MAX_LM_IMAGES_PER_CALL}"),
    ("lm", "SampleTokensRequest", "seeds", f"1..{limits.MAX_LM_IMAGES_PER_CALL}"),
    ("lm", "SampleTokensRequest", "guidance_scale", f"[0, {_g(limits.MAX_GUIDANCE)}]"),
    ("pixel", "SamplePixelsRequest", "prompt", f"1..{limits.MAX_PROMPT_CHARS} characters"),
    ("pixel", "SamplePixelsRequest", "n", f"1..{limits.MAX_PIXEL_IMAGES_PER_CALL}"),
    ("pixel", "SamplePixelsRequest", "temperature", TEMPERATURE_RANGE),
    ("pixel", "SamplePixelsRequest", "top_k", f"0 (off) .. {limits.MAX_PIXEL_TOP_K}"),
    ("pixel", "SamplePixelsRequest", "guidance_scale", f"[0, {_g(limits.MAX_GUIDANCE)}]"),
    ("prior", "EmbedTextRequest", "texts", f"1..{limits.MAX_TEXTS_PER_CALL} texts"),
    ("prior", "EmbedTextRequest", "texts", f"1..{limits.MAX_PROMPT_CHARS} characters"),
    ("prior", "EmbedImageRequest", "images", f"1..{limits.MAX_ITEMS_PER_CALL}"),
    ("prior", "SamplePriorRequest", "n", f"1..{limits.MAX_SAMPLES_PER_CALL}"),
    ("prior", "SamplePriorRequest", "steps", f"1..{limits.MAX_SERVICE_STEPS}"),
    ("prior", "SamplePriorRequest", "guidance_scale", f"[0, {_g(limits.MAX_GUIDANCE)}]"),
    ("decoder", "SampleLatentsRequest", "image_embeddings", f"1..{limits.MAX_SAMPLES_PER_CALL}"),
    ("decoder", "SampleLatentsRequest", "prompt", f"0..{limits.MAX_PROMPT_CHARS} characters"),
    ("decoder", "SampleLatentsRequest", "steps", f"1..{limits.MAX_SERVICE_STEPS}"),
    ("decoder", "SampleLatentsRequest", "guidance_scale", f"[0, {_g(limits.MAX_GUIDANCE)}]"),
    ("tokenizer", "TokenizeRequest", "images", f"at most {limits.MAX_ITEMS_PER_CALL}"),
    ("tokenizer", "DetokenizeRequest", "grids", f"at most {limits.MAX_ITEMS_PER_CALL}"),
    ("tokenizer", "DetokenizeRequest", "latents", f"at most {limits.MAX_ITEMS_PER_CALL}"),
]


def field_comment(proto: str, message: str, field: str) -> str:
    """The comment lines right above ``field`` in ``message`` of ``proto``.proto."""
    text = (PROTOS / f"{proto}.proto").read_text()
    body = re.search(rf"message {message} \{{(.*?)\n\}}", text, re.S)
    assert body, f"{message} not in {proto}.proto"
    comment: list[str] = []
    for line in body.group(1).splitlines():
        line = line.strip()
        if line.startswith("//"):
            comment.append(line[2:].strip())
        elif re.match(rf"(optional |repeated )?[\w.]+ {field} = \d+;", line):
            return " ".join(comment)
        else:
            comment = []
    raise AssertionError(f"{message}.{field} not in {proto}.proto")


@pytest.mark.parametrize(("proto", "message", "field", "text"), DOCUMENTED)
def test_proto_comments_state_the_limits(proto, message, field, text):
    assert text in field_comment(proto, message, field)


def test_public_models_enforce_the_limits():
    schema = GenerationParams.model_json_schema()["properties"]
    assert schema["prompt"]["maxLength"] == limits.MAX_PROMPT_CHARS
    assert schema["n"]["maximum"] == limits.MAX_IMAGES_PER_REQUEST
    bounded = {
        "guidance_scale": limits.MAX_GUIDANCE,
        "steps": limits.MAX_STEPS,
        "temperature": limits.MAX_TEMPERATURE,
        "top_k": limits.MAX_TOP_K,
        "candidates": limits.MAX_CANDIDATES,
        "seed": limits.MAX_SEED,
    }
    for name, bound in bounded.items():
        assert schema[name]["anyOf"][0]["maximum"] == bound, name
    floors = {"temperature": limits.MIN_TEMPERATURE, "top_p": limits.MIN_TOP_P}
    for name, floor in floors.items():  # floors, not > 0: a float32 field makes 1e-311 zero
        assert schema[name]["anyOf"][0]["minimum"] == floor, name
    variation = VariationParams.model_json_schema()["properties"]
    assert variation["n"]["maximum"] == limits.MAX_IMAGES_PER_REQUEST
    assert variation["steps"]["anyOf"][0]["maximum"] == limits.MAX_STEPS
