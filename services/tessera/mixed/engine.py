"""Continuous batching for the mixed-modal model: the LM's engine with K weighted rows.

``MixedSampler`` is a ``tessera.lm.engine.ContinuousSampler`` (the same loop, cache pool,
admission between steps, packing and per-sequence seeded draws); what differs is only what
its hooks do:

- a sequence holds K rows (1..3), one per condition prompt: t2i guided by one scale runs
  (caption, no caption), an edit guided by two scales (InstructPix2Pix) runs (source +
  instruction, source alone, neither), unguided one row. Its logits are
  ``sum_k weight_k * logits_k`` over the image codes, the formula of
  ``tessera.mixed.generate`` (``text_weights``, ``edit_weights``);
- a prompt is a left-padded token + slot sequence (``sequences.Builder.prompt``), not text
  states; it ends with the output's ``<boi>``, whose logits give cell 0;
- ``forced`` cells (an edit's mask: every cell outside it) are the given codes exactly,
  whatever was drawn; the model reads them, so what it writes next fits them;
- with a ``<keep>`` token (``Vocab.keep``) an edit's ``sources`` codes are what a drawn
  ``<keep>`` writes; a sequence without a source (t2i) cannot draw it;
- every sequence draws from its own seeded uniforms (``draw_uniforms``), so its codes do not
  depend on its batch companions. Greedy is ``top_k=1``.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from tessera.common.errors import Cancelled, InvalidArgument
from tessera.common.limits import MIN_TEMPERATURE, MIN_WIRE_TEMPERATURE
from tessera.lm.engine import ContinuousSampler, ProgressFn
from tessera.lm.sampling import draw_uniforms
from tessera.mixed.generate import left_pad, mask_keep, write_keep
from tessera.mixed.model import MixedTransformer
from tessera.mixed.sequences import Sequence

MAX_ROWS_PER_SEQUENCE = 3  # an edit with two guidance scales


@dataclass(eq=False)
class _MixedRequest:
    """One submit(): n sequences of K rows each, admitted, stepping and leaving together."""

    prompts: list[list[Sequence]]  # per sequence its K prompts
    weights: torch.Tensor  # (n, MAX_ROWS_PER_SEQUENCE) guidance weights, 0 past K
    forced: torch.Tensor  # (n, L) int64 codes, -1 where the model draws
    sources: torch.Tensor  # (n, L) int64 codes a drawn <keep> writes, -1: no source
    temperature: torch.Tensor  # (n,)
    top_k: torch.Tensor  # (n,) int64
    top_p: torch.Tensor  # (n,) 1: off
    uniforms: torch.Tensor  # (n, L)
    future: Future
    on_progress: ProgressFn | None
    every: int
    count: int = 0
    reported: int = 0
    cache_rows: list[int] = field(default_factory=list)
    row_counts: list[int] = field(init=False)
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.row_counts = [len(p) for p in self.prompts]
        self.rows = sum(self.row_counts)

    @property
    def n(self) -> int:
        return len(self.row_counts)

    def stopped(self) -> Cancelled:
        total = self.uniforms.shape[1]
        return Cancelled(f"sampling cancelled after {self.count} of {total} cells")


class MixedSampler(ContinuousSampler):
    """``submit(prompts, weights, seeds, ...)`` -> a future of (n, g, g) int64 codes;
    ``on_progress(done, partial)`` gets the same shape, -1 where not drawn yet."""

    seq_fields = ("uniforms", "temperature", "top_k", "top_p", "weights", "forced", "sources")

    def __init__(self, model: MixedTransformer, max_rows: int = 48, *, static: bool = False):
        self.layout = model.config.layout
        super().__init__(model, max_rows, static=static)  # type: ignore[arg-type]
        self.name = "Mixed"

    @property
    def length(self) -> int:
        return self.layout.n_cells

    def submit(
        self,
        prompts: list[list[Sequence]],
        weights: list[list[float]],
        seeds: list[int],
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        forced: torch.Tensor | None = None,
        sources: torch.Tensor | None = None,
        on_progress: ProgressFn | None = None,
        progress_every: int = 16,
    ) -> Future:
        """Queue n sequences: ``prompts[i]`` sequence i's K prompts (each ending with the
        output ``<boi>``), ``weights[i]`` their K weights, ``seeds[i]`` its seed; ``forced``
        (n, n_cells) int64, -1 where the model draws; ``sources`` (n, n_cells) int64, an
        edit's source codes (what ``<keep>`` writes), -1 or None for none."""
        n, L = len(prompts), self.length
        if not n or len(weights) != n or len(seeds) != n:
            raise InvalidArgument(f"{n} prompts, {len(weights)} weights, {len(seeds)} seeds")
        for p, w in zip(prompts, weights, strict=True):
            if not 1 <= len(p) <= MAX_ROWS_PER_SEQUENCE or len(w) != len(p):
                raise InvalidArgument("a sequence needs 1..3 prompts and one weight each")
            if not all(math.isfinite(x) for x in w):
                raise InvalidArgument(f"guidance weights must be finite, got {w}")
        if not (math.isfinite(temperature) and temperature >= MIN_WIRE_TEMPERATURE):
            raise InvalidArgument(
                f"temperature must be a finite number >= {MIN_TEMPERATURE:g}, got {temperature}"
            )
        if not 0 <= top_k <= self.layout.vocab.image:
            raise InvalidArgument(f"top_k must be in [0, {self.layout.vocab.image}], got {top_k}")
        if progress_every < 1:
            raise InvalidArgument(f"progress_every must be >= 1, got {progress_every}")
        dev = self.device
        forced, sources = self._cells("forced", forced, n), self._cells("sources", sources, n)
        table = torch.zeros(n, MAX_ROWS_PER_SEQUENCE, device=dev)
        for i, w in enumerate(weights):
            table[i, : len(w)] = torch.tensor(w)
        request = _MixedRequest(
            prompts=prompts,
            weights=table,
            forced=forced,
            sources=sources,
            temperature=torch.full((n,), float(temperature), device=dev),
            top_k=torch.full((n,), int(top_k), dtype=torch.long, device=dev),
            top_p=torch.ones(n, device=dev),
            uniforms=draw_uniforms(seeds, L, dev),
            future=Future(),
            on_progress=on_progress,
            every=progress_every,
        )
        return self._enqueue(request)

    def _cells(self, name: str, codes: torch.Tensor | None, n: int) -> torch.Tensor:
        """A per-cell code table (n, n_cells) on the engine's device, -1 where none (all -1
        for None); InvalidArgument naming ``name`` for another shape or a code too large."""
        L = self.length
        if codes is None:
            codes = torch.full((n, L), -1, dtype=torch.long)
        if codes.shape != (n, L) or bool((codes >= self.layout.vocab.image).any()):
            raise InvalidArgument(f"{name} must be (n, {L}) codes below the codebook size")
        return codes.to(self.device, torch.long)

    # ---------------------------------------------------------------- the engine's hooks
    def _reset(self) -> None:
        super()._reset()
        self.weights = torch.empty(0, MAX_ROWS_PER_SEQUENCE, device=self.device)
        self.forced = torch.empty(0, self.length, dtype=torch.long, device=self.device)
        self.sources = torch.empty(0, self.length, dtype=torch.long, device=self.device)

    def _prefill_rows(self, requests: list, start: int, n: int) -> torch.Tensor:
        """Left-padded prompts, one per row; each row's next position is the padded length."""
        flat = [p for request in requests for seq in request.prompts for p in seq]
        tokens, slots, mask = (
            t.to(self.device) for t in left_pad(flat, self.layout.vocab.special("<pad>"))
        )
        fresh = self.model.new_cache(n)
        logits = self.model.prefill(tokens, slots, mask, fresh)
        P = tokens.shape[1]
        self._store_rows(fresh, start, n, P)
        self.offsets[start : start + n] = P - 1  # the output <boi>: cell c goes to P + c
        return logits

    def _decode_rows(self, token: torch.Tensor, count: torch.Tensor, n_rows: int) -> torch.Tensor:
        """Feed each row's last code (cell count-1) at its output slot."""
        layout = self.layout
        slot = layout.output_slot(count - 1)
        pos = self.offsets[:n_rows] + count
        return self.model.decode_rows(token + layout.vocab.text, slot, pos, self.cache.rows(n_rows))

    def _mix(self, logits: torch.Tensor, s0: int, s1: int, row_base: int) -> torch.Tensor:
        """``sum_k weight_k * logits_k`` over the image codes -> (S, image_vocab)."""
        rows = self.seq_rows[s0:s1] - row_base  # (S, K)
        first, last = self.layout.vocab.text, self.layout.vocab.size
        w = self.weights[s0:s1, : rows.shape[1], None]  # (S, K, 1)
        mixed = (logits[rows][..., first:last] * w).sum(1)  # (S, image_vocab [+ <keep>])
        if not self.layout.vocab.keep:
            return mixed
        source = self.sources[torch.arange(s0, s1, device=self.device), self.counts[s0:s1]]
        return mask_keep(mixed, source, self.layout.vocab.image)

    def _force(self, picks: torch.Tensor, seqs: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """A drawn ``<keep>`` becomes the source's code; pinned cells are their codes."""
        if self.layout.vocab.keep:
            picks = write_keep(picks, self.sources[seqs, count], self.layout.vocab.image)
        pinned = self.forced[seqs, count]
        return torch.where(pinned >= 0, pinned, picks)


@torch.no_grad()
def sample_codes(
    model: MixedTransformer,
    prompts: list[list[Sequence]],
    weights: list[list[float]],
    seeds: list[int],
    **options: object,
) -> torch.Tensor:
    """Offline: (n, g, g) codes through the engine the deployment serves with."""
    was_training = model.training
    engine = MixedSampler(model, max_rows=max(8, sum(len(p) for p in prompts)))
    try:
        return engine.submit(prompts, weights, seeds, **options).result()  # type: ignore[arg-type]
    finally:
        engine.close()
        model.train(was_training)
