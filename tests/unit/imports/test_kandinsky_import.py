"""``tessera models import`` on diffusers Kandinsky 2.2 directories: the bundle it writes, and
what it refuses (each message names what is wrong)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tessera.common.checkpoint import read_bundle_index, verify_component
from tessera.common.errors import ModelNotReady
from tessera.imports import ImportRefused, import_directory
from tessera.imports.common import checksum


def test_bundle_points_at_the_library_files_with_checksums(kandinsky_bundle: Path) -> None:
    index = read_bundle_index(kandinsky_bundle)
    assert index["family"] == "kandinsky22"
    assert set(index["components"]) == {"clip", "prior", "decoder", "tokenizer"}
    for name, entry in index["components"].items():
        assert entry["format"] == "diffusers-kandinsky22"
        assert entry["class"].startswith("tessera.")
        root = Path(entry["external"]["root"])
        for rel, digest in entry["external"]["files"].items():
            assert checksum(root / rel) == digest, (name, rel)
        verify_component(kandinsky_bundle, name)
    weights = index["components"]["decoder"]["external"]["files"]
    assert "unet/diffusion_pytorch_model.safetensors" in weights
    tok = json.loads((kandinsky_bundle / "tokenizer" / "config.json").read_text())
    assert (tok["image_size"], tok["grid_size"], tok["latent_channels"]) == (64, 32, 4)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _edit_index(pipeline: Path, **changes: object) -> None:
    path = pipeline / "model_index.json"
    index = json.loads(path.read_text())
    index.update(changes)
    path.write_text(json.dumps(index))


def _refused(src: Path, tmp_path: Path) -> str:
    with pytest.raises(ImportRefused) as info:
        import_directory(src, tmp_path / "out")
    return str(info.value)


def test_refuses_a_prior_without_its_decoder(kandinsky_src: Path, tmp_path: Path) -> None:
    src = _copy(kandinsky_src, tmp_path)
    shutil.rmtree(src / "decoder")
    message = _refused(src, tmp_path)
    assert "missing component" in message and "KandinskyV22Pipeline" in message


def test_refuses_a_missing_component_folder(kandinsky_src: Path, tmp_path: Path) -> None:
    src = _copy(kandinsky_src, tmp_path)
    shutil.rmtree(src / "decoder" / "movq")
    message = _refused(src, tmp_path)
    assert "missing component" in message and "movq" in message


def test_refuses_a_wrong_class(kandinsky_src: Path, tmp_path: Path) -> None:
    src = _copy(kandinsky_src, tmp_path)
    _edit_index(src / "decoder", unet=["diffusers", "UNet2DModel"])
    message = _refused(src, tmp_path)
    assert "wrong class" in message and "UNet2DModel" in message


def test_refuses_an_unsupported_scheduler(kandinsky_src: Path, tmp_path: Path) -> None:
    src = _copy(kandinsky_src, tmp_path)
    _edit_index(src / "decoder", scheduler=["diffusers", "EulerDiscreteScheduler"])
    message = _refused(src, tmp_path)
    assert "unsupported scheduler" in message and "EulerDiscreteScheduler" in message


def test_refuses_a_checksum_mismatch_in_a_hub_cache(kandinsky_src: Path, tmp_path: Path) -> None:
    """A Hugging Face cache snapshot links each weight file to blobs/<sha256>: a blob whose
    content does not hash to its name (a corrupted download) is refused."""
    src = _copy(kandinsky_src, tmp_path)
    weights = src / "decoder" / "unet" / "diffusion_pytorch_model.safetensors"
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    blob = blobs / ("0" * 64)  # the name promises another content
    shutil.move(weights, blob)
    weights.symlink_to(blob)
    message = _refused(src, tmp_path)
    assert "checksum mismatch" in message and "0" * 64 in message


def test_refuses_pickle_weights(kandinsky_src: Path, tmp_path: Path) -> None:
    src = _copy(kandinsky_src, tmp_path)
    folder = src / "decoder" / "movq"
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "diffusion_pytorch_model.bin")
    message = _refused(src, tmp_path)
    assert "safetensors" in message and "movq" in message


def test_refuses_an_unknown_directory(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    assert "no model directory" in _refused(tmp_path / "x", tmp_path)


def test_weights_changed_after_import_are_refused_at_load(
    kandinsky_src: Path, tmp_path: Path
) -> None:
    src = _copy(kandinsky_src, tmp_path)
    bundle = import_directory(src, tmp_path / "bundle")
    weights = src / "decoder" / "movq" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelNotReady, match="checksum mismatch"):
        verify_component(bundle, "tokenizer")


def test_cli_imports(kandinsky_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tessera.cli import main

    assert main(["models", "import", str(kandinsky_src), "-o", str(tmp_path / "b")]) == 0
    assert read_bundle_index(tmp_path / "b")["family"] == "kandinsky22"
    assert "kandinsky22" in capsys.readouterr().out
    assert main(["models", "import", str(tmp_path / "b")]) == 2  # not a library directory
    assert "no model directory" in capsys.readouterr().err
