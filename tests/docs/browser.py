"""Open an HTML page in headless Chromium (Debian's ``chromium``, driven by Playwright) and
report what a reader would see broken: console errors, failed requests, images that did not
load, and the tables on the page.

Pages are served over HTTP from their folder (a local ``http.server`` on a free port), as a
web server would, so that relative links, fetches and images behave as they do when served.
Playwright never downloads a browser here: it is pointed at the system executable.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
#: Viewport of the screenshots, in CSS pixels.
VIEWPORT = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    """The Chromium executable: ``$COGIMG_CHROMIUM`` or the first of :data:`CANDIDATES` on PATH."""
    if os.environ.get("COGIMG_CHROMIUM"):
        return os.environ["COGIMG_CHROMIUM"]
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


@dataclass
class PageCheck:
    """What loading one page showed."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)   # ``src`` of each <img> not loaded
    image_count: int = 0
    tables: int = 0
    table_classes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return ([f"console error: {m}" for m in self.console_errors]
                + [f"failed request: {u}" for u in self.failed_requests]
                + [f"image not loaded: {src}" for src in self.broken_images])


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on stderr
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``folder`` until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser(executable: str) -> Iterator[object]:
    """A headless Playwright ``Browser`` on ``executable``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


def _console(result: PageCheck, message) -> None:
    """Record an error message with the URL it is about; the browser's own request for
    ``/favicon.ico`` (which no page asks for) is not the page's error."""
    url = (message.location or {}).get("url", "")
    if message.type == "error" and not url.endswith("/favicon.ico"):
        result.console_errors.append(f"{message.text} ({url})" if url else message.text)


_IMAGES = """() => Array.from(document.images).map(img => ({
    src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0}))"""
_TABLES = "() => Array.from(document.querySelectorAll('table')).map(t => t.className)"


def check_page(browser_, page_file: Path, screenshot: Path | None = None) -> PageCheck:
    """Load ``page_file`` (served from its folder) and wait for the network to go idle;
    return what broke; save a full-page PNG to ``screenshot`` (written atomically)."""
    page_file = Path(page_file)
    with serve(page_file.parent) as base:
        page = browser_.new_page(viewport=VIEWPORT)
        result = PageCheck(url=f"{base}/{page_file.name}")
        page.on("console", lambda m: _console(result, m))
        page.on("pageerror", lambda err: result.console_errors.append(str(err)))
        page.on("requestfailed", lambda r: result.failed_requests.append(r.url))
        page.on("response", lambda r: result.failed_requests.append(f"{r.url} ({r.status})")
                if r.status >= 400 else None)
        page.goto(result.url, wait_until="networkidle")
        images = page.evaluate(_IMAGES)
        result.image_count = len(images)
        result.broken_images = [image["src"] for image in images if not image["ok"]]
        result.table_classes = page.evaluate(_TABLES)
        result.tables = len(result.table_classes)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            partial = screenshot.with_name(screenshot.stem + ".tmp.png")
            page.screenshot(path=str(partial), full_page=True)
            partial.replace(screenshot)
        page.close()
    return result
