"""A real server on a real socket for tests, and a plain WebSocket client that is not the
server's own code (trio-websocket), speaking JSON dicts."""

from __future__ import annotations

import itertools
import os
import pathlib
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import jwt
import orjson
import trio
import trio_websocket
import trustme

import errorlog
from hoomi.server.admin import serve_admin
from hoomi.server.auth import TokenVerifier
from hoomi.server.config import Settings
from hoomi.server.fanout import LocalFanout
from hoomi.server.server import Server
from hoomi.server.sqlite_store import SqliteStore

SECRET = "test-secret-of-sufficient-length-for-hs256"
WRONG_SECRET = "another-secret-of-sufficient-length-0000"
ADMIN_TOKEN = "test-admin-token-0123456789"


def mint(
    user: str,
    *,
    ttl_s: float | None = 3600,
    secret: str = SECRET,
    alg: str = "HS256",
    now: float | None = None,
    **claims: Any,
) -> str:
    """A user token issued `now` (default: the wall clock; a server on a MockClock has its
    own, see `Running.mint`), expiring `ttl_s` later (None: no `exp` at all), signed with
    `secret` (`alg` "none": unsigned), with more `claims`."""
    issued = time.time() if now is None else now
    payload = {"sub": user, "iat": int(issued), **claims}
    if ttl_s is not None:
        payload["exp"] = int(issued + ttl_s)
    return jwt.encode(payload, "" if alg == "none" else secret, alg)


def hello_frame(token: str, **fields: Any) -> dict[str, Any]:
    """The hello a hand-driven client sends: id "h", `token`, more `fields`."""
    return {"type": "hello", "id": "h", "token": token, **fields}


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float = 5, every: float = 0.02
) -> None:
    """Poll `check` until it holds (`trio.TooSlowError` after `within`): for state that no
    event announces, such as another thread's or process's progress or an HTTP API's view."""
    with trio.fail_after(within):
        while True:
            done = check()
            if done if isinstance(done, bool) else await done:
                return
            await trio.sleep(every)


def tls_files(tmp_path: pathlib.Path) -> tuple[dict[str, Any], ssl.SSLContext]:
    """Server settings for a fresh certificate for 127.0.0.1 (PEM files in `tmp_path`), and
    a client context that trusts it."""
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return {"tls_cert": str(cert_file), "tls_key": str(key_file)}, context


async def open_stream(
    port: int, ssl_context: ssl.SSLContext | None = None, *, receive_buffer: int | None = None
) -> trio.abc.Stream:
    """A TCP connection to 127.0.0.1:`port`, inside TLS with `ssl_context` (the handshake
    runs with the first send or receive), with a `receive_buffer` of that many bytes."""
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    try:
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    stream = trio.SocketStream(sock)
    if ssl_context is None:
        return stream
    return trio.SSLStream(stream, ssl_context, server_hostname="127.0.0.1")


