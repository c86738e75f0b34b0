"""The prior's noise schedule and sampler: a cosine schedule and deterministic DDIM for an
x0-predicting model, shaped like diffusers' schedulers (``set_timesteps``, ``step()``)."""

from __future__ import annotations

import math

import torch

from tessera.common.errors import InvalidArgument


def cosine_alphas_cumprod(num_timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) for t = 0..T-1 (betas clipped at
    0.999, as in diffusers' ``squaredcos_cap_v2``)."""
    f = lambda t: math.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(num_timesteps)]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float64), dim=0).float()


class PriorDDIMScheduler:
    """Deterministic DDIM (eta = 0) for an x0-predicting model, shaped like diffusers'
    schedulers: ``set_timesteps(n)``, ``timesteps``, ``step(x0, t, sample) -> prev``."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod.double()
        self.num_train_timesteps = len(alphas_cumprod)
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1)

    def set_timesteps(self, n: int) -> None:
        if not 1 <= n <= self.num_train_timesteps:
            raise InvalidArgument(f"steps must be in 1..{self.num_train_timesteps}; got {n}")
        # "trailing" spacing: the first step starts at T-1 (pure noise), the last at t >= 0.
        total = self.num_train_timesteps
        self.timesteps = torch.tensor([round(total * (n - i) / n) - 1 for i in range(n)])

    def step(self, x0: torch.Tensor, t: int, sample: torch.Tensor) -> torch.Tensor:
        """x_t and the predicted x0 -> x_{prev}, where prev is the next entry of timesteps."""
        i = int((self.timesteps == t).nonzero()[0])
        prev = int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1
        ab_t = self.alphas_cumprod[t].item()
        ab_prev = self.alphas_cumprod[prev].item() if prev >= 0 else 1.0
        eps = (sample - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)
        return math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps
