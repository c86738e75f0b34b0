"""Janus (``transformers.JanusForConditionalGeneration``) as the ``ar`` route's language
model: the adapter the LanguageModel deployment's continuous-batching engine
(``tessera.lm.engine``) drives exactly as it drives ``ImageGPT``.

It loads, from an imported snapshot (``tessera models import``), only what image generation
runs: the Llama language model, the image-generation embeddings + aligner, and the
generation head (no SigLIP encoder, no text head, no VQ model: that is the Detokenizer's).
The library's own modules do the work (embeddings, RMSNorm, rotary tables, projections,
MLPs); what this file adds is the KV-cache plumbing continuous batching needs and
``generate(generation_mode="image")`` does not have: rows at their own positions, a prefill
that left-aligns prompts of different lengths so every row's ``<begin_of_image>`` sits at
the same cache slot, and a decode step with one position per row.

The sequence of one row, as in ``JanusForConditionalGeneration.generate``::

    [ pad.. | BOS prompt tokens <begin_of_image> ] -> image code 0; its generation embedding
    -> code 1; ... (grid_size**2 codes)

and its null-condition twin (guidance) is the same prompt with every token but BOS and
``<begin_of_image>`` replaced by the pad token. Logits are ``generation_head(norm(h))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tessera.common.errors import InvalidArgument, ModelNotReady
from tessera.common.hf_weights import load_prefixed, on_meta, weight_files
from tessera.common.text_encoder import TextBatch
from tessera.lm.model import KVCache

PROMPT_TEMPLATE = "<|User|>: {prompt}\n\n<|Assistant|>:"  # Janus-Pro's image-generation turn


@dataclass
class JanusLMConfig:
    """What the engine needs to know, written at import from the snapshot's configs."""

    source: str = ""  # the snapshot directory (config.json, safetensors, tokenizer)
    vocab_size: int = 16384  # image codebook size (vq_config.num_embeddings)
    grid_size: int = 24  # codes per side (vq_config.num_patches); grid_size**2 per image
    n_layer: int = 24
    n_kv_head: int = 16
    head_dim: int = 128
    prompt_len: int = 256  # most prompt tokens a request may take (template included)
    guidance_scale: float = 5.0  # generation_config.guidance_scale
    temperature: float = 1.0
    bos_token_id: int = 0
    pad_token_id: int = 0
    boi_token_id: int = 0
    prompt_template: str = PROMPT_TEMPLATE

    @property
    def n_tokens(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def block_size(self) -> int:
        """Cache slots per row: the longest prompt, then every code but the last."""
        return self.prompt_len + self.n_tokens


_FIELDS = set(JanusLMConfig.__dataclass_fields__)


class JanusCache(KVCache):
    """``KVCache`` with Llama's shapes: (rows, key/value heads, slots, head_dim) per layer."""

    def __init__(
        self,
        config: JanusLMConfig,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        positions: int | None = None,
    ) -> None:
        size = config.block_size if positions is None else positions
        shape = (batch, config.n_kv_head, size, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.key_mask = torch.ones(batch, size, dtype=torch.bool, device=device)
        self.length = 0
        self.prefix_len = 0


def serving_dtype(device: torch.device) -> torch.dtype:
    """Half precision on CUDA (bf16 where the GPU has it), float32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def read_janus_config(source: str | Path) -> Any:  # a transformers JanusConfig
    from transformers import JanusConfig

    return JanusConfig.from_pretrained(str(source), local_files_only=True)


class JanusImageLM(nn.Module):
    """The image-generation half of a Janus checkpoint; submodule names follow the library's
    (``model.language_model``, ``model.generation_*``) so its tensors load as they are."""

    config_class = JanusLMConfig

    def __init__(self, config: JanusLMConfig, janus_config: object = None) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.models.janus.modeling_janus import (
            JanusVQVAEAlignerMLP,
            JanusVQVAEHead,
        )

        janus = janus_config or read_janus_config(config.source)
        vq = janus.vq_config
        self.config = config
        self.text_config = janus.text_config
        self.language_model = AutoModel.from_config(janus.text_config)
        self.generation_embeddings = nn.Embedding(vq.num_embeddings, vq.embed_dim)
        self.generation_aligner = JanusVQVAEAlignerMLP(vq)
        self.generation_head = JanusVQVAEHead(vq)
        self.tokenizer = None  # set by load_external

    @classmethod
    def from_import(cls, directory: Path, meta: dict, device: torch.device | str) -> JanusImageLM:
        """Build on the meta device and load the snapshot's tensors in the serving dtype
        (``checkpoint.load_component`` calls this for an imported component)."""
        from transformers import AutoTokenizer

        config = cls.config_class(**{k: v for k, v in meta.items() if k in _FIELDS})
        device = torch.device(device)
        janus = read_janus_config(config.source)
        model = on_meta(lambda: cls(config, janus))
        files = weight_files(Path(config.source))
        load_prefixed(model, files, "model.", device, serving_dtype(device))
        rotary = model.language_model.rotary_emb  # its inv_freq is computed, not stored
        model.language_model.rotary_emb = type(rotary)(janus.text_config).to(device)
        if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
            raise ModelNotReady(f"{config.source}: some Janus tensors were not loaded")
        model.tokenizer = AutoTokenizer.from_pretrained(config.source, local_files_only=True)
        return model.eval()

    def _apply(self, fn: Any, recurse: bool = True) -> JanusImageLM:
        """Casts (``.half()``, ``.to(dtype)``) leave the rotary frequencies in float32: in
        half precision they would round, and every angle at position ~800 with them."""
        super()._apply(fn, recurse)
        rotary = self.language_model.rotary_emb
        if not rotary.inv_freq.is_meta and rotary.inv_freq.dtype != torch.float32:
            fresh = type(rotary)(self.text_config)
            rotary.inv_freq = fresh.inv_freq.to(rotary.inv_freq.device)
            rotary.original_inv_freq = fresh.original_inv_freq.to(rotary.inv_freq.device)
        return self

    # ---------------------------------------------------------------- prompts
    @property
    def own_text_encoder(self) -> JanusImageLM:
        """The deployment encodes prompts with this model's tokenizer, not MiniLM."""
        return self

    def encode(self, texts: list[str]) -> TextBatch:
        """Prompts -> token ids, as ``JanusProcessor(generation_mode="image")`` builds them
        from the template: (B, prompt_len) int64 right-padded in ``states``, ``mask`` True
        on tokens."""
        cfg, tok = self.config, self.tokenizer
        rows = [
            tok(cfg.prompt_template.replace("{prompt}", t) + tok.boi_token).input_ids for t in texts
        ]
        longest = max(len(r) for r in rows)
        if longest > cfg.prompt_len:
            raise InvalidArgument(
                f"prompt is {longest} tokens with its template; this model takes at most "
                f"{cfg.prompt_len}"
            )
        # Padded to prompt_len, as MiniLM pads to its max: the engine stacks the prompts of
        # every request it admits together and cuts the padding none of them uses.
        ids = torch.full((len(rows), cfg.prompt_len), cfg.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), cfg.prompt_len, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        return TextBatch(ids, mask, torch.zeros(len(rows), 0))

    # ---------------------------------------------------------------- the engine's interface
    def new_cache(self, batch: int, positions: int | None = None) -> JanusCache:
        """``positions``: as ``ImageGPT.new_cache`` (default: the block size)."""
        p = self.generation_embeddings.weight
        return JanusCache(self.config, batch, p.device, p.dtype, positions)

    def prefill(
        self, ids: torch.Tensor, mask: torch.Tensor, cache: JanusCache, drop_cond: torch.Tensor
    ) -> torch.Tensor:
        """Run prompts (B, P) right-padded ids, left-aligned here so each ends at slot P-1;
        ``drop_cond`` rows keep only BOS and ``<begin_of_image>``. -> (B, V) float logits of
        the first code."""
        cfg = self.config
        B, P = ids.shape
        shift = P - mask.sum(1)  # (B,) pad slots in front of each prompt
        index = torch.arange(P, device=ids.device).view(1, P) - shift.view(B, 1)
        valid = index >= 0
        ids = torch.where(valid, ids.gather(1, index.clamp(min=0)), cfg.pad_token_id)
        keep = (ids == cfg.bos_token_id) | (ids == cfg.boi_token_id)
        ids = torch.where(drop_cond.view(B, 1) & ~keep, cfg.pad_token_id, ids)
        causal = torch.ones(P, P, dtype=torch.bool, device=ids.device).tril()
        eye = torch.eye(P, dtype=torch.bool, device=ids.device)
        visible = (causal & valid.view(B, 1, P)) | eye  # (B, P, P); a pad sees itself only
        h = self.language_model.embed_tokens(ids)
        slots = torch.arange(P, device=ids.device)
        h = self._run(h, index.clamp(min=0), cache, slots, visible)
        cache.key_mask[:, :P] = valid
        cache.length, cache.prefix_len = P, P - 1
        return self._logits(h[:, -1])

    def decode_rows(
        self, token: torch.Tensor, count: torch.Tensor, offsets: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """One code per row: ``token`` (R,) is the row's code ``count - 1``, written at
        slot ``offsets + count``, at its own position. -> (R, V) float logits."""
        slot = offsets + count  # (R,)
        span = int(slot.max()) + 1
        before = torch.arange(span, device=token.device).view(1, span)
        keys = cache.key_mask[:, :span]
        position = (keys & (before < slot.view(-1, 1))).sum(1)  # real tokens before it
        visible = (keys & (before <= slot.view(-1, 1))).unsqueeze(1)  # (R, 1, span)
        h = self.generation_aligner(self.generation_embeddings(token.view(-1, 1)))
        h = self._run(h, position.view(-1, 1), cache, slot, visible, span, per_row=True)
        return self._logits(h[:, -1])

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.generation_head(self.language_model.norm(h)).float()

    def _run(
        self,
        h: torch.Tensor,
        position: torch.Tensor,
        cache: KVCache,
        slots: torch.Tensor,
        visible: torch.Tensor,
        span: int | None = None,
        *,
        per_row: bool = False,
    ) -> torch.Tensor:
        """The Llama layers over h (B, T, D) at ``position`` (B, T), writing keys/values at
        ``slots`` ((T,) shared; ``per_row``: (B,) one each, T = 1) and attending to the
        first ``span`` slots where ``visible`` (B, T, span)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        lm = self.language_model
        B, T, _ = h.shape
        span = span or T
        cos, sin = lm.rotary_emb(h, position)
        rows = torch.arange(B, device=h.device)
        for i, layer in enumerate(lm.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(B, T, -1, attn.head_dim).transpose(1, 2)  # (B, nh, T, hd)
            k = attn.k_proj(x).view(B, T, -1, attn.head_dim).transpose(1, 2)  # (B, kvh, T, hd)
            v = attn.v_proj(x).view(B, T, -1, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            if per_row:
                cache.k[i][rows, :, slots] = k[:, :, 0]
                cache.v[i][rows, :, slots] = v[:, :, 0]
            else:
                cache.k[i][:, :, slots] = k
                cache.v[i][:, :, slots] = v
            keys = repeat_kv(cache.k[i][:, :, :span], attn.num_key_value_groups)
            values = repeat_kv(cache.v[i][:, :, :span], attn.num_key_value_groups)
            scores = (q @ keys.transpose(-1, -2)) * attn.scaling  # (B, nh, T, span)
            scores = scores.masked_fill(~visible.unsqueeze(1), float("-inf"))
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = (weights @ values).transpose(1, 2).reshape(B, T, -1)
            h = h + attn.o_proj(out)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return h
