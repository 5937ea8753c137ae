"""The Python client SDK on trio-websocket: one `Client` across reconnects.

    connect() ─ client nursery ─┬─ _run: attempt → backoff → attempt …  (client-state-machine)
                                │    └─ one nursery per connection ─┬─ trio-websocket's reader
                                │       (_live: this task reads)    ├─ _writer (paced requests)
                                │                                   ├─ _timers (connect, quiet,
                                │                                   │   dead; real elapsed time)
                                │                                   └─ token refreshes
                                └─ delayed retries (retryable errors), room-again reports

Every state change goes through `_fire`, which applies `spec/v1/client-state-machine.json`
and runs the transition's actions by name (`_ACTIONS`). The message streams are the
Sans-I/O `Streams`. The reader never waits for the app or for pacing (ADR 10). Bounds:
unanswered requests (`max_pending`), events waiting for the app (`event_buffer`: a message
the full inbox refuses is paged again later, see `inbox.py`), held out-of-order messages
(`hold_max`), frames (`max_message_bytes`), reconnect attempts (`backoff`).
"""

from __future__ import annotations

import collections
import itertools
import random
import ssl
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import attrs
import h11
import trio
import trio_websocket
import wsproto.utilities

from hoomi import __version__
from hoomi.protocol import SUBPROTOCOL, ProtocolError, decode_server, encode, spec
from hoomi.protocol import messages as m
from hoomi.protocol.client_state import (
    BACKOFF,
    CLIENT_TIMER_DEFAULTS_MS,
    Backoff,
    ClientConnectionState,
    ClientEvent,
    ClientState,
)
from hoomi.protocol.errors import CloseCode, ErrorCode

from .events import ClientClosed, ClientError, Event, RequestFailed, StateChanged
from .inbox import Inbox
from .streams import Step, Streams

TokenProvider = Callable[[], Awaitable[str]]

# Error codes the registry marks retryable: a request that got one is sent again later.
_RETRYABLE = frozenset(e["code"] for e in spec.load("errors.json")["errors"] if e["retryable"])
_PRESENCE_PREFIX = "presence-"  # the ids of the presence queries made after each welcome
_PRESENCE_QUERY_MAX = 100  # user_ids per presence_query (its schema's maxItems)
_ABNORMAL = 1006  # trio-websocket's code for a connection that ended without a close frame
_REPLIES: dict[type[m.ClientMessage], type[m.ServerMessage]] = {
    m.Send: m.Ack,
    m.History: m.HistoryPage,
    m.Read: m.Ok,
    m.Typing: m.Ok,
    m.Refresh: m.Ok,
    m.PresenceQuery: m.PresenceResult,
    m.Ping: m.Pong,
}
_UPGRADE_ERRORS = (
    trio_websocket.ConnectionRejected,
    trio_websocket.HandshakeError,
    wsproto.utilities.ProtocolError,
    h11.ProtocolError,
)
_PACE_MARGIN = 0.9  # the share of the server's rate limit the client uses
_ENDING = frozenset({"abort_connection", "close_connection"})  # actions that end a connection


@attrs.frozen(kw_only=True)
class ClientSettings:
    """Every bound of the SDK; the defaults are the spec's where it has one."""

    connect_timeout_s: float = (CLIENT_TIMER_DEFAULTS_MS["connect"] or 10_000) / 1000
    backoff: Backoff = BACKOFF
    max_pending: int = 1000  # unacked sends and unanswered requests
    event_buffer: int = 1000  # events waiting for the app
    hold_max: int = 1000  # out-of-order messages held per conversation while a gap fills
    max_message_bytes: int = 4 * 1024 * 1024  # the largest server frame accepted
    close_timeout_s: float = 2.0
    client_name: str = "hoomi-python"
    ssl_context: ssl.SSLContext | None = None  # for wss://; None: the system's defaults
    rng: random.Random = attrs.field(factory=random.Random)  # backoff jitter draws


@attrs.define(eq=False)
class _Pending:
    """A request waiting for its reply. `repeat`: safe to send again on a new connection."""

    frame: m.ClientMessage
    repeat: bool
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: m.ServerMessage | None = None
    error: Exception | None = None
    written_on: int = 0  # the connection generation it was last written on

    def finish(self, reply: m.ServerMessage | None = None, error: Exception | None = None) -> None:
        if not self.done.is_set():
            self.reply, self.error = reply, error
            self.done.set()


