"""The servicer functions Serve's gRPC proxy registers, with payloads that do not parse
answered INVALID_ARGUMENT instead of UNKNOWN.

grpcio deserializes a request before any handler runs. A payload that is not the method's
message (truncated, a length running past the end, invalid UTF-8 in a string field, garbage)
makes the generated ``FromString`` raise, and grpcio answers UNKNOWN ("Unexpected
DecodeError") from the proxy, before Tessera sees the call. The Serve configs therefore name
the functions of this module (``registry.servicer_functions``): each is the generated
``add_<Service>Servicer_to_server`` registering the same handlers, with a deserializer that
turns such a payload into a :class:`MalformedRequest`. The proxy hands that on like any
request; ``grpc_edge`` (every public method) answers it with INVALID_ARGUMENT.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# add_<Service>Servicer_to_server -> the module of the generated function
_GENERATED = {
    "add_HealthServicer_to_server": "grpc_health.v1.health_pb2_grpc",
}


@dataclass(frozen=True)
class MalformedRequest:
    """A payload that is not a valid ``method``'s request message."""

    method: str
    error: str

    def describe(self) -> str:
        return f"the request is not a valid {self.method} message ({self.error})"


def tolerant(deserializer: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    """``deserializer``, returning a MalformedRequest instead of raising."""

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:  # noqa: BLE001 - DecodeError, or anything a parser raises
            return MalformedRequest(method, f"{type(e).__name__}: {str(e)[:160]}")

    return parse


def _tolerant_handlers(service: str, handlers: dict) -> dict:
    return {
        name: h._replace(request_deserializer=tolerant(h.request_deserializer, name))
        if h.request_deserializer is not None and not _is_tolerant(h.request_deserializer)
        else h
        for name, h in handlers.items()
    }


def _is_tolerant(fn: Callable) -> bool:
    return getattr(fn, "__qualname__", "").startswith("tolerant.")


class _TolerantServer:
    """The server a generated ``add_*Servicer_to_server`` registers with: every handler it
    adds gets a tolerant deserializer, then goes to the real server."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        for handler in generic_handlers:
            handlers = getattr(handler, "_method_handlers", None)
            if isinstance(handlers, dict):
                name = handler.service_name() if hasattr(handler, "service_name") else ""
                handler._method_handlers = _tolerant_handlers(name, handlers)
        self._server.add_generic_rpc_handlers(generic_handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        add = getattr(self._server, "add_registered_method_handlers", None)
        if add is not None:
            add(service, _tolerant_handlers(service, handlers))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def _generated_module(name: str) -> str:
    if name in _GENERATED:
        return _GENERATED[name]
    from tessera import registry

    for path in registry.generated_servicer_functions():
        module, _, function = path.rpartition(".")
        if function == name:
            return module
    raise AttributeError(name)


def __getattr__(name: str) -> Callable[[Any, Any], None]:
    """``add_<Service>Servicer_to_server`` for every servicer the registry lists."""
    if not (name.startswith("add_") and name.endswith("Servicer_to_server")):
        raise AttributeError(name)
    generated = getattr(importlib.import_module(_generated_module(name)), name)

    def add(servicer: Any, server: Any) -> None:
        generated(servicer, _TolerantServer(server))

    add.__name__ = add.__qualname__ = name
    return add
