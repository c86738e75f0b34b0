"""The seam's request models: edits and captions are bounded like the other requests."""

from __future__ import annotations

import pytest

from tessera.common.errors import InvalidArgument
from tessera.common.limits import MAX_CAPTIONS, MAX_GUIDANCE, MAX_IMAGES_PER_REQUEST
from tessera.routes.schemas import CaptionParams, EditParams, validate


def test_edit_params_defaults_and_bounds() -> None:
    p = validate(EditParams, {"prompt": "make the circle red"})
    assert (p.n, p.response_format, p.guidance_scale) == (1, "b64_json", None)
    for bad in (
        {"prompt": "   "},
        {"prompt": ""},
        {"prompt": "x", "n": MAX_IMAGES_PER_REQUEST + 1},
        {"prompt": "x", "image_guidance_scale": MAX_GUIDANCE + 1},
        {"prompt": "x", "guidance_scale": -1},
        {"prompt": "x", "temperature": 0},
        {"prompt": "x", "size": "64x32"},
        {"prompt": "x", "steps": 3},  # not an edit field
    ):
        with pytest.raises(InvalidArgument):
            validate(EditParams, bad)


def test_caption_params_need_temperature_for_several() -> None:
    assert validate(CaptionParams, {}).n == 1
    assert validate(CaptionParams, {"n": 3, "temperature": 0.8}).n == 3
    with pytest.raises(InvalidArgument, match="temperature"):
        validate(CaptionParams, {"n": 2})
    with pytest.raises(InvalidArgument):
        validate(CaptionParams, {"n": MAX_CAPTIONS + 1, "temperature": 1.0})
