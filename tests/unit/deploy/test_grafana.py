"""deploy/grafana: the dashboard is valid Grafana JSON with a query in every panel, and the
provisioning points at the folders docker-compose.yml mounts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tessera.common import dashboards

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tessera.json"


def load_board() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_valid_and_every_panel_has_a_query():
    board = load_board()
    assert board["uid"] == "tessera-overview" and board["title"] == "Tessera"
    assert isinstance(board["schemaVersion"], int)
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["type"] == "prometheus"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0


def test_dashboard_covers_what_the_issue_asks_for():
    titles = " | ".join(p["title"].lower() for p in load_board()["panels"])
    wanted = (
        "requests", "latency", "error", "queue", "job outcomes", "batch size", "tokens / s",
        "steps / s", "replicas per deployment", "gpu use", "model load",
    )  # fmt: skip
    for words in wanted:
        assert words in titles, words
    queries = dashboards.dashboard_queries(DASHBOARD)
    assert any("histogram_quantile(0.99" in q and "by (le, route)" in q for q in queries)


def test_dashboard_queries_substitute_grafana_variables():
    queries = dashboards.dashboard_queries(DASHBOARD, rate_interval="30s")
    assert queries and not any("$" in q for q in queries)
    assert any("[30s]" in q for q in queries)
    targets = dashboards.dashboard_targets(DASHBOARD)
    gpu = [t for t in targets if t.needs_gpu]
    assert gpu and all(t.panel.startswith("GPU") for t in gpu)
    cpu_only = dashboards.dashboard_queries(DASHBOARD, include_gpu=False)
    assert len(cpu_only) == len(targets) - len(gpu)


def test_dashboard_queries_reads_nested_rows(tmp_path):
    board = {"panels": [
        {"type": "row", "title": "r", "collapsed": True, "panels": [
            {"type": "timeseries", "title": "a", "targets": [
                {"refId": "A", "expr": "rate(x_total[$__rate_interval])"}]}]},
        {"type": "text", "title": "no targets"},
    ]}  # fmt: skip
    path = tmp_path / "b.json"
    path.write_text(json.dumps(board))
    assert dashboards.dashboard_queries(path) == ["rate(x_total[1m])"]


def test_provisioning_matches_the_compose_mounts(repo):
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    board = load_board()
    (var,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert var["current"]["value"] == source["uid"]

    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    paths = {p["name"]: p["options"]["path"] for p in providers["providers"]}
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[paths["tessera"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    # Ray's generated dashboards: an env variable naming a folder in the shared Ray temp dir.
    assert paths["ray"] == "${RAY_GRAFANA_DASHBOARDS_DIR}"
    ray_dir = grafana["environment"]["RAY_GRAFANA_DASHBOARDS_DIR"]
    assert ray_dir.startswith("/tmp/ray/session_latest/") and mounts["/tmp/ray"] == "ray-tmp"
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
