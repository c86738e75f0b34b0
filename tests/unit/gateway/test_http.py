"""The HTTP app's error handlers, on a throwaway route."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import BaseModel

from tessera.common import metrics
from tessera.gateway.http import create_app


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
