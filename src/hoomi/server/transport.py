"""The WebSocket transport: wsproto on a Trio stream, behind one small class.

Why not trio-websocket (ADR 4): fan-out must encode a frame once and hand it to every
recipient without an ``await`` per recipient. Here a server->client text frame is built once
(`text_frame`) and `WebSocket.send_nowait` writes it straight to the socket when nothing is
queued (a non-blocking ``os.write``), queueing it only on EAGAIN or a partial write; a writer
task is started for that connection only while its queue is non-empty, so an idle
connection costs one task (its reader). Order is kept: nothing bypasses a non-empty queue.

Bounded: inbound frames by `max_frame_bytes` (larger ones are reported as `TooBig` as soon as
the bytes exceed it, never buffered whole), outbound by `outbox_size` frames (`send_nowait`
returns False when full: the caller closes the session as a slow consumer).
"""

from __future__ import annotations

import collections
import os
import struct
from collections.abc import Callable

import attrs
import trio
import wsproto
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

_RECEIVE_CHUNK = 65536


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented server->client text frame around UTF-8 `payload`."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


@attrs.frozen
class Handshake:
    """What the client asked for when it upgraded."""

    path: str
    origin: str | None
    subprotocols: tuple[str, ...]
    user_agent: str | None


@attrs.frozen
class Text:
    data: str


@attrs.frozen
class Binary:
    pass


@attrs.frozen
class TooBig:
    pass


@attrs.frozen
class Invalid:
    """A frame wsproto refused (invalid UTF-8: 1007; other framing errors: 1002)."""

    code: int
    reason: str


@attrs.frozen
class Closed:
    """The peer closed (`code` from its close frame, 1006 when the socket just ended)."""

    code: int


Incoming = Text | Binary | TooBig | Invalid | Closed


