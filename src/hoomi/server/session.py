"""One client connection: the spec's state machine driven over a `WebSocket`.

A session runs in its own nursery (its reader is the session's task; its writer is started
there on demand by the transport). Everything that can end a session — a frame, a timer
fired by the server's shared scheduler, an operator, a full outbox — goes through `fire`,
which applies the spec's transition and performs its generic actions (error reply, close).
An unexpected exception closes this connection with 1011 and never reaches the server.
"""

from __future__ import annotations

import secrets
from collections.abc import KeysView
from typing import TYPE_CHECKING

import trio

from hoomi.protocol import (
    SUBPROTOCOL,
    CloseCode,
    ConnectionState,
    ErrorCode,
    Event,
    ProtocolError,
    State,
    Transition,
    decode_client,
    encode_bytes,
)
from hoomi.protocol import messages as m

from . import logs
from .auth import TokenError
from .store import ConversationNotFound, MemberView, NotAMember, StoreUnavailable
from .transport import Binary, Closed, Invalid, Text, TooBig, WebSocket, text_frame

if TYPE_CHECKING:
    from .server import Server


class Session:
    """The server side of one WebSocket connection."""

    # Slots: tens of thousands of idle sessions each save their instance dict.
    __slots__ = (
        "_held",
        "_refill_at",
        "_refused_in_row",
        "_scope",
        "_tokens",
        "client",
        "connected_at",
        "counted_online",
        "due",
        "expires_at_ms",
        "id",
        "last_ping",
        "last_seq",
        "machine",
        "messages_in",
        "messages_out",
        "server",
        "user_id",
        "warned",
        "ws",
    )

    def __init__(self, server: Server, ws: WebSocket, *, accepted_at: float | None = None) -> None:
        self.id = "s_" + secrets.token_hex(8)
        self.server = server
        self.ws = ws
        self.machine = ConnectionState()
        self.user_id = ""
        self.client: m.ClientInfo | None = None
        self.expires_at_ms = 0
        self.warned = False
        now = trio.current_time()
        self.connected_at = now if accepted_at is None else accepted_at
        self.due = self.hello_deadline  # when the server's scheduler next looks at it
        self.last_ping = now
        self.counted_online = False  # counted in the server's presence aggregate
        # The conversations this session is subscribed to, with the last seq delivered in
        # each (one dict for both: a set beside it would cost ~200 bytes per session).
        self.last_seq: dict[str, int] = {}
        self.messages_in = 0
        self.messages_out = 0
        # Live frames of conversations being replayed wait here (HOOMI-RESUME-2).
        self._held: dict[str, list[tuple[int | None, bytes]]] | None = None
        self._tokens = float(server.settings.rate_burst)
        self._refill_at = now
        self._refused_in_row = 0
        # The connection nursery's scope: bounded by the close timeout once closing.
        self._scope: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.user_id or '-'} {self.machine.state.value}>"

    @property
    def hello_deadline(self) -> float:
        """One deadline from accept to welcome, the upgrade included (HOOMI-HELLO-4)."""
        return self.connected_at + self.server.settings.hello_timeout_ms / 1000

    @property
    def remote(self) -> str:
        """The peer's address (asked of the socket: one string less per idle session)."""
        return self.ws.peer()

    @property
    def conversations(self) -> KeysView[str]:
        """The conversations this session is subscribed to."""
        return self.last_seq.keys()

    def snapshot(self, *, detail: bool = False) -> dict[str, object]:
        """What operators see of this session (the admin API's session object)."""
        server = self.server
        to_wall = server.wall_ms() - int(trio.current_time() * 1000)
        info: dict[str, object] = {
            "session_id": self.id,
            "user_id": self.user_id or None,
            "state": self.machine.state.value,
            "remote": self.remote,
            "client": {"name": self.client.name, "version": self.client.version}
            if self.client
            else None,
            "protocol": SUBPROTOCOL,
            "connected_at": int(self.connected_at * 1000) + to_wall,
            "last_activity": int(self.ws.last_received * 1000) + to_wall,
            "outbox_depth": self.ws.queued,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "conversations": sorted(self.conversations),
        }
        if detail:
            info["last_seq"] = dict(sorted(self.last_seq.items()))
        return info

    # -- outbound -------------------------------------------------------------------------

    def push(self, frame: bytes) -> None:
        """Queue a pre-built frame; a full outbox ends the session as a slow consumer."""
        if self.ws.send_nowait(frame):
            self.messages_out += 1
        elif self.machine.state is State.READY:
            self.fire(Event.OUTBOX_FULL)

    def send(self, message: m.ServerMessage) -> None:
        metrics = self.server.metrics
        metrics.frames_out += 1
        if isinstance(message, m.Error):
            metrics.errors[message.code] += 1
        self.push(text_frame(encode_bytes(message)))

    def deliver(self, conversation_id: str, seq: int | None, frame: bytes) -> None:
        """Fan-out's entry point: never blocks; keeps seq order and drops duplicates."""
        if self.machine.state is not State.READY:
            return
        held = self._held.get(conversation_id) if self._held else None
        if held is not None:
            if len(held) >= self.server.settings.outbox_size:
                self.fire(Event.OUTBOX_FULL)
            else:
                held.append((seq, frame))
            return
        if seq is not None:
            if seq <= self.last_seq.get(conversation_id, 0):
                return
            self.last_seq[conversation_id] = seq
        self.push(frame)

    def fire(
        self,
        event: Event,
        *,
        request_id: str | None = None,
        error: ProtocolError | None = None,
        detail: str = "",
        retry_after_ms: int | None = None,
    ) -> Transition:
        """Apply `event` to the state machine and perform its generic actions."""
        before = self.machine.state
        transition = self.machine.handle(event)
        for action in transition.actions:
            if action == "reply_error":
                code = transition.error or (error.code if error else ErrorCode.INTERNAL)
                self.send(
                    m.Error(
                        code=code.value,
                        message=detail or (error.message if error else code.value),
                        id=error.request_id if error else request_id,
                        path=error.path if error else None,
                        retry_after_ms=retry_after_ms,
                    )
                )
            elif action == "close":
                assert transition.close is not None
                self._close(transition.close, detail)
            elif action == "send_ping":
                self.last_ping = trio.current_time()
                self.ws.ping_nowait()
            elif action == "send_token_expiring":
                self.warned = True
                self.send(m.TokenExpiring(expires_at=self.expires_at_ms))
        if transition.target is State.CLOSING and before is not State.CLOSING:
            logs.event(
                "closing",
                session=self.id,
                user=self.user_id or None,
                trigger=event.value,
                code=transition.close.value if transition.close else None,
            )
        return transition

    def _close(self, code: CloseCode, detail: str) -> None:
        metrics = self.server.metrics
        metrics.closes[str(code.value)] += 1
        if code is CloseCode.SLOW_CONSUMER:
            metrics.slow_consumers += 1
        self.ws.close_nowait(code.value, (detail or code.name.lower())[:120])
        self._arm_close_timeout(code)

    def _arm_close_timeout(self, code: CloseCode | None = None) -> None:
        # The reader keeps reading until the peer answers the close, at most this long.
        # Going away delivers what is queued within the drain deadline (HOOMI-CLOSE-2);
        # every other close gets the close timeout.
        settings = self.server.settings
        wait_ms = (
            settings.drain_timeout_ms if code is CloseCode.GOING_AWAY else settings.close_timeout_ms
        )
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + wait_ms / 1000)

    # -- the session's task ---------------------------------------------------------------

    async def run(self, scope: trio.CancelScope) -> None:
        """Serve the connection until it closes. `scope` (the connection nursery's) gets the
        close timeout as its deadline once the session is closing."""
        self._scope = scope
        if self.machine.state is State.CLOSING:  # closed before it ran (no subprotocol)
            self._arm_close_timeout()
        try:
            await self._read_loop()
        except Exception:
            logs.failure("session_failed", session=self.id, user=self.user_id or None)
            if self.machine.state not in (State.CLOSING, State.CLOSED):
                self.fire(Event.HANDLER_FAILED, detail="internal error")
                with trio.move_on_after(self.server.settings.close_timeout_ms / 1000):
                    await self.ws.flushed()
        finally:
            if self.machine.state is not State.CLOSED:
                self.machine.handle(
                    Event.CLOSE_DONE if self.machine.state is State.CLOSING else Event.PEER_CLOSED
                )
            self.server.release(self)
            await self.ws.aclose()

    async def _read_loop(self) -> None:
        while True:
            incoming = await self.ws.receive()
            state = self.machine.state
            if isinstance(incoming, Closed):
                if state is not State.CLOSING:
                    self.fire(Event.PEER_CLOSED)
                    self._arm_close_timeout()
                # What is queued goes out before the socket closes: over TLS every write
                # is queued, the transport's answer to this close among them.
                await self.ws.flushed()
                return
            if state is State.CLOSING:
                continue  # the close is decided; frames after it are ignored
            if isinstance(incoming, Text):
                await self._on_text(incoming.data)
            elif isinstance(incoming, Binary):
                self.fire(Event.BINARY_FRAME, detail="binary frames are not supported")
            elif isinstance(incoming, TooBig):
                self.fire(Event.FRAME_TOO_BIG, detail="frame exceeds max_frame_bytes")
            elif isinstance(incoming, Invalid):
                event = Event.INVALID_UTF8 if incoming.code == 1007 else Event.BAD_FRAMING
                self.fire(event, detail=incoming.reason)

    async def _on_text(self, data: str) -> None:
        self.messages_in += 1
        self.server.metrics.frames_in += 1
        ready = self.machine.state is State.READY
        try:
            message = decode_client(data)
        except ProtocolError as error:
            # Garbage counts against the rate limit too; the refusal names the id if any.
            if not ready or self._take_token(error.request_id):
                self.fire(Event.BAD_FRAME, error=error)
            return
        if ready and not self._take_token(message.id):
            return
        if isinstance(message, m.Hello):
            if ready:
                self.fire(Event.HELLO, request_id=message.id, detail="already authenticated")
            else:
                await self._hello(message)
            return
        if self.fire(Event.REQUEST).target is not State.READY:
            return  # a request before hello: the table closed the connection
        try:
            await self.server.handle(self, message)
        except Exception as exc:
            self.refuse(message, exc)

    def refuse(self, request: m.ClientMessage, exc: Exception) -> None:
        """Reply to a request that failed with `exc`: one request failed, not the
        connection (HOOMI-ERR-3). Call it in the `except` block that caught `exc`."""
        if isinstance(exc, ConversationNotFound):
            self.reply_error(request.id, ErrorCode.NOT_FOUND, str(exc))
        elif isinstance(exc, NotAMember):
            self.reply_error(request.id, ErrorCode.FORBIDDEN, str(exc))
        elif isinstance(exc, StoreUnavailable):
            logs.event("store_unavailable", session=self.id, error=str(exc))
            self.reply_error(
                request.id, ErrorCode.UNAVAILABLE, "storage is unavailable", retry_after_ms=1000
            )
        else:
            logs.failure("request_failed", session=self.id, user=self.user_id, type=request.TYPE)
            self.reply_error(request.id, ErrorCode.INTERNAL, "the server failed on this request")

    def reply_error(
        self,
        request_id: str,
        code: ErrorCode,
        message: str,
        *,
        path: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        self.send(
            m.Error(
                code=code.value,
                message=message,
                id=request_id,
                path=path,
                retry_after_ms=retry_after_ms,
            )
        )

    def _take_token(self, request_id: str | None) -> bool:
        """Token bucket per connection (HOOMI-LIMIT-2); False if this request was refused."""
        settings = self.server.settings
        now = trio.current_time()
        self._tokens = min(
            float(settings.rate_burst), self._tokens + (now - self._refill_at) * settings.rate_per_s
        )
        self._refill_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            self._refused_in_row = 0
            return True
        self._refused_in_row += 1
        if self._refused_in_row > settings.rate_burst:
            self.fire(Event.FLOOD, detail="too many requests")
        else:
            wait_ms = int((1 - self._tokens) / settings.rate_per_s * 1000) + 1
            self.fire(
                Event.RATE_EXCEEDED,
                request_id=request_id,
                detail="too many requests",
                retry_after_ms=wait_ms,
            )
        return False

    # -- hello ----------------------------------------------------------------------------

    async def _hello(self, hello: m.Hello) -> None:
        self.fire(Event.HELLO)
        try:
            identity = self.server.verifier.verify(hello.token, now_s=self.server.wall())
        except TokenError as refused:
            expired = refused.code is ErrorCode.TOKEN_EXPIRED
            logs.event("auth_failed", session=self.id, remote=self.remote, reason=refused.message)
            self.fire(
                Event.HELLO_EXPIRED if expired else Event.HELLO_REFUSED,
                request_id=hello.id,
                detail=refused.message,
            )
            return
        if not self.server.claim(self, identity.user_id):
            self.fire(Event.HELLO_OVER_LIMIT, detail="too many sessions for this user")
            return
        self.user_id = identity.user_id
        self.expires_at_ms = identity.expires_at_ms
        self.client = hello.client
        for _ in range(3):
            # A membership change while the store answered would be lost to this session
            # (it is not subscribed yet): read again, a few times at most.
            epoch = self.server.membership_epoch
            views = await self.server.store.conversations_of(self.user_id)
            if self.machine.state is not State.AUTHENTICATING:
                return  # closed (deadline, drain, kick) while the store answered
            if epoch == self.server.membership_epoch:
                break
        self.fire(Event.HELLO_ACCEPTED)
        self.due = trio.current_time()  # heartbeat and token timers start now
        self._welcome(hello, views)
        await self._replay(hello)

    def _welcome(self, hello: m.Hello, views: list[MemberView]) -> None:
        settings = self.server.settings
        member_of = {view.info.conversation_id for view in views}
        wanted = {p.conversation_id for p in hello.resume or () if p.conversation_id in member_of}
        self._held = {cid: [] for cid in wanted} or None
        conversations = []
        for view in views:
            cid = view.info.conversation_id
            # A message stored while `conversations_of` ran may already be published.
            latest = max(view.info.latest_seq, self.server.latest_published(cid))
            self.last_seq[cid] = latest
            conversations.append(self.server.conversation_record(view, latest))
        # No await from here to the welcome: no live frame can slip in before it.
        self.server.ready(self, member_of)
        self.ws.max_frame_bytes = settings.max_frame_bytes
        self.send(
            m.Welcome(
                id=hello.id,
                session_id=self.id,
                user_id=self.user_id,
                protocol=SUBPROTOCOL,
                spec_version=self.server.spec_version,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                token_expires_at=self.expires_at_ms,
                limits=self.server.limits,
                conversations=tuple(conversations),
            )
        )
        logs.event("ready", session=self.id, user=self.user_id, remote=self.remote)
        self.server.notify("ready", self)

    async def _replay(self, hello: m.Hello) -> None:
        """Replay missed messages per resume position, then release the held live frames."""
        replay_max = self.server.settings.replay_max
        for position in hello.resume or ():
            cid, after = position.conversation_id, position.after_seq
            if not self._held or cid not in self._held:
                continue
            latest = self.last_seq[cid]
            if latest - after > replay_max:
                self.send(m.ResumeGap(conversation_id=cid, after_seq=after, latest_seq=latest))
            elif latest > after:
                page = await self.server.store.history(cid, after_seq=after, limit=latest - after)
                if self.machine.state is not State.READY:
                    return
                if cid not in self.last_seq:  # removed meanwhile (HOOMI-CONV-3)
                    self._held.pop(cid, None)
                    continue
                for message in page.messages:
                    self.send(m.MessageEvent(message=message))
                    if self.ws.queued > self.server.settings.outbox_size // 2:
                        # A replay is a burst the client did not pace: let it read before
                        # the outbox fills and a fast client looks like a slow one.
                        with trio.move_on_after(self.server.settings.close_timeout_ms / 1000):
                            await self.ws.flushed()
                        if self.machine.state is not State.READY:
                            return
            held = self._held.pop(cid, None) if self._held else None
            if held is None:
                continue
            for seq, frame in held:
                self.deliver(cid, seq, frame)
        self._held = None
