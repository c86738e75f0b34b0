"""Noise schedulers shaped like diffusers' (``set_timesteps``, ``timesteps``, ``step``,
``add_noise``): DDPM (ancestral), DDIM (eta-controlled, deterministic at eta=0) and
DPM-Solver++(2M) (multistep, second order, deterministic: fewer steps for the same quality).

The schedule math (cosine betas, alpha products, converting a model output into x0 and
epsilon) lives once in :class:`NoiseSchedule`; the schedulers differ only in ``step``.
Timesteps are integers in ``[0, num_train_timesteps)``; ``set_timesteps(n)`` picks ``n`` of
them, descending. "trailing" spacing (the default) starts at ``T-1``, so sampling begins
from (almost) pure noise however few steps are used (Lin et al. 2023, "Common Diffusion Noise
Schedules and Sample Steps are Flawed"); "leading" is diffusers' historical default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tessera.common.errors import InvalidArgument

PREDICTION_TYPES = ("epsilon", "v_prediction")
Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class SchedulerOutput:
    prev_sample: Tensor  # (B, C, h, w) x_{t_prev}
    pred_original_sample: Tensor  # (B, C, h, w) the model's current estimate of x0


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> Tensor:
    """squaredcos_cap_v2 (Nichol & Dhariwal 2021): alpha_bar(t) = cos²((t + s)/(1 + s)·π/2)."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float64)


