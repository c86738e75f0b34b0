"""Platform overhead under load: what serving adds over the same routes run in-process.

Two measures, both in `make bench`:

1. Throughput at ``concurrency`` closed-loop clients, served (HTTP → Gateway → model
   deployments over Ray Serve handles) against the same ``Pipelines`` in-process (the
   deployment classes instantiated in this process, ``routes/local.py``) with as many
   concurrent callers. The engines and their batching are the same code on both sides, so
   the ratio is the platform's cost; served and in-process rounds alternate.
2. CPU-milliseconds per request by stage. Every process of the stack this run started is a
   descendant of this process (``ray.init`` starts the raylet, GCS and workers; Ray names a
   worker's process ``ray::<actor>``, e.g. ``ray::ServeReplica:tessera:Gateway``), so each
   stage's CPU is the change in its processes' user + system time (``psutil``
   ``cpu_times``, which read ``/proc``) over the rounds, divided by the requests served. The
   in-process side is this process's own CPU over its rounds. Serialisation is timed
   apart, with ``time.process_time``: every protobuf message one request sends between
   deployments (recorded on the in-process handles) serialised and parsed once each, as the
   handles' gRPC transport does; that time is part of the Gateway's and the replicas' rows.
   The in-process side is split by thread too (engine threads, the worker threads that run
   MiniLM, CLIP and the detokenizer, the event loop), so its work lines up with the served
   rows.
3. What each hop adds at concurrency 1 (``hop_latency``): every handle call of one request,
   recorded in-process, replayed through the in-process instance and through a Serve handle
   from this process, alternating; the rest of the paired gap is HTTP, the proxy and the
   gateway.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

# Ray's own processes, by executable name: everything of the stack that is not an actor.
RAY_SYSTEM = "Ray system (raylet, GCS, agents)"
CLIENT = "load generator (this process)"


# A replica's process title is ``ray::ServeReplica:<app>:<deployment>`` while idle and
# ``ray::ServeReplica:<app>:<deployment>.<method>`` while Ray runs one of its tasks (plus
# ``::Exiting`` on the way out), so the deployment is the name up to the first "." or ":".
REPLICA_TITLE = re.compile(r"^ray::ServeReplica:[^:]*:([^.:\s]+)")


def stage_of_title(title: str, name: str) -> str:
    """Which row a process with this title (argv[0]) and executable name belongs to."""
    replica = REPLICA_TITLE.match(title)
    if replica:
        return replica.group(1)  # the deployment
    if title.startswith("ray::ProxyActor"):
        return "Ray proxy (HTTP/gRPC ingress)"
    if title.startswith("ray::ServeController"):
        return "Serve controller"
    if title.startswith("ray::"):
        return RAY_SYSTEM  # idle workers and other actors
    if "redis" in name:
        return "Redis (job queue, idle here)"
    return RAY_SYSTEM


def stage_of(proc: psutil.Process) -> str | None:
    """Which row a descendant process's CPU goes to (None: gone or unreadable)."""
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return stage_of_title(cmd[0] if cmd else name, name)


class CpuMeter:
    """CPU seconds per stage between :meth:`start` and :meth:`stop`: the stack's processes
    (descendants of this one) and this process itself (the load generator)."""

    def __init__(self) -> None:
        self.me = psutil.Process(os.getpid())
        self.before: dict[int, tuple[str, float]] = {}

    def _sample(self) -> dict[int, tuple[str, float]]:
        out = {}
        for proc in self.me.children(recursive=True):
            stage = stage_of(proc)
            if stage is None:
                continue
            try:
                t = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out[proc.pid] = (stage, t.user + t.system)
        t = self.me.cpu_times()
        out[self.me.pid] = (CLIENT, t.user + t.system)
        return out

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        per_stage: dict[str, float] = {}
        for pid, (stage, cpu) in after.items():
            base = self.before.get(pid, (stage, 0.0))[1]  # a process born mid-run counts whole
            per_stage[stage] = per_stage.get(stage, 0.0) + max(0.0, cpu - base)
        return per_stage


def thread_group(name: str | None) -> str:
    """Which in-process row a thread of this process belongs to, by its Python name."""
    if name is None:
        return "native threads (torch, gRPC)"
    if name.endswith("-step-batch"):
        return f"engine thread {name}"  # tessera.common.step_loop
    if name.startswith("asyncio_"):
        return "worker threads (MiniLM, CLIP, detokenizer)"  # asyncio.to_thread
    if name == "MainThread":
        return "event loop (route code, PNG, load generator)"
    return "other threads"


