"""tessera.runtime without starting anything: which ingress a stack gets, and the Serve
settings that direct ingress puts in the environment, the check of the public ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tessera import runtime
from tessera.common.settings import get_settings

PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "serve" / "local.yaml"


@pytest.fixture
def settings_ingress(monkeypatch: pytest.MonkeyPatch):
    def set_to(value: str) -> None:
        monkeypatch.setenv("TESSERA_INGRESS", value)
        get_settings.cache_clear()

    yield set_to
    get_settings.cache_clear()


def test_the_settings_choose_the_ingress_of_an_embedded_stack(settings_ingress):
    settings_ingress("direct")
    assert runtime.resolve_ingress(runtime.StackConfig(serve_config=PROFILE)) == "direct"
    settings_ingress("proxy")
    assert runtime.resolve_ingress(runtime.StackConfig(serve_config=PROFILE)) == "proxy"
    config = runtime.StackConfig(serve_config=PROFILE, ingress="direct")
    assert runtime.resolve_ingress(config) == "direct"  # the caller's choice wins


def test_a_cluster_keeps_the_proxy(settings_ingress):
    settings_ingress("direct")
    config = runtime.StackConfig(serve_config=PROFILE, address="10.0.0.1:6379")
    assert runtime.resolve_ingress(config) == "proxy"
    with pytest.raises(ValueError, match="no --address"):
        runtime.resolve_ingress(
            runtime.StackConfig(serve_config=PROFILE, address="10.0.0.1:6379", ingress="direct")
        )


def test_unknown_ingress_is_refused(settings_ingress):
    with pytest.raises(ValueError, match="ingress must be one of"):
        runtime.resolve_ingress(runtime.StackConfig(serve_config=PROFILE, ingress="haproxy"))
    settings_ingress("haproxy")
    with pytest.raises(ValueError, match="ingress"):  # pydantic refuses it in the settings
        runtime.StackConfig(serve_config=PROFILE).settings()


def test_direct_ingress_pins_serve_to_the_public_ports():
    env = runtime.direct_ingress_env(8000, 9000)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    # Serve's port ranges are half-open: exactly the public port each
    assert (
        env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"],
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"],
    ) == ("8000", "8001")
    assert (
        env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"],
        env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"],
    ) == ("9000", "9001")
    # a restarted Gateway takes its port back at once (no quarantine)
    assert env["RAY_SERVE_PORT_QUARANTINE_S"] == "0"


def test_other_apps_get_the_ports_after_the_public_ones():
    env = runtime.direct_ingress_env(8000, 9000, other_apps=3)
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "8000"
    assert env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] == "8004"
    assert env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"] == "9004"


def test_an_embedded_stack_defaults_to_direct_ingress(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TESSERA_INGRESS", raising=False)
    get_settings.cache_clear()
    try:
        assert runtime.resolve_ingress(runtime.StackConfig(serve_config=PROFILE)) == "direct"
    finally:
        get_settings.cache_clear()


def test_a_busy_public_port_is_named_before_anything_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} is in use"):
            runtime.check_ports_free([runtime.free_port(), port])
    runtime.check_ports_free([port])  # closed again: free
