"""Tessera's samplers against the standard implementations, same sizes, same machine, one run.

- LM: ``sample_tokens`` (KV cache, per-row seeds, guidance in a doubled batch) vs Hugging
  Face ``transformers`` ``GPT2LMHeadModel.generate()`` with a GPT-2 of the same depth, width,
  heads and vocabulary, the same batch, prompt length and number of new tokens; without
  guidance and with it (``guidance_scale`` in ``generate``: an unconditional pass per step).
- Decoder: ``sample_latents`` (DDIM, guidance) vs ``diffusers`` ``UNet2DConditionModel`` +
  ``DDIMScheduler`` built like the decoder (:func:`conditioned_unet`: the same widths, blocks,
  attention, heads, conditioning and context; parameter count within 5%, which the tests
  assert), the same scheduler settings, steps and doubled batch for guidance; then Tessera
  with DPM-Solver++ at the fewest steps within the quality margin of DDIM
  (``benchmarks/decoder_quality.py``) against the peer at DDIM: images/s at equal quality.
- Achieved FLOP/s of each sampler (FLOPs counted by ``torch.utils.flop_counter``, which
  counts matmuls, convolutions and attention) against this machine's measured matmul peak.

Weights are random on both sides: speed does not depend on them. Every figure is a median
over ``repeats`` runs with the spread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

PROMPT_TOKENS = 12  # text prefix length fed to both LMs
JACOBI_WINDOW = 3  # drafts per speculative Jacobi round in the LM's extra row


def synchronize() -> None:
    """Wait for queued GPU work, so that a timer reads the work and not its launch (a no-op
    where CUDA was never used)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: allocator, lazy init
    synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t0)
    return times


