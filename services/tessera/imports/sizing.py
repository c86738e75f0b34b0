"""Memory and FLOP estimates per deployment of an imported Kandinsky 2.2 bundle, from the
configs alone: each model is built on PyTorch's meta device (no weights, no memory) to count
its parameters, and run there once under ``FlopCounterMode`` at the served shapes.

``PUBLISHED`` holds the key numbers of the published Kandinsky 2.2 configs
(kandinsky-community/kandinsky-2-2-prior and kandinsky-2-2-decoder on the Hugging Face Hub,
written down here, nothing downloaded); the model cards' parameter counts (image encoder
ViT-bigG/14 1.8B, prior 1B, UNet 1.22B, MoVQ 67M) check them (``tests/unit/imports``).

Memory per replica = weights at the dtype + activations, where activations are estimated as
4x the largest intermediate tensor of one row's forward times the rows a step runs (inference
keeps little more alive than a block's input, output and skip connections): a sizing guide
for resources, not a measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
GIB = 1024**3

# Published Kandinsky 2.2 (sources above). Image side 768 = UNet sample_size 96 x MoVQ 8.
PUBLISHED = {
    "text_encoder": {  # CLIP ViT-bigG/14 text tower with projection
        "hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 20,
        "intermediate_size": 5120, "projection_dim": 1280, "vocab_size": 49408,
    },
    "image_encoder": {  # CLIP ViT-bigG/14 vision tower with projection
        "hidden_size": 1664, "num_hidden_layers": 48, "num_attention_heads": 16,
        "intermediate_size": 8192, "patch_size": 14, "image_size": 224, "projection_dim": 1280,
    },
    "prior": {
        "num_attention_heads": 32, "attention_head_dim": 64, "num_layers": 20,
        "embedding_dim": 1280, "num_embeddings": 77, "additional_embeddings": 4,
    },
    "unet": {
        "in_channels": 4, "out_channels": 8, "addition_embed_type": "image",
        "encoder_hid_dim": 1280, "encoder_hid_dim_type": "image_proj",
        "cross_attention_dim": 768, "attention_head_dim": 64, "layers_per_block": 3,
        "block_out_channels": [384, 768, 1152, 1536], "sample_size": 96,
        "down_block_types": ["ResnetDownsampleBlock2D"] + ["SimpleCrossAttnDownBlock2D"] * 3,
        "up_block_types": ["SimpleCrossAttnUpBlock2D"] * 3 + ["ResnetUpsampleBlock2D"],
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
        "resnet_time_scale_shift": "scale_shift", "class_embed_type": None,
    },
    "movq": {
        "block_out_channels": [128, 256, 256, 512], "layers_per_block": 2, "latent_channels": 4,
        "num_vq_embeddings": 16384, "norm_type": "spatial", "vq_embed_dim": 4,
        "down_block_types": ["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
        "up_block_types": ["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3,
    },
}  # fmt: skip
PUBLISHED_PARAMS = {  # the model cards' counts
    "image_encoder": 1.8e9, "prior": 1.0e9, "unet": 1.22e9, "movq": 67e6,
}  # fmt: skip


@dataclass(frozen=True)
class Part:
    """One model of a deployment: parameters, FLOPs of one call for one row, the largest
    intermediate tensor of that call (fp32 bytes), and calls per request step."""

    name: str
    params: int
    flops: int
    peak_tensor_bytes: int


class _Largest(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * 4)
        return out


def _measure(name: str, model: torch.nn.Module, call) -> Part:  # noqa: ANN001
    largest = _Largest()
    with torch.no_grad(), FlopCounterMode(display=False) as flops, largest:
        call(model)
    params = sum(p.numel() for p in model.parameters())
    return Part(name, params, int(flops.get_total_flops()), largest.largest)


def parts(configs: dict[str, dict], image_size: int, text_tokens: int = 77) -> dict[str, list]:
    """The models of each deployment, measured on the meta device at ``image_size``."""
    from diffusers import PriorTransformer, UNet2DConditionModel, VQModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    c = configs
    scale = 2 ** (len(c["movq"]["block_out_channels"]) - 1)
    grid = image_size // scale
    with torch.device("meta"):
        text = CLIPTextModelWithProjection(CLIPTextConfig(**c["text_encoder"]))
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**c["image_encoder"]))
        prior = PriorTransformer(**c["prior"])
        unet = UNet2DConditionModel(**c["unet"])
        movq = VQModel(**c["movq"])
        dim = c["prior"].get("embedding_dim", 768)
        side = c["image_encoder"].get("image_size", 224)
        emb = torch.zeros(1, dim)
        tokens = torch.zeros(1, text_tokens, dtype=torch.long)
        states = torch.zeros(1, text_tokens, c["text_encoder"].get("hidden_size", 512))
        mask = torch.ones(1, text_tokens, dtype=torch.bool)
        t = torch.zeros(1, dtype=torch.long)
        latents = torch.zeros(1, c["unet"].get("in_channels", 4), grid, grid)
        return {
            "Prior": [
                _measure("text_encoder", text, lambda m: m(tokens)),
                _measure("image_encoder", vision, lambda m: m(torch.zeros(1, 3, side, side))),
                _measure("prior", prior, lambda m: m(emb, t, emb, states, mask)),
            ],
            "Decoder": [
                _measure(
                    "unet",
                    unet,
                    lambda m: m(latents, t, None, added_cond_kwargs={"image_embeds": emb}),
                )
            ],
            "Detokenizer": [
                _measure("movq", movq, lambda m: m.decode(latents, force_not_quantize=True))
            ],
            "Tokenizer": [
                _measure(
                    "movq", movq, lambda m: m.encode(torch.zeros(1, 3, image_size, image_size))
                )
            ],
        }


def estimate(configs: dict[str, dict], image_size: int, rows: dict[str, int] | None = None) -> dict:
    """Per deployment: parameters, GiB at fp32/fp16/bf16 (weights + activations for
    ``rows[deployment]`` rows, default 2: one guided image), and FLOPs per row: of one
    denoising step (Prior: the prior; Decoder: the UNet) or one image (de)tokenized."""
    rows = {"Prior": 2, "Decoder": 2, "Detokenizer": 1, "Tokenizer": 1, **(rows or {})}
    out = {}
    for deployment, models in parts(configs, image_size).items():
        params = sum(p.params for p in models)
        peak = max(p.peak_tensor_bytes for p in models)
        memory = {}
        for dtype, size in DTYPE_BYTES.items():
            activations = 4 * peak * rows[deployment] * size / 4
            memory[dtype] = round((params * size + activations) / GIB, 2)
        step = models[-1] if deployment == "Prior" else models[0]
        out[deployment] = {
            "params": params,
            "memory_gib": memory,
            "gflops_per_row": round(step.flops / 1e9, 3),
            "parts": {p.name: p.params for p in models},
        }
    return out


def bundle_configs(bundle_dir: Path) -> tuple[dict[str, dict], int]:
    """The library configs an imported Kandinsky bundle points at, and its image side."""
    bundle_dir = Path(bundle_dir)
    clip = json.loads((bundle_dir / "clip" / "config.json").read_text())
    tok = json.loads((bundle_dir / "tokenizer" / "config.json").read_text())
    prior_src, decoder_src = Path(clip["source"]), Path(tok["source"])

    def read(path: Path) -> dict:
        cfg = json.loads(path.read_text())
        cfg = cfg.get("text_config") or cfg.get("vision_config") or cfg
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    configs = {
        "text_encoder": read(prior_src / "text_encoder" / "config.json"),
        "image_encoder": read(prior_src / "image_encoder" / "config.json"),
        "prior": read(prior_src / "prior" / "config.json"),
        "unet": read(decoder_src / "unet" / "config.json"),
        "movq": read(decoder_src / "movq" / "config.json"),
    }
    return configs, int(tok["image_size"])


def gpu_options(
    sizes: dict, dtype: str = "fp16", gpu_gib: float = 80.0, headroom: float = 1.2
) -> dict[str, dict]:
    """Serve options per deployment for one GPU of ``gpu_gib``: the fraction of a GPU its
    estimated memory at ``dtype`` takes (times ``headroom``, rounded up to 0.05, at least
    0.05); what a GPU profile gives an imported bundle's deployments."""
    out = {}
    for deployment, size in sizes.items():
        need = size["memory_gib"][dtype] * headroom / gpu_gib
        fraction = min(1.0, max(0.05, -(-need // 0.05) * 0.05))
        out[deployment] = {"ray_actor_options": {"num_gpus": round(fraction, 2)}}
    return out


def published_params() -> dict[str, int]:
    """Parameters of each model of ``PUBLISHED`` (built on the meta device)."""
    from diffusers import PriorTransformer, UNet2DConditionModel, VQModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        models = {
            "image_encoder": CLIPVisionModelWithProjection(
                CLIPVisionConfig(**PUBLISHED["image_encoder"])
            ),
            "prior": PriorTransformer(**PUBLISHED["prior"]),
            "unet": UNet2DConditionModel(**PUBLISHED["unet"]),
            "movq": VQModel(**PUBLISHED["movq"]),
        }
    return {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
