"""A deterministic stand-in executor with the pipelines' signature, for tests, benchmarks and
running the jobs stack without models. Its images are fake: nothing runs it unless named
(``--executor tessera.jobs.synthetic:SyntheticExecutor``, ``JobWorker.bind(executor=...)``).

It does real work: renders a PNG from (prompt, seed, index), reports ``steps`` progress events
with preview PNGs (rows revealed so far), sleeping ``step_s`` per step (the time a model
step would wait on another replica). Prompts starting with ``fail:`` raise a retryable error
every time, ``invalid:`` a permanent InvalidArgument, ``flaky:<k>:`` fails its first k runs in
this executor instance.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
from collections.abc import Awaitable, Callable

import numpy as np
from PIL import Image

from tessera.common.errors import Cancelled, InvalidArgument
from tessera.routes.schemas import GenerationParams
from tessera.v1 import common_pb2, generation_pb2

OnEvent = Callable[[generation_pb2.GenerateStreamResponse], Awaitable[bool]]


def render(prompt: str, seed: int, index: int, size: int) -> np.ndarray:
    """uint8 (size, size, 3): a 4x4 colour grid chosen by sha512(prompt, seed, index)."""
    digest = hashlib.sha512(f"{prompt}\x00{seed}\x00{index}".encode()).digest()
    cells = np.frombuffer(digest[:48], dtype=np.uint8).reshape(4, 4, 3)
    return np.kron(cells, np.ones((size // 4, size // 4, 1), dtype=np.uint8))


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def expected_png(prompt: str, seed: int, index: int = 0, size: int = 16) -> bytes:
    """The PNG the executor returns for image ``index`` (tests compare results with it)."""
    return png(render(prompt, seed, index, size))


class SyntheticExecutor:
    """``await executor(params, on_event) -> GenerateResponse``; raises Cancelled when
    ``on_event`` returns False."""

    def __init__(
        self,
        steps: int = 4,
        step_s: float = 0.02,
        size: int = 16,
        record_path: str | None = None,
    ) -> None:
        if size % 4:
            raise ValueError("size must be a multiple of 4")
        self.steps = steps
        self.step_s = step_s
        self.size = size
        self.record_path = record_path
        self._runs: dict[str, int] = {}

    def _record(self, line: str) -> None:
        # One O_APPEND write per line: lines from concurrent processes never interleave.
        if self.record_path:
            fd = os.open(self.record_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

    async def __call__(
        self, params: GenerationParams, on_event: OnEvent
    ) -> generation_pb2.GenerateResponse:
        started = time.perf_counter()
        seed = params.seed if params.seed is not None else 0
        prompt = params.prompt
        self._runs[prompt] = self._runs.get(prompt, 0) + 1
        self._record(f"start\t{os.getpid()}\t{prompt}")
        if prompt.startswith("invalid:"):
            raise InvalidArgument(f"synthetic executor rejects {prompt!r}")
        steps = getattr(params, "steps", None) or self.steps  # an edit job has none
        finals = [render(prompt, seed, i, self.size) for i in range(params.n)]
        for step in range(1, steps + 1):
            await asyncio.sleep(self.step_s)
            rows = self.size * step // steps
            preview = np.full_like(finals[0], 255)
            preview[:rows] = finals[0][:rows]
            event = generation_pb2.GenerateStreamResponse(
                progress=common_pb2.Progress(step=step, total_steps=steps, stage="decoder"),
                previews=[common_pb2.Image(png=png(preview), width=self.size, height=self.size)],
            )
            if not await on_event(event):
                self._record(f"cancelled\t{os.getpid()}\t{prompt}\t{step}")
                raise Cancelled("job cancelled")
            if prompt.startswith("fail:") and step == 1:
                raise RuntimeError(f"synthetic failure for {prompt!r}")
            if prompt.startswith("flaky:") and step == 1:
                k = int(prompt.split(":")[1])
                if self._runs[prompt] <= k:
                    raise RuntimeError(f"flaky failure {self._runs[prompt]}/{k}")
        self._record(f"done\t{os.getpid()}\t{prompt}")
        return generation_pb2.GenerateResponse(
            images=[
                common_pb2.Image(png=png(a), width=self.size, height=self.size) for a in finals
            ],
            seed=seed,
            route=params.route,
            model="synthetic",
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
        )
