"""One registry entry is all a new model service needs beside its package and its .proto.

The test writes a service the way a contributor would, outside Tessera's tree: an ``echo.proto``
compiled with grpc_tools, a deployment module, and one ``ModelService`` entry. With only that
entry added, the application graph, the gateway's handles, its gRPC forwarding, ``/readyz``,
the local stand-ins, both Serve configs and the KubeRay manifest all carry the new service.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from tessera import registry
from tessera.bundle.random_init import build_random_bundle

REPO = Path(__file__).resolve().parents[2]

PROTO = """
syntax = "proto3";
package echo.v1;
service EchoService {
  rpc Say(SayRequest) returns (SayReply);
  rpc SayStream(SayRequest) returns (stream SayReply);
}
message SayRequest { string text = 1; int32 times = 2; }
message SayReply { string text = 1; }
"""

DEPLOYMENT = """
from ray import serve

from echo.v1 import echo_pb2


@serve.deployment
class Echo:
    def __init__(self, bundle_dir: str, device: str | None = None) -> None:
        self.bundle_dir = bundle_dir

    async def ping(self) -> dict:
        return {"ok": True}

    async def Say(self, request):
        return echo_pb2.SayReply(text=request.text * max(1, request.times))

    async def SayStream(self, request):
        for i in range(max(1, request.times)):
            yield echo_pb2.SayReply(text=f"{request.text}{i}")
"""


@pytest.fixture(scope="module")
def echo_package(tmp_path_factory):
    from grpc_tools import protoc

    root = tmp_path_factory.mktemp("echo_src")
    pkg = root / "echo" / "v1"
    pkg.mkdir(parents=True)
    (root / "echo" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "echo.proto").write_text(PROTO)
    (root / "echo" / "deployment.py").write_text(textwrap.dedent(DEPLOYMENT))
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        ["protoc", f"-I{root}", f"-I{include}", f"--python_out={root}"]
        + [f"--grpc_python_out={root}", str(pkg / "echo.proto")]
    )
    assert code == 0
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "echo" or m.startswith("echo.")]:
        del sys.modules[name]


ECHO = registry.ModelService(
    name="echo",
    deployment="echo.deployment:Echo",
    proto="echo",
    proto_package="echo.v1",
    components=(),
    note="Says it back.",
    profiles={
        "local": {"ray_actor_options": {"num_cpus": 0.05}},
        "gpu": {"ray_actor_options": {"num_cpus": 1, "num_gpus": 0.05}},
        "cluster-sim": {"ray_actor_options": {"num_cpus": 0.05}, "num_replicas": 1},
    },
)


@pytest.fixture
def with_echo(echo_package, monkeypatch):
    monkeypatch.setattr(registry, "SERVICES", (*registry.SERVICES, ECHO))
    return ECHO


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    build_random_bundle(out, "tiny", tiny=True, seed=0)
    return out


def test_the_registry_is_consistent():
    assert registry.names() == (
        "tokenizer", "detokenizer", "lm", "prior", "decoder", "pixel", "mixed",
    )  # fmt: skip
    for entry in registry.SERVICES:
        assert entry.grpc_service == f"{entry.service}Service"
        assert entry.contract == f"tessera.v1.{entry.grpc_service}"
        assert set(entry.profiles) == set(registry.PROFILES)
        assert entry.deployment_class().name == entry.service  # contract: this + "Service"
    from tessera.common.checkpoint import COMPONENTS

    assert COMPONENTS == ("tokenizer", "lm", "clip", "prior", "decoder", "pixel", "mixed")


def test_one_entry_adds_a_service_to_the_app_graph(with_echo, tiny_bundle):
    from tessera.app import build_app

    gateway = build_app({"bundle_dir": str(tiny_bundle), "redis_url": "redis://127.0.0.1:1"})
    bound = gateway._bound_deployment
    assert bound.init_kwargs["echo"]._bound_deployment.name == "Echo"
    worker = bound.init_kwargs["job_worker"]._bound_deployment
    assert worker.init_kwargs["echo"]._bound_deployment.name == "Echo"


async def test_one_entry_adds_a_service_to_the_gateway(with_echo, tiny_bundle):
    from tessera.gateway import forwarding
    from tessera.gateway.http import build_http_app
    from tessera.routes.local import local_handles

    handles = local_handles(tiny_bundle, "cpu")
    assert handles.echo is not None  # the local stand-ins come from the registry too

    @forwarding.forward_contracts
    class Service:  # what GatewayService gets, re-applied with the echo entry in place
        def __init__(self) -> None:
            self.handles = handles

    echo_pb2 = importlib.import_module("echo.v1.echo_pb2")
    service = Service()
    reply = await service.Say(echo_pb2.SayRequest(text="ab", times=2), FakeContext())
    assert reply.text == "abab"
    events = [
        e.text
        async for e in service.SayStream(echo_pb2.SayRequest(text="x", times=3), FakeContext())
    ]
    assert events == ["x0", "x1", "x2"]

    from tessera.gateway.deployment import GatewayService

    gateway = GatewayService(tiny_bundle, **dict(handles.items()))
    with TestClient(build_http_app(gateway)) as client:
        ready = client.get("/readyz").json()
    assert ready["services"] == {name: "ok" for name in registry.names()}
    assert "echo" in ready["services"]


def test_one_entry_adds_a_service_to_the_deploy_files(with_echo):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        gen_serve_configs = importlib.import_module("gen_serve_configs")
        gen_kuberay = importlib.import_module("gen_kuberay")
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for profile in registry.PROFILES:
        config = yaml.safe_load(gen_serve_configs.render(profile))
        names = [d["name"] for d in config["applications"][0]["deployments"]]
        assert "Echo" in names
        servicers = config["grpc_options"]["grpc_servicer_functions"]
        assert "tessera.common.grpc_ingress.add_EchoServiceServicer_to_server" in servicers
    spare = gen_kuberay.CLUSTER.group("gpu-worker").spare_cpus
    assert gen_kuberay.worker_cpus() == 7 + 1 + spare  # seven model services + echo


class FakeContext:
    """The two calls grpc_edge makes on a servicer context, and the metadata it reads."""

    def invocation_metadata(self) -> tuple:
        return ()

    def set_code(self, code) -> None:
        raise AssertionError(f"unexpected status {code}")

    def set_details(self, details) -> None:
        pass