@attrs.define(eq=False)
class _Connection:
    """One attempt's connection. `ended`: an action already ended it (abort or close)."""

    generation: int
    scope: trio.CancelScope
    nursery: trio.Nursery
    started_at: float
    ws: trio_websocket.WebSocketConnection | None = None
    hello_id: str = ""
    last_frame_at: float = 0.0
    pinged_at: float | None = None
    interval_s: float | None = None  # the server's heartbeat interval, from welcome
    welcomed: trio.Event = attrs.field(factory=trio.Event)
    closed: trio.Event = attrs.field(factory=trio.Event)  # our close handshake is over
    ended: bool = False
    # Frames for its writer task, in order, each with the app's request if it is one. Bounded
    # by what can be outstanding: max_pending requests, a fill per conversation, a ping, the
    # presence queries of one welcome.
    outbox: collections.deque[tuple[m.ClientMessage, _Pending | None]] = attrs.field(
        factory=collections.deque
    )
    wake_writer: trio.Event = attrs.field(factory=trio.Event)


@attrs.frozen
class _End:
    """How a connection ended, for the event fed to the state machine."""

    event: ClientEvent
    close_code: int | None = None
    reason: str = ""


def _split_url(url: str) -> tuple[str, int, str, bool]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or (443 if secure else 80), resource, secure


