"""Optimisation: AdamW parameter groups, warm-up + cosine schedules, one clipped step."""

from __future__ import annotations

import math

import torch


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no decay on biases, norms, scalars and embedding-like vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def cosine_decay(progress: float, floor: float) -> float:
    """1 at ``progress`` 0, falling along a half cosine to ``floor`` at ``progress`` 1."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * cosine_decay(progress, 0.1)


def planned_steps(step: int, total: int, elapsed_s: float, max_minutes: float | None) -> int:
    """The step count the LR schedule should aim at: ``total``, or fewer when a time limit
    will stop the run first (extrapolated from the pace so far), so that a time-boxed run
    still warms up and decays instead of stopping at a high learning rate."""
    if not max_minutes or step < 5 or elapsed_s <= 0:
        return total
    return max(step + 1, min(total, int(step * 60 * max_minutes / elapsed_s)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor
) -> None:
    """Backpropagate ``loss``, clip the gradient norm at 1 and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def bf16_autocast(device: torch.device, on_cpu: bool = False) -> torch.autocast:
    """The training step's autocast: bfloat16 on CUDA always, on the CPU when asked (weights
    and optimizer stay float32). A context that can be entered again, step after step."""
    enabled = device.type == "cuda" or (on_cpu and device.type == "cpu")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
