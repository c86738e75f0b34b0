"""Pydantic models of the public requests, and their conversion to the protobuf contracts.

Every field a request can set is bounded here, with the numbers of ``tessera.common.limits``;
the gRPC path and the job queue convert their messages into these models too, so every entry
point validates with the same rules, once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tessera.common.errors import InvalidArgument
from tessera.common.limits import (
    MAX_CANDIDATES,
    MAX_CAPTIONS,
    MAX_GUIDANCE,
    MAX_IMAGES_PER_REQUEST,
    MAX_MODEL_NAME_CHARS,
    MAX_OUTPUT_SIDE,
    MAX_PROMPT_CHARS,
    MAX_ROUTE_CHARS,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
    MIN_TOP_P,
)
from tessera.v1 import generation_pb2

ROUTES = ("ar", "unclip", "pixel", "mixed")
StreamEvent = generation_pb2.GenerateStreamResponse  # one event of a streamed generation
# Gets each progress event (with previews); returning False cancels the generation.
EventCallback = Callable[[StreamEvent], Awaitable[bool]]
SIZE_PATTERN = re.compile(r"^([0-9]{1,4})x([0-9]{1,4})$")  # ASCII: `\d` is any Unicode digit
SIZE_DESCRIPTION = (
    "WxH, square, at most 1024x1024: the model's native size (GET /v1/models, image_size) or "
    "an integer multiple of it; another size answers 400"
)

# What str.strip() removes (Python's str.isspace), spelled out as \uXXXX escapes: `\s` means
# something else in JSON Schema (ECMA-262), in pydantic (Rust regex) and in Python, so a
# "not blank" pattern written with `\S` would let through a text the services call blank.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
NOT_BLANK = "[^" + "".join(f"\\u{ord(c):04x}" for c in WHITESPACE) + "]"


def _utf8(value: str) -> str:
    """Text goes into protobuf strings, which are UTF-8: a lone surrogate (JSON allows
    ``"\\ud800"``) cannot be encoded and is a 400 here rather than a failure later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from e
    return value


Text = Annotated[str, AfterValidator(_utf8)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("text is blank")
    return value


# The schema states NOT_BLANK; the check is strip()'s own (and its message is readable).
Prompt = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        json_schema_extra={"pattern": NOT_BLANK},
        description=f"1..{MAX_PROMPT_CHARS} characters, not blank",
    ),
    AfterValidator(_not_blank),
]

# The request's optional fields (proto3 `optional`: HasField semantics), read off the
# contract, so a new sampling option is declared in generation.proto and below, nowhere else.
GENERATION_OPTIONALS = tuple(
    f.name for f in generation_pb2.GenerateRequest.DESCRIPTOR.fields if f.has_presence
)


def passed_options(request_class: Any) -> tuple[str, ...]:
    """The optional fields of a model service's request message class that a generation
    request has too, passed on as they are (the seed aside: each call sets its own)."""
    return tuple(
        f.name
        for f in request_class.DESCRIPTOR.fields
        if f.has_presence
        and f.name != "seed"
        and f.name in generation_pb2.GenerateRequest.DESCRIPTOR.fields_by_name
    )


# Optional texts carry their constraints inside the type: on `Text | None` a Field's pattern
# or max_length is enforced but left out of the JSON schema.
Size = Annotated[str, Field(pattern=SIZE_PATTERN.pattern), AfterValidator(_utf8)]
ModelName = Annotated[Text, Field(max_length=MAX_MODEL_NAME_CHARS)]
User = Annotated[Text, Field(max_length=256)]