def randn_like_rows(sample: Tensor, generator: Generators) -> Tensor:
    """Gaussian noise shaped like ``sample``; a list of generators draws row i from the i-th,
    so each row's noise does not depend on which other rows share the batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(
            sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
        )
    if len(generator) != sample.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {sample.shape[0]}")
    rows = [
        torch.randn(sample.shape[1:], generator=g, device=sample.device, dtype=sample.dtype)
        for g in generator
    ]
    return torch.stack(rows)


class NoiseSchedule:
    """The forward process and the conversions every sampler shares."""

    order = 1
    init_noise_sigma = 1.0  # samples start as N(0, I)

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "trailing",
    ) -> None:
        if beta_schedule == "squaredcos_cap_v2":
            betas = cosine_betas(num_train_timesteps)
        elif beta_schedule == "linear":
            betas = torch.linspace(1e-4, 0.02, num_train_timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}")
        if timestep_spacing not in ("trailing", "leading"):
            raise ValueError("timestep_spacing must be 'trailing' or 'leading'")
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
        self.timestep_spacing = timestep_spacing
        self.betas = betas.float()
        # Products in float64, then stored as float32: the tail of the cosine schedule is tiny.
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).float()  # (T,)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)  # (T,) descending

    # --- timesteps -----------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device = "cpu") -> None:
        """Choose ``num_inference_steps`` descending timesteps for sampling."""
        n, total = int(num_inference_steps), self.num_train_timesteps
        if not 1 <= n <= total:
            raise InvalidArgument(f"steps must be in [1, {total}], got {num_inference_steps}")
        if self.timestep_spacing == "trailing":
            ts = torch.round(torch.arange(total, 0, -total / n, dtype=torch.float64)) - 1
        else:  # leading: 0, k, 2k, … reversed
            ts = torch.arange(0, n, dtype=torch.float64).flip(0) * (total // n)
        self.timesteps = ts.long()[:n].to(device)  # (n,)
        self.num_inference_steps = n

    def previous_timestep(self, timestep: int) -> int:
        """The next timestep of the current schedule, or -1 after the last one (x0 itself)."""
        ts = self.timesteps.tolist()
        i = ts.index(int(timestep))
        return ts[i + 1] if i + 1 < len(ts) else -1

    def scale_model_input(self, sample: Tensor, timestep: int | None = None) -> Tensor:
        return sample  # DDPM/DDIM need no input scaling (diffusers API parity)

    # --- the forward process -------------------------------------------------------------
    def _alpha_bar(self, timesteps: Tensor | int, like: Tensor) -> Tensor:
        """alpha_bar at each timestep, broadcastable against ``like`` ((B,) -> (B,1,1,1));
        a negative timestep means 'clean' (alpha_bar = 1)."""
        t = torch.as_tensor(timesteps, device=like.device).long()
        ac = self.alphas_cumprod.to(like.device)
        a = torch.where(t >= 0, ac[t.clamp(min=0)], torch.ones((), device=like.device))
        return a.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = sqrt(ab)·x0 + sqrt(1 - ab)·noise; ``timesteps`` is (B,) or a scalar."""
        a = self._alpha_bar(timesteps, original_samples)
        return a.sqrt() * original_samples + (1 - a).sqrt() * noise

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """The v-prediction target v = sqrt(ab)·noise - sqrt(1 - ab)·x0 (Salimans & Ho 2022)."""
        a = self._alpha_bar(timesteps, sample)
        return a.sqrt() * noise - (1 - a).sqrt() * sample

    def training_target(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        if self.prediction_type == "epsilon":
            return noise
        return self.get_velocity(x0, noise, timesteps)

    def predict_x0_eps(
        self, model_output: Tensor, timestep: int, sample: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Turn the model output at ``timestep`` into (x0, epsilon), clipping x0 if asked
        (epsilon is then re-derived so the two stay consistent)."""
        a = self._alpha_bar(timestep, sample)
        sa, s1a = a.sqrt(), (1 - a).sqrt()
        if self.prediction_type == "epsilon":
            x0 = (sample - s1a * model_output) / sa
            eps = model_output
        else:  # v_prediction
            x0 = sa * sample - s1a * model_output
            eps = sa * model_output + s1a * sample
        if self.clip_sample:
            r = self.clip_sample_range
            x0 = x0.clamp(-r, r)
            eps = (sample - sa * x0) / s1a
        return x0, eps


class DDPMScheduler(NoiseSchedule):
    """Ancestral sampling from the posterior q(x_{t'} | x_t, x0) with the "fixed_small"
    variance; with fewer steps than training, the posterior spans the skipped steps."""

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: Generators = None,
    ) -> SchedulerOutput:
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        a_t, a_prev = self._alpha_bar(t, sample), self._alpha_bar(prev_t, sample)
        alpha_t = a_t / a_prev  # the one-hop alpha between t and prev_t
        beta_t = 1 - alpha_t
        x0, _ = self.predict_x0_eps(model_output, t, sample)
        # Posterior mean coefficients (Ho et al. 2020, eq. 7).
        mean = (a_prev.sqrt() * beta_t / (1 - a_t)) * x0 + (
            alpha_t.sqrt() * (1 - a_prev) / (1 - a_t)
        ) * sample
        if prev_t >= 0:
            variance = ((1 - a_prev) / (1 - a_t) * beta_t).clamp(min=1e-20)
            mean = mean + variance.sqrt() * randn_like_rows(sample, generator)
        return SchedulerOutput(prev_sample=mean, pred_original_sample=x0)


class DDIMScheduler(NoiseSchedule):
    """DDIM (Song et al. 2021): eta=0 is deterministic; eta=1 matches DDPM's variance."""

    def __init__(self, *args: object, eta: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.eta = eta

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: Generators = None,
        eta: float | None = None,
    ) -> SchedulerOutput:
        eta = self.eta if eta is None else eta
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        a_t, a_prev = self._alpha_bar(t, sample), self._alpha_bar(prev_t, sample)
        x0, eps = self.predict_x0_eps(model_output, t, sample)
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)  # sigma_t² at eta=1
        std = eta * variance.sqrt()
        direction = (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
        prev = a_prev.sqrt() * x0 + direction
        if eta > 0 and prev_t >= 0:
            prev = prev + std * randn_like_rows(sample, generator)
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)


class DPMSolverMultistepScheduler(NoiseSchedule):
    """DPM-Solver++ (Lu et al. 2022), multistep, second order ("2M"), deterministic: the
    exponential integrator of the diffusion ODE in log-SNR time, on data (x0) predictions.

    Like ``diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
    solver_order=2, solver_type="midpoint", final_sigmas_type="zero")``: the first step is
    first order (no earlier x0 yet), every other step uses the x0 of the step before, and the
    last step lands on the final x0 (sigma 0). ``step`` must see the timesteps in order;
    ``set_timesteps`` starts over. With alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t),
    lambda_t = log(alpha_t / sigma_t), h = lambda_t' - lambda_t and r = h_prev / h:

        x_t' = (sigma_t' / sigma_t) x_t - alpha_t' (e^-h - 1) (x0_t + (x0_t - x0_prev) / 2r)
    """

    def __init__(self, *args: object, solver_order: int = 2, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if solver_order not in (1, 2):
            raise ValueError(f"solver_order must be 1 or 2, got {solver_order}")
        self.solver_order = solver_order
        self._previous: tuple[Tensor, float] | None = None  # (x0, lambda) of the last step

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device = "cpu") -> None:
        super().set_timesteps(num_inference_steps, device)
        self._previous = None

    def _alpha_sigma_lambda(self, t: int) -> tuple[float, float, float]:
        """alpha_t, sigma_t and the half log-SNR lambda_t, in float64 (t < 0: clean)."""
        if t < 0:
            return 1.0, 0.0, math.inf
        ab = float(self.alphas_cumprod[t])
        alpha, sigma = math.sqrt(ab), math.sqrt(1.0 - ab)
        return alpha, sigma, math.log(alpha) - math.log(sigma)

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: Generators = None,
    ) -> SchedulerOutput:
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        x0, _ = self.predict_x0_eps(model_output, t, sample)
        _, sigma_s, lambda_s = self._alpha_sigma_lambda(t)
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(prev_t)
        if prev_t < 0:  # sigma 0: the first-order update is x0 itself
            prev = x0
        else:
            h = lambda_t - lambda_s
            phi = math.expm1(-h)  # e^-h - 1
            d = x0
            if self.solver_order == 2 and self._previous is not None:
                x0_prev, lambda_prev = self._previous
                r = (lambda_s - lambda_prev) / h
                d = x0 + (x0 - x0_prev) / (2 * r)
            prev = (sigma_t / sigma_s) * sample - (alpha_t * phi) * d
        self._previous = (x0, lambda_s)
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)


SCHEDULERS: dict[str, type[NoiseSchedule]] = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "dpmsolver++": DPMSolverMultistepScheduler,
}


def make_scheduler(name: str, **config: object) -> NoiseSchedule:
    """A scheduler by name ("ddim" | "ddpm" | "dpmsolver++"); unknown names raise
    InvalidArgument."""
    if name not in SCHEDULERS:
        raise InvalidArgument(f"scheduler must be one of {sorted(SCHEDULERS)}, got {name!r}")
    return SCHEDULERS[name](**config)
