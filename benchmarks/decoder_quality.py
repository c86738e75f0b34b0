"""The fewest DPM-Solver++ steps that keep the decoder's quality within the bundle report's
margin of DDIM at its default steps (and at least as close to the exact sampler).

The bundle report (`tessera eval bundle`, ``decoder/eval.py``) scores the decoder by the CLIP
cosine between each decoded image and the CLIP image embedding it was conditioned on, and
holds DDIM-25 within 0.03 of DDPM-1000. The same score here, without the data set on disk:
the conditions are the Prior's samples for fixed prompts (the unclip route's own embeddings
and MiniLM states, in-process), fixed seeds, the model's default guidance. Each solver's
mean cosine is compared with DDIM's at the default steps. That score barely moves with the
step count (fewer steps give smoother images that CLIP scores as well), so "equal quality"
also asks for a latent no farther from the converged ODE solution than DDIM's at the
default steps: see :func:`solver_quality`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tessera.common.text_encoder import TextBatch

MARGIN = 0.03  # the bundle report's DDIM-vs-DDPM margin on the CLIP cosine
CANDIDATE_STEPS = (4, 5, 6, 8, 10, 12, 15, 20)
PROMPTS = (
    "grinning face", "red heart", "a small red fruit", "rocket", "sun", "dog face",
    "cat face", "thumbs up", "fire", "star", "crying face", "blue circle", "snowflake",
    "pizza", "rainbow", "ghost", "smiling face with sunglasses", "green apple", "umbrella",
    "light bulb", "hot beverage", "musical note", "party popper", "crescent moon",
    "four leaf clover", "face with tears of joy", "yellow heart", "banana", "house",
    "automobile", "soccer ball", "flag",
)  # fmt: skip


def conditions(
    bundle_dir: Path, n: int, device: str, clip: torch.nn.Module
) -> tuple[torch.Tensor, TextBatch]:
    """The Prior's image embeddings (n, D) for ``n`` prompts and their MiniLM encodings, as
    the unclip route makes them: CLIP's text embedding of the MiniLM sentence embedding,
    then the prior sampled with its defaults, prompt i with seed i (the model itself, not the
    Ray deployment: a row's sample depends only on its own prompt and seed)."""
    from benchmarks import texts
    from tessera.common.checkpoint import load_bundle_component

    dev = torch.device(device)
    prior = load_bundle_component(bundle_dir, "prior", device=dev)
    text = texts.encode([PROMPTS[i % len(PROMPTS)] for i in range(n)]).to(dev)
    with torch.inference_mode():
        text_emb = clip.embed_text(text.pooled)
        emb = prior.sample(text, text_emb, seeds=list(range(n)))
    return emb, text


def solver_quality(
    bundle_dir: Path,
    n: int = 32,
    steps: tuple[int, ...] = CANDIDATE_STEPS,
    device: str = "cpu",
    reference_steps: int = 200,
) -> dict:
    """Per scheduler (DDIM, DPM-Solver++) and step count: the mean CLIP cosine (decoded image
    vs its condition) and the RMS distance, in the diffusion's normalised latent space, to
    the ODE's converged solution (DDIM at ``reference_steps``, same seeds: DDIM at eta 0 and
    DPM-Solver++ integrate the same probability-flow ODE). The fewest DPM-Solver++ steps
    within ``MARGIN`` of DDIM's cosine at the default steps is ``fewest_steps_clip`` (the
    bundle report's criterion); ``fewest_steps`` also asks for a distance no larger than
    DDIM's at the default steps (at least as exact)."""
    from tessera.common.checkpoint import load_bundle_component
    from tessera.decoder.sampling import sample_latents

    dev = torch.device(device)
    decoder = load_bundle_component(bundle_dir, "decoder", device=dev)
    vq = load_bundle_component(bundle_dir, "tokenizer", device=dev)
    clip = load_bundle_component(bundle_dir, "clip", device=dev)
    emb, text = conditions(bundle_dir, n, device, clip)
    seeds = list(range(n))

    @torch.inference_mode()
    def latents(scheduler: str, k: int) -> torch.Tensor:
        z = sample_latents(decoder, emb, text, seeds=seeds, steps=k, scheduler=scheduler)
        return decoder.normalize_latents(z)

    default = decoder.config.default_steps
    reference = latents("ddim", min(reference_steps, decoder.config.num_train_timesteps))

    @torch.inference_mode()
    def measure(scheduler: str, k: int) -> dict:
        x = latents(scheduler, k)
        images = vq.decode_latents(decoder.denormalize_latents(x))
        return {
            "clip_cosine": float((clip.embed_image(images) * emb).sum(-1).mean()),
            "ode_error": float((x - reference).pow(2).mean().sqrt()),
        }

    base = measure("ddim", default)
    ks = [k for k in steps if k <= default]
    ddim = {str(k): measure("ddim", k) for k in ks}
    dpm = {str(k): measure("dpmsolver++", k) for k in ks + [default]}
    clip_ok = [k for k in ks if base["clip_cosine"] - dpm[str(k)]["clip_cosine"] <= MARGIN]
    exact_ok = [k for k in clip_ok if dpm[str(k)]["ode_error"] <= base["ode_error"]]
    return {
        "n": n,
        "margin": MARGIN,
        "reference_steps": reference_steps,
        "baseline": {"scheduler": "ddim", "steps": default, **base},
        "ddim": ddim,
        "dpmsolver++": dpm,
        "fewest_steps_clip": clip_ok[0] if clip_ok else None,
        "fewest_steps": exact_ok[0] if exact_ok else None,
    }
