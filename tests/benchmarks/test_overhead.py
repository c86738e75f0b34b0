"""Which CPU row a stack process belongs to, from the titles Ray gives its workers."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from benchmarks.overhead import (
    CLIENT,
    RAY_SYSTEM,
    CpuMeter,
    ThreadCpuMeter,
    stage_of_title,
    thread_group,
)


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


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(10_000))


@pytest.mark.parametrize(
    "name, group",
    [
        ("lm-step-batch", "engine thread lm-step-batch"),
        ("asyncio_3", "worker threads (MiniLM, CLIP, detokenizer)"),
        ("MainThread", "event loop (route code, PNG, load generator)"),
        (None, "native threads (torch, gRPC)"),
        ("Thread-7", "other threads"),
    ],
)
def test_thread_group_names_what_a_thread_runs(name, group) -> None:
    assert thread_group(name) == group


def test_thread_meter_charges_each_thread_its_own_cpu() -> None:
    """An engine-named thread's CPU lands in its row, this thread's in the event loop's;
    a thread that ends before the meter stops still counts."""
    burned, release = threading.Event(), threading.Event()

    def engine_loop() -> None:  # burns, then stays alive (as an engine does) until released
        burn(0.2)
        burned.set()
        release.wait()

    meter = ThreadCpuMeter()
    meter.start()
    engine = threading.Thread(target=engine_loop, name="decoder-step-batch")
    engine.start()
    burn(0.05)
    gone = threading.Thread(target=burn, args=(0.1,), name="short-lived")
    gone.start()
    gone.join()
    burned.wait()
    split = meter.stop()
    release.set()
    engine.join()
    # /proc counts a thread's CPU in clock ticks (10 ms), so each reading may lose up to a
    # tick at either end of the window: allow two.
    slack = 2 / os.sysconf("SC_CLK_TCK") + 1e-9
    assert split["engine thread decoder-step-batch"] >= 0.2 - slack
    assert split["event loop (route code, PNG, load generator)"] >= 0.05 - slack
    assert split[ThreadCpuMeter.ENDED] >= 0.1 - slack
