"""A simulated autoscaling Ray cluster on one machine, with Tessera deployed on it.

Ray's ``fake_multinode`` node provider (enabled by ``RAY_FAKE_CLUSTER=1``) launches and
removes real raylet "nodes" as local processes with the resources their node type declares,
GPUs included, driven by the ordinary autoscaler. :func:`up` writes the autoscaling config
from ``tessera.cluster.nodes`` (the declaration KubeRay's manifest comes from), starts a head
with ``ray start --head`` in a session of its own, starts a Redis for the job queue, and
deploys the Serve profile onto the cluster. :func:`down` ends exactly the processes it
started: the head's process group, every process launched with this cluster's Ray temp
directory (the worker nodes) and their children, and the Redis. It never runs ``ray stop``,
which ends every Ray process on the machine.

Everything lives in one directory: ``cluster.json`` (addresses, ports, process group),
``autoscaler.yaml``, ``ray/`` (Ray's temp dir and logs), ``redis/``, ``head.log``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tessera.cluster import nodes
from tessera.runtime import free_port

log = logging.getLogger("tessera.cluster")

STATE_FILE = "cluster.json"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SERVE_CONFIG = REPO_ROOT / "deploy" / "serve" / "cluster-sim.yaml"
# How soon the autoscaler acts and gives up on a silent node (defaults: 5 s and 30 s).
AUTOSCALER_UPDATE_INTERVAL_S = 1
AUTOSCALER_HEARTBEAT_TIMEOUT_S = 10


class FakeProviderUnavailable(RuntimeError):
    """This Ray build has no ``fake_multinode`` node provider."""


@dataclass
class SimCluster:
    """A running simulated cluster, as recorded in ``<directory>/cluster.json``."""

    directory: str
    profile: str
    gcs_address: str
    head_pgid: int
    http_port: int
    grpc_port: int
    metrics_port: int  # the head's Ray metrics (ray_cluster_*, ray_serve_*, ray_tessera_*)
    autoscaler_metrics_port: int  # the autoscaler's own (autoscaler_*)
    redis_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ray_temp_dir(self) -> Path:
        return Path(self.directory) / "ray"

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path | str) -> SimCluster:
        path = Path(directory) / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"no simulated cluster recorded in {path}")
        return cls(**json.loads(path.read_text()))


def check_fake_provider() -> None:
    """Raise FakeProviderUnavailable when this Ray build lacks the fake multi-node provider."""
    try:
        from ray.autoscaler._private.fake_multi_node import node_provider  # noqa: F401
        from ray.autoscaler._private.providers import _get_node_provider_cls

        _get_node_provider_cls({"type": "fake_multinode"})
    except Exception as e:  # noqa: BLE001 - any failure means: not available here
        raise FakeProviderUnavailable(f"Ray's fake_multinode provider is unavailable: {e}") from e


def cluster_env(autoscaler_metrics_port: int) -> dict[str, str]:
    """Environment of the head's processes; the autoscaler hands it on to the nodes it
    launches, and every Ray worker inherits it."""
    return {
        **os.environ,
        **nodes.NODE_ENV,
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": str(AUTOSCALER_UPDATE_INTERVAL_S),
        "AUTOSCALER_HEARTBEAT_TIMEOUT_S": str(AUTOSCALER_HEARTBEAT_TIMEOUT_S),
        "AUTOSCALER_METRIC_PORT": str(autoscaler_metrics_port),
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_SERVE_ENABLE_ACCESS_LOG": "0",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }


def _ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def start_head(directory: Path, profile: str = "cluster-sim") -> SimCluster:
    """Write the autoscaling config and start the head (GCS, raylet, autoscaler) on free
    ports, in a new session so that its processes share one process group."""
    import ray._private.services as services

    check_fake_provider()
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ip = services.get_node_ip_address()
    gcs_port, metrics_port, autoscaler_port = free_port(), free_port(), free_port()
    gcs_address = f"{ip}:{gcs_port}"
    config_path = directory / "autoscaler.yaml"
    config = nodes.fake_cluster_config(profile, gcs_address=gcs_address)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    shape = nodes.CLUSTERS[profile]
    cmd = [
        _ray_bin(), "start", "--head", f"--port={gcs_port}",
        f"--num-cpus={shape.head_cpus}", "--num-gpus=0",
        "--include-dashboard=false", f"--dashboard-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={metrics_port}",
        f"--temp-dir={directory / 'ray'}",
        f"--autoscaling-config={config_path}",
        "--disable-usage-stats",
    ]  # fmt: skip
    with open(directory / "head.log", "ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=cluster_env(autoscaler_port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its pid is the process group of every head process
        )
    cluster = SimCluster(
        directory=str(directory),
        profile=profile,
        gcs_address=gcs_address,
        head_pgid=proc.pid,
        http_port=0,
        grpc_port=0,
        metrics_port=metrics_port,
        autoscaler_metrics_port=autoscaler_port,
    )
    cluster.save()  # before waiting: `down` must find a half-started head too
    rc = proc.wait(timeout=300)
    if rc != 0:  # the log's tail in the message: a test's cleanup removes the directory
        log = directory / "head.log"
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"ray start --head failed ({rc}); {log} ends:\n{tail}")
    return cluster


def deploy(
    cluster: SimCluster,
    *,
    serve_config: Path = DEFAULT_SERVE_CONFIG,
    app_args: dict[str, Any] | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
) -> SimCluster:
    """Deploy Tessera onto the cluster (from this process, as a short-lived driver) and
    start the job queue's Redis. The app keeps running after this process disconnects."""
    import ray

    from tessera import runtime
    from tessera.jobs.embedded import EmbeddedRedis

    args = dict(app_args or {})
    if not args.get("redis_url"):
        redis_dir = Path(cluster.directory) / "redis"
        args["redis_url"] = EmbeddedRedis(redis_dir).start()
        cluster.redis_dir = str(redis_dir)
    cluster.http_port = http_port or free_port()
    cluster.grpc_port = grpc_port or free_port()
    cluster.save()
    os.environ.update(
        {k: v for k, v in cluster_env(cluster.autoscaler_metrics_port).items() if k != "PATH"}
    )
    config = runtime.StackConfig(
        serve_config=serve_config,
        address=cluster.gcs_address,
        http_port=cluster.http_port,
        grpc_port=cluster.grpc_port,
        metrics_port=None,
        app_args=args,
        quiet=True,
    )
    try:
        runtime.start(config)
    finally:
        ray.shutdown()  # the driver leaves; Serve's controller and the app stay
    return cluster


