"""Every bound a request can hit, stated once.

The public API (``gateway/schemas.py``), each model service's own contract checks
(``*/deployment.py``) and the protos' comments all read these numbers; the SDK keeps a copy of
the public ones (``tessera_client/_limits.py``, it cannot import the server) and
``tests/unit/clients/test_limits.py`` checks the two agree.

Two layers, on purpose: the public API is tighter (``MAX_IMAGES_PER_REQUEST``, ``MAX_STEPS``)
than a model service's contract (``MAX_SERVICE_STEPS``), because the gateway's routes fan one
public request out into several service calls (candidates, chunks) and a direct gRPC call to a
model service is still bounded by the looser contract limit.
"""

from __future__ import annotations

import struct

# -- public API (HTTP + gRPC Generation) ---------------------------------------------------
MAX_PROMPT_CHARS = 500  # every text a request carries: prompts, EmbedText texts
MAX_IMAGES_PER_REQUEST = 4  # n
MAX_STEPS = 250  # diffusion steps (unclip, variations)
MAX_GUIDANCE = 20.0  # classifier-free guidance scale, [0, MAX_GUIDANCE] everywhere
MAX_TEMPERATURE = 2.0  # [MIN_TEMPERATURE, MAX_TEMPERATURE]
# Floors, not "> 0": the wire type is float32, where a tiny positive double (1e-311) is 0.0,
# and logits / a denormal temperature overflow. Below these, sampling is greedy in all but name.
MIN_TEMPERATURE = 0.01
MIN_TOP_P = 1e-6  # nucleus mass, [MIN_TOP_P, 1]
MAX_TOP_K = 65536  # 0 = off; a model service also caps it at its vocabulary
MAX_CANDIDATES = 8  # ar reranking: candidates sampled per returned image
MAX_PIXEL_TOP_K = 256  # pixel route: top_k over the 256 intensities of a sub-pixel
MAX_SEED = 2**63 - 1  # seeds are int64 on the wire
MAX_OUTPUT_SIDE = 1024  # output sizes: the native size and integer upscales of it, at most
MAX_MODEL_NAME_CHARS = 64
MAX_ROUTE_CHARS = 32
MAX_CAPTIONS = 8  # captions per image-to-text request (n)

# -- images in ------------------------------------------------------------------------------
MAX_IMAGE_BYTES = 4 * 1024 * 1024  # one uploaded PNG / JPEG
MAX_IMAGE_SIDE = 1024
# An edit job's source image and mask are stored with the job in Redis until it ends: each
# at most this, so the queue's memory stays bounded (max_depth x 2 images). A native-size PNG
# is far smaller: 64x64 RGBA noise is 16 KiB, 256x256 RGBA noise 257 KiB.
MAX_JOB_IMAGE_BYTES = 512 * 1024
# An image inside a JSON body: base64 of at most MAX_IMAGE_BYTES, optionally after a short
# `data:...;base64,` prefix.
MAX_DATA_URL_PREFIX_CHARS = 128
MAX_IMAGE_B64_CHARS = 4 * -(-MAX_IMAGE_BYTES // 3) + MAX_DATA_URL_PREFIX_CHARS

# -- model-service contracts (per call) ----------------------------------------------------
MAX_LM_IMAGES_PER_CALL = 8  # SampleTokens: n or len(seeds)
MAX_PIXEL_IMAGES_PER_CALL = 8  # SamplePixels: n
MAX_MIXED_IMAGES_PER_CALL = 8  # GenerateGrids / EditGrids: n
MAX_ITEMS_PER_CALL = 16  # Tokenize / Detokenize images or grids, EmbedImage images
MAX_TEXTS_PER_CALL = 64  # EmbedText texts
MAX_SAMPLES_PER_CALL = 8  # SamplePrior n, SampleLatents image_embeddings
MAX_SERVICE_STEPS = 1000  # SamplePrior / SampleLatents steps
MAX_GRID_SIDE = 64  # token grid height / width
MAX_CODEBOOK_SIZE = 65536  # token ids are below the bundle's codebook size, at most this
MAX_LATENT_VALUES = 65536  # values of one latent tensor [channels, height, width]
# -- the wire's number types ----------------------------------------------------------------
INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38  # a larger JSON number would become inf in a float field


def as_float32(value: float) -> float:
    """``value`` as a float32 field carries it: a service compares a wire value against the
    float32 of a bound (0.01 sent over gRPC arrives as 0.0099999998)."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


# The floors as a float32 wire field carries them: what the services compare against.
MIN_WIRE_TEMPERATURE = as_float32(MIN_TEMPERATURE)
MIN_WIRE_TOP_P = as_float32(MIN_TOP_P)
