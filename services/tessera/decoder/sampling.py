"""Sampling the decoder: CLIP image embedding (+ text) -> VQ latents, with classifier-free
guidance, per-row seeds, DDIM/DDPM, x0 previews and cancellation. Also the EMA of weights
used while training.

Reproducibility: row i draws its starting noise and every DDPM/DDIM noise from its own
generator seeded with ``seeds[i]``, so a row's result does not depend on the other rows of the
batch (up to float rounding in batched matmuls).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tessera.common.device import make_generator
from tessera.common.errors import Cancelled, InvalidArgument
from tessera.common.limits import MAX_GUIDANCE
from tessera.common.text_encoder import TextBatch
from tessera.decoder.model import LatentDecoder
from tessera.decoder.schedulers import SCHEDULERS, NoiseSchedule, make_scheduler

ProgressFn = Callable[[int, int, Tensor], bool]


def guided_output(
    model: LatentDecoder,
    x: Tensor,
    t: Tensor,
    image_emb: Tensor,
    text_states: Tensor | None,
    text_mask: Tensor | None,
    guidance_scale: float,
) -> Tensor:
    """The model output with classifier-free guidance: u + g·(c - u).

    c conditions on the image embedding and the text, u on neither (both learned nulls).
    g = 1 is exactly the conditional output and g = 0 exactly the unconditional one (one
    forward each); otherwise one forward on the doubled batch gives both halves.
    """
    B = x.shape[0]
    yes = torch.ones(B, dtype=torch.bool, device=x.device)
    if guidance_scale == 1.0:
        return model(x, t, image_emb, text_states, text_mask)
    if guidance_scale == 0.0:
        return model(x, t, image_emb, text_states, text_mask, drop_image=yes, drop_text=yes)
    drop = torch.cat([~yes, yes])  # rows [0, B) conditional, [B, 2B) unconditional
    out = model(
        torch.cat([x, x]),
        torch.cat([t, t]),
        torch.cat([image_emb, image_emb]),
        None if text_states is None else torch.cat([text_states, text_states]),
        None if text_mask is None else torch.cat([text_mask, text_mask]),
        drop_image=drop,
        drop_text=drop,
    )
    cond, uncond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def validate_request(
    model: LatentDecoder,
    image_emb: Tensor,
    text: TextBatch | None,
    seeds: Sequence[int],
    steps: int | None,
    guidance_scale: float | None,
    scheduler: str,
    progress_every: int,
) -> tuple[int, float]:
    cfg = model.config
    if image_emb.dim() != 2 or image_emb.shape[1] != cfg.clip_dim or image_emb.shape[0] < 1:
        raise InvalidArgument(
            f"image embeddings must be (B, {cfg.clip_dim}), got {tuple(image_emb.shape)}"
        )
    if not torch.isfinite(image_emb).all():
        raise InvalidArgument("image embeddings contain NaN or infinity")
    B = image_emb.shape[0]
    if len(seeds) != B:
        raise InvalidArgument(f"{len(seeds)} seeds for {B} image embeddings")
    if text is not None and text.states.shape[0] not in (1, B):
        raise InvalidArgument(f"text has {text.states.shape[0]} rows for {B} image embeddings")
    if scheduler not in SCHEDULERS:
        raise InvalidArgument(f"scheduler must be one of {sorted(SCHEDULERS)}, got {scheduler!r}")
    steps = cfg.default_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise InvalidArgument(f"steps must be an integer, got {steps!r}")
    steps = int(steps)
    if not 1 <= steps <= cfg.num_train_timesteps:
        raise InvalidArgument(f"steps must be in [1, {cfg.num_train_timesteps}], got {steps}")
    g = cfg.default_guidance if guidance_scale is None else guidance_scale
    if isinstance(g, bool) or not isinstance(g, numbers.Real) or not math.isfinite(g):
        raise InvalidArgument(f"guidance_scale must be a finite number, got {g!r}")
    if not 0.0 <= g <= MAX_GUIDANCE:
        raise InvalidArgument(f"guidance_scale must be in [0, {MAX_GUIDANCE:g}], got {g}")
    if (
        isinstance(progress_every, bool)
        or not isinstance(progress_every, int)
        or progress_every < 1
    ):
        raise InvalidArgument(f"progress_every must be a positive integer, got {progress_every!r}")
    return steps, float(g)


@torch.inference_mode()
def sample_latents(
    model: LatentDecoder,
    image_emb: Tensor,
    text: TextBatch | None,
    *,
    seeds: Sequence[int],
    steps: int | None = None,
    guidance_scale: float | None = None,
    scheduler: str = "ddim",
    progress_every: int = 5,
    on_progress: ProgressFn | None = None,
    eta: float = 0.0,
) -> Tensor:
    """Sample one latent grid per image embedding.

    image_emb (B, D) CLIP image embeddings; text a TextBatch with B rows, one row (shared by
    all) or None (no text: the learned null text). ``on_progress(step, total, x0)`` is called
    every ``progress_every`` steps and after the last, with the predicted clean latents in VQ
    space; returning False raises ``Cancelled``. Bad arguments raise ``InvalidArgument``.

    Returns (B, C, h, w) latents in the VQ model's space, for ``VQModel.decode_latents``.
    """
    steps, g = validate_request(
        model, image_emb, text, seeds, steps, guidance_scale, scheduler, progress_every
    )
    cfg = model.config
    device = next(model.parameters()).device
    B = image_emb.shape[0]
    image_emb = image_emb.to(device=device, dtype=torch.float32)
    states = mask = None
    if text is not None:
        states, mask = text.states.to(device), text.mask.to(device)
        if states.shape[0] == 1 and B > 1:
            states, mask = states.expand(B, -1, -1), mask.expand(B, -1)

    extra = {"eta": eta} if scheduler == "ddim" else {}
    sched: NoiseSchedule = make_scheduler(scheduler, **cfg.scheduler_kwargs(), **extra)
    sched.set_timesteps(steps, device=device)
    generators = [make_generator(s, device) for s in seeds]
    shape = (cfg.latent_channels, cfg.grid_size, cfg.grid_size)
    x = torch.stack([torch.randn(shape, generator=gen, device=device) for gen in generators])
    x = x * sched.init_noise_sigma  # (B, C, h, w)

    total = len(sched.timesteps)
    for i, t in enumerate(sched.timesteps):
        t_batch = t.expand(B)
        out = guided_output(
            model, sched.scale_model_input(x, t), t_batch, image_emb, states, mask, g
        )
        result = sched.step(out, t, x, generator=generators)
        x = result.prev_sample
        done = i + 1
        if on_progress is not None and (done % progress_every == 0 or done == total):
            preview = model.denormalize_latents(result.pred_original_sample)
            if on_progress(done, total, preview) is False:
                raise Cancelled(f"sampling cancelled at step {done}/{total}")
    return model.denormalize_latents(x)


class EMA:
    """Exponential moving average of a model's weights (the weights a decoder ships with).

    The decay warms up as min(decay, (1 + n)/(10 + n)) so short runs are not dominated by the
    random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.num_updates = 0

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.num_updates += 1
        ema = list(self.model.parameters())
        live = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema, live, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state)
        self.num_updates = num_updates
