"""tessera.cluster.sim ends only the processes its cluster started: its head's process group,
processes named after its Ray temp dir, and their children; never anyone else's."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from tessera.cluster import sim

SLEEPER = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"  # noqa: E501


def spawn(*extra: str, new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SLEEPER, *extra], start_new_session=new_session
    )  # fmt: skip


@pytest.fixture
def cluster(tmp_path):
    (tmp_path / "ray").mkdir()
    head = spawn(new_session=True)  # stands for `ray start --head` in its own session
    node = spawn(f"--temp-dir={tmp_path / 'ray'}")  # a launched node names the temp dir
    other = spawn(new_session=True)  # someone else's process
    time.sleep(1.0)  # let the children start
    state = sim.SimCluster(
        directory=str(tmp_path), profile="cluster-sim", gcs_address="127.0.0.1:1",
        head_pgid=head.pid, http_port=0, grpc_port=0, metrics_port=0, autoscaler_metrics_port=0,
    )  # fmt: skip
    state.save()
    yield state, head, node, other
    for proc in (head, node, other):
        for child in (
            psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else ()
        ):
            child.kill()
        proc.kill()
        proc.wait()


def test_down_ends_the_clusters_processes_and_their_children_only(cluster):
    state, head, node, other = cluster
    mine = {head.pid, node.pid}
    children = {c.pid for p in (head, node) for c in psutil.Process(p.pid).children(recursive=True)}
    others = {other.pid} | {c.pid for c in psutil.Process(other.pid).children(recursive=True)}
    found = {p.pid for p in sim._processes_of(state)}
    assert mine | children <= found
    assert not found & others
    assert sim.down(state.directory, grace_s=2.0) >= 4
    for pid in mine | children:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert all(psutil.Process(pid).is_running() for pid in others)


def test_kill_node_needs_a_raylet_of_this_cluster(cluster):
    state, *_ = cluster
    with pytest.raises(LookupError):
        sim.kill_node(state.directory, "f" * 56)


def test_the_fake_provider_is_available_in_this_ray():
    sim.check_fake_provider()
