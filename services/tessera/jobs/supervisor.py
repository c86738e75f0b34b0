"""``RedisSupervisor``: keeps the embedded Redis (``embedded.EmbeddedRedis``) running,
restarting it from its own directory (so its AOF is reloaded) when it dies. What
``tessera serve`` runs, through ``embedded.start_redis(supervise=True)``."""

from __future__ import annotations

import logging
import threading
import time

from tessera.common.errors import Unavailable
from tessera.jobs.embedded import EmbeddedRedis

log = logging.getLogger("tessera.jobs.embedded")


class RedisSupervisor:
    """Runs an ``EmbeddedRedis`` and restarts it (same directory, so the AOF is reloaded)
    when it dies.

    One daemon thread starts the server, then checks it every ``poll_s``: when the process
    has exited (or has not answered PING for ``hang_s`` while not loading its AOF: it is
    killed) it waits ``restart_delay_s`` (doubled after each failed restart, up to
    ``max_delay_s``), starts it again, logs a line and counts
    ``tessera_redis_restarts_total``. The server is a child of that thread
    (``tie_to_parent``), so it gets SIGTERM if this process dies; ``stop()`` ends the
    supervision first, then shuts the server down gracefully.
    """

    def __init__(
        self,
        server: EmbeddedRedis,
        *,
        poll_s: float = 0.5,
        restart_delay_s: float = 0.5,
        max_delay_s: float = 10.0,
        hang_s: float = 30.0,
    ) -> None:
        self.server = server
        self.poll_s = poll_s
        self.restart_delay_s = restart_delay_s
        self.max_delay_s = max_delay_s
        self.hang_s = hang_s
        self.restarts = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the server and its supervision; returns its URL once it answers."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self._run, name="tessera-redis-supervisor", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise Unavailable(f"embedded redis did not start within {timeout_s}s")
        if self._error is not None:
            raise self._error
        return self.url

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop supervising, then shut the server down (AOF flushed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            self.server.start()
        except BaseException as e:  # noqa: BLE001 - handed to start()'s caller
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self._watch()
        finally:
            try:
                self.server.stop()
            except Exception:  # noqa: BLE001
                log.exception("could not stop the embedded redis")

    def _watch(self) -> None:
        silent_since: float | None = None
        while not self._stop.wait(self.poll_s):
            try:
                if self.server.running():
                    if self.server.health() != "down":
                        silent_since = None
                        continue
                    silent_since = silent_since or time.monotonic()
                    if time.monotonic() - silent_since < self.hang_s:
                        continue
                    log.error("embedded redis did not answer for %.0f s; killing it", self.hang_s)
                    self.server.kill()
                silent_since = None
                self._restart()
            except Exception:  # noqa: BLE001 - the supervisor must outlive any one check
                log.exception("embedded redis supervisor: unexpected error")

    def _restart(self) -> None:
        down_at = time.monotonic()
        delay = self.restart_delay_s
        log.warning("embedded redis at %s exited; restarting it in %.1f s", self.server.url, delay)
        while not self._stop.wait(delay):
            try:
                self.server.start()
            except Exception as e:  # noqa: BLE001 - retried with backoff
                delay = min(max(delay, 0.1) * 2, self.max_delay_s)
                log.error("embedded redis restart failed (%s); retrying in %.1f s", e, delay)
                continue
            from tessera.common import metrics

            self.restarts += 1
            metrics.record_redis_restart()
            log.warning(
                "embedded redis restarted (restart %d, pid %s, down %.1f s, AOF reloaded from %s)",
                self.restarts,
                self.server.pid(),
                time.monotonic() - down_at,
                self.server.directory,
            )
            return
