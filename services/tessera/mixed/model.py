"""One transformer over text and image tokens (Chameleon / Liquid style, at Tessera's size).

The vocabulary is the text BPE's ids followed by the image tokenizer's codes
(``text.Vocab``); a sequence mixes both (``sequences``: text -> image, image -> text,
instruction + source image -> edited image). The blocks are the ``ar`` LM's own
(``tessera.lm.model.Block``: causal self-attention with a KV cache, GELU MLP); what is new
is only the embedding: a token embedding over the joint vocabulary plus a learned *slot*
embedding (text position, source-image cell or output-image cell), and one head over the
joint vocabulary. With ``copy_cells`` an output position shares the embedding of the source
cell it predicts, plus one learned "output" vector (``sequences`` says why); with
``keep_token`` an edit may answer a cell with ``<keep>`` (the source's code there). Sampling
masks the head to the ids a position may take (image codes, and ``<keep>`` when there is a
source, while an image is written; text while a caption is).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tessera.lm.kv import KVCache, additive_mask
from tessera.lm.model import Block
from tessera.lm.prefix import gpt2_init
from tessera.mixed.sequences import Layout
from tessera.mixed.text import SPECIALS, Vocab


@dataclass
class MixedConfig:
    text_vocab: int = 512  # the BPE's size, specials included
    image_vocab: int = 1024  # the image tokenizer's codebook
    grid_size: int = 8  # the image tokenizer's grid side
    text_len: int = 24  # text tokens per caption / instruction, at most
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 192
    dropout: float = 0.0
    bias: bool = False
    image_guidance: float = 1.5  # default scale on the source image (edits)
    text_guidance: float = 3.0  # default scale on the instruction / caption
    # text -> image's own default scale on the caption (None: text_guidance); an edit's best
    # text scale need not be a drawing's
    t2i_guidance: float | None = None
    copy_cells: bool = False  # output positions share the source cell's embedding
    keep_token: bool = False  # edits may write <keep>: "the source's code at this cell"
    tasks: list[str] = field(default_factory=lambda: ["t2i", "i2t", "edit"])

    @classmethod
    def tiny(cls, **overrides: object) -> MixedConfig:
        base = dict(text_vocab=len(SPECIALS) + 64, image_vocab=16, grid_size=2, text_len=8,
                    n_layer=2, n_head=2, n_embd=32)  # fmt: skip
        return cls(**{**base, **overrides})

    @property
    def t2i_scale(self) -> float:
        """The default caption scale of text -> image."""
        return self.text_guidance if self.t2i_guidance is None else self.t2i_guidance

    @property
    def layout(self) -> Layout:
        vocab = Vocab(self.text_vocab, self.image_vocab, self.keep_token)
        return Layout(vocab, self.text_len, self.grid_size**2, self.copy_cells)

    @property
    def block_size(self) -> int:  # what KVCache allocates
        return self.layout.max_len

    def to_dict(self) -> dict:
        return asdict(self)


class MixedTransformer(nn.Module):
    config_class = MixedConfig

    def __init__(self, config: MixedConfig) -> None:
        super().__init__()
        self.config = config
        layout = config.layout
        C = config.n_embd
        self.tok_emb = nn.Embedding(layout.vocab.size, C)
        self.slot_emb = nn.Embedding(layout.n_slots, C)
        if config.copy_cells:  # what tells "writing cell c" from "source cell c"
            self.output_emb = nn.Parameter(torch.zeros(C))
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])  # type: ignore[arg-type]
        self.ln_f = nn.LayerNorm(C, bias=config.bias)
        self.lm_head = nn.Linear(C, layout.vocab.size, bias=False)
        gpt2_init(self, config.n_layer)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, tokens: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """tokens, slots (B, T) -> (B, T, C)."""
        if not self.config.copy_cells:
            return self.tok_emb(tokens) + self.slot_emb(slots)
        layout = self.config.layout
        out = (slots >= layout.output_base) & (slots < layout.output_base + layout.n_cells)
        shared = torch.where(out, slots - layout.n_cells, slots)  # -> the source cell's slot
        return self.tok_emb(tokens) + self.slot_emb(shared) + out.unsqueeze(-1) * self.output_emb

    def _blocks(self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None, start: int):
        for i, block in enumerate(self.blocks):
            layer_cache = (cache.k[i], cache.v[i]) if cache is not None else None
            x = block(x, mask, layer_cache, start)
        return self.ln_f(x)

    def forward(
        self,
        inputs: torch.Tensor,
        slots: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """inputs, slots (B, T) -> logits (B, T, V); with ``targets`` (B, T) (-100: no loss)
        also the mean cross-entropy over the output spans. Right padding needs no key mask:
        a causal query never sees the padding after it."""
        T = inputs.shape[1]
        x = self._embed(inputs, slots)  # (B, T, C)
        causal = torch.ones(T, T, dtype=torch.bool, device=inputs.device).tril().view(1, 1, T, T)
        logits = self.lm_head(self._blocks(x, causal, None, 0)).float()  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    # --- KV-cached sampling: left-padded prompts that all end at one position -------------
    def new_cache(self, batch: int) -> KVCache:
        p = self.lm_head.weight
        return KVCache(self.config, batch, p.device, p.dtype)  # type: ignore[arg-type]

    def prefill(
        self, tokens: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """Left-padded prompts (B, P) with ``mask`` False on the padding -> logits of the next
        token (B, V). Padding positions attend to themselves only; nothing attends to them."""
        P = tokens.shape[1]
        x = self._embed(tokens, slots)
        causal = torch.ones(P, P, dtype=torch.bool, device=tokens.device).tril()
        keys = causal.view(1, P, P) & mask.view(-1, 1, P)
        keys = keys | torch.eye(P, dtype=torch.bool, device=tokens.device).view(1, P, P)
        cache.key_mask[:, :P] = mask
        cache.key_mask[:, P:] = True
        h = self._blocks(x, keys.unsqueeze(1), cache, 0)
        cache.length = P
        return self.lm_head(h[:, -1]).float()

    def decode(self, token: torch.Tensor, slot: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Feed one token per row (B,) at slot (B,) -> logits of the next, (B, V)."""
        start = cache.length
        x = self._embed(token, slot).unsqueeze(1)  # (B, 1, C)
        visible = cache.key_mask[:, None, None, : start + 1]
        bias = torch.zeros(visible.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~visible, float("-inf"))
        h = self._blocks(x, bias, cache, start)
        cache.length = start + 1
        return self.lm_head(h[:, -1]).float()

    def decode_rows(
        self, token: torch.Tensor, slot: torch.Tensor, pos: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """One decode step for rows at different places (continuous batching): token, slot
        (B,) the input of each row, pos (B,) the cache index it goes to -> logits of the next
        token (B, V). Each row attends to its own unmasked keys up to ``pos``."""
        x = self._embed(token, slot).unsqueeze(1)  # (B, 1, C)
        keys = torch.arange(int(pos.max()) + 1, device=token.device)
        visible = cache.key_mask[:, None, : keys.numel()] & (
            keys.view(1, 1, -1) <= pos.view(-1, 1, 1)
        )
        h = self._blocks(x, additive_mask(visible[:, None], x.dtype), cache, pos)
        return self.lm_head(h[:, -1]).float()
