"""The node groups of a Tessera cluster: the one declaration of which Ray nodes exist, what
each carries and how far the autoscaler may scale them.

Two generated files read it, so what the simulated cluster tests is what KubeRay deploys:

- ``scripts/gen_kuberay.py``: the RayService's head ``num-cpus``/``num-gpus``, each worker
  group's name, GPUs, CPUs, ``minReplicas``/``maxReplicas``, and ``autoscalerOptions``
  (``idleTimeoutSeconds``, ``upscalingMode``), from ``CLUSTERS["gpu"]``;
- :func:`fake_cluster_config`: the autoscaling config of ``tessera cluster up`` (Ray's
  ``fake_multinode`` provider: ``available_node_types``, ``min_workers``/``max_workers``,
  ``idle_timeout_minutes``, ``upscaling_speed``), from ``CLUSTERS["cluster-sim"]``.

Each cluster profile pairs with the Serve profile of the same name (deploy/serve/<name>.yaml),
whose GPU fractions decide how many replicas one node of a group holds. The two profiles
share the group names and shape (a GPU-less head; ``gpu-worker`` nodes with one GPU each,
scaled by Ray's autoscaler between min and max); they differ in sizes: the simulation has
to fit 2 real cores and scales from zero nodes with a short idle timeout.

Group names are DNS-1123 labels (KubeRay names pods after them), hence ``gpu-worker``.

Imports nothing heavy: scripts and unit tests read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

HEAD_NODE_TYPE = "ray.head.default"  # the head's node type name in Ray's autoscaler

# Task results up to this size go back to their caller inline instead of into the object
# store of the node that computed them (Ray's default: 100 KiB). Serve's controller keeps
# every replica's start-up metadata (``initialize_and_get_metadata``: ~110-120 KB in Ray
# 2.60, nearly all of it the cloudpickled request router class in its DeploymentConfig),
# and after a scale-down that reference can sit in an uncollected reference cycle in the
# controller until its next full garbage collection (minutes). Stored on the replica's node,
# the object counts as work there: the raylet does not report the node idle meanwhile and
# the autoscaler keeps it.
# Inline, the controller holds the bytes itself and the node goes once its replicas do.
# See docs/decisions/idle-nodes-and-serve-metadata.md.
INLINE_RESULT_BYTES = 512 * 1024

# Ray starts worker processes at nice 15 (``RAY_worker_niceness``), so that a driver on the
# same machine keeps priority over its tasks. In Tessera the replicas are the work: at nice
# 15 they give way to Ray's own daemons, the proxy's load and anything else on the node. With
# two nice-15 jobs sharing the two cores, one LanguageModel.SampleTokens call took 0.30 s
# served against 0.10 s in-process; at niceness 0, 0.096 s against 0.089 s
# (docs/decisions/replica-niceness.md).
WORKER_NICENESS = 0

# Serve handles carry their protobuf messages over gRPC between replicas instead of Ray's
# object transport (docs/decisions/0002-handles-carry-protobuf-over-grpc.md). Every replica
# reads this from its own environment (``routes.handles.with_handle_transport``), so a node
# started without it serves its handle calls over the slower transport.
HANDLE_ENV: dict[str, str] = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(64 * 1024 * 1024),
}

# Environment every Ray node of a Tessera cluster starts with (the local stack; the simulated
# cluster's head and the nodes its autoscaler launches; the KubeRay pods; compose's Ray
# containers; `ray start` on a real cluster).
NODE_ENV: dict[str, str] = {
    "RAY_max_direct_call_object_size": str(INLINE_RESULT_BYTES),
    "RAY_worker_niceness": str(WORKER_NICENESS),
    **HANDLE_ENV,
}


@dataclass(frozen=True)
class NodeGroup:
    """Worker nodes of one kind, added and removed by Ray's autoscaler."""

    name: str  # the Ray node type / KubeRay worker group name
    gpus: int  # GPUs of one node
    min_workers: int
    max_workers: int
    # Ray CPUs of one node; None: sized from the registry so that one replica of every model
    # service with a GPU fraction fits, plus ``spare_cpus`` (the node's proxy, Ray itself).
    cpus: int | None = None
    spare_cpus: int = 0


@dataclass(frozen=True)
class ClusterShape:
    """A whole cluster: the head and the autoscaled worker groups."""

    head_cpus: int  # Ray CPUs on the head (Serve places Gateway, JobWorker, ... there)
    idle_timeout_s: int  # the autoscaler removes a worker idle this long
    groups: tuple[NodeGroup, ...]
    upscaling_speed: float = 1.0  # nodes launched at once, relative to the current count
    about: str = ""

    def group(self, name: str) -> NodeGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no node group {name!r}; known: {[g.name for g in self.groups]}")