class Client:
    """A connection to a Hoomi server that outlives its WebSockets; make it with `connect`.

    Requests (`send`, `history`, `read`, `typing`, `presence`) wait while the client is
    reconnecting; `send`, `history`, `read` and `presence` are sent again after a
    reconnect until answered. Each waits at most as long as the caller's cancel scope;
    cancelling one stops the wait (a send already written may still be stored, and then
    arrives in `events()` like any message). After the client closes they raise
    `ClientClosed`.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        token_provider: TokenProvider | None,
        positions: Mapping[str, int] | None,
        settings: ClientSettings,
        nursery: trio.Nursery,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise ValueError("give exactly one of token and token_provider")
        self.url = url
        self._address = _split_url(url)
        self._token = token
        self._token_provider = token_provider
        self.settings = settings
        self._nursery = nursery
        self._machine = ClientConnectionState()
        self.streams = Streams(positions, hold_max=settings.hold_max)
        self._pending: dict[str, _Pending] = {}
        self._room = trio.Semaphore(settings.max_pending)
        self._ids = itertools.count(1)
        self._generation = 0
        self._connection: _Connection | None = None
        self._attempt = 0  # attempts since the last welcome
        self._end: _End | None = None  # how the last connection ended
        self._closed_by: ClientClosed | None = None
        self._inbox: Inbox[Event] = Inbox(settings.event_buffer)
        self._inbox.on_room = lambda: nursery.start_soon(self._room_again)
        self._dropped = 0  # events other than messages refused by a full inbox
        self._pace = _Pace()
        self.welcome: m.Welcome | None = None
        self._welcomes = 0
        self.conversations: dict[str, m.Conversation] = {}

    # -- the app's API -------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._machine.state

    @property
    def user_id(self) -> str | None:
        return None if self.welcome is None else self.welcome.user_id

    def events(self) -> Inbox[Event]:
        """Everything the app should see, in order (`async for event in client.events()`);
        ends after the client closes. Messages come once each, in seq order per
        conversation. The client never waits for the app (it may send and await acks from
        inside this loop): when `event_buffer` events wait unread, further messages are
        taken back and paged from history once the app catches up (nothing is lost), and
        other events are dropped and counted in a `ClientError` (`events_dropped`)."""
        return self._inbox

    async def send(
        self, conversation_id: str, text: str, *, client_msg_id: str | None = None
    ) -> m.Ack:
        """Store `text` in the conversation; return the ack once it is durable. Retried
        with the same `client_msg_id` across reconnects and after `rate_limited`, so the
        message is stored once. Raises `RequestFailed` (e.g. `forbidden`, `too_large`)."""
        frame = m.Send(
            id=self._next_id(),
            conversation_id=conversation_id,
            client_msg_id=client_msg_id or uuid.uuid4().hex,
            text=text,
        )
        limits = self.welcome.limits if self.welcome is not None else None
        if limits is not None and len(text) > limits.max_text_chars:
            # Refused here: the server would answer too_large anyway, and a frame over
            # max_frame_bytes would cost the whole connection (1009, terminal).
            raise RequestFailed(
                "too_large", f"text is over max_text_chars ({limits.max_text_chars})", path="$.text"
            )
        if limits is not None and len(encode(frame).encode()) > limits.max_frame_bytes:
            raise RequestFailed(
                "too_large", f"the frame is over max_frame_bytes ({limits.max_frame_bytes})"
            )
        reply = await self._request(frame, repeat=True)
        assert isinstance(reply, m.Ack)
        return reply

    async def history(
        self,
        conversation_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> m.HistoryPage:
        """One page of stored messages (HOOMI-HISTORY-1); it does not touch `events()`."""
        frame = m.History(
            id=self._next_id(),
            conversation_id=conversation_id,
            before_seq=before_seq,
            after_seq=after_seq,
            limit=limit,
        )
        reply = await self._request(frame, repeat=True)
        assert isinstance(reply, m.HistoryPage)
        return reply

    async def read(self, conversation_id: str, seq: int) -> None:
        """Move the user's read marker forward to `seq`."""
        frame = m.Read(id=self._next_id(), conversation_id=conversation_id, seq=seq)
        await self._request(frame, repeat=True)

    async def typing(self, conversation_id: str, active: bool = True) -> None:
        """Say the user is typing (repeat it every `typing_ttl_ms / 2`) or stopped. Typing
        is of the moment: it is not sent again after a reconnect (`RequestFailed`
        `disconnected` if the connection ends first)."""
        frame = m.Typing(id=self._next_id(), conversation_id=conversation_id, active=active)
        await self._request(frame, repeat=False)

    async def presence(self, user_ids: Sequence[str]) -> tuple[m.PresenceState, ...]:
        """The presence of those users who share a conversation with this one."""
        frame = m.PresenceQuery(id=self._next_id(), user_ids=tuple(user_ids))
        reply = await self._request(frame, repeat=True)
        assert isinstance(reply, m.PresenceResult)
        return reply.users

    async def aclose(self) -> None:
        """Close the connection (1000, bounded by `close_timeout_s`) and fail what is
        pending with `ClientClosed`. Idempotent."""
        if self.state is not ClientState.CLOSED:
            await self._fire(ClientEvent.APP_CLOSE, _End(ClientEvent.APP_CLOSE, reason="closed"))

    # -- requests -------------------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"r{next(self._ids)}"

    async def _request(self, frame: m.ClientMessage, *, repeat: bool) -> m.ServerMessage:
        async with self._room:
            if self._closed_by is not None:
                raise self._closed_by
            pending = _Pending(frame, repeat)
            self._pending[frame.id] = pending
            try:
                if self.state is ClientState.LIVE:
                    self._write_pending(pending)
                await pending.done.wait()
            finally:
                self._pending.pop(frame.id, None)
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        return pending.reply

    def _write_pending(self, pending: _Pending) -> None:
        connection = self._connection
        if connection is None or pending.written_on == connection.generation:
            return
        pending.written_on = connection.generation
        self._write(pending.frame, pending)

    def _write(self, frame: m.ClientMessage, pending: _Pending | None = None) -> None:
        """Queue `frame` for the current connection's writer; never waits (the reader calls
        this too, and must keep reading while requests are paced)."""
        connection = self._connection
        if connection is None or connection.ended:
            return
        connection.outbox.append((frame, pending))
        connection.wake_writer.set()

    async def _writer(self, connection: _Connection) -> None:
        """Write the connection's frames in order, requests paced under the server's rate
        limit (HOOMI-LIMIT-2); a request the app stopped waiting for before it went out is
        not sent. A failed write is left to the reader to notice."""
        ws = connection.ws
        assert ws is not None
        while True:
            while not connection.outbox:
                connection.wake_writer = trio.Event()
                await connection.wake_writer.wait()
            frame, pending = connection.outbox.popleft()
            if pending is not None and self._pending.get(frame.id) is not pending:
                continue
            if not isinstance(frame, m.Hello):
                await self._pace.take()
            try:
                await ws.send_message(encode(frame))
            except (
                trio_websocket.ConnectionClosed,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
            ):
                return

    async def _retry_later(self, pending: _Pending, delay_s: float) -> None:
        generation = pending.written_on
        await trio.sleep(delay_s)
        if (
            self._pending.get(pending.frame.id) is pending  # still wanted by the app
            and not pending.done.is_set()
            and self.state is ClientState.LIVE
            and pending.written_on == generation  # not re-sent on a new connection since
        ):
            pending.written_on = 0
            self._write_pending(pending)

    async def _refill_later(self, delay_s: float) -> None:
        await trio.sleep(delay_s)
        if self.state is ClientState.LIVE:
            await self._apply(self.streams.refill())

    async def _room_again(self) -> None:
        """The app caught up with a full inbox: say what was dropped, page what was not
        handed over."""
        if self._dropped:
            report = ClientError(
                code="events_dropped",
                message=f"{self._dropped} events (typing, presence, receipts, state changes) "
                "were dropped while the app was behind; client.state and "
                "client.conversations are current",
            )
            if self._inbox.put(report):
                self._dropped = 0
        if self.state is ClientState.LIVE:
            await self._apply(self.streams.unstall())

    # -- the state machine ------------------------------------------------------------------

    async def _fire(self, event: ClientEvent, end: _End | None = None) -> None:
        before = self.state
        transition = self._machine.handle(event)
        if end is not None:
            self._end = end
        # An action may end the connection this runs in (its cancel scope); the rest of the
        # transition still happens, and the cancellation lands after it. (Shielding every
        # frame's transition would cost ~3 us a message, hence only these.)
        with trio.CancelScope(shield=not _ENDING.isdisjoint(transition.actions)):
            for action in transition.actions:
                await _ACTIONS[action](self)
            if transition.target is not before and self.state is transition.target:
                self._report_state(transition.target)

    def _report_state(self, state: ClientState) -> None:
        end = self._end
        change = StateChanged(
            state=state,
            welcome=self.welcome if state is ClientState.LIVE else None,
            attempt=self._attempt if state is ClientState.BACKOFF else 0,
            close_code=end.close_code if end and state is not ClientState.LIVE else None,
            reason=end.reason if end and state is not ClientState.LIVE else "",
        )
        if state is ClientState.BACKOFF:
            change = attrs.evolve(change, retry_in_s=self._backoff_delay)
        self._emit(change)

    def _emit(self, event: Event) -> None:
        """Hand the app an event other than a message (those go through `_apply`); never
        waits: a full inbox drops it and counts it."""
        if not self._inbox.put(event):
            self._dropped += 1

    # actions, by their names in the spec ----------------------------------------------------

    async def _send_hello(self) -> None:
        connection = self._connection
        assert connection is not None
        connection.hello_id = self._next_id()
        resume = self.streams.resume()
        hello = m.Hello(
            id=connection.hello_id,
            token=self._hello_token,
            client=m.ClientInfo(name=self.settings.client_name, version=__version__),
            resume=resume or None,
        )
        self._write(hello)

    async def _start_streams(self) -> None:
        assert self.welcome is not None
        new, gone, step = self.streams.welcome(self.welcome.conversations)
        self.conversations = {c.conversation_id: c for c in self.welcome.conversations}
        self._pace.reset(self.welcome.limits)
        for cid in gone:  # the app knew it (from `positions` or an earlier welcome)
            self._emit(m.ConversationLeft(conversation_id=cid))
        if self._welcomes > 1:  # the first welcome is the app's starting point, not news
            for conversation in new:
                self._emit(m.ConversationJoined(conversation=conversation))
        await self._apply(step)

    async def _resend_pending(self) -> None:
        for pending in list(self._pending.values()):
            if not pending.done.is_set():
                self._write_pending(pending)

    async def _query_presence(self) -> None:
        user = self.user_id
        contacts = sorted({u for c in self.conversations.values() for u in c.members if u != user})
        for start in range(0, len(contacts), _PRESENCE_QUERY_MAX):
            frame = m.PresenceQuery(
                id=f"{_PRESENCE_PREFIX}{next(self._ids)}",
                user_ids=tuple(contacts[start : start + _PRESENCE_QUERY_MAX]),
            )
            self._write(frame)

    async def _reset_backoff(self) -> None:
        self._attempt = 0

    async def _start_quiet_timer(self) -> None:
        await self._restart_quiet_timer()

    async def _restart_quiet_timer(self) -> None:
        connection = self._connection
        if connection is not None:
            connection.last_frame_at = trio.current_time()
            connection.pinged_at = None

    async def _handle_frame(self) -> None:
        frame = self._frame
        assert frame is not None
        await self._handle(frame)

    async def _send_ping(self) -> None:
        self._write(m.Ping(id=self._next_id()))

    async def _start_dead_timer(self) -> None:
        connection = self._connection
        if connection is not None:
            connection.pinged_at = trio.current_time()

    async def _refresh_token(self) -> None:
        connection = self._connection
        if self._token_provider is None or connection is None:
            self._emit(
                ClientError(
                    code="token",
                    message="the token expires soon and the client has no token_provider: "
                    "the server will close the session (4002)",
                )
            )
            return
        connection.nursery.start_soon(self._refresh, self._token_provider)

    async def _refresh(self, provider: TokenProvider) -> None:
        """Refresh in band; a failure is reported and tried again (1 s, 2 s, … 10 s apart)
        while this connection lasts, which the server ends at the token's expiry."""
        delay_s = 1.0
        while True:
            try:
                token = await provider()
                await self._request(m.Refresh(id=self._next_id(), token=token), repeat=False)
                return
            except ClientClosed:
                return
            except RequestFailed as failed:
                if failed.code == "disconnected":
                    return
                self._emit(ClientError(code="token", message=f"token refresh failed: {failed}"))
            except Exception as exc:  # the app's provider failed
                self._emit(ClientError(code="token", message=f"token_provider failed: {exc!r}"))
            await trio.sleep(delay_s)
            delay_s = min(10.0, delay_s * 2)

    async def _report_error(self) -> None:
        end = self._end
        if end is not None and end.reason:
            self._emit(ClientError(code=self._error_code, message=end.reason))

    async def _schedule_backoff(self) -> None:
        self.streams.disconnected()
        for pending in list(self._pending.values()):
            if not pending.repeat:
                pending.finish(error=RequestFailed("disconnected", "the connection ended"))
        self._attempt += 1
        limit = self.settings.backoff.max_attempts
        self._giving_up = limit is not None and self._attempt >= limit
        self._backoff_delay = (
            None
            if self._giving_up
            else self.settings.backoff.delay_s(self._attempt, self.settings.rng.random())
        )

    async def _open_connection(self) -> None:
        """The loop in `_run` opens the next attempt when the state is `connecting`."""

    async def _abort_connection(self) -> None:
        connection = self._connection
        if connection is not None and not connection.ended:
            connection.ended = True
            connection.scope.cancel()

    async def _close_connection(self) -> None:
        connection = self._connection
        if connection is None or connection.ended:
            return
        connection.ended = True
        if connection.ws is not None:
            with trio.move_on_after(self.settings.close_timeout_s):
                await connection.ws.aclose(1000)
        connection.closed.set()
        connection.scope.cancel()

    async def _fail_pending(self) -> None:
        end = self._end
        self._closed_by = ClientClosed(
            end.reason if end else "closed", end.close_code if end else None
        )
        for pending in list(self._pending.values()):
            pending.finish(error=self._closed_by)

    # -- frames -----------------------------------------------------------------------------

    _frame: m.ServerMessage | None = None
    _error_code: str = "protocol"
    _backoff_delay: float | None = 0.0
    _giving_up = False
    _hello_token: str = ""
    _task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED

    async def _handle(self, frame: m.ServerMessage) -> None:
        if isinstance(frame, m.MessageEvent):
            await self._apply(self.streams.message(frame.message))
        elif isinstance(frame, m.ResumeGap):
            await self._apply(self.streams.gap(frame.conversation_id, frame.latest_seq))
        elif isinstance(frame, m.HistoryPage) and self.streams.is_fill(frame.id):
            await self._apply(self.streams.page(frame.id, frame.messages))
        elif isinstance(frame, m.Error) and frame.id is not None and self.streams.is_fill(frame.id):
            retryable = frame.code in _RETRYABLE
            self.streams.fill_failed(frame.id, retryable=retryable)
            if retryable:
                delay_s = (frame.retry_after_ms or 1000) / 1000
                self._nursery.start_soon(self._refill_later, delay_s)
            else:
                self._emit(ClientError(code=frame.code, message=f"filling a gap: {frame.message}"))
        elif isinstance(frame, m.Error):
            await self._answer_error(frame)
        elif isinstance(frame, m.ConversationJoined):
            self.streams.joined(frame.conversation)
            self.conversations[frame.conversation.conversation_id] = frame.conversation
            self._emit(frame)
        elif isinstance(frame, m.ConversationLeft):
            self.streams.left(frame.conversation_id)
            self.conversations.pop(frame.conversation_id, None)
            self._emit(frame)
        elif isinstance(frame, m.PresenceResult) and frame.id.startswith(_PRESENCE_PREFIX):
            for user in frame.users:  # the snapshot after welcome, as if pushed
                self._emit(
                    m.Presence(user_id=user.user_id, status=user.status, last_seen=user.last_seen)
                )
        elif isinstance(frame, m.UserTyping | m.Presence | m.Receipt):
            self._emit(frame)
        elif hasattr(frame, "id"):
            pending = self._pending.get(frame.id)
            # A reply to nothing pending answers a request the app stopped waiting for.
            if pending is None:
                return
            wanted = _REPLIES[type(pending.frame)]
            if isinstance(frame, wanted):
                pending.finish(reply=frame)
                return
            problem = f"a {frame.TYPE} answered a {pending.frame.TYPE} (expected {wanted.TYPE})"
            pending.finish(error=RequestFailed("bad_frame", problem))
            self._emit(ClientError(code="bad_frame", message=problem))

    async def _answer_error(self, error: m.Error) -> None:
        pending = None if error.id is None else self._pending.get(error.id)
        if pending is None:
            self._emit(ClientError(code=error.code, message=error.message))
            return
        if error.code in _RETRYABLE and pending.repeat:
            delay_s = (error.retry_after_ms or 1000) / 1000
            self._nursery.start_soon(self._retry_later, pending, delay_s)
            return
        failed = RequestFailed(
            error.code, error.message, path=error.path, retry_after_ms=error.retry_after_ms
        )
        pending.finish(error=failed)

    async def _apply(self, step: Step) -> None:
        for problem in step.problems:
            self._emit(ClientError(code="protocol", message=problem))
        stalled: set[str] = set()
        for message in step.deliver:
            cid = message.conversation_id
            if cid not in stalled and not self._inbox.put(message):
                # The app is behind: take it back; paged again once there is room.
                self.streams.stall(cid, message.seq)
                stalled.add(cid)
        for request in step.requests:
            if request.conversation_id not in stalled:
                self._write(request)

    # -- connections ------------------------------------------------------------------------

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Attempt, back off, attempt …, until the client is closed. `task_status` starts
        at the first welcome; ending before it raises `ClientClosed`."""
        self._task_status = task_status
        try:
            while self.state is not ClientState.CLOSED:
                if self.state is ClientState.CONNECTING:
                    await self._connect()
                elif self.state is ClientState.BACKOFF:
                    if self._giving_up or self._backoff_delay is None:
                        self._end = _End(
                            ClientEvent.GAVE_UP,
                            reason=f"gave up after {self._attempt} attempts",
                        )
                        self._error_code = "gave_up"
                        await self._fire(ClientEvent.GAVE_UP)
                    else:
                        await trio.sleep(self._backoff_delay)
                        if self.state is ClientState.BACKOFF:
                            await self._fire(ClientEvent.BACKOFF_ELAPSED)
            if not self._welcomes:
                assert self._closed_by is not None
                raise self._closed_by
        finally:
            self._inbox.on_room = None  # the client's nursery is closing
            self._inbox.close()

    async def _connect(self) -> None:
        """One attempt: open, hello, live until it ends; its end is fed to the machine."""
        self._generation += 1
        end: _End | None = None
        stream: _Watched | None = None
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    connection = _Connection(
                        self._generation, scope, nursery, started_at=trio.current_time()
                    )
                    self._connection = connection
                    nursery.start_soon(self._timers, connection)
                    try:
                        self._hello_token = await self._get_token()
                        stream = _Watched(await self._open_stream())
                        connection.ws = await self._upgrade(nursery, stream)
                    except (OSError, trio.BrokenResourceError, _TokenFailed) as exc:
                        end = _End(ClientEvent.OPEN_FAILED, reason=f"cannot connect: {exc}")
                    else:
                        if connection.ws is None:
                            reason = "the server ended the connection during the upgrade"
                            end = _End(ClientEvent.OPEN_FAILED, reason=reason)
                        else:
                            end = await self._live(connection)
                    scope.cancel()
        except BaseExceptionGroup as group:
            # What trio-websocket's reader raises for a refused or broken upgrade (an HTTP
            # status, a bad Sec-WebSocket-Accept) fails the attempt; anything else is a bug.
            refused, rest = group.split(_UPGRADE_ERRORS)
            if rest is not None:
                raise rest from None
            assert refused is not None
            first = refused.exceptions[0]
            status = getattr(first, "status_code", None)
            detail = f"HTTP {status}" if status is not None else repr(first)
            end = _End(ClientEvent.OPEN_FAILED, reason=f"the upgrade failed: {detail}")
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            self._connection = None
        if end is not None and self.state in (
            ClientState.CONNECTING,
            ClientState.AUTHENTICATING,
            ClientState.LIVE,
        ):
            self._error_code = "protocol"
            if end.close_code is not None and end.event is ClientEvent.SERVER_CLOSE_TERMINAL:
                self._error_code = f"closed_{end.close_code}"
            await self._fire(end.event, end)

    async def _upgrade(
        self, nursery: trio.Nursery, stream: _Watched
    ) -> trio_websocket.WebSocketConnection | None:
        """The WebSocket upgrade; None if the server ends the stream without answering
        (trio-websocket would wait for the 101 until the connect timeout)."""
        host, _, resource, _ = self._address
        with trio.CancelScope() as upgrade:
            nursery.start_soon(_cancel_when, stream.ended, upgrade)
            return await trio_websocket.wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]
                host,
                resource,
                subprotocols=[SUBPROTOCOL],
                max_message_size=self.settings.max_message_bytes,
            )
        return None

    async def _get_token(self) -> str:
        if self._token_provider is None:
            assert self._token is not None
            return self._token
        try:
            return await self._token_provider()
        except Exception as exc:
            raise _TokenFailed(f"token_provider failed: {exc!r}") from exc

    async def _open_stream(self) -> trio.abc.Stream:
        host, port, _, secure = self._address
        tcp = await trio.open_tcp_stream(host, port)
        if not secure:
            return tcp
        context = self.settings.ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(tcp, context, server_hostname=host)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tls)
            raise
        return tls

    async def _live(self, connection: _Connection) -> _End | None:
        """From the upgrade to the connection's end; None if an action already ended it."""
        ws = connection.ws
        assert ws is not None
        if connection.ended:  # the connect timer fired while the upgrade completed
            return None
        connection.nursery.start_soon(self._writer, connection)
        if ws.subprotocol != SUBPROTOCOL:
            reason = f"the server did not select {SUBPROTOCOL} (selected {ws.subprotocol!r})"
            self._end = _End(ClientEvent.NO_SUBPROTOCOL, reason=reason)
            await self._fire(ClientEvent.NO_SUBPROTOCOL)
            return None
        self._end = None  # how the last connection ended is told; this one is new
        await self._fire(ClientEvent.OPENED)
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                if not connection.ended:
                    return _closed(closed.reason)
            if connection.ended:
                # Our own close: trio-websocket's reader (in this connection's nursery) must
                # live until the server's close frame is read.
                await connection.closed.wait()
                return None
            await self._receive(connection, data)

    async def _receive(self, connection: _Connection, data: str | bytes) -> None:
        authenticating = self.state is ClientState.AUTHENTICATING
        try:
            if isinstance(data, bytes):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "a binary frame")
            frame = decode_server(data)
        except ProtocolError as error:
            if error.code is ErrorCode.UNKNOWN_TYPE:
                if not authenticating:  # ignored (HOOMI-WIRE-4), but it is activity
                    await self._restart_quiet_timer()
                return
            detail = f" at {error.path}" if error.path else ""
            self._end = _End(ClientEvent.BAD_FRAME, reason=f"bad frame{detail}: {error.message}")
            self._error_code = "bad_frame"
            await self._fire(ClientEvent.BAD_FRAME)
            return
        if authenticating:
            if isinstance(frame, m.Welcome) and frame.id == connection.hello_id:
                self.welcome = frame
                self._welcomes += 1
                connection.interval_s = frame.heartbeat_interval_ms / 1000
                connection.last_frame_at = trio.current_time()
                connection.welcomed.set()
                if self._welcomes == 1:
                    self._task_status.started()  # `connect` returns: the client is usable
                await self._fire(ClientEvent.WELCOME)
            elif isinstance(frame, m.Error) and frame.id == connection.hello_id:
                self._end = _End(ClientEvent.HELLO_ERROR, reason=frame.message)
                self._error_code = frame.code
                await self._fire(ClientEvent.HELLO_ERROR)
            else:
                self._end = _End(
                    ClientEvent.BAD_FRAME, reason=f"a {frame.TYPE} frame before welcome"
                )
                self._error_code = "bad_frame"
                await self._fire(ClientEvent.BAD_FRAME)
            return
        if isinstance(frame, m.Welcome):
            self._end = _End(ClientEvent.BAD_FRAME, reason="a second welcome")
            self._error_code = "bad_frame"
            await self._fire(ClientEvent.BAD_FRAME)
        elif isinstance(frame, m.TokenExpiring):
            await self._fire(ClientEvent.TOKEN_EXPIRING)
        else:
            self._frame = frame
            try:
                await self._fire(ClientEvent.FRAME)
            finally:
                self._frame = None

    async def _timers(self, connection: _Connection) -> None:
        """The connect, quiet and dead timers of one connection, on real elapsed time: a
        wake-up that comes late (a suspended process) still compares clocks, never counts."""
        with trio.move_on_at(connection.started_at + self.settings.connect_timeout_s):
            await connection.welcomed.wait()
        if not connection.welcomed.is_set():
            # Fed only while this attempt is still the one in progress: an attempt that
            # already ended (the state moved on) has nothing left to time out.
            if self._current(connection, ClientState.CONNECTING, ClientState.AUTHENTICATING):
                self._end = _End(
                    ClientEvent.CONNECT_TIMEOUT,
                    reason=f"no welcome within {self.settings.connect_timeout_s} s",
                )
                await self._fire(ClientEvent.CONNECT_TIMEOUT)
            return
        interval = connection.interval_s
        assert interval is not None
        while self._current(connection, ClientState.LIVE):
            now = trio.current_time()
            if connection.pinged_at is None:
                due = connection.last_frame_at + interval
                if now >= due:
                    await self._fire(ClientEvent.QUIET)
                else:
                    await trio.sleep_until(due)
            else:
                due = connection.pinged_at + interval
                if now >= due:
                    silent = now - connection.last_frame_at
                    self._end = _End(
                        ClientEvent.DEAD, reason=f"nothing from the server for {silent:.1f} s"
                    )
                    await self._fire(ClientEvent.DEAD)
                else:
                    await trio.sleep_until(due)

    def _current(self, connection: _Connection, *states: ClientState) -> bool:
        return self._connection is connection and not connection.ended and self.state in states


