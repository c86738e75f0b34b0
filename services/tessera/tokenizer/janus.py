"""Janus's VQ model (``transformers``' ``JanusVQVAE``, 16x downsampling, 16384 codes in the
published checkpoints) as the bundle's ``tokenizer`` component: the Detokenizer decodes the
LanguageModel's code grids with it, the Tokenizer encodes images to codes.

Only ``model.vqmodel.*`` is loaded from the snapshot; decoding is the library's own
``JanusVQVAE.decode`` (codebook lookup, L2-normalised, ``post_quant_conv``, decoder), so a
served image is ``JanusForConditionalGeneration.decode_image_tokens`` of the same codes.
Pixels come out in [-1, 1], as Tessera's own VQ model gives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tessera.common.hf_weights import load_prefixed, on_meta, weight_files
from tessera.lm.janus import read_janus_config, serving_dtype


@dataclass
class JanusVQConfig:
    source: str = ""
    image_size: int = 384  # grid_size * 2 ** (len(channel_multiplier) - 1)
    grid_size: int = 24  # vq_config.num_patches
    codebook_size: int = 16384
    latent_channels: int = 8  # vq_config.embed_dim: the codebook's vectors


class JanusVQ(nn.Module):
    config_class = JanusVQConfig

    def __init__(self, config: JanusVQConfig, janus_config: object = None) -> None:
        super().__init__()
        from transformers.models.janus.modeling_janus import JanusVQVAE

        janus = janus_config or read_janus_config(config.source)
        self.config = config
        self.vqmodel = JanusVQVAE(janus.vq_config)
        self.image_size, self.grid_size = config.image_size, config.grid_size
        self.codebook_size, self.latent_channels = config.codebook_size, config.latent_channels

    @classmethod
    def from_import(cls, directory: Path, meta: dict, device: torch.device | str) -> JanusVQ:
        fields = set(JanusVQConfig.__dataclass_fields__)
        config = JanusVQConfig(**{k: v for k, v in meta.items() if k in fields})
        device = torch.device(device)
        janus = read_janus_config(config.source)
        model = on_meta(lambda: cls(config, janus))
        load_prefixed(
            model, weight_files(Path(config.source)), "model.", device, serving_dtype(device)
        )
        return model.eval()

    @property
    def _dtype(self) -> torch.dtype:
        return self.vqmodel.post_quant_conv.weight.dtype

    def decode_indices(self, grids: torch.Tensor) -> torch.Tensor:
        """(N, g, g) codes -> (N, 3, S, S) float32 pixels in [-1, 1]."""
        return self.vqmodel.decode(grids.reshape(grids.shape[0], -1)).float()

    def decode_latents(self, latents: torch.Tensor, quantize: bool = False) -> torch.Tensor:
        """(N, embed_dim, g, g) codebook-space vectors -> pixels; ``quantize`` snaps each to
        its nearest (L2-normalised) codebook entry first, as ``decode`` looks them up."""
        if quantize:
            return self.decode_indices(self._nearest(latents))
        z = latents.to(self._dtype)
        return self.vqmodel.decoder(self.vqmodel.post_quant_conv(z)).float()

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> (N, embed_dim, g, g) before quantization."""
        return self.vqmodel.quant_conv(self.vqmodel.encoder(x.to(self._dtype))).float()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, g, g) codes, the library's ``JanusVQVAE.encode``."""
        tokens = self.vqmodel.encode(x.to(self._dtype)).image_tokens
        return tokens.view(x.shape[0], self.grid_size, self.grid_size)

    def _nearest(self, latents: torch.Tensor) -> torch.Tensor:
        codebook = F.normalize(self.vqmodel.quantize.embedding.weight.float(), dim=-1)
        z = F.normalize(latents.float().permute(0, 2, 3, 1), dim=-1)  # (N, g, g, C)
        return (z @ codebook.T).argmax(-1)
