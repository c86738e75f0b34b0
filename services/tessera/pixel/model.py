"""Image Transformer (Parmar et al. 2018): a decoder-only transformer over sub-pixels (the
``pixel`` route).

The image is the sequence of its sub-pixel intensities in raster order, R, G, B of pixel 0,
then of pixel 1, ...: L = 3 * S * S steps, each a 256-way softmax. The sequence the model
sees is::

    [ text prefix (T <= text_len) ]  [ BOS | v_0 | ... | v_{L-2} ]  ->  predicts v_0 ... v_{L-1}

* The text prefix is the frozen MiniLM states projected to ``n_embd`` (as in the ``ar`` LM,
  ``tessera.lm.model``), with a learned null condition for classifier-free guidance. The
  prefix attends to itself; every image position attends to the whole prefix.
* **Local 1D attention** (the paper's memory-efficient variant): image positions are cut into
  query blocks of ``query_block`` sub-pixels; a query attends causally to its own block and
  to the ``memory_block`` positions before the block, never further back. Attention cost per
  position is bounded by ``query_block + memory_block`` (+ the prefix), so a whole image
  costs time linear in its pixels instead of quadratic.
* **A bounded KV cache**: sampling keeps the prefix's keys plus a ring buffer of
  ``query_block + memory_block`` image keys per layer (``PixelCache``), whatever the image
  size; the ``ar`` LM's cache holds every position of the sequence.
* Every input carries the embedding of the position it *predicts* (row, column, channel)
  and its own value tagged with its channel (BOS for the first slot).

The cache has the shape the LM's continuous-batching engine expects (``k``/``v`` per layer,
``key_mask``, ``length``/``prefix_len``, ``rows(n)``; ``prefill`` and ``decode_rows``), so
``tessera.pixel.engine`` reuses ``tessera.lm.engine.ContinuousSampler`` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tessera.common.text_encoder import DEFAULT_MAX_TOKENS, TEXT_DIM, TextBatch
from tessera.lm.model import MLP, additive_mask
from tessera.lm.prefix import TextConditioned

LEVELS = 256  # intensities per sub-pixel
CHANNELS = 3


@dataclass
class PixelConfig:
    image_size: int = 16  # S: the image is S x S RGB, 3 * S * S sub-pixel steps
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    query_block: int = 48  # sub-pixels per query block (one 16 px row)
    memory_block: int = 192  # sub-pixels before a query block that it may attend to
    dropout: float = 0.0
    bias: bool = False
    text_dim: int = TEXT_DIM
    text_len: int = DEFAULT_MAX_TOKENS
    cond_dropout: float = 0.1
    guidance_scale: float = 1.5
    temperature: float = 1.0

    @classmethod
    def tiny(cls, **overrides: object) -> PixelConfig:
        """A tiny model (4x4 images, ~30k parameters) for tests and `tessera models init`."""
        base = cls(image_size=4, n_layer=2, n_head=2, n_embd=32, query_block=12, memory_block=12)
        return replace(base, **overrides)

    # What the LM engine reads (tessera.lm.engine.ContinuousSampler).
    @property
    def n_tokens(self) -> int:
        """Sub-pixel steps per image."""
        return CHANNELS * self.image_size * self.image_size

    @property
    def vocab_size(self) -> int:
        return LEVELS

    @property
    def window(self) -> int:
        """Image keys one query may see at most: its block plus the memory block."""
        return self.query_block + self.memory_block


class PixelCache:
    """Per layer (B, nh, text_len + window, hd) keys and values: the prefix in the first
    ``text_len`` slots (padding masked by ``key_mask``), then a ring buffer where image
    position i lives in slot ``text_len + i % window``."""

    def __init__(
        self, config: PixelConfig, batch: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        hd = config.n_embd // config.n_head
        shape = (batch, config.n_head, config.text_len + config.window, hd)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.key_mask = torch.ones(batch, shape[2], dtype=torch.bool, device=device)
        self.length = 0
        self.prefix_len = 0

    def rows(self, n: int) -> PixelCache:
        view = object.__new__(PixelCache)
        view.k, view.v = [k[:n] for k in self.k], [v[:n] for v in self.v]
        view.key_mask, view.length, view.prefix_len = self.key_mask[:n], self.length, 0
        return view

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def local_mask(config: PixelConfig, n: int, device: torch.device) -> torch.Tensor:
    """Which window keys each query block position may see: (nb, qb, mb + qb) bool.

    Key w of block b's window is image position b*qb - mb + w; query r is b*qb + r. Allowed:
    not in the future (w - mb <= r) and not before the image (b*qb - mb + w >= 0)."""
    qb, mb = config.query_block, config.memory_block
    nb = -(-n // qb)
    w = torch.arange(mb + qb, device=device).view(1, 1, -1)
    r = torch.arange(qb, device=device).view(1, -1, 1)
    b = torch.arange(nb, device=device).view(-1, 1, 1)
    return (w - mb <= r) & (b * qb - mb + w >= 0)


class LocalAttention(nn.Module):
    def __init__(self, config: PixelConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.config = config
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        return tuple(t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))

    def out(self, y: torch.Tensor) -> torch.Tensor:
        B, nh, T, hd = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, nh * hd)))

    def forward(
        self,
        x: torch.Tensor,
        P: int,
        prefix_mask: torch.Tensor,
        window_mask: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Full sequence. x (B, P + n, C): prefix then image; prefix_mask (B, P) bool;
        window_mask from ``local_mask`` -> (B, P + n, C). With ``cache`` (a prefill, n <=
        window) the prefix's and the image positions' keys and values are written to it."""
        q, k, v = self.qkv(x)  # (B, nh, P + n, hd)
        B, nh, _, hd = q.shape
        if cache is not None:
            L, n = self.config.text_len, x.shape[1] - P
            for store, t in zip(cache, (k, v), strict=True):
                store[:, :, :P] = t[:, :, :P]
                store[:, :, L : L + n] = t[:, :, P:]
        pk, pv = k[:, :, :P], v[:, :, :P]
        pmask = prefix_mask.view(B, 1, 1, P)
        # the prefix attends to the prefix
        y_prefix = F.scaled_dot_product_attention(q[:, :, :P], pk, pv, attn_mask=pmask)
        # image positions: blocks of qb queries over [prefix | mb before the block | block]
        qb, mb = self.config.query_block, self.config.memory_block
        n = x.shape[1] - P
        nb = -(-n // qb)
        pad = nb * qb - n

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B,nh,n,hd) -> (B,nh,nb,mb+qb,hd)
            t = F.pad(t[:, :, P:], (0, 0, mb, pad))
            return t.unfold(2, mb + qb, qb).transpose(-1, -2)

        qi = F.pad(q[:, :, P:], (0, 0, 0, pad)).view(B, nh, nb, qb, hd)
        ki = torch.cat([pk.unsqueeze(2).expand(-1, -1, nb, -1, -1), windows(k)], dim=3)
        vi = torch.cat([pv.unsqueeze(2).expand(-1, -1, nb, -1, -1), windows(v)], dim=3)
        mask = torch.cat(
            [
                pmask.view(B, 1, 1, 1, P).expand(-1, -1, nb, qb, -1),
                window_mask.view(1, 1, nb, qb, mb + qb).expand(B, -1, -1, -1, -1),
            ],
            dim=-1,
        )  # (B, 1, nb, qb, P + mb + qb)
        y = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask)  # (B, nh, nb, qb, hd)
        y = y.reshape(B, nh, nb * qb, hd)[:, :, :n]
        return self.out(torch.cat([y_prefix, y], dim=2))

    def step(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor],
        bias: torch.Tensor,
    ) -> torch.Tensor:
        """One image position per row: x (B, 1, C) at image positions ``pos`` (B,); the cache
        (B, nh, text_len + window, hd) per tensor; bias (B, 1, 1, text_len + window) additive."""
        q, k, v = self.qkv(x)  # (B, nh, 1, hd)
        cache_k, cache_v = cache
        rows = torch.arange(x.shape[0], device=x.device)
        slot = self.config.text_len + pos % self.config.window
        cache_k[rows, :, slot] = k[:, :, 0]
        cache_v[rows, :, slot] = v[:, :, 0]
        scores = (q @ cache_k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias
        return self.out(torch.softmax(scores, dim=-1) @ cache_v)


class Block(nn.Module):
    def __init__(self, config: PixelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = LocalAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, *args: object) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), *args)
        return x + self.mlp(self.ln_2(x))

    def step(self, x: torch.Tensor, *args: object) -> torch.Tensor:
        x = x + self.attn.step(self.ln_1(x), *args)
        return x + self.mlp(self.ln_2(x))


