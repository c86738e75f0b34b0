"""``ModelHandles``: one handle per model service of the registry, by name.

A handle is a Ray Serve ``DeploymentHandle`` or an in-process stand-in
(:class:`tessera.routes.local.LocalHandle`); route code calls ``handles.lm.SampleTokens``
either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from tessera import registry
from tessera.common.errors import NotFound

# Set on every Ray node when handle calls go over gRPC (``cluster.nodes.HANDLE_ENV``, decision
# 0002; ``runtime.start`` states 0 for ``--handle-transport default``).
GRPC_HANDLES_ENV = "RAY_SERVE_USE_GRPC_BY_DEFAULT"


def with_handle_transport(handle: Any) -> Any:
    """``handle`` set to the transport this process was started with: gRPC when
    ``RAY_SERVE_USE_GRPC_BY_DEFAULT`` is 1, else Ray's object transport.

    Serve builds the handles it injects into constructors in the driver, and a handle keeps
    the transport that process read when it first imported Ray Serve, usually before
    ``runtime.start`` set the variable: so without this the gateway's calls took Ray's
    object transport whatever the setting. In-process stand-ins pass through unchanged."""
    options = getattr(handle, "handle_options", None)
    if not hasattr(options, "_by_reference"):
        return handle  # None (a service left out) or an in-process stand-in
    by_reference = os.environ.get(GRPC_HANDLES_ENV, "0") != "1"
    if options._by_reference == by_reference:
        return handle
    return handle.options(_by_reference=by_reference)


class ModelHandles:
    """Handles by registry name (``handles.lm``, ``handles["lm"]``); a service left out is
    None (the job worker needs no tokenizer)."""

    def __init__(self, **handles: Any) -> None:
        unknown = set(handles) - set(registry.names())
        if unknown:
            raise TypeError(
                f"unknown model services {sorted(unknown)}; known: {', '.join(registry.names())}"
            )
        self._handles = {
            name: with_handle_transport(handles.get(name)) for name in registry.names()
        }

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_handles"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._handles[name]

    def require(self, name: str) -> Any:
        """The handle of service ``name``, or NotFound when the served bundle has none."""
        handle = self[name]
        if handle is None:
            raise NotFound(f"the served model has no {name!r} service")
        return handle

    def replace(self, **overrides: Any) -> ModelHandles:
        """A copy with some handles swapped (tests wrap one service this way)."""
        return ModelHandles(**{**self._handles, **overrides})

    def items(self) -> Iterator[tuple[str, Any]]:
        """(name, handle) of every service that has a handle, in registry order."""
        return ((n, h) for n, h in self._handles.items() if h is not None)
