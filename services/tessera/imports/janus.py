"""Import a transformers Janus directory (``JanusForConditionalGeneration``: ``config.json``,
safetensors weights, ``generation_config.json``, ``tokenizer.json``) as a Tessera bundle
serving the ``ar`` route: ``lm`` (``tessera.lm.janus.JanusImageLM``: the Llama model and the
image-generation head, in the LanguageModel deployment) and ``tokenizer``
(``tessera.tokenizer.janus.JanusVQ``: the VQ model, in the Detokenizer and Tokenizer).

Nothing is copied: both components read the snapshot where it is, with the SHA-256 of every
file they read in the bundle index. The import refuses, naming what is wrong: a missing
file, another architecture than ``JanusForConditionalGeneration`` (or a non-Llama text
model), weights that lack tensors the config needs or disagree with it in shape, a corrupt
safetensors file, a Hugging Face cache blob whose content does not hash to its name, and
settings the served model cannot take (a grid that is not ``num_image_tokens``).
"""

from __future__ import annotations

from pathlib import Path

from tessera.common.hf_weights import SHARDED, check_tensors, on_meta, tensor_shapes, weight_files
from tessera.imports.common import ImportedComponent, check_safetensors, read_json, write_index
from tessera.imports.errors import ImportRefused

FAMILY = "janus"
FORMAT = "transformers-janus"
ARCHITECTURE = "JanusForConditionalGeneration"
MAX_PROMPT_TOKENS = 256  # the LM's prompt slots per row (template included)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_TOKENIZER_FILES = ("special_tokens_map.json", "chat_template.jinja")


def detect(src: Path) -> bool:
    """A transformers directory whose config.json is a Janus model (of any class: the wrong
    one is refused by ``write_bundle`` with a message, not passed over)."""
    path = Path(src) / "config.json"
    if not path.is_file():
        return False
    try:
        config = read_json(path, "config.json")
    except ImportRefused:
        return False
    archs = config.get("architectures") or []
    return config.get("model_type") == "janus" or any(str(a).startswith("Janus") for a in archs)


def _check_config(src: Path) -> tuple[dict, dict]:
    config = read_json(src / "config.json", "config.json")
    archs = config.get("architectures") or []
    if archs != [ARCHITECTURE]:
        raise ImportRefused(
            f"wrong class: {src / 'config.json'} names architectures {archs}; Tessera serves "
            f"{ARCHITECTURE} (image generation needs its generation head)"
        )
    text = config.get("text_config") or {}
    if text.get("model_type", "llama") != "llama":
        raise ImportRefused(
            f"wrong class: text_config.model_type is {text.get('model_type')!r}; the Janus "
            "adapter runs Llama language models"
        )
    gen = read_json(src / "generation_config.json", "generation_config.json")
    boi = (gen.get("generation_kwargs") or {}).get("boi_token_id")
    ids = {
        "bos_token_id": gen.get("bos_token_id"),
        "pad_token_id": gen.get("pad_token_id"),
        "generation_kwargs.boi_token_id": boi,
    }
    for key, value in ids.items():
        if not isinstance(value, int):
            raise ImportRefused(f"{src / 'generation_config.json'} has no {key}")
    return config, gen


def _check_weights(src: Path, janus: object) -> list[Path]:
    from tessera.lm.janus import JanusImageLM, JanusLMConfig
    from tessera.tokenizer.janus import JanusVQ, JanusVQConfig

    try:
        files = weight_files(src)
    except FileNotFoundError as e:
        raise ImportRefused(f"missing weights: {e}") from e
    for path in files:
        check_safetensors(path)
    shapes = tensor_shapes(files)
    lm = on_meta(lambda: JanusImageLM(JanusLMConfig(), janus))
    vq = on_meta(lambda: JanusVQ(JanusVQConfig(), janus))
    problems = check_tensors(lm, "model.", shapes) + check_tensors(vq, "model.", shapes)
    if problems:
        raise ImportRefused(
            f"the weights in {src} do not fit its config.json: " + "; ".join(problems)
        )
    return files


def _check_tokenizer(src: Path, boi_id: int) -> list[str]:
    from transformers import AutoTokenizer

    for name in TOKENIZER_FILES:
        if not (src / name).is_file():
            raise ImportRefused(f"missing tokenizer file: {src / name}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    except Exception as e:  # tokenizers raises several types for a bad file
        raise ImportRefused(f"corrupt tokenizer in {src}: {e}") from e
    boi = getattr(tokenizer, "boi_token", None)
    if boi is None or tokenizer.convert_tokens_to_ids(boi) != boi_id:
        raise ImportRefused(
            f"the tokenizer in {src} has no begin-of-image token {boi_id} "
            "(tokenizer_config.json's boi_token)"
        )
    return [*TOKENIZER_FILES, *(n for n in OPTIONAL_TOKENIZER_FILES if (src / n).is_file())]


def write_bundle(src: Path, dst: Path) -> Path:
    """Check the snapshot and write the bundle at ``dst`` (named after it)."""
    from tessera.lm.janus import read_janus_config

    src, dst = Path(src).absolute(), Path(dst)
    config, gen = _check_config(src)
    try:
        janus = read_janus_config(src)
    except Exception as e:  # transformers' own validation of the config
        raise ImportRefused(f"corrupt config.json in {src}: {e}") from e
    vq, text = janus.vq_config, janus.text_config
    grid = int(vq.num_patches)
    if janus.vision_config.num_image_tokens != grid * grid:
        raise ImportRefused(
            f"vision_config.num_image_tokens is {janus.vision_config.num_image_tokens}, but "
            f"the VQ grid is {grid}x{grid} (vq_config.num_patches)"
        )
    prompt_len = min(MAX_PROMPT_TOKENS, text.max_position_embeddings - grid * grid)
    if prompt_len < 8:
        raise ImportRefused(
            f"text_config.max_position_embeddings {text.max_position_embeddings} leaves no "
            f"room for a prompt before {grid * grid} image tokens"
        )
    files = _check_weights(src, janus)
    boi = gen["generation_kwargs"]["boi_token_id"]
    tokenizer_files = _check_tokenizer(src, boi)
    weights = [p.name for p in files] + ([SHARDED] if (src / SHARDED).is_file() else [])
    common = {"_format": FORMAT, "source": str(src)}
    lm = {
        **common,
        "_class_name": "tessera.lm.janus:JanusImageLM",
        "vocab_size": int(vq.num_embeddings),
        "grid_size": grid,
        "n_layer": int(text.num_hidden_layers),
        "n_kv_head": int(text.num_key_value_heads),
        "head_dim": int(
            getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        ),
        "prompt_len": prompt_len,
        "guidance_scale": float(gen.get("guidance_scale") or 5.0),
        "temperature": float(gen.get("temperature") or 1.0),
        "bos_token_id": int(gen["bos_token_id"]),
        "pad_token_id": int(gen["pad_token_id"]),
        "boi_token_id": int(boi),
    }
    tokenizer = {
        **common,
        "_class_name": "tessera.tokenizer.janus:JanusVQ",
        "image_size": grid * 2 ** (len(vq.channel_multiplier) - 1),
        "grid_size": grid,
        "codebook_size": int(vq.num_embeddings),
        "latent_channels": int(vq.embed_dim),
    }
    library = ["config.json", *weights]
    components = {
        "lm": ImportedComponent(lm, src, [*library, "generation_config.json", *tokenizer_files]),
        "tokenizer": ImportedComponent(tokenizer, src, library),
    }
    write_index(dst, dst.name, FAMILY, components)
    return dst
