"""Kandinsky 2.2 (diffusers): a ``KandinskyV22PriorPipeline`` directory and a
``KandinskyV22Pipeline`` directory (``model_index.json`` + component folders, as
``save_pretrained`` writes them and the Hub holds them) → a Tessera bundle of four components
served by the adapters of the existing deployments:

- ``clip``: prior/text_encoder, image_encoder, tokenizer, image_processor → the Prior
  deployment, adapter ``tessera.prior.kandinsky.KandinskyCLIP``;
- ``prior``: prior/prior, prior/scheduler (UnCLIP) → the Prior, ``KandinskyPrior``;
- ``decoder``: decoder/unet, decoder/scheduler (DDPM or DDIM) → the Decoder,
  ``tessera.decoder.kandinsky.KandinskyUNet``;
- ``tokenizer``: decoder/movq → the Tokenizer and Detokenizer,
  ``tessera.tokenizer.kandinsky.MoVQ``.

The decoder's unconditional input is the CLIP image embedding of an all-zero image (what
``KandinskyV22PriorPipeline`` returns as ``negative_image_embeds``); it is computed here once
and stored in the bundle (``decoder/negative_image_embeds.safetensors``), so the Decoder does
not load the image encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tessera.imports.common import (
    ImportedComponent,
    check_safetensors,
    read_json,
    write_index,
)
from tessera.imports.errors import ImportRefused

FORMAT = "diffusers-kandinsky22"
FAMILY = "kandinsky22"
PRIOR_PIPELINE = "KandinskyV22PriorPipeline"
DECODER_PIPELINE = "KandinskyV22Pipeline"
NEGATIVE_NAME = "negative_image_embeds.safetensors"

# pipeline component -> the library classes accepted there
PRIOR_COMPONENTS = {
    "prior": ("PriorTransformer",),
    "text_encoder": ("CLIPTextModelWithProjection",),
    "image_encoder": ("CLIPVisionModelWithProjection",),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
    "image_processor": ("CLIPImageProcessor", "CLIPImageProcessorPil", "CLIPImageProcessorFast"),
    "scheduler": ("UnCLIPScheduler",),
}
DECODER_COMPONENTS = {
    "unet": ("UNet2DConditionModel",),
    "movq": ("VQModel",),
    "scheduler": ("DDPMScheduler", "DDIMScheduler"),
}
SCHEDULER_NAMES = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim"}
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
PIPELINE_DEFAULTS = {"prior_steps": 25, "decoder_steps": 100, "guidance_scale": 4.0}


def _pipeline_class(directory: Path) -> str | None:
    index = directory / "model_index.json"
    if not index.is_file():
        return None
    return read_json(index, "pipeline index").get("_class_name")


def _candidates(src: Path) -> list[Path]:
    return [src, *sorted(p for p in src.iterdir() if p.is_dir())]


def detect(src: Path) -> bool:
    """True when ``src`` (or a folder directly in it) is a diffusers Kandinsky pipeline."""
    return any((_pipeline_class(d) or "").startswith("Kandinsky") for d in _candidates(Path(src)))


def find_pair(src: Path) -> tuple[Path, Path]:
    """The prior and decoder pipeline directories in ``src`` (itself or its folders)."""
    found: dict[str, list[Path]] = {}
    for d in _candidates(src):
        name = _pipeline_class(d)
        if name:
            found.setdefault(name, []).append(d)
    other = sorted(set(found) - {PRIOR_PIPELINE, DECODER_PIPELINE})
    for role in (PRIOR_PIPELINE, DECODER_PIPELINE):
        if len(found.get(role, [])) > 1:
            dirs = ", ".join(str(d) for d in found[role])
            raise ImportRefused(f"more than one {role} in {src}: {dirs}")
        if role not in found:
            hint = f" (found {', '.join(other)}: wrong class)" if other else ""
            raise ImportRefused(
                f"missing component: no {role} directory in {src}{hint}; Kandinsky 2.2 needs "
                f"a {PRIOR_PIPELINE} and a {DECODER_PIPELINE} directory"
            )
    return found[PRIOR_PIPELINE][0], found[DECODER_PIPELINE][0]


def _weights(folder: Path) -> list[str]:
    """The safetensors files of a model folder (one file, or an index + shards)."""
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            check_safetensors(folder / name)
            return [name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index, "shard index").get("weight_map", {}).values()))
            for shard in shards:
                if not (folder / shard).is_file():
                    raise ImportRefused(f"missing component: weight shard {folder / shard}")
                check_safetensors(folder / shard)
            return [index.name, *shards]
    if any(folder.glob("*.bin")) or any(folder.glob("*.ckpt")):
        raise ImportRefused(
            f"{folder} has only pickle weights (.bin); Tessera loads safetensors only "
            "(convert with `save_pretrained(..., safe_serialization=True)`)"
        )
    if any(folder.glob("*.fp16.safetensors")):
        raise ImportRefused(
            f"{folder} has only an fp16 variant; re-save it without `variant` "
            "(Tessera casts to half precision on CUDA itself)"
        )
    raise ImportRefused(f"missing component: no safetensors weights in {folder}")


def _component(pipeline: Path, name: str, accepted: tuple[str, ...]) -> tuple[dict, list[str]]:
    """Check one pipeline component: listed in model_index.json with an accepted class, its
    folder present with its config (and weights for models); its config and file list."""
    index = read_json(pipeline / "model_index.json", "pipeline index")
    entry = index.get(name)
    if not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
        raise ImportRefused(f"missing component: {pipeline} has no {name!r} in model_index.json")
    kind = "scheduler" if name == "scheduler" else "component"
    if entry[1] not in accepted:
        what = "unsupported scheduler" if kind == "scheduler" else "wrong class"
        raise ImportRefused(
            f"{what}: {pipeline}/{name} is {entry[1]}; expected {' or '.join(accepted)}"
        )
    folder = pipeline / name
    if not folder.is_dir():
        raise ImportRefused(f"missing component: folder {folder} (listed in model_index.json)")
    if name == "scheduler":
        config = read_json(folder / "scheduler_config.json", "scheduler config")
        if config.get("_class_name", entry[1]) != entry[1]:
            raise ImportRefused(
                f"wrong class: {folder} is {config.get('_class_name')}, index says {entry[1]}"
            )
        return config, [f"{name}/scheduler_config.json"]
    if name == "tokenizer":
        files = sorted(p.name for p in folder.iterdir() if p.is_file())
        if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= set(files):
            raise ImportRefused(f"missing component: {folder} has no tokenizer.json or vocab")
        return read_json(folder / "tokenizer_config.json", "tokenizer config"), [
            f"{name}/{f}" for f in files
        ]
    if name == "image_processor":
        config = read_json(folder / "preprocessor_config.json", "image processor config")
        return config, [f"{name}/preprocessor_config.json"]
    config = read_json(folder / "config.json", f"{name} config")
    declared = config.get("_class_name") or (config.get("architectures") or [None])[0]
    if declared is not None and declared not in accepted:
        raise ImportRefused(
            f"wrong class: {folder}/config.json is {declared}; expected {accepted[0]}"
        )
    return config, [f"{name}/config.json", *(f"{name}/{w}" for w in _weights(folder))]


def _check_schedulers(prior_sched: dict, decoder_sched: dict, decoder_cls: str) -> None:
    if prior_sched.get("prediction_type", "epsilon") != "sample":
        raise ImportRefused(
            "unsupported scheduler: the prior's UnCLIPScheduler must predict the sample "
            f"(prediction_type {prior_sched.get('prediction_type')!r})"
        )
    if decoder_sched.get("prediction_type", "epsilon") != "epsilon":
        raise ImportRefused(
            f"unsupported scheduler: the decoder's {decoder_cls} predicts "
            f"{decoder_sched.get('prediction_type')!r}; only 'epsilon' is served"
        )
    if decoder_sched.get("variance_type") in ("learned", "learned_range"):
        raise ImportRefused(
            f"unsupported scheduler: the decoder's {decoder_cls} uses a learned variance "
            f"({decoder_sched['variance_type']}); fixed variances only"
        )


def _zero_image_embedding(prior_dir: Path, vision: dict) -> torch.Tensor:
    """(1, D): the image encoder's embedding of an all-zero image (the pipelines' negative)."""
    from transformers import CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection.from_pretrained(
        str(prior_dir / "image_encoder"), use_safetensors=True, local_files_only=True
    ).eval()
    side = vision["image_size"]
    with torch.inference_mode():
        return encoder(torch.zeros(1, 3, side, side)).image_embeds.float().contiguous()


def write_bundle(src: Path, dst: Path, *, image_size: int | None = None) -> Path:
    """Check the pair and write the bundle (``image_size``: the served side in pixels,
    default the UNet's ``sample_size`` times the MoVQ's scale)."""
    prior_dir, decoder_dir = find_pair(Path(src))
    cfg, files = {}, {}
    for name, accepted in PRIOR_COMPONENTS.items():
        cfg[name], files[name] = _component(prior_dir, name, accepted)
    for name, accepted in DECODER_COMPONENTS.items():
        key = "decoder_scheduler" if name == "scheduler" else name
        cfg[key], files[key] = _component(decoder_dir, name, accepted)
    decoder_cls = cfg["decoder_scheduler"].get("_class_name") or "DDPMScheduler"
    _check_schedulers(cfg["scheduler"], cfg["decoder_scheduler"], decoder_cls)

    dim = cfg["prior"].get("embedding_dim", 768)
    dims = {
        "prior embedding_dim": dim,
        "text_encoder projection_dim": cfg["text_encoder"].get("projection_dim"),
        "image_encoder projection_dim": cfg["image_encoder"].get("projection_dim"),
        "unet encoder_hid_dim": cfg["unet"].get("encoder_hid_dim"),
    }
    if len(set(dims.values())) != 1:
        raise ImportRefused(f"the prior and decoder do not fit: embedding sizes {dims}")
    if cfg["unet"].get("addition_embed_type") != "image":
        raise ImportRefused("wrong class: the decoder UNet is not image-conditioned")
    channels = cfg["unet"].get("in_channels", 4)
    if cfg["movq"].get("latent_channels") != channels:
        raise ImportRefused("the decoder UNet's in_channels do not match the MoVQ's latents")
    scale = 2 ** (len(cfg["movq"]["block_out_channels"]) - 1)
    side = image_size or int(cfg["unet"].get("sample_size") or 64) * scale
    if side < scale**2 or side % (scale**2):
        raise ImportRefused(f"image_size {side} is not a multiple of {scale**2} (MoVQ scale²)")
    grid = side // scale**2 * scale  # diffusers' downscale_height_and_width
    text_cfg = cfg["text_encoder"].get("text_config", cfg["text_encoder"])
    vision = cfg["image_encoder"].get("vision_config", cfg["image_encoder"])
    max_tokens = min(
        cfg["tokenizer"].get("model_max_length", 77), text_cfg.get("max_position_embeddings", 77)
    )
    common = {"_format": FORMAT}
    dst = Path(dst)
    (dst / "decoder").mkdir(parents=True, exist_ok=True)
    save_file(
        {"negative_image_embeds": _zero_image_embedding(prior_dir, vision)},
        str(dst / "decoder" / NEGATIVE_NAME),
    )
    components = {
        "clip": ImportedComponent(
            {
                **common,
                "_class_name": "tessera.prior.kandinsky:KandinskyCLIP",
                "source": str(prior_dir.resolve()),
                "embed_dim": dim,
                "image_size": vision["image_size"],
                "max_text_tokens": max_tokens,
            },
            prior_dir,
            files["text_encoder"]
            + files["image_encoder"]
            + files["tokenizer"]
            + files["image_processor"],
        ),
        "prior": ImportedComponent(
            {
                **common,
                "_class_name": "tessera.prior.kandinsky:KandinskyPrior",
                "source": str(prior_dir.resolve()),
                "embed_dim": dim,
                "sample_steps": PIPELINE_DEFAULTS["prior_steps"],
                "guidance_scale": PIPELINE_DEFAULTS["guidance_scale"],
                "n_candidates": 1,
                "num_train_timesteps": cfg["scheduler"].get("num_train_timesteps", 1000),
            },
            prior_dir,
            ["model_index.json"] + files["prior"] + files["scheduler"],
        ),
        "decoder": ImportedComponent(
            {
                **common,
                "_class_name": "tessera.decoder.kandinsky:KandinskyUNet",
                "source": str(decoder_dir.resolve()),
                "clip_dim": dim,
                "latent_channels": channels,
                "grid_size": grid,
                "image_size": side,
                "default_steps": PIPELINE_DEFAULTS["decoder_steps"],
                "default_guidance": PIPELINE_DEFAULTS["guidance_scale"],
                "scheduler": SCHEDULER_NAMES[decoder_cls],
                "num_train_timesteps": cfg["decoder_scheduler"].get("num_train_timesteps", 1000),
            },
            decoder_dir,
            ["model_index.json"] + files["unet"] + files["decoder_scheduler"],
            own_files=[NEGATIVE_NAME],
        ),
        "tokenizer": ImportedComponent(
            {
                **common,
                "_class_name": "tessera.tokenizer.kandinsky:MoVQ",
                "source": str(decoder_dir.resolve()),
                "image_size": side,
                "grid_size": grid,
                "latent_channels": channels,
                "scale_factor": scale,
                "codebook_size": cfg["movq"].get("num_vq_embeddings", 16384),
                # the pipeline decodes its latents unquantized (force_not_quantize=True)
                "quantize_latents": False,
            },
            decoder_dir,
            files["movq"],
        ),
    }
    write_index(dst, dst.name, FAMILY, components)
    return dst