class _TokenFailed(Exception):
    pass


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()  # a no-op once the scope has exited


class _Watched(trio.abc.Stream):
    """A connection's stream, noting when the server ends it (EOF or an error) before
    sending a single byte: a refusal without an HTTP answer. (Once anything arrived,
    trio-websocket reports the end itself, e.g. a close frame right after the 101.)"""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.ended = trio.Event()
        self.received = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if not self.received:
                self.ended.set()
            raise
        if not data and not self.received:
            self.ended.set()
        self.received = True
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Pace:
    """A token bucket like the server's (HOOMI-LIMIT-2, full at each welcome), so that the
    client's own bursts (re-sends after a reconnect, gap fills) never earn `rate_limited`
    or a 4006 close. `take` reserves a token and waits until it exists."""

    def __init__(self) -> None:
        self.rate = 0.0  # 0: no limit known yet
        self.burst = 0.0
        self.tokens = 0.0
        self.at = 0.0

    def reset(self, limits: m.Limits) -> None:
        # A margin under the server's bucket: frames written at exactly its rate can arrive
        # closer together than they left (measured: an occasional 1 ms shortfall under load).
        self.rate = limits.rate_per_s * _PACE_MARGIN
        self.burst = max(1.0, limits.rate_burst - 1.0)
        self.tokens, self.at = self.burst, trio.current_time()

    async def take(self) -> None:
        if self.rate <= 0:
            return
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate) - 1
        self.at = now
        if self.tokens < 0:
            await trio.sleep(-self.tokens / self.rate)


