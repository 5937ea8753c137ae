"""Client conformance: a scripted server that a client under test connects to, and the
adapter process that drives that client (``spec/v1/client-kit/``, docs/conformance.md).

    run_scenarios ─ per scenario, one nursery ─┬─ ScriptedServer: the real transport on a
                   (bounded: scenario_timeout)  │   free loopback port; each accepted
                                                │   WebSocket becomes a `Wire`
                                                ├─ Adapter: the author's command, started
                                                │   fresh; line-JSON commands on its stdin,
                                                │   the events its app sees on its stdout
                                                └─ the scenario: drives both, grades what
                                                    the client does on the wire and what
                                                    its app reports

A scenario fails by raising `Failed` naming the requirement it found broken. Everything
waits a bounded time; a client that hangs or crashes fails its scenario, and its process
is killed when the scenario ends. The server never checks tokens: the kit hands the client
opaque tokens and checks that they come back where they should.
"""

from __future__ import annotations

import enum
import json
import math
import pathlib
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from hoomi.protocol import SUBPROTOCOL, encode
from hoomi.protocol import messages as m
from hoomi.server.transport import Closed, Handshake, Text, WebSocket, text_frame

_MAX_LINE = 1024 * 1024  # bytes of one adapter event line
_STDERR_TAIL = 2000  # characters of the adapter's stderr quoted in a failure


class Failed(Exception):
    """The client broke `requirement`; `message` says how, for people."""

    def __init__(self, requirement: str, message: str) -> None:
        super().__init__(f"{requirement}: {message}")
        self.requirement = requirement
        self.message = message


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class ScenarioResult:
    name: str
    title: str
    requirements: tuple[str, ...]
    outcome: Outcome
    failed_requirement: str | None = None
    message: str = ""
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED


# -- the server side: one Wire per client connection ------------------------------------------


class Wire:
    """One WebSocket the client opened to the scripted server: what it sends, read in the
    background into a bounded channel, and what the scenario sends it."""

    def __init__(self, ws: WebSocket, handshake: Handshake, number: int) -> None:
        self.ws = ws
        self.handshake = handshake
        self.number = number  # 1 for the client's first connection, 2 for its second …
        self.ended = trio.Event()
        self.close_code: int | None = None
        self._in, self._out = trio.open_memory_channel[dict[str, Any]](1000)

    async def _read(self) -> None:
        try:
            while True:
                item = await self.ws.receive()
                if isinstance(item, Closed):
                    self.close_code = item.code
                    return
                if not isinstance(item, Text):
                    self.close_code = 1002
                    return
                try:
                    frame = json.loads(item.data)
                except ValueError:
                    frame = {"type": "<not JSON>", "text": item.data[:200]}
                if not isinstance(frame, dict):
                    frame = {"type": "<not an object>", "value": frame}
                await self._in.send(frame)
        finally:
            self.ended.set()
            self._in.close()

    async def next(self, within: float, requirement: str, wanted: str) -> dict[str, Any]:
        """The client's next frame; `Failed` if none comes within `within` seconds."""
        with trio.move_on_after(within):
            try:
                return await self._out.receive()
            except trio.EndOfChannel:
                raise Failed(
                    requirement,
                    f"expected {wanted} on connection {self.number}, but the client "
                    f"closed it ({self.close_code})",
                ) from None
        raise Failed(requirement, f"expected {wanted} within {within} s; nothing came")

    async def expect(
        self, type_: str, within: float, requirement: str, *, skip: Sequence[str] = ("ping",)
    ) -> dict[str, Any]:
        """The client's next frame of `type_` (app pings are answered and skipped)."""
        while True:
            frame = await self.next(within, requirement, f"a {type_!r} frame")
            if frame.get("type") in skip and frame.get("type") != type_:
                if frame.get("type") == "ping":
                    self.send(m.Pong(id=str(frame.get("id")), server_time=0))
                continue
            if frame.get("type") != type_:
                raise Failed(requirement, f"expected a {type_!r} frame, got {_show(frame)}")
            return frame

    async def quiet(self, seconds: float, requirement: str, *, allow: Sequence[str] = ()) -> None:
        """Nothing but frames of the types in `allow` for `seconds`."""
        with trio.move_on_after(seconds):
            while True:
                try:
                    frame = await self._out.receive()
                except trio.EndOfChannel:
                    return
                if frame.get("type") not in allow:
                    raise Failed(requirement, f"expected nothing, got {_show(frame)}")

    def send(self, message: m.ServerMessage) -> None:
        self.ws.send_nowait(text_frame(encode(message).encode()))

    def send_text(self, text: str) -> None:
        self.ws.send_nowait(text_frame(text.encode()))

    def close(self, code: int, reason: str = "") -> None:
        self.ws.close_nowait(code, reason)

    async def drop(self) -> None:
        """End the TCP connection without a close frame."""
        await self.ws.aclose()


