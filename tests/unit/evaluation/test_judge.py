import numpy as np
import torch
import torch.nn.functional as F

from tessera.common.checkpoint import save_component
from tessera.common.images import arrays_to_tensor
from tessera.evaluation.judge import Judge, JudgeConfig, augment, load_judge


def tiny(n_subgroups: int = 3) -> JudgeConfig:
    return JudgeConfig(channels=[8, 16], feature_dim=16, n_subgroups=n_subgroups, n_groups=2)


def coloured(colour: tuple[int, int, int], n: int) -> np.ndarray:
    images = np.full((n, 64, 64, 3), 255, np.uint8)
    images[:, 16:48, 16:48] = colour
    return images


def test_shapes_of_logits_and_features():
    model = Judge(tiny())
    s, g, f = model(torch.zeros(2, 3, 64, 64))
    assert s.shape == (2, 3) and g.shape == (2, 2) and f.shape == (2, 16)


def test_tiny_judge_learns_to_tell_colours_apart_through_augmentation():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images = np.concatenate([coloured(c, 8) for c in ((255, 0, 0), (0, 160, 0), (0, 0, 255))])
    labels = torch.arange(3).repeat_interleave(8)
    model = Judge(tiny())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = arrays_to_tensor(images)
    for _ in range(60):
        s, _, _ = model.train()(augment(x, gen))
        loss = F.cross_entropy(s, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    scored = model.score(images)
    assert (scored["subgroup"] == labels.numpy()).mean() == 1.0
    assert scored["features"].shape == (24, 16)


def test_augment_keeps_range_and_shape():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    y = augment(x, gen)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert not torch.equal(x, y)


def test_save_load_round_trip(tmp_path):
    model = Judge(tiny())
    save_component(tmp_path / "judge", model, model.config)
    loaded = load_judge(tmp_path / "judge")
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.eval()(x)[0], loaded(x)[0])
