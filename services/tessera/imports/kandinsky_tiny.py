"""Tiny random-weight Kandinsky 2.2 checkpoints built with diffusers and transformers
themselves (the configs of diffusers' fast tests for ``KandinskyV22PriorPipeline`` and
``KandinskyV22Pipeline``), saved in the libraries' own layouts. Nothing is downloaded: the
CLIP tokenizer is a byte-level vocabulary written here (no merges), where diffusers' tests
fetch ``hf-internal-testing/tiny-random-clip``.

``build(dst)`` writes ``dst/prior`` and ``dst/decoder``; the import tests, the exactness
tests and the README's try-it-out use it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SIZE = 64  # the decoder's native side: UNet sample_size 32 x MoVQ scale 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def write_tokenizer(directory: Path, max_length: int = 77) -> None:
    """A CLIP BPE tokenizer over single bytes (512 tokens + 2 specials, no merges)."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def build(dst: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a tiny prior pipeline (``dst/prior``) and decoder pipeline (``dst/decoder``)."""
    from diffusers import (
        DDIMScheduler,
        KandinskyV22Pipeline,
        KandinskyV22PriorPipeline,
        PriorTransformer,
        UnCLIPScheduler,
        UNet2DConditionModel,
        VQModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    dst = Path(dst)
    write_tokenizer(dst / "_tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(dst / "_tokenizer"))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
            hidden_size=32,
            projection_dim=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=len(tokenizer),
        )
    ).eval()
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            image_size=224,
            projection_dim=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_channels=3,
            num_hidden_layers=5,
            patch_size=14,
        )
    ).eval()
    image_processor = CLIPImageProcessor(
        crop_size=224,
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3,
        size=224,
    )
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=12, embedding_dim=32, num_layers=1
    )
    # as diffusers' test: clip_std = 1 (random std would blow embeddings up)
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))
    prior_scheduler = UnCLIPScheduler(
        variance_type="fixed_small_log",
        prediction_type="sample",
        num_train_timesteps=1000,
        clip_sample=True,
        clip_sample_range=10.0,
    )
    KandinskyV22PriorPipeline(
        prior=prior.eval(),
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=prior_scheduler,
        image_processor=image_processor,
    ).save_pretrained(str(dst / "prior"), safe_serialization=True)

    unet = UNet2DConditionModel(
        in_channels=4,
        out_channels=8,  # learned variance, as the published decoder
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        encoder_hid_dim=32,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=100,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
        sample_size=IMAGE_SIZE // 2,
    ).eval()
    movq = VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    ).eval()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        thresholding=False,
    )
    KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq).save_pretrained(
        str(dst / "decoder"), safe_serialization=True
    )
    return dst / "prior", dst / "decoder"


def reference_images(
    src: Path,
    prompt: str,
    *,
    n: int,
    seed: int,
    steps: int,
    guidance: float,
    prior_steps: int = 25,
    prior_guidance: float = 4.0,
    side: int = IMAGE_SIZE,
) -> np.ndarray:
    """What diffusers' own ``KandinskyV22PriorPipeline`` + ``KandinskyV22Pipeline`` make of
    the pair at ``src``: (n, side, side, 3) floats in [0, 1]. Image i draws from a generator
    seeded ``seed + i`` in both pipelines (Tessera's per-image seeds); the prior runs at the
    pipeline defaults (25 steps, guidance 4), as the ``unclip`` route runs it."""
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    src = Path(src)
    prior = KandinskyV22PriorPipeline.from_pretrained(str(src / "prior"), local_files_only=True)
    decoder = KandinskyV22Pipeline.from_pretrained(str(src / "decoder"), local_files_only=True)
    for pipe in (prior, decoder):
        pipe.set_progress_bar_config(disable=True)

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed + i) for i in range(n)]

    with torch.inference_mode():
        emb = prior(
            [prompt] * n,
            num_inference_steps=prior_steps,
            guidance_scale=prior_guidance,
            generator=generators(),
            output_type="pt",
        )
        return decoder(
            image_embeds=emb.image_embeds,
            negative_image_embeds=emb.negative_image_embeds,
            height=side,
            width=side,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators(),
            output_type="np",
        ).images


def max_pixel_error(png: bytes, reference: np.ndarray) -> float:
    """Largest difference of a served PNG from a reference image, in [0, 1] units (one 8-bit
    level is 1/255: the PNG's rounding)."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32) / 255
    return float(np.abs(image - reference).max())
