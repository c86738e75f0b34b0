"""``observed(route, ingress)``: count and time one public request, on either ingress."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from tessera.common import metrics
from tessera.common.errors import http_status
from tessera.common.serving import unwrap_error

# Label values of the public routes; anything else a client sends is counted as "other", so
# a client cannot mint label values.
METRIC_ROUTES = frozenset(
    (
        "ar",
        "unclip",
        "pixel",
        "mixed",
        "variations",
        "edit",
        "caption",
        "tokenize",
        "detokenize",
        "embed_text",
        "embed_image",
    )
)


@contextlib.asynccontextmanager
async def observed(route: str, ingress: str) -> AsyncIterator[None]:
    """Count and time one public request by route, status and ingress."""
    if route not in METRIC_ROUTES:
        route = metrics.OTHER
    start = time.perf_counter()
    status = "200"
    try:
        yield
    except BaseException as e:
        status = (
            "499" if isinstance(e, asyncio.CancelledError) else str(http_status(unwrap_error(e)))
        )
        raise
    finally:
        metrics.record_request(route, status, ingress, time.perf_counter() - start)
