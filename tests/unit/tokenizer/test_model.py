import numpy as np
import pytest
import torch

from tessera.common.checkpoint import load_component, save_component
from tessera.tokenizer.model import VQConfig, VQModel


@pytest.fixture(params=["l2", "ema", "fsq"])
def model(request):
    torch.manual_seed(0)
    kw = {"quantizer": request.param}
    if request.param == "fsq":
        kw["fsq_levels"] = (4, 4, 4)
    return VQModel(VQConfig.tiny(**kw)).eval()


def test_interface_shapes(model):
    s, g, c = model.image_size, model.grid_size, model.latent_channels
    assert (s, g) == (16, 4)
    x = torch.rand(2, 3, s, s) * 2 - 1
    idx = model.encode(x)
    assert idx.shape == (2, g, g) and idx.dtype == torch.int64
    assert 0 <= idx.min() and idx.max() < model.codebook_size
    z = model.encode_latents(x)
    assert z.shape == (2, c, g, g)
    assert model.decode_indices(idx).shape == (2, 3, s, s)
    # the latents encode_latents returns are exactly what decode_latents takes
    torch.testing.assert_close(model.decode_latents(z), model.decode_indices(idx))
    torch.testing.assert_close(model.decode_latents(z, quantize=False), model.decode_indices(idx))


def test_decode_latents_snaps_noisy_latents_to_codes(model):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = model.encode_latents(x)
    noisy = z + 0.01 * torch.randn_like(z)
    torch.testing.assert_close(model.decode_latents(noisy), model.decode_latents(z))


def test_bad_indices_are_refused(model):
    with pytest.raises(ValueError):
        model.decode_indices(torch.full((1, 4, 4), model.codebook_size))


def test_grid_16_and_fsq_codebook():
    m = VQModel(VQConfig(channels=8, channel_mult=(1, 2), codebook_size=256))
    assert m.grid_size == 16 and m.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 16, 16)
    f = VQConfig(quantizer="fsq", fsq_levels=[8, 5, 5, 5])  # JSON gives lists
    assert f.codebook_size == 1000 and f.codebook_dim == 4 and f.fsq_levels == (8, 5, 5, 5)
    with pytest.raises(ValueError):
        VQConfig(image_size=60)


def test_save_load_round_trip(model, tmp_path):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    save_component(tmp_path / "tok", model, model.config)
    loaded = load_component(tmp_path / "tok")
    assert isinstance(loaded, VQModel) and loaded.config == model.config
    assert torch.equal(loaded.encode(x), model.encode(x))
    torch.testing.assert_close(
        loaded.decode_indices(model.encode(x)), model.decode_indices(model.encode(x))
    )


@pytest.mark.parametrize("local", [False, True])
def test_local_encoder_changes_only_the_cells_whose_patch_changed(local):
    """A local encoder's latents at a cell depend on that cell's pixels alone; the default
    encoder's receptive field is the whole image (so the same edit moves other cells too)."""
    torch.manual_seed(0)
    m = VQModel(VQConfig.tiny(local_encoder=local)).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    edited = x.clone()
    edited[:, :, 4:8, 8:12] = 1.0  # the 4x4-pixel patch of cell (1, 2)
    with torch.no_grad():
        moved = (m.encode_latents(edited) - m.encode_latents(x)).abs().amax(1)[0] > 1e-6
    others = moved.clone()
    others[1, 2] = False
    assert bool(moved[1, 2])
    assert bool(others.any()) is not local
    # and the weights of either kind fit the other: a tokenizer can be made local in training
    other = VQModel(VQConfig.tiny(local_encoder=not local))
    other.load_state_dict(m.state_dict())


def test_code_locality_counts_kept_codes_of_untouched_cells():
    """The eval's locality numbers: a local encoder keeps every untouched cell's code."""
    from tessera.tokenizer.eval import code_locality

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    target = source.copy()
    target[:, 0:4, 0:4] = 255  # one cell of sixteen changes in each pair
    for local in (False, True):
        m = VQModel(VQConfig.tiny(local_encoder=local))
        loc = code_locality(m, source, target)
        assert loc["untouched_cells"] == 15 / 16
        if local:
            assert loc["untouched_keep_code"] == 1.0
