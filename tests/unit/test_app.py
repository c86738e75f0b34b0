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


def test_build_app_rejects_unknown_args():
    with pytest.raises(Exception, match="extra"):
        build_app({"bundel": "typo"})


def test_bundle_dir_resolution(tmp_path):
    assert resolve_bundle_dir(AppArgs(bundle_dir=str(tmp_path))) == tmp_path.resolve()
    assert resolve_bundle_dir(AppArgs(bundle="x")).name == "x"
    assert yaml.safe_load("a: 1") == {"a": 1}
