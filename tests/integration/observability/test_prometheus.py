"""A real Prometheus scrapes the running stack: after one round of traffic every query of the
Tessera dashboard (GPU panels aside) returns data, still does after Ray has aged out every
gauge nobody refreshes, and the alert rules evaluate cleanly."""

from __future__ import annotations

import time

import pytest
import ray

from tessera.common.dashboards import dashboard_queries

from .conftest import DASHBOARD, drive_traffic

pytestmark = pytest.mark.integration

# Ray's metrics export lags by ~10 s; replicas and the node agent report on their own clocks.
WAIT_S = 90


def empty_queries(prometheus, queries: list[str]) -> list[str]:
    return [q for q in queries if not prometheus.query(q)]


def test_every_dashboard_query_returns_data(prometheus, http, channel):
    queries = dashboard_queries(DASHBOARD, include_gpu=False)
    assert len(queries) >= 20
    drive_traffic(http, channel)
    deadline = time.monotonic() + WAIT_S
    # Every query in the same pass, as one look at the dashboard would run them.
    while (empty := empty_queries(prometheus, queries)) and time.monotonic() < deadline:
        time.sleep(2)
    assert not empty, f"dashboard queries without data after {WAIT_S} s:\n" + "\n".join(empty)

    # Ray drops a gauge series not set again within two report intervals: a value set once
    # (a model's load time) must still be there after that.
    time.sleep(2 * ray._config.metrics_report_interval_ms() / 1000 + 5)
    empty = empty_queries(prometheus, queries)
    assert not empty, "dashboard queries whose data aged out:\n" + "\n".join(empty)

    up = prometheus.query('up{job="tessera"}')
    assert [s["value"][1] for s in up] == ["1"]
    # The alert rules load and evaluate against the real series without errors.
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] == "err"}
    assert not bad, bad
