"""Kandinsky 2.2's MoVQ (diffusers ``VQModel``, spatially normalised decoder) behind the
interface the Tokenizer and Detokenizer deployments use of Tessera's own ``VQModel``: pixels
in [-1, 1] ↔ token grids and latents. Imported by ``tessera models import``; loaded from the
library directory the bundle points at (``config.json``: ``source``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tessera.common.hf_weights import to_serving


class MoVQ(nn.Module):
    """``decode_latents(z, quantize=False)`` is what ``KandinskyV22Pipeline`` does with its
    final latents (``movq.decode(latents, force_not_quantize=True)``)."""

    family = "kandinsky22"

    def __init__(self, vq: nn.Module, meta: dict) -> None:
        super().__init__()
        self.vq = vq
        self.meta = meta

    @classmethod
    def from_import(cls, directory: Path, meta: dict, device: torch.device | str) -> MoVQ:
        from diffusers import VQModel

        vq = VQModel.from_pretrained(
            meta["source"], subfolder="movq", use_safetensors=True, local_files_only=True
        )
        return to_serving(cls(vq.eval(), meta), device)

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def grid_size(self) -> int:
        return int(self.meta["grid_size"])

    @property
    def codebook_size(self) -> int:
        return int(self.meta["codebook_size"])

    @property
    def latent_channels(self) -> int:
        return int(self.meta["latent_channels"])

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vq.parameters()).dtype

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,S,S) -> (B,C,h,w)
        return self.vq.encode(x.to(self.dtype)).latents.float()

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,S,S) -> (B,h,w) int64
        h = self.vq.encode(x.to(self.dtype)).latents
        _, _, (_, _, indices) = self.vq.quantize(h)
        return indices.reshape(h.shape[0], h.shape[2], h.shape[3])

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:  # (B,h,w) -> (B,3,S,S)
        b, h, w = indices.shape
        shape = (b, h, w, self.latent_channels)
        quant = self.vq.quantize.get_codebook_entry(indices.reshape(-1), shape)
        return self.decode_latents(quant, quantize=False)

    def decode_latents(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """(B,C,h,w) latents -> (B,3,S,S) pixels in [-1, 1] (unclamped); ``quantize`` snaps
        them to the codebook first."""
        z = z.to(self.dtype)
        return self.vq.decode(z, force_not_quantize=not quantize).sample.float()
