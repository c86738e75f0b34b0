"""Job calls (submit, job, cancel, stream, wait, generate_stream over HTTP) against the real
jobs API and queue, over HTTP and gRPC, sync and async; and the job CLI commands."""

from __future__ import annotations

import pytest

from tessera.cli import main as cli
from tessera_client import AsyncClient, Client, JobFailed, NotFoundError

from .jobs_server import JobsServer

TRANSPORTS = ["http", "grpc"]


@pytest.fixture(scope="module")
def server():
    srv = JobsServer(steps=6, step_s=0.05).start()
    yield srv
    srv.stop()


def client_for(server: JobsServer, transport: str, cls: type = Client):
    return cls(server.url, transport=transport, grpc_target=server.grpc_target, timeout=30)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_submit_stream_and_fetch_a_job(server, transport):
    with client_for(server, transport) as client:
        job = client.submit("a red circle", n=2, seed=7, priority="high")
        assert job.state in ("queued", "running") and job.priority == "high" and job.id
        events = list(client.stream(job.id, timeout=30))
        last = events[-1]
        assert last.done and last.job.state == "succeeded"
        assert all(not e.done for e in events[:-1])
        steps = [e.progress.step for e in events if e.progress.stage not in ("", "queue")]
        assert steps == sorted(steps) and max(steps) == 6  # step counts climb to the total
        previews = [p for e in events for p in e.previews]
        assert previews and previews[0].size == (16, 16)
        result = last.job.result
        assert result.seed == 7 and len(result.images) == 2
        fetched = client.job(job.id)
        assert fetched.state == "succeeded" and fetched.result.png_bytes == result.png_bytes
        assert fetched.finished_at >= fetched.started_at >= fetched.created_at


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_async_submit_wait_and_cancel(server, transport):
    async with client_for(server, transport, AsyncClient) as client:
        job = await client.submit("a blue square", seed=1)
        done = await client.wait(job.id, timeout=30)
        assert done.state == "succeeded" and len(done.result.png_bytes) == 1
        again = await client.submit("a blue square", seed=1, idempotency_key=f"k-{transport}")
        same = await client.submit("a blue square", seed=1, idempotency_key=f"k-{transport}")
        assert same.id == again.id
        doomed = await client.submit("a long one", seed=2)
        cancelled = await client.cancel(doomed.id)
        assert cancelled.id == doomed.id
        final = await client.wait(doomed.id, timeout=30)
        assert final.state in ("cancelled", "succeeded")  # it may finish before the cancel lands
        events = [e async for e in client.stream(job.id)]
        assert len(events) == 1 and events[0].done  # a finished job: one final event
        with pytest.raises(NotFoundError):
            await client.job("no-such-job")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_job_is_not_found(server, transport):
    with client_for(server, transport) as client:
        with pytest.raises(NotFoundError) as info:
            client.job("no-such-job")
        assert "no-such-job" in info.value.message
        with pytest.raises(NotFoundError):
            list(client.stream("no-such-job"))


def test_generate_stream_over_http_runs_a_job(server):
    with client_for(server, "http") as client:
        events = list(client.generate_stream("a green tree", seed=3, n=1))
        assert events[-1].done and events[-1].result.seed == 3
        assert len(events[-1].result.images) == 1
        with pytest.raises(JobFailed) as info:
            list(client.generate_stream("invalid: never works"))
        assert info.value.job.state == "failed" and info.value.job.error


async def test_async_generate_stream_over_http(server):
    async with client_for(server, "http", AsyncClient) as client:
        events = [e async for e in client.generate_stream("a tree", seed=4)]
        assert events[-1].result.seed == 4


def test_job_commands_exit_codes_and_files(server, tmp_path, capsys):
    conn = ["--url", server.url]
    assert cli(["submit", "a cat", "--seed", "5", "-n", "2", *conn]) == 0
    job_id = capsys.readouterr().out.strip()
    assert job_id and "\n" not in job_id
    out = tmp_path / "cat.png"
    assert cli(["watch", job_id, "-o", str(out), *conn]) == 0
    captured = capsys.readouterr()
    assert "succeeded" in captured.out and (tmp_path / "cat-1.png").exists() and out.exists()
    assert "6/6" in captured.err  # the bar's step counts
    assert cli(["status", job_id, "--json", *conn]) == 0
    assert '"state": "succeeded"' in capsys.readouterr().out
    # A job that fails: watch and status exit 5; submit --wait too.
    assert (
        cli(["submit", "invalid: bad", "--wait", "--grpc", "--grpc-target", server.grpc_target])
        == 5
    )
    assert "failed" in capsys.readouterr().out
    assert cli(["status", "no-such-job", *conn]) == 3
    assert "no-such-job" in capsys.readouterr().err
    assert cli(["cancel", job_id, *conn]) == 0
