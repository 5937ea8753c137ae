"""Headless Chromium running ``hoomi-client.js`` for the client conformance kit.

A *session* is one kit scenario's client: a fresh browser context whose page (served by
`Files` on a loopback port) imports ``kit-adapter.js``, which runs the client as an app
would. A session takes the kit's command lines and hands back two streams of lines,
``out`` (the control protocol's events) and ``err`` (diagnostics, hoomi log lines)::

    command lines ─→ page.evaluate(hoomiKit(command))          (one at a time, in order)
    kit-adapter.js ─ report(event) ─→ exposed binding ─→ out   (as the page reports them)
    console errors, uncaught page errors, a crash ─→ err (level error)

Chromium is ``$HOOMI_CHROMIUM`` or ``/usr/bin/chromium`` (never downloaded). Playwright is
asyncio-only, so unlike the rest of Hoomi this module runs on asyncio. A page of a public
origin could not reach the kit's loopback server (Chromium's local network access checks),
hence the loopback HTTP server rather than request routing.

Chromium's own console reports of WebSocket connections that failed (the kit refuses and
resets connections on purpose) are level info: they are the network's, not the page's.
Bounded: the wait for `closed` after `close` (`CLOSE_WAIT_S`); a command line is bounded by
whoever reads it (`hoomi.web.adapter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import importlib.resources
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from playwright.async_api import Browser, ConsoleMessage, Playwright, async_playwright

CLOSE_WAIT_S = 5.0  # for `closed` after `close` (the client's own close wait is 2 s)
CHROMIUM = "/usr/bin/chromium"
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Hoomi client kit</title>
<link rel="icon" href="data:,">
<script type="module">
import { kitAdapter } from "./kit-adapter.js";
window.hoomiKit = kitAdapter((event) => { window.hoomiKitEvent(event); });
</script>
"""
# Chromium's console lines for WebSocket connections that failed at the network level.
_NETWORK_NOISE = ("WebSocket connection to ",)

Transform = Callable[[str, str], str]  # (file name, its text) -> the text served
Emit = Callable[[str, bytes], None]  # ("out" or "err", one line without its newline)


def chromium_path() -> str:
    return os.environ.get("HOOMI_CHROMIUM", CHROMIUM)


def web_file(name: str) -> str:
    """A file of this package's web directory (hoomi-client.js, …) as text."""
    return importlib.resources.files("hoomi.web").joinpath(name).read_text("utf-8")


def log_line(level: str, event: str, **fields: Any) -> bytes:
    """One hoomi text log line (the format of `hoomi.server.logs`, which errorlog reads)."""
    now = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    parts = {"ts": ts, "level": level, "event": event, **fields}
    return " ".join(f"{k}={_text(v)}" for k, v in parts.items()).encode()


def _text(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return orjson.dumps(text).decode()
    return text


class _Files(http.server.BaseHTTPRequestHandler):
    """GET of the kit page and this package's .js files; anything else is a 404."""

    transform: Transform | None = None

    def do_GET(self) -> None:
        name = self.path.split("?", 1)[0].lstrip("/") or "index.html"
        body: str | None = None
        kind = "text/javascript"
        if name == "index.html":
            body, kind = PAGE, "text/html"
        elif "/" not in name and name.endswith(".js"):
            with contextlib.suppress(FileNotFoundError):
                body = web_file(name)
                if self.transform is not None:
                    body = self.transform(name, body)
        if body is None:
            self.send_error(404)
            return
        data = body.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (the page's own errors are)."""


class Files:
    """The page's files on a free loopback port, served from a daemon thread."""

    def __init__(self, transform: Transform | None = None) -> None:
        attributes = {"transform": staticmethod(transform) if transform else None}
        handler = type("Handler", (_Files,), attributes)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        threading.Thread(target=self._server.serve_forever, name="files", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Chromium:
    """One headless Chromium that runs sessions; `async with Chromium(...) as chromium`."""

    def __init__(self, transform: Transform | None = None) -> None:
        self._transform = transform
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self.files: Files | None = None

    async def __aenter__(self) -> Chromium:
        self.files = Files(self._transform)
        self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.launch(
            executable_path=chromium_path(), headless=True
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.close()
        if self._playwright is not None:
            await self._playwright.stop()
        if self.files is not None:
            self.files.close()

    async def session(self, commands: AsyncIterator[bytes], emit: Emit) -> None:
        """Run one client: each command line of `commands` goes to the page in order; ends
        after `close` (or the end of `commands`) once the page reported `closed`."""
        assert self._browser is not None
        assert self.files is not None
        closed = asyncio.Event()

        def event(data: Any) -> None:
            emit("out", orjson.dumps(data))
            if isinstance(data, dict) and data.get("event") == "closed":
                closed.set()

        def console(message: ConsoleMessage) -> None:
            text, url = message.text, message.location.get("url", "")
            if message.type == "error" and not text.startswith(_NETWORK_NOISE):
                emit("err", log_line("error", "browser_console_error", text=text, url=url))
            else:
                emit("err", log_line("info", "browser_console", kind=message.type, text=text))

        context = await self._browser.new_context()
        try:
            page = await context.new_page()
            page.on("console", console)
            page.on(
                "pageerror",
                lambda error: emit("err", log_line("error", "browser_page_error", error=error)),
            )
            page.on("crash", lambda _: emit("err", log_line("error", "browser_crashed")))
            await page.expose_function("hoomiKitEvent", event)
            await page.goto(self.files.url)
            await page.wait_for_function("window.hoomiKit !== undefined")
            async for line in commands:
                try:
                    command = orjson.loads(line)
                    if not isinstance(command, dict):
                        raise ValueError("not a JSON object")
                except ValueError as bad:
                    message = f"cannot run the command {line[:200]!r}: {bad}"
                    event({"event": "error", "code": "bad_command", "message": message})
                    continue
                await page.evaluate("(command) => window.hoomiKit(command)", command)
                if command.get("cmd") == "close":
                    break
            else:  # the commands ended without `close`: close as an app would
                await page.evaluate("() => window.hoomiKit({cmd: 'close'})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), CLOSE_WAIT_S)
        finally:
            with contextlib.suppress(Exception):
                await context.close()
