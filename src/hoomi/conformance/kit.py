"""Client conformance: a scripted server that a client under test connects to, and the
adapter process that drives that client (``spec/v1/client-kit/``, docs/conformance.md).

    run_kit ─ per scenario (at most `jobs` at once), one nursery ─┬─ ScriptedServer: the
              (bounded: the scenario's timeout)                    │   real transport on a
                                                                   │   free loopback port;
                                                                   │   each upgrade → `Wire`
                                                                   ├─ AdapterProcess: the
                                                                   │   author's command,
                                                                   │   started fresh
                                                                   └─ the scenario (`Kit`)

A scenario fails by raising `Failed` naming the requirement it found broken; the result is
a `hoomi.conformance.Result`, so `report` renders it like a transcript's. Everything waits
a bounded time (`Kit.s` scales it); a client that hangs or crashes fails its scenario, and
its process group is killed when the scenario ends. The server never checks tokens: the kit
hands the client opaque tokens and checks that they come back where they should.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import jsonschema_rs
import trio

from hoomi.protocol import SPEC_VERSION, SUBPROTOCOL, Direction, ProtocolError, decode, encode
from hoomi.protocol import messages as m
from hoomi.protocol.spec import load as load_spec
from hoomi.server.transport import Closed, Handshake, Text, WebSocket, text_frame

from .transcripts import Outcome, Result

ADAPTER = "adapter"  # the id failures of the control protocol (not of the spec) are filed under
USER, PEER = "kit-user", "kit-peer"
PAGE_MAX = 4  # the welcome's history_page_max: gaps take several pages
_MAX_LINE = 1024 * 1024  # bytes of one adapter event line
_STDERR_TAIL = 1500  # characters of the adapter's stderr quoted in a failure
_FRAMES = 10_000  # client frames one connection may send in a scenario
# Client requests the scripted server answers by itself, whatever the scenario does.
AUTO = frozenset({"ping", "presence_query", "history", "read", "typing"})


class Failed(Exception):
    """The client broke `requirement`; `message` says how, for people."""

    def __init__(self, requirement: str, message: str) -> None:
        super().__init__(f"{requirement}: {message}")
        self.requirement = requirement
        self.message = message


def show(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)
    return text if len(text) <= 300 else f"{text[:300]}…"


def chat(cid: str, seq: int, *, client_msg_id: str | None = None, text: str = "") -> m.ChatMessage:
    """Message `seq` of conversation `cid` (from the peer, or the user's own with an id)."""
    return m.ChatMessage(
        conversation_id=cid,
        seq=seq,
        message_id=f"m-{cid}-{seq}",
        sender_id=PEER if client_msg_id is None else USER,
        kind="user",
        text=text or f"message {seq} of {cid}",
        sent_at=1_700_000_000_000 + seq,
        client_msg_id=client_msg_id,
    )


# -- the server side: one Wire per client connection ------------------------------------------


@attrs.frozen
class Frame:
    """A frame the client sent: its type, its JSON, when it came, and what is wrong with it
    as a (requirement, message) pair (None: a valid client message)."""

    type: str
    data: Mapping[str, Any]
    at: float
    problem: tuple[str, str] | None = None


def _frame(text: str, at: float) -> Frame:
    try:
        data = json.loads(text)
    except ValueError:
        return Frame("", {}, at, ("HOOMI-WIRE-2", f"a frame that is not JSON: {text[:200]!r}"))
    if not isinstance(data, dict):
        return Frame("", {}, at, ("HOOMI-WIRE-2", f"a frame that is not an object: {text[:200]}"))
    type_ = str(data.get("type"))
    try:
        decode(text, Direction.CLIENT)
    except ProtocolError as error:
        where = f" at {error.path}" if error.path else ""
        why = f"a frame the spec refuses ({error.code.value}{where}: {error.message}): {show(data)}"
        return Frame(type_, data, at, ("HOOMI-REQ-1", why))
    return Frame(type_, data, at)


class Wire:
    """One WebSocket the client opened to the scripted server: every frame it sends is kept
    in `frames` (and read by the scenario through `next`/`expect`); requests in `AUTO` are
    answered at once (pings only while `answer_pings`; history from the kit's messages)."""

    def __init__(self, ws: WebSocket, handshake: Handshake, number: int, kit: Kit) -> None:
        self.ws = ws
        self.handshake = handshake
        self.number = number  # 1 for the client's first connection, 2 for its second …
        self.kit = kit
        self.frames: list[Frame] = []
        self.sent_at: list[float] = []  # when the server sent each frame (pongs included)
        self.answer_pings = True
        self.opened_at = trio.current_time()
        self.ended = trio.Event()
        self.ended_at = 0.0
        self.close_code: int | None = None  # the client's close code (1006: none)
        self._in, self._out = trio.open_memory_channel[Frame](_FRAMES)

    async def read(self) -> None:
        try:
            while True:
                item = await self.ws.receive()
                now = trio.current_time()
                if isinstance(item, Closed):
                    self.close_code = item.code
                    return
                if isinstance(item, Text):
                    frame = _frame(item.data, now)
                else:
                    why = f"a WebSocket frame other than text: {type(item).__name__}"
                    frame = Frame("", {}, now, ("HOOMI-WIRE-2", why))
                self.frames.append(frame)
                if frame.problem is None and frame.type in AUTO:
                    self._answer(frame)
                try:
                    self._in.send_nowait(frame)
                except trio.WouldBlock:
                    return  # a flood: the scenario fails waiting
        finally:
            self.ended_at = trio.current_time()
            self.ended.set()
            self._in.close()

    def _answer(self, frame: Frame) -> None:
        data, rid = frame.data, str(frame.data["id"])
        if frame.type == "ping":
            if self.answer_pings:
                self.send(m.Pong(id=rid, server_time=1_700_000_000_000))
        elif frame.type == "presence_query":
            users = [u for u in data["user_ids"] if u == PEER]
            states = tuple(m.PresenceState(user_id=u, status="offline") for u in users)
            self.send(m.PresenceResult(id=rid, users=states))
        elif frame.type == "history":
            self.send(self.kit.page(rid, data))
        else:  # read, typing
            self.send(m.Ok(id=rid))

    async def next(self, within: float, requirement: str, wanted: str) -> Frame:
        """The client's next frame; `Failed` if none comes within `within` (scaled) seconds,
        or if the frame is not a valid client message."""
        seconds = self.kit.s(within)
        with trio.move_on_after(seconds):
            try:
                frame = await self._out.receive()
            except trio.EndOfChannel:
                raise Failed(
                    requirement,
                    f"expected {wanted} on connection {self.number}, but the client ended it "
                    f"(close code {self.close_code})",
                ) from None
            if frame.problem is not None:
                raise Failed(*frame.problem)
            return frame
        raise Failed(
            requirement, f"expected {wanted} on connection {self.number} within {seconds:g} s"
        )

    async def expect(self, type_: str, within: float, requirement: str) -> Frame:
        """The client's next frame of `type_`, past any `AUTO` request (answered already)."""
        while True:
            frame = await self.next(within, requirement, f"a {type_!r} frame")
            if frame.type == type_:
                return frame
            if frame.type not in AUTO:
                raise Failed(
                    requirement,
                    f"expected a {type_!r} frame on connection {self.number}, got "
                    f"{show(frame.data)}",
                )

    async def quiet(
        self, seconds: float, requirement: str, why: str, *, allow: frozenset[str] = AUTO
    ) -> None:
        """Nothing but frames of the types in `allow` for `seconds` (scaled)."""
        with trio.move_on_after(self.kit.s(seconds)):
            while True:
                try:
                    frame = await self._out.receive()
                except trio.EndOfChannel:
                    return
                if frame.problem is not None:
                    raise Failed(*frame.problem)
                if frame.type not in allow:
                    raise Failed(requirement, f"{why}, got {show(frame.data)}")

    def send(self, message: m.ServerMessage) -> None:
        self.send_text(encode(message))

    def send_text(self, text: str) -> None:
        self.sent_at.append(trio.current_time())
        self.ws.send_nowait(text_frame(text.encode()))

    def close(self, code: int, reason: str = "") -> None:
        self.ws.close_nowait(code, reason)

    async def drop(self) -> None:
        """End the TCP connection without a close frame."""
        await self.ws.aclose()


def _choose(handshake: Handshake) -> str | None:
    return SUBPROTOCOL if SUBPROTOCOL in handshake.subprotocols else None


class ScriptedServer:
    """The real transport on a free loopback port; each upgrade becomes a `Wire`. While
    `refuse` is above 0, that many connections are reset before their upgrade (a draining
    node, HOOMI-CLOSE-2)."""

    def __init__(self, nursery: trio.Nursery, kit: Kit) -> None:
        self._nursery = nursery
        self._kit = kit
        self._in, self._out = trio.open_memory_channel[Wire](100)
        self.wires: list[Wire] = []
        self.refuse = 0
        self.refused = 0
        self.url = ""

    async def start(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/"
        await self._nursery.start(trio.serve_listeners, self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        if self.refuse > 0:
            self.refuse -= 1
            self.refused += 1
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            await trio.aclose_forcefully(stream)
            return
        ws = WebSocket(
            stream,
            max_frame_bytes=1024 * 1024,
            outbox_size=10_000,
            outbox_bytes=64 * 1024 * 1024,
            raw_fd=None,
        )
        try:
            handshake = await ws.accept(_choose)
            if handshake is None:
                return
            wire = Wire(ws, handshake, len(self.wires) + 1, self._kit)
            self.wires.append(wire)
            async with trio.open_nursery() as nursery:
                ws.run_writer_in(nursery)
                nursery.start_soon(wire.read)
                self._in.send_nowait(wire)
                await wire.ended.wait()
                if ws.closing:  # our close frame, or our answer to the client's
                    with trio.move_on_after(1):
                        await ws.flushed()
        finally:
            await ws.aclose()

    async def accept(
        self, within: float, requirement: str, why: str, adapter: AdapterProcess
    ) -> Wire:
        """The client's next connection; `Failed` if it does not come within `within` s,
        or the adapter exits or breaks the control protocol first."""
        wires: list[Wire] = []
        with trio.move_on_after(within):
            async with trio.open_nursery() as nursery:

                async def take() -> None:
                    wires.append(await self._out.receive())
                    nursery.cancel_scope.cancel()

                async def watch() -> None:
                    while not adapter.exited.is_set() and adapter.problem is None:
                        await adapter.changed()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(take)
                nursery.start_soon(watch)
        if not wires:
            with contextlib.suppress(trio.WouldBlock):
                wires.append(self._out.receive_nowait())
        if not wires:
            if adapter.problem is not None:
                raise Failed(ADAPTER, adapter.problem)
            if adapter.exited.is_set():
                raise Failed(requirement, f"the client did not connect ({why}): {adapter.gone()}")
            raise Failed(requirement, f"the client did not connect within {within:g} s ({why})")
        wire = wires[0]
        if SUBPROTOCOL not in wire.handshake.subprotocols:
            offered = ", ".join(wire.handshake.subprotocols) or "none"
            raise Failed("HOOMI-WIRE-1", f"the client offered {offered}, not {SUBPROTOCOL}")
        return wire

    async def no_connection(self, seconds: float, requirement: str, why: str) -> None:
        with trio.move_on_after(seconds):
            wire = await self._out.receive()
            raise Failed(
                requirement, f"the client connected again (connection {wire.number}) {why}"
            )


# -- the client side: the adapter process -----------------------------------------------------


def _event_validator() -> Any:
    schema = load_spec("client-kit/control.schema.json")
    return jsonschema_rs.validator_for({**schema, "oneOf": [{"$ref": "#/$defs/event"}]})


class AdapterProcess:
    """The client under test, behind the author's adapter command: commands go to its
    stdin, the events its app sees come from its stdout into `events` (all kept)."""

    def __init__(self, argv: Sequence[str], stderr: pathlib.Path, validator: Any) -> None:
        self.argv = list(argv)
        self._stderr_path = stderr
        self._validator = validator
        self.events: list[dict[str, Any]] = []
        self.problem: str | None = None  # how it broke the control protocol
        self.process: trio.Process | None = None
        self.exited = trio.Event()  # its stdout ended
        self._changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        with self._stderr_path.open("wb") as stderr:
            self.process = await trio.lowlevel.open_process(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # its own process group: killed as one
            )
        nursery.start_soon(self._read)

    def _add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._change()

    def _change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Return at the next event, problem or exit of the adapter."""
        await self._changed.wait()

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        buffer = b""
        try:
            while True:
                data = await self.process.stdout.receive_some(65536)
                if not data:  # it closed stdout: most likely it ended; reap it for `gone`
                    with trio.move_on_after(1):
                        await self.process.wait()
                    return
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._line(line)
                if len(buffer) > _MAX_LINE:
                    self.problem = f"an event line longer than {_MAX_LINE} bytes"
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.exited.set()
            self._changed.set()

    def _line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            self._validator.validate(event)
        except (ValueError, jsonschema_rs.ValidationError) as error:
            if self.problem is None:
                text = line[:200].decode("utf-8", "replace")
                self.problem = f"an event line that breaks the control protocol ({error}): {text}"
                self._change()
            return
        self._add(event)

    async def command(self, command: Mapping[str, Any], requirement: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        line = json.dumps(dict(command), separators=(",", ":")).encode() + b"\n"
        try:
            await self.process.stdin.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise Failed(requirement, f"the adapter is gone; {self.stderr_tail()}") from None

    async def wait_for(
        self,
        want: Callable[[dict[str, Any]], bool],
        *,
        since: int,
        within: float,
        requirement: str,
        wanted: str,
    ) -> int:
        """The index of the first event at or after `since` that satisfies `want`."""
        with trio.move_on_after(within):
            start = since
            while True:
                for index in range(start, len(self.events)):
                    if want(self.events[index]):
                        return index
                start = len(self.events)
                if self.problem is not None:
                    raise Failed(ADAPTER, self.problem)
                if self.exited.is_set():
                    raise Failed(requirement, f"expected {wanted}, but {self.gone()}")
                await self._changed.wait()
        raise Failed(requirement, f"expected the app to see {wanted} within {within:g} s")

    def gone(self) -> str:
        process = self.process
        code = None if process is None else process.poll()
        status = "the adapter exited" if code is None else f"the adapter exited with {code}"
        return f"{status}; {self.stderr_tail()}"

    def stderr_tail(self) -> str:
        try:
            text = self._stderr_path.read_text("utf-8", "replace").strip()
        except OSError:
            text = ""
        return f"its stderr ends: {text[-_STDERR_TAIL:]}" if text else "its stderr is empty"

    async def stop(self) -> None:
        """Ask it to close, then kill its process group (bounded)."""
        process = self.process
        if process is None:
            return
        with trio.move_on_after(2):
            with contextlib.suppress(Failed):
                await self.command({"cmd": "close"}, ADAPTER)
            await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with trio.move_on_after(2):
                await process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await trio.aclose_forcefully(stream)


# -- what a scenario works with ----------------------------------------------------------------


class Kit:
    """A scenario's view: the scripted server, the client under test, the messages the
    server "stores" (`messages`, answering `history`), the tokens handed out.

    `s(seconds)` scales a wait by `--timeout-scale`; `where` names the scenario's current
    step for the report; `cursor` is the index of the adapter event after the last `live`."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.where = "start"
        self.token = ""
        self._tokens = 0
        self.cursor = 0
        self.messages: dict[str, dict[int, m.ChatMessage]] = {}
        self.server: ScriptedServer
        self.adapter: AdapterProcess

    def s(self, seconds: float) -> float:
        return seconds * self.scale

    # commands ------------------------------------------------------------------------------

    def _new_token(self) -> str:
        self._tokens += 1
        self.token = f"kit-token-{self._tokens}"
        return self.token

    async def connect(self, positions: Mapping[str, int] | None = None) -> None:
        """Tell the client to connect with a new token (and the app's `positions`)."""
        self.where = "connect"
        command: dict[str, Any] = {"cmd": "connect", "url": self.server.url}
        command["token"] = self._new_token()
        if positions:
            command["positions"] = dict(positions)
        await self.adapter.command(command, "HOOMI-CLIENT-1")

    async def new_token(self) -> str:
        """Hand the adapter a new token and wait until it is in force (`token_set`)."""
        since = len(self.adapter.events)
        token = self._new_token()
        await self.adapter.command({"cmd": "token", "token": token}, ADAPTER)
        await self.adapter.wait_for(
            lambda e: e["event"] == "token_set",
            since=since,
            within=self.s(3),
            requirement=ADAPTER,
            wanted="`token_set` after a `token` command",
        )
        return token

    async def send(self, ref: str, cid: str, text: str) -> None:
        command = {"cmd": "send", "ref": ref, "conversation_id": cid, "text": text}
        await self.adapter.command(command, "HOOMI-CLIENT-1")

    async def read(self, cid: str, seq: int) -> None:
        command = {"cmd": "read", "conversation_id": cid, "seq": seq}
        await self.adapter.command(command, "HOOMI-CLIENT-1")

    async def outcome(self, ref: str, requirement: str, within: float = 5) -> dict[str, Any]:
        """The `ack` or `send_failed` event of send `ref`."""
        index = await self.adapter.wait_for(
            lambda e: e["event"] in ("ack", "send_failed") and e["ref"] == ref,
            since=0,
            within=self.s(within),
            requirement=requirement,
            wanted=f"the outcome of send {ref!r} (ack or send_failed)",
        )
        return self.adapter.events[index]

    # connections ----------------------------------------------------------------------------

    async def accept(self, requirement: str, why: str, within: float = 5) -> Wire:
        wire = await self.server.accept(self.s(within), requirement, why, self.adapter)
        self.where = f"connection {wire.number}"
        return wire

    async def hello(self, wire: Wire, resume: Mapping[str, int] | None = None) -> Frame:
        """The connection's first frame, which must be `hello` with the newest token and,
        per conversation, the last seq the app was shown (`resume`)."""
        self.where = f"connection {wire.number}: hello"
        frame = await wire.next(5, "HOOMI-CLIENT-1", "a hello")
        if frame.type != "hello":
            raise Failed("HOOMI-CLIENT-1", f"the first frame was not hello: {show(frame.data)}")
        if frame.data["token"] != self.token:
            raise Failed(
                "HOOMI-CLIENT-1",
                f"hello carried token {frame.data['token']!r}, not the newest {self.token!r}",
            )
        sent = {p["conversation_id"]: p["after_seq"] for p in frame.data.get("resume") or ()}
        wanted = dict(resume or {})  # a position 0 may be left out
        if any(cid not in wanted for cid in sent) or any(
            sent.get(cid, 0) != seq for cid, seq in wanted.items()
        ):
            raise Failed(
                "HOOMI-RESUME-1",
                f"hello.resume was {show(frame.data.get('resume'))}; the app was last shown "
                f"{show(dict(resume or {}))}",
            )
        return frame

    def welcome(self, wire: Wire, hello: Frame, *, heartbeat_ms: int = 30_000) -> None:
        """Welcome the client to every conversation in `messages` (latest: the highest
        seq stored)."""
        self.where = f"connection {wire.number}: welcome"
        conversations = tuple(
            m.Conversation(
                conversation_id=cid,
                kind="direct",
                members=(USER, PEER),
                latest_seq=max(stored, default=0),
                read_seq=0,
                unread=0,
            )
            for cid, stored in self.messages.items()
        )
        wire.send(
            m.Welcome(
                id=str(hello.data["id"]),
                session_id=f"s-kit-{wire.number}",
                user_id=USER,
                protocol=SUBPROTOCOL,
                spec_version=SPEC_VERSION,
                heartbeat_interval_ms=heartbeat_ms,
                limits=m.Limits(
                    max_frame_bytes=65536,
                    max_text_chars=4000,
                    history_page_max=PAGE_MAX,
                    replay_max=1000,
                    rate_per_s=20.0,
                    rate_burst=40,
                    typing_ttl_ms=5000,
                ),
                conversations=conversations,
            )
        )

    async def live(self, requirement: str = "HOOMI-CLIENT-1") -> None:
        """Wait until the app is told the client is live (after the last one seen)."""
        index = await self.adapter.wait_for(
            lambda e: e["event"] == "state" and e["state"] == "live",
            since=self.cursor,
            within=self.s(5),
            requirement=requirement,
            wanted="the client go live after welcome (a `state` event `live`)",
        )
        self.cursor = index + 1

    async def handshake(
        self, wire: Wire, resume: Mapping[str, int] | None = None, *, heartbeat_ms: int = 30_000
    ) -> Frame:
        """hello (checked), welcome, and the app told it is live."""
        hello = await self.hello(wire, resume)
        self.welcome(wire, hello, heartbeat_ms=heartbeat_ms)
        await self.live()
        self.where = f"connection {wire.number}: live"
        return hello

    # messages -------------------------------------------------------------------------------

    def store(self, cid: str, seqs: Iterable[int], **fields: Any) -> list[m.ChatMessage]:
        stored = self.messages.setdefault(cid, {})
        for seq in seqs:
            stored.setdefault(seq, chat(cid, seq, **fields))
        return [stored[seq] for seq in seqs]

    def deliver(self, wire: Wire, cid: str, seqs: Iterable[int]) -> None:
        """Send messages `seqs` of `cid` (stored first if new) as `message` events."""
        for message in self.store(cid, list(seqs)):
            wire.send(m.MessageEvent(message=message))

    def ack(self, wire: Wire, send: Frame, seq: int, *, deliver: bool = True) -> None:
        """Store `send` as message `seq` (if new), ack it and (`deliver`) send the
        message event that every session of the sender gets (HOOMI-DELIVER-1)."""
        cid, cmid = str(send.data["conversation_id"]), str(send.data["client_msg_id"])
        (message,) = self.store(cid, [seq], client_msg_id=cmid, text=str(send.data["text"]))
        wire.send(
            m.Ack(
                id=str(send.data["id"]),
                conversation_id=cid,
                client_msg_id=cmid,
                message_id=message.message_id,
                seq=seq,
                sent_at=message.sent_at,
            )
        )
        if deliver:
            wire.send(m.MessageEvent(message=message))

    async def acked(self, ref: str, seq: int, requirement: str, within: float = 5) -> None:
        """Send `ref` was reported to the app as acked with `seq`."""
        outcome = await self.outcome(ref, requirement, within)
        if outcome["event"] != "ack" or outcome["seq"] != seq:
            raise Failed(requirement, f"send {ref!r} ended as {show(outcome)}, not acked as {seq}")

    def page(self, rid: str, request: Mapping[str, Any]) -> m.HistoryPage:
        """The answer to a `history` request, from `messages` (HOOMI-HISTORY-1..3)."""
        cid = str(request["conversation_id"])
        stored = self.messages.get(cid, {})
        limit = min(int(request.get("limit") or PAGE_MAX), PAGE_MAX)
        after, before = request.get("after_seq"), request.get("before_seq")
        if after is not None:
            seqs = sorted(s for s in stored if s > after)
            chosen, more = seqs[:limit], len(seqs) > limit
        else:
            seqs = sorted(s for s in stored if before is None or s < before)
            chosen, more = seqs[-limit:], len(seqs) > limit
        return m.HistoryPage(
            id=rid, conversation_id=cid, messages=tuple(stored[s] for s in chosen), has_more=more
        )

    def shown(self, cid: str) -> list[int]:
        """The seqs of `cid` the app was shown, in order, repeats included."""
        events = self.adapter.events
        return [e["seq"] for e in events if e["event"] == "message" and e["conversation_id"] == cid]

    async def app_shows(
        self, cid: str, seqs: Sequence[int], requirement: str = "HOOMI-CLIENT-2", within: float = 5
    ) -> None:
        """The app was shown exactly `seqs` of `cid` (each once, in this order, with the
        stored contents): waits for the last one, then a moment for any repeat."""
        last = seqs[-1]
        try:
            await self.adapter.wait_for(
                lambda e: (
                    e["event"] == "message" and e["conversation_id"] == cid and e["seq"] == last
                ),
                since=0,
                within=self.s(within),
                requirement=requirement,
                wanted=f"message {last} of {cid}",
            )
        except Failed as failed:
            if failed.requirement != requirement:
                raise
            raise Failed(requirement, f"{failed.message}; it was shown {self.shown(cid)}") from None
        await trio.sleep(self.s(0.2))
        shown = self.shown(cid)
        if shown != list(seqs):
            raise Failed(
                requirement,
                f"the app was shown seqs {shown} of {cid}; expected each of {list(seqs)} once, "
                "in order",
            )
        stored = self.messages[cid]
        for event in self.adapter.events:
            if event["event"] == "message" and event["conversation_id"] == cid:
                message = stored[event["seq"]]
                if (event["message_id"], event["text"]) != (message.message_id, message.text):
                    raise Failed(requirement, f"the app was shown {show(event)} for {message}")


# -- running scenarios ---------------------------------------------------------------------------


Scenario = Callable[[Kit], Awaitable[None]]


@attrs.frozen(kw_only=True)
class ScenarioSpec:
    name: str
    title: str
    requirements: tuple[str, ...]
    run: Scenario
    timeout_s: float = 15.0


async def run_scenario(
    spec: ScenarioSpec, command: Sequence[str], *, scale: float = 1.0, validator: Any = None
) -> Result:
    """Run one scenario against a fresh adapter process. The client's faults are the
    result, never raised; bounded by the scenario's timeout (scaled) plus the cleanup."""
    started = trio.current_time()
    kit = Kit(scale)
    failure: Failed | None = None
    with tempfile.TemporaryDirectory(prefix="hoomi-kit-") as tmp:
        adapter = AdapterProcess(
            command, pathlib.Path(tmp) / "stderr.txt", validator or _event_validator()
        )
        async with trio.open_nursery() as nursery:
            kit.server = ScriptedServer(nursery, kit)
            kit.adapter = adapter
            await kit.server.start()
            try:
                await adapter.start(nursery)
            except OSError as error:
                failure = Failed(ADAPTER, f"cannot start the adapter {command[0]!r}: {error}")
            else:
                try:
                    with trio.fail_after(spec.timeout_s * scale):
                        await spec.run(kit)
                except Failed as failed:
                    failure = failed
                except trio.TooSlowError:
                    why = f"the scenario did not end within {spec.timeout_s * scale:g} s"
                    failure = Failed(spec.requirements[0], f"{why}; {adapter.stderr_tail()}")
                finally:
                    with trio.CancelScope(shield=True):
                        await adapter.stop()
                if adapter.problem is not None:  # whatever else went wrong, this came first
                    failure = Failed(ADAPTER, adapter.problem)
            nursery.cancel_scope.cancel()
    duration = trio.current_time() - started
    if failure is None:
        return Result(
            name=spec.name,
            outcome=Outcome.PASSED,
            requirements=spec.requirements,
            duration_s=duration,
        )
    return Result(
        name=spec.name,
        outcome=Outcome.FAILED,
        requirements=spec.requirements,
        where=kit.where,
        message=failure.message,
        duration_s=duration,
        failed_requirements=(failure.requirement,),
    )


async def run_kit(
    specs: Sequence[ScenarioSpec],
    command: Sequence[str],
    *,
    scale: float = 1.0,
    jobs: int = 4,
    on_start: Callable[[ScenarioSpec], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Every scenario's result, in the order of `specs`; at most `jobs` run at once."""
    validator = _event_validator()
    limiter = trio.CapacityLimiter(jobs)
    results: list[Result | None] = [None] * len(specs)

    async def one(index: int, spec: ScenarioSpec) -> None:
        async with limiter:
            if on_start is not None:
                on_start(spec)
            result = await run_scenario(spec, command, scale=scale, validator=validator)
            results[index] = result
            if on_result is not None:
                on_result(result)

    async with trio.open_nursery() as nursery:
        for index, spec in enumerate(specs):
            nursery.start_soon(one, index, spec)
    return [r for r in results if r is not None]