GPU_WORKER = "gpu-worker"

CLUSTERS: dict[str, ClusterShape] = {
    # KubeRay (deploy/kuberay/rayservice.yaml): one GPU pod holds one replica of every model
    # service (their GPU fractions add up to <= 1; gen_kuberay checks it), plus CPUs for the
    # node's proxy and Ray's own processes. One pod stays up so the first request after a
    # quiet spell does not wait for a GPU node; a pod idle for 5 minutes goes (Serve's
    # downscale delay empties it first).
    "gpu": ClusterShape(
        head_cpus=2,
        idle_timeout_s=300,
        groups=(NodeGroup(GPU_WORKER, gpus=1, min_workers=1, max_workers=8, spare_cpus=3),),
        about="GPU cluster on KubeRay",
    ),
    # `tessera cluster up`: the same shape on one machine. Fake GPUs (no CUDA behind them),
    # one real core's worth of Ray CPUs per node; from zero nodes up to two; an idle node
    # goes after 15 s so a test sees it leave.
    "cluster-sim": ClusterShape(
        head_cpus=2,
        idle_timeout_s=15,
        groups=(NodeGroup(GPU_WORKER, cpus=1, gpus=1, min_workers=0, max_workers=2),),
        about="simulated cluster on one machine (Ray's fake_multinode provider)",
    ),
}


def max_workers(shape: ClusterShape) -> int:
    """The most worker nodes the autoscaler may run, all groups together."""
    return sum(group.max_workers for group in shape.groups)


def gpu_deployments(profile: str) -> list[tuple[str, dict[str, Any]]]:
    """(Serve name, ray_actor_options) of every model service that asks for a GPU fraction in
    the Serve profile ``profile``."""
    from tessera import registry

    out = []
    for entry in registry.SERVICES:
        actor = entry.profiles[profile]["ray_actor_options"]
        if actor.get("num_gpus"):
            out.append((entry.service, actor))
    return out


def node_resources(profile: str, group: NodeGroup) -> dict[str, int]:
    """Ray resources of one node of ``group`` in ``profile``; fails when one replica of each
    GPU deployment of the Serve profile would not fit one node."""
    actors = [actor for _, actor in gpu_deployments(profile)]
    gpus = sum(a["num_gpus"] for a in actors)
    cpus_needed = math.ceil(sum(a.get("num_cpus", 1) for a in actors))
    cpus = group.cpus if group.cpus is not None else cpus_needed + group.spare_cpus
    if gpus > group.gpus + 1e-9 or sum(a.get("num_cpus", 1) for a in actors) > cpus + 1e-9:
        raise ValueError(
            f"{profile}: one replica of each GPU deployment needs {gpus:g} GPUs and "
            f"{cpus_needed} CPUs; a {group.name} node has {group.gpus} and {cpus}"
        )
    return {"CPU": cpus, "GPU": group.gpus}


def fake_cluster_config(
    profile: str = "cluster-sim", *, gcs_address: str, cluster_name: str = "tessera-sim"
) -> dict[str, Any]:
    """The whole autoscaling config of a simulated cluster (``ray start --head
    --autoscaling-config``, with ``RAY_FAKE_CLUSTER=1``): Ray's wheel does not ship the
    provider's example, and the provider assumes the head's GCS on port 6379 unless
    ``gcs_address`` says otherwise."""
    shape = CLUSTERS[profile]
    types: dict[str, Any] = {
        # The head is started by `ray start`, not by the autoscaler: its entry must state what
        # that command gives it.
        HEAD_NODE_TYPE: {
            "resources": {"CPU": shape.head_cpus, "GPU": 0},
            "node_config": {},
            "max_workers": 0,
        },
    }
    for group in shape.groups:
        types[group.name] = {
            "resources": node_resources(profile, group),
            "node_config": {},
            "min_workers": group.min_workers,
            "max_workers": group.max_workers,
        }
    return {
        "cluster_name": cluster_name,
        "max_workers": max_workers(shape),
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": types,
        "head_node_type": HEAD_NODE_TYPE,
        "upscaling_speed": shape.upscaling_speed,
        "idle_timeout_minutes": shape.idle_timeout_s / 60,
        # Required by the config schema, unused by the fake provider.
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }
