"""The conformance runner's own WebSocket client: wsproto over a Trio stream.

It controls what a client library would hide: `pause` stops reading the socket altogether
(no pongs; the server's writes back up), `drop` aborts the TCP connection without a close
frame, `send_text_bytes` sends a text frame with arbitrary bytes. A reader task per
connection buffers the server's frames; every wait is bounded by the caller's deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError as WsProtocolError

CHUNK = 65536
SHOW_CHARS = 300


class StepFailed(Exception):
    """A step's expectation did not hold; the message says what was expected and what came."""


@attrs.frozen
class Frame:
    value: Any  # the parsed JSON


@attrs.frozen
class Bad:
    detail: str  # a server frame that is not JSON text


@attrs.frozen
class End:
    """How the connection ended. `code` is the close code of the close frame received
    (None: the TCP connection ended without one); `by` who started the close."""

    code: int | None
    by: Literal["server", "runner"]
    detail: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _masked_text_frame(payload: bytes) -> bytes:
    """A client text frame carrying `payload` as is (wsproto would insist on valid UTF-8)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    mask = os.urandom(4)
    key = (mask * (size // 4 + 1))[:size]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return header + mask + body


class Connection:
    """One client WebSocket. Its reader task (`read_loop`) buffers the server's frames and
    answers pings until `pause`; `next_item` resumes it."""

    def __init__(self, name: str, stream: trio.abc.Stream, ws: WSConnection) -> None:
        self.name = name
        self.session_id: str | None = None
        self.end: End | None = None
        self.violations: list[str] = []
        self._stream = stream
        self._ws = ws
        self._items: deque[Frame | Bad] = deque()
        self._changed = trio.Event()
        self._send_lock = trio.Lock()
        self._paused = False
        self._resumed = trio.Event()
        self._resumed.set()
        self._read_scope: trio.CancelScope | None = None
        self._parts: list[str] = []
        self._binary_size = 0
        self._closed_locally = False

    @classmethod
    async def open(cls, name: str, url: str, subprotocols: Sequence[str]) -> Connection:
        """Connect and complete the opening handshake (unbounded: the caller bounds it)."""
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise StepFailed(f"not a WebSocket URL: {url}")
        port = parts.port or (443 if secure else 80)
        try:
            stream: trio.abc.Stream
            if secure:
                stream = await trio.open_ssl_over_tcp_stream(
                    parts.hostname, port, ssl_context=ssl.create_default_context()
                )
            else:
                stream = await trio.open_tcp_stream(parts.hostname, port)
        except OSError as exc:
            raise StepFailed(f"cannot connect to {url}: {exc}") from None
        try:
            ws = WSConnection(ConnectionType.CLIENT)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            request = Request(host=parts.netloc, target=target, subprotocols=list(subprotocols))
            await stream.send_all(ws.send(request))
            connection: Connection | None = None
            after: list[Event] = []
            while connection is None:
                data = await stream.receive_some(CHUNK)
                if not data:
                    raise StepFailed("the server ended the TCP connection during the handshake")
                ws.receive_data(bytes(data))
                for event in ws.events():
                    if connection is not None:
                        after.append(event)
                    elif isinstance(event, AcceptConnection):
                        connection = cls(name, stream, ws)
                    elif isinstance(event, RejectConnection):
                        raise StepFailed(
                            f"the server refused the WebSocket upgrade with HTTP "
                            f"{event.status_code}"
                        )
            reply = connection._handle(after)
            if reply:
                await connection._send_raw(reply)
            return connection
        except WsProtocolError as exc:
            await trio.aclose_forcefully(stream)
            raise StepFailed(f"bad WebSocket handshake from the server: {exc}") from None
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    # -- reading ---------------------------------------------------------------------------

    async def read_loop(self) -> None:
        """Read until the TCP connection ends; runs in the run's nursery."""
        try:
            while True:
                while self._paused:
                    await self._resumed.wait()
                with trio.CancelScope() as scope:
                    self._read_scope = scope
                    data = await self._stream.receive_some(CHUNK)
                self._read_scope = None
                if scope.cancelled_caught:
                    continue  # paused while waiting: nothing was read
                if not data:
                    self._finish(
                        End(
                            None,
                            "server",
                            "the server ended the TCP connection without a close frame",
                        )
                    )
                    return
                if self._ws.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
                    self._ws.receive_data(bytes(data))
                    reply = self._handle(list(self._ws.events()))
                    if reply:
                        await self._send_raw(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if self._closed_locally:
                self._finish(End(None, "runner", "the runner closed the connection"))
            else:
                self._finish(End(None, "server", f"the TCP connection broke ({exc!r})"))
        finally:
            self._read_scope = None

    def _handle(self, events: list[Event]) -> bytes:
        """Buffer what the events carry; return the bytes to answer with (pongs, close)."""
        reply = b""
        for event in events:
            if isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    text = "".join(self._parts)
                    self._parts.clear()
                    self._push_text(text)
            elif isinstance(event, BytesMessage):
                self._binary_size += len(event.data)
                if event.message_finished:
                    self._push_bad(f"a binary frame of {self._binary_size} bytes")
                    self._binary_size = 0
            elif isinstance(event, Ping):
                if self._ws.state is ConnectionState.OPEN:
                    reply += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                reply += self._on_close(event)
        return reply

    def _on_close(self, event: CloseConnection) -> bytes:
        state = self._ws.state
        reason = f" ({event.reason})" if event.reason else ""
        if state is ConnectionState.REMOTE_CLOSING:
            self._finish(End(event.code, "server", f"the server closed with {event.code}{reason}"))
            return self._ws.send(event.response())
        if state is ConnectionState.CLOSED:
            self._finish(
                End(
                    event.code, "runner", f"the server answered the close with {event.code}{reason}"
                )
            )
            return b""
        # Still open: wsproto could not parse what the server sent and made this event up.
        self._push_bad(f"a frame that breaks WebSocket framing{reason}")
        self._finish(End(None, "server", f"the server broke WebSocket framing{reason}"))
        return self._ws.send(CloseConnection(code=event.code))

    def _push_text(self, text: str) -> None:
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except ValueError:
            self._push_bad(f"a text frame that is not JSON: {text[:SHOW_CHARS]!r}")
            return
        if isinstance(value, dict) and value.get("type") == "welcome":
            session_id = value.get("session_id")
            if isinstance(session_id, str):
                self.session_id = session_id
        self._items.append(Frame(value))
        self._notify()

    def _push_bad(self, detail: str) -> None:
        self.violations.append(detail)
        self._items.append(Bad(detail))
        self._notify()

    def _finish(self, end: End) -> None:
        if self.end is None:
            self.end = end
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def pause(self) -> None:
        """Stop reading the socket: no more frames are buffered and pings go unanswered."""
        self._paused = True
        self._resumed = trio.Event()
        if self._read_scope is not None:
            self._read_scope.cancel()

    def resume(self) -> None:
        self._paused = False
        self._resumed.set()

    async def next_item(self, deadline: float) -> Frame | Bad | End | None:
        """The next buffered frame, else how the connection ended, else wait for either;
        None at `deadline` (a deadline in the past checks only what is buffered)."""
        self.resume()
        while True:
            if self._items:
                return self._items.popleft()
            if self.end is not None:
                return self.end
            if trio.current_time() >= deadline:
                return None
            with trio.move_on_at(deadline):
                await self._changed.wait()

    # -- writing ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.end is not None:
            raise StepFailed(f"cannot send on {self.name}: {self.end.detail}")
        if self._ws.state is not ConnectionState.OPEN:
            raise StepFailed(f"cannot send on {self.name}: it is closing")

    async def _send_raw(self, data: bytes) -> None:
        """Write bytes; a broken connection is not an error here (the reader reports it)."""
        async with self._send_lock:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._stream.send_all(data)

    async def send_text(self, text: str) -> None:
        self._check_open()
        await self._send_raw(self._ws.send(TextMessage(data=text)))

    async def send_binary(self, data: bytes) -> None:
        self._check_open()
        await self._send_raw(self._ws.send(BytesMessage(data=data)))

    async def send_text_bytes(self, data: bytes) -> None:
        self._check_open()
        await self._send_raw(_masked_text_frame(data))

    async def close(self, code: int, deadline: float) -> End | None:
        """Start the closing handshake (unless the server did) and wait for its end."""
        self.resume()
        if self.end is None and self._ws.state is ConnectionState.OPEN:
            await self._send_raw(self._ws.send(CloseConnection(code=code)))
        while self.end is None and trio.current_time() < deadline:
            with trio.move_on_at(deadline):
                await self._changed.wait()
        self._items.clear()
        end = self.end
        await self.aclose()
        return end

    async def drop(self) -> None:
        """Abort the TCP connection: no close frame, and a reset rather than a FIN."""
        if isinstance(self._stream, trio.SocketStream):
            linger = struct.pack("ii", 1, 0)
            self._stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        await self.aclose()
        self._finish(End(None, "runner", "the runner dropped the connection"))

    async def aclose(self) -> None:
        self._closed_locally = True
        self.resume()
        await trio.aclose_forcefully(self._stream)

    @property
    def closed_locally(self) -> bool:
        return self._closed_locally


# -- running --------------------------------------------------------------------------------
