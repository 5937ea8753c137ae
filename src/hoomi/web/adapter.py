"""The browser client's adapter for the client conformance kit: ``python -m hoomi.web.adapter``.

`hoomi-conformance client -- python -m hoomi.web.adapter` grades ``hoomi-client.js`` running
in headless Chromium (`hoomi.web.browser`). This process speaks the kit's line-JSON control
protocol on stdin/stdout (``spec/v1/client-kit/``) exactly as the SDK's adapter does; stderr
gets the page's diagnostics as hoomi log lines (console and page errors at level error).

Chromium takes seconds to start, and the kit starts its adapter once per scenario and wants
a connection within 5 s of `connect`. So there are two ways to run it:

- alone (the default): this process starts Chromium for its one scenario. Fine on an idle
  machine (about 2.5 s to a connection), too slow on a loaded one;
- through a host: ``python -m hoomi.web.adapter --host PATH`` starts Chromium once, listens
  on the Unix socket PATH, prints ``ready PATH`` and runs one session (a fresh browser
  context, its page loaded beforehand: `WARM`) per connection until its stdin ends. With
  ``HOOMI_BROWSER_HOST=PATH`` set, this adapter only relays (and never imports Playwright)::

      kit ─ stdin ─→ adapter ─ bytes as they come ─→ host: a session's command lines
      kit ← stdout ─ adapter ← "o" + event line  ──── host
      kit ← stderr ─ adapter ← "e" + log line    ──── host

Bounded: a command line (`MAX_LINE`: a longer one is skipped and reported as an `error`
event), the relay's line from the host (`_HOST_LINE`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from .browser import Emit, Transform

MAX_LINE = 1024 * 1024  # bytes of one command line
HOST_ENV = "HOOMI_BROWSER_HOST"
_HOST_LINE = 2 * MAX_LINE + 1024  # an event line, relayed from the host
WARM = 6  # pages a host keeps loaded (the kit runs 4 scenarios at once; 2 reload meanwhile)


async def lines(reader: asyncio.StreamReader, emit: Emit) -> AsyncIterator[bytes]:
    """The non-blank lines of `reader` until EOF; one over `MAX_LINE` is skipped, and an
    `error` event says so."""
    buffer = b""
    skipping = False  # inside a line longer than MAX_LINE
    while True:
        data = await reader.read(65536)
        if not data:
            if buffer.strip() and not skipping:
                yield buffer
            return
        buffer += data
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if skipping:
                skipping = False
            elif line.strip():
                yield line
        if len(buffer) > MAX_LINE:
            buffer, skipping = b"", True
            message = f"a command line longer than {MAX_LINE} bytes: skipped"
            emit("out", orjson.dumps({"event": "error", "code": "bad_command", "message": message}))


async def _stdin() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _stdio(kind: str, line: bytes) -> None:
    stream = sys.stdout.buffer if kind == "out" else sys.stderr.buffer
    stream.write(line + b"\n")
    stream.flush()


async def alone(transform: Transform | None = None) -> None:
    """One scenario in a Chromium of this process's own."""
    from .browser import Chromium

    stdin = await _stdin()
    async with Chromium(transform) as chromium:
        await chromium.session(lines(stdin, _stdio), _stdio)


async def host(path: str, transform: Transform | None = None) -> None:
    """Serve sessions on the Unix socket `path` until stdin ends."""
    from .browser import Chromium

    async with Chromium(transform, warm=WARM) as chromium:
        await chromium.warm_up()

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            def emit(kind: str, line: bytes) -> None:
                if not writer.is_closing():
                    writer.write((b"o" if kind == "out" else b"e") + line + b"\n")

            try:
                await chromium.session(lines(reader, emit), emit)
                await writer.drain()
            except ConnectionError:
                pass  # the relay went away (the kit ends an adapter it gave up on)
            finally:
                writer.close()

        server = await asyncio.start_unix_server(session, path)
        async with server:
            print(f"ready {path}", flush=True)
            stdin = await _stdin()
            while await stdin.read(65536):
                pass
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def relay(path: str) -> None:
    """The adapter of one scenario through the host at `path`."""
    reader, writer = await asyncio.open_unix_connection(path, limit=_HOST_LINE)

    async def commands() -> None:
        stdin = await _stdin()
        while data := await stdin.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()

    sending = asyncio.create_task(commands())
    try:
        while line := await reader.readline():
            _stdio("out" if line[:1] == b"o" else "err", line[1:].rstrip(b"\n"))
    finally:
        sending.cancel()
        writer.close()


def run(transform: Transform | None = None, argv: list[str] | None = None) -> None:
    """`transform` rewrites each file the page is served (tests/broken_browser_adapter.py
    breaks the client with it); it applies alone or in a host, not in a relay."""
    parser = argparse.ArgumentParser(prog="python -m hoomi.web.adapter", description=__doc__)
    parser.add_argument("--host", metavar="PATH", help="serve sessions on this Unix socket")
    args = parser.parse_args(argv)
    if args.host:
        asyncio.run(host(args.host, transform))
    elif os.environ.get(HOST_ENV):
        asyncio.run(relay(os.environ[HOST_ENV]))
    else:
        asyncio.run(alone(transform))


if __name__ == "__main__":
    run()
