"""Continuous (iteration-level) batching for the LM: the vLLM idea at Tessera's scale.

One thread (the loop of ``tessera.common.step_loop``, shared with the decoder and prior) owns a
fixed pool of KV-cache rows and runs the model one token at a time for every running sequence
together. A request that arrives while others are sampling is prefilled and
joins the running batch at the next step; a sequence that has all its tokens leaves at once,
freeing its rows for the next request. Requests never wait for a whole batch to finish.

Guidance is handled inside: a guided sequence holds two rows (its condition and the null
condition) whose logits are mixed before drawing; an unguided one holds one row. The loop
itself knows only "K rows per sequence": a subclass with other prompts (``_prefill_rows``),
another decode call (``_decode_rows``), another mixing of a sequence's K rows (``_mix``) or
pinned tokens (``_force``) serves another model through the same loop
(``tessera.mixed.engine``: K weighted rows over token + slot prompts, forced cells). Rows are kept
packed at the front of the cache, so a step is one model call on ``cache.rows(active)``: when a
request leaves, the last rows move into its holes (a few rows copied, not the whole cache).

Per-sequence state (tokens so far, sampling parameters, random draws) lives in tensors with
one row per running sequence, rebuilt only when the running set changes, so a step costs a
few tensor ops whatever the batch: no Python loop over rows or sequences per token.

Every sequence draws its uniform numbers from its own generator seeded with its own seed,
exactly as ``sample_tokens`` does: its tokens do not depend on who else is in the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

import torch

from tessera.common.errors import Cancelled, InvalidArgument
from tessera.common.step_loop import StepLoop
from tessera.common.text_encoder import TextBatch
from tessera.lm.kv import KVCache
from tessera.lm.model import ImageGPT, trim_text
from tessera.lm.sampling import (
    SamplingParams,
    draw_uniforms,
    filter_and_draw,
    guide,
    resolve_temperature,
    validate_params,
)

ProgressFn = Callable[[int, torch.Tensor], bool | None]


@dataclass(eq=False)
class _Request:
    """One submit(): n sequences that are admitted, step and leave together."""

    text: TextBatch  # one row per sequence
    scale: torch.Tensor  # (n,) guidance, the model's default resolved
    temperature: torch.Tensor  # (n,) likewise
    top_k: torch.Tensor  # (n,) int64
    top_p: torch.Tensor  # (n,)
    uniforms: torch.Tensor  # (n, L): each sequence's draws, from its own seeded generator
    future: Future
    on_progress: ProgressFn | None
    every: int
    count: int = 0  # tokens sampled so far, per sequence
    reported: int = 0  # tokens done at the last progress call
    cache_rows: list[int] = field(default_factory=list)  # see ContinuousSampler
    guided: list[bool] = field(init=False)
    row_counts: list[int] = field(init=False)  # cache rows per sequence: two when guided
    rows: int = field(init=False)  # cache rows it takes

    def __post_init__(self) -> None:
        self.guided = [s != 1.0 for s in self.scale.tolist()]
        self.row_counts = [2 if g else 1 for g in self.guided]
        self.rows = sum(self.row_counts)

    @property
    def n(self) -> int:
        """Sequences in this request."""
        return len(self.row_counts)

    def stopped(self) -> Cancelled:
        total = self.uniforms.shape[1]
        return Cancelled(f"sampling cancelled after {self.count} of {total} tokens")


class ContinuousSampler(StepLoop):
    """``submit()`` from any thread; results come back on a ``concurrent.futures.Future``.

    A ``StepLoop`` whose budget is the KV-cache rows: an iteration's step prefills the
    requests admitted before it (drawing their first token) and runs one decode step for the
    requests already running, then retires those that are done. ``steps`` counts the decode
    steps (``calls``, the loop's iterations, also counts prefill-only ones)."""

    resize_when_idle = True  # the cache is reallocated for a new max_rows
    rows_name = "cache rows"
    # Per-sequence tensors (one row per running sequence) besides ``tokens`` and ``counts``.
    seq_fields: tuple[str, ...] = ("uniforms", "scale", "temperature", "top_k", "top_p")

    def __init__(self, model: ImageGPT, max_rows: int = 32, *, static: bool = False) -> None:
        """``static=True`` turns iteration-level admission off: waiting requests join only
        when the running batch has drained (classic request-level batching). It exists as the
        baseline ``make bench`` measures continuous batching against."""
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device
        self.cache = model.new_cache(max_rows)
        self.offsets = torch.zeros(max_rows, dtype=torch.long, device=self.device)
        self.steps = 0  # decode steps run (for tests and metrics)
        super().__init__("LM", max_rows, static=static)

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
        cfg = self.config
        for p in params:
            validate_params(p, cfg.vocab_size)
        f32 = dict(dtype=torch.float32, device=self.device)
        scale = [
            cfg.guidance_scale if p.guidance_scale is None else p.guidance_scale for p in params
        ]
        request = _Request(
            text=text,
            scale=torch.tensor(scale, **f32),
            temperature=torch.tensor([resolve_temperature(p, cfg) for p in params], **f32),
            top_k=torch.tensor([p.top_k for p in params], dtype=torch.long, device=self.device),
            top_p=torch.tensor([p.top_p for p in params], **f32),
            uniforms=draw_uniforms([p.seed for p in params], cfg.n_tokens, self.device),
            future=Future(),
            on_progress=on_progress,
            every=progress_every,
        )
        return self._enqueue(request)

    # ---------------------------------------------------------------- the loop's hooks
    @property
    def length(self) -> int:
        """Tokens one sequence samples."""
        return self.config.n_tokens

    def _resize(self, max_rows: int) -> None:
        self.cache = self.model.new_cache(max_rows)
        self.offsets = torch.zeros(max_rows, dtype=torch.long, device=self.device)

    def _step(self) -> None:
        """Newcomers (admitted since the last step, at the end of ``running``) draw their
        first token in a prefill; the requests running before them draw their next one in
        one decode call."""
        before = len(self.first_seq), self.n_rows, self.n_seqs
        if len(self.running) > before[0]:
            self._prefill(self.running[before[0] :])
        if before[0]:
            self._decode(*before)
        self._retire()

    # ---------------------------------------------------------------- per-sequence tables
    def _reset(self) -> None:
        """Empty tables: at the start, and after a failed step dropped every request."""
        L, dev = self.length, self.device
        self.tokens = torch.empty(0, L, dtype=torch.long, device=dev)  # (S, L), -1 = not yet
        self.uniforms = torch.empty(0, L, device=dev)  # (S, L)
        self.counts = torch.empty(0, dtype=torch.long, device=dev)  # (S,) tokens so far
        self.scale = torch.empty(0, device=dev)  # (S,)
        self.temperature = torch.empty(0, device=dev)
        self.top_k = torch.empty(0, dtype=torch.long, device=dev)
        self.top_p = torch.empty(0, device=dev)
        self._layout()

    def _layout(self) -> None:
        """Row <-> sequence indices of the running requests. Sequences are numbered in
        request order; each has its K rows in order (the LM: its conditional row, then its
        null-condition twin if guided). ``seq_rows`` (S, K) pads a sequence with fewer rows
        with its first row."""
        R = sum(len(r.cache_rows) for r in self.running)
        row_seq, drop = [0] * R, [False] * R
        seq_rows: list[list[int]] = []
        first_seq = []
        for request in self.running:
            first_seq.append(len(seq_rows))
            rows = iter(request.cache_rows)
            for k in request.row_counts:
                mine = [next(rows) for _ in range(k)]
                for j, row in enumerate(mine):
                    row_seq[row], drop[row] = len(seq_rows), j > 0
                seq_rows.append(mine)
        K = max((len(r) for r in seq_rows), default=1)
        table = [r + r[:1] * (K - len(r)) for r in seq_rows]
        as_long = dict(dtype=torch.long, device=self.device)
        self.row_seq = torch.tensor(row_seq, **as_long)  # (R,) by cache row
        self.seq_rows = torch.tensor(table, **as_long).view(-1, K)  # (S, K)
        self.cond_row = self.seq_rows[:, 0]  # (S,)
        self.uncond_row = self.seq_rows[:, min(1, K - 1)]  # (S,) unguided: its cond row
        self.row_drop = drop  # (R,) the null-condition rows (every row after a sequence's first)
        self.first_seq = first_seq  # per running request: its first sequence index
        self.n_rows, self.n_seqs = R, len(seq_rows)

    def _prefill(self, requests: list) -> None:
        """Prefill the newcomers' rows, draw their first token, append their sequences."""
        start, first_seq = self.n_rows, self.n_seqs
        row = start
        for request in requests:  # newcomers take the rows after the running ones
            request.cache_rows = list(range(row, row + request.rows))
            row += request.rows
        fresh_tokens = [torch.full_like(r.uniforms, -1, dtype=torch.long) for r in requests]
        self.tokens = torch.cat([self.tokens, *fresh_tokens])
        self.counts = torch.cat([self.counts, *(torch.zeros_like(t[:, 0]) for t in fresh_tokens)])
        for name in self.seq_fields:
            setattr(
                self, name, torch.cat([getattr(self, name), *(getattr(r, name) for r in requests)])
            )
        self._layout()
        logits = self._prefill_rows(requests, start, self.n_rows - start)
        self._draw(logits, first_seq, self.n_seqs, row_base=start)
        for request in requests:
            request.count += 1

    def _prefill_rows(self, requests: list[_Request], start: int, n: int) -> torch.Tensor:
        """Run the newcomers' prompts into cache rows ``start..start+n`` (one per row, in
        row order) and set their ``offsets`` -> the logits of each row's first token (n, V).
        The LM: text prefix + BOS, the null condition on the rows after a sequence's first."""
        states, masks = [], []
        for request in requests:
            for i, k in enumerate(request.row_counts):
                states += [request.text.states[i]] * k
                masks += [request.text.mask[i]] * k
        states_t, mask_t = trim_text(
            torch.stack(states).to(self.device), torch.stack(masks).to(self.device)
        )
        drop = torch.tensor(self.row_drop[start:], device=self.device)
        fresh = self.model.new_cache(n, positions=states_t.shape[1] + 1)  # prefix + BOS
        logits = self.model.prefill(states_t, mask_t, fresh, drop_cond=drop)
        self._store_rows(fresh, start, n, fresh.length)  # prefix + BOS
        self.offsets[start : start + n] = fresh.prefix_len  # BOS sits at the prefix length
        return logits

    def _store_rows(self, fresh: KVCache, start: int, n: int, used: int) -> None:
        """Copy a prefilled cache's first ``used`` positions into rows ``start..start+n``."""
        for layer in range(self.config.n_layer):
            self.cache.k[layer][start : start + n, :, :used] = fresh.k[layer][:, :, :used]
            self.cache.v[layer][start : start + n, :, :used] = fresh.v[layer][:, :, :used]
        self.cache.key_mask[start : start + n, :used] = fresh.key_mask[:, :used]
        self.cache.key_mask[start : start + n, used:] = True  # sampled slots (a leaver's mask)

    def _decode(self, n_requests: int, n_rows: int, n_seqs: int) -> None:
        """One token for the first ``n_rows`` rows (those running before this step's
        newcomers), i.e. the first ``n_seqs`` sequences and ``n_requests`` requests."""
        seq = self.row_seq[:n_rows]
        count = self.counts[seq]  # (R,) the cell each row writes next
        token = self.tokens[seq, count - 1]  # (R,) the code it sampled last
        logits = self._decode_rows(token, count, n_rows)
        self.steps += 1
        self._draw(logits, 0, n_seqs, row_base=0)
        for request in self.running[:n_requests]:
            request.count += 1

    def _decode_rows(self, token: torch.Tensor, count: torch.Tensor, n_rows: int) -> torch.Tensor:
        """The first ``n_rows`` rows' next logits (R, V): ``token`` (R,) each row's last
        sample, ``count`` (R,) its sequence's tokens so far."""
        return self.model.decode_rows(token, count, self.offsets[:n_rows], self.cache.rows(n_rows))

    def _mix(self, logits: torch.Tensor, s0: int, s1: int, row_base: int) -> torch.Tensor:
        """Sequences s0..s1-1's logits from their rows' (logits row 0 is cache row
        ``row_base``): the LM mixes each guided pair by its scale."""
        cond = logits[self.cond_row[s0:s1] - row_base]
        scale = self.scale[s0:s1]
        if bool((scale != 1).any()):
            cond = guide(cond, logits[self.uncond_row[s0:s1] - row_base], scale)
        return cond

    def _force(self, picks: torch.Tensor, seqs: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The tokens kept for sequences ``seqs`` at positions ``count`` (none pinned here)."""
        return picks

    def _draw(self, logits: torch.Tensor, s0: int, s1: int, row_base: int) -> None:
        """Mix each sequence's rows, draw one token for sequences s0..s1-1 (logits row 0 is
        cache row ``row_base``)."""
        mixed = self._mix(logits, s0, s1, row_base)
        seqs = torch.arange(s0, s1, device=self.device)
        count = self.counts[s0:s1]
        picks = filter_and_draw(
            mixed,
            self.temperature[s0:s1],
            self.top_k[s0:s1],
            self.top_p[s0:s1],
            self.uniforms[seqs, count],
        )
        self.tokens[seqs, count] = self._force(picks, seqs, count)
        self.counts[s0:s1] += 1

    def _grids(self, k: int) -> torch.Tensor:
        """Running request k's grids so far, (n, g, g), -1 where not yet sampled."""
        g, first = self.config.grid_size, self.first_seq[k]
        n = self.running[k].n
        return self.tokens[first : first + n].view(n, g, g).clone()

    def _retire(self) -> None:
        """Report progress; drop finished or cancelled requests' rows and compact the cache."""
        L = self.length
        gone: set[int] = set()
        for k, request in enumerate(self.running):
            done = request.count
            due = request.on_progress is not None and (
                done - request.reported >= request.every or done == L
            )
            if due:
                request.reported = done
            progress = partial(request.on_progress, done, self._grids(k)) if due else None
            if self._leaves(request, progress, partial(self._grids, k) if done == L else None):
                gone.add(k)
        if gone:
            self._compact(gone)

    def _compact(self, gone: set[int]) -> None:
        """Drop running requests ``gone`` (indices). The highest kept rows move into the
        holes below, so the running rows stay packed at the front; sequences keep their
        request order."""
        kept = [r for k, r in enumerate(self.running) if k not in gone]
        n = sum(len(r.cache_rows) for r in kept)
        holes = sorted(row for k in gone for row in self.running[k].cache_rows if row < n)
        movers = sorted(row for r in kept for row in r.cache_rows if row >= n)
        if holes:
            dst = torch.tensor(holes, dtype=torch.long, device=self.device)
            src = torch.tensor(movers, dtype=torch.long, device=self.device)
            for layer in range(self.config.n_layer):
                self.cache.k[layer][dst] = self.cache.k[layer][src]
                self.cache.v[layer][dst] = self.cache.v[layer][src]
            self.cache.key_mask[dst] = self.cache.key_mask[src]
            self.offsets[dst] = self.offsets[src]
            moved = dict(zip(movers, holes, strict=True))
            for request in kept:
                request.cache_rows = [moved.get(row, row) for row in request.cache_rows]
        keep_seqs = [
            self.first_seq[k] + i
            for k, request in enumerate(self.running)
            if k not in gone
            for i in range(request.n)
        ]
        seqs = torch.tensor(keep_seqs, dtype=torch.long, device=self.device)
        for name in ("tokens", "counts", *self.seq_fields):
            setattr(self, name, getattr(self, name)[seqs])
        self.running = kept
        self._layout()