class ImageTransformer(TextConditioned):
    config_class = PixelConfig

    def __init__(self, config: PixelConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.add_text_prefix(config)
        # inputs: value v of channel c at index c * 256 + v; BOS at 3 * 256
        self.val_emb = nn.Embedding(CHANNELS * LEVELS + 1, C)
        self.row_emb = nn.Embedding(config.image_size, C)
        self.col_emb = nn.Embedding(config.image_size, C)
        self.chan_emb = nn.Embedding(CHANNELS, C)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(C, bias=config.bias)
        self.lm_head = nn.Linear(C, LEVELS, bias=False)
        self.init_weights()

    def embed_image(self, prev: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """prev (B, t) the value before each position (-1: BOS), pos (t,) or (B, t) image
        positions -> (B, t, C): the previous value tagged with its channel, plus the row,
        column and channel of the position predicted."""
        S = self.config.image_size
        index = torch.where(prev < 0, CHANNELS * LEVELS, ((pos - 1) % CHANNELS) * LEVELS + prev)
        pixel, chan = pos // CHANNELS, pos % CHANNELS
        where = self.row_emb(pixel // S) + self.col_emb(pixel % S) + self.chan_emb(chan)
        return self.val_emb(index) + where

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(h).float()

    def forward(
        self,
        values: torch.Tensor,
        states: torch.Tensor,
        mask: torch.Tensor,
        *,
        drop_cond: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        cache: PixelCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for sub-pixels 0..n given the first n: values (B, n) int64 in [0, 255]
        (raster order, R G B per pixel), states (B, T, 384), mask (B, T) -> (B, n+1, 256).
        With ``targets`` (B, n+1) also the mean cross-entropy in nats per sub-pixel."""
        B, n = values.shape
        if n >= self.config.n_tokens:
            raise ValueError(f"at most {self.config.n_tokens - 1} values, got {n}")
        if drop_cond is None and self.training and self.config.cond_dropout > 0:
            drop_cond = torch.rand(B, device=values.device) < self.config.cond_dropout
        prefix, pmask = self.embed_prefix(states, mask, drop_cond)  # (B, P, C)
        prev = F.pad(values, (1, 0), value=-1)  # (B, n+1): BOS first
        pos = torch.arange(n + 1, device=values.device)
        x = self.drop(torch.cat([prefix, self.embed_image(prev, pos)], dim=1))
        P = prefix.shape[1]
        wmask = local_mask(self.config, n + 1, values.device)
        for i, block in enumerate(self.blocks):
            layer = (cache.k[i], cache.v[i]) if cache is not None else None
            x = block(x, P, pmask, wmask, layer)
        logits = self.head(self.ln_f(x[:, P:]))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, LEVELS), targets.reshape(-1))
        return logits, loss

    # --- the KV-cached path the LM engine drives ------------------------------------------
    def new_cache(self, batch: int, positions: int | None = None) -> PixelCache:
        """``positions`` (how many slots the caller will fill, as ``ImageGPT.new_cache``)
        changes nothing here: the prefix and the ring buffer have fixed slots."""
        p = self.lm_head.weight
        return PixelCache(self.config, batch, p.device, p.dtype)

    def prefill(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        cache: PixelCache,
        drop_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Prefix + BOS into an empty cache -> logits for sub-pixel 0, (B, 256)."""
        B, T = mask.shape
        empty = torch.zeros(B, 0, dtype=torch.long, device=states.device)
        logits, _ = self.forward(empty, states, mask, drop_cond=drop_cond, cache=cache)
        _, pmask = self.embed_prefix(states, mask, drop_cond)
        L = self.config.text_len
        cache.key_mask[:, :T] = pmask
        cache.key_mask[:, T:L] = False
        cache.key_mask[:, L:] = True
        cache.length, cache.prefix_len = L + 1, L
        return logits[:, -1]

    def decode_rows(
        self, token: torch.Tensor, cell: torch.Tensor, offset: torch.Tensor, cache: PixelCache
    ) -> torch.Tensor:
        """One step for rows at different positions (continuous batching): token (B,) each
        row's last value, cell (B,) the position it predicts now (1..L-1) -> (B, 256).
        ``offset`` (the LM's prefix offset) is not needed: the prefix has fixed slots."""
        cfg = self.config
        x = self.embed_image(token.view(-1, 1), cell.view(-1, 1))  # (B, 1, C)
        # ring slot s holds the latest position j <= cell with j = s (mod window); visible
        # when j is at or after the query block's memory start (and not before the image)
        s = torch.arange(cfg.window, device=token.device).view(1, -1)
        j = cell.view(-1, 1) - (cell.view(-1, 1) - s) % cfg.window
        start = (cell // cfg.query_block * cfg.query_block - cfg.memory_block).view(-1, 1)
        visible = torch.cat(
            [cache.key_mask[:, : cfg.text_len], (j >= start) & (j >= 0)], dim=1
        )  # (B, text_len + window)
        bias = additive_mask(visible[:, None, None, :], x.dtype)
        for i, block in enumerate(self.blocks):
            x = block.step(x, cell, (cache.k[i], cache.v[i]), bias)
        return self.head(self.ln_f(x)[:, -1])

    def nll(self, values: torch.Tensor, text: TextBatch, drop: torch.Tensor | None) -> torch.Tensor:
        """Mean cross-entropy (nats per sub-pixel) of whole images (B, 3*S*S) given text."""
        return self.forward(values[:, :-1], text.states, text.mask, drop_cond=drop, targets=values)[
            1
        ]

    def sample(self, text: TextBatch, params: list) -> np.ndarray:
        """uint8 (B, S, S, 3) samples through the serving engine (``tessera.pixel.engine``)."""
        from tessera.pixel.engine import sample_pixels, to_uint8

        return to_uint8(sample_pixels(self, text, params))