@attrs.define
class Running:
    server: Server
    store: SqliteStore
    url: str  # ws://127.0.0.1:<port>/, or wss:// with `tls=True`
    nursery: trio.Nursery  # where the clients' background tasks run
    clients: list[Client] = attrs.field(factory=list)
    admin_url: str | None = None  # http://127.0.0.1:<port> with `admin=True`
    admin_token: str | None = None
    ssl_context: ssl.SSLContext | None = None  # trusts the server's certificate (`tls=True`)

    async def connect(self, user: str | None = None, **hello: Any) -> Client:
        """Open a client; with `user`, also say hello and read the welcome into `welcome`."""
        client = await Client.open(self.nursery, self.url, ssl_context=self.ssl_context)
        self.clients.append(client)
        if user is not None:
            await client.hello(self.mint(user), **hello)
        return client

    def mint(self, user: str, *, ttl_s: float | None = 3600, **claims: Any) -> str:
        """A token issued at the server's now (which follows Trio's clock, mocked or not)."""
        return mint(user, ttl_s=ttl_s, now=self.server.wall(), **claims)

    async def still_serving(self) -> None:
        """The server still works for anyone the test did not touch: two fresh users open
        sessions, one sends to the other in a new conversation, and it arrives."""
        n = next(_witnesses)
        one, other = f"witness{n}a", f"witness{n}b"
        dm = await self.server.create_conversation(kind="direct", members=[one, other])
        sender, receiver = await self.connect(one), await self.connect(other)
        ack = await sender.request(
            "send", conversation_id=dm.conversation_id, client_msg_id="k", text="ok?"
        )
        assert ack["type"] == "ack", ack
        got = await receiver.expect("message", skip=("presence",))
        assert (got["message"]["conversation_id"], got["message"]["seq"]) == (
            dm.conversation_id,
            ack["seq"],
        )
        await sender.aclose()
        await receiver.aclose()

    async def stream(self, *, receive_buffer: int | None = None) -> trio.abc.Stream:
        """A connection to the server, in TLS if it serves TLS (see `open_stream`)."""
        return await open_stream(
            self.server.ports[0], self.ssl_context, receive_buffer=receive_buffer
        )

    async def raw(self, subprotocol: str = "hoomi.v1") -> RawClient:
        """A `RawClient`, upgraded, over TLS if the server serves TLS."""
        return await RawClient.open_on(await self.stream(), subprotocol)