def welcome(
    hello: Mapping[str, Any],
    conversations: Sequence[tuple[str, int]] = (),
    *,
    heartbeat_ms: int = 30_000,
    user: str = "kit-user",
) -> m.Welcome:
    """A welcome answering `hello`, listing (conversation id, latest seq) pairs."""
    return m.Welcome(
        id=str(hello.get("id")),
        session_id=f"s-kit-{hello.get('id')}",
        user_id=user,
        protocol=SUBPROTOCOL,
        spec_version="1.0.0",
        heartbeat_interval_ms=heartbeat_ms,
        limits=m.Limits(
            max_frame_bytes=65536,
            max_text_chars=4000,
            history_page_max=4,
            replay_max=1000,
            rate_per_s=20.0,
            rate_burst=40,
            typing_ttl_ms=5000,
        ),
        conversations=tuple(
            m.Conversation(
                conversation_id=cid,
                kind="direct",
                members=(user, "kit-peer"),
                latest_seq=latest,
                read_seq=0,
                unread=0,
            )
            for cid, latest in conversations
        ),
    )


def chat(cid: str, seq: int, *, client_msg_id: str | None = None, text: str = "") -> m.ChatMessage:
    return m.ChatMessage(
        conversation_id=cid,
        seq=seq,
        message_id=f"m-{cid}-{seq}",
        sender_id="kit-peer" if client_msg_id is None else "kit-user",
        kind="user",
        text=text or f"message {seq}",
        sent_at=1_700_000_000_000 + seq,
        client_msg_id=client_msg_id,
    )


class ScriptedServer:
    """The real transport on a free loopback port; each accepted upgrade becomes a `Wire`."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._in, self._out = trio.open_memory_channel[Wire](100)
        self.wires: list[Wire] = []
        self.url = ""

    async def start(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/"
        await self._nursery.start(trio.serve_listeners, self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        ws = WebSocket(
            stream,
            max_frame_bytes=1024 * 1024,
            outbox_size=10_000,
            outbox_bytes=64 * 1024 * 1024,
            raw_fd=None,
        )
        handshake = await ws.accept(_choose)
        if handshake is None:
            await ws.aclose()
            return
        wire = Wire(ws, handshake, len(self.wires) + 1)
        self.wires.append(wire)
        try:
            async with trio.open_nursery() as nursery:
                ws.run_writer_in(nursery)
                nursery.start_soon(wire._read)
                await self._in.send(wire)
                await wire.ended.wait()
                with trio.move_on_after(1):
                    await ws.flushed()
        finally:
            await ws.aclose()

    async def accept(self, within: float, requirement: str, why: str) -> Wire:
        """The client's next connection; `Failed` if it does not come within `within` s."""
        with trio.move_on_after(within):
            return await self._out.receive()
        raise Failed(requirement, f"the client did not connect within {within} s ({why})")

    async def no_connection(self, seconds: float, requirement: str, why: str) -> None:
        with trio.move_on_after(seconds):
            wire = await self._out.receive()
            raise Failed(requirement, f"the client connected again (connection {wire.number}): {why}")


def _choose(handshake: Handshake) -> str | None:
    return SUBPROTOCOL if SUBPROTOCOL in handshake.subprotocols else None


# -- the client side: the adapter process -----------------------------------------------------


