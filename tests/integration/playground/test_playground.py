"""The playground in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright, against the session's Serve stack (tiny random bundle, embedded Redis).

Set TESSERA_PLAYGROUND_SCREENSHOT=path to save a screenshot of the page mid-generation
(docs/playground.png is made this way)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # skipped below, with the reason
    expect = sync_playwright = None

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000
# Chromium logs each refused fetch as a console error; a test that provokes one allows it.
REFUSED = "Failed to load resource: the server responded with a status of"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    if sync_playwright is None:
        pytest.skip("playwright is missing (pip install -e '.[dev]')")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def native(stack: dict) -> int:
    return httpx.get(f"{stack['http']}/v1/models", timeout=30).json()["data"][0]["image_size"]


class Page:
    """A fresh browser context and page on the playground; console errors collected."""

    def __init__(self, browser, url: str, viewport: dict | None = None) -> None:
        self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.allowed: tuple[str, ...] = ()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.goto(url)
        self.page.wait_for_selector("#route option", state="attached")

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not (self.allowed and e.startswith(self.allowed))]


@pytest.fixture
def pg(browser, stack: dict) -> Iterator[Page]:
    page = Page(browser, f"{stack['http']}/")
    yield page
    page.context.close()
    assert page.unexpected_errors() == []


def record_images(page) -> None:
    """Record, in order, the class of every image put in the output panel."""
    page.evaluate(
        """() => {
        window.__seen = [];
        new MutationObserver((muts) => {
          for (const m of muts) for (const node of m.addedNodes) {
            if (!node.querySelectorAll) continue;
            for (const img of node.querySelectorAll("img")) window.__seen.push(img.className);
          }
        }).observe(document.getElementById("images"), { childList: true, subtree: true });
        }"""
    )


def png_bytes(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return base64.b64decode(src.split(",", 1)[1])


def test_generate_shows_previews_then_the_final_png_of_the_asked_size(pg, native, tmp_path):
    page, size = pg.page, 128 if 128 % native == 0 else 2 * native  # an upscale
    page.fill("#prompt", "a red heart")
    page.select_option("#route", "unclip")
    # Enough steps that the job outlasts the page's next request, which opens its event
    # stream: a stream opened later starts from then, and 30 steps on the tiny bundle could
    # end first (the page then rightly shows only the final image).
    page.fill("#steps", "100")  # the tiny decoder's most
    page.select_option("#size", f"{size}x{size}")
    record_images(page)
    page.click("#generate")
    final = page.wait_for_selector("#images img.final")
    seen = page.evaluate("window.__seen")
    assert "preview" in seen and seen.index("preview") < seen.index("final"), seen
    assert final.evaluate("img => img.naturalWidth") == size
    with Image.open(io.BytesIO(png_bytes(final.get_attribute("src")))) as im:
        assert im.format == "PNG" and im.size == (size, size)
    assert "a red heart" in final.get_attribute("alt")
    assert page.text_content("#stage") == "Done"
    assert page.text_content("#seed-used").startswith("Seed used: ")
    assert page.get_attribute("#images a", "download").endswith(".png")
    entry = page.locator("#history-list li.job").first
    assert "succeeded" in entry.text_content() and "steps=100" in entry.text_content()

    # Reuse its seed: the form takes the seed; the copied calls reproduce the same image.
    entry.get_by_role("button", name="Reuse the settings and seed").click()
    seed = page.input_value("#seed")
    assert seed and not page.is_checked("#seed-random")
    page.click(".snippets summary")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#copy-curl")
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    curl = page.input_value("#snippet-curl")
    python = page.input_value("#snippet-python")
    assert page.evaluate("navigator.clipboard.readText()") == curl
    assert f'"seed":{seed}' in curl and f"seed={seed}" in python
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run(["bash", "-c", f"set -euo pipefail; {curl}"], check=True, **run)
    (tmp_path / "curl.png").write_bytes((tmp_path / "tessera.png").read_bytes())
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'services'}:{REPO / 'clients' / 'python'}"}
    out = subprocess.run([sys.executable, "-c", python], env=env, check=True, **run)
    assert out.stdout.strip() == f"seed {seed}"
    shown = png_bytes(final.get_attribute("src"))
    with Image.open(tmp_path / "curl.png") as a, Image.open(tmp_path / "tessera.png") as b:
        assert a.size == b.size == (size, size)
        assert a.tobytes() == b.tobytes() == Image.open(io.BytesIO(shown)).tobytes()


def test_cancel_a_long_job(pg):
    page = pg.page
    page.fill("#prompt", "a long walk")
    page.select_option("#route", "unclip")
    page.fill("#n", "4")
    # The most the tiny bundle's decoder schedule allows (the public limit, 250, is refused
    # by its decoder): ~1.5 s on two cores, cancelled at its first preview.
    page.fill("#steps", "100")
    page.click("#generate")
    page.wait_for_selector("#images img.preview")
    if shot := os.environ.get("TESSERA_PLAYGROUND_SCREENSHOT"):
        page.screenshot(path=shot)
    assert page.is_enabled("#cancel")
    page.click("#cancel")
    expect(page.locator("#stage")).to_have_text("Cancelled")
    assert page.locator("#history-list li.job .badge").first.text_content() == "cancelled"
    assert not page.is_enabled("#cancel")
    assert page.locator("#images img.final").count() == 0


def test_a_cancel_reply_overtaken_by_the_jobs_end_does_not_undo_it(pg):
    """The stream can report "cancelled" before the DELETE's reply (sent while the job still
    ran) reaches the page; the page keeps the newer state. Here the reply is held back until
    the page shows the end (a loaded machine did it by chance: "Cancelling" for ever)."""
    page = pg.page
    held: list = []

    def hold_cancel_reply(route) -> None:
        if route.request.method != "DELETE":
            route.continue_()
            return
        held.append((route, route.fetch()))  # the server cancels now; the page waits

    page.route("**/v1/jobs/*", hold_cancel_reply)
    page.fill("#prompt", "a long walk")
    page.select_option("#route", "unclip")
    page.fill("#n", "4")
    page.fill("#steps", "100")
    page.click("#generate")
    expect(page.locator("#stage")).to_contain_text("Running")  # cancel early: the job is ~1.5 s
    page.click("#cancel")
    expect(page.locator("#stage")).to_have_text("Cancelled")
    ((route, reply),) = held
    assert reply.json()["state"] in ("queued", "running")  # what the page now gets
    with page.expect_response(lambda r: r.request.method == "DELETE"):
        route.fulfill(response=reply)
    page.wait_for_timeout(1000)  # the reply's handler runs after its body is read
    expect(page.locator("#stage")).to_have_text("Cancelled")
    assert page.locator("#history-list li.job .badge").first.text_content() == "cancelled"
    assert not page.is_enabled("#cancel")


def test_variations_of_a_dropped_and_an_uploaded_image(pg, native):
    page = pg.page
    buf = io.BytesIO()
    Image.new("RGB", (native, native), (200, 30, 40)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    transfer = page.evaluate_handle(
        """(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        return dt;
        }""",
        b64,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    assert "dropped.png" in page.get_attribute("#var-source", "alt")
    page.set_input_files(
        "#var-image", files=[{"name": "red.png", "mimeType": "image/png", "buffer": buf.getvalue()}]
    )
    assert "red.png" in page.get_attribute("#var-source", "alt")
    page.fill("#var-n", "2")
    page.fill("#var-steps", "5")
    page.click("#var-submit")
    page.wait_for_selector("#images img.final")
    images = page.locator("#images img.final")
    assert images.count() == 2
    assert "Variation of red.png" in images.first.get_attribute("alt")
    assert images.first.evaluate("img => img.naturalWidth") == native
    assert page.text_content("#var-submit") == "Make variations" and page.is_enabled("#var-submit")


def test_edit_with_a_mask_and_caption(pg, native, stack):
    """The session's bundle has a mixed-modal model: the panel shows, an edit with a mask
    returns PNGs of the native size, a caption lists the model's captions, and a refused
    edit shows the server's message."""
    page = pg.page
    pg.allowed = (REFUSED,)
    assert page.is_visible("#edits")  # /v1/models says "edits": true
    src, mask = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (native, native), (20, 40, 200)).save(src, format="PNG")
    Image.new("RGBA", (native, native), (0, 0, 0, 0)).save(mask, format="PNG")
    page.set_input_files(
        "#edit-image",
        files=[{"name": "blue.png", "mimeType": "image/png", "buffer": src.getvalue()}],
    )
    assert "blue.png" in page.get_attribute("#edit-source", "alt")
    page.set_input_files(
        "#edit-mask", files=[{"name": "m.png", "mimeType": "image/png", "buffer": mask.getvalue()}]
    )
    page.fill("#edit-prompt", "make the square red")
    page.fill("#edit-n", "2")
    page.fill("#edit-seed", "5")
    page.click("#edit-submit")
    page.wait_for_selector("#images img.final")
    images = page.locator("#images img.final")
    assert images.count() == 2
    assert "make the square red" in images.first.get_attribute("alt")
    assert images.first.evaluate("img => img.naturalWidth") == native
    files = {"image": ("blue.png", src.getvalue(), "image/png")}
    form = {"prompt": "make the square red", "n": "2", "seed": "5"}
    files["mask"] = ("m.png", mask.getvalue(), "image/png")
    direct = httpx.post(f"{stack['http']}/v1/images/edits", files=files, data=form, timeout=120)
    assert png_bytes(images.first.get_attribute("src")) == base64.b64decode(
        direct.json()["data"][0]["b64_json"]
    )
    page.click("#caption-submit")
    page.wait_for_selector("#captions:not([hidden]) li")
    assert page.locator("#captions li").count() == 1
    assert "score" in page.text_content("#captions li")
    page.fill("#edit-prompt", "   ")  # blank: the server refuses it, the page says why
    page.click("#edit-submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "blank" in page.text_content("#error")
    assert page.is_enabled("#edit-submit") and page.text_content("#edit-submit") == "Edit"


def test_the_servers_messages_are_shown(pg, stack):
    page = pg.page
    pg.allowed = (REFUSED,)
    page.fill("#prompt", "too many")
    page.fill("#n", "5")  # the form sends it; the server refuses it
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    body = {"prompt": "too many", "route": page.input_value("#route"), "n": 5}
    body["size"] = page.input_value("#size")
    refused = httpx.post(f"{stack['http']}/v1/jobs", json=body, timeout=30)
    assert refused.status_code == 400
    assert page.text_content("#error") == refused.json()["error"]["message"]
    assert "less than or equal to 4" in page.text_content("#error")
    assert page.locator("#history-list li.job").count() == 0

    # A full queue (429): the message and its Retry-After (the queue is not filled for real).
    error = {"error": {"code": "resource_exhausted", "message": "queue is full", "type": "x"}}
    page.route(
        "**/v1/jobs",
        lambda route: route.fulfill(
            status=429,
            headers={"Retry-After": "7"},
            content_type="application/json",
            body=json.dumps(error),
        ),
    )
    page.fill("#n", "1")
    page.click("#generate")
    busy = "The server is busy: queue is full. Retry in 7 s (Retry-After)."
    expect(page.locator("#error")).to_have_text(busy)


def test_api_key_is_kept_and_sent_and_the_page_fits_a_narrow_screen(browser, stack):
    pg = Page(browser, f"{stack['http']}/playground", viewport={"width": 375, "height": 800})
    page = pg.page
    try:
        # Every control has a label a screen reader announces.
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll("input, select, textarea")]
            .filter((el) => !el.labels?.length && !el.getAttribute("aria-label"))
            .map((el) => el.id)"""
        )
        assert unlabelled == []
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.keyboard.press("Tab")  # the skip link first, then the prompt
        assert page.evaluate("document.activeElement.className") == "skip"

        page.click("#key-panel summary")
        page.fill("#api-key", "k3y")
        with page.expect_request("**/v1/models") as request:
            page.click("#key-form button[type=submit]")
        assert request.value.headers.get("authorization") == "Bearer k3y"
        page.reload()
        page.wait_for_selector("#route option", state="attached")
        assert page.input_value("#api-key") == "k3y"
        assert "$TESSERA_API_KEY" in page.input_value("#snippet-curl")
        assert "k3y" not in page.input_value("#snippet-curl")
    finally:
        pg.context.close()
    assert pg.unexpected_errors() == []
