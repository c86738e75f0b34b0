"""The sampling options of a sampling request (``SampleTokensRequest``,
``SamplePixelsRequest``): its optional contract fields that are ``SamplingParams`` fields,
read off the contract and checked once for the LM and pixel deployments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tessera.common.limits import MAX_TEMPERATURE, MIN_WIRE_TEMPERATURE
from tessera.common.protos import check_range
from tessera.common.serving import resolve_seed
from tessera.lm.sampling import SamplingParams, validate_params


def sampling_fields(request_class: Any) -> tuple[str, ...]:
    """The optional fields of a request message class that are ``SamplingParams`` fields
    (the seed aside: each image gets its own)."""
    return tuple(
        f.name
        for f in request_class.DESCRIPTOR.fields
        if f.has_presence and f.name != "seed" and f.name in SamplingParams.__dataclass_fields__
    )


def request_options(request: Any, fields: tuple[str, ...], top_k_bound: int) -> dict[str, Any]:
    """The sampling options ``request`` sets, checked: the sampler's own checks
    (``validate_params``, run again by the engine), then the contract's cap on temperature
    (the sampler takes any positive one)."""
    options = {name: getattr(request, name) for name in fields if request.HasField(name)}
    validate_params(SamplingParams(**options), top_k_bound)
    if "temperature" in options:
        check_range("temperature", options["temperature"], MIN_WIRE_TEMPERATURE, MAX_TEMPERATURE)
    return options


def sampling_params(
    request: Any,
    fields: tuple[str, ...],
    top_k_bound: int,
    n: int,
    seeds: Sequence[int] = (),
) -> tuple[list[SamplingParams], int]:
    """One ``SamplingParams`` per image with the options ``request`` sets (checked), and the
    seed reported back: one image per ``seeds`` when given, else ``n`` images from the
    request's seed (or a random one) on."""
    options = request_options(request, fields, top_k_bound)
    if seeds:
        return [SamplingParams(seed=s, **options) for s in seeds], seeds[0]
    seed = resolve_seed(request.seed if request.HasField("seed") else None)
    return [SamplingParams(seed=seed + i, **options) for i in range(n)], seed
