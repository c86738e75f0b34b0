"""deploy/prometheus: configs and rules pass promtool, the alert unit tests pass, the rules
and the dashboard speak valid PromQL about metrics that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tessera.common import dashboards, metrics

PROM = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
RULES = PROM / "rules" / "tessera.rules.yml"
DASHBOARD = PROM.parent / "grafana" / "dashboards" / "tessera.json"

# Ray's own families the rules and the dashboard rely on (Ray 2.60 names).
RAY_FAMILIES = {
    "ray_serve_deployment_replica_healthy", "ray_serve_autoscaling_target_replicas",
    "ray_serve_autoscaling_total_requests", "ray_node_cpu_utilization",
    "ray_node_gpus_utilization", "ray_node_gram_used", "ray_node_gram_available", "up",
    "ray_serve_autoscaling_desired_replicas", "ray_serve_deployment_queued_queries",
}  # fmt: skip


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


RAY_SERVICE_DISCOVERY = "/tmp/ray/prom_metrics_service_discovery.json"


def test_configs_pass_promtool(promtool, tmp_path):
    """Checked from a copy whose service-discovery file (Ray's, under /tmp/ray) points into
    ``tmp_path``: promtool reads that file when it exists, so a Ray session on this machine
    (or a dangling link a deleted one left behind) would decide the result, not the config."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    for name in ("prometheus.yml", "prometheus.local.yml"):
        text = (copy / name).read_text()
        (copy / name).write_text(text.replace(RAY_SERVICE_DISCOVERY, str(tmp_path / "sd.json")))
        out = run(promtool, "check", "config", str(copy / name))
        assert out.returncode == 0, out.stdout + out.stderr
    assert RAY_SERVICE_DISCOVERY in (PROM / "prometheus.yml").read_text()  # what was replaced


def test_rules_pass_promtool_and_their_unit_tests(promtool):
    out = run(promtool, "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(promtool, "test", "rules", str(PROM / "rules" / "tessera.rules.test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_required_alerts_exist_and_have_tests():
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    required = {
        "TesseraHighErrorRatio", "TesseraHighLatencyP99", "TesseraJobQueueBacklog",
        "TesseraDeploymentDown", "TesseraReplicasUnhealthy", "TesseraNoTraffic",
        "TesseraDeploymentAtMaxReplicas",
    }  # fmt: skip
    assert required <= alerts
    tests = yaml.safe_load((PROM / "rules" / "tessera.rules.test.yml").read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert required <= tested


def test_server_error_codes_match_the_metrics_module():
    text = RULES.read_text()
    regexes = set(re.findall(r'status=~"([^"]+)"', text))
    assert regexes == {"|".join(metrics.SERVER_ERROR_CODES)}
    assert set(metrics.SERVER_ERROR_CODES) <= set(metrics.STATUS_CODES)


def _families(expr: str) -> set[str]:
    names = set(re.findall(r"\b(ray_[a-z_]+|up)\b(?=\s*[{\[)])", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_rules_and_dashboard_use_known_metrics():
    ours = {s.exported_name for s in metrics.SPECS}
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    exprs += dashboards.dashboard_queries(DASHBOARD)
    used = set().union(*(_families(e) for e in exprs))
    assert used, "no metric names found"
    assert used <= ours | RAY_FAMILIES, used - ours - RAY_FAMILIES
    # Every Tessera metric is shown somewhere on the dashboard.
    shown = set().union(*(_families(e) for e in dashboards.dashboard_queries(DASHBOARD)))
    assert ours <= shown, ours - shown


def test_dashboard_queries_are_valid_promql(promtool, tmp_path):
    """promtool parses every panel query (as a recording rule)."""
    queries = dashboards.dashboard_queries(DASHBOARD)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = run(promtool, "check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(queries)} rules found" in out.stdout
