"""Async jobs through the running stack: the Gateway queues, the JobWorker deployment runs
the real pipelines, results and progress come back over HTTP (SSE) and gRPC."""

from __future__ import annotations

import json
import time

import pytest

from tessera.v1 import generation_pb2, generation_pb2_grpc

pytestmark = pytest.mark.integration


def wait_done(http, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.parametrize("route", ["ar", "unclip"])
def test_job_runs_both_routes_and_matches_sync_result(http, route):
    body = {"prompt": "a red circle", "route": route, "seed": 21}
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    job = wait_done(http, r.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["result_expires_at"] > time.time()
    sync = http.post("/v1/images/generations", json=body).json()
    assert job["result"]["data"][0]["b64_json"] == sync["data"][0]["b64_json"]


def test_sse_events_then_idempotent_resubmit(http):
    headers = {"Idempotency-Key": "it-sse-1"}
    job = http.post("/v1/jobs", json={"prompt": "a star", "seed": 2}, headers=headers).json()
    events = []
    with http.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert events, "no SSE events"
    assert any(e.get("progress") for e in events)
    again = http.post("/v1/jobs", json={"prompt": "a star", "seed": 2}, headers=headers).json()
    assert again["id"] == job["id"]
    assert wait_done(http, job["id"])["state"] == "succeeded"


def test_job_errors(http):
    assert http.get("/v1/jobs/does-not-exist").status_code == 404
    assert http.delete("/v1/jobs/does-not-exist").status_code == 404
    assert http.post("/v1/jobs", json={"prompt": ""}).status_code == 400
    r = http.post("/v1/jobs", json={"prompt": "a", "route": "teleport"})
    assert r.status_code == 404 and "route" in r.json()["error"]["message"]


def test_grpc_jobs(channel):
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    req = generation_pb2.SubmitJobRequest(
        request=generation_pb2.GenerateRequest(prompt="a tree", route="unclip", seed=5),
        priority="high",
    )
    job = stub.SubmitJob(req, timeout=60).job
    assert job.id and job.state in ("queued", "running", "succeeded")
    events = list(stub.WatchJob(generation_pb2.WatchJobRequest(id=job.id), timeout=120))
    assert events[-1].job.state == "succeeded"
    done = stub.GetJob(generation_pb2.GetJobRequest(id=job.id), timeout=60).job
    assert done.result.images and done.priority == "high"
