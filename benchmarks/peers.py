"""Tessera's samplers against the standard implementations, same sizes, same machine, one run.

- LM: ``sample_tokens`` (KV cache, per-row seeds, guidance in a doubled batch) vs Hugging
  Face ``transformers`` ``GPT2LMHeadModel.generate()`` with a GPT-2 of the same depth, width,
  heads and vocabulary, the same batch, prompt length and number of new tokens; without
  guidance and with it (``guidance_scale`` in ``generate``: an unconditional pass per step).
- Decoder: ``sample_latents`` (DDIM, guidance) vs ``diffusers`` ``UNet2DModel`` +
  ``DDIMScheduler`` with the same widths, blocks per level and latent shape, the same number
  of steps and the same doubled batch for guidance. The diffusers UNet has no text or CLIP
  conditioning (it is unconditional), so it does a little less work per step.
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
from torch.utils.flop_counter import FlopCounterMode

PROMPT_TOKENS = 12  # text prefix length fed to both LMs


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
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int
) -> tuple[list[float], list[float]]:
    """Both samplers' times, alternating run by run: a slow spell of a noisy machine then
    slows both sides instead of one side's whole block, so the ratio stays fair."""
    ours(), theirs()  # warm-up: allocator, lazy init
    synchronize()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)):
            t0 = time.perf_counter()
            fn()
            synchronize()
            times.append(time.perf_counter() - t0)
    return t_ours, t_theirs


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
    t_ours, t_theirs = timed_pair(ours, theirs, repeats)
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
    return out


# ---------------------------------------------------------------------------- decoder
def decoder_vs_diffusers(
    decoder: torch.nn.Module,
    batch: int,
    steps: int,
    repeats: int,
    summarize: Callable[[list[float]], dict],
    device: str = "cpu",
) -> dict:
    """``decoder`` already on ``device``; the diffusers UNet and all inputs go there too."""
    from diffusers import DDIMScheduler, UNet2DModel

    from tessera.decoder.sampling import sample_latents

    cfg = decoder.config
    levels = len(cfg.widths)
    unet = UNet2DModel(
        sample_size=cfg.grid_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        layers_per_block=cfg.num_res_blocks,
        block_out_channels=tuple(cfg.widths),
        down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
        attention_head_dim=cfg.widths[-1] // cfg.num_heads,
        norm_num_groups=math.gcd(32, *cfg.widths),  # what the Tessera decoder uses per width
    ).eval()
    unet.to(device)
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
    out: dict = {
        "batch": batch,
        "steps": steps,
        "params": param_counts(decoder, "diffusers", unet),
    }
    for label, scale in (("no_guidance", 1.0), ("guidance", 3.0)):

        def ours(scale: float = scale) -> object:
            return sample_latents(
                decoder, emb, text, seeds=list(range(batch)), steps=steps, guidance_scale=scale
            )

        def theirs(scale: float = scale) -> object:
            with torch.inference_mode():
                scheduler.set_timesteps(steps, device=device)
                x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
                for t in scheduler.timesteps:
                    if scale == 1.0:
                        eps = unet(x, t).sample
                    else:  # classifier-free guidance the usual way: one doubled batch
                        cond, uncond = unet(torch.cat([x, x]), t).sample.chunk(2)
                        eps = uncond + scale * (cond - uncond)
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
    return out
