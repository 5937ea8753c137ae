"""A real server on a real socket for tests, and a plain WebSocket client that is not the
server's own code (trio-websocket), speaking JSON dicts."""

from __future__ import annotations

import itertools
import pathlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import jwt
import orjson
import trio
import trio_websocket

from hoomi.server.auth import TokenVerifier
from hoomi.server.config import Settings
from hoomi.server.fanout import LocalFanout
from hoomi.server.server import Server
from hoomi.server.sqlite_store import SqliteStore

SECRET = "test-secret-of-sufficient-length-for-hs256"
WRONG_SECRET = "another-secret-of-sufficient-length-0000"


def mint(user: str, *, ttl_s: float = 3600, secret: str = SECRET, **claims: Any) -> str:
    now = time.time()
    payload = {"sub": user, "iat": int(now), "exp": int(now + ttl_s), **claims}
    return jwt.encode(payload, secret, "HS256")


@attrs.define
class Running:
    server: Server
    store: SqliteStore
    url: str
    nursery: trio.Nursery  # where the clients' background tasks run

    async def connect(self, user: str | None = None, **hello: Any) -> Client:
        """Open a client; with `user`, also say hello and read the welcome into `welcome`."""
        client = await Client.open(self.nursery, self.url)
        if user is not None:
            await client.hello(mint(user), **hello)
        return client


@asynccontextmanager
async def running_server(
    tmp_path: pathlib.Path, database: str = "hoomi.db", **settings: Any
) -> AsyncIterator[Running]:
    """A server on 127.0.0.1 with a free port and SQLite in `tmp_path`."""
    config = Settings(
        port=0, database=str(tmp_path / database), jwt_secret=SECRET, **settings
    ).check()
    store = SqliteStore(config.database, synchronous="normal")
    await store.open()
    try:
        server = Server(config, store, LocalFanout(), TokenVerifier(hs256_secret=SECRET))
        store.on_commit = server.on_commit
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            async with trio.open_nursery() as clients:
                yield Running(server, store, f"ws://127.0.0.1:{server.ports[0]}/", clients)
                clients.cancel_scope.cancel()
            server.shutdown()
            await server.wait_stopped()
    finally:
        await store.aclose()


_ids = itertools.count(1)


class Client:
    """A test client: JSON dicts in and out, every wait bounded."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def open(
        cls, nursery: trio.Nursery, url: str, subprotocols: list[str] | None = None
    ) -> Client:
        offered = ["hoomi.v1"] if subprotocols is None else subprotocols
        ws = await trio_websocket.connect_websocket_url(nursery, url, subprotocols=offered)
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
