"""The SDK's optional request fields, as ``TypedDict`` keyword arguments (``Unpack``): unset
fields take the server's defaults, the bounds are the server's public limits (copied in
:mod:`tessera_client._limits`)."""

from __future__ import annotations

from typing import TypedDict


class GenerationOptions(TypedDict, total=False):
    """Optional generation fields; unset ones take the server's defaults. The bounds are the
    server's public limits (copied in :mod:`tessera_client._limits`)."""

    route: str  # "ar" (default), "unclip", "pixel" or "mixed"
    n: int  # images, 1..MAX_IMAGES_PER_REQUEST
    size: str  # "WxH": the native size or an integer upscale
    seed: int  # image i uses seed + i; unset: random (returned in the result)
    guidance_scale: float  # [0, MAX_GUIDANCE]
    steps: int  # unclip denoising steps, 1..MAX_STEPS
    temperature: float  # ar, pixel: [MIN_TEMPERATURE, MAX_TEMPERATURE]
    top_k: int  # ar 0..MAX_TOP_K, pixel 0..MAX_PIXEL_TOP_K; 0 = off
    top_p: float  # ar, pixel: [MIN_TOP_P, 1]
    candidates: int  # ar, 1..MAX_CANDIDATES: sampled per image; CLIP's best is returned
    model: str  # bundle name; unset: the served default


class VariationOptions(TypedDict, total=False):
    n: int
    size: str
    seed: int
    guidance_scale: float
    steps: int
    model: str


class EditOptions(TypedDict, total=False):
    """Optional edit fields (the mixed-modal model); unset ones take the server's defaults."""

    n: int  # edited images, 1..MAX_IMAGES_PER_REQUEST
    size: str  # "WxH": the native size or an integer upscale
    model: str  # bundle name; unset: the served default
    seed: int
    guidance_scale: float  # on the instruction, [0, MAX_GUIDANCE]
    image_guidance_scale: float  # on the source image, [0, MAX_GUIDANCE]
    temperature: float  # [MIN_TEMPERATURE, MAX_TEMPERATURE]; unset: greedy
    top_k: int  # 0 = off


class CaptionOptions(TypedDict, total=False):
    model: str
    temperature: float  # unset or 0: greedy (one caption); else [MIN_TEMPERATURE, MAX_TEMPERATURE]
    seed: int
