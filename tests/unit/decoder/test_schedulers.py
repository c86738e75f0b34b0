"""The schedulers against the diffusion maths they implement."""

from __future__ import annotations

import pytest
import torch

from tessera.common.errors import InvalidArgument
from tessera.decoder.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    NoiseSchedule,
    cosine_betas,
    make_scheduler,
)

KINDS = [DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler]
PREDICTIONS = ["epsilon", "v_prediction"]


def oracle(sched: NoiseSchedule, x0: torch.Tensor, sample: torch.Tensor, t: int) -> torch.Tensor:
    """What a perfect model that knows x0 would output at (sample, t)."""
    a = sched.alphas_cumprod[t]
    eps = (sample - a.sqrt() * x0) / (1 - a).sqrt()
    if sched.prediction_type == "epsilon":
        return eps
    return a.sqrt() * eps - (1 - a).sqrt() * x0


def test_cosine_schedule_shape():
    betas = cosine_betas(1000)
    assert betas.shape == (1000,) and betas.max() <= 0.999 and betas.min() > 0
    ac = NoiseSchedule(1000).alphas_cumprod
    assert torch.all(ac[1:] < ac[:-1])  # strictly decreasing signal
    assert ac[0] > 0.999 and ac[-1] < 1e-6  # clean at t=0, ~pure noise at T-1
    # Cosine keeps more signal mid-way than the linear schedule (its point).
    linear = NoiseSchedule(1000, beta_schedule="linear").alphas_cumprod
    assert ac[500] > linear[500]


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("n", [1, 3, 25, 999, 1000])
def test_set_timesteps(spacing, n):
    sched = DDIMScheduler(1000, timestep_spacing=spacing)
    sched.set_timesteps(n)
    ts = sched.timesteps
    assert ts.shape == (n,) and ts.dtype == torch.int64
    assert torch.all(ts[1:] < ts[:-1])  # strictly descending
    assert ts.min() >= 0 and ts.max() <= 999
    if spacing == "trailing":
        assert ts[0] == 999  # always starts from the noisiest step
    else:
        assert ts[-1] == 0
    assert sched.previous_timestep(int(ts[-1])) == -1


def test_set_timesteps_full_and_invalid():
    sched = DDPMScheduler(100)
    sched.set_timesteps(100)
    assert sched.timesteps.tolist() == list(range(99, -1, -1))
    for bad in (0, -1, 101):
        with pytest.raises(InvalidArgument):
            sched.set_timesteps(bad)
    with pytest.raises(InvalidArgument):
        make_scheduler("euler")


