"""The API key end to end: a second Gateway, whose replica has TESSERA_API_KEY set, joins the
session's Serve instance under /keyed over the session's model deployments, and is called
through Ray's real HTTP and gRPC proxies (the fallback proxy when the session's Gateway
binds the public ports itself)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import httpx
import pytest
from ray import serve

from tessera.v1 import generation_pb2, generation_pb2_grpc

pytestmark = pytest.mark.integration

KEY = "integration-test-key"
APP = "keyed"
MODELS = {
    "tokenizer": "Tokenizer",
    "detokenizer": "Detokenizer",
    "lm": "LanguageModel",
    "prior": "Prior",
    "decoder": "Decoder",
}
# What tessera.runtime.start put in the environment for every replica (with Serve's
# RAY_SERVE_* settings, direct ingress among them), plus the key.
INHERITED = ("PYTHONPATH", "RAY_AUTH_MODE")


@pytest.fixture(scope="module")
def keyed(stack: dict) -> Iterator[dict]:
    from tessera.gateway.deployment import Gateway

    handles = {arg: serve.get_deployment_handle(name, "tessera") for arg, name in MODELS.items()}
    env = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith("RAY_SERVE_")}
    options = {"num_cpus": 0, "runtime_env": {"env_vars": {**env, "TESSERA_API_KEY": KEY}}}
    app = Gateway.options(name="KeyedGateway", ray_actor_options=options).bind(
        **handles, bundle_dir=str(stack["bundle_dir"])
    )
    serve.run(app, name=APP, route_prefix=f"/{APP}")
    try:
        yield {"http": f"{stack['apps_http']}/{APP}", "grpc": stack["apps_grpc"]}
    finally:
        serve.delete(APP)


def test_http_needs_the_key_except_on_probes(keyed):
    with httpx.Client(base_url=keyed["http"], timeout=120) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = http.get("/v1/models", headers=headers)
            assert r.status_code == 401, r.text
            assert r.json()["error"]["code"] == "unauthenticated"
        assert http.get("/healthz").status_code == 200  # open, under the route prefix too
        ok = http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["data"]
        r = http.post(
            "/v1/images/generations",
            json={"prompt": "a red heart", "route": "ar", "seed": 1},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 1


def test_grpc_needs_the_key(keyed):
    app = (("application", APP),)  # two applications now: Serve routes gRPC by this key
    good = app + (("authorization", f"Bearer {KEY}"),)
    with grpc.insecure_channel(keyed["grpc"]) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        for metadata in (app, app + (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListModels(generation_pb2.ListModelsRequest(), metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                request = generation_pb2.GenerateStreamRequest(
                    request=generation_pb2.GenerateRequest(prompt="a red heart", route="ar")
                )
                list(stub.GenerateStream(request, metadata=metadata))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.ListModels(generation_pb2.ListModelsRequest(), metadata=good).models
        request = generation_pb2.GenerateStreamRequest(
            request=generation_pb2.GenerateRequest(prompt="a red heart", route="ar", seed=2)
        )
        events = list(stub.GenerateStream(request, metadata=good))
        assert events[-1].result.images[0].png.startswith(b"\x89PNG")
