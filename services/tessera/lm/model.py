"""ImageGPT: a GPT decoder over VQ image tokens, conditioned on text (the ``ar`` route).

The sequence the transformer sees is::

    [ text prefix (T <= text_len) | BOS | x_0 | ... | x_{L-2} ]  ->  predicts x_0 ... x_{L-1}

* The text prefix is the frozen MiniLM per-token states (B, T <= text_len, 384) projected to
  ``n_embd``; padding positions are masked out of attention, so trailing padding can be cut
  off a batch without changing any output (``trim_text``). A learned null condition (one
  visible slot) replaces the text for ~``cond_dropout`` of training rows, so classifier-free
  guidance can mix conditional and unconditional logits (``tessera.lm.sampling``).
* Every image-side input carries the learned row + column embedding of the grid cell it
  *predicts* (the BOS slot predicts cell (0, 0)), so the model always knows where it is
  writing, including at the start of a row.
* Attention is causal over the whole sequence; a KV cache (``KVCache``) lets sampling run
  the prefix once (``prefill``) and then one token per step (``decode_step``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from tessera.common.text_encoder import DEFAULT_MAX_TOKENS, TEXT_DIM
from tessera.lm.kv import KVCache, additive_mask, attend_one, attend_spans, key_spans
from tessera.lm.prefix import TextConditioned

__all__ = ["ImageGPT", "KVCache", "LMConfig", "additive_mask", "attend_one", "trim_text"]


def trim_text(states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the padding slots that no row of the batch uses: (B, T, D), (B, T) -> (B, T', ...).

    Exact: padded slots are masked out of attention and image positions do not depend on the
    prefix length. Saves most of the prefix on short captions (MiniLM pads to 32).
    """
    used = mask.any(0).nonzero()
    keep = int(used.max()) + 1 if used.numel() else 1
    return states[:, :keep], mask[:, :keep]


@dataclass
class LMConfig:
    vocab_size: int = 512  # = the tokenizer's codebook size
    grid_size: int = 16  # = the tokenizer's grid side; the sequence has grid_size**2 tokens
    n_layer: int = 8
    n_head: int = 8
    n_embd: int = 256
    dropout: float = 0.0
    bias: bool = False
    text_dim: int = TEXT_DIM  # MiniLM hidden size
    text_len: int = DEFAULT_MAX_TOKENS  # MiniLM tokens per caption (padded)
    cond_dropout: float = 0.1  # fraction of training rows that see the null condition
    guidance_scale: float = 3.0  # the default classifier-free guidance scale when sampling
    temperature: float = 1.0  # the default sampling temperature (requests may override)

    @classmethod
    def tiny(cls, **overrides: object) -> LMConfig:
        """A tiny model (~30k parameters) for tests and `tessera models init`."""
        # text_len stays at the encoder's 32 so a tiny model takes real TextBatch states.
        base = cls(vocab_size=32, grid_size=4, n_layer=2, n_head=2, n_embd=32)
        return replace(base, **overrides)

    @property
    def n_tokens(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def block_size(self) -> int:
        """Longest sequence the model runs: prefix + BOS + all but the last image token."""
        return self.text_len + self.n_tokens


class CausalSelfAttention(nn.Module):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int | torch.Tensor = 0,
        spans: list[tuple[int, int, int]] | None = None,
    ) -> torch.Tensor:
        """``start``: the cache index of x's first position, shared by all rows (int) or one
        per row ((B,) int64, one position each: continuous batching's decode step), when
        ``spans`` (``kv.key_spans``) may group the rows by how many keys they read."""
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, nh, T, hd) views: one view, one permute, one unbind
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None and isinstance(start, torch.Tensor):  # per-row positions
            cache_k, cache_v = cache
            rows = torch.arange(B, device=x.device)
            if T == 1:
                cache_k[rows, :, start] = k[:, :, 0]
                cache_v[rows, :, start] = v[:, :, 0]
            else:  # T consecutive positions per row (Jacobi windows): (B, T) cache indices
                pos = start.view(B, 1) + torch.arange(T, device=x.device)
                cache_k[rows.view(B, 1), :, pos] = k.transpose(1, 2)  # (B, T, nh, hd)
                cache_v[rows.view(B, 1), :, pos] = v.transpose(1, 2)
            keys = int(start.max()) + T  # the mask hides each row's keys past its position
            k, v = cache_k[:, :, :keys], cache_v[:, :, :keys]
        elif cache is not None:  # write this chunk, then attend over everything so far
            cache_k, cache_v = cache
            cache_k[:, :, start : start + T] = k
            cache_v[:, :, start : start + T] = v
            k, v = cache_k[:, :, : start + T], cache_v[:, :, : start + T]
        if spans is not None and len(spans) > 1:  # per-row positions, rows grouped by length
            y = attend_spans(q, cache_k, cache_v, attn_mask, spans)
        elif attn_mask.dtype != torch.bool:  # cached decoding: one (or a few) queries per row
            y = attend_one(q, k, v, attn_mask)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
            )  # (B, nh, T, hd)
        if T == 1:  # (B, nh, 1, hd) is laid out as (B, 1, C) already
            y = y.reshape(B, T, C)
        else:
            y = y.transpose(1, 2).contiguous().view(B, T, C)
        y = self.c_proj(y)
        return self.resid_dropout(y) if self.training else y


