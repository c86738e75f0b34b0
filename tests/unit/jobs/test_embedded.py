"""ensure_redis: a configured URL wins; otherwise an embedded server with AOF in data_dir."""

from __future__ import annotations

import redis
from pydantic import SecretStr

from tessera.common.settings import Settings
from tessera.jobs.embedded import EmbeddedRedis, ensure_redis


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
