"""The diffusion prior of DALL·E 2: CLIP text embedding (+ text tokens) -> CLIP image embedding.

A decoder-only (causal) transformer reads one sequence per sample,

    [text token states (T, projected) | text embedding | timestep | noised image emb | query]

and the query token's output predicts the *clean* image embedding (x0 prediction, as in the
paper). Embeddings are standardised with per-dimension statistics of the training image
embeddings (buffers, saved with the weights) so that diffusion runs on unit-variance data.
Conditions are dropped to learned nulls during training, which gives classifier-free
guidance at sampling time. Sampling is deterministic DDIM over a cosine schedule; each row
draws ``n_candidates`` samples from its own seed and keeps the one closest to its text
embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Required, TypedDict, Unpack

import torch
import torch.nn.functional as F
from torch import nn

from tessera.common.device import make_generator
from tessera.common.errors import InvalidArgument
from tessera.common.text_encoder import DEFAULT_MAX_TOKENS, TEXT_DIM, TextBatch
from tessera.prior.sampling import check_sample_args, select_candidates
from tessera.prior.scheduler import PriorDDIMScheduler, cosine_alphas_cumprod

__all__ = ["DiffusionPrior", "EncodedCondition", "PriorConfig", "select_candidates"]


@dataclass
class PriorConfig:
    embed_dim: int = 256  # D of the CLIP this prior was trained against
    text_dim: int = TEXT_DIM  # MiniLM token-state width
    max_text_tokens: int = DEFAULT_MAX_TOKENS
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 384
    dropout: float = 0.0
    num_train_timesteps: int = 1000
    p_uncond: float = 0.1  # condition dropout for classifier-free guidance
    sample_steps: int = 32  # DDIM steps when a request leaves `steps` unset
    guidance_scale: float = 2.0  # default when a request leaves it unset
    n_candidates: int = 2

    @classmethod
    def tiny(cls, **overrides: object) -> PriorConfig:
        base = cls(embed_dim=32, n_layer=2, n_head=2, n_embd=32, sample_steps=8)
        return replace(base, **overrides)


# ---------------------------------------------------------------------------- transformer

KV = tuple[torch.Tensor, torch.Tensor]  # (B,H,n,hd) keys and values


@dataclass
class EncodedCondition:
    """The condition tokens (text states + text embedding) run through the transformer once.

    They come first in the causal sequence, so their keys and values do not depend on the
    timestep or the noised embedding: every denoising step reuses them and only runs the
    3 step tokens (a ~10x cheaper step for 32 text tokens)."""

    kv: list[KV]  # per layer, (B,H,C,hd) each
    key_ok: torch.Tensor  # (B,C) bool: which condition tokens may be attended to

    def repeat_interleave(self, k: int) -> EncodedCondition:
        """Each row k times in a row (row i -> rows i*k .. i*k+k-1)."""
        kv = [(a.repeat_interleave(k, 0), b.repeat_interleave(k, 0)) for a, b in self.kv]
        return EncodedCondition(kv, self.key_ok.repeat_interleave(k, 0))

    def expand(self, n: int) -> EncodedCondition:
        """A one-row condition broadcast to n rows (a view: no copy)."""
        kv = [(a.expand(n, -1, -1, -1), b.expand(n, -1, -1, -1)) for a, b in self.kv]
        return EncodedCondition(kv, self.key_ok.expand(n, -1))

    @staticmethod
    def cat(a: EncodedCondition, b: EncodedCondition) -> EncodedCondition:
        kv = [
            (torch.cat([ka, kb]), torch.cat([va, vb]))
            for (ka, va), (kb, vb) in zip(a.kv, b.kv, strict=True)
        ]
        return EncodedCondition(kv, torch.cat([a.key_ok, b.key_ok]))


class SelfAttention(nn.Module):
    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, past: KV | None = None
    ) -> tuple[torch.Tensor, KV]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, n, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if past is None:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
            )  # (B,H,n,hd)
        else:
            # Attend over [condition keys (cached), own keys] without concatenating the cache
            # (a copy of every cached key and value per layer and step otherwise).
            pk, pv = past  # (B,H,C,hd)
            scores = torch.cat([q @ pk.transpose(-2, -1), q @ k.transpose(-2, -1)], dim=-1)
            scores = (scores / math.sqrt(q.shape[-1])).masked_fill(~allowed, float("-inf"))
            att = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)  # (B,H,n,C+n)
            c_len = pk.shape[2]
            y = att[..., :c_len] @ pv + att[..., c_len:] @ v  # (B,H,n,hd)
        return self.proj(y.transpose(1, 2).reshape(b, n, c)), (k, v)


class Block(nn.Module):
    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, past: KV | None = None
    ) -> tuple[torch.Tensor, KV]:
        a, kv = self.attn(self.ln1(x), allowed, past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of integer timesteps (B,) -> (B,dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


# ---------------------------------------------------------------------------- model


class SampleOptions(TypedDict, total=False):
    """The keyword arguments of ``DiffusionPrior.sample_candidates`` (and ``sample``)."""

    seeds: Required[list[int]]  # one per row
    guidance_scale: float | None  # None: the config's
    steps: int | None  # None: the config's
    n_candidates: int | None  # None: the config's


class DiffusionPrior(nn.Module):
    config_class = PriorConfig

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        d, e = config.n_embd, config.embed_dim
        self.text_in = nn.Linear(config.text_dim, d)  # token states -> model width
        self.text_emb_in = nn.Linear(e, d)
        self.time_in = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.x_in = nn.Linear(e, d)
        self.query = nn.Parameter(torch.zeros(d))
        self.pos = nn.Parameter(torch.zeros(config.max_text_tokens + 4, d))
        # Learned nulls for condition dropout: one token state (the only unmasked token of a
        # dropped caption) and one text embedding.
        self.null_state = nn.Parameter(torch.zeros(config.text_dim))
        self.null_text_emb = nn.Parameter(torch.zeros(e))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, e)
        # Standardisation of image embeddings (set from training data by `set_embedding_stats`).
        self.register_buffer("emb_mean", torch.zeros(e))
        self.register_buffer("emb_std", torch.full((e,), 1.0 / math.sqrt(e)))
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(config.num_train_timesteps))
        for p in (self.query, self.pos, self.null_state, self.null_text_emb):
            nn.init.normal_(p, std=0.02)

    # -- normalisation ------------------------------------------------------------------

    @torch.no_grad()
    def set_embedding_stats(self, image_emb: torch.Tensor) -> None:
        """Per-dimension mean/std of the (N,D) training image embeddings."""
        self.emb_mean.copy_(image_emb.mean(0))
        self.emb_std.copy_(image_emb.std(0).clamp(min=1e-4))

    def normalize(self, emb: torch.Tensor) -> torch.Tensor:
        return (emb - self.emb_mean) / self.emb_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.emb_std + self.emb_mean

    # -- network --------------------------------------------------------------------------

    def encode_condition(
        self,
        states: torch.Tensor,  # (B,T,384) MiniLM token states, T <= max_text_tokens
        mask: torch.Tensor,  # (B,T) bool, True on real tokens
        text_emb: torch.Tensor,  # (B,D) CLIP text embedding
    ) -> EncodedCondition:
        b, n_text = mask.shape
        m = self.config.max_text_tokens
        if n_text > m:
            raise InvalidArgument(f"at most {m} text tokens; got {n_text}")
        dtype = self.query.dtype
        # Text tokens take positions 0..T-1; the text embedding always position m, so that
        # trimming padding (T < m) changes nothing.
        x = torch.cat(
            [
                self.text_in(states.to(dtype)) + self.pos[:n_text],  # (B,T,d)
                (self.text_emb_in(text_emb.to(dtype)) + self.pos[m])[:, None],  # (B,1,d)
            ],
            dim=1,
        )  # (B,C,d), C = T + 1
        # Causal, and padded text tokens are never attended to. Token 0 of every caption is
        # real ([CLS], or the null state), so no row is fully masked.
        key_ok = torch.cat([mask, mask.new_ones(b, 1)], dim=1)  # (B,C)
        c = x.shape[1]
        causal = torch.ones(c, c, dtype=torch.bool, device=x.device).tril()
        allowed = (causal[None] & key_ok[:, None, :])[:, None]  # (B,1,C,C)
        kv = []
        for block in self.blocks:
            x, layer_kv = block(x, allowed)
            kv.append(layer_kv)
        return EncodedCondition(kv, key_ok)

    def denoise(
        self,
        x_t: torch.Tensor,  # (B,D) noised, standardised image embedding
        t: torch.Tensor,  # (B,) int timesteps
        cond: EncodedCondition,
    ) -> torch.Tensor:  # (B,D) predicted clean standardised image embedding
        b, d, m = x_t.shape[0], self.config.n_embd, self.config.max_text_tokens
        x = (
            torch.cat(
                [
                    self.time_in(timestep_embedding(t, d))[:, None],  # (B,1,d)
                    self.x_in(x_t)[:, None],  # (B,1,d)
                    self.query.expand(b, 1, d),  # (B,1,d)
                ],
                dim=1,
            )
            + self.pos[m + 1 : m + 4]
        )  # (B,3,d)
        # Step tokens see every usable condition token and, causally, each other.
        causal = torch.ones(3, 3, dtype=torch.bool, device=x.device).tril()
        allowed = torch.cat(
            [cond.key_ok[:, None, :].expand(b, 3, -1), causal[None].expand(b, 3, 3)], dim=2
        )[:, None]  # (B,1,3,C+3)
        for block, past in zip(self.blocks, cond.kv, strict=True):
            x, _ = block(x, allowed, past)
        return self.head(self.ln_f(x[:, -1]))  # the query token's output

    def forward(
        self,
        x_t: torch.Tensor,  # (B,D)
        t: torch.Tensor,  # (B,)
        states: torch.Tensor,  # (B,T,384)
        mask: torch.Tensor,  # (B,T)
        text_emb: torch.Tensor,  # (B,D)
    ) -> torch.Tensor:  # (B,D) predicted x0, the whole causal sequence in one pass
        return self.denoise(x_t, t, self.encode_condition(states, mask, text_emb))

    def drop_conditions(
        self, states: torch.Tensor, mask: torch.Tensor, text_emb: torch.Tensor, drop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Replace the rows where ``drop`` (B,) is True by the learned null condition."""
        keep = ~drop
        states = torch.where(keep[:, None, None], states.to(self.null_state.dtype), self.null_state)
        null_mask = torch.zeros_like(mask)
        null_mask[:, 0] = True
        mask = torch.where(keep[:, None], mask, null_mask)
        text_emb = torch.where(
            keep[:, None], text_emb.to(self.null_text_emb.dtype), self.null_text_emb
        )
        return states, mask, text_emb

    # -- training -------------------------------------------------------------------------

    def loss(
        self,
        image_emb: torch.Tensor,  # (B,D) clean CLIP image embeddings (L2-normalised)
        states: torch.Tensor,
        mask: torch.Tensor,
        text_emb: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """MSE between the predicted and the true clean (standardised) image embedding."""
        b, dev = image_emb.shape[0], image_emb.device
        x0 = self.normalize(image_emb)
        t = torch.randint(0, self.config.num_train_timesteps, (b,), device=dev, generator=generator)
        noise = torch.randn(x0.shape, device=dev, generator=generator)
        ab = self.alphas_cumprod[t][:, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        drop = torch.rand(b, device=dev, generator=generator) < self.config.p_uncond
        states, mask, text_emb = self.drop_conditions(states, mask, text_emb, drop)
        return F.mse_loss(self(x_t, t, states, mask, text_emb), x0)

    # -- sampling -------------------------------------------------------------------------

    def _guided_x0(
        self,
        x_t: torch.Tensor,
        t: int,
        cond: EncodedCondition,
        uncond: EncodedCondition,
        both: EncodedCondition | None,
        scale: float,
    ) -> torch.Tensor:
        tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        if scale == 1.0:  # exactly conditional: skip the unconditional pass
            return self.denoise(x_t, tt, cond)
        if scale == 0.0:  # exactly unconditional: the text never enters the network
            return self.denoise(x_t, tt, uncond)
        both = both or EncodedCondition.cat(cond, uncond)
        x0_c, x0_u = self.denoise(torch.cat([x_t, x_t]), torch.cat([tt, tt]), both).chunk(2)
        return x0_u + scale * (x0_c - x0_u)

    @torch.no_grad()
    def sample(
        self, text: TextBatch, text_emb: torch.Tensor, **options: Unpack[SampleOptions]
    ) -> torch.Tensor:
        """Sample (B,D) L2-normalised CLIP image embeddings, one per caption (``options``:
        those of ``sample_candidates``).

        Each row's result depends only on its own caption, embedding and seed (not on the
        rest of the batch). ``guidance_scale`` 1 is the plain conditional model and 0 the
        unconditional one. With ``n_candidates`` > 1 the row keeps the candidate with the
        highest cosine to ``text_emb`` (so only at n_candidates = 1 is a scale-0 sample fully
        independent of the text).
        """
        candidates = self.sample_candidates(text, text_emb, **options)
        return select_candidates(candidates, F.normalize(text_emb.to(candidates).float(), dim=-1))

    @torch.no_grad()
    def sample_candidates(
        self,
        text: TextBatch,
        text_emb: torch.Tensor,
        *,
        seeds: list[int],
        guidance_scale: float | None = None,
        steps: int | None = None,
        n_candidates: int | None = None,
    ) -> torch.Tensor:
        """(B,K,D) L2-normalised samples: row i's K candidates all come from seeds[i]."""
        cfg = self.config
        b = text_emb.shape[0]
        scale, steps, k = check_sample_args(
            cfg, text, text_emb, seeds, guidance_scale, steps, n_candidates
        )
        dev = self.emb_mean.device
        sched = PriorDDIMScheduler(self.alphas_cumprod)
        sched.set_timesteps(steps)

        # Initial noise on the CPU from each row's own generator: the same on every device and
        # whatever else is in the batch. Row i's candidates sit at i*k .. i*k+k-1.
        noise = [
            torch.randn(k, cfg.embed_dim, generator=make_generator(s, torch.device("cpu")))
            for s in seeds
        ]
        x = torch.cat(noise).to(dev)  # (B*k,D)
        states, mask = text.states.to(dev).float(), text.mask.to(dev)
        temb = text_emb.to(dev).float()
        # Encode each caption once (not once per candidate, nor per step), then repeat.
        cond = self.encode_condition(states, mask, temb).repeat_interleave(k)
        drop = torch.ones(1, dtype=torch.bool, device=dev)
        null = self.drop_conditions(states[:1], mask[:1], temb[:1], drop)
        uncond = self.encode_condition(*null).expand(b * k)  # the null caption, shared
        both = None if scale in (0.0, 1.0) else EncodedCondition.cat(cond, uncond)
        for t in sched.timesteps.tolist():
            x0 = self._guided_x0(x, t, cond, uncond, both, scale)
            x = sched.step(x0, t, x)
        # After the last step (prev = -1) x is the final x0 prediction itself.
        return F.normalize(self.denormalize(x), dim=-1).view(b, k, cfg.embed_dim)
