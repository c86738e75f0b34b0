"""The playground's page and static files on the gateway's app shell: served, open without
the API key (only they: the API still needs it), with the request bounds and the base href
filled in. The page in a real browser: tests/integration/playground."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tessera.common import limits
from tessera.common.auth import is_open_http_path
from tessera.common.http import create_app
from tessera.common.settings import get_settings
from tessera.gateway.playground import STATIC_DIR, add_playground, render_page


@pytest.fixture
def client() -> TestClient:
    app = create_app()
    add_playground(app)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"data": []}

    return TestClient(app)


def test_only_the_page_and_its_static_files_are_open():
    for path in ("/", "/playground", "/playground/static/app.js", "/healthz", "/docs"):
        assert is_open_http_path(path), path
    for path in ("/v1/models", "/v1/jobs", "/playgroundx", "/playground/v1/jobs", "/x/"):
        assert not is_open_http_path(path), path


def test_page_and_assets_load_without_the_key_and_the_api_still_needs_it(client, monkeypatch):
    monkeypatch.setenv("TESSERA_API_KEY", "s3cret-key")
    get_settings.cache_clear()
    try:
        for path in ("/", "/playground"):
            r = client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
        for name in ("app.js", "api.js", "style.css"):
            assert client.get(f"/playground/static/{name}").status_code == 200, name
        assert client.get("/playground/static/missing.js").status_code == 404
        assert client.get("/v1/models").status_code == 401
        ok = client.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200
    finally:
        monkeypatch.delenv("TESSERA_API_KEY")
        get_settings.cache_clear()


def test_page_carries_the_bounds_and_the_route_prefix_as_its_base():
    page = render_page("/keyed")
    assert '<base href="/keyed/">' in page
    assert f'max="{limits.MAX_STEPS}"' in page
    assert f'max="{limits.MAX_IMAGES_PER_REQUEST}"' in page
    assert "{{" not in page
    assert '<base href="/">' in render_page("")


def test_static_files_stay_small_modules():
    files = sorted(STATIC_DIR.iterdir())
    assert {"app.js", "api.js", "style.css"} <= {f.name for f in files}
    for f in files + [Path(STATIC_DIR.parent / "index.html")]:
        assert len(f.read_text(encoding="utf-8").splitlines()) <= 400, f.name
