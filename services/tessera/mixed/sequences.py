"""Mixed sequences of text and image tokens, and where the loss falls on them.

Three tasks, one vocabulary (``text.Vocab``), each sequence ends with the part the model
writes (the loss falls on it and only on it)::

    t2i   <t2i> caption <boi> image <eoi>                       writes: image <eoi>
    i2t   <i2t> <boi> image <eoi> caption <eot>                  writes: caption <eot>
    edit  <edit> instruction <boi> source <eoi> <boi> target <eoi>    writes: target <eoi>

Every position also has a *slot*, the index of its learned position embedding: text token i
has slot i, cell c of the source (or only input) image has ``text_len + c``, cell c of the
image being written ``text_len + n + c``, markers the last slot. There is no position over the
whole sequence, so how a batch pads its prefixes changes no output (as in the ``ar`` LM).

With ``copy_cells`` (``Layout.output_slot``) an output position is named by the cell it
*predicts*, and the model embeds it as that cell of the source plus an "output" vector: the
position that writes cell c then looks like source cell c, so copying a cell is attending to
the key that matches the query (an edit changes few cells and copies the rest).

With a ``<keep>`` token (``Vocab.keep``) an edit's output cell whose target code equals the
source's is *labelled* ``<keep>``, while the input stays the code itself (what a sampler
feeds back after writing the source's code there). Keeping a cell is then one class the
model learns once, not 256 codes to match one by one, and a kept cell is the source's code
exactly, not "probably copied": the untouched part of a scene stays untouched.

For guidance, a condition can be dropped: an edit's instruction (its text becomes empty) and
/ or its source image (the source segment becomes an empty ``<boi> <eoi>``), as
InstructPix2Pix drops its two conditions; a caption of ``t2i`` likewise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tessera.mixed.text import Vocab

TASKS = ("t2i", "i2t", "edit")


@dataclass(frozen=True)
class Layout:
    """Sizes a vocabulary and a position table are built for."""

    vocab: Vocab
    text_len: int  # text tokens per caption or instruction, at most
    n_cells: int  # image tokens per image (grid_size ** 2)
    copy_cells: bool = False  # output slots name the cell they predict (module docstring)

    @property
    def n_slots(self) -> int:
        return self.text_len + 2 * self.n_cells + 1

    @property
    def marker_slot(self) -> int:
        return self.n_slots - 1

    @property
    def output_base(self) -> int:
        """The first output-image slot."""
        return self.text_len + self.n_cells

    @property
    def output_boi_slot(self) -> int:
        """The slot of the output image's ``<boi>``: with ``copy_cells`` it predicts cell 0."""
        return self.output_base if self.copy_cells else self.marker_slot

    def output_slot(self, cell: int | torch.Tensor) -> int | torch.Tensor:
        """The slot of output cell ``cell``'s token (an int or a tensor of cells). With
        ``copy_cells`` that position predicts cell + 1, and the last cell (which predicts
        ``<eoi>``) takes the marker slot."""
        if not self.copy_cells:
            return self.output_base + cell
        if isinstance(cell, torch.Tensor):
            following = self.output_base + cell + 1
            return torch.where(cell + 1 < self.n_cells, following, self.marker_slot)
        return self.output_base + cell + 1 if cell + 1 < self.n_cells else self.marker_slot

    @property
    def max_len(self) -> int:
        """The longest sequence: an edit with a full instruction (7 markers)."""
        return 7 + self.text_len + 2 * self.n_cells


@dataclass
class Sequence:
    tokens: list[int]
    slots: list[int]
    output_from: int  # tokens[output_from:] are written by the model (the loss's span)
    labels: list[int] | None = None  # what the loss wants per token, if not ``tokens``


class Builder:
    """Sequences for one layout; ``text`` and ``codes`` are already token ids / codebook
    indices (``codes`` row-major, length n_cells)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        v = layout.vocab
        self.ids = {name: v.special(name) for name in ("<eot>", "<boi>", "<eoi>")}

    def _marker(self, seq: Sequence, name: str) -> None:
        seq.tokens.append(self.layout.vocab.special(name))
        seq.slots.append(self.layout.marker_slot)

    def _text(self, seq: Sequence, text: list[int]) -> None:
        text = text[: self.layout.text_len]
        seq.tokens += text
        seq.slots += range(len(text))

    def _image(self, seq: Sequence, codes: list[int] | None, output: bool) -> None:
        """``<boi> codes <eoi>``; None: an empty (dropped) image."""
        layout = self.layout
        self._marker(seq, "<boi>")
        if output:
            seq.slots[-1] = layout.output_boi_slot
        if codes is not None:
            if len(codes) != layout.n_cells:
                raise ValueError(f"an image has {layout.n_cells} codes, got {len(codes)}")
            seq.tokens += [layout.vocab.image_id(int(c)) for c in codes]
            cells = range(len(codes))
            seq.slots += [layout.output_slot(c) for c in cells] if output else [
                layout.text_len + c for c in cells
            ]  # fmt: skip
        self._marker(seq, "<eoi>")

    def t2i(self, text: list[int], codes: list[int]) -> Sequence:
        seq = Sequence([], [], 0)
        self._marker(seq, "<t2i>")
        self._text(seq, text)
        seq.output_from = len(seq.tokens) + 1  # after <boi>
        self._image(seq, codes, output=True)
        return seq

    def i2t(self, codes: list[int], text: list[int]) -> Sequence:
        seq = Sequence([], [], 0)
        self._marker(seq, "<i2t>")
        self._image(seq, codes, output=False)
        seq.output_from = len(seq.tokens)
        self._text(seq, text)
        self._marker(seq, "<eot>")
        return seq

    def edit(self, text: list[int], source: list[int] | None, target: list[int]) -> Sequence:
        seq = Sequence([], [], 0)
        self._marker(seq, "<edit>")
        self._text(seq, text)
        self._image(seq, source, output=False)
        seq.output_from = len(seq.tokens) + 1
        self._image(seq, target, output=True)
        vocab = self.layout.vocab
        if vocab.keep and source is not None:  # cells equal to the source's: <keep>
            start = seq.output_from
            seq.labels = list(seq.tokens)
            for c, (s, t) in enumerate(zip(source, target, strict=True)):
                if int(s) == int(t):
                    seq.labels[start + c] = vocab.keep_id
        return seq

    def prompt(self, seq: Sequence) -> Sequence:
        """The part a sampler is given (everything before the output): for image outputs it
        ends with the output's ``<boi>``."""
        return Sequence(seq.tokens[: seq.output_from], seq.slots[: seq.output_from], -1)


def collate(seqs: list[Sequence], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: ``inputs`` / ``slots`` (B, T-1), ``targets`` (B, T-1) with -100
    outside each sequence's output span (the loss ignores them), ``mask`` (B, T-1) bool."""
    T = max(len(s.tokens) for s in seqs)
    B = len(seqs)
    tokens = torch.full((B, T), pad, dtype=torch.long)
    slots = torch.zeros((B, T), dtype=torch.long)
    targets = torch.full((B, T), -100, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        n = len(s.tokens)
        tokens[i, :n] = torch.tensor(s.tokens)
        slots[i, :n] = torch.tensor(s.slots)
        mask[i, :n] = True
        labels = tokens[i] if s.labels is None else torch.tensor(s.labels)
        targets[i, s.output_from : n] = labels[s.output_from : n]
    return {
        "inputs": tokens[:, :-1],
        "slots": slots[:, :-1],
        "targets": targets[:, 1:],
        "mask": mask[:, :-1],
    }
