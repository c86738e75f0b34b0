"""Sampling from the mixed-modal model: images (text -> image, edits) and captions.

Guidance mixes the logits of several prompts per item, ``sum_k weight_k * logits_k``. An edit
with two scales (InstructPix2Pix) runs three rows per item, (source, instruction),
(source, no instruction) and (no source, no instruction)::

    l = l(0,0) + s_img * (l(I,0) - l(0,0)) + s_txt * (l(I,T) - l(I,0))

which is ``edit_weights(s_img, s_txt)``; text -> image with one scale s runs two rows.

``forced`` pins cells to given codes (token-level inpainting: the cells outside an edit's mask
are the source's, exactly); the model still reads them, so what it writes next fits them.
A model with a ``<keep>`` token (``Vocab.keep``) may draw it for an edit's cell: the source's
code is written there (``sources``), and the model reads that code, as if it had drawn it.
Without a source (text -> image) ``<keep>`` cannot be drawn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tessera.mixed.model import MixedTransformer
from tessera.mixed.sequences import Sequence, collate
from tessera.mixed.text import SPECIALS


def edit_weights(image_scale: float, text_scale: float) -> list[float]:
    """Weights of the (I,T), (I,0), (0,0) rows for two-scale guidance."""
    return [text_scale, image_scale - text_scale, 1.0 - image_scale]


def text_weights(scale: float) -> list[float]:
    """Weights of the (T), (0) rows for one-scale guidance."""
    return [scale, 1.0 - scale]


def left_pad(prompts: list[Sequence], pad: int) -> tuple[torch.Tensor, ...]:
    """-> tokens, slots (B, P) and mask (B, P) bool, every prompt ending at column P-1."""
    P = max(len(p.tokens) for p in prompts)
    tokens = torch.full((len(prompts), P), pad, dtype=torch.long)
    slots = torch.zeros((len(prompts), P), dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.bool)
    for i, p in enumerate(prompts):
        n = len(p.tokens)
        tokens[i, P - n :], slots[i, P - n :] = torch.tensor(p.tokens), torch.tensor(p.slots)
        mask[i, P - n :] = True
    return tokens, slots, mask


def _draw(logits: torch.Tensor, temperature: float, top_k: int, gen: torch.Generator | None):
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=gen).squeeze(-1)


def mask_keep(mixed: torch.Tensor, source: torch.Tensor, keep: int) -> torch.Tensor:
    """``mixed`` (B, image_vocab + 1) image logits at one cell with ``<keep>`` at index
    ``keep``, ``source`` (B,) the source's code there (-1: none) -> ``<keep>`` made
    impossible where there is no source."""
    mixed[:, keep] = mixed[:, keep].masked_fill(source < 0, float("-inf"))
    return mixed


def write_keep(picks: torch.Tensor, source: torch.Tensor, keep: int) -> torch.Tensor:
    """Drawn indices (B,) into the image slice -> codes: a drawn ``<keep>`` is ``source``'s."""
    return torch.where(picks == keep, source, picks)


@torch.no_grad()
def generate_images(
    model: MixedTransformer,
    prompts: list[list[Sequence]],
    weights: list[float],
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    forced: torch.Tensor | None = None,
    sources: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``prompts[b]``: item b's K condition prompts (each ending with the output ``<boi>``),
    ``weights`` their K guidance weights -> codes (B, n_cells) int64. ``forced`` (B, n_cells)
    int64, -1 where the model draws; ``sources`` (B, n_cells) int64, the codes ``<keep>``
    stands for (-1 or None: no source, ``<keep>`` is never drawn)."""
    layout = model.config.layout
    B, K, n = len(prompts), len(weights), layout.n_cells
    if any(len(p) != K for p in prompts):
        raise ValueError(f"every item needs {K} prompts, one per guidance weight")
    device = model.lm_head.weight.device
    flat = [p for item in prompts for p in item]
    tokens, slots, mask = (t.to(device) for t in left_pad(flat, layout.vocab.special("<pad>")))
    cache = model.new_cache(B * K)
    w = torch.tensor(weights, device=device).view(1, K, 1)
    codes = torch.zeros((B, n), dtype=torch.long, device=device)
    first, last = layout.vocab.text, layout.vocab.size  # image ids (+ <keep>): [first, last)
    if sources is None:
        sources = torch.full((B, n), -1, dtype=torch.long)
    sources = sources.to(device, torch.long)
    was_training = model.training
    model.eval()
    try:
        logits = model.prefill(tokens, slots, mask, cache)
        for cell in range(n):
            mixed = (logits.view(B, K, -1)[..., first:last] * w).sum(1)  # (B, image_vocab [+1])
            if layout.vocab.keep:
                mixed = mask_keep(mixed, sources[:, cell], layout.vocab.image)
            code = _draw(mixed, temperature, top_k, generator)
            if layout.vocab.keep:
                code = write_keep(code, sources[:, cell], layout.vocab.image)
            if forced is not None:
                pinned = forced[:, cell].to(device)
                code = torch.where(pinned >= 0, pinned, code)
            codes[:, cell] = code
            if cell + 1 < n:
                token = (code + first).repeat_interleave(K)
                slot = torch.full_like(token, layout.output_slot(cell))
                logits = model.decode(token, slot, cache)
    finally:
        model.train(was_training)
    return codes


@torch.no_grad()
def generate_text(
    model: MixedTransformer,
    prompts: list[Sequence],
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """Captions for i2t prompts: text ids per item (up to ``<eot>``) and their log-probs."""
    layout = model.config.layout
    vocab = layout.vocab
    device = model.lm_head.weight.device
    tokens, slots, mask = (t.to(device) for t in left_pad(prompts, vocab.special("<pad>")))
    B = len(prompts)
    cache = model.new_cache(B)
    eot = vocab.special("<eot>")
    allowed = torch.zeros(vocab.size, dtype=torch.bool, device=device)
    allowed[eot] = True
    allowed[len(SPECIALS) : vocab.text] = True  # words, never markers or image codes
    out: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    score = torch.zeros(B, device=device)
    was_training = model.training
    model.eval()
    try:
        logits = model.prefill(tokens, slots, mask, cache)
        for i in range(layout.text_len + 1):
            logp = F.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
            if i == layout.text_len:  # out of room: the caption ends here
                token = torch.full((B,), eot, device=device)
            else:
                token = _draw(logp, temperature, 0, generator)
            score += torch.where(done, 0.0, logp.gather(1, token.view(-1, 1)).squeeze(1))
            for b in range(B):
                if not done[b] and int(token[b]) != eot:
                    out[b].append(int(token[b]))
            done |= token == eot
            if bool(done.all()):
                break
            logits = model.decode(token, torch.full_like(token, i), cache)
    finally:
        model.train(was_training)
    return out, score


@torch.no_grad()
def score_sequences(model: MixedTransformer, seqs: list[Sequence]) -> torch.Tensor:
    """Sum of log-probabilities of each sequence's output span (B,): a caption's score."""
    batch = collate(seqs, model.config.layout.vocab.special("<pad>"))
    device = model.lm_head.weight.device
    logits, _ = model(batch["inputs"].to(device), batch["slots"].to(device))
    targets = batch["targets"].to(device)
    logp = F.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
    return (logp.squeeze(-1) * (targets >= 0)).sum(1)
