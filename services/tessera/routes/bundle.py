"""``BundleInfo``: what the routes need to know about the served bundle, read from its
configs without loading any weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tessera.common.checkpoint import read_bundle_index, read_config, reranks_ar
from tessera.common.errors import ModelNotReady


@dataclass(frozen=True)
class BundleInfo:
    """What the gateway needs to know about the served bundle, read without loading weights."""

    name: str
    image_size: int
    routes: tuple[str, ...]
    max_steps: int | None = None  # the decoder's most diffusion steps (its num_train_timesteps)
    quantize_latents: bool = True  # snap decoder latents to the codebook before decoding
    family: str = "tessera"  # an imported bundle's family (e.g. "kandinsky22")
    pixel_size: int | None = None  # the pixel route's native side (its model's image_size)
    tokenizer_kind: str = "vq"  # vq | gumbel (discrete) | kl (continuous: no ar route)
    edits: bool = False  # a mixed-modal model: edits, captions and the mixed route
    # ar reranking runs in the Detokenizer from the LM's MiniLM states: both the CLIP and the
    # LM must be Tessera's own (an imported CLIP or LM has no MiniLM states to hand on)
    ar_rerank: bool = False

    def native_size(self, route: str) -> int:
        """A route's native output side: the pixel model's own, else the tokenizer's."""
        return self.pixel_size if route == "pixel" and self.pixel_size else self.image_size

    @classmethod
    def read(cls, bundle_dir: str | Path) -> BundleInfo:
        bundle_dir = Path(bundle_dir)
        index = read_bundle_index(bundle_dir)
        tok = read_config(bundle_dir / "tokenizer")
        comps = index["components"]
        kind = tok.get("kind", "vq")
        if kind == "kl" and "lm" in comps:
            raise ModelNotReady(
                f"bundle {bundle_dir} pairs an ar LM with a continuous (kl) tokenizer: the LM "
                "needs token ids (vq or gumbel); drop the lm component or use a discrete tokenizer"
            )
        routes = tuple(
            r
            for r, needs in (
                ("ar", ("lm",)),
                ("unclip", ("clip", "prior", "decoder")),
                ("pixel", ("pixel",)),
                ("mixed", ("mixed",)),
            )
            if all(c in comps for c in needs)
        )
        name = index.get("name", bundle_dir.name)
        max_steps = None
        if "decoder" in comps:
            max_steps = int(read_config(bundle_dir / "decoder")["num_train_timesteps"])
        pixel_size = None
        if "pixel" in comps:
            pixel_size = int(read_config(bundle_dir / "pixel")["image_size"])
        return cls(
            name,
            tok["image_size"],
            routes,
            max_steps=max_steps,
            quantize_latents=bool(tok.get("quantize_latents", kind != "kl")),
            family=index.get("family", "tessera"),
            pixel_size=pixel_size,
            tokenizer_kind=kind,
            edits="mixed" in comps,
            ar_rerank=reranks_ar(bundle_dir),
        )
