"""ensure_redis: a configured URL wins; otherwise an embedded server with AOF in data_dir.
RedisSupervisor: the server is restarted when it dies and dies with its supervising process."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from pydantic import SecretStr

from tessera.common import metrics
from tessera.common.settings import Settings
from tessera.jobs.embedded import EmbeddedRedis, ensure_redis, start_redis
from tessera.jobs.supervisor import RedisSupervisor

from .conftest import REPO


def test_configured_url_is_used_as_is(tmp_path):
    settings = Settings(redis_url=SecretStr("redis://redis:6379/0"), data_dir=tmp_path)
    assert ensure_redis(settings) == "redis://redis:6379/0"
    assert not (tmp_path / "redis").exists()


def test_embedded_server_persists_in_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path)
    url = ensure_redis(settings, stop_at_exit=False)
    server = EmbeddedRedis(tmp_path / "redis")
    try:
        assert url.startswith("unix://") and url == server.url
        pid = server.pid()
        assert pid is not None
        assert ensure_redis(settings, stop_at_exit=False) == url  # reused, not restarted
        assert server.pid() == pid
        client = redis.Redis.from_url(url)
        client.set("kept", b"yes")
        client.close()
    finally:
        server.stop()  # graceful: the AOF is flushed
    assert server.pid() is None
    assert (tmp_path / "redis" / "appendonly.aof").stat().st_size > 0
    try:
        url = ensure_redis(settings, stop_at_exit=False)
        client = redis.Redis.from_url(url)
        assert client.get("kept") == b"yes"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
    finally:
        server.stop()


def wait_for(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_supervisor_restarts_a_killed_server_from_its_aof(caplog):
    metrics.reset("local")
    directory = tempfile.mkdtemp(prefix="tj-")
    supervisor = RedisSupervisor(
        EmbeddedRedis(directory, tie_to_parent=True), poll_s=0.1, restart_delay_s=0.2
    )
    try:
        url = supervisor.start()
        client = redis.Redis.from_url(url)
        client.set("kept", b"yes")  # acknowledged: written to the AOF before the reply
        first = supervisor.server.pid()
        assert first is not None
        with caplog.at_level(logging.WARNING, logger="tessera.jobs.embedded"):
            os.kill(first, signal.SIGKILL)  # a crash: no AOF flush at exit
            wait_for(lambda: supervisor.restarts == 1, what="the restart")
        second = supervisor.server.pid()
        assert second is not None and second != first
        assert client.get("kept") == b"yes"  # same directory: the AOF was reloaded
        client.close()
        assert metrics.value(metrics.REDIS_RESTARTS) == 1
        assert "embedded redis restarted (restart 1" in caplog.text
    finally:
        supervisor.stop()
        shutil.rmtree(directory, ignore_errors=True)
    assert supervisor.server.pid() is None  # a clean stop ends supervision, then the server
    assert supervisor.restarts == 1


PARENT = """
import sys, time
from tessera.jobs.embedded import EmbeddedRedis
from tessera.jobs.supervisor import RedisSupervisor
supervisor = RedisSupervisor(EmbeddedRedis(sys.argv[1], tie_to_parent=True))
supervisor.start()
print(supervisor.server.pid(), flush=True)
time.sleep(600)
"""


def test_server_dies_with_the_process_that_supervises_it():
    """A `tessera serve` that is SIGKILLed takes its embedded Redis with it (and the server
    gets SIGTERM, so it flushes its AOF on the way out)."""
    directory = tempfile.mkdtemp(prefix="tj-")
    env = dict(os.environ, PYTHONPATH=str(REPO / "services"))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, directory], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        pid = int(parent.stdout.readline())
        server = EmbeddedRedis(directory)
        assert server.pid() == pid and server.ping()
        client = redis.Redis.from_url(server.url)
        client.set("kept", b"yes")
        client.close()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: server.pid() is None, timeout_s=5.0, what="redis to exit")
        assert "ready to exit" in (Path(directory) / "redis.log").read_text()  # SIGTERM path
        url = server.start()  # the data is still there for the next start
        client = redis.Redis.from_url(url)
        assert client.get("kept") == b"yes"
        client.close()
        server.stop()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        EmbeddedRedis(directory).kill()
        shutil.rmtree(directory, ignore_errors=True)


def test_start_redis_supervised_is_what_tessera_serve_runs():
    directory = tempfile.mkdtemp(prefix="tj-")
    settings = Settings(data_dir=directory)
    url, started = start_redis(settings, supervise=True)
    try:
        assert isinstance(started, RedisSupervisor) and started.url == url
        assert started.server.tie_to_parent
        assert start_redis(settings, supervise=True) == (url, None)  # running: reused as is
        pid = started.server.pid()
        assert pid is not None
        started.stop()
        assert started.server.pid() is None and not os.path.exists(f"/proc/{pid}")
    finally:
        started.stop()
        shutil.rmtree(directory, ignore_errors=True)
