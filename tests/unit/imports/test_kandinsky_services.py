"""The Kandinsky adapters inside the deployments, called through their contracts: the MoVQ
behind Tokenizer / Detokenizer, the CLIP towers behind EmbedText / EmbedImage, and
cancellation in the step-level engines."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.common.protos import tensor_to_proto
from tessera.v1 import prior_pb2, tokenizer_pb2


@pytest.fixture(scope="module")
def handles(kandinsky_bundle: Path):
    from tessera.routes.local import local_handles

    return local_handles(kandinsky_bundle, "cpu")


def _png(side: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_only_the_services_the_bundle_has(handles) -> None:
    assert handles.lm is None
    assert {name for name, _ in handles.items()} == {
        "tokenizer", "detokenizer", "prior", "decoder"
    }  # fmt: skip


def test_movq_tokenizes_and_decodes_as_diffusers(handles, kandinsky_src: Path) -> None:
    from diffusers import VQModel

    tok = asyncio.run(
        handles.tokenizer.Tokenize.remote(
            tokenizer_pb2.TokenizeRequest(images=[_png()], return_latents=True)
        )
    )
    grid = tok.grids[0]
    assert (grid.height, grid.width, tok.codebook_size) == (32, 32, 12)
    assert max(grid.tokens) < 12
    out = asyncio.run(
        handles.detokenizer.Detokenize.remote(tokenizer_pb2.DetokenizeRequest(grids=[grid]))
    )
    assert (out.images[0].width, out.images[0].height) == (64, 64)

    movq = VQModel.from_pretrained(str(kandinsky_src / "decoder" / "movq")).eval()
    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = (movq.decode(z, force_not_quantize=True).sample * 0.5 + 0.5).clamp(0, 1)
    got = asyncio.run(
        handles.detokenizer.Detokenize.remote(
            tokenizer_pb2.DetokenizeRequest(latents=[tensor_to_proto(z[0])], quantize=False)
        )
    )
    img = np.asarray(Image.open(io.BytesIO(got.images[0].png)).convert("RGB")) / 255
    assert np.abs(img - ref[0].permute(1, 2, 0).numpy()).max() <= 1.01 / 255


def test_clip_embeddings_are_normalised(handles) -> None:
    text = asyncio.run(
        handles.prior.EmbedText.remote(
            prior_pb2.EmbedTextRequest(texts=["a cat", "a dog"], return_states=True)
        )
    )
    image = asyncio.run(
        handles.prior.EmbedImage.remote(prior_pb2.EmbedImageRequest(images=[_png()]))
    )
    for e in [*text.embeddings, *image.embeddings]:
        assert e.dim == 32 and np.linalg.norm(e.values) == pytest.approx(1, abs=1e-5)
    assert not text.text_states  # no MiniLM states: the Kandinsky decoder reads no text


def test_cancelled_requests_leave_the_engines(handles) -> None:
    """A cancelled future is dropped at the next step; the engine serves on."""
    prior = handles.prior._instance
    decoder = handles.decoder._instance
    before = (prior.engine.calls, decoder.engine.calls)
    cond = prior.clip.condition(["a cat"])
    future = prior.engine.submit(cond, seeds=[1], steps=500)
    future.cancel()
    from tessera.decoder.kandinsky import no_text

    emb = torch.randn(1, 32)
    dfuture = decoder.engine.submit(emb, no_text(), seeds=[1], steps=500)
    dfuture.cancel()
    deadline = time.monotonic() + 60
    while prior.engine.running or decoder.engine.running or prior.engine.waiting:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert prior.engine.calls - before[0] < 500 and decoder.engine.calls - before[1] < 500
    done = prior.engine.submit(cond, seeds=[2], steps=2).result(timeout=60)
    assert done.shape == (1, 32)