def up(directory: Path, **deploy_kwargs: Any) -> SimCluster:
    """Start the simulated cluster and deploy Tessera on it; on failure, stop what started."""
    cluster = start_head(directory)
    try:
        return deploy(cluster, **deploy_kwargs)
    except BaseException:
        down(directory)
        raise


def _processes_of(cluster: SimCluster) -> list[Any]:
    """Every live process this cluster started: the head's process group, every process
    whose command line names this cluster's Ray temp dir (the nodes the autoscaler launched),
    and the descendants of both."""
    import psutil

    marker = str(cluster.ray_temp_dir)
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            in_group = os.getpgid(proc.pid) == cluster.head_pgid
            named = any(marker in part for part in proc.info["cmdline"] or ())
        except (ProcessLookupError, psutil.Error):
            continue
        if (in_group or named) and proc.pid != os.getpid():
            roots.append(proc)
    found = {p.pid: p for p in roots}
    for proc in roots:
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _end(processes: list[Any], grace_s: float) -> list[int]:
    """SIGTERM, then SIGKILL what is left after ``grace_s``; returns the pids ended."""
    import psutil

    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for proc in processes:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        _, processes = psutil.wait_procs(processes, timeout=wait)
        if not processes:
            break
    return [p.pid for p in processes]


def down(directory: Path, grace_s: float = 5.0) -> int:
    """Stop the cluster recorded in ``directory``: its processes only, by pid. Returns how
    many processes were ended."""
    from tessera.jobs.embedded import EmbeddedRedis

    cluster = SimCluster.load(directory)
    processes = _processes_of(cluster)
    left = _end(processes, grace_s)
    if left:
        log.warning("processes still alive after SIGKILL: %s", left)
    if cluster.redis_dir:
        EmbeddedRedis(cluster.redis_dir).stop()
    return len(processes)


def node_processes(cluster: SimCluster, node_id: str) -> list[Any]:
    """The raylet of node ``node_id`` of this cluster and every process under it (its
    workers, replicas and agents)."""
    import psutil

    marker = str(cluster.ray_temp_dir)
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = proc.info["cmdline"] or ()
        if not cmdline or not cmdline[0].endswith("raylet"):
            continue
        if any(f"node_id={node_id}" in part for part in cmdline) and any(
            marker in part for part in cmdline
        ):
            try:
                return [proc, *proc.children(recursive=True)]
            except psutil.Error:
                return [proc]
    return []


def kill_node(directory: Path, node_id: str) -> list[int]:
    """SIGKILL one worker node's processes, as if its machine died. Returns their pids."""
    cluster = SimCluster.load(directory)
    processes = node_processes(cluster, node_id)
    if not processes:
        raise LookupError(f"no raylet of node {node_id} in this cluster")
    pids = []
    for proc in processes:
        try:
            proc.kill()
            pids.append(proc.pid)
        except Exception:  # noqa: BLE001 - gone already
            continue
    return pids


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 1.0) -> Any:
    """Poll ``predicate`` until it returns a truthy value; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s:.0f} s")
        time.sleep(interval_s)