def _closed(reason: trio_websocket.CloseReason | None) -> _End:
    code = reason.code if reason is not None else None
    text = (reason.reason or "") if reason is not None else ""
    if code is None or code == _ABNORMAL:
        return _End(ClientEvent.CONNECTION_LOST, None, "the connection was lost")
    described = f"the server closed the connection with {code}" + (f": {text}" if text else "")
    try:
        reconnect = CloseCode(code).reconnect
    except ValueError:
        reconnect = True  # a code the registry does not list: like a lost connection
    event = ClientEvent.SERVER_CLOSE_RECONNECT if reconnect else ClientEvent.SERVER_CLOSE_TERMINAL
    return _End(event, code, described)


_ACTIONS: dict[str, Callable[[Client], Awaitable[None]]] = {
    "send_hello": Client._send_hello,
    "start_streams": Client._start_streams,
    "resend_pending": Client._resend_pending,
    "query_presence": Client._query_presence,
    "reset_backoff": Client._reset_backoff,
    "start_quiet_timer": Client._start_quiet_timer,
    "restart_quiet_timer": Client._restart_quiet_timer,
    "handle_frame": Client._handle_frame,
    "send_ping": Client._send_ping,
    "start_dead_timer": Client._start_dead_timer,
    "refresh_token": Client._refresh_token,
    "report_error": Client._report_error,
    "schedule_backoff": Client._schedule_backoff,
    "open_connection": Client._open_connection,
    "abort_connection": Client._abort_connection,
    "close_connection": Client._close_connection,
    "fail_pending": Client._fail_pending,
}


@asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    positions: Mapping[str, int] | None = None,
    settings: ClientSettings | None = None,
) -> AsyncIterator[Client]:
    """Connect to a Hoomi server and stay connected until the block ends.

    Give `token` (a JWT) or `token_provider` (an async callable returning a fresh one; it is
    called at each connect and on `token_expiring`). `positions` maps conversation ids to
    the last seq the app already shows (from an earlier run), so that the stream resumes
    there; other conversations start at their latest seq. Returns once the first `welcome`
    arrived, reconnecting with backoff before that as after; raises `ClientClosed` if the
    server refuses for good (a terminal close code) or the attempts run out.
    """
    try:
        async with trio.open_nursery() as nursery:
            client = Client(
                url,
                token=token,
                token_provider=token_provider,
                positions=positions,
                settings=settings or ClientSettings(),
                nursery=nursery,
            )
            await nursery.start(client._run)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery is ours, not the app's: a lone error (the app's own, or ClientClosed
        # from the first connect) comes out as itself.
        lone: BaseException = group
        while isinstance(lone, BaseExceptionGroup) and len(lone.exceptions) == 1:
            lone = lone.exceptions[0]
        if lone is group:
            raise
        raise lone from None
