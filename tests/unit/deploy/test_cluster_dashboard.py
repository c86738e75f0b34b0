"""deploy/grafana/dashboards/tessera-cluster.json: the cluster autoscaling dashboard shows
nodes by type, replicas per deployment and per node, pending demand and the autoscaler's
decisions, with valid PromQL over metric families Ray 2.60 exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tessera.common import dashboards, metrics

BOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboards"
CLUSTER = BOARD / "tessera-cluster.json"

# Seen on a simulated cluster's head (Ray 2.60): the head's metrics agent exports the
# ray_* families; the autoscaler serves autoscaler_* on its own port (44217 by default;
# KubeRay's autoscaler sidecar too).
KNOWN = {
    "ray_cluster_active_nodes", "ray_cluster_pending_nodes",
    "ray_serve_deployment_replica_healthy", "ray_serve_autoscaling_target_replicas",
    "ray_serve_autoscaling_desired_replicas", "ray_serve_deployment_queued_queries",
    "ray_scheduler_unscheduleable_tasks", "ray_resources",
    "autoscaler_pending_resources", "autoscaler_started_nodes", "autoscaler_stopped_nodes",
    "autoscaler_failed_create_nodes", "autoscaler_cluster_resources",
}  # fmt: skip


def families(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:ray|autoscaler)_[a-z_]+)\b(?=\s*[{\[)])", expr))
    return {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in names}


def test_the_cluster_board_is_valid_and_covers_the_cluster():
    board = json.loads(CLUSTER.read_text())
    assert board["uid"] == "tessera-cluster"
    other = json.loads((BOARD / "tessera.json").read_text())
    assert board["uid"] != other["uid"]
    titles = [p["title"].lower() for p in board["panels"]]
    for wanted in (
        "nodes by type", "replicas per deployment", "replicas per deployment and node",
        "pending resource demand", "autoscaler decisions",
    ):  # fmt: skip
        assert wanted in titles, wanted
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_the_cluster_board_uses_known_metrics(promtool, tmp_path):
    queries = dashboards.dashboard_queries(CLUSTER)
    used = set().union(*(families(q) for q in queries))
    ours = {s.exported_name for s in metrics.SPECS}
    assert used <= KNOWN | ours, used - KNOWN - ours
    rules = {"groups": [{"name": "cluster", "rules": [
        {"record": f"cluster:query_{i}", "expr": q} for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "cluster.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