class Adapter:
    """The client under test, behind the author's adapter command (docs/conformance.md)."""

    def __init__(self, command: Sequence[str], nursery: trio.Nursery, stderr: pathlib.Path):
        self.argv = list(command)
        self._nursery = nursery
        self._stderr_path = stderr
        self.events: list[dict[str, Any]] = []
        self._in, self._out = trio.open_memory_channel[dict[str, Any]](10_000)
        self.process: trio.Process | None = None
        self.exited = trio.Event()

    async def start(self) -> None:
        with self._stderr_path.open("wb") as stderr:
            self.process = await trio.lowlevel.open_process(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self._nursery.start_soon(self._read)

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        buffer = b""
        try:
            while True:
                data = await self.process.stdout.receive_some(65536)
                if not data:
                    return
                buffer += data
                if len(buffer) > _MAX_LINE and b"\n" not in buffer:
                    return  # not line-JSON: the scenario fails waiting
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        try:
                            event = json.loads(line)
                        except ValueError:
                            event = {"event": "<not JSON>", "line": line[:200].decode("utf-8", "replace")}
                        if not isinstance(event, dict):
                            event = {"event": "<not an object>", "value": event}
                        self.events.append(event)
                        await self._in.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.exited.set()
            self._in.close()

    async def command(self, command: Mapping[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        line = json.dumps(dict(command), separators=(",", ":")).encode() + b"\n"
        try:
            await self.process.stdin.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise Failed("HOOMI-CLIENT-1", f"the adapter is gone; {self.stderr_tail()}") from None

    async def event(
        self,
        want: Callable[[dict[str, Any]], bool],
        within: float,
        requirement: str,
        wanted: str,
    ) -> dict[str, Any]:
        """The next event the app reports that satisfies `want` (others are kept in
        `events` and skipped here)."""
        with trio.move_on_after(within):
            try:
                while True:
                    event = await self._out.receive()
                    if want(event):
                        return event
            except trio.EndOfChannel:
                raise Failed(
                    requirement, f"expected {wanted}, but the adapter exited; {self.stderr_tail()}"
                ) from None
        raise Failed(requirement, f"expected the app to see {wanted} within {within} s")

    def stderr_tail(self) -> str:
        try:
            text = self._stderr_path.read_text("utf-8", "replace").strip()
        except OSError:
            text = ""
        return f"its stderr ends: {text[-_STDERR_TAIL:]}" if text else "its stderr is empty"

    async def stop(self) -> None:
        """Ask it to close, then kill it (bounded)."""
        process = self.process
        if process is None:
            return
        with trio.move_on_after(2):
            try:
                await self.command({"cmd": "close"})
            except Failed:
                pass
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(2):
                await process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await trio.aclose_forcefully(stream)


# -- a scenario run ----------------------------------------------------------------------------


@attrs.define
class Kit:
    """What a scenario works with: the scripted server and the client under test."""

    server: ScriptedServer
    adapter: Adapter
    tokens: int = 0

    def token(self) -> str:
        self.tokens += 1
        return f"kit-token-{self.tokens}"

    async def connect(self, positions: Mapping[str, int] | None = None) -> str:
        """Tell the client to connect; return the token it was given."""
        token = self.token()
        command: dict[str, Any] = {"cmd": "connect", "url": self.server.url, "token": token}
        if positions:
            command["positions"] = dict(positions)
        await self.adapter.command(command)
        return token

    async def app_messages(
        self, cid: str, count: int, within: float, requirement: str
    ) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        for _ in range(count):
            got.append(
                await self.adapter.event(
                    lambda e: e.get("event") == "message" and e.get("conversation_id") == cid,
                    within,
                    requirement,
                    f"message {len(got) + 1} of {count} in {cid}",
                )
            )
        return got

    async def app_quiet(self, seconds: float, requirement: str) -> None:
        """The app sees no further message for `seconds`."""
        with trio.move_on_after(seconds):
            event = await self.adapter.event(
                lambda e: e.get("event") == "message", math.inf, requirement, "nothing"
            )
            raise Failed(requirement, f"the app saw one message too many: {_show(event)}")


Scenario = Callable[[Kit], Awaitable[None]]


@attrs.frozen(kw_only=True)
class ScenarioSpec:
    name: str
    title: str
    requirements: tuple[str, ...]
    run: Scenario
    timeout_s: float = 20.0


async def run_scenario(
    spec: ScenarioSpec, command: Sequence[str], *, timeout_scale: float = 1.0
) -> ScenarioResult:
    """Run one scenario against a fresh adapter process; never raises for the client's
    faults (they are the result) and never outlives its timeout by more than the cleanup."""
    started = trio.current_time()

    def result(outcome: Outcome, requirement: str | None = None, message: str = "") -> ScenarioResult:
        return ScenarioResult(
            name=spec.name,
            title=spec.title,
            requirements=spec.requirements,
            outcome=outcome,
            failed_requirement=requirement,
            message=message,
            duration_s=trio.current_time() - started,
        )

    with tempfile.TemporaryDirectory(prefix="hoomi-kit-") as tmp:
        outcome = result(Outcome.PASSED)
        async with trio.open_nursery() as nursery:
            server = ScriptedServer(nursery)
            await server.start()
            adapter = Adapter(command, nursery, pathlib.Path(tmp) / "stderr.txt")
            try:
                await adapter.start()
            except OSError as exc:
                nursery.cancel_scope.cancel()
                return result(
                    Outcome.FAILED, spec.requirements[0], f"cannot start the adapter: {exc}"
                )
            try:
                with trio.fail_after(spec.timeout_s * timeout_scale):
                    await spec.run(Kit(server, adapter))
            except Failed as failed:
                outcome = result(Outcome.FAILED, failed.requirement, failed.message)
            except trio.TooSlowError:
                outcome = result(
                    Outcome.FAILED,
                    spec.requirements[0],
                    f"the scenario did not finish within {spec.timeout_s * timeout_scale} s; "
                    + adapter.stderr_tail(),
                )
            finally:
                with trio.CancelScope(shield=True):
                    await adapter.stop()
                nursery.cancel_scope.cancel()
    return outcome


def _show(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)
    return text if len(text) <= 300 else f"{text[:300]}…"
