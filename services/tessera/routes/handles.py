"""``ModelHandles``: one handle per model service of the registry, by name.

A handle is a Ray Serve ``DeploymentHandle`` or an in-process stand-in
(:class:`tessera.routes.local.LocalHandle`); route code calls ``handles.lm.SampleTokens``
either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tessera import registry
from tessera.common.errors import NotFound
from tessera.common.serving import with_handle_transport


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
