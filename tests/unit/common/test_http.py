"""The HTTP app's error handlers, on a throwaway route."""

from __future__ import annotations

from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tessera.common import metrics
from tessera.common.http import create_app
from tessera.common.settings import get_settings


class Body(BaseModel):
    n: int


def test_validation_errors_are_400_with_a_message_and_are_counted():
    metrics.reset("local")
    app = create_app()

    @app.post("/echo")
    async def echo(body: Body) -> dict:
        return {"n": body.n}

    client = TestClient(app)
    bad = client.post("/echo", json={"n": "many"})
    assert bad.status_code == 400
    assert "n:" in bad.json()["error"]["message"]
    assert client.post("/echo", json={"n": 3}).json() == {"n": 3}
    assert metrics.value(metrics.REQUESTS, route="other", status="invalid_argument") == 1


def app_with_routes():
    app = create_app()

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @app.get("/v1/ping")
    async def ping() -> dict:
        return {"pong": True}

    @app.get("/v1/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b"]), media_type="text/plain")

    @app.get("/v1/boom")
    async def boom() -> dict:
        raise RuntimeError("secret detail")

    return app


def test_api_key_is_required_except_on_probes_and_docs(monkeypatch):
    monkeypatch.setenv("TESSERA_API_KEY", "s3cret-key")
    get_settings.cache_clear()
    metrics.reset("local")
    try:
        client = TestClient(app_with_routes())
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
            r = client.get("/v1/ping", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthenticated"
            assert r.json()["error"]["type"] == "authentication_error"
        good = {"Authorization": "Bearer s3cret-key"}
        assert client.get("/v1/ping", headers=good).json() == {"pong": True}
        assert client.get("/v1/stream", headers=good).text == "ab"
        assert client.get("/healthz").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        refused = metrics.value(metrics.REQUESTS, route="other", status="unauthenticated")
        assert refused == 3
    finally:
        monkeypatch.delenv("TESSERA_API_KEY")
        get_settings.cache_clear()


def test_unexpected_errors_are_a_json_500_without_the_detail():
    get_settings.cache_clear()
    client = TestClient(app_with_routes())  # raises if an error escaped the middleware
    assert client.get("/v1/ping").status_code == 200  # no key configured: open
    r = client.get("/v1/boom")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal"
    assert "secret detail" not in r.text
