"""What the bundle decides about a generation request, checked the same way before a job is
queued and on the synchronous path (GatewayService.check_job_params -> Pipelines.check_params)."""

from __future__ import annotations

import pytest

from tessera.common.errors import InvalidArgument, NotFound
from tessera.routes.bundle import BundleInfo
from tessera.routes.pipelines import Pipelines
from tessera.routes.schemas import GenerationParams


@pytest.fixture
def pipelines() -> Pipelines:
    info = BundleInfo("tiny", 16, ("ar", "unclip"), ar_rerank=True, max_steps=100)
    return Pipelines(handles=None, info=info)


def test_steps_beyond_the_decoders_timesteps_are_refused_with_the_decoders_message(pipelines):
    params = GenerationParams(prompt="a", route="unclip", steps=250)  # public bound: 250
    with pytest.raises(InvalidArgument, match=r"steps must be in \[1, 100\], got 250"):
        pipelines.check_params(params)
    pipelines.check_params(GenerationParams(prompt="a", route="unclip", steps=100))
    # ar does not run the decoder: its steps are not the decoder's business
    pipelines.check_params(GenerationParams(prompt="a", route="ar", steps=250))


def test_check_params_keeps_the_model_route_and_size_checks(pipelines):
    with pytest.raises(NotFound):
        pipelines.check_params(GenerationParams(prompt="a", route="teleport"))
    with pytest.raises(NotFound):
        pipelines.check_params(GenerationParams(prompt="a", model="other"))
    with pytest.raises(InvalidArgument, match="size"):
        pipelines.check_params(GenerationParams(prompt="a", size="24x24"))


def test_a_bundle_without_a_decoder_has_no_steps_bound():
    info = BundleInfo("lm-only", 16, ("ar",))
    Pipelines(handles=None, info=info).check_steps(10_000)