@asynccontextmanager
async def running_server(
    tmp_path: pathlib.Path,
    database: str = "hoomi.db",
    *,
    admin: bool = False,
    tls: bool = False,
    **settings: Any,
) -> AsyncIterator[Running]:
    """A server on 127.0.0.1 with a free port and SQLite in `tmp_path`. Its wall clock
    follows Trio's clock, so tests on a MockClock move token expiry too.

    With `tls`, it serves WSS with a fresh certificate (`tls_files`): `Running.connect`,
    `Running.raw` and `Running.stream` connect over TLS.

    With `admin`, the admin API listens too (on a free port, token `ADMIN_TOKEN` and user
    token minting unless given): `Running.admin_url` and `Running.admin_token`."""
    epoch = time.time() - trio.current_time()
    if admin:
        settings.setdefault("admin_port", 0)
        settings.setdefault("admin_token", ADMIN_TOKEN)
        settings.setdefault("mint_tokens", True)
    settings.setdefault("port", 0)
    ssl_context = None
    if tls:
        tls_settings, ssl_context = tls_files(tmp_path)
        settings.update(tls_settings)
    config = Settings(database=str(tmp_path / database), jwt_secret=SECRET, **settings).check()
    store = SqliteStore(
        config.database,
        synchronous="normal",
        commit_window_ms=config.sqlite_commit_window_ms,
    )
    await store.open()
    try:
        server = Server(
            config,
            store,
            LocalFanout(),
            TokenVerifier(hs256_secret=SECRET),
            wall_clock=lambda: epoch + trio.current_time(),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            admin_url = None
            if admin:
                admin_port = await nursery.start(serve_admin, server)
                admin_url = f"http://127.0.0.1:{admin_port}"
            async with trio.open_nursery() as clients:
                running = Running(
                    server,
                    store,
                    f"{'wss' if tls else 'ws'}://127.0.0.1:{server.ports[0]}/",
                    clients,
                    admin_url=admin_url,
                    admin_token=config.admin_token if admin else None,
                    ssl_context=ssl_context,
                )
                yield running
                with trio.move_on_after(2):
                    for client in running.clients:
                        await client.aclose()
                clients.cancel_scope.cancel()
            server.shutdown()
            await server.wait_stopped()
    finally:
        await store.aclose()


_ids = itertools.count(1)
_logs = itertools.count(1)
_witnesses = itertools.count(1)


@attrs.define
class ServeProcess:
    """`hoomi serve` in its own process (see `serve_process`)."""

    process: trio.Process
    log: pathlib.Path  # its stderr: the announcements, then one line per event
    port: int = 0
    admin_port: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def wait(self, within: float = 20) -> int:
        """Its exit code, once it exited (`trio.TooSlowError` after `within`)."""
        with trio.fail_after(within):
            return await self.process.wait()

    async def _announced(self, within: float = 40) -> None:
        """Read the ports it announces on stderr; fail if it exits first. (Its imports
        alone took over 20 s on 2 cores at a load average of 29.)"""

        def announced() -> bool:
            text = self.log.read_text(errors="replace")
            ws = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/", text)
            admin = re.search(r"Admin API on http://127\.0\.0\.1:(\d+)", text)
            if ws and admin:
                self.port, self.admin_port = int(ws[1]), int(admin[1])
                return True
            assert self.process.poll() is None, f"hoomi serve exited:\n{text}"
            return False

        await eventually(announced, within, every=0.05)


@asynccontextmanager
async def serve_process(
    database: pathlib.Path, *args: str, secret: str | None = SECRET, **env: str
) -> AsyncIterator[ServeProcess]:
    """`hoomi serve --port 0 --admin-port 0 ARGS` as its own process, with the token secret
    `secret` (None: none, as for ``--dev``) and SQLite at `database` (more `HOOMI_*` settings
    in `env`), once it announced
    both ports. Its stderr goes to a file next to the database (a pipe nobody reads would
    stall it). Killed on exit unless it has exited. When the test ends, a traceback or a
    `level=error` line in that log fails it unless declared (`expect_errors`)."""
    log = database.parent / f"serve-{next(_logs)}.log"
    errorlog.watch(f"hoomi serve's log {log.name}", log)
    environment = {**os.environ, "HOOMI_DATABASE": str(database)}
    if secret is not None:
        environment["HOOMI_JWT_SECRET"] = secret
    command = [sys.executable, "-m", "hoomi.cli.main", "serve", "--port", "0"]
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            [*command, "--admin-port", "0", *args],
            env={**environment, **env},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        running = ServeProcess(process, log)
        await running._announced()
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        # Shielded (the test may be cancelled) and bounded: killed, it exits at once.
        with trio.CancelScope(deadline=trio.current_time() + 10, shield=True):
            await process.wait()


class Client:
    """A test client: JSON dicts in and out, every wait bounded."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def open(
        cls,
        nursery: trio.Nursery,
        url: str,
        subprotocols: list[str] | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Client:
        offered = ["hoomi.v1"] if subprotocols is None else subprotocols
        ws = await trio_websocket.connect_websocket_url(
            nursery, url, ssl_context=ssl_context, subprotocols=offered
        )
        return cls(ws)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send_message(
            frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        )

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send a request with a fresh id and return its reply (skipping events)."""
        rid = f"r{next(_ids)}"
        await self.send({"type": type_, "id": rid, **fields})
        while True:
            frame = await self.recv()
            if frame.get("id") == rid:
                return frame

    async def hello(self, token: str, **fields: Any) -> dict[str, Any]:
        self.welcome = await self.request("hello", token=token, **fields)
        return self.welcome

    async def recv(self, within: float = 5) -> dict[str, Any]:
        with trio.fail_after(within):
            text = await self.ws.get_message()
        frame: dict[str, Any] = orjson.loads(text)
        return frame

    async def expect(
        self, type_: str, within: float = 5, skip: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The next frame, which must be of `type_` (frames of types in `skip` are passed)."""
        while True:
            frame = await self.recv(within)
            if frame["type"] in skip:
                continue
            assert frame["type"] == type_, frame
            return frame

    async def silent(self, seconds: float = 0.2) -> None:
        """Nothing arrives for `seconds`."""
        with trio.move_on_after(seconds):
            frame = await self.ws.get_message()
            raise AssertionError(f"expected silence, got {frame!r}")

    async def closed(self, within: float = 5, skip_frames: bool = True) -> int | None:
        """Wait for the server to close; return its close code."""
        with trio.fail_after(within):
            while True:
                try:
                    await self.ws.get_message()
                except trio_websocket.ConnectionClosed as closed:
                    return closed.reason.code if closed.reason else None
                if not skip_frames:
                    raise AssertionError("expected a close, got a frame")

    async def aclose(self) -> None:
        await self.ws.aclose()
        # trio-websocket's client leaves its socket open when the server ends the TCP
        # connection after the close handshake (its reader stops on EOF without closing).
        await self.ws._stream.aclose()


UPGRADE_LINES = (
    "GET / HTTP/1.1",
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Protocol: hoomi.v1",
)


def upgrade_request(
    *, drop: tuple[str, ...] = (), add: tuple[str, ...] = (), first: str | None = None
) -> bytes:
    """A WebSocket upgrade request: `UPGRADE_LINES` without the headers named in `drop`,
    with `add` appended and `first` as the request line if given."""
    lines = [line for line in UPGRADE_LINES if not line.startswith(drop)]
    if first is not None:
        lines[0] = first
    return ("\r\n".join([*lines, *add]) + "\r\n\r\n").encode()


class RawClient:
    """A hand-rolled WebSocket client for frames no library will send (bad UTF-8, broken
    framing) and for peers that go silent or vanish."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, port: int, subprotocol: str = "hoomi.v1") -> RawClient:
        """Upgraded, over plain TCP (`Running.raw` speaks TLS to a TLS server)."""
        return await cls.open_on(await open_stream(port), subprotocol)

    @classmethod
    async def open_on(cls, stream: trio.abc.Stream, subprotocol: str = "hoomi.v1") -> RawClient:
        """Upgrade `stream` to a WebSocket offering `subprotocol`."""
        request = upgrade_request(
            drop=("Sec-WebSocket-Protocol",), add=(f"Sec-WebSocket-Protocol: {subprotocol}",)
        )
        return await cls.upgrade(stream, request)

    @classmethod
    async def upgrade(
        cls, stream: trio.abc.Stream, request: bytes | None = None, *, early: bytes = b""
    ) -> RawClient:
        """Upgrade `stream` with `request` (`upgrade_request()` by default) followed in the
        same write by `early` bytes, and read the 101 response."""
        await stream.send_all((upgrade_request() if request is None else request) + early)
        client = cls(stream)
        with trio.fail_after(5):
            while b"\r\n\r\n" not in client.buffer:
                client.buffer += await client._more()
        head, client.buffer = client.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    @staticmethod
    def frame(
        opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True, rsv: int = 0
    ) -> bytes:
        """A client frame's bytes."""
        size = len(payload)
        header = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
        mask_bit = 0x80 if masked else 0
        if size < 126:
            header += bytes([mask_bit | size])
        else:
            header += bytes([mask_bit | 126]) + size.to_bytes(2, "big")
        if masked:
            key = b"\x01\x02\x03\x04"
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            header += key
        return header + payload

    async def send_frame(
        self, opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True, rsv: int = 0
    ) -> None:
        await self.stream.send_all(self.frame(opcode, payload, masked=masked, fin=fin, rsv=rsv))

    async def hello(self, token: str, *, welcome: bool = True) -> None:
        """Send `hello_frame(token)`; with `welcome`, the next frame must be the welcome."""
        await self.send_frame(0x1, orjson.dumps(hello_frame(token)))
        if welcome:
            opcode, payload = await self.next_frame()
            assert (opcode, orjson.loads(payload)["type"]) == (0x1, "welcome"), payload

    async def next_frame(self, within: float = 5) -> tuple[int, bytes]:
        """The server's next frame as (opcode, payload)."""
        with trio.fail_after(within):
            while len(self.buffer) < 2:
                self.buffer += await self._more()
            opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            offset = 2
            if size >= 126:
                offset = 4 if size == 126 else 10
                while len(self.buffer) < offset:
                    self.buffer += await self._more()
                size = int.from_bytes(self.buffer[2:offset], "big")
            while len(self.buffer) < offset + size:
                self.buffer += await self._more()
        payload = self.buffer[offset : offset + size]
        self.buffer = self.buffer[offset + size :]
        return opcode, payload

    async def close_code(self, within: float = 5) -> int:
        """Read frames until the server's close frame; return its code."""
        with trio.fail_after(within):
            while True:
                opcode, payload = await self.next_frame(within)
                if opcode == 0x8:
                    return int.from_bytes(payload[:2], "big")

    async def _more(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            raise AssertionError("the server closed the socket without a close frame")
        return bytes(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def exchange(port: int, request: bytes) -> bytes:
    """Send raw `request` bytes and return the response: up to the end of the head of a
    101, else all until the server closes (it does after a refusal)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        response = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in response or not response.startswith(b"HTTP/1.1 101"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                response += chunk
    return response


async def upgrade_status(port: int, *, path: str = "/", origin: str | None = None) -> int:
    """The HTTP status a WebSocket upgrade gets (raw: trio-websocket's client leaks its
    socket when an upgrade is refused)."""
    request = upgrade_request(
        first=f"GET {path} HTTP/1.1", add=(f"Origin: {origin}",) if origin is not None else ()
    )
    return int((await exchange(port, request)).split(b" ", 2)[1])


class EventStream:
    """A server-sent-events reader (the admin API's ``/v1/sessions/watch``) over a raw
    socket, every wait bounded. Not httpx: abandoning an httpx stream leaves its nested
    async generators to the garbage collector, which Trio reports as a ResourceWarning."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.status = 0
        self.headers: dict[str, str] = {}
        self._raw = b""  # undecoded chunked transfer encoding
        self._text = ""  # decoded body not yet returned
        self.ended = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls, admin_url: str, token: str | None, path: str = "/v1/sessions/watch"
    ) -> AsyncIterator[EventStream]:
        """Connect and read the response head (`status`, `headers`); closed on exit."""
        host, port = admin_url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            reader = cls(stream)
            auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{auth}\r\n"
            )
            await stream.send_all(request.encode())
            with trio.fail_after(5):
                while b"\r\n\r\n" not in reader._raw:
                    reader._raw += await reader._more()
            head, reader._raw = reader._raw.split(b"\r\n\r\n", 1)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            reader.status = int(status_line.split(" ", 2)[1])
            for line in lines:
                name, _, value = line.partition(":")
                reader.headers[name.strip().lower()] = value.strip()
            if reader.status == 200:
                # The stream opens with this once the watcher is registered: no later
                # event can be missed.
                assert await reader.next() == {"comment": "watching"}
            yield reader

    async def next(self, within: float = 5) -> dict[str, str] | None:
        """The next event as its fields (``event``, ``data``; a comment as ``comment``),
        or None once the server ended the stream."""
        with trio.fail_after(within):
            while "\n\n" not in self._text:
                if self.ended or not await self._chunk():
                    return None
        block, self._text = self._text.split("\n\n", 1)
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                fields["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(":")
                fields[name] = fields.get(name, "") + value.removeprefix(" ")
        return fields

    async def _chunk(self) -> bool:
        """Decode one chunk of the body into `_text`; False at the last chunk."""
        while b"\r\n" not in self._raw:
            self._raw += await self._more()
        size_line, rest = self._raw.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        while len(rest) < size + 2:
            rest += await self._more()
        self._text += rest[:size].decode()
        self._raw = rest[size + 2 :]
        if size == 0:
            self.ended = True
        return size > 0

    async def _more(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            raise AssertionError("the admin API closed the connection mid-response")
        return bytes(data)
