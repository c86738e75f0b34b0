"""The public request bounds the SDK states (CLI help, option docs).

A copy, on purpose: these are the public ones of the server's ``tessera/common/limits.py``,
the single source of every bound, which this package cannot import (``tessera-client`` is
installed on its own, without the server). Only the bounds the SDK uses are copied;
``tests/unit/clients/test_limits.py`` checks each equals the server's. The server enforces
them; the SDK only tells users.
"""

from __future__ import annotations

MAX_PROMPT_CHARS = 500  # every text a request carries: prompts, EmbedText texts
MAX_IMAGES_PER_REQUEST = 4  # n
MAX_STEPS = 250  # diffusion steps (unclip, variations)
MAX_GUIDANCE = 20.0  # classifier-free guidance scale, [0, MAX_GUIDANCE]
MAX_TEMPERATURE = 2.0  # [MIN_TEMPERATURE, MAX_TEMPERATURE]
MIN_TEMPERATURE = 0.01
MIN_TOP_P = 1e-6  # nucleus mass, [MIN_TOP_P, 1]
MAX_TOP_K = 65536  # 0 = off; a model service also caps it at its vocabulary
MAX_CANDIDATES = 8  # ar reranking: candidates sampled per returned image
MAX_PIXEL_TOP_K = 256  # pixel route: top_k over the 256 intensities of a sub-pixel
MAX_CAPTIONS = 8  # captions per image-to-text request (n)
