"""Continuous (iteration-level) batching for the LM: the vLLM idea at Tessera's scale.

One thread owns a fixed pool of KV-cache rows and runs the model one token at a time for every
running sequence together. A request that arrives while others are sampling is prefilled and
joins the running batch at the next step; a sequence that has all its tokens leaves at once,
freeing its rows for the next request. Requests never wait for a whole batch to finish.

Guidance is handled inside: a guided sequence holds two rows (its condition and the null
condition) whose logits are mixed before drawing; an unguided one holds one row. Rows are kept
packed at the front of the cache (leavers are compacted away), so a step is one model call on
``cache.rows(active)``.

Every sequence draws from its own generator seeded with its own seed, one uniform per token,
exactly as ``sample_tokens`` does: its tokens do not depend on who else is in the batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from tessera.common.device import make_generator
from tessera.common.errors import Cancelled, InvalidArgument, Unavailable
from tessera.common.serving import settle
from tessera.common.text_encoder import TextBatch
from tessera.lm.model import ImageGPT, trim_text
from tessera.lm.sampling import (
    SamplingParams,
    filter_and_draw,
    guide,
    resolve_temperature,
    validate_params,
)

ProgressFn = Callable[[int, torch.Tensor], bool | None]


@dataclass
class _Sequence:
    params: SamplingParams
    scale: float  # guidance, the model's default resolved
    temperature: float  # likewise
    generator: torch.Generator
    tokens: torch.Tensor  # (L,) int64, -1 where not yet sampled
    count: int = 0  # tokens sampled so far

    @property
    def guided(self) -> bool:
        return self.scale != 1.0


@dataclass
class _Request:
    text: TextBatch  # one row per sequence
    sequences: list[_Sequence]
    future: Future
    on_progress: ProgressFn | None
    every: int
    reported: int = 0  # tokens done at the last progress call
    rows_needed: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows_needed = sum(2 if s.guided else 1 for s in self.sequences)

    def done_tokens(self) -> int:
        return min(s.count for s in self.sequences)

    def grids(self, g: int) -> torch.Tensor:
        return torch.stack([s.tokens for s in self.sequences]).view(-1, g, g)


@dataclass
class _Row:
    seq: _Sequence
    request: _Request
    uncond: bool  # the null-condition twin of a guided sequence


class ContinuousSampler:
    """``submit()`` from any thread; results come back on a ``concurrent.futures.Future``."""

    def __init__(self, model: ImageGPT, max_rows: int = 32, *, static: bool = False) -> None:
        """``static=True`` turns iteration-level admission off: waiting requests join only
        when the running batch has drained (classic request-level batching). It exists as the
        baseline ``make bench`` measures continuous batching against."""
        self.model = model.eval()
        self.static = static
        self.config = model.config
        self.device = model.lm_head.weight.device
        self.max_rows = max_rows
        self.cache = model.new_cache(max_rows)
        self.rows: list[_Row] = []  # running rows, packed: row i is cache row i
        self.offsets = torch.zeros(max_rows, dtype=torch.long, device=self.device)
        self.waiting: list[_Request] = []
        self.lock = threading.Condition()
        self.closed = False
        self.steps = 0  # decode steps run (for tests and metrics)
        self.max_running = 0  # most rows ever run together
        self.pending_resize: int | None = None
        self.thread = threading.Thread(target=self._loop, name="lm-continuous-batch", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- public
    @property
    def running_rows(self) -> int:
        return len(self.rows)

    def set_max_rows(self, max_rows: int) -> None:
        """Resize the row pool (takes effect when the pool is idle)."""
        with self.lock:
            self.pending_resize = max_rows
            self.lock.notify()

    def submit(
        self,
        text: TextBatch,
        params: list[SamplingParams],
        on_progress: ProgressFn | None = None,
        progress_every: int = 16,
    ) -> Future:
        """Queue one request (one row of ``text`` per entry of ``params``).

        The future resolves to (n, g, g) int64 grids, or raises ``Cancelled`` when
        ``on_progress`` returned False. ``future.cancel()`` (what cancelling an asyncio task
        awaiting ``asyncio.wrap_future`` does) drops the request at the next step.
        """
        if len(params) != text.states.shape[0] or not params:
            raise InvalidArgument(f"{len(params)} parameter sets for {text.states.shape[0]} rows")
        if progress_every < 1:
            raise InvalidArgument(f"progress_every must be >= 1, got {progress_every}")
        L = self.config.n_tokens
        sequences = []
        for p in params:
            validate_params(p, self.config.vocab_size)
            scale = self.config.guidance_scale if p.guidance_scale is None else p.guidance_scale
            tokens = torch.full((L,), -1, dtype=torch.long)
            temperature = resolve_temperature(p, self.config)
            generator = make_generator(p.seed, self.device)
            sequences.append(_Sequence(p, float(scale), temperature, generator, tokens))
        request = _Request(text, sequences, Future(), on_progress, progress_every)
        if request.rows_needed > self.max_rows:
            raise InvalidArgument(
                f"request needs {request.rows_needed} cache rows; this replica has {self.max_rows}"
            )
        with self.lock:
            if self.closed:
                raise Unavailable("the LM sampler is shut down")
            self.waiting.append(request)
            self.lock.notify()
        return request.future

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(timeout=10)

    # ---------------------------------------------------------------- the loop
    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.closed and not self.waiting and not self.rows:
                    self.lock.wait()
                if self.closed:
                    break
                resize = self.pending_resize
                if resize and not self.rows:
                    self.max_rows, self.pending_resize = resize, None
                    self.cache = self.model.new_cache(resize)
                    self.offsets = torch.zeros(resize, dtype=torch.long, device=self.device)
                admitted = self._take_admissible()
            try:
                with torch.inference_mode():
                    running = len(self.rows)
                    if admitted:  # newcomers draw their first token here, the next with all
                        self._prefill(admitted)
                    if running:
                        self._decode(running)
                    self._retire()
            except Exception as e:  # fail the running requests, keep serving new ones
                running = [r.request for r in self.rows] + admitted
                for request in {id(r): r for r in running}.values():
                    if not request.future.done():
                        settle(request.future, error=e)
                self.rows = []
        for request in self.waiting + [r.request for r in self.rows]:
            if not request.future.done():
                settle(request.future, error=Unavailable("the LM sampler shut down"))

    def _take_admissible(self) -> list[_Request]:
        """Waiting requests that fit in the free rows, first come first served."""
        self.waiting = [r for r in self.waiting if not r.future.cancelled()]
        if self.static and self.rows:
            return []
        free, taken = self.max_rows - len(self.rows), []
        while self.waiting and self.waiting[0].rows_needed <= free:
            request = self.waiting.pop(0)
            free -= request.rows_needed
            taken.append(request)
        return taken

    def _prefill(self, requests: list[_Request]) -> None:
        """Run the newcomers' prefixes + BOS, draw their first token, append their rows."""
        rows: list[_Row] = []
        states, masks = [], []
        for request in requests:
            for i, seq in enumerate(request.sequences):
                for uncond in (False, True) if seq.guided else (False,):
                    rows.append(_Row(seq, request, uncond))
                    states.append(request.text.states[i])
                    masks.append(request.text.mask[i])
        states_t, mask_t = trim_text(
            torch.stack(states).to(self.device), torch.stack(masks).to(self.device)
        )
        drop = torch.tensor([r.uncond for r in rows], device=self.device)
        fresh = self.model.new_cache(len(rows))
        logits = self.model.prefill(states_t, mask_t, fresh, drop_cond=drop)
        start, n = len(self.rows), len(rows)
        used = fresh.length  # prefix + BOS
        for layer in range(self.config.n_layer):
            self.cache.k[layer][start : start + n, :, :used] = fresh.k[layer][:, :, :used]
            self.cache.v[layer][start : start + n, :, :used] = fresh.v[layer][:, :, :used]
        self.cache.key_mask[start : start + n, :used] = fresh.key_mask[:, :used]
        self.cache.key_mask[start : start + n, used:] = True  # image slots (a leaver's mask)
        self.offsets[start : start + n] = fresh.prefix_len  # BOS sits at the prefix length
        self.rows.extend(rows)
        self._draw(logits, rows)

    def _decode(self, n: int) -> None:
        """One token for the first ``n`` rows (those running before this step's newcomers)."""
        self.max_running = max(self.max_running, len(self.rows))
        rows = self.rows[:n]
        token = torch.tensor([r.seq.tokens[r.seq.count - 1] for r in rows], device=self.device)
        cell = torch.tensor([r.seq.count for r in rows], device=self.device)
        logits = self.model.decode_rows(token, cell, self.offsets[:n], self.cache.rows(n))
        self.steps += 1
        self._draw(logits, rows)

    def _draw(self, logits: torch.Tensor, rows: list[_Row]) -> None:
        """Mix each guided pair, draw one token per sequence, report progress."""
        cond_at: dict[int, int] = {}
        uncond_at: dict[int, int] = {}
        for i, r in enumerate(rows):
            (uncond_at if r.uncond else cond_at)[id(r.seq)] = i
        seqs = [r.seq for r in rows if not r.uncond]
        cond = logits[[cond_at[id(s)] for s in seqs]]
        if any(s.guided for s in seqs):
            unc = logits[[uncond_at.get(id(s), cond_at[id(s)]) for s in seqs]]
            scale = torch.tensor([s.scale for s in seqs], device=self.device)
            cond = guide(cond, unc, scale)
        f32 = dict(dtype=torch.float32, device=self.device)
        temperature = torch.tensor([s.temperature for s in seqs], **f32)
        top_k = torch.tensor([s.params.top_k for s in seqs], dtype=torch.long, device=self.device)
        top_p = torch.tensor([s.params.top_p for s in seqs], **f32)
        uniform = torch.stack(
            [torch.rand((), generator=s.generator, device=self.device) for s in seqs]
        )
        picks = filter_and_draw(cond, temperature, top_k, top_p, uniform).cpu()
        for s, code in zip(seqs, picks.tolist(), strict=True):
            s.tokens[s.count] = code
            s.count += 1

    def _retire(self) -> None:
        """Report progress; drop finished or cancelled requests' rows and compact the cache."""
        L, g = self.config.n_tokens, self.config.grid_size
        gone: set[int] = set()
        for request in {id(r.request): r.request for r in self.rows}.values():
            if request.future.done():  # cancelled by its caller (Future.cancel())
                gone.add(id(request))
                continue
            done = request.done_tokens()
            if request.on_progress is not None and (
                done - request.reported >= request.every or done == L
            ):
                request.reported = done
                try:
                    keep = request.on_progress(done, request.grids(g).clone())
                except Exception as e:  # a broken callback fails its own request only
                    settle(request.future, error=e)
                    gone.add(id(request))
                    continue
                if keep is not None and not keep:
                    stopped = Cancelled(f"sampling cancelled after {done} of {L} tokens")
                    settle(request.future, error=stopped)
                    gone.add(id(request))
                    continue
            if done == L:
                settle(request.future, request.grids(g))
                gone.add(id(request))
        if not gone:
            return
        keep = [i for i, r in enumerate(self.rows) if id(r.request) not in gone]
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            n = len(keep)
            for layer in range(self.config.n_layer):
                self.cache.k[layer][:n] = self.cache.k[layer][index]
                self.cache.v[layer][:n] = self.cache.v[layer][index]
            self.cache.key_mask[:n] = self.cache.key_mask[index]
            self.offsets[:n] = self.offsets[index].clone()
            self.rows = [self.rows[i] for i in keep]
