"""The WebSocket transport: the HTTP upgrade and the frames, parsed here, on a Trio stream.

Why not trio-websocket (ADR 4): fan-out must encode a frame once and hand it to every
recipient without an ``await`` per recipient. Here a server->client text frame is built once
(`text_frame`) and `WebSocket.send_nowait` writes it straight to the socket when nothing is
queued (a non-blocking ``os.write``), queueing it only on EAGAIN or a partial write; a writer
task is started for that connection only while its queue is non-empty, so an idle
connection costs one task (its reader). Order is kept: nothing bypasses a non-empty queue.
Inside ``with cork:`` (a `Cork`: the server corks the report of each commit of several
writes, its fan-out and acks), direct writes are held, and each connection's go out in one
``os.writev`` when the block ends.

Why frames are parsed here, not by wsproto after the upgrade: wsproto's per-connection
state costs ~4.8 KB and a generator and event objects per frame; client->server framing
(RFC 6455 section 5: masked, no extensions, text only) is a few dozen lines, and the idle
target is <= 10 KB per connection. Why the upgrade too (ADR 4): wsproto's handshake (h11)
took 130-190 µs per connection here against ~25 µs for `parse_upgrade`, which checks what
RFC 6455 section 4.2.1 asks of the request and nothing else.

Bounded: inbound messages by `max_frame_bytes`, checked from each frame header before its
payload is read (an oversized frame is reported as `TooBig` and skipped, never buffered),
outbound by `outbox_size` frames (`send_nowait` returns False when full: the caller closes
the session as a slow consumer).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import http
import itertools
import os
import re
import struct
from collections.abc import Callable

import attrs
import trio

from . import logs

_RECEIVE_CHUNK = 65536


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented server->client text frame around UTF-8 `payload`."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


_CLOSE_REASON_BYTES = 123  # a control frame holds 125 bytes, 2 of them the code
_WRITE_BATCH = 256 * 1024  # bytes of queued frames joined into one write
_IOV_MAX = 1024  # buffers per writev (Linux's limit)
_MAX_FRAGMENTS = 1024  # per message: fragments cost memory even when empty
_PINGS_PER_S, _PING_BURST = 5.0, 10.0  # pings answered per connection
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # any control byte but tab
_MAX_HEAD = 16 * 1024  # bytes of request line and headers
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PING = b"\x89\x00"


def _control(first_byte: int, payload: bytes) -> bytes:
    """An unmasked server control frame (payload at most 125 bytes)."""
    return bytes((first_byte, len(payload))) + payload


def _unmask(mask: bytes, data: bytes) -> bytes:
    """XOR `data` with the repeated 4-byte `mask` (one big-int operation, not per byte)."""
    size = len(data)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def _text(payload: bytes) -> Text | Invalid:
    try:
        return Text(payload.decode())
    except UnicodeDecodeError:
        return Invalid(1007, "a text frame was not valid UTF-8")


@attrs.frozen
class Handshake:
    """What the client asked for when it upgraded."""

    path: str
    origin: str | None
    subprotocols: tuple[str, ...]
    key: bytes = b""  # Sec-WebSocket-Key, answered by `accept_response`
    query: str = ""  # after the path's "?", if any


@attrs.frozen
class Refusal:
    """An upgrade refused with an HTTP status, a one-line reason and any extra headers."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> bytes:
        body = (self.reason + "\n").encode()
        phrase = http.HTTPStatus(self.status).phrase
        head = [
            f"HTTP/1.1 {self.status} {phrase}",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _tokens(values: list[bytes] | None) -> list[bytes]:
    """The comma-separated tokens of a header's values, lowercased."""
    return [t.strip(b" \t").lower() for v in values or () for t in v.split(b",")]


def parse_upgrade(head: bytes) -> Handshake | Refusal:
    """A WebSocket upgrade request head (request line and headers, without the blank line)
    as a `Handshake`, or the `Refusal` to answer it with (RFC 6455 section 4.2.1)."""
    lines = _LINE_END.split(head)
    if any(_CONTROL.search(line) for line in lines):  # e.g. a lone CR, which logs would echo
        return Refusal(400, "control characters in the request head")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return Refusal(400, "expected an HTTP/1.1 request line")
    method, target, _ = parts
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return Refusal(400, "malformed header line")
        headers.setdefault(name.lower(), []).append(value.strip(b" \t"))
    single = {name: values[0] for name, values in headers.items() if len(values) == 1}
    if method != b"GET":
        return Refusal(405, "a WebSocket upgrade is a GET", (("Allow", "GET"),))
    if b"host" not in single:
        return Refusal(400, "exactly one Host header is required")
    if b"transfer-encoding" in headers or any(
        v != b"0" for v in headers.get(b"content-length", ())
    ):
        return Refusal(400, "an upgrade request has no body")
    if b"websocket" not in _tokens(headers.get(b"upgrade")) or b"upgrade" not in _tokens(
        headers.get(b"connection")
    ):
        return Refusal(400, "not a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)")
    if single.get(b"sec-websocket-version") != b"13":
        return Refusal(426, "WebSocket version 13 is required", (("Sec-WebSocket-Version", "13"),))
    key = single.get(b"sec-websocket-key", b"")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        return Refusal(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    origin = headers.get(b"origin")
    if origin is not None and len(origin) > 1:
        return Refusal(400, "at most one Origin header")
    path, _, query = target.partition(b"?")
    return Handshake(
        path=path.decode("latin-1"),
        query=query.decode("latin-1"),
        origin=origin[0].decode("latin-1") if origin else None,
        subprotocols=tuple(
            v.strip(b" \t").decode("latin-1")
            for value in headers.get(b"sec-websocket-protocol", ())
            for v in value.split(b",")
            if v.strip(b" \t")
        ),
        key=key,
    )


def accept_response(key: bytes, subprotocol: str | None) -> bytes:
    """The 101 answer to an upgrade with Sec-WebSocket-Key `key`."""
    accept = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += b"Sec-WebSocket-Accept: " + accept + b"\r\n"
    if subprotocol is not None:
        head += b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1") + b"\r\n"
    return head + b"\r\n"


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
    """A frame refused (invalid UTF-8: 1007; other framing errors: 1002)."""

    code: int
    reason: str


@attrs.frozen
class Closed:
    """The peer closed (`code` from its close frame, 1006 when the socket just ended)."""

    code: int


Incoming = Text | Binary | TooBig | Invalid | Closed


class Cork:
    """Holds what is written to sockets inside ``with cork:`` and writes each socket's frames
    with one ``os.writev`` when the outermost block ends.

    A commit's message events and acks for one connection then cost one system call and one
    loopback segment instead of one each. Only writes that would go straight to the socket
    are held (nothing queued before them, plain TCP); they are as many as the block wrote, so
    the block must not await: it holds what one synchronous burst (one commit's report)
    produces. What the socket does not take at the end is queued frame by frame, and the
    outbox bound applies from the next write on.
    """

    __slots__ = ("_held", "depth")

    def __init__(self) -> None:
        self.depth = 0
        self._held: dict[WebSocket, list[bytes]] = {}

    def hold(self, ws: WebSocket, frame: bytes) -> None:
        frames = self._held.get(ws)
        if frames is None:
            self._held[ws] = [frame]
        else:
            frames.append(frame)

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1
        if self.depth == 0 and self._held:
            held, self._held = self._held, {}
            for ws, frames in held.items():
                try:
                    ws._write_held(frames)
                except Exception:  # a commit's report runs where nothing may raise
                    ws.broken = True
                    logs.failure("cork_flush_failed")


class WebSocket:
    """One client connection. The reader (one task) calls `receive`; anyone may call the
    `*_nowait` methods; `run_writer_in` gives it the nursery its on-demand writer runs in."""

    __slots__ = (
        "_buf",
        "_cork",
        "_drained",
        "_failed",
        "_fd",
        "_flushed",
        "_nursery",
        "_outbox_bytes",
        "_outbox_size",
        "_parts",
        "_pinged_at",
        "_pings",
        "_pos",
        "_queue",
        "_queued_bytes",
        "_size",
        "_skip",
        "_stream",
        "_writing",
        "broken",
        "closing",
        "last_received",
        "max_frame_bytes",
        "pongs",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_frame_bytes: int,
        outbox_size: int,
        outbox_bytes: int,
        raw_fd: int | None,
        cork: Cork | None = None,
    ) -> None:
        self._stream = stream
        self._cork = cork
        self._buf = b""  # received bytes; those before `_pos` are parsed already
        self._pos = 0
        self._pings = _PING_BURST
        self._pinged_at = 0.0
        self._queued_bytes = 0
        self._outbox_bytes = outbox_bytes
        self._failed = False  # a frame broke the protocol: parse nothing more
        self._skip = 0  # bytes of an oversized frame still to drop
        self.max_frame_bytes = max_frame_bytes
        self._outbox_size = outbox_size
        # A raw fd exists only for plain TCP; TLS bytes must go through the SSL stream.
        self._fd = raw_fd
        self._drained = True  # the socket had nothing more to read when last read
        # Created on demand and dropped when empty: an idle connection holds no queue,
        # no event and no message parts (each costs hundreds of bytes per connection).
        self._queue: collections.deque[bytes] | None = None
        self._writing = False
        self._nursery: trio.Nursery | None = None
        self._flushed: trio.Event | None = None  # None: nothing is being written
        self._parts: list[bytes] | None = None
        self._size = 0
        self.broken = False
        self.closing = False
        self.last_received = trio.current_time()
        self.pongs = 0  # pong frames received (the client conformance kit asks)

    # -- handshake ------------------------------------------------------------------------

    async def accept(
        self, choose: Callable[[Handshake], tuple[int, str] | str | None]
    ) -> Handshake | None:
        """Read the HTTP upgrade; `choose` returns the subprotocol to accept (None: accept
        without one) or an HTTP (status, reason) to refuse with. Returns None if the client
        went away or was refused."""
        received = bytearray()
        head_end = None
        while head_end is None:
            if len(received) > _MAX_HEAD:
                break
            try:
                data = await self._stream.receive_some(_RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None  # reset during the upgrade (or a failed TLS handshake)
            if not data:
                return None
            # Search only the new bytes (and the 3 before, where a blank line may start):
            # a head trickling in a byte at a time costs linear time, not quadratic.
            start = max(0, len(received) - 3)
            received += data
            head_end = _HEAD_END.search(received, start)
        if head_end is None or head_end.start() > _MAX_HEAD:
            await self._send_all(Refusal(431, "request head too large").response())
            return None
        request = parse_upgrade(bytes(received[: head_end.start()]))
        if isinstance(request, Handshake):
            choice = choose(request)
            if not isinstance(choice, tuple):
                # Clients should wait for the 101 before sending frames (RFC 6455 4.1), but
                # bytes that came right behind the request (it has no body) are frames too.
                self._buf = bytes(received[head_end.end() :])
                await self._send_all(accept_response(request.key, choice))
                return request
            request = Refusal(*choice)
        await self._send_all(request.response())
        return None

    async def _send_all(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True

    # -- receiving ------------------------------------------------------------------------

    async def receive(self) -> Incoming:
        """The next complete inbound message or what ended the stream. Answers pings itself.

        Frames are parsed here (RFC 6455 section 5, client to server: masked, no extensions);
        a data frame's length is checked against `max_frame_bytes` from its header, before
        its payload is read, so an oversized frame is never buffered.
        """
        while True:
            result = self._parse()
            if result is not None:
                return result
            data = await self._read()
            self.last_received = trio.current_time()
            if not data:
                self.broken = True
                return Closed(1006)
            rest = self._buf[self._pos :] if self._pos else self._buf
            self._buf, self._pos = (rest + data if rest else data), 0

    async def _read(self) -> bytes:
        """The next bytes from the peer; b"" once it is gone.

        On plain TCP the socket is read directly: a read that got less than it asked for
        emptied the socket, so the next one waits for readiness first rather than paying
        for a read that fails (and for Trio's bookkeeping around it): one system call and
        one scheduling round less per message.
        """
        fd = self._fd
        if fd is None:
            try:
                return bytes(await self._stream.receive_some(_RECEIVE_CHUNK))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
        try:
            if self._drained:
                await trio.lowlevel.wait_readable(fd)
            else:
                await trio.lowlevel.checkpoint()  # a flood must not starve other tasks
            while True:
                try:
                    data = os.read(fd, _RECEIVE_CHUNK)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
        except (OSError, trio.ClosedResourceError):  # reset, or closed under us
            return b""
        self._drained = len(data) < _RECEIVE_CHUNK
        return data

    def _parse(self) -> Incoming | None:
        """Consume whole frames from the buffer; the first thing to report, or None.

        Parsing moves an offset through the buffer (which `receive` compacts once per read),
        so many small frames in one read cost linear, not quadratic, time."""
        if self._failed:  # framing can no longer be trusted: discard until the end
            self._buf, self._pos = b"", 0
            return None
        if self._skip:  # the rest of an oversized frame: dropped as it arrives
            dropped = min(self._skip, len(self._buf) - self._pos)
            self._skip -= dropped
            self._pos += dropped
            if self._skip:
                return None
        result = self._parse_frames()
        if isinstance(result, Invalid) and result.code == 1002:
            self._failed = True
            self._buf, self._pos = b"", 0
        return result

    def _parse_frames(self) -> Incoming | None:
        buf = self._buf
        while True:
            pos = self._pos
            available = len(buf) - pos
            if available < 2:
                return None
            first, second = buf[pos], buf[pos + 1]
            fin, opcode, size = first & 0x80, first & 0x0F, second & 0x7F
            if first & 0x70:
                return Invalid(1002, "reserved bits set (no extension was negotiated)")
            if not second & 0x80:
                return Invalid(1002, "client frames must be masked")
            head = 2
            if size == 126:
                if available < 4:
                    return None
                size, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if available < 10:
                    return None
                size, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if opcode & 0x08:
                if size > 125 or not fin:
                    return Invalid(1002, "control frames are unfragmented and at most 125 bytes")
            elif self._size + size > self.max_frame_bytes:
                # Framing stays intact: skip this frame so the peer's close is still read.
                self._skip = head + 4 + size
                self._parts, self._size = None, 0
                return TooBig()
            if available < head + 4 + size:
                return None
            mask_at = pos + head
            payload = _unmask(buf[mask_at : mask_at + 4], buf[mask_at + 4 : mask_at + 4 + size])
            self._pos = mask_at + 4 + size
            result = self._frame(opcode, bool(fin), payload)
            if result is not None:
                return result

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> Incoming | None:
        if opcode == 0x1 or opcode == 0x0:  # text, continuation
            if (opcode == 0x1) == (self._parts is not None):
                return Invalid(1002, "continuation frame out of place")
            if fin and self._parts is None:
                return _text(payload)
            if self._parts is None:
                self._parts = []
            elif len(self._parts) >= _MAX_FRAGMENTS:  # empty fragments add no bytes
                self._skip, self._parts, self._size = 0, None, 0
                return TooBig()
            self._parts.append(payload)
            self._size += len(payload)
            if not fin:
                return None
            whole = b"".join(self._parts)
            self._parts, self._size = None, 0
            return _text(whole)
        if opcode == 0x2:
            return Binary()
        if opcode == 0x9:  # ping: answered, but a ping flood is not (RFC 6455 5.5.3)
            now = trio.current_time()
            self._pings = min(_PING_BURST, self._pings + (now - self._pinged_at) * _PINGS_PER_S)
            self._pinged_at = now
            if self._pings >= 1:
                self._pings -= 1
                self._write(_control(0x8A, payload), bounded=True)
            return None
        if opcode == 0xA:  # pong: activity only, already counted
            self.pongs += 1
            return None
        if opcode == 0x8:
            if len(payload) == 1:
                return Invalid(1002, "a close frame's payload is a code and a reason")
            code = int.from_bytes(payload[:2], "big") if payload else 1005
            if not self.closing:  # the peer started the close: answer it
                self.closing = True
                self._write(_control(0x88, payload[:2]), bounded=False)
            return Closed(code)
        return Invalid(1002, f"unknown opcode {opcode:#x}")

    # -- sending --------------------------------------------------------------------------

    def send_nowait(self, frame: bytes) -> bool:
        """Queue one pre-built frame (see `text_frame`); False if the outbox is full."""
        if self.closing or self.broken:
            return True  # the session is ending; its close is already decided
        return self._write(frame, bounded=True)

    def ping_nowait(self) -> None:
        if not (self.closing or self.broken):
            self._write(_PING, bounded=False)

    def close_nowait(self, code: int, reason: str = "") -> None:
        """Queue a close frame after everything already queued; later frames are dropped."""
        if self.closing or self.broken:
            return
        self.closing = True
        body = code.to_bytes(2, "big") + reason.encode()[:_CLOSE_REASON_BYTES]
        self._write(_control(0x88, body), bounded=False)

    def peer(self) -> str:
        """The client's address as "host:port", or "?" once the socket is gone."""
        stream = self._stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        try:
            if isinstance(stream, trio.SocketStream):
                host, port = stream.socket.getpeername()[:2]
                return f"{host}:{port}"
        except OSError:
            pass
        return "?"

    @property
    def queued(self) -> int:
        return len(self._queue) if self._queue else 0

    def _write(self, frame: bytes, *, bounded: bool) -> bool:
        if self.broken:
            return True
        if not self._queue and not self._writing and self._fd is not None:
            cork = self._cork
            if cork is not None and cork.depth:
                cork.hold(self, frame)
                return True
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
        elif (
            bounded
            and self._queue is not None
            and (
                len(self._queue) >= self._outbox_size
                or self._queued_bytes + len(frame) > self._outbox_bytes
            )
        ):
            return False
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self._start_writer()
        return True

    def _write_held(self, frames: list[bytes]) -> None:
        """Write what a `Cork` held, in order: one ``writev`` per `_IOV_MAX` frames; what
        the socket does not take is queued."""
        if self._queue or self._writing or self._fd is None:
            for frame in frames:  # not reached: frames are held only when these are unset
                self._write(frame, bounded=False)
            return
        sent = 0
        while sent < len(frames) and not self.broken:
            chunk = frames[sent : sent + _IOV_MAX]
            try:
                written = os.writev(self._fd, chunk)
            except BlockingIOError:
                written = 0
            except OSError:
                self.broken = True
                return
            for frame in chunk:
                if written < len(frame):
                    # The socket is full: the rest goes to the queue (behind this frame's
                    # unwritten part) and out through the writer.
                    self._write(frame[written:], bounded=False)
                    for rest in frames[sent + 1 :]:
                        self._write(rest, bounded=False)
                    return
                written -= len(frame)
                sent += 1

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
                # What piled up goes out in one write (up to _WRITE_BATCH bytes), not one
                # system call per frame.
                count, size = 0, 0
                for frame in queue:
                    if count and size + len(frame) > _WRITE_BATCH:
                        break
                    count, size = count + 1, size + len(frame)
                data = queue[0] if count == 1 else b"".join(itertools.islice(queue, count))
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.broken = True
                    break
                for _ in range(count):
                    queue.popleft()
                self._queued_bytes -= size
        finally:
            self._queue = None  # drained, or the socket broke and nothing more can go
            self._queued_bytes = 0
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
        self._queued_bytes = 0
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self._stream.aclose()
