"""A tiny random-weight Janus checkpoint built with transformers itself, as its fast tests
build theirs (tiny Llama text config, tiny SigLIP-style vision config, tiny VQ config), saved
with ``save_pretrained`` in the library's layout: ``config.json``, ``model.safetensors``,
``generation_config.json`` and a tokenizer made locally with ``tokenizers`` (nothing is
downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = "a an the red blue green yellow cat dog tree house sun moon star on under big small".split()
SPECIALS = {
    "bos": "<bos>",
    "eos": "<eos>",
    "pad": "<pad>",
    "unk": "<unk>",
    "image": "<image_placeholder>",
    "boi": "<begin_of_image>",
    "eoi": "<end_of_image>",
}
TEXT_VOCAB = 64
GRID = 4  # image tokens per side: vision image_size / patch_size
CODEBOOK = 32


def build_tokenizer(out: Path) -> Any:  # a PreTrainedTokenizerFast
    """A word-level tokenizer over a few words, with Janus's special tokens."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*SPECIALS.values(), "<|User|>", "<|Assistant|>", ":"])}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    assert len(vocab) <= TEXT_VOCAB
    raw = Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS["unk"]))
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    raw.add_special_tokens(
        [AddedToken(t, special=True) for t in [*SPECIALS.values(), "<|User|>", "<|Assistant|>"]]
    )
    raw.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS['bos']} $A", special_tokens=[(SPECIALS["bos"], vocab[SPECIALS["bos"]])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=SPECIALS["bos"],
        eos_token=SPECIALS["eos"],
        pad_token=SPECIALS["pad"],
        unk_token=SPECIALS["unk"],
        additional_special_tokens=[
            SPECIALS["image"],
            SPECIALS["boi"],
            SPECIALS["eoi"],
            "<|User|>",
            "<|Assistant|>",
        ],
        extra_special_tokens={
            "image_token": SPECIALS["image"],
            "boi_token": SPECIALS["boi"],
            "eoi_token": SPECIALS["eoi"],
        },
        padding_side="left",
    )
    tokenizer.save_pretrained(out)
    return tokenizer


def build_tiny_janus(out: Path, seed: int = 0) -> Path:
    """Write a tiny random ``JanusForConditionalGeneration`` snapshot to ``out``."""
    import torch
    from transformers import (
        GenerationConfig,
        JanusConfig,
        JanusForConditionalGeneration,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    out = Path(out)
    tokenizer = build_tokenizer(out)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in SPECIALS.items()}
    hidden = 32
    text = LlamaConfig(
        vocab_size=TEXT_VOCAB,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )
    vision = JanusVisionConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=GRID * 8,
        patch_size=8,
        projection_dim=hidden,
        num_image_tokens=GRID * GRID,
        mlp_ratio=2.0,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=CODEBOOK,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1],
        num_res_blocks=1,
        projection_dim=hidden,
        image_token_embed_dim=hidden,
    )
    config = JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=ids["image"],
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    # The library's init (std 0.02) gives a tiny model near-uniform logits, i.e. one code
    # everywhere; fan-in scaled weights make the tokens depend on prompt, position and seed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        guidance_scale=5.0,
        generation_kwargs={"boi_token_id": ids["boi"]},
    )
    model.save_pretrained(out)
    return out