class MLP(nn.Module):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c_proj(F.gelu(self.c_fc(x)))
        return self.dropout(y) if self.training else y


class Block(nn.Module):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int | torch.Tensor = 0,
        spans: list[tuple[int, int, int]] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask, cache, start, spans)
        return x + self.mlp(self.ln_2(x))

    def decode(
        self,
        x: torch.Tensor,
        bias: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        start: int,
    ) -> torch.Tensor:
        """``forward`` for one new position per row, at cache index ``start`` (B, 1, C),
        in eval mode: the same ops on the same weights in the same order, so the same
        numbers, by functional calls instead of nine module calls a layer (a decode step at
        batch 16 is short enough for those to cost 4%)."""
        B, _, C = x.shape
        attn, mlp, nh = self.attn, self.mlp, self.attn.n_head
        h = F.layer_norm(x, (C,), self.ln_1.weight, self.ln_1.bias, self.ln_1.eps)
        qkv = F.linear(h, attn.c_attn.weight, attn.c_attn.bias).view(B, 1, 3, nh, C // nh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, 1, hd) each
        cache_k[:, :, start : start + 1] = k
        cache_v[:, :, start : start + 1] = v
        y = attend_one(q, cache_k[:, :, : start + 1], cache_v[:, :, : start + 1], bias)
        x = x + F.linear(y.reshape(B, 1, C), attn.c_proj.weight, attn.c_proj.bias)
        h = F.layer_norm(x, (C,), self.ln_2.weight, self.ln_2.bias, self.ln_2.eps)
        h = F.gelu(F.linear(h, mlp.c_fc.weight, mlp.c_fc.bias))
        return x + F.linear(h, mlp.c_proj.weight, mlp.c_proj.bias)


class ImageGPT(TextConditioned):
    config_class = LMConfig

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.add_text_prefix(config)  # the MiniLM prefix and the null condition
        # Image side: codebook entries plus BOS (index vocab_size), row and column embeddings.
        self.tok_emb = nn.Embedding(config.vocab_size + 1, C)
        self.row_emb = nn.Embedding(config.grid_size, C)
        self.col_emb = nn.Embedding(config.grid_size, C)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(C, bias=config.bias)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        self.init_weights()

    @property
    def bos_id(self) -> int:
        return self.config.vocab_size

    # --- embeddings (the text prefix: TextConditioned.embed_prefix) ---------------------
    def embed_image(self, inputs: torch.Tensor, start: int) -> torch.Tensor:
        """Image-side inputs at image slots ``start .. start+t-1`` -> (B, t, C).

        Slot 0 holds BOS and slot i > 0 holds x_{i-1}; slot i is tagged with the row and
        column of cell i, the cell it predicts.
        """
        t = inputs.shape[1]
        cells = torch.arange(start, start + t, device=inputs.device)
        g = self.config.grid_size
        return self.tok_emb(inputs) + self.row_emb(cells // g) + self.col_emb(cells % g)

    @staticmethod
    def attention_mask(key_mask: torch.Tensor, q_start: int, t: int) -> torch.Tensor:
        """Key padding mask (B, Tk) and queries at positions q_start.. -> (B, 1, t, Tk) bool."""
        Tk = key_mask.shape[1]
        q_pos = torch.arange(q_start, q_start + t, device=key_mask.device).view(t, 1)
        causal = torch.arange(Tk, device=key_mask.device).view(1, Tk) <= q_pos  # (t, Tk)
        return (causal.unsqueeze(0) & key_mask.unsqueeze(1)).unsqueeze(1)

    def _run(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        start: int,
        cache: KVCache | None,
    ) -> torch.Tensor:
        if x.shape[1] == 1:  # a decode step: the last position sees every usable key
            attn_mask = additive_mask(key_mask[:, None, None, :], x.dtype)
        else:
            attn_mask = self.attention_mask(key_mask, start, x.shape[1])
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            layer_cache = (cache.k[i], cache.v[i]) if cache is not None else None
            x = block(x, attn_mask, layer_cache, start)
        return self.ln_f(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states -> logits, at least float32 (float64 stays float64)."""
        logits = self.lm_head(h)
        return logits if logits.dtype == torch.float64 else logits.float()

    # --- full sequence (training, evaluation, cache-free sampling) -----------------------
    def forward(
        self,
        codes: torch.Tensor,
        states: torch.Tensor,
        mask: torch.Tensor,
        *,
        drop_cond: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for image cells 0..n given the first n codes.

        codes (B, n) int64 with 0 <= n < L (flattened row-major), states (B, T, 384), mask
        (B, T) bool with T <= text_len -> logits (B, n+1, vocab). In training mode
        ``drop_cond`` defaults to a random ``cond_dropout`` fraction of rows. With ``targets``
        (B, n+1) the mean cross-entropy (nats per token) is returned as well.
        """
        B, n = codes.shape
        if n >= self.config.n_tokens:
            raise ValueError(f"at most {self.config.n_tokens - 1} codes, got {n}")
        if drop_cond is None and self.training and self.config.cond_dropout > 0:
            drop_cond = torch.rand(B, device=codes.device) < self.config.cond_dropout
        prefix, key_mask = self.embed_prefix(states, mask, drop_cond)  # (B, P, C)
        bos = torch.full((B, 1), self.bos_id, dtype=torch.long, device=codes.device)
        image = self.embed_image(torch.cat([bos, codes], dim=1), 0)  # (B, n+1, C)
        image_mask = torch.ones(B, n + 1, dtype=torch.bool, device=codes.device)
        x = torch.cat([prefix, image], dim=1)  # (B, P+n+1, C)
        key_mask = torch.cat([key_mask, image_mask], dim=1)
        h = self._run(x, key_mask, 0, None)[:, prefix.shape[1] :]  # (B, n+1, C)
        logits = self.head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    # --- KV-cached sampling -------------------------------------------------------------
    def new_cache(self, batch: int, extra: int = 0, positions: int | None = None) -> KVCache:
        """``positions``: slots to allocate (default: the block size); fewer is less to zero."""
        p = self.lm_head.weight
        return KVCache(self.config, batch, p.device, p.dtype, extra, positions)

    def prefill(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache,
        drop_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run prefix + BOS into an empty cache -> logits for cell 0, (B, vocab).

        Rows with ``drop_cond`` see the null condition and BOS whatever their text, so they
        are one row repeated: it runs once and is copied to the others. A guided batch's
        unconditional half then costs one row, about half its prefill.
        """
        null = drop_cond.nonzero().view(-1) if drop_cond is not None else None
        if null is None or null.numel() < 2:
            return self._prefill(states, mask, cache, drop_cond)
        run = ~drop_cond
        run[null[0]] = True  # the conditional rows and one null row, in row order
        source = run.cumsum(0) - 1  # each row's index among the rows run ...
        source[null] = int(source[null[0]])  # ... the null rows all read the first one's
        computed = cache.rows(int(run.sum()))
        logits = self._prefill(states[run], mask[run], computed, drop_cond[run])
        used = computed.length
        for layer in cache.k + cache.v:  # the gather copies first, so rows may overlap
            layer[:, :, :used] = layer[source, :, :used]
        cache.key_mask[:, :used] = cache.key_mask[source, :used]
        cache.key_mask[:, used:] = True
        cache.length, cache.prefix_len, cache.bias = used, computed.prefix_len, None
        return logits[source]

    def _prefill(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache,
        drop_cond: torch.Tensor | None,
    ) -> torch.Tensor:
        B = states.shape[0]
        prefix, key_mask = self.embed_prefix(states, mask, drop_cond)
        bos = torch.full((B, 1), self.bos_id, dtype=torch.long, device=states.device)
        x = torch.cat([prefix, self.embed_image(bos, 0)], dim=1)  # (B, P+1, C)
        cache.key_mask[:, : x.shape[1] - 1] = key_mask
        cache.key_mask[:, x.shape[1] - 1 :] = True
        h = self._run(x, cache.key_mask[:, : x.shape[1]], 0, cache)
        cache.length = x.shape[1]
        cache.prefix_len = prefix.shape[1]
        cache.bias = None  # the key mask changed
        return self.head(h[:, -1])

    def decode_step(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Feed the code just sampled, (B,) int64 -> logits for the next cell, (B, vocab)."""
        start = cache.length
        cell = start - cache.prefix_len  # image slot this input sits in
        if not 1 <= cell < self.config.n_tokens:
            raise ValueError(f"cache is full or empty (length {start})")
        g = self.config.grid_size
        # embed_image's sum for one cell, by rows of the tables: (B, 1, C)
        x = F.embedding(token.view(-1, 1), self.tok_emb.weight) + self.row_emb.weight[cell // g]
        x = x + self.col_emb.weight[cell % g]
        if cache.bias is None:  # once per prefill: image slots are all visible
            cache.bias = additive_mask(cache.key_mask[:, None, None, :], x.dtype)
        bias = cache.bias[..., : start + 1]  # (B, 1, 1, start+1)
        cache.length = start + 1
        if self.training:  # dropout: the modules' own path
            for i, block in enumerate(self.blocks):
                x = block(x, bias, (cache.k[i], cache.v[i]), start)
            return self.head(self.ln_f(x)[:, -1])
        for i, block in enumerate(self.blocks):
            x = block.decode(x, bias, cache.k[i], cache.v[i], start)
        # ln_f and head by functional calls, as in Block.decode: the same ops, the same numbers
        C = x.shape[-1]
        h = F.layer_norm(x[:, -1], (C,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        logits = F.linear(h, self.lm_head.weight)
        return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()

    def decode_rows(
        self, token: torch.Tensor, cell: torch.Tensor, offset: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """One decode step for rows at different places (continuous batching).

        token (B,) the code each row sampled last, cell (B,) the image slot it sits in (1..L-1),
        offset (B,) each row's cache index of BOS -> logits for each row's next cell (B, vocab).
        Rows attend to their own keys up to their own position only. With token (B, T) the
        row's T consecutive inputs go in at slots cell.. -> (B, T, vocab) (a Jacobi window;
        slots past L-1 need a cache with ``extra`` room and give logits nobody reads).
        """
        g, L = self.config.grid_size, self.config.n_tokens
        tokens = token.view(token.shape[0], -1)  # (B, T)
        T = tokens.shape[1]
        pos = offset + cell  # (B,) cache index written by this step (the first of T)
        if T == 1:
            cells = cell.view(-1, 1)
        else:
            cells = (cell.view(-1, 1) + torch.arange(T, device=token.device)).clamp(max=L - 1)
        x = self.tok_emb(tokens) + self.row_emb(cells // g) + self.col_emb(cells % g)  # (B,T,C)
        keys = torch.arange(int(pos.max()) + T, device=token.device)
        q_pos = pos.view(-1, 1, 1) + torch.arange(T, device=token.device).view(1, T, 1)
        visible = cache.key_mask[:, None, : keys.numel()] & (keys.view(1, 1, -1) <= q_pos)
        attn_mask = additive_mask(visible[:, None], x.dtype)  # (B, 1, T, Tk)
        spans = key_spans((pos + T).tolist())  # rows by how far their keys reach
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, (cache.k[i], cache.v[i]), pos, spans)
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        return logits[:, 0] if token.dim() == 1 else logits
