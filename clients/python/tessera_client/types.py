"""Typed results of the SDK (pydantic models), the same whichever transport produced them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

__all__ = [  # re-exported by the package
    "Caption",
    "Captions",
    "Embeddings",
    "GeneratedImages",
    "Images",
    "Job",
    "Latent",
    "ModelInfo",
    "Progress",
    "ProgressEvent",
    "TokenGrid",
    "Tokenization",
]

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


def open_png(data: bytes) -> Image.Image:
    """PNG bytes → a loaded PIL image (loaded now, so the buffer can go)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def numbered_paths(out: str | Path, count: int) -> list[Path]:
    """``out.png`` for the first image, then ``out-1.png``, ``out-2.png``, …"""
    out = Path(out)
    suffix = out.suffix or ".png"
    return [out.with_suffix(suffix)] + [
        out.with_name(f"{out.stem}-{i}{suffix}") for i in range(1, count)
    ]


class Images(BaseModel):
    """Images as PNG bytes; ``.images`` opens them as PIL images."""

    model_config = ConfigDict(frozen=True)

    png_bytes: list[bytes] = Field(default_factory=list)

    @property
    def images(self) -> list[Image.Image]:
        return [open_png(b) for b in self.png_bytes]

    def __len__(self) -> int:
        return len(self.png_bytes)

    def save(self, out: str | Path) -> list[Path]:
        """Write the PNGs as ``out.png``, ``out-1.png``, … (parents created); returns the paths."""
        paths = numbered_paths(out, len(self.png_bytes))
        for path, data in zip(paths, self.png_bytes, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return paths


class GeneratedImages(Images):
    """The result of a generation: images plus what the server used to make them."""

    seed: int  # the seed of image 0; image i used seed + i
    route: str
    model: str = ""
    elapsed_ms: float = 0.0


class Progress(BaseModel):
    """Steps done of a stage ("queue", "lm", "prior", "decoder", "detokenizer", "done")."""

    step: int = 0
    total_steps: int = 0
    stage: str = ""

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


class Job(BaseModel):
    """An async generation job. Times are Unix seconds, ``None`` when not reached."""

    id: str
    state: JobState
    priority: str = "normal"
    attempts: int = 0
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result_expires_at: float | None = None
    result: GeneratedImages | None = None
    error: str | None = None
    progress: Progress = Field(default_factory=Progress)
    cancel_requested: bool = False

    @property
    def done(self) -> bool:
        """The job ended (succeeded, failed or cancelled)."""
        return self.state in TERMINAL_STATES


class ProgressEvent(BaseModel):
    """One event of a progress stream (``stream(job_id)`` or ``generate_stream(...)``).

    ``previews`` are PNGs of the partial result (may be empty). On the last event ``done`` is
    true; for a job stream ``job`` then holds the finished job; for ``generate_stream``,
    ``result`` holds the images.
    """

    progress: Progress = Field(default_factory=Progress)
    preview_png_bytes: list[bytes] = Field(default_factory=list)
    job_id: str | None = None
    state: str | None = None
    job: Job | None = None
    result: GeneratedImages | None = None
    done: bool = False

    @property
    def previews(self) -> list[Image.Image]:
        return [open_png(b) for b in self.preview_png_bytes]


class TokenGrid(BaseModel):
    """A grid of codebook indices, row-major (``tokens`` has ``height * width`` entries)."""

    tokens: list[int]
    height: int
    width: int

    def rows(self) -> list[list[int]]:
        return [self.tokens[r * self.width : (r + 1) * self.width] for r in range(self.height)]


class Latent(BaseModel):
    """A dense float tensor (quantized latents ``[channels, height, width]``), row-major."""

    values: list[float]
    shape: list[int]


class Tokenization(BaseModel):
    """The result of ``tokenize``: one grid per image (and latents when asked for). A
    continuous tokenizer (``kind`` "kl") has no grids: its latents are its answer."""

    grids: list[TokenGrid]
    codebook_size: int
    latents: list[Latent] = Field(default_factory=list)
    kind: str = "vq"  # "vq", "gumbel" or "kl"


class Embeddings(BaseModel):
    """L2-normalised CLIP embeddings, one per input text or image."""

    vectors: list[list[float]]
    dim: int

    def __len__(self) -> int:
        return len(self.vectors)


class ModelInfo(BaseModel):
    """A served model (bundle): its id, routes, native image size in pixels and whether it
    edits and captions images (a mixed-modal model)."""

    id: str
    routes: list[str]
    image_size: int
    edits: bool = False


class Caption(BaseModel):
    """One caption and its score: the sum of its tokens' log-probabilities (higher: likelier)."""

    text: str
    score: float


class Captions(BaseModel):
    """Captions of one image, best first."""

    captions: list[Caption]
    model: str = ""
    elapsed_ms: float = 0.0

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.captions]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> Caption:
        return self.captions[i]