class ThreadCpuMeter:
    """This process's CPU seconds by thread group between :meth:`start` and :meth:`stop`
    (``psutil`` reads each thread's times from /proc; Python names them by native id)."""

    ENDED = "threads that ended"

    def __init__(self) -> None:
        self.me = psutil.Process(os.getpid())
        self.before: dict[int, tuple[str, float]] = {}
        self.total = 0.0

    def _sample(self) -> tuple[dict[int, tuple[str, float]], float]:
        names = {t.native_id: t.name for t in threading.enumerate()}
        threads = {
            t.id: (thread_group(names.get(t.id)), t.user_time + t.system_time)
            for t in self.me.threads()
        }
        times = self.me.cpu_times()
        return threads, times.user + times.system

    def start(self) -> None:
        self.before, self.total = self._sample()

    def stop(self) -> dict[str, float]:
        after, total = self._sample()
        groups: dict[str, float] = {}
        for tid, (group, cpu) in after.items():
            base = self.before.get(tid, (group, 0.0))[1]
            groups[group] = groups.get(group, 0.0) + max(0.0, cpu - base)
        ended = (total - self.total) - sum(groups.values())
        if ended > 0.001:
            groups[self.ENDED] = ended
        return groups


async def closed_loop(
    send: Callable[[int], Awaitable[Any]], concurrency: int, requests: int, first: int
) -> dict:
    """``requests`` calls of ``send(i)`` from ``concurrency`` closed-loop callers; steady
    throughput as in ``benchmarks.run.load`` (first and last wave left out)."""
    finished: list[float] = []
    counter = iter(range(first, first + requests))

    async def worker() -> None:
        for i in counter:
            await send(i)
            finished.append(time.perf_counter())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    c = concurrency
    steady = len(finished) > 2 * c and finished[-c - 1] > finished[c - 1]
    rps = (len(finished) - 2 * c) / (finished[-c - 1] - finished[c - 1]) if steady else 0.0
    return {"throughput_rps": rps or len(finished) / wall, "wall_s": wall}


def platform_overhead(
    pipelines: Any,
    url: str,
    routes: tuple[str, ...],
    prompt: Callable[[int], str],
    summarize: Callable[[list[float]], dict],
    *,
    concurrency: int = 16,
    requests: int = 128,
    rounds: int = 3,
    first: int = 50_000,
    cpu: bool = True,
) -> dict:
    """Per route: served and in-process throughput at ``concurrency`` (rounds alternating),
    their ratio, and (``cpu``) CPU ms per request by stage on each side."""
    import httpx

    from tessera.routes.schemas import GenerationParams

    async def run() -> dict:
        out: dict = {}
        async with httpx.AsyncClient(
            base_url=url,
            timeout=600,
            limits=httpx.Limits(max_connections=concurrency * 2),
        ) as client:

            async def served(route: str, i: int) -> None:
                body = {"prompt": prompt(i), "route": route, "seed": i}
                r = await client.post("/v1/images/generations", json=body)
                r.raise_for_status()

            async def local(route: str, i: int) -> None:
                await pipelines.generate(GenerationParams(prompt=prompt(i), route=route, seed=i))

            n = first
            for route in routes:
                await served(route, 0)  # warm-up both sides
                await local(route, 0)
                sides: dict = {"served": [], "in_process": []}
                cpu_ms: dict = {"served": {}, "in_process": {}}
                by_thread: dict = {}
                for _ in range(rounds):
                    for side, send in (("served", served), ("in_process", local)):
                        meter, threads = CpuMeter(), ThreadCpuMeter()
                        meter.start()
                        threads.start()
                        r = await closed_loop(
                            lambda i, s=send, rt=route: s(rt, i), concurrency, requests, n
                        )
                        split = threads.stop()  # kept for the in-process side only
                        used = meter.stop()
                        n += requests
                        sides[side].append(r["throughput_rps"])
                        per_request = 1000 / (requests * rounds)
                        for stage, sec in used.items():
                            acc = cpu_ms[side]
                            acc[stage] = acc.get(stage, 0.0) + sec * per_request
                        if side == "in_process":
                            for group, sec in split.items():
                                by_thread[group] = by_thread.get(group, 0.0) + sec * per_request
                cpu_ms["in_process_by_thread"] = by_thread
                row = {side: summarize(v) for side, v in sides.items()}
                row["served_over_in_process"] = (
                    row["served"]["median"] / row["in_process"]["median"]
                )
                if cpu:
                    row["cpu_ms_per_request"] = cpu_ms
                out[route] = row
        return out

    result = asyncio.run(run())
    result["concurrency"] = concurrency
    result["requests_per_round"] = requests
    result["rounds"] = rounds
    return result