class GenerationParams(BaseModel):
    """POST /v1/images/generations — OpenAI images fields plus Tessera's extensions."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    n: int = Field(default=1, ge=1, le=MAX_IMAGES_PER_REQUEST)
    size: Size | None = Field(default=None, description=SIZE_DESCRIPTION)
    response_format: Literal["b64_json", "url"] = "b64_json"
    model: ModelName | None = Field(
        default=None,
        description="the served model's id (GET /v1/models); another one answers 404",
    )
    # OpenAI fields accepted for compatibility and ignored.
    quality: Annotated[Text, Field(max_length=32)] | None = None
    style: Annotated[Text, Field(max_length=32)] | None = None
    user: User | None = None
    # Tessera extensions.
    route: Text = Field(
        default="ar",
        min_length=1,
        max_length=MAX_ROUTE_CHARS,
        description="ar, unclip, pixel or mixed, as the model offers (GET /v1/models, routes); "
        "another route answers 404",
    )
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=MAX_GUIDANCE)
    steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        description="unclip: diffusion steps; a bundle whose decoder has fewer timesteps "
        "allows fewer (400 with its bound)",
    )
    temperature: float | None = Field(default=None, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)
    top_k: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_K,
        description="ar: 0 is off; at most the LM's vocabulary (the bundle's codebook size); "
        "pixel: at most 256; else 400 with its bound",
    )
    top_p: float | None = Field(default=None, ge=MIN_TOP_P, le=1.0)
    candidates: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CANDIDATES,
        description="ar: candidates per image, reranked by CLIP; default: server's ar_candidates",
    )

    @field_validator("size")
    @classmethod
    def _size_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = SIZE_PATTERN.match(value)
        if not match:
            raise ValueError("size must look like '64x64'")
        w, h = int(match.group(1)), int(match.group(2))
        if w != h or not 1 <= w <= MAX_OUTPUT_SIDE:
            raise ValueError(f"size must be square and at most {MAX_OUTPUT_SIDE}x{MAX_OUTPUT_SIDE}")
        return value

    def to_proto(self) -> generation_pb2.GenerateRequest:
        msg = generation_pb2.GenerateRequest(
            prompt=self.prompt,
            route=self.route,
            n=self.n,
            size=self.size or "",
            model=self.model or "",
        )
        return self.set_options(msg, GENERATION_OPTIONALS)

    def set_options(self, msg: Any, names: tuple[str, ...]) -> Any:
        """``msg`` (returned) with each of the fields ``names`` that this request sets."""
        for name in names:
            value = getattr(self, name)
            if value is not None:
                setattr(msg, name, value)
        return msg

    @classmethod
    def from_proto(cls, msg: generation_pb2.GenerateRequest) -> GenerationParams:
        """Validate a gRPC request with the HTTP rules (raises InvalidArgument)."""
        data = proto_fields(msg, {"prompt": msg.prompt, "route": msg.route or "ar"})
        return validate(cls, data)


def wire_float(value: float) -> float:
    """A float32 proto field as the shortest decimal it stands for (0.0099999998 -> 0.01)."""
    return float(str(np.float32(value)))


def proto_fields(msg: Any, data: dict) -> dict:
    """``data`` plus what a generation-like request message sets: n (0 means 1), size and
    model when not empty, and every optional field that is present (HasField).

    A float field is read as the shortest decimal its float32 stands for: a client's 0.01
    arrives as 0.0099999998, which would fail the ``ge=0.01`` its HTTP twin passes."""
    data = {**data, "n": msg.n or 1}
    for name in ("size", "model"):
        if getattr(msg, name):
            data[name] = getattr(msg, name)
    for field in msg.DESCRIPTOR.fields:
        if field.has_presence and msg.HasField(field.name):
            value = getattr(msg, field.name)
            if field.type == field.TYPE_FLOAT:
                value = wire_float(value)
            data[field.name] = value
    return data


def validate(model: type[BaseModel], data: dict) -> BaseModel:
    """Pydantic validation whose failure is an InvalidArgument with a readable message."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidArgument(format_validation_error(e)) from e


def format_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ())) or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    """OpenAI's images response, plus what Tessera used (seed, route, model)."""

    created: int
    data: list[ImageData]
    seed: int
    route: str
    model: str
    elapsed_ms: float


class VariationParams(BaseModel):
    """POST /v1/images/variations form fields (the image travels as a file part)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=MAX_IMAGES_PER_REQUEST)
    size: Size | None = Field(default=None, description=SIZE_DESCRIPTION)
    response_format: Literal["b64_json", "url"] = "b64_json"
    model: ModelName | None = None
    user: User | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=MAX_GUIDANCE)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)

    _size_format = field_validator("size")(GenerationParams._size_format.__func__)

    @classmethod
    def from_proto(cls, msg: generation_pb2.VariationsRequest) -> VariationParams:
        """Validate a gRPC request with the HTTP rules (raises InvalidArgument)."""
        return validate(cls, proto_fields(msg, {}))


class EditParams(BaseModel):
    """POST /v1/images/edits form fields (the image and the optional mask travel as file
    parts): an instruction edit through the mixed-modal model."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt  # the instruction
    n: int = Field(default=1, ge=1, le=MAX_IMAGES_PER_REQUEST)
    size: Size | None = Field(default=None, description=SIZE_DESCRIPTION)
    response_format: Literal["b64_json", "url"] = "b64_json"
    model: ModelName | None = None
    user: User | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    guidance_scale: float | None = Field(
        default=None, ge=0.0, le=MAX_GUIDANCE, description="guidance on the instruction"
    )
    image_guidance_scale: float | None = Field(
        default=None, ge=0.0, le=MAX_GUIDANCE, description="guidance on the source image"
    )
    temperature: float | None = Field(
        default=None,
        ge=MIN_TEMPERATURE,
        le=MAX_TEMPERATURE,
        description="unset: greedy (the most likely code at every cell: every n the same)",
    )
    top_k: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TOP_K,
        description="0 is off; at most the image vocabulary (the codebook size), else 400",
    )

    _size_format = field_validator("size")(GenerationParams._size_format.__func__)


class CaptionParams(BaseModel):
    """Image → text: ``n`` captions of one image, best first, each with its score."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=MAX_CAPTIONS)
    model: ModelName | None = None
    temperature: float | None = Field(
        default=None,
        ge=0.0,
        le=MAX_TEMPERATURE,
        description=(
            f"unset or 0: greedy (every caption the same: n > 1 needs a temperature); "
            f"otherwise [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]"
        ),
    )
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _sampled_when_several(self) -> CaptionParams:
        # a positive temperature under the floor would divide log-probabilities into
        # overflow (or, as float32 on the wire, become 0: greedy), so it is refused
        if self.temperature and self.temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, "
                f"got {self.temperature!r}"
            )
        if self.n > 1 and not self.temperature:
            raise ValueError("n > 1 captions need temperature > 0 (greedy gives one caption)")
        return self


@dataclass(frozen=True)
class Caption:
    """One caption and its score: the sum of its tokens' log-probabilities under the model."""

    text: str
    score: float
