"""The node groups are declared once (tessera.cluster.nodes) and both generated cluster
descriptions read that declaration: the KubeRay RayService and the simulated cluster's
autoscaling config."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import yaml

from tessera.cluster import nodes

REPO = Path(__file__).resolve().parents[3]


def gen_kuberay():
    spec = importlib.util.spec_from_file_location("gen_kuberay", REPO / "scripts/gen_kuberay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_config(profile: str) -> dict:
    return yaml.safe_load((REPO / "deploy" / "serve" / f"{profile}.yaml").read_text())


def test_both_profiles_have_the_same_groups():
    assert set(nodes.CLUSTERS) == {"gpu", "cluster-sim"}
    names = {p: [g.name for g in shape.groups] for p, shape in nodes.CLUSTERS.items()}
    assert names["gpu"] == names["cluster-sim"] == [nodes.GPU_WORKER]
    for shape in nodes.CLUSTERS.values():
        for group in shape.groups:
            assert 0 <= group.min_workers < group.max_workers and group.gpus >= 1
            assert group.name.replace("-", "").isalnum() and group.name.islower()  # DNS-1123


def test_kuberay_worker_groups_and_autoscaler_come_from_the_declaration():
    shape = nodes.CLUSTERS["gpu"]
    doc = yaml.safe_load((REPO / "deploy/kuberay/rayservice.yaml").read_text())
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == shape.idle_timeout_s
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == str(shape.head_cpus)
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {g.name for g in shape.groups}
    for group in shape.groups:
        spec = groups[group.name]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (group.min_workers, group.max_workers)
        (container,) = spec["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == group.gpus
        assert int(limits["cpu"]) == nodes.node_resources("gpu", group)["CPU"]


def test_a_changed_declaration_changes_the_manifest(monkeypatch):
    generator = gen_kuberay()
    shape = nodes.CLUSTERS["gpu"]
    group = dataclasses.replace(shape.groups[0], min_workers=2, max_workers=5)
    changed = dataclasses.replace(shape, idle_timeout_s=120, groups=(group,))
    monkeypatch.setattr(generator, "CLUSTER", changed)
    doc = yaml.safe_load(generator.render())
    cluster = doc["spec"]["rayClusterConfig"]
    (spec,) = cluster["workerGroupSpecs"]
    assert (spec["minReplicas"], spec["maxReplicas"], spec["replicas"]) == (2, 5, 2)
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 120


def test_fake_cluster_config_comes_from_the_declaration():
    shape = nodes.CLUSTERS["cluster-sim"]
    config = nodes.fake_cluster_config(gcs_address="10.0.0.1:41000")
    assert config["provider"]["type"] == "fake_multinode"
    assert config["provider"]["gcs_address"] == "10.0.0.1:41000"  # not the default 6379
    assert config["idle_timeout_minutes"] * 60 == pytest.approx(shape.idle_timeout_s)
    assert config["max_workers"] == sum(g.max_workers for g in shape.groups)
    types = config["available_node_types"]
    assert types[nodes.HEAD_NODE_TYPE]["resources"] == {"CPU": shape.head_cpus, "GPU": 0}
    for group in shape.groups:
        entry = types[group.name]
        sizes = (entry["min_workers"], entry["max_workers"])
        assert sizes == (group.min_workers, group.max_workers)
        assert entry["resources"] == {"CPU": group.cpus, "GPU": group.gpus}
    # Ray's own validation of a cluster config accepts it.
    from ray.autoscaler._private.util import validate_config

    validate_config(config)


def test_sim_serve_profile_puts_gpu_work_on_gpu_workers_only():
    """cluster-sim: only GPU-fraction deployments land on gpu-worker nodes (the head has no
    GPU); they scale from zero so the node comes and goes; the device is picked per replica."""
    app = serve_config("cluster-sim")["applications"][0]
    assert app["args"]["device"] == "auto"
    gpu = {name for name, _ in nodes.gpu_deployments("cluster-sim")}
    assert gpu == {"Detokenizer"}
    group = nodes.CLUSTERS["cluster-sim"].group(nodes.GPU_WORKER)
    for d in app["deployments"]:
        actor = d["ray_actor_options"]
        if d["name"] in gpu:
            assert 0 < actor["num_gpus"] < 1  # a fraction, as in gpu.yaml
            scaling = d["autoscaling_config"]
            assert scaling["min_replicas"] == 0 < scaling["max_replicas"]
            assert actor["num_cpus"] <= group.cpus
        else:
            assert "num_gpus" not in actor
    head_cpus = sum(d["ray_actor_options"]["num_cpus"] for d in app["deployments"])
    assert head_cpus <= nodes.CLUSTERS["cluster-sim"].head_cpus


def test_a_group_too_small_for_one_replica_of_each_is_refused():
    small = nodes.NodeGroup("gpu-worker", gpus=1, min_workers=0, max_workers=1, cpus=1)
    with pytest.raises(ValueError, match="needs"):
        nodes.node_resources("gpu", small)  # five 1-CPU model services


def test_every_node_gets_the_node_env_in_the_simulation_on_kuberay_and_in_compose():
    from tessera.cluster import sim

    assert nodes.NODE_ENV["RAY_max_direct_call_object_size"] == str(nodes.INLINE_RESULT_BYTES)
    env = sim.cluster_env(autoscaler_metrics_port=44217)
    assert nodes.NODE_ENV.items() <= env.items()
    doc = yaml.safe_load((REPO / "deploy/kuberay/rayservice.yaml").read_text())
    cluster = doc["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["template"]["spec"]["containers"]:
            values = {e["name"]: e.get("value") for e in container["env"]}
            assert nodes.NODE_ENV.items() <= values.items(), container["name"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    ray_nodes = {n: s for n, s in compose.items() if s.get("command", [""])[0].startswith("ray-")}
    assert sorted(ray_nodes) == ["ray-gpu-worker", "ray-head"]
    for name, service in ray_nodes.items():
        assert nodes.NODE_ENV.items() <= service["environment"].items(), name


@pytest.mark.parametrize("profile", ["cluster-sim", "gpu"])
def test_serve_replica_metadata_is_returned_inline(profile):
    """What a replica returns to Serve's controller when it starts (its DeploymentConfig and
    version, as ``initialize_and_get_metadata`` does) must fit INLINE_RESULT_BYTES with room
    to spare, or it lands in the replica node's object store and can keep that node from
    ever being idle (docs/decisions/idle-nodes-and-serve-metadata.md). Fails when a Ray
    upgrade makes it grow past half the limit."""
    from ray import cloudpickle
    from ray.serve._private.config import DeploymentConfig
    from ray.serve._private.version import DeploymentVersion

    keys = ("autoscaling_config", "user_config", "max_ongoing_requests", "num_replicas")
    sizes = {}
    for entry in serve_config(profile)["applications"][0]["deployments"]:
        config = DeploymentConfig.from_default(**{k: entry[k] for k in keys if k in entry})
        version = DeploymentVersion("v1", config, entry.get("ray_actor_options"))
        sizes[entry["name"]] = len(cloudpickle.dumps((config, version)))
    assert max(sizes.values()) <= nodes.INLINE_RESULT_BYTES // 2, sizes
