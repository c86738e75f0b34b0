"""EngineService, the base of the engine-backed deployments: the engine's budget, health and
shutdown, on a tiny decoder; and the progress stream the streaming methods share."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from tessera.common.engine_service import EngineService
from tessera.decoder.engine import DenoiseBatcher
from tessera.decoder.model import DecoderConfig, LatentDecoder


class TinyDecoder(EngineService):
    """An engine-backed replica without a bundle: budget 4 rows, one request takes up to 6."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.device = torch.device("cpu")
        self.start_engine(DenoiseBatcher, LatentDecoder(DecoderConfig.tiny()).eval(), 4, 6)


@pytest.fixture()
def replica():
    service = TinyDecoder()
    yield service
    service.engine.close()


def test_the_engine_starts_with_room_for_one_maximal_request(replica):
    assert replica.engine.max_rows == 6 and replica.min_rows == 6
    assert replica.model_loaded is True
    replica.check_health()


def test_reconfigure_sets_the_rows_never_below_one_request(replica):
    replica.reconfigure({"max_rows": 32})
    assert replica.engine.max_rows == 32 and replica.user_config == {"max_rows": 32}
    replica.reconfigure({"max_rows": 2})
    assert replica.engine.max_rows == 6
    replica.reconfigure({"max_batch_size": 10})  # the old name
    assert replica.engine.max_rows == 10
    replica.reconfigure({"batch_wait_timeout_s": 0.0})  # no rows given: unchanged
    assert replica.engine.max_rows == 10


def test_a_stopped_engine_or_an_unloaded_model_is_unhealthy(replica):
    replica.engine.close()
    with pytest.raises(RuntimeError, match="the decoder sampler thread has stopped"):
        replica.check_health()
    replica.model_loaded = False
    with pytest.raises(RuntimeError, match="model not loaded"):
        replica.check_health()


def test_the_engine_closes_with_the_replica():
    service = TinyDecoder()
    thread = service.engine.thread
    service.__del__()
    assert not thread.is_alive() and service.engine.closed
    EngineService.__del__(EngineService())  # one that never started: nothing to close


async def test_stream_yields_the_previews_then_the_result():
    seen: list = []

    async def sample(on_progress):  # an engine reporting steps 1..3 from its thread
        def work():
            seen.extend(on_progress(i) for i in (1, 2, 3))
            return "result"

        return await asyncio.to_thread(work)

    stream = EngineService.stream(sample, lambda i: i if i < 3 else None)
    assert [item async for item in stream] == [(False, 1), (False, 2), (True, "result")]
    assert seen == [True, True, True]


async def test_closing_the_stream_tells_the_sampler_to_stop():
    seen: list = []
    gate = threading.Event()

    async def held(on_progress):
        def work():
            seen.append(on_progress(1))
            gate.wait(10)
            seen.append(on_progress(2))

        await asyncio.to_thread(work)

    stream = EngineService.stream(held, lambda i: i)
    assert await stream.__anext__() == (False, 1)
    await stream.aclose()
    gate.set()
    for _ in range(500):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(seen) == 2 and seen[1] is False  # (the first answer races with the close)


async def test_closing_the_stream_frees_the_engine_rows_before_the_next_preview(replica):
    """A stream with previews every 50 steps, closed after the first: the request leaves the
    engine at its next step, not at the next preview 50 steps on."""
    from tests.unit.decoder.conftest import fake_image_emb, fake_text

    engine = replica.engine
    emb, text = fake_image_emb(1, engine.model.config.clip_dim, seed=0), fake_text(1, seed=0)

    async def sample(on_progress):
        future = engine.submit(
            emb, text, seeds=[1], steps=100, on_progress=on_progress, progress_every=50
        )
        return await asyncio.wrap_future(future)

    stream = EngineService.stream(sample, lambda step, total, x0: step)
    assert await stream.__anext__() == (False, 50)
    at_close = engine.calls
    await stream.aclose()
    for _ in range(1000):
        if not engine.running and not engine.waiting:
            break
        await asyncio.sleep(0.01)
    assert not engine.running and not engine.waiting
    # the next preview, where the old stream stopped, was 50 steps on
    assert engine.calls - at_close < 25, (at_close, engine.calls)
