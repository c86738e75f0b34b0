"""Kandinsky 2.2's decoder (diffusers ``UNet2DConditionModel``, image-embedding conditioned)
served by the Decoder's step-level engine.

``KandinskyUNet`` gives the UNet the call ``DenoiseBatcher`` makes of Tessera's own
``LatentDecoder`` (x, t, image embedding, text, drop flags → the noise prediction): a dropped
row is conditioned on the bundle's negative embedding (the zero image's, as
``KandinskyV22PriorPipeline`` returns) and the text is not used. ``KandinskyDenoiseBatcher``
runs the checkpoint's own diffusers scheduler (DDPM or DDIM, one instance per request) and
diffusers' guidance rule (classifier-free only when the scale is above 1; the learned
variance channels are dropped, as the pipeline does for a fixed-variance scheduler). Each
image's noise comes from its own generator seeded with its seed, which is what
``KandinskyV22Pipeline`` draws when given one generator per image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from tessera.common.hf_weights import to_serving
from tessera.common.text_encoder import TextBatch
from tessera.decoder.engine import DenoiseBatcher

NEGATIVE_NAME = "negative_image_embeds.safetensors"
SCHEDULER_CLASSES = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler"}


@dataclass(frozen=True)
class KandinskyDecoderConfig:
    """What the Decoder reads of its model's config (as of ``LatentDecoder``'s)."""

    clip_dim: int
    latent_channels: int
    grid_size: int
    image_size: int
    default_steps: int
    default_guidance: float
    num_train_timesteps: int
    scheduler: str  # the checkpoint's own: "ddpm" | "ddim"


class KandinskyUNet(nn.Module):
    family = "kandinsky22"

    def __init__(self, unet: nn.Module, negative: Tensor, scheduler_config: dict, meta: dict):
        super().__init__()
        self.unet = unet
        self.register_buffer("negative", negative.reshape(1, -1))  # (1, D)
        self.scheduler_config = scheduler_config
        fields = KandinskyDecoderConfig.__dataclass_fields__
        self.config = KandinskyDecoderConfig(**{k: meta[k] for k in fields})

    @classmethod
    def from_import(cls, directory: Path, meta: dict, device: torch.device | str) -> KandinskyUNet:
        from diffusers import UNet2DConditionModel

        source = Path(meta["source"])
        unet = UNet2DConditionModel.from_pretrained(
            str(source), subfolder="unet", use_safetensors=True, local_files_only=True
        )
        negative = load_file(str(Path(directory) / NEGATIVE_NAME))["negative_image_embeds"]
        sched = json.loads((source / "scheduler" / "scheduler_config.json").read_text())
        return to_serving(cls(unet.eval(), negative, sched, meta), device)

    def make_scheduler(self, name: str) -> object:
        """A fresh diffusers scheduler of kind ``name`` with the checkpoint's settings."""
        import diffusers

        return getattr(diffusers, SCHEDULER_CLASSES[name]).from_config(self.scheduler_config)

    def denormalize_latents(self, z: Tensor) -> Tensor:
        return z  # the UNet works in the MoVQ's latent space itself

    def forward(
        self,
        x: Tensor,  # (B, C, h, w) latents
        t: Tensor,  # (B,) timesteps
        image_emb: Tensor,  # (B, D)
        text_states: Tensor | None = None,  # unused: the decoder sees no text
        text_mask: Tensor | None = None,
        drop_image: Tensor | None = None,  # (B,) bool: condition on the negative embedding
        drop_text: Tensor | None = None,
    ) -> Tensor:  # (B, C, h, w) noise prediction
        dtype = self.negative.dtype
        emb = image_emb.to(dtype)
        if drop_image is not None:
            emb = torch.where(drop_image[:, None], self.negative.expand_as(emb), emb)
        out = self.unet(
            sample=x.to(dtype),
            timestep=t,
            encoder_hidden_states=None,
            added_cond_kwargs={"image_embeds": emb},
            return_dict=False,
        )[0]
        return out[:, : x.shape[1]].float()  # learned-variance channels dropped


def no_text() -> TextBatch:
    """The text a Kandinsky decoder request carries: none (one empty masked row)."""
    return TextBatch(torch.zeros(1, 1, 1), torch.zeros(1, 1, dtype=torch.bool), torch.zeros(1, 1))


class KandinskyDenoiseBatcher(DenoiseBatcher):
    """``DenoiseBatcher`` with diffusers' schedulers and guidance rule."""

    def _scheduler(self, name: str) -> object:
        return self.model.make_scheduler(name)

    def submit(self, image_emb: Tensor, text: TextBatch, **kwargs: object) -> object:
        g = kwargs.get("guidance_scale")
        if g is not None and 0 <= g <= 1:  # diffusers: guidance only above 1
            kwargs["guidance_scale"] = 1.0
        return super().submit(image_emb, text, **kwargs)