# ------------------------------------------------------------------------- serialisation
class RecordingHandle:
    """An in-process handle that keeps every unary call as (service, method, request,
    reply)."""

    def __init__(self, inner: Any, log: list, service: str = "") -> None:
        self._inner, self._log, self._service = inner, log, service

    def options(self, **kwargs: Any) -> Any:
        return self._inner.options(**kwargs)

    def __getattr__(self, method: str) -> Any:
        inner, log, service = getattr(self._inner, method), self._log, self._service

        class Method:
            async def remote(self, request: Any) -> Any:
                reply = await inner.remote(request)
                log.append((service, method, request, reply))
                return reply

        return Method()


def record_calls(pipelines: Any, route: str, prompt: str) -> tuple[list, Any]:
    """Every handle call one in-process ``route`` request makes, as (service, method,
    request, reply), and the request's own reply."""
    from tessera.routes.pipelines import Pipelines
    from tessera.routes.schemas import GenerationParams

    log: list = []
    handles = pipelines.handles.replace(
        **{name: RecordingHandle(handle, log, name) for name, handle in pipelines.handles.items()}
    )
    recorder = Pipelines(handles, pipelines.info, pipelines.ar_candidates)
    reply = asyncio.run(recorder.generate(GenerationParams(prompt=prompt, route=route, seed=0)))
    return log, reply


def serialisation_ms(pipelines: Any, route: str, repeats: int = 20) -> dict:
    """CPU ms to serialise and parse every message one ``route`` request sends between
    deployments (requests and replies, once each side), and their bytes."""
    log, reply = record_calls(pipelines, route, "serialisation probe")
    # + the gateway's public reply
    messages = [m for _, _, request, answer in log for m in (request, answer)] + [reply]
    t0 = time.process_time()
    for _ in range(repeats):
        for m in messages:
            type(m).FromString(m.SerializeToString())
    ms = 1000 * (time.process_time() - t0) / repeats
    return {
        "hops": len(log),
        "messages": len(messages),
        "bytes": sum(m.ByteSize() for m in messages),
        "cpu_ms": ms,
    }


def hop_latency(
    pipelines: Any, routes: tuple[str, ...], repeats: int = 20, app_name: str = "tessera"
) -> dict:
    """What each hop of a route adds at concurrency 1: every handle call of one request
    (recorded in-process) replayed through the in-process instance and through a Serve
    handle from this process (the Ray driver of a stack it started), alternating call by
    call. Per route: each hop's in-process and served medians (ms), and their sum."""
    from ray import serve

    from tessera import registry
    from tessera.routes.handles import with_handle_transport

    deployments = {entry.name: entry.service for entry in registry.SERVICES}

    async def replay(log: list) -> dict:
        hops: dict = {}
        served_handles = {
            service: with_handle_transport(serve.get_deployment_handle(name, app_name=app_name))
            for service, name in deployments.items()
            if service in {entry[0] for entry in log}
        }
        for service, method, request, _ in log:
            local = getattr(getattr(pipelines.handles, service), method)
            served = getattr(served_handles[service], method)
            await local.remote(request)  # warm both (a served replica's first call pays more)
            await served.remote(request)
            times: dict[str, list[float]] = {"in_process": [], "served": []}
            for _ in range(repeats):
                for side, fn in (("in_process", local), ("served", served)):
                    t0 = time.perf_counter()
                    await fn.remote(request)
                    times[side].append(1000 * (time.perf_counter() - t0))
            name = f"{deployments[service]}.{method}"
            key, k = name, 2
            while key in hops:  # a route calling one method twice (chunks) lists both
                key, k = f"{name} #{k}", k + 1
            hops[key] = {side: statistics.median(v) for side, v in times.items()}
        return hops

    out: dict = {}
    for route in routes:
        log, _ = record_calls(pipelines, route, "hop probe")
        hops = asyncio.run(replay(log))
        out[route] = {
            "hops": hops,
            "added_ms": sum(h["served"] - h["in_process"] for h in hops.values()),
        }
    out["repeats"] = repeats
    return out