def test_add_noise_statistics():
    sched = NoiseSchedule(1000)
    x0 = torch.full((4096, 1, 1, 1), 2.0)
    noise = torch.randn_like(x0)
    t = torch.full((4096,), 500)
    xt = sched.add_noise(x0, noise, t)
    a = sched.alphas_cumprod[500]
    assert xt.mean().item() == pytest.approx(2 * a.sqrt().item(), abs=0.05)
    assert xt.var().item() == pytest.approx((1 - a).item(), rel=0.1)
    # Per-row timesteps: row 0 clean-ish, row 1 ~ noise.
    both = sched.add_noise(x0[:2], noise[:2], torch.tensor([0, 999]))
    assert torch.allclose(both[0], x0[0], atol=0.05)
    assert torch.allclose(both[1], noise[1], atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("t", [10, 500, 900])
def test_perfect_model_step_recovers_x0(kind, prediction, t):
    sched = kind(1000, prediction_type=prediction)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=gen)
    noise = torch.randn(3, 4, 8, 8, generator=gen)
    xt = sched.add_noise(x0, noise, torch.full((3,), t))
    target = sched.training_target(x0, noise, torch.full((3,), t))
    out = sched.step(target, t, xt, generator=gen)
    assert torch.allclose(out.pred_original_sample, x0, atol=1e-3)
    assert out.prev_sample.shape == x0.shape


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("n", [1, 7, 50])
def test_perfect_model_full_loop_ends_at_x0(kind, prediction, n):
    sched = kind(1000, prediction_type=prediction)
    sched.set_timesteps(n)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 8, 8, generator=gen).clamp(-2, 2)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    for t in sched.timesteps:
        x = sched.step(oracle(sched, x0, x, int(t)), t, x, generator=gen).prev_sample
    # Epsilon at t = T-1 divides by sqrt(alpha_bar) ~ 5e-5 under the capped cosine schedule,
    # so float32 rounding grows ~1e4x there (why v-prediction is the default).
    atol = 1e-2 if prediction == "epsilon" else 1e-4
    assert torch.allclose(x, x0, atol=atol)


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
    sched = DDIMScheduler(1000, prediction_type="v_prediction")
    sched.set_timesteps(10)
    x = torch.randn(2, 4, 8, 8)
    out = torch.randn(2, 4, 8, 8)
    t = int(sched.timesteps[3])
    a = sched.step(out, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    b = sched.step(out, t, x, generator=torch.Generator().manual_seed(2)).prev_sample
    assert torch.equal(a, b)
    c = sched.step(out, t, x, generator=torch.Generator().manual_seed(1), eta=1.0).prev_sample
    d = sched.step(out, t, x, generator=torch.Generator().manual_seed(2), eta=1.0).prev_sample
    assert not torch.allclose(c, d)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_ddim_eta1_equals_ddpm(prediction):
    """DDIM with eta=1 is the DDPM posterior (Song et al. 2021, §4.1): same noise, same step."""
    ddim = DDIMScheduler(1000, prediction_type=prediction, eta=1.0)
    ddpm = DDPMScheduler(1000, prediction_type=prediction)
    for s in (ddim, ddpm):
        s.set_timesteps(20)
    x, out = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in ddim.timesteps[:-1:5]:
        a = ddim.step(out, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
        b = ddpm.step(out, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
        assert torch.allclose(a, b, atol=1e-4)


def test_row_generators_make_rows_independent():
    sched = DDPMScheduler(1000)
    sched.set_timesteps(10)
    t = int(sched.timesteps[2])
    x, out = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    full = sched.step(out, t, x, generator=gens).prev_sample
    alone = sched.step(out[1:2], t, x[1:2], generator=[torch.Generator().manual_seed(6)])
    assert torch.equal(full[1:2], alone.prev_sample)
    with pytest.raises(ValueError):
        sched.step(out, t, x, generator=gens[:2])


def test_clip_sample_bounds_x0():
    sched = DDIMScheduler(1000, prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0)
    sched.set_timesteps(5)
    x = torch.randn(2, 4, 8, 8) * 3
    out = sched.step(torch.randn(2, 4, 8, 8), sched.timesteps[0], x)
    assert out.pred_original_sample.abs().max() <= 1.0
    assert torch.isfinite(out.prev_sample).all()


def fake_model(x: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed, non-trivial stand-in for a UNet: the same outputs for both schedulers."""
    return torch.tanh(0.7 * x.roll(1, dims=-1)) + 0.3 * x * (t / 1000) - 0.1


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("n", [1, 2, 5, 12, 25])
def test_dpm_solver_matches_diffusers_on_the_same_model_outputs(prediction, n):
    """Tessera's DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler, both fed
    the same model, every step: equal within float32 tolerance."""
    from diffusers import DPMSolverMultistepScheduler as Reference

    ours = DPMSolverMultistepScheduler(1000, prediction_type=prediction)
    ref = Reference(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction,
        timestep_spacing="trailing",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        final_sigmas_type="zero",
    )
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    assert ours.timesteps.tolist() == ref.timesteps.tolist()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(n))
    y = x.clone()
    for t in ours.timesteps:
        x = ours.step(fake_model(x, int(t)), t, x).prev_sample
        y = ref.step(fake_model(y, int(t)), t, y).prev_sample
        scale = max(1.0, float(y.abs().max()))  # the noisiest steps are ~1e2 in size
        assert torch.allclose(x, y, atol=2e-4 * scale, rtol=1e-3), int(t)


def test_dpm_solver_is_second_order_after_its_first_step():
    """With a model whose x0 guess drifts linearly in lambda, the second-order step uses the
    previous x0 (it differs from a first-order DDIM step), and set_timesteps starts over."""
    sched = DPMSolverMultistepScheduler(1000, prediction_type="v_prediction")
    ddim = DDIMScheduler(1000, prediction_type="v_prediction")
    for s in (sched, ddim):
        s.set_timesteps(4)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    outs = [fake_model(x, int(t)) for t in sched.timesteps[:2]]
    first = [s.step(outs[0], sched.timesteps[0], x).prev_sample for s in (sched, ddim)]
    assert torch.allclose(first[0], first[1], atol=1e-5)  # first order: DDIM's step
    second = [s.step(outs[1], sched.timesteps[1], first[0]).prev_sample for s in (sched, ddim)]
    assert not torch.allclose(second[0], second[1], atol=1e-3)
    sched.set_timesteps(4)
    again = sched.step(outs[0], sched.timesteps[0], x).prev_sample
    assert torch.equal(again, first[0])
