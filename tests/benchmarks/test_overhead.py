"""Which CPU row a stack process belongs to, from the titles Ray gives its workers."""

from __future__ import annotations

import os

import psutil
import pytest

from benchmarks.overhead import CLIENT, RAY_SYSTEM, CpuMeter, stage_of_title


@pytest.mark.parametrize(
    "title, stage",
    [
        ("ray::ServeReplica:tessera:Detokenizer", "Detokenizer"),
        # while Ray runs one of the replica's tasks (the CI failure: a sample taken then)
        ("ray::ServeReplica:tessera:Detokenizer.handle_request_with_rejection", "Detokenizer"),
        ("ray::ServeReplica:tessera:Gateway.handle_request::Exiting", "Gateway"),
        ("ray::ProxyActor.ready", "Ray proxy (HTTP/gRPC ingress)"),
        ("ray::ServeController.run_control_loop", "Serve controller"),
        ("ray::IDLE", RAY_SYSTEM),
        ("/usr/bin/raylet", RAY_SYSTEM),
    ],
)
def test_stage_of_title_names_the_deployment_idle_or_busy(title: str, stage: str) -> None:
    assert stage_of_title(title, "python") == stage


def test_redis_is_its_own_row() -> None:
    assert stage_of_title("/usr/bin/redis-server", "redis-server").startswith("Redis")


def test_cpu_meter_charges_this_process_to_the_load_generator() -> None:
    meter = CpuMeter()
    meter.start()
    end = psutil.Process(os.getpid()).cpu_times().user + 0.05
    while psutil.Process(os.getpid()).cpu_times().user < end:
        sum(range(10_000))  # burn a little CPU here
    used = meter.stop()
    assert used[CLIENT] >= 0.04