class WebSocket:
    """One client connection. The reader (one task) calls `receive`; anyone may call the
    `*_nowait` methods; `run_writer_in` gives it the nursery its on-demand writer runs in."""

    __slots__ = (
        "_fd",
        "_flushed",
        "_nursery",
        "_outbox_size",
        "_parts",
        "_queue",
        "_size",
        "_stream",
        "_writing",
        "_ws",
        "broken",
        "closing",
        "last_received",
        "max_frame_bytes",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_frame_bytes: int,
        outbox_size: int,
        raw_fd: int | None,
    ) -> None:
        self._stream = stream
        self._ws: wsproto.WSConnection | Connection = wsproto.WSConnection(
            wsproto.ConnectionType.SERVER
        )
        self.max_frame_bytes = max_frame_bytes
        self._outbox_size = outbox_size
        # A raw fd exists only for plain TCP; TLS bytes must go through the SSL stream.
        self._fd = raw_fd
        # Created on demand and dropped when empty: an idle connection holds no queue,
        # no event and no message parts (each costs hundreds of bytes per connection).
        self._queue: collections.deque[bytes] | None = None
        self._writing = False
        self._nursery: trio.Nursery | None = None
        self._flushed: trio.Event | None = None  # None: nothing is being written
        self._parts: list[str] | None = None
        self._size = 0
        self.broken = False
        self.closing = False
        self.last_received = trio.current_time()

    # -- handshake ------------------------------------------------------------------------

    async def accept(
        self, choose: Callable[[Handshake], tuple[int, str] | str | None]
    ) -> Handshake | None:
        """Read the HTTP upgrade; `choose` returns the subprotocol to accept (None: accept
        without one) or an HTTP (status, reason) to refuse with. Returns None if the client
        went away or was refused."""
        while True:
            data = await self._stream.receive_some(_RECEIVE_CHUNK)
            try:
                self._ws.receive_data(bytes(data) if data else None)
            except RemoteProtocolError as exc:
                # Not a WebSocket upgrade (e.g. plain HTTP): answer 400 if wsproto can.
                if exc.event_hint is not None:
                    await self._send_all(self._ws.send(exc.event_hint))
                return None
            if not data:
                return None
            for event in self._ws.events():
                if isinstance(event, Request):
                    headers = {k.decode("latin-1").lower(): v for k, v in event.extra_headers}
                    origin = headers.get("origin")
                    agent = headers.get("user-agent")
                    handshake = Handshake(
                        path=event.target.split("?", 1)[0],
                        origin=origin.decode("latin-1") if origin is not None else None,
                        subprotocols=tuple(event.subprotocols),
                        user_agent=agent.decode("latin-1") if agent is not None else None,
                    )
                    choice = choose(handshake)
                    if isinstance(choice, tuple):
                        await self._refuse(*choice)
                        return None
                    accepted = self._ws.send(AcceptConnection(subprotocol=choice, extensions=[]))
                    # Keep only the frame protocol: the HTTP handshake state (~2.8 KB per
                    # connection) is garbage from here on. Bytes that came with the
                    # upgrade were handed to it already.
                    assert isinstance(self._ws, wsproto.WSConnection)
                    assert self._ws.connection is not None
                    self._ws = self._ws.connection
                    await self._send_all(accepted)
                    return handshake

    async def _refuse(self, status: int, reason: str) -> None:
        body = (reason + "\n").encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        headers.append((b"content-length", str(len(body)).encode()))
        out = self._ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        out += self._ws.send(RejectData(data=body))
        await self._send_all(out)

    async def _send_all(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True

    # -- receiving ------------------------------------------------------------------------

    async def receive(self) -> Incoming:
        """The next complete inbound frame or what ended the stream. Answers pings itself."""
        while True:
            for event in self._ws.events():
                result = self._on_event(event)
                if result is not None:
                    return result
            try:
                data = await self._stream.receive_some(_RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.last_received = trio.current_time()
            if not data:
                self.broken = True
                return Closed(1006)
            try:
                self._ws.receive_data(bytes(data))
            except RemoteProtocolError as exc:  # data after the close handshake
                return Invalid(1002, str(exc))

    def _on_event(self, event: object) -> Incoming | None:
        if isinstance(event, TextMessage):
            data = event.data
            self._size += len(data) if data.isascii() else len(data.encode())
            if self._size > self.max_frame_bytes:
                return TooBig()
            if event.message_finished:
                if self._parts is not None:
                    data = "".join((*self._parts, data))
                    self._parts = None
                self._size = 0
                return Text(data)
            if self._parts is None:
                self._parts = []
            self._parts.append(data)
        elif isinstance(event, BytesMessage):
            return Binary()
        elif isinstance(event, Ping):
            self._write(self._ws.send(event.response()), bounded=False)
        elif isinstance(event, CloseConnection):
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.CONNECTING):
                return Invalid(event.code, event.reason or "invalid frame")
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                self._write(self._ws.send(event.response()), bounded=False)
            return Closed(event.code)
        elif isinstance(event, Pong):
            pass  # activity only; last_received is already updated
        return None

    # -- sending --------------------------------------------------------------------------

    def send_nowait(self, frame: bytes) -> bool:
        """Queue one pre-built frame (see `text_frame`); False if the outbox is full."""
        if self.closing or self.broken:
            return True  # the session is ending; its close is already decided
        return self._write(frame, bounded=True)

    def ping_nowait(self) -> None:
        if not (self.closing or self.broken):
            self._write(self._ws.send(Ping(b"")), bounded=False)

    def close_nowait(self, code: int, reason: str = "") -> None:
        """Queue a close frame after everything already queued; later frames are dropped."""
        if self.closing or self.broken:
            return
        self.closing = True
        if self._ws.state is ConnectionState.OPEN:
            self._write(self._ws.send(CloseConnection(code=code, reason=reason)), bounded=False)

    @property
    def queued(self) -> int:
        return len(self._queue) if self._queue else 0

    def _write(self, frame: bytes, *, bounded: bool) -> bool:
        if self.broken:
            return True
        if not self._queue and not self._writing and self._fd is not None:
            try:
                written = os.write(self._fd, frame)
            except BlockingIOError:
                written = 0
            except OSError:
                self.broken = True
                return True
            if written == len(frame):
                return True
            frame = frame[written:]
        elif bounded and self._queue is not None and len(self._queue) >= self._outbox_size:
            return False
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.append(frame)
        self._start_writer()
        return True

    def _start_writer(self) -> None:
        if self._writing or self._nursery is None:
            return
        self._writing = True
        self._flushed = trio.Event()
        self._nursery.start_soon(self._drain)

    def run_writer_in(self, nursery: trio.Nursery) -> None:
        """Let the on-demand writer run in `nursery` (the connection's own)."""
        self._nursery = nursery
        if self._queue:
            self._start_writer()

    async def _drain(self) -> None:
        try:
            while not self.broken and self._queue:
                queue = self._queue  # `aclose` may drop `_queue` while we send
                try:
                    await self._stream.send_all(queue[0])
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.broken = True
                    break
                queue.popleft()
        finally:
            self._queue = None  # drained, or the socket broke and nothing more can go
            self._writing = False
            if self._flushed is not None:
                self._flushed.set()
                self._flushed = None

    async def flushed(self) -> None:
        """Wait until everything queued so far is written (or the socket broke)."""
        if self._flushed is not None:
            await self._flushed.wait()

    async def aclose(self) -> None:
        self.broken = True
        self._queue = None
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self._stream.aclose()
