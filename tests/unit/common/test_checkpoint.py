import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from tessera.common import checkpoint
from tessera.common.errors import ModelNotReady


@dataclass
class TinyConfig:
    width: int = 4


class TinyModel(nn.Module):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.width, config.width)


def test_import_class_refuses_non_tessera_modules():
    with pytest.raises(ModelNotReady, match="refusing"):
        checkpoint.import_class("os:system")


def test_save_load_round_trip_and_checksums(tmp_path, monkeypatch):
    # Register the test model under a tessera module path, as real components are.
    import tessera.common.checkpoint as mod

    monkeypatch.setattr(mod, "TinyModel", TinyModel, raising=False)
    TinyModel.__module__ = "tessera.common.checkpoint"
    model = TinyModel(TinyConfig(width=3))
    checkpoint.save_component(tmp_path / "lm", model, model.config)
    index = checkpoint.write_bundle_index(tmp_path, "t")
    assert set(index["components"]) == {"lm"}
    loaded = checkpoint.load_bundle_component(tmp_path, "lm")
    assert torch.equal(loaded.proj.weight, model.proj.weight)
    # A corrupted weight file is caught by the checksum, with the rebuild hint.
    weights = tmp_path / "lm" / checkpoint.WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-4] + b"oops")
    with pytest.raises(ModelNotReady, match="checksum.*tessera"):
        checkpoint.load_bundle_component(tmp_path, "lm")
    with pytest.raises(ModelNotReady, match="no 'decoder'"):
        checkpoint.verify_component(tmp_path, "decoder")
    (tmp_path / checkpoint.INDEX_NAME).write_text("{")
    with pytest.raises(ModelNotReady, match="corrupt"):
        checkpoint.read_bundle_index(tmp_path)


def test_missing_bundle_names_the_command(tmp_path):
    with pytest.raises(ModelNotReady, match="tessera models init"):
        checkpoint.read_bundle_index(tmp_path / "nope")
    assert json.loads(json.dumps({"ok": 1}))


def test_every_import_adapter_loads_with_one_signature():
    """``load_component`` hands every imported component's adapter the same arguments
    (directory, meta, device) and trusts it to pick the serving dtype: no adapter is called
    another way, so nothing inspects signatures."""
    import inspect

    from tessera.decoder.kandinsky import KandinskyUNet
    from tessera.lm.janus import JanusImageLM
    from tessera.prior.kandinsky import KandinskyCLIP, KandinskyPrior
    from tessera.tokenizer.janus import JanusVQ
    from tessera.tokenizer.kandinsky import MoVQ

    for adapter in (KandinskyUNet, JanusImageLM, KandinskyCLIP, KandinskyPrior, JanusVQ, MoVQ):
        params = inspect.signature(adapter.from_import).parameters
        assert list(params) == ["directory", "meta", "device"], adapter
        assert all(p.default is inspect.Parameter.empty for p in params.values()), adapter
