"""The gateway serves every model service's contract on its own port by forwarding.

``@forward_contracts`` adds one method per RPC of every registered model service to the
Gateway class, read off the service's protobuf descriptor: a unary RPC awaits the model
deployment's handle, a server-streaming one re-yields its stream. Ray's gRPC proxy calls a
replica method by the RPC's name, so a new contract is served as soon as its service is in
:mod:`tessera.registry`, with no hand-written method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from tessera import registry
from tessera.common.serving import call, grpc_edge, returns


def _message_class(descriptor: Any) -> type:
    """The generated Python class of a protobuf message descriptor."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def _unary(service: str, rpc: str, response_type: type) -> Callable:
    async def forward(self: Any, request: Any, grpc_context: Any = None) -> Any:
        return await call(getattr(self.handles.require(service), rpc), request)

    return returns(response_type)(forward)


def _streaming(service: str, rpc: str) -> Callable:
    async def forward(self: Any, request: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        handle = self.handles.require(service).options(stream=True)
        async for event in getattr(handle, rpc).remote(request):
            yield event

    return forward


def forwarders() -> dict[str, Callable]:
    """Method name → forwarding method, for every RPC of every registered model service."""
    methods: dict[str, Callable] = {}
    for entry in registry.SERVICES:
        for rpc in entry.service_descriptor().methods:
            if rpc.name in methods:
                raise ValueError(f"two contracts define {rpc.name}: gRPC names must be unique")
            if rpc.server_streaming:
                method = _streaming(entry.name, rpc.name)
            else:
                method = _unary(entry.name, rpc.name, _message_class(rpc.output_type))
            method.__name__ = method.__qualname__ = rpc.name
            method.__doc__ = f"Forwards {entry.contract}/{rpc.name} to {entry.service}."
            methods[rpc.name] = grpc_edge(method)
    return methods


def forward_contracts(cls: type) -> type:
    """Class decorator: give ``cls`` (which has ``self.handles``) every forwarding method."""
    for name, method in forwarders().items():
        if name in cls.__dict__:
            raise ValueError(f"{cls.__name__}.{name} would shadow a forwarded RPC")
        method.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, method)
    return cls
