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
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Playwright,
    async_playwright,
)

_BACKLOG = 100  # lines a page says before its session starts, kept for it
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


class _Page:
    """A browser context whose page has loaded the kit page, waiting for a session (and
    loaded again after each). What the page says while no session has it waits in
    `backlog` (bounded: a page nobody drives says next to nothing)."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.closed = asyncio.Event()  # the page reported `closed`
        self._emit: Emit | None = None
        self._backlog: list[tuple[str, bytes]] = []

    @classmethod
    async def open(cls, browser: Browser, url: str) -> _Page:
        context = await browser.new_context()
        try:
            loaded = cls(context, await context.new_page())
            page = loaded.page
            page.on("console", loaded._console)
            page.on(
                "pageerror",
                lambda error: loaded.say(
                    "err", log_line("error", "browser_page_error", error=error)
                ),
            )
            page.on("crash", lambda _: loaded.say("err", log_line("error", "browser_crashed")))
            await page.expose_function("hoomiKitEvent", loaded.event)
            await loaded.load(url)
        except BaseException:
            with contextlib.suppress(Exception):
                await context.close()
            raise
        return loaded

    async def load(self, url: str) -> None:
        """(Re)load the kit page: a new document, whose client starts from nothing."""
        await self.page.goto(url)
        await self.page.wait_for_function("window.hoomiKit !== undefined")
        self._emit = None
        self._backlog.clear()  # the previous document's last words
        self.closed = asyncio.Event()

    def attach(self, emit: Emit) -> None:
        self._emit = emit
        for kind, line in self._backlog:
            emit(kind, line)
        self._backlog.clear()

    def say(self, kind: str, line: bytes) -> None:
        if self._emit is not None:
            self._emit(kind, line)
        elif len(self._backlog) < _BACKLOG:
            self._backlog.append((kind, line))

    def event(self, data: Any) -> None:
        self.say("out", orjson.dumps(data))
        if isinstance(data, dict) and data.get("event") == "closed":
            self.closed.set()

    def _page_error(self, error: Error) -> None:
        self.say("err", log_line("error", "browser_page_error", error=error))

    def _console(self, message: ConsoleMessage) -> None:
        text, url = message.text, message.location.get("url", "")
        if message.type == "error" and not text.startswith(_NETWORK_NOISE):
            self.say("err", log_line("error", "browser_console_error", text=text, url=url))
        else:
            self.say("err", log_line("info", "browser_console", kind=message.type, text=text))


class Chromium:
    """One headless Chromium that runs sessions; `async with Chromium(...) as chromium`.

    `warm` pages wait loaded for the next sessions (a host's), so that a session starts
    without a new context (a renderer process), a page load and a module import; after a
    session its page is loaded again (a new document) and waits for the next."""

    def __init__(self, transform: Transform | None = None, *, warm: int = 0) -> None:
        self._transform = transform
        self._warm = warm
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self.files: Files | None = None
        self._ready: asyncio.Queue[_Page] = asyncio.Queue()
        self._filling: set[asyncio.Task[None]] = set()
        self._reloading = 0  # pages being loaded again, each promised to the pool

    async def __aenter__(self) -> Chromium:
        self.files = Files(self._transform)
        self._playwright = await async_playwright().start()
        self._browser = await self._playwright.chromium.launch(
            executable_path=chromium_path(), headless=True
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._filling:
            task.cancel()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.close()
        if self._playwright is not None:
            await self._playwright.stop()
        if self.files is not None:
            self.files.close()

    async def _open(self) -> _Page:
        assert self._browser is not None
        assert self.files is not None
        return await _Page.open(self._browser, self.files.url)

    async def warm_up(self) -> None:
        """Load the `warm` pages (a host says it is ready after this)."""
        pages = [await self._open() for _ in range(self._warm - self._ready.qsize())]
        for page in pages:
            self._ready.put_nowait(page)

    async def _take(self) -> _Page:
        """A loaded page: a waiting one, else the next one loaded again (a reload is far
        cheaper than a new context, which is a new renderer process), else a new one."""
        if self._ready.empty() and self._reloading == 0:
            return await self._open()
        return await self._ready.get()

    def _give_back(self, loaded: _Page) -> None:
        """After a session: its page is loaded again for the next one (in the background),
        if the pool wants it; a page that fails to load is dropped."""
        if self._ready.qsize() + self._reloading >= self._warm:
            self._later(loaded.context.close())
            return

        async def reload() -> None:
            assert self.files is not None
            try:
                await loaded.load(self.files.url)
            except Exception:
                with contextlib.suppress(Exception):
                    await loaded.context.close()
                # A session waiting for this page gets a new one instead.
                self._later(self._replace())
                return
            finally:
                self._reloading -= 1
            self._ready.put_nowait(loaded)

        self._reloading += 1
        self._later(reload())

    async def _replace(self) -> None:
        self._ready.put_nowait(await self._open())

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._filling.add(task)
        task.add_done_callback(self._filling.discard)

    async def session(self, commands: AsyncIterator[bytes], emit: Emit) -> None:
        """Run one client: each command line of `commands` goes to the page in order; ends
        after `close` (or the end of `commands`) once the page reported `closed`."""
        loaded = await self._take()
        page = loaded.page
        loaded.attach(emit)
        clean = False
        try:
            async for line in commands:
                try:
                    command = orjson.loads(line)
                    if not isinstance(command, dict):
                        raise ValueError("not a JSON object")
                except ValueError as bad:
                    message = f"cannot run the command {line[:200]!r}: {bad}"
                    loaded.event({"event": "error", "code": "bad_command", "message": message})
                    continue
                await page.evaluate("(command) => window.hoomiKit(command)", command)
                if command.get("cmd") == "close":
                    break
            else:  # the commands ended without `close`: close as an app would
                await page.evaluate("() => window.hoomiKit({cmd: 'close'})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loaded.closed.wait(), CLOSE_WAIT_S)
            clean = True
        finally:
            if clean:
                self._give_back(loaded)
            else:
                with contextlib.suppress(Exception):
                    await loaded.context.close()
