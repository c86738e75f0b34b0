import numpy as np
import pytest

from tessera.evaluation.frechet import frechet_distance, real_floor


def test_identical_sets_are_at_zero_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_matches_the_closed_form_for_shifted_and_scaled_gaussians():
    # N(0, I) vs N(m, s^2 I) in d dims: |m|^2 + d (1 - s)^2
    rng = np.random.default_rng(1)
    d, shift, scale = 4, 2.0, 3.0
    a = rng.normal(size=(40000, d))
    b = rng.normal(size=(40000, d)) * scale + shift
    expected = d * shift**2 + d * (1 - scale) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)


def test_real_floor_is_small_next_to_a_different_distribution():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 6))
    other = rng.normal(size=(200, 6)) + 1.0
    floor = real_floor(real, 200, rng)
    assert floor is not None and floor < frechet_distance(other, real[:200]) / 5


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="need"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
