"""Memory and FLOPs of an imported Janus per deployment, from its config alone (modules built
on the meta device: exact parameter counts, no weights), and the GPU profile's Serve options
derived from them. ``python -m tessera.imports.janus_sizing`` prints the table for the published
Janus-Pro 1B and 7B (``docs/decisions/janus-adapter.md`` explains the model).

* LanguageModel: the Llama weights + the image-generation embeddings, aligner and head (the
  SigLIP encoder and the text head are not loaded), plus its KV cache: one row is
  2 x layers x kv_heads x head_dim x (prompt_len + 576) values, a guided image takes two
  rows. FLOPs per image: 2 rows x 2 x (linear weights x positions: the prompt's, then one
  per code), plus attention (2 x 2 x layers x hidden x keys per query, causal).
* Detokenizer / Tokenizer: the VQ model (16x downsampling, 16384 codes); FLOPs of one decode /
  encode counted by ``torch.utils.flop_counter`` on the meta device; activations estimated as
  four live feature maps at full resolution with the first level's channels.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from tessera.common.limits import MAX_ITEMS_PER_CALL, MAX_LM_IMAGES_PER_CALL

# Published configs (not downloaded): DeepSeek's deepseek-ai/Janus-Pro-1B and -7B
# config.json (language_config: LlamaForCausalLM; gen_vision_config: VQ-16; gen_head /
# gen_aligner widths = the LM's hidden size), which transformers' JanusConfig carries as
# text_config / vq_config (deepseek-community/Janus-Pro-1B, -7B). JanusVQVAEConfig's defaults
# are the 1B's; the VQ model is the same in both.
JANUS_PRO: dict[str, dict[str, Any]] = {
    "Janus-Pro-1B": {
        "text": {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "vocab_size": 102400,
            "max_position_embeddings": 16384,
        },
    },
    "Janus-Pro-7B": {
        "text": {
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 30,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 102400,
            "max_position_embeddings": 16384,
        },
    },
}
JANUS_VQ16 = {
    "num_embeddings": 16384,
    "embed_dim": 8,
    "latent_channels": 256,
    "base_channels": 128,
    "channel_multiplier": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
    "num_patches": 24,  # 384 px / 16
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GPU_MEMORY_GIB = 80.0  # the reference GPU of the gpu profile (A100 / H100 80 GB)
CUDA_OVERHEAD_GIB = 1.0  # CUDA context, allocator slack and kernels per replica
TYPICAL_PROMPT_TOKENS = 32
GIB = 2**30


def published_config(name: str) -> Any:
    """A transformers ``JanusConfig`` with a published checkpoint's numbers."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    text = LlamaConfig(**JANUS_PRO[name]["text"])
    width = text.hidden_size
    vq = JanusVQVAEConfig(**JANUS_VQ16, projection_dim=width, image_token_embed_dim=width)
    return JanusConfig(text_config=text, vision_config=JanusVisionConfig(), vq_config=vq)


