"""The mixed-modal model's text side: a byte-level BPE trained on the project's own words.

Trained with the ``tokenizers`` library on every caption and edit instruction the data sets
hold, so "make the circle red" and "woman running: dark skin tone" are a few tokens each. The
special tokens are the text side's first ids, in ``SPECIALS`` order, so a vocabulary is read
the same way whatever the BPE learned; image codes sit after the text ids (see ``Vocab``).
Saved as the library's ``tokenizer.json`` (JSON: no pickle).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TOKENIZER_FILE = "tokenizer.json"
# pad, end of text, begin/end of image, the three task markers, and the empty condition
SPECIALS = ("<pad>", "<eot>", "<boi>", "<eoi>", "<t2i>", "<i2t>", "<edit>")


def train_text_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Tokenizer:
    """A lower-cased byte-level BPE over ``texts`` with ``SPECIALS`` at ids 0.."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t.lower() for t in texts), trainer=trainer)
    return tok


@dataclass(frozen=True)
class Vocab:
    """Ids of one model's vocabulary: ``text`` text ids (specials first), then ``image``
    codebook entries (code k is id ``text + k``), then, with ``keep``, one ``<keep>`` id
    (``keep_id``): "this output cell is the source's code" (``sequences`` says why). It sits
    right after the codes, so a sampler's slice of image logits ``[text, size)`` holds it
    at index ``image``; the ids before it are the same with or without it."""

    text: int
    image: int
    keep: bool = False

    @property
    def size(self) -> int:
        return self.text + self.image + int(self.keep)

    @property
    def keep_id(self) -> int:
        if not self.keep:
            raise ValueError("this vocabulary has no <keep> token")
        return self.text + self.image

    def special(self, name: str) -> int:
        return SPECIALS.index(name)

    def image_id(self, code: int) -> int:
        return self.text + code

    def is_image(self, token: int) -> bool:
        return self.text <= token < self.text + self.image


class TextCodec:
    """Encode prompts and decode captions with a trained tokenizer."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int) -> None:
        for i, name in enumerate(SPECIALS):
            if tokenizer.token_to_id(name) != i:
                raise ValueError(f"special token {name!r} is not id {i} in this tokenizer")
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    @classmethod
    def load(cls, directory: Path, max_tokens: int) -> TextCodec:
        return cls(Tokenizer.from_file(str(Path(directory) / TOKENIZER_FILE)), max_tokens)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        self.tokenizer.save(str(path))
        return path

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Lower-cased ids, cut to ``max_tokens`` (the contract bounds prompts in characters;
        this bounds what the model sees)."""
        return self.tokenizer.encode(text.lower()).ids[: self.max_tokens]

    def decode(self, ids: Iterable[int]) -> str:
        kept = [i for i in ids if i >= len(SPECIALS)]
        return self.tokenizer.decode(kept).strip()