def timed_pair(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    repeats: int,
    cpu: dict | None = None,
) -> tuple[list[float], list[float]]:
    """Both samplers' times, alternating run by run: a slow spell of a noisy machine then
    slows both sides instead of one side's whole block, so the ratio stays fair. ``cpu``
    gets the same runs' CPU seconds of this process (``time.process_time``) under "ours" and
    "theirs": on a shared machine they vary less than wall time (meaningful for CPU runs)."""
    ours(), theirs()  # warm-up: allocator, lazy init
    synchronize()
    t_ours, t_theirs, c_ours, c_theirs = [], [], [], []
    for _ in range(repeats):
        for fn, times, cpu_times in ((ours, t_ours, c_ours), (theirs, t_theirs, c_theirs)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            synchronize()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    if cpu is not None:
        cpu.update(ours=c_ours, theirs=c_theirs)
    return t_ours, t_theirs


class _TorchCalls(TorchFunctionMode):
    """Counts the torch functions and tensor methods Python calls (each is one dispatch from
    Python: the per-token overhead a small model's decode step is made of)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(
        self, func: Callable, types: object, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        self.calls += 1
        return func(*args, **(kwargs or {}))


def count_torch_calls(fn: Callable[[], object]) -> int:
    with _TorchCalls() as counter:
        fn()
    return counter.calls


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(repeats: int = 5, n: int = 1024, device: str = "cpu") -> dict:
    """Best float32 (n x n) @ (n x n) throughput with the current torch threads (on a GPU,
    a larger n: 1024 would measure launch overhead)."""
    n = n if device == "cpu" else max(n, 8192)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = min(timed(lambda: a @ b, repeats))
    return {"n": n, "gflops": 2 * n**3 / best / 1e9, "threads": torch.get_num_threads()}


def random_text(batch: int, text_dim: int, gen: torch.Generator, device: str) -> object:
    """A prompt's text-encoder output (a ``TextBatch``), drawn on the CPU from ``gen``."""
    from tessera.common.text_encoder import TextBatch

    return TextBatch(
        states=torch.randn(batch, PROMPT_TOKENS, text_dim, generator=gen),
        mask=torch.ones(batch, PROMPT_TOKENS, dtype=torch.bool),
        pooled=torch.zeros(batch, text_dim),
    ).to(device)


def param_counts(ours: torch.nn.Module, peer: str, theirs: torch.nn.Module) -> dict:
    return {
        "tessera": sum(p.numel() for p in ours.parameters()),
        peer: sum(p.numel() for p in theirs.parameters()),
    }


def compare(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    *,
    peer: str,
    unit: str,
    work: int,
    repeats: int,
    summarize: Callable[[list[float]], dict],
    peer_flops: bool = False,
) -> dict:
    """One row: both throughputs (``work`` items a run, ``{side}_{unit}``), Tessera's achieved
    GFLOP/s (the peer's too with ``peer_flops``), FLOPs a run and the speedup."""
    cpu: dict = {}
    t_ours, t_theirs = timed_pair(ours, theirs, repeats, cpu)
    flops = count_flops(ours)
    row = {
        f"tessera_{unit}": summarize([work / t for t in t_ours]),
        f"{peer}_{unit}": summarize([work / t for t in t_theirs]),
        "tessera_gflops_achieved": flops / min(t_ours) / 1e9,
    }
    if peer_flops:
        row[f"{peer}_gflops_achieved"] = count_flops(theirs) / min(t_theirs) / 1e9
    row["flops_per_run"] = flops
    row["speedup"] = row[f"tessera_{unit}"]["median"] / row[f"{peer}_{unit}"]["median"]
    row["cpu_speedup"] = summarize(cpu["theirs"])["median"] / summarize(cpu["ours"])["median"]
    return row


# ---------------------------------------------------------------------------- LM
def lm_vs_transformers(
    lm: torch.nn.Module,
    batch: int,
    repeats: int,
    summarize: Callable[[list[float]], dict],
    device: str = "cpu",
) -> dict:
    """``lm`` already on ``device``; the GPT-2 and all inputs go there too."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    from tessera.lm.sampling import SamplingParams, sample_tokens

    cfg = lm.config
    new_tokens = cfg.n_tokens
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=cfg.vocab_size + 1,  # + BOS, as ImageGPT
            n_positions=PROMPT_TOKENS + new_tokens + 1,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            bos_token_id=cfg.vocab_size,
            eos_token_id=None,
            attn_implementation="sdpa",
        )
    ).eval()
    gpt2.to(device)
    gen = torch.Generator().manual_seed(0)  # inputs drawn on the CPU: the same everywhere
    prompt = torch.randint(0, cfg.vocab_size, (batch, PROMPT_TOKENS), generator=gen).to(device)
    text = random_text(batch, cfg.text_dim, gen, device)
    out: dict = {
        "batch": batch,
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": new_tokens,
        "params": param_counts(lm, "transformers", gpt2),
    }
    for label, scale in (("no_guidance", 1.0), ("guidance", 3.0)):
        params = [SamplingParams(seed=i, guidance_scale=scale) for i in range(batch)]

        def ours(params: list = params) -> object:
            with torch.inference_mode():
                return sample_tokens(lm, text, params)

        gen_cfg = GenerationConfig(
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=True,
            top_k=0,
            pad_token_id=0,
            eos_token_id=None,
            guidance_scale=None if scale == 1.0 else scale,
        )

        def theirs(gen_cfg: GenerationConfig = gen_cfg) -> object:
            with torch.inference_mode():
                return gpt2.generate(
                    prompt, attention_mask=torch.ones_like(prompt), generation_config=gen_cfg
                )

        out[label] = compare(
            ours,
            theirs,
            peer="transformers",
            unit="tokens_per_s",
            work=batch * new_tokens,
            repeats=repeats,
            summarize=summarize,
        )
        out[label]["torch_calls_per_token"] = {
            "tessera": count_torch_calls(ours) / new_tokens,
            "transformers": count_torch_calls(theirs) / new_tokens,
        }
        out[label]["jacobi"] = jacobi_row(lm, text, params, ours, repeats, summarize)
    return out


def jacobi_row(
    lm: torch.nn.Module,
    text: object,
    params: list,
    plain: Callable[[], object],
    repeats: int,
    summarize: Callable[[list[float]], dict],
) -> dict:
    """Speculative Jacobi sampling (``sample_tokens(jacobi=W)``) against plain sampling,
    alternating: tokens/s, and the tokens a sequence accepts per forward (the paper's
    measure; 1 = no gain) and the batch's forwards (the slowest row sets them)."""
    from tessera.lm.sampling import sample_tokens

    tokens = len(params) * lm.config.n_tokens
    stats: dict = {}

    def jacobi() -> object:
        with torch.inference_mode():
            return sample_tokens(lm, text, params, jacobi=JACOBI_WINDOW, stats=stats)

    cpu: dict = {}
    t_jacobi, t_plain = timed_pair(jacobi, plain, repeats, cpu)
    row = {
        "window": JACOBI_WINDOW,
        "tokens_per_s": summarize([tokens / t for t in t_jacobi]),
        "plain_tokens_per_s": summarize([tokens / t for t in t_plain]),
        "tokens_per_forward": stats["tokens_per_forward"],
        "forwards": stats["forwards"] + 1,  # + the prefill
    }
    row["speedup_vs_plain"] = row["tokens_per_s"]["median"] / row["plain_tokens_per_s"]["median"]
    row["cpu_speedup_vs_plain"] = (
        summarize(cpu["theirs"])["median"] / summarize(cpu["ours"])["median"]
    )
    return row


# ---------------------------------------------------------------------------- decoder
class PeerConditioning(torch.nn.Module):
    """The decoder's conditioning, outside the peer UNet: the same layers as
    ``LatentDecoder`` (CLIP image embedding -> ``clip_tokens`` context tokens, text states ->
    one token each, a LayerNorm, the learned nulls), run by the same code
    (``LatentDecoder.condition``). diffusers' UNet2DConditionModel takes the context tokens
    as ``encoder_hidden_states`` and the image embedding as ``class_labels``."""

    def __init__(self, cfg: object) -> None:
        super().__init__()
        self.config = cfg
        self.image_to_tokens = torch.nn.Linear(cfg.clip_dim, cfg.clip_tokens * cfg.context_dim)
        self.text_to_tokens = torch.nn.Linear(cfg.text_dim, cfg.context_dim)
        self.context_norm = torch.nn.LayerNorm(cfg.context_dim)
        self.null_image = torch.nn.Parameter(torch.randn(cfg.clip_dim) / math.sqrt(cfg.clip_dim))
        self.null_text = torch.nn.Parameter(torch.randn(cfg.text_dim) * 0.02)

    def condition(self, *args: object, **kwargs: object) -> tuple:
        from tessera.decoder.model import LatentDecoder

        return LatentDecoder.condition(self, *args, **kwargs)


def conditioned_unet(cfg: object) -> tuple[torch.nn.Module, PeerConditioning]:
    """A ``diffusers`` ``UNet2DConditionModel`` built like the Tessera decoder of ``cfg``:
    the same widths and res blocks per level (``layers_per_block``; up levels one more),
    a self + cross-attention transformer after every res block and in the middle, the same
    heads, the same cross-attention width and context, the CLIP image embedding added to the
    timestep embedding through one linear layer (``class_embed_type="simple_projection"``),
    scale/shift timestep modulation of the res blocks, and the feed-forward of every
    transformer diffusers' GELU ``FeedForward`` (4x, as Tessera's MLP; diffusers' default
    GEGLU has 1.5x the weights). GroupNorm groups: one count for all widths."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention import FeedForward

    levels = len(cfg.widths)
    unet = UNet2DConditionModel(
        sample_size=cfg.grid_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * levels,
        up_block_types=("CrossAttnUpBlock2D",) * levels,
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(cfg.widths),
        layers_per_block=cfg.num_res_blocks,
        cross_attention_dim=cfg.context_dim,
        attention_head_dim=cfg.num_heads,  # diffusers reads this as the number of heads
        norm_num_groups=math.gcd(32, *cfg.widths),
        resnet_time_scale_shift="scale_shift",
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=cfg.clip_dim,
        use_linear_projection=True,
    )
    for module in unet.modules():
        if type(module).__name__ == "BasicTransformerBlock":
            module.ff = FeedForward(module.norm3.normalized_shape[0], activation_fn="gelu")
    return unet.eval(), PeerConditioning(cfg).eval()


def peer_output(
    unet: torch.nn.Module,
    cond: PeerConditioning,
    x: torch.Tensor,
    t: torch.Tensor,
    emb: torch.Tensor,
    text: object,
    scale: float,
) -> torch.Tensor:
    """The peer's model output with classifier-free guidance, as ``guided_output``: one
    forward, or one on the doubled batch (null image and text for the second half)."""
    B = x.shape[0]
    states, mask = text.states, text.mask
    if scale == 1.0:
        e, context, keep = cond.condition(emb, states, mask)
        return unet(x, t, context, class_labels=e, encoder_attention_mask=keep).sample
    yes = torch.ones(B, dtype=torch.bool, device=x.device)
    drop = torch.cat([~yes, yes])
    e, context, keep = cond.condition(
        torch.cat([emb, emb]),
        torch.cat([states, states]),
        torch.cat([mask, mask]),
        drop_image=drop,
        drop_text=drop,
    )
    out = unet(torch.cat([x, x]), t, context, class_labels=e, encoder_attention_mask=keep).sample
    c, u = out.chunk(2)
    return u + scale * (c - u)


def decoder_vs_diffusers(
    decoder: torch.nn.Module,
    batch: int,
    steps: int,
    repeats: int,
    summarize: Callable[[list[float]], dict],
    device: str = "cpu",
    solver_steps: int | None = None,
) -> dict:
    """``decoder`` already on ``device``; the diffusers UNet and all inputs go there too.
    Both sample with DDIM at ``steps`` (Tessera's and diffusers' ``DDIMScheduler``, the same
    settings); with ``solver_steps``, a last row: Tessera with DPM-Solver++ at that many
    steps (the fewest within the quality margin of DDIM at ``steps``) against the peer at
    DDIM ``steps``, both guided: images per second at equal quality."""
    from diffusers import DDIMScheduler

    from tessera.decoder.sampling import sample_latents

    cfg = decoder.config
    unet, cond = conditioned_unet(cfg)
    unet.to(device), cond.to(device)
    scheduler = DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=cfg.prediction_type,
        timestep_spacing="trailing",
        clip_sample=False,
    )
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(batch, cfg.clip_dim, generator=gen), dim=-1)
    emb = emb.to(device)
    text = random_text(batch, cfg.text_dim, gen, device)
    shape = (batch, cfg.latent_channels, cfg.grid_size, cfg.grid_size)
    ours_n = sum(p.numel() for p in decoder.parameters())
    theirs_n = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in cond.parameters())
    out: dict = {
        "batch": batch,
        "steps": steps,
        "params": {"tessera": ours_n, "diffusers": theirs_n, "ratio": theirs_n / ours_n},
    }
    rows = [("no_guidance", 1.0, "ddim", steps), ("guidance", cfg.default_guidance, "ddim", steps)]
    if solver_steps is not None:
        rows.append(("equal_quality", cfg.default_guidance, "dpmsolver++", solver_steps))
    for label, scale, ours_scheduler, ours_steps in rows:

        def ours(scale: float = scale, name: str = ours_scheduler, n: int = ours_steps) -> object:
            return sample_latents(
                decoder,
                emb,
                text,
                seeds=list(range(batch)),
                steps=n,
                guidance_scale=scale,
                scheduler=name,
            )

        def theirs(scale: float = scale) -> object:
            with torch.inference_mode():
                scheduler.set_timesteps(steps, device=device)
                x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
                for t in scheduler.timesteps:
                    eps = peer_output(unet, cond, x, t, emb, text, scale)
                    x = scheduler.step(eps, t, x).prev_sample
                return x

        out[label] = compare(
            ours,
            theirs,
            peer="diffusers",
            unit="images_per_s",
            work=batch,
            repeats=repeats,
            summarize=summarize,
            peer_flops=True,
        )
        out[label].update(scheduler=ours_scheduler, steps=ours_steps, guidance_scale=scale)
    return out
