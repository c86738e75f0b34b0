"""The unCLIP decoder: a small UNet that denoises the VQ tokenizer's latent grid, conditioned on
a CLIP image embedding and the MiniLM text states (Kandinsky 2.2 / MoVQ style: diffusion in the
de-tokenizer's latent space, so pixels come from the same decoder as the AR route).

Conditioning (as in DALL·E 2's decoder):
- the CLIP image embedding is projected and *added to the timestep embedding* (every ResBlock
  sees it), and also projected into ``clip_tokens`` extra *context tokens*;
- those tokens, concatenated with the projected text states, feed the cross-attention of every
  transformer block;
- learned null embeddings replace the image embedding and/or the text for condition dropout,
  so one network gives both halves of classifier-free guidance.

Shapes: latents (B, C, h, w) with h = w = grid_size (8 by default, 16 works too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class DecoderConfig:
    latent_channels: int = 8  # C of VQModel.encode_latents
    grid_size: int = 8  # h = w of the latent grid
    clip_dim: int = 256  # D of CLIPModel.embed_image
    text_dim: int = 384  # MiniLM hidden size
    widths: tuple[int, ...] = (64, 128)  # channels per UNet level (each but the last halves h)
    num_res_blocks: int = 2  # per level
    num_heads: int = 4
    context_dim: int = 128  # width of the cross-attention context tokens
    clip_tokens: int = 4  # context tokens made from the CLIP image embedding
    dropout: float = 0.0
    prediction_type: str = "v_prediction"  # or "epsilon"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = False  # clamp predicted x0 to ±clip_sample_range while sampling
    clip_sample_range: float = 4.0
    default_steps: int = 25
    default_guidance: float = 3.0
    # Condition dropout while training (DALL·E 2 drops the image embedding 10%, text 50%).
    image_drop_prob: float = 0.1
    text_drop_prob: float = 0.5
    # The diffusion runs on (z - latent_shift) * latent_scale: VQ latents normalised to ~N(0,1).
    latent_scale: float = 1.0
    latent_shift: float = 0.0

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # JSON gives a list back
        if self.grid_size % (2 ** (len(self.widths) - 1)):
            raise ValueError(f"grid_size {self.grid_size} can't be halved {len(self.widths) - 1}x")

    @classmethod
    def tiny(cls, **overrides: object) -> DecoderConfig:
        base = cls(
            latent_channels=4,
            grid_size=8,
            clip_dim=32,
            widths=(32, 64),
            num_res_blocks=1,
            num_heads=2,
            context_dim=32,
            clip_tokens=2,
            num_train_timesteps=100,
            default_steps=10,
        )
        return replace(base, **overrides)

    def scheduler_kwargs(self) -> dict:
        """What the schedulers in ``tessera.decoder.schedulers`` take from this config."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "prediction_type": self.prediction_type,
            "clip_sample": self.clip_sample,
            "clip_sample_range": self.clip_sample_range,
        }


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the (timestep + image) embedding as a scale/shift."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, h, w)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention of x over itself (context=None) or over context tokens."""

    def __init__(self, dim: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        H = self.num_heads
        q = self.q(x).view(B, N, H, C // H).transpose(1, 2)  # (B, H, N, c)
        k, v = self.kv(context).view(B, context.shape[1], 2, H, C // H).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L) True = keep
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, c)
        return self.out(y.transpose(1, 2).reshape(B, N, C))


class TransformerBlock(nn.Module):
    """Self-attention over the grid, cross-attention to the context, then an MLP (pre-norm)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_in = group_norm(dim)
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, dim, num_heads)
        self.cross_attn = Attention(dim, context_dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        B, C, h, w = x.shape
        t = self.norm_in(x).flatten(2).transpose(1, 2)  # (B, h*w, C)
        n = self.ln1(t)
        t = t + self.self_attn(n, n)
        t = t + self.cross_attn(self.ln2(t), context, mask)
        t = t + self.mlp(self.ln3(t))
        return x + t.transpose(1, 2).reshape(B, C, h, w)


class Level(nn.Module):
    """``n`` (ResBlock, TransformerBlock) pairs at one resolution."""

    def __init__(self, c_ins: list[int], c_out: int, cfg: DecoderConfig, emb_dim: int) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(c, c_out, emb_dim, cfg.dropout) for c in c_ins)
        self.attn = nn.ModuleList(
            TransformerBlock(c_out, cfg.context_dim, cfg.num_heads) for _ in c_ins
        )


class LatentDecoder(nn.Module):
    """UNet over (B, C, h, w) latents -> epsilon or v, same shape."""

    config_class = DecoderConfig

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = cfg = config
        w0, emb_dim, n = cfg.widths[0], 4 * cfg.widths[0], cfg.num_res_blocks
        # Timestep and image embeddings share one vector that modulates every ResBlock.
        self.time_mlp = nn.Sequential(
            nn.Linear(w0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.image_to_emb = nn.Linear(cfg.clip_dim, emb_dim)
        # Context: clip_tokens tokens from the image embedding + one per text state.
        self.image_to_tokens = nn.Linear(cfg.clip_dim, cfg.clip_tokens * cfg.context_dim)
        self.text_to_tokens = nn.Linear(cfg.text_dim, cfg.context_dim)
        self.context_norm = nn.LayerNorm(cfg.context_dim)
        # Learned stand-ins for a dropped condition (classifier-free guidance).
        self.null_image = nn.Parameter(torch.randn(cfg.clip_dim) / math.sqrt(cfg.clip_dim))
        self.null_text = nn.Parameter(torch.randn(cfg.text_dim) * 0.02)

        self.conv_in = nn.Conv2d(cfg.latent_channels, w0, 3, padding=1)
        self.down, self.downsample, skips = nn.ModuleList(), nn.ModuleList(), [w0]
        c = w0
        for i, w in enumerate(cfg.widths):
            self.down.append(Level([c] + [w] * (n - 1), w, cfg, emb_dim))
            c = w
            skips += [w] * n
            if i < len(cfg.widths) - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
                skips.append(w)
        self.mid_res1 = ResBlock(c, c, emb_dim, cfg.dropout)
        self.mid_attn = TransformerBlock(c, cfg.context_dim, cfg.num_heads)
        self.mid_res2 = ResBlock(c, c, emb_dim, cfg.dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(cfg.widths))):
            c_ins = []
            for _ in range(n + 1):  # one more than down: also eats the downsample's skip
                c_ins.append(c + skips.pop())
                c = w
            self.up.append(Level(c_ins, w, cfg, emb_dim))
            if i > 0:
                self.upsample.append(nn.Conv2d(w, w, 3, padding=1))
        self.norm_out = group_norm(w0)
        self.conv_out = nn.Conv2d(w0, cfg.latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def condition(
        self,
        image_emb: Tensor,
        text_states: Tensor | None,
        text_mask: Tensor | None,
        drop_image: Tensor | None = None,
        drop_text: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Swap in null embeddings where asked; return (image embedding used (B,D),
        context tokens (B, K+T, context_dim), key mask (B, K+T) bool).

        ``drop_*`` are (B,) bool; ``text_states=None`` means "no text" for every row.
        """
        B = image_emb.shape[0]
        if drop_image is not None:
            image_emb = torch.where(drop_image[:, None], self.null_image.to(image_emb), image_emb)
        if text_states is None:
            text_states = image_emb.new_zeros(B, 1, self.config.text_dim)
            text_mask = torch.ones(B, 1, dtype=torch.bool, device=image_emb.device)
            drop_text = torch.ones(B, dtype=torch.bool, device=image_emb.device)
        elif text_mask is None:
            text_mask = torch.ones(text_states.shape[:2], dtype=torch.bool, device=image_emb.device)
        text_states, text_mask = text_states.to(image_emb.dtype), text_mask.bool()
        if drop_text is not None:
            # A dropped text is one learned null token (the rest masked out).
            null = self.null_text.to(text_states).expand_as(text_states)
            text_states = torch.where(drop_text[:, None, None], null, text_states)
            first = torch.zeros_like(text_mask)
            first[:, 0] = True
            text_mask = torch.where(drop_text[:, None], first, text_mask)
        cfg = self.config
        image_tokens = self.image_to_tokens(image_emb).view(B, cfg.clip_tokens, cfg.context_dim)
        context = torch.cat([image_tokens, self.text_to_tokens(text_states)], dim=1)
        mask = torch.cat([text_mask.new_ones(B, cfg.clip_tokens), text_mask], dim=1)
        return image_emb, self.context_norm(context), mask

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        image_emb: Tensor,
        text_states: Tensor | None = None,
        text_mask: Tensor | None = None,
        drop_image: Tensor | None = None,
        drop_text: Tensor | None = None,
    ) -> Tensor:
        """x (B,C,h,w) noised latents, t (B,) int timesteps, image_emb (B,D),
        text_states (B,T,384), text_mask (B,T) -> (B,C,h,w) model output."""
        image_emb, context, mask = self.condition(
            image_emb, text_states, text_mask, drop_image, drop_text
        )
        t = t.expand(x.shape[0]) if t.dim() == 1 and t.shape[0] == 1 else t
        emb = self.time_mlp(timestep_embedding(t, self.config.widths[0]))
        emb = emb + self.image_to_emb(image_emb)  # (B, emb_dim)

        h = self.conv_in(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for res, attn in zip(level.res, level.attn, strict=True):
                h = attn(res(h, emb), context, mask)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, w, h/2, w/2)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb), context, mask), emb)
        for i, level in enumerate(self.up):
            for res, attn in zip(level.res, level.attn, strict=True):
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb), context, mask)
            if i < len(self.upsample):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))

    # --- latent normalisation (the diffusion space vs the VQ space) ---------------------
    def normalize_latents(self, z: Tensor) -> Tensor:
        return (z - self.config.latent_shift) * self.config.latent_scale

    def denormalize_latents(self, x: Tensor) -> Tensor:
        return x / self.config.latent_scale + self.config.latent_shift

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
