"""`tessera models init`: a bundle of randomly initialised components.

Stands in for the trained bundle where only the plumbing is under test (the integration
tests use the tiny one). The configs agree with each other the way trained ones must: the
LM's vocabulary is the tokenizer's codebook, the decoder works on the tokenizer's latent
grid and the CLIP embedding width. The pixel model (the ``pixel`` route) stands alone. The
mixed-modal model (edits, captions, the ``mixed`` route) reads the tokenizer's codes, with a
text BPE trained here on a few sentences (``RANDOM_TEXTS``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tessera.common.checkpoint import save_component, write_bundle_index

# What the random bundle's text BPE is trained on (deterministic: the same ids every time).
RANDOM_TEXTS = (
    "a red circle", "a small blue square at the top left", "make the circle red",
    "remove the blue square", "add a small green cross at the top left",
    "move the triangle to the right", "make the square bigger",
    "turn the circle into a square", "give it a dark skin tone",
)  # fmt: skip


def build_random_bundle(
    out: Path, name: str, *, tiny: bool = True, seed: int = 0, tokenizer_kind: str = "vq"
) -> dict:
    """Write a complete random-init bundle to ``out``; returns its index. A continuous
    tokenizer (``tokenizer_kind="kl"``) gets no LM: it has no token ids."""
    from tessera.clip.model import CLIPConfig, CLIPModel
    from tessera.decoder.model import DecoderConfig, LatentDecoder
    from tessera.lm.model import ImageGPT, LMConfig
    from tessera.pixel.model import ImageTransformer, PixelConfig
    from tessera.prior.model import DiffusionPrior, PriorConfig
    from tessera.tokenizer.model import VQConfig, VQModel

    def make(config_cls: type, **fields: object) -> object:
        return config_cls.tiny(**fields) if tiny else config_cls(**fields)

    torch.manual_seed(seed)
    out = Path(out)
    vq_config = make(VQConfig, kind=tokenizer_kind)
    vq = VQModel(vq_config)
    save_component(out / "tokenizer", vq, vq_config)
    if vq.discrete:
        lm_config = make(LMConfig, vocab_size=vq.codebook_size, grid_size=vq.grid_size)
        save_component(out / "lm", ImageGPT(lm_config), lm_config)
    clip_config = make(CLIPConfig, image_size=vq.image_size)
    save_component(out / "clip", CLIPModel(clip_config), clip_config)
    prior_config = make(PriorConfig, embed_dim=clip_config.embed_dim)
    save_component(out / "prior", DiffusionPrior(prior_config), prior_config)
    dec_config = make(
        DecoderConfig,
        latent_channels=vq.latent_channels,
        grid_size=vq.grid_size,
        clip_dim=clip_config.embed_dim,
    )
    save_component(out / "decoder", LatentDecoder(dec_config), dec_config)
    pixel_config = make(PixelConfig)
    save_component(out / "pixel", ImageTransformer(pixel_config), pixel_config)
    if vq.discrete:
        save_random_mixed(out / "mixed", vq, tiny)
    training = {"kind": "random-init", "tiny": tiny, "seed": seed}
    if tokenizer_kind != "vq":
        training["tokenizer_kind"] = tokenizer_kind
    return write_bundle_index(out, name, training)


def save_random_mixed(out: Path, vq: object, tiny: bool) -> None:
    """A random mixed-modal model over ``vq``'s codes, with its text BPE."""
    from tessera.mixed.model import MixedConfig, MixedTransformer
    from tessera.mixed.text import TextCodec, train_text_tokenizer

    fields = dict(image_vocab=vq.codebook_size, grid_size=vq.grid_size)
    text_len = (MixedConfig.tiny() if tiny else MixedConfig()).text_len
    codec = TextCodec(train_text_tokenizer(RANDOM_TEXTS, vocab_size=300), text_len)
    fields["text_vocab"] = codec.vocab_size
    config = MixedConfig.tiny(**fields) if tiny else MixedConfig(**fields)
    save_component(out, MixedTransformer(config), config)
    codec.save(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    parser.add_argument("--full-size", action="store_true", help="default configs, not tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-kind", choices=["vq", "gumbel", "kl"], default="vq")


def run(args: argparse.Namespace) -> int:
    index = build_random_bundle(
        args.out, args.name or args.out.name, tiny=not args.full_size, seed=args.seed,
        tokenizer_kind=args.tokenizer_kind,
    )  # fmt: skip
    components = ", ".join(index["components"])
    print(f"wrote random-init bundle {index['name']!r} to {args.out}: {components}")
    return 0
