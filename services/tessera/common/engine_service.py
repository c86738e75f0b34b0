"""The base of the model deployments that sample through one engine (a ``StepLoop``): the
LanguageModel, Decoder and Prior.

It owns the engine's lifecycle: started with a row budget that fits one maximal request,
resized by ``reconfigure`` (``max_rows``), watched by ``check_health``, closed with the
replica. It also loads bundle components next to the shared text encoder, and turns an
engine's progress callback into an async stream for the server-streaming methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from torch import nn

from tessera.common.serving import BatchKnobs, load_model
from tessera.common.step_loop import StepLoop
from tessera.common.text_encoder import shared_text_encoder

ProgressCallback = Callable[..., bool]


class EngineService(BatchKnobs):
    """A deployment serving through ``self.engine``. Subclasses call ``load`` for their bundle
    components, then ``start_engine``; any ``@batched`` methods they have keep
    ``BatchKnobs``'s budgets."""

    engine: StepLoop
    min_rows = 0  # the most rows one request can take: the budget never goes below it

    def load(self, bundle_dir: str | Path, component: str, device: str | None) -> nn.Module:
        """A bundle component on this replica's device (sets ``device`` and the shared
        ``text_encoder`` there; a model with its own tokenizer, an imported Janus, names
        itself as ``own_text_encoder``)."""
        model, self.device = load_model(bundle_dir, component, device)
        own = getattr(model, "own_text_encoder", None)
        self.text_encoder = own if own is not None else shared_text_encoder(str(self.device))
        return model

    def start_engine(
        self, engine: type[StepLoop], model: nn.Module, rows: int, min_rows: int
    ) -> None:
        """Start ``engine(model, max_rows=rows)`` (raised to ``min_rows``, one maximal
        request); the replica is ready."""
        self.min_rows = min_rows
        self.engine = engine(model, max_rows=max(rows, min_rows))
        self.model_loaded = True

    def reconfigure(self, user_config: dict) -> None:
        """``max_rows`` (old name ``max_batch_size``): the engine's rows per step, never below
        one maximal request. There is no batch wait: requests join at the next step."""
        super().reconfigure(user_config)
        rows = user_config.get("max_rows", user_config.get("max_batch_size"))
        if rows is not None:
            self.engine.set_max_rows(max(int(rows), self.min_rows))

    async def stats(self) -> dict:
        """The engine's load: rows and jobs running, jobs waiting, steps run so far. Cheap;
        the tests watch a request whose caller went away leave the engine with it."""
        engine = self.engine
        return {
            "running_rows": engine.running_rows,
            "running": len(engine.running),
            "waiting": len(engine.waiting),
            "steps": engine.calls,
        }

    def check_health(self) -> None:
        super().check_health()
        if not self.engine.thread.is_alive():
            raise RuntimeError(f"the {self.engine.name} sampler thread has stopped")

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()

    @staticmethod
    async def stream(
        sample: Callable[[ProgressCallback], Awaitable[Any]],
        preview: Callable[..., Any],
    ) -> AsyncIterator[tuple[bool, Any]]:
        """Run ``sample(on_progress)`` and yield ``(False, preview(*report))`` for each
        progress report the engine makes while the stream is open (``preview`` returning None
        skips one, e.g. the last), then ``(True, result)``. Closing the stream cancels the
        sampling task, whose engine future the engine drops at its next step (not at the next
        progress report, which may be many steps away); ``on_progress`` returns False from
        then on, for a sampler that only listens to that."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        listening = True

        def on_progress(*report: Any) -> bool:
            if listening and (item := preview(*report)) is not None:
                loop.call_soon_threadsafe(events.put_nowait, item)
            return listening

        task = asyncio.ensure_future(sample(on_progress))
        task.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (item := await events.get()) is not None:
                yield False, item
            final = await task
        finally:
            listening = False
            if not task.done():
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                task.cancel()
        yield True, final
