"""The image tokenizer / de-tokenizer: a convolutional autoencoder with a choice of bottleneck.

    image (B,3,S,S) -> Encoder -> z (B,E,h,w) -> bottleneck -> z_q (B,C,h,w) -> Decoder -> image

``kind`` picks the bottleneck, everything else (trunk, downsampling, latent C) is shared:

- ``vq`` (default; VQ-VAE, a VQ-GAN after the trainer's GAN phase): E = C, nearest code of a
  quantizer (``quantizer``: l2 / ema / fsq);
- ``gumbel`` (DALL·E's dVAE): E = K logits, relaxed one-hot in training, argmax at inference,
  a KL term toward the uniform prior (``bottleneck.GumbelQuantizer``);
- ``kl`` (the VAE / latent-diffusion autoencoder): E = 2C, a diagonal Gaussian, KL toward
  N(0, I) weighted by ``kl_weight`` (1: a plain VAE); continuous, no codes
  (``bottleneck.GaussianBottleneck``).

``h = w = S / 2**(len(channel_mult) - 1)``. The latent C is small (8 by default): the
codebook lives in an l2-normalised 8-d space (LlamaGen), which keeps every code in use and
gives the diffusion decoder a compact latent to denoise. The encoder and decoder follow
taming-transformers' layout (residual blocks, one self-attention at the bottom) at widths a
2-core CPU can train in minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from tessera.tokenizer.bottleneck import GaussianBottleneck, GumbelQuantizer
from tessera.tokenizer.quantizer import QuantizerOutput, build_quantizer

KINDS = ("vq", "gumbel", "kl")
DEFAULT_KL_WEIGHT = {"vq": 0.0, "gumbel": 0.1, "kl": 1e-3}


@dataclass
class VQConfig:
    image_size: int = 64
    patch_size: int = 2  # pixel-(un)shuffle stem: the first level runs at S/2 (4x cheaper)
    channels: int = 32  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one level per entry; 2 downsamplings: 32 -> 8
    num_res_blocks: int = 1  # per level in the encoder (the decoder has one more)
    attention: bool = True  # self-attention at the bottom (8x8: 64 tokens, cheap)
    # Each cell's code from its own patch of pixels only (the encoder runs on every patch
    # alone, zero-padded at its edges): a pixel edit then changes exactly the codes of the
    # patches it touches, which is what makes an edit "keep the rest" at the token level.
    # The decoder stays global. False: the whole image's receptive field (older configs).
    local_encoder: bool = False
    codebook_size: int = 1024
    codebook_dim: int = 8  # the quantized latent's channels (len(fsq_levels) for FSQ)
    quantizer: str = "l2"  # "l2" | "ema" | "fsq"
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # 1000 codes
    beta: float = 0.25  # commitment weight
    # dead-code restarts (l2, ema): a code whose usage, an EMA over batches with this decay
    # (also the EMA codebook's decay), falls under restart_threshold per batch is re-seeded
    usage_decay: float = 0.95
    restart_threshold: float = 0.03
    kind: str = "vq"  # "vq" | "gumbel" | "kl" (a config without it is vq)
    kl_weight: float | None = None  # gumbel / kl: the KL term's weight (None: the kind's default)
    usage_weight: float = 0.0  # gumbel: weight of KL(batch code distribution || uniform)
    tau_start: float = 1.0  # gumbel: the relaxation's temperature, annealed over training
    tau_end: float = 1.0 / 16

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {self.kind!r}; expected one of {KINDS}")
        if self.kl_weight is None:
            self.kl_weight = DEFAULT_KL_WEIGHT[self.kind]
        self.channel_mult = tuple(int(m) for m in self.channel_mult)  # JSON gives lists
        self.fsq_levels = tuple(int(v) for v in self.fsq_levels)
        if self.quantizer == "fsq":
            self.codebook_dim = len(self.fsq_levels)
            self.codebook_size = math.prod(self.fsq_levels)
        factor = self.patch_size * 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size {self.image_size} is not divisible by {factor}")

    @property
    def grid_size(self) -> int:
        return self.image_size // (self.patch_size * 2 ** (len(self.channel_mult) - 1))

    @property
    def discrete(self) -> bool:
        return self.kind != "kl"

    @property
    def encoder_channels(self) -> int:
        """E: what the encoder emits for the bottleneck (latents, logits, or mean + logvar)."""
        return {"vq": self.codebook_dim, "gumbel": self.codebook_size}.get(
            self.kind, 2 * self.codebook_dim
        )

    @classmethod
    def tiny(cls, **overrides: object) -> VQConfig:
        """A few-thousand-parameter model for tests (16x16 images, 4x4 grid, 64 codes)."""
        base = dict(image_size=16, patch_size=2, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                    attention=True, codebook_size=64, codebook_dim=4)  # fmt: skip
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: dict) -> VQConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def Norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels // 4) or 1, num_channels=channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = Norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = Norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,c_in,H,W) -> (B,c_out,H,W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the h*w positions."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = Norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)  # (B,hw,c)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, hw, c)
        return x + self.proj(y.transpose(1, 2).view(b, c, h, w))


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        p = cfg.patch_size
        self.conv_in = nn.Sequential(
            nn.PixelUnshuffle(p), nn.Conv2d(3 * p * p, widths[0], 3, padding=1)
        )
        blocks: list[nn.Module] = []
        c = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, width))
                c = width
            if level < len(widths) - 1:
                blocks.append(nn.Conv2d(c, c, 4, stride=2, padding=1))  # halve H and W
        self.down = nn.Sequential(*blocks)
        mid: list[nn.Module] = [ResBlock(c, c)]
        if cfg.attention:
            mid += [Attention(c), ResBlock(c, c)]
        self.mid = nn.Sequential(*mid)
        self.norm_out = Norm(c)
        self.conv_out = nn.Conv2d(c, cfg.encoder_channels, 1)
        self.patch = cfg.image_size // cfg.grid_size if cfg.local_encoder else 0  # 0: global

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,S,S) -> (B,E,h,w)
        if self.patch:
            return self._per_patch(x)
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))

    def _per_patch(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,S,S) -> (B,E,h,w)
        B, C, S, _ = x.shape
        P, g = self.patch, S // self.patch
        patches = x.view(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B * g * g, C, P, P)
        h = self.mid(self.down(self.conv_in(patches)))  # (B*g*g, c, 1, 1)
        e = self.conv_out(F.silu(self.norm_out(h)))  # (B*g*g, E, 1, 1)
        return e.view(B, g, g, -1).permute(0, 3, 1, 2).contiguous()


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult][::-1]
        c = widths[0]
        self.conv_in = nn.Conv2d(cfg.codebook_dim, c, 3, padding=1)
        mid: list[nn.Module] = [ResBlock(c, c)]
        if cfg.attention:
            mid += [Attention(c), ResBlock(c, c)]
        self.mid = nn.Sequential(*mid)
        blocks: list[nn.Module] = []
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(c, width))
                c = width
            if level < len(widths) - 1:  # nearest-neighbour x2 then conv: no checkerboard;
                c = widths[level + 1]  # the conv already narrows to the next level's width
                blocks += [
                    nn.Upsample(scale_factor=2.0, mode="nearest"),
                    nn.Conv2d(width, c, 3, padding=1),
                ]
        self.up = nn.Sequential(*blocks)
        self.norm_out = Norm(c)
        self.conv_out = nn.Conv2d(c, 3 * cfg.patch_size**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(cfg.patch_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B,C,h,w) -> (B,3,S,S)
        h = self.up(self.mid(self.conv_in(z)))
        return self.shuffle(self.conv_out(F.silu(self.norm_out(h))))


@dataclass
class VQOutput:
    reconstruction: torch.Tensor  # (B,3,S,S) in ~[-1, 1]
    quantizer_loss: torch.Tensor  # () codebook + commitment (vq) or the KL term (gumbel, kl)
    indices: torch.Tensor | None  # (B,h,w) int64; None for the continuous kl kind


class VQModel(nn.Module):
    config_class = VQConfig

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        pixels = 3 * config.image_size**2
        if config.kind == "gumbel":
            self.quantizer: nn.Module = GumbelQuantizer(
                config.codebook_size, config.codebook_dim, config.kl_weight, pixels,
                config.usage_weight,
            )  # fmt: skip
        elif config.kind == "kl":
            self.quantizer = GaussianBottleneck(config.codebook_dim, config.kl_weight, pixels)
        else:
            self.quantizer = build_quantizer(
                config.quantizer, config.codebook_size, config.codebook_dim, beta=config.beta,
                levels=config.fsq_levels, restart_threshold=config.restart_threshold,
                usage_decay=config.usage_decay,
            )  # fmt: skip
        self.decoder = Decoder(config)

    # the interface the services and the other models use
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def discrete(self) -> bool:
        """Whether the model has codes (an LM can model it): vq and gumbel; kl has none."""
        return self.config.discrete

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size if self.discrete else 0

    @property
    def latent_channels(self) -> int:
        return self.config.codebook_dim

    def _require_codes(self) -> None:
        if not self.discrete:
            raise ValueError(f"a {self.kind!r} tokenizer has continuous latents, no token ids")

    def quantize(self, x: torch.Tensor) -> QuantizerOutput:
        return self.quantizer(self.encoder(x))

    def forward(self, x: torch.Tensor) -> VQOutput:  # (B,3,S,S) -> reconstruction, loss, codes
        q = self.quantize(x)
        return VQOutput(self.decoder(q.z_q), q.loss, q.indices)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,S,S) in [-1,1] -> (B,h,w) int64
        self._require_codes()
        return self.quantize(x).indices

    @torch.no_grad()
    def encode_latents(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:  # (B,3,S,S) -> (B,C,h,w)
        """The latents the decoder takes: the codes' vectors, or (kl) the posterior's mean, or
        with ``sample`` a draw from it."""
        if self.discrete:
            return self.latents_of(self.encode(x))
        z = self.encoder(x)
        if sample:
            return self.quantizer.sample(z, generator)
        return self.quantizer.moments(z)[0]

    def latents_of(self, indices: torch.Tensor) -> torch.Tensor:  # (B,h,w) -> (B,C,h,w)
        self._require_codes()
        return self.quantizer.lookup(indices).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:  # (B,h,w) -> (B,3,S,S)
        self._require_codes()
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"token ids must be in [0, {self.codebook_size})")
        return self.decoder(self.latents_of(indices.long()))

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """(B,C,h,w) -> (B,3,S,S). ``quantize`` snaps each vector to its nearest code first
        (what a diffusion sample should get); otherwise the decoder sees ``z`` as is. A kl
        model has no codebook: its latents are always decoded as they are."""
        if quantize and self.discrete:
            flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            idx = self.quantizer.nearest(flat)  # l2: cosine; EMA, gumbel: euclidean; FSQ: grid
            z = self.latents_of(idx.view(z.shape[0], z.shape[2], z.shape[3]))
        return self.decoder(z)

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from the bottleneck's own prior, no learned prior over latents: codes
        drawn uniformly (the dVAE's prior) for the discrete kinds, z ~ N(0, I) for kl."""
        g, dev = self.grid_size, self.decoder.conv_out.weight.device
        if self.discrete:
            codes = torch.randint(0, self.codebook_size, (n, g, g), generator=generator)
            return self.decode_indices(codes.to(dev))
        z = torch.randn(n, self.latent_channels, g, g, generator=generator)
        return self.decoder(z.to(dev))

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output weight (the VQ-GAN adaptive weight compares gradients here)."""
        return self.decoder.conv_out.weight
