"""The deployment graph and the Serve configs, without starting Ray."""

from pathlib import Path

import pytest
import yaml

from tessera import runtime
from tessera.app import AppArgs, build_app, resolve_bundle_dir

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = {"Gateway", "Tokenizer", "Detokenizer", "LanguageModel", "Prior", "Decoder"}


@pytest.mark.parametrize("profile", ["local.yaml", "gpu.yaml"])
def test_serve_configs_cover_every_deployment(profile):
    config = runtime.read_serve_config(REPO / "deploy" / "serve" / profile)
    app = config["applications"][0]
    assert app["import_path"] == "tessera.app:build_app"
    names = {d["name"] for d in app["deployments"]}
    assert DEPLOYMENTS <= names
    AppArgs.model_validate(app["args"])  # the config's args are what build_app accepts
    for d in app["deployments"]:
        if d["name"] in DEPLOYMENTS - {"Gateway"}:
            assert "autoscaling_config" in d, d["name"]
            opts = d["ray_actor_options"]
            if profile == "gpu.yaml":
                assert 0 < opts["num_gpus"] <= 1
            else:
                assert 0 < opts["num_cpus"] < 1 and "num_gpus" not in opts


@pytest.mark.parametrize("profile", ["local.yaml", "gpu.yaml", "cluster-sim.yaml"])
def test_serve_configs_are_valid_for_serve_and_bound_request_time(profile):
    from ray.serve.schema import ServeDeploySchema

    raw = runtime.read_serve_config(REPO / "deploy" / "serve" / profile)
    schema = ServeDeploySchema.model_validate(raw)  # what `serve deploy` and KubeRay check
    assert 0 < schema.http_options.request_timeout_s <= 600
    assert 0 < schema.grpc_options.request_timeout_s <= 600
    stack = runtime.StackConfig(serve_config=Path(profile), http_port=18000, grpc_port=19000)
    http, grpc = runtime.proxy_options(raw, stack)
    assert (http.port, grpc.port) == (18000, 19000)
    assert http.request_timeout_s == schema.http_options.request_timeout_s
    assert grpc.request_timeout_s == schema.grpc_options.request_timeout_s
    assert grpc.grpc_servicer_functions == schema.grpc_options.grpc_servicer_functions


def test_local_profile_fits_two_cores():
    config = runtime.read_serve_config(REPO / "deploy" / "serve" / "local.yaml")
    deployments = config["applications"][0]["deployments"]
    total = sum(
        d["ray_actor_options"]["num_cpus"]
        * d.get("autoscaling_config", {}).get("min_replicas", d.get("num_replicas", 1))
        for d in deployments
    )
    assert total <= 2


def test_build_app_applies_config_overrides(tmp_path):
    config = runtime.read_serve_config(REPO / "deploy" / "serve" / "local.yaml")
    options = runtime.deployment_options(config["applications"][0], quiet=True)
    app = build_app({"bundle_dir": str(tmp_path)}, options)
    gateway = app._bound_deployment  # the ingress
    assert gateway.name == "Gateway"
    lm = gateway.init_kwargs["lm"]._bound_deployment
    assert lm.ray_actor_options["num_cpus"] == 0.3
    assert lm._deployment_config.graceful_shutdown_timeout_s == 0


def test_job_queue_args_reach_the_gateway_and_the_workers(tmp_path):
    args = {"bundle_dir": str(tmp_path), "redis_url": "redis://127.0.0.1:1"}
    app = build_app({**args, "job_queue": {"run_timeout_s": 900}})
    gateway = app._bound_deployment
    worker = gateway.init_kwargs["job_worker"]._bound_deployment
    assert gateway.init_kwargs["queue_config"] == {"run_timeout_s": 900}
    assert worker.init_kwargs["queue_config"] == {"run_timeout_s": 900}
    for bad in ({"run_timeout_s": 0}, {"run_timout_s": 900}):
        with pytest.raises(Exception, match="run_timeout_s|run_timout_s"):
            build_app({**args, "job_queue": bad})


def test_build_app_rejects_unknown_args():
    with pytest.raises(Exception, match="extra"):
        build_app({"bundel": "typo"})


def test_bundle_dir_resolution(tmp_path):
    assert resolve_bundle_dir(AppArgs(bundle_dir=str(tmp_path))) == tmp_path.resolve()
    assert resolve_bundle_dir(AppArgs(bundle="x")).name == "x"
    assert yaml.safe_load("a: 1") == {"a": 1}


@pytest.mark.parametrize("device", [None, "auto"])
def test_device_auto_is_picked_per_replica(tmp_path, device):
    """cluster-sim's `device: auto` (or none): each replica picks CUDA if it sees one, else
    the CPU (a simulated cluster's fake GPUs have no CUDA device behind them)."""
    import torch

    from tessera.common.device import pick_device

    app = build_app({"bundle_dir": str(tmp_path), "device": device})
    detokenizer = app._bound_deployment.init_kwargs["detokenizer"]._bound_deployment
    assert detokenizer.init_args[1] is None  # no device forced by the profile
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device(None).type == expected
