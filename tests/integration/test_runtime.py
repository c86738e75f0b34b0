"""The local stack's Ray processes, as `tessera serve` and `make demo` start them."""

from __future__ import annotations

import os

import psutil

from benchmarks.overhead import stage_of


def test_replicas_run_at_normal_priority_not_rays_nice_15(stack):
    """Ray starts workers at nice 15 unless told otherwise; every model replica and the
    Gateway here run at the driver's own niceness (nodes.NODE_ENV's RAY_worker_niceness)."""
    me = psutil.Process(os.getpid())
    replicas = {}
    for proc in me.children(recursive=True):
        title = (proc.cmdline() or [""])[0]
        if title.startswith("ray::ServeReplica:"):
            replicas[stage_of(proc)] = proc.nice()
    assert {"Gateway", "LanguageModel", "Detokenizer"} <= set(replicas), replicas
    assert set(replicas.values()) == {me.nice()}, replicas
