"""The local stack's Ray processes, as `tessera serve` and `make demo` start them."""

from __future__ import annotations

import os

import psutil

from benchmarks.overhead import stage_of


def test_replicas_run_at_normal_priority_not_rays_nice_15(stack):
    """Ray starts workers at nice 15 unless told otherwise; every model replica and the
    Gateway here run at the driver's own niceness (nodes.NODE_ENV's RAY_worker_niceness)."""
    me = psutil.Process(os.getpid())
    replicas = {}
    for proc in me.children(recursive=True):
        title = (proc.cmdline() or [""])[0]
        if title.startswith("ray::ServeReplica:"):
            replicas[stage_of(proc)] = proc.nice()
    assert {"Gateway", "LanguageModel", "Detokenizer"} <= set(replicas), replicas
    assert set(replicas.values()) == {me.nice()}, replicas


def test_handles_take_the_grpc_transport_the_stack_was_started_with(stack, monkeypatch):
    """Serve's handles keep the transport their process read when it imported Ray Serve
    (before `runtime.start` chose gRPC); ModelHandles re-chooses it from the environment the
    stack set, and a call over it answers."""
    import asyncio

    from ray import serve

    from tessera.routes.handles import GRPC_HANDLES_ENV, ModelHandles, with_handle_transport
    from tessera.v1 import prior_pb2

    assert os.environ.get(GRPC_HANDLES_ENV) == "1"  # runtime.start's default (decision 0002)
    handle = serve.get_deployment_handle("Prior", app_name="tessera")
    grpc = ModelHandles(prior=handle).prior
    assert grpc.handle_options._by_reference is False

    async def embed() -> prior_pb2.EmbedTextResponse:
        return await grpc.EmbedText.remote(prior_pb2.EmbedTextRequest(texts=["a red heart"]))

    reply = asyncio.run(embed())
    assert len(reply.embeddings) == 1 and reply.embeddings[0].dim > 0

    monkeypatch.setenv(GRPC_HANDLES_ENV, "0")  # `--handle-transport default`
    assert with_handle_transport(grpc).handle_options._by_reference is True
    local = object()  # an in-process stand-in has no handle options: left as it is
    assert with_handle_transport(local) is local and with_handle_transport(None) is None
