"""The web playground: one page served by the gateway's HTTP app, no separate server.

``add_playground(app)`` adds ``GET /`` and ``GET /playground`` (the page, ``index.html``) and
mounts the static files (``static/``: plain CSS and JavaScript ES modules, no build step) at
``/playground/static``. These paths, and only these, are open without an API key
(``tessera.common.auth``); the page calls the public API like any client, sending
``Authorization: Bearer <key>`` when the user entered one.

The page carries a ``<base href>`` of the app's root (the Serve route prefix), so its relative
API and asset URLs work under a prefix too, and the request bounds of
``tessera.common.limits`` as its form's hints (the server stays the one that enforces them).
"""

# No `from __future__ import annotations` here: FastAPI resolves the handler's annotations.

import html
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from tessera.common import limits

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
PAGE_PATHS = ("/", "/playground")
STATIC_PATH = "/playground/static"
# Scripts, styles and fetches from this origin only; images also from data:/blob: URLs.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        "script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'self'; "
        "frame-ancestors 'none'"
    ),
}
# Placeholders of index.html → their values (the public request bounds).
PAGE_VALUES = {
    "MAX_PROMPT_CHARS": limits.MAX_PROMPT_CHARS,
    "MAX_IMAGES_PER_REQUEST": limits.MAX_IMAGES_PER_REQUEST,
    "MAX_STEPS": limits.MAX_STEPS,
    "MAX_GUIDANCE": limits.MAX_GUIDANCE,
    "MAX_TEMPERATURE": limits.MAX_TEMPERATURE,
    "MAX_SEED": limits.MAX_SEED,
}


def render_page(root_path: str = "") -> str:
    """index.html with its placeholders filled; ``root_path``: the app's route prefix."""
    page = (HERE / "index.html").read_text(encoding="utf-8")
    values = {**PAGE_VALUES, "BASE_HREF": html.escape(root_path.rstrip("/") + "/", quote=True)}
    for name, value in values.items():
        page = page.replace("{{" + name + "}}", str(value))
    return page


def add_playground(app: FastAPI) -> None:
    """Serve the playground from ``app``: the page at ``/`` and ``/playground``, its static
    files under ``/playground/static``."""

    async def playground(request: Request) -> HTMLResponse:
        return HTMLResponse(render_page(request.scope.get("root_path", "")), headers=PAGE_HEADERS)

    for path in PAGE_PATHS:
        app.add_api_route(
            path, playground, methods=["GET"], include_in_schema=False, response_class=HTMLResponse
        )
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="playground-static")
