"""deploy/kuberay/rayservice.yaml: valid against KubeRay's RayService CRD (ray.io/v1), its
serveConfigV2 is deploy/serve/gpu.yaml, and it is what scripts/gen_kuberay.py generates."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
RAYSERVICE = REPO / "deploy" / "kuberay" / "rayservice.yaml"
GPU_CONFIG = REPO / "deploy" / "serve" / "gpu.yaml"


def load_generator():
    path = REPO / "scripts" / "gen_kuberay.py"
    spec = importlib.util.spec_from_file_location("gen_kuberay", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rayservice() -> dict:
    docs = [d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d]
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def crd_validator(schemas):
    # The CRD is 1 MB of YAML: libyaml's loader reads it in a second, the Python one in ten.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((schemas / "kuberay-ray.io_rayservices.yaml").read_text(), Loader=loader)
    assert crd["spec"]["names"]["kind"] == "RayService"
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(v1["schema"]["openAPIV3Schema"])


def test_matches_the_rayservice_crd(rayservice, crd_validator):
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    errors = sorted(crd_validator.iter_errors(rayservice), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    # The check has teeth: a wrong type and an unknown enum value are rejected.
    broken = copy.deepcopy(rayservice)
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    assert any(crd_validator.iter_errors(broken))
    broken = copy.deepcopy(rayservice)
    broken["spec"]["rayClusterConfig"]["autoscalerOptions"]["upscalingMode"] = "Eager"
    assert any(crd_validator.iter_errors(broken))


def test_serve_config_is_the_gpu_config(rayservice):
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load(GPU_CONFIG.read_text())
    (app,) = embedded["applications"]
    assert app["import_path"] == "tessera.app:build_app" and app["args"]["device"] == "cuda"
    names = {d["name"] for d in app["deployments"]}
    assert names == {
        "Gateway", "Tokenizer", "Detokenizer", "LanguageModel", "Prior", "Decoder", "PixelModel",
        "MixedModel", "JobWorker",
    }  # fmt: skip
    for deployment in app["deployments"]:
        if deployment["name"] not in ("Gateway", "JobWorker"):
            assert deployment["autoscaling_config"]["max_replicas"] > 1, deployment["name"]
            assert 0 < deployment["ray_actor_options"]["num_gpus"] < 1, deployment["name"]


def test_cluster_shape(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    version = re.search(r'"ray\[serve\]==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert cluster["rayVersion"] == version.group(1)

    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    (head_container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265, 8000, 8080}

    (workers,) = cluster["workerGroupSpecs"]
    assert 1 <= workers["minReplicas"] < workers["maxReplicas"]
    (worker,) = workers["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["requests"] == worker["resources"]["limits"]
    assert worker["image"] == head_container["image"] and worker["image"].endswith("-cuda")

    # One worker pod fits one replica of every model deployment.
    app = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]
    models = [d for d in app["deployments"] if d["ray_actor_options"].get("num_gpus")]
    assert sum(d["ray_actor_options"]["num_gpus"] for d in models) <= 1
    cpus = int(worker["resources"]["limits"]["cpu"])
    assert sum(d["ray_actor_options"]["num_cpus"] for d in models) <= cpus

    for container in (head_container, worker):
        assert container["readinessProbe"] and container["livenessProbe"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for group in (head, workers):
        assert group["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_generated_file_is_not_stale():
    assert RAYSERVICE.read_text() == load_generator().render()
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_kuberay.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_check_mode_fails_on_a_stale_file(tmp_path, monkeypatch):
    generator = load_generator()
    stale = tmp_path / "rayservice.yaml"
    stale.write_text(RAYSERVICE.read_text().replace("maxReplicas: 8", "maxReplicas: 3"))
    monkeypatch.setattr(generator, "OUTPUT", stale)
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0 and generator.main(["--check"]) == 0


def test_the_sim_profile_renders_a_valid_rayservice_too(tmp_path, crd_validator):
    """`gen_kuberay.py --profile cluster-sim`: the tested profile, deployable on KubeRay."""
    generator = load_generator()
    out = tmp_path / "rs.yaml"
    assert generator.main(["--profile", "cluster-sim", "--output", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert not list(crd_validator.iter_errors(doc))
    from tessera.cluster import nodes

    shape = nodes.CLUSTERS["cluster-sim"]
    cluster = doc["spec"]["rayClusterConfig"]
    (spec,) = cluster["workerGroupSpecs"]
    group = shape.group(nodes.GPU_WORKER)
    assert (spec["minReplicas"], spec["maxReplicas"]) == (group.min_workers, group.max_workers)
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == shape.idle_timeout_s
    sim = yaml.safe_load((REPO / "deploy" / "serve" / "cluster-sim.yaml").read_text())
    assert yaml.safe_load(doc["spec"]["serveConfigV2"]) == sim