@dataclass(frozen=True)
class Estimate:
    """One deployment's cost: resident weights, memory per batch unit, FLOPs per image."""

    params: int
    weight_bytes: int
    unit_bytes: int  # LanguageModel: one KV-cache row; VQ services: one image's activations
    gflops_per_image: float

    def memory_gib(self, units: int) -> float:
        return (self.weight_bytes + units * self.unit_bytes) / GIB + CUDA_OVERHEAD_GIB


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def estimate(
    janus: Any,
    dtype: str = "bf16",
    prompt_len: int = 256,
    prompt_tokens: int = TYPICAL_PROMPT_TOKENS,
) -> dict[str, Estimate]:
    """Per deployment (``LanguageModel``, ``Detokenizer``, ``Tokenizer``) for ``janus`` (a
    ``JanusConfig``) served in ``dtype``; ``prompt_len``: the cache's prompt slots,
    ``prompt_tokens``: a request's prompt (template included) for the FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from tessera.common.hf_weights import on_meta
    from tessera.lm.janus import JanusImageLM, JanusLMConfig
    from tessera.tokenizer.janus import JanusVQ, JanusVQConfig

    size = torch.empty((), dtype=DTYPES[dtype]).element_size()
    text, vq = janus.text_config, janus.vq_config
    grid = vq.num_patches
    tokens = grid * grid
    lm = on_meta(lambda: JanusImageLM(JanusLMConfig(), janus))
    text_linear = _count(lm.language_model) - lm.language_model.embed_tokens.weight.numel()
    aligner, head = _count(lm.generation_aligner), _count(lm.generation_head)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    layers, width = text.num_hidden_layers, text.num_attention_heads * head_dim
    kv_row = 2 * layers * text.num_key_value_heads * head_dim * (prompt_len + tokens) * size
    # One row: the prompt's p positions, then a position per code but the last; the aligner
    # embeds each sampled code fed back, the head scores every code. Keys per query: causal.
    p = prompt_tokens
    linear = text_linear * (p + tokens - 1) + aligner * (tokens - 1) + head * tokens
    context = p * (p + 1) // 2 + sum(p + t for t in range(1, tokens))
    lm_flops = 2 * (2 * linear + 4 * layers * width * context)  # a guided image: 2 rows
    lm_est = Estimate(_count(lm), _count(lm) * size, kv_row, lm_flops / 1e9)

    vqm = on_meta(lambda: JanusVQ(JanusVQConfig(grid_size=grid), janus)).vqmodel
    side = grid * 2 ** (len(vq.channel_multiplier) - 1)
    with FlopCounterMode(display=False) as decode:
        vqm.decode(torch.zeros(1, tokens, dtype=torch.long, device="meta"))
    with FlopCounterMode(display=False) as encode:
        vqm.encode(torch.zeros(1, 3, side, side, device="meta"))
    activations = 4 * vq.base_channels * vq.channel_multiplier[0] * side * side * size
    weights = _count(vqm) * size
    return {
        "LanguageModel": lm_est,
        "Detokenizer": Estimate(_count(vqm), weights, activations, decode.get_total_flops() / 1e9),
        "Tokenizer": Estimate(_count(vqm), weights, activations, encode.get_total_flops() / 1e9),
    }


def gpu_options(
    estimates: dict[str, Estimate], gpu_gib: float = GPU_MEMORY_GIB, lm_share: float = 0.75
) -> dict[str, dict[str, Any]]:
    """The gpu profile's options per deployment: the LM's ``max_rows`` is the largest power
    of two (at most 128, at least one maximal request) whose KV cache fits ``lm_share`` of
    the GPU beside its weights; each deployment asks for the GPU fraction its memory takes
    (rounded up to 0.05). The VQ services' budget is a full batch of MAX_ITEMS_PER_CALL
    images."""
    lm = estimates["LanguageModel"]
    rows = 128
    while rows > 2 * MAX_LM_IMAGES_PER_CALL and lm.memory_gib(rows) > lm_share * gpu_gib:
        rows //= 2
    if lm.memory_gib(rows) > gpu_gib:
        raise ValueError(f"the LanguageModel needs {lm.memory_gib(rows):.1f} GiB: no one GPU")
    out = {"LanguageModel": (lm.memory_gib(rows), {"max_rows": rows})}
    for name in ("Detokenizer", "Tokenizer"):
        out[name] = (estimates[name].memory_gib(MAX_ITEMS_PER_CALL), {})
    return {
        name: {
            "ray_actor_options": {"num_cpus": 1, "num_gpus": math.ceil(gib / gpu_gib * 20) / 20},
            "memory_gib": round(gib, 2),
            **({"user_config": user} if user else {}),
        }
        for name, (gib, user) in out.items()
    }


def table() -> str:
    """A markdown table of both published sizes in every dtype."""
    lines = [
        "| checkpoint | dtype | deployment | params | weights GiB | per row / image GiB "
        "| GFLOP / image | gpu profile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in JANUS_PRO:
        janus = published_config(name)
        for dtype in DTYPES:
            est = estimate(janus, dtype)
            options = gpu_options(est) if dtype != "fp32" else {}
            for deployment, e in est.items():
                o = options.get(deployment)
                gpu = "" if o is None else f"{o['ray_actor_options']['num_gpus']} GPU"
                if o and "user_config" in o:
                    gpu += f", max_rows {o['user_config']['max_rows']}"
                lines.append(
                    f"| {name} | {dtype} | {deployment} | {e.params / 1e9:.3f} B "
                    f"| {e.weight_bytes / GIB:.2f} | {e.unit_bytes / GIB:.3f} "
                    f"| {e.gflops_per_image:,.0f} | {gpu} |"
                )
    return "\n".join(lines)


def bundle_estimate(bundle_dir: Path, dtype: str = "bf16") -> dict[str, Estimate]:
    """``estimate`` for an imported Janus bundle, from its snapshot's config."""
    from tessera.common.checkpoint import read_config
    from tessera.lm.janus import read_janus_config

    lm = read_config(Path(bundle_dir) / "lm")
    return estimate(read_janus_config(lm["source"]), dtype, prompt_len=lm["prompt_len"])


def serve_config(bundle_dir: Path, base: Path, gpu_gib: float = GPU_MEMORY_GIB) -> dict:
    """The Serve config ``base`` (the gpu profile) for an imported Janus bundle: its
    ``bundle_dir``, the deployments it has sized by ``gpu_options``, the others left out."""
    config = yaml.safe_load(Path(base).read_text())
    options = gpu_options(bundle_estimate(bundle_dir), gpu_gib)
    (app,) = [a for a in config["applications"] if a["name"] == "tessera"]
    app["args"] = {**{k: v for k, v in app["args"].items() if k != "bundle"}}
    app["args"]["bundle_dir"] = str(Path(bundle_dir).absolute())
    app["args"]["ar_candidates"] = 1  # no CLIP to rerank with
    kept = []
    for entry in app["deployments"]:
        if entry["name"] in ("Prior", "Decoder"):
            continue
        if entry["name"] in options:
            sized = options[entry["name"]]
            entry["ray_actor_options"] = sized["ray_actor_options"]
            entry["user_config"] = {**entry.get("user_config", {}), **sized.get("user_config", {})}
        kept.append(entry)
    app["deployments"] = kept
    return config


def main(argv: list[str] | None = None) -> None:
    """Print the published sizes, or write a sized gpu Serve config for a bundle."""
    parser = argparse.ArgumentParser(prog="python -m tessera.imports.janus_sizing")
    parser.add_argument("--bundle", type=Path, help="an imported Janus bundle")
    parser.add_argument("--base", type=Path, default=Path("deploy/serve/gpu.yaml"))
    parser.add_argument("--out", type=Path, help="where to write its Serve config")
    parser.add_argument("--gpu-gib", type=float, default=GPU_MEMORY_GIB)
    args = parser.parse_args(argv)
    if args.bundle is None:
        print(table())
        return
    config = serve_config(args.bundle, args.base, args.gpu_gib)
    text = yaml.safe_dump(config, sort_keys=False)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
