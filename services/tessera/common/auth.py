"""The API key check, shared by the HTTP middleware and the gRPC edge.

With ``TESSERA_API_KEY`` unset (the localhost default) every call is let through. With it
set, a public call must carry ``authorization: Bearer <key>`` (an HTTP header, or gRPC
metadata); health, readiness, the API docs and the playground page (its HTML and static
files, not the API it calls) stay open so probes and people can see them.
Calls between deployments go through handles, inside the cluster, and are not checked.
"""

from __future__ import annotations

import hmac
from typing import Any

from tessera.common.errors import Unauthenticated
from tessera.common.settings import get_settings

# HTTP path prefixes served without a key: probes (/healthz, /readyz) and the OpenAPI docs.
OPEN_HTTP_PATHS = ("/healthz", "/readyz", "/docs", "/openapi.json")
# The playground (tessera.gateway.playground): its page at exactly these paths, and its static
# files under the prefix. Exact matches on purpose: "/" as a prefix would open every path.
OPEN_HTTP_PAGES = ("", "/", "/playground", "/playground/")
OPEN_HTTP_STATIC = "/playground/static/"


def is_open_http_path(path: str) -> bool:
    """Whether the app-relative HTTP ``path`` is served without an API key."""
    return path in OPEN_HTTP_PAGES or path.startswith((*OPEN_HTTP_PATHS, OPEN_HTTP_STATIC))


def check_api_key(authorization: str | None) -> None:
    """Raise ``Unauthenticated`` unless no key is configured or ``authorization`` is
    ``Bearer <the key>`` (compared in constant time)."""
    key = get_settings().api_key
    if key is None:
        return
    sent = (authorization or "").strip()
    if sent[:7].lower() == "bearer ":
        sent = sent[7:].strip()
    if not hmac.compare_digest(sent.encode(), key.get_secret_value().encode()):
        raise Unauthenticated("missing or wrong API key")


def grpc_authorization(context: Any) -> str | None:
    """The ``authorization`` metadata of a gRPC call (keys arrive lower-cased)."""
    for name, value in context.invocation_metadata() or ():
        if name == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None
