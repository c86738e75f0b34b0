"""Importing a transformers Janus directory: a tiny random ``JanusForConditionalGeneration``
snapshot saved by the library becomes a bundle serving the ar route; a bad or partial one is
refused with a message naming what is wrong."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tessera.common.checkpoint import load_bundle_component, read_bundle_index
from tessera.common.errors import ModelNotReady
from tessera.imports import ImportRefused, import_directory
from tessera.imports import janus as janus_import
from tessera.imports.janus_tiny import CODEBOOK, GRID, build_tiny_janus
from tessera.routes.bundle import BundleInfo


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_janus(tmp_path_factory.mktemp("janus") / "Janus-tiny")


@pytest.fixture
def copy(snapshot: Path, tmp_path: Path) -> Path:
    """A writable copy of the snapshot to break."""
    return Path(shutil.copytree(snapshot, tmp_path / "Janus-tiny"))


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_imports_a_janus_snapshot_as_an_ar_bundle(snapshot: Path, tmp_path: Path) -> None:
    assert janus_import.detect(snapshot)
    bundle = import_directory(snapshot, tmp_path / "janus-tiny")
    index = read_bundle_index(bundle)
    assert index["family"] == "janus"
    assert set(index["components"]) == {"lm", "tokenizer"}
    external = index["components"]["lm"]["external"]
    assert external["root"] == str(snapshot)
    assert {"model.safetensors", "tokenizer.json", "generation_config.json"} <= set(
        external["files"]
    )
    digest = hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    assert external["files"]["model.safetensors"] == digest
    info = BundleInfo.read(bundle)
    assert info.routes == ("ar",) and not info.ar_rerank
    assert info.image_size == GRID * 2  # num_patches x 2 ** (len(channel_multiplier) - 1)
    lm = load_bundle_component(bundle, "lm")
    assert (lm.config.grid_size, lm.config.vocab_size) == (GRID, CODEBOOK)
    assert not (bundle / "lm" / "model.safetensors").exists()  # nothing copied


def test_a_diffusers_or_empty_directory_is_not_janus(tmp_path: Path) -> None:
    assert not janus_import.detect(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert not janus_import.detect(tmp_path)
    with pytest.raises(ImportRefused, match="no model directory Tessera can import"):
        import_directory(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    ("breaks", "message"),
    [
        (lambda d: (d / "model.safetensors").unlink(), "missing weights: no model.safetensors"),
        (lambda d: (d / "tokenizer.json").unlink(), "missing tokenizer file: .*tokenizer.json"),
        (lambda d: (d / "generation_config.json").unlink(), "missing generation_config.json"),
        (
            lambda d: edit_json(d / "config.json", architectures=["JanusModel"]),
            r"wrong class: .* names architectures \['JanusModel'\]",
        ),
        (
            lambda d: edit_json(
                d / "config.json",
                text_config={
                    **json.loads((d / "config.json").read_text())["text_config"],
                    "model_type": "mistral",
                },
            ),
            "wrong class: text_config.model_type is 'mistral'",
        ),  # fmt: skip
        (
            lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{"),
            "corrupt weights .*model.safetensors",
        ),
    ],
    ids=[
        "no-weights",
        "no-tokenizer",
        "no-generation-config",
        "wrong-class",
        "not-llama",
        "corrupt",
    ],
)
def test_refuses_a_bad_directory_naming_what_is_wrong(copy: Path, breaks, message: str) -> None:
    breaks(copy)
    with pytest.raises(ImportRefused, match=message):
        import_directory(copy, copy.parent / "out")
    assert not (copy.parent / "out" / "model_index.json").exists()


def test_refuses_weights_that_lack_what_the_config_needs(copy: Path) -> None:
    weights = load_file(str(copy / "model.safetensors"))
    del weights["model.generation_head.vision_head.weight"]
    save_file(weights, str(copy / "model.safetensors"))
    with pytest.raises(ImportRefused, match="tensors missing, e.g. model.generation_head"):
        import_directory(copy, copy.parent / "out")


def test_refuses_weights_whose_shapes_disagree_with_the_config(copy: Path) -> None:
    config = json.loads((copy / "config.json").read_text())
    config["vq_config"]["num_embeddings"] = CODEBOOK * 2
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ImportRefused, match=r"generation_embeddings.weight is \[32, 8\]"):
        import_directory(copy, copy.parent / "out")


def test_refuses_a_cache_blob_whose_content_does_not_match_its_name(copy: Path) -> None:
    """A Hugging Face cache snapshot links each file to ``blobs/<sha256>``."""
    blobs = copy.parent / "blobs"
    blobs.mkdir()
    data = bytearray((copy / "model.safetensors").read_bytes())
    name = hashlib.sha256(data).hexdigest()
    data[-1] ^= 1  # one flipped bit in the last tensor: the header still parses
    (blobs / name).write_bytes(data)
    (copy / "model.safetensors").unlink()
    (copy / "model.safetensors").symlink_to(blobs / name)
    with pytest.raises(ImportRefused, match="checksum mismatch: .*model.safetensors"):
        import_directory(copy, copy.parent / "out")


def test_a_snapshot_changed_after_import_does_not_load(copy: Path) -> None:
    bundle = import_directory(copy, copy.parent / "out")
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(data)
    with pytest.raises(ModelNotReady, match="checksum mismatch for .*model.safetensors"):
        load_bundle_component(bundle, "tokenizer")
