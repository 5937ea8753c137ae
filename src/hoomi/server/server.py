"""The Hoomi server: listeners, the session registry, requests, presence, typing, timers.

Structure (every task has a parent):

    serve ─┬─ timers            one shared scheduler for heartbeats, deadlines, expiries
           └─ connections ─┬─ accept loop (trio.serve_listeners), cancelled by `shutdown`
                           └─ one Session.run per connection, each in its own nursery

`drain` (an operator's) stops accepting (the listeners close: new TCP connections are
refused) and closes every session with going_away after what is already queued, as well as
any connection accepted before and upgraded after it; the process keeps serving. `shutdown`
(SIGTERM, SIGINT) drains, waits for the sessions under the drain deadline and returns; the
caller then closes the store. Acked messages are already durable.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Literal

import trio
from outcome import Outcome
from prometheus_client.context_managers import Timer

from hoomi.protocol import (
    SPEC_VERSION,
    SUBPROTOCOL,
    ErrorCode,
    Event,
    State,
    encode_bytes,
    warm_up,
)
from hoomi.protocol import messages as m

from . import logs
from .auth import TokenError, TokenVerifier
from .config import Settings, tls_context
from .fanout import Fanout
from .metrics import Metrics
from .session import Session
from .store import (
    Appended,
    ConversationInfo,
    ConversationKind,
    MemberView,
    NotAMember,
    Store,
)
from .transport import Cork, Handshake, WebSocket, text_frame

PRE_WELCOME_FRAME_BYTES = 16384
LAST_SEEN_MAX = 100_000  # users whose last_seen is remembered in memory


class Server:
    """A single Hoomi node. Construct, then `await nursery.start(server.serve)`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        fanout: Fanout,
        verifier: TokenVerifier,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.fanout = fanout
        # The store reports to this server (one store serves one server): fan-out on commit,
        # and a commit of several writes reported corked, one write per connection.
        self.cork = Cork()
        store.on_commit = self.on_commit
        store.on_removed = self.on_removed
        store.reporting = self.cork
        self.verifier = verifier
        self.wall = wall_clock
        self.spec_version = SPEC_VERSION
        self.limits = m.Limits(
            max_frame_bytes=settings.max_frame_bytes,
            max_text_chars=settings.max_text_chars,
            history_page_max=settings.history_page_max,
            replay_max=settings.replay_max,
            rate_per_s=settings.rate_per_s,
            rate_burst=settings.rate_burst,
            typing_ttl_ms=settings.typing_ttl_ms,
        )
        self.sessions: dict[str, Session] = {}
        # A list, not a set: most users hold one session, and a one-item list is ~150 bytes
        # smaller (the per-user limit keeps the lists short).
        self.by_user: dict[str, list[Session]] = defaultdict(list)
        self.online: dict[str, int] = {}  # user -> ready sessions
        self.last_seen: dict[str, int] = {}
        # conversation -> (latest seq published, when): only needed across one hello's
        # read of the store, so entries older than the hello deadline are pruned.
        self.published_seq: dict[str, tuple[int, float]] = {}
        self.membership_epoch = 0  # bumped by every membership change
        self.typing: dict[tuple[str, str], float] = {}  # (conversation, user) -> deadline
        self.ports: list[int] = []
        self.draining = False
        self.metrics = Metrics()
        self._append_seconds = self.metrics.store_seconds.labels("append")
        self.started_at = wall_clock()
        self._watchers: dict[trio.MemorySendChannel[dict[str, object]], int] = {}
        self._accepting = trio.CancelScope()
        self._stop = trio.Event()
        self._stopped = trio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until `shutdown`; reports itself (with `ports`) once listening.
        Raises `ConfigError` if the TLS files do not load."""
        warm_up()  # the codec's one-time costs, before the first client rather than on it
        settings = self.settings
        context = tls_context(settings)  # first: a bad file must not leave sockets open
        tcp = await trio.open_tcp_listeners(settings.port, host=settings.host)
        self.ports = sorted({listener.socket.getsockname()[1] for listener in tcp})
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
        if context is not None:
            listeners = [trio.SSLListener(listener, context) for listener in tcp]
        handler: Callable[[trio.abc.Stream], Awaitable[None]] = partial(
            self._connection, tls=context is not None
        )
        async with trio.open_nursery() as outer:
            outer.start_soon(self._timers)
            async with trio.open_nursery() as connections:
                task_status.started(self)
                with self._accepting:
                    await trio.serve_listeners(handler, listeners, handler_nursery=connections)
                self._close_all("server is draining")
                await self._stop.wait()
                self._close_all("server is shutting down")
                connections.cancel_scope.deadline = (
                    trio.current_time() + settings.drain_timeout_ms / 1000
                )
            outer.cancel_scope.cancel()
        self._stopped.set()

    def drain(self) -> None:
        """Stop accepting and close every session with going_away, so that clients reconnect
        elsewhere; the process keeps serving the admin API until `shutdown` (idempotent)."""
        if not self.draining:
            logs.event("drain", sessions=len(self.sessions))
        self.draining = True
        self._accepting.cancel()

    def shutdown(self) -> None:
        """Drain, then end `serve` once the sessions are gone or the drain deadline passed."""
        self.drain()
        self._stop.set()

    def _close_all(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            if session.machine.state not in (State.CLOSING, State.CLOSED):
                session.fire(Event.DRAIN, detail=reason)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _connection(self, stream: trio.abc.Stream, *, tls: bool) -> None:
        """One accepted socket, from upgrade to close. Nothing raised here may reach
        serve_listeners: that would end the server."""
        try:
            await self._serve_connection(stream, tls=tls)
        except Exception:
            logs.failure("connection_failed")
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _serve_connection(self, stream: trio.abc.Stream, *, tls: bool) -> None:
        settings = self.settings
        accepted_at = trio.current_time()
        raw_fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        ws = WebSocket(
            stream,
            # Until welcome, a frame need hold no more than a hello (HOOMI-WIRE-5).
            max_frame_bytes=min(settings.max_frame_bytes, PRE_WELCOME_FRAME_BYTES),
            outbox_size=settings.outbox_size,
            outbox_bytes=settings.outbox_bytes,
            raw_fd=None if tls else raw_fd,
            cork=self.cork,
        )
        handshake = None
        with trio.move_on_after(settings.hello_timeout_ms / 1000):
            handshake = await ws.accept(self._choose)
        if handshake is None:
            await ws.aclose()
            return
        session = Session(self, ws, accepted_at=accepted_at)
        self.sessions[session.id] = session
        self.metrics.connections += 1
        logs.event("connected", session=session.id, remote=ws.peer(), origin=handshake.origin)
        self.notify("connect", session)
        if self.draining:
            # Accepted before the drain closed the listener, upgraded after it: going away,
            # like every session of this server (HOOMI-CLOSE-2), not a bare TCP close.
            session.fire(Event.DRAIN, detail="server is draining")
        elif SUBPROTOCOL not in handshake.subprotocols:
            session.fire(Event.NO_SUBPROTOCOL, detail="offer the subprotocol hoomi.v1")
        try:
            async with trio.open_nursery() as nursery:
                ws.run_writer_in(nursery)
                await session.run(nursery.cancel_scope)
        except Exception:
            logs.failure("connection_failed", session=session.id, user=session.user_id or None)
            self.release(session)
            await ws.aclose()

    def _choose(self, handshake: Handshake) -> tuple[int, str] | str | None:
        """Accept the upgrade with `hoomi.v1`, or refuse it with an HTTP status."""
        if handshake.path != self.settings.path:
            return 404, f"no WebSocket endpoint at {handshake.path}"
        allowed = self.settings.allowed_origin
        if handshake.origin is not None and "*" not in allowed and handshake.origin not in allowed:
            logs.event("origin_refused", origin=handshake.origin)
            return 403, "origin not allowed"
        if SUBPROTOCOL not in handshake.subprotocols:
            # Accept, then close with unsupported_protocol (4009) so the client learns why.
            return None
        return SUBPROTOCOL

    # -- registry -------------------------------------------------------------------------

    def claim(self, session: Session, user_id: str) -> bool:
        """Count `session` against the user's session limit; False if it is reached."""
        sessions = self.by_user[user_id]
        if len(sessions) >= self.settings.max_connections_per_user:
            return False
        sessions.append(session)
        return True

    def ready(self, session: Session, conversations: set[str]) -> None:
        """The session is authenticated: subscribe it and count it for presence."""
        for cid in conversations:
            self.fanout.subscribe(cid, session)
        user = session.user_id
        session.counted_online = True
        self.metrics.sessions_ready += 1
        self.online[user] = self.online.get(user, 0) + 1
        self.metrics.users_online = len(self.online)
        if self.online[user] == 1:
            self._broadcast_presence(user, conversations, m.Presence(user_id=user, status="online"))

    def release(self, session: Session) -> None:
        """Forget an ended session (idempotent): subscriptions, presence, typing."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.metrics.connections -= 1
        user = session.user_id
        if user:
            sessions = self.by_user.get(user)
            if sessions is not None and session in sessions:
                sessions.remove(session)
                if not sessions:
                    del self.by_user[user]
        for cid in session.conversations:
            self.fanout.unsubscribe(cid, session)
        if session.counted_online:
            self.metrics.sessions_ready -= 1
            self.online[user] -= 1
            if self.online[user] == 0:
                del self.online[user]
                now = self.wall_ms()
                self.last_seen.pop(user, None)
                self.last_seen[user] = now  # newest last: the oldest go first when full
                if len(self.last_seen) > LAST_SEEN_MAX:
                    del self.last_seen[next(iter(self.last_seen))]
                for key in [k for k in self.typing if k[1] == user]:
                    self.set_typing(key[0], user, active=False)
                offline = m.Presence(user_id=user, status="offline", last_seen=now)
                self._broadcast_presence(user, session.conversations, offline)
        self.metrics.users_online = len(self.online)
        logs.event("disconnected", session=session.id, user=user or None)
        self.notify("disconnect", session)

    def _broadcast_presence(
        self, user: str, conversations: Iterable[str], event: m.Presence
    ) -> None:
        frame = text_frame(encode_bytes(event))
        for subscriber in self.fanout.subscribers(conversations):
            if subscriber.user_id != user:
                subscriber.push(frame)

    def wall_ms(self) -> int:
        return int(self.wall() * 1000)

    def conversation_record(self, view: MemberView, latest: int) -> m.Conversation:
        info = view.info
        return m.Conversation(
            conversation_id=info.conversation_id,
            kind=info.kind,
            members=info.members,
            latest_seq=latest,
            read_seq=view.read_seq,
            unread=view.unread,
            title=info.title,
        )

    # -- operator and backend actions -----------------------------------------------------

    def kick(self, session_id: str, reason: str = "kicked by an operator") -> bool:
        """Close one session with `kicked` (HOOMI-CLOSE-3); False if no such live session."""
        session = self.sessions.get(session_id)
        if session is None or session.machine.state in (State.CLOSING, State.CLOSED):
            return False
        logs.event("kick", session=session_id, user=session.user_id or None, reason=reason)
        session.fire(Event.KICK, detail=reason)
        self.notify("kick", session, reason=reason)
        return True

    def kick_user(self, user_id: str, reason: str = "kicked by an operator") -> list[str]:
        """Kick every live session of a user; the ids of those kicked."""
        ids = [s.id for s in list(self.by_user.get(user_id, ()))]
        return [sid for sid in ids if self.kick(sid, reason)]

    # -- watching -------------------------------------------------------------------------

    def notify(self, kind: str, session: Session, **extra: object) -> None:
        """Tell every watcher of a connect (socket upgraded), ready (hello accepted: the user
        is known), disconnect or kick. A watcher that does not keep
        up loses events, never slows the server; its next event carries `dropped`, the
        number it lost."""
        if not self._watchers:
            return
        event: dict[str, object] = {
            "event": kind,
            "at": self.wall_ms(),
            "session": session.snapshot(),
            **extra,
        }
        for channel, dropped in list(self._watchers.items()):
            try:
                channel.send_nowait({**event, "dropped": dropped} if dropped else event)
                self._watchers[channel] = 0
            except trio.WouldBlock:
                self._watchers[channel] = dropped + 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self._watchers[channel]

    def watch(self, buffer: int = 256) -> trio.MemoryReceiveChannel[dict[str, object]]:
        """A channel of session events; close it to stop watching. Bounded by `buffer`."""
        send, receive = trio.open_memory_channel[dict[str, object]](buffer)
        self._watchers[send] = 0
        return receive

    # Membership changes are shielded: once the store has the write it commits, and the
    # live sessions must then hear of it, whoever cancels the caller (HOOMI-CONV-3).

    async def create_conversation(
        self, *, kind: ConversationKind, members: Sequence[str], title: str | None = None
    ) -> ConversationInfo:
        """Create a conversation; members' live sessions get `conversation_joined`."""
        with trio.CancelScope(shield=True):
            info = await self.store.create_conversation(
                kind=kind, members=members, title=title, now_ms=self.wall_ms()
            )
        self.membership_epoch += 1
        for user in info.members:
            self._joined(info, user)
        return info

    async def add_member(self, conversation_id: str, user_id: str) -> ConversationInfo:
        with trio.CancelScope(shield=True):
            info = await self.store.add_member(conversation_id, user_id)
        self.membership_epoch += 1
        self._joined(info, user_id)
        return info

    async def remove_member(self, conversation_id: str, user_id: str) -> ConversationInfo:
        with trio.CancelScope(shield=True):
            info = await self.store.remove_member(conversation_id, user_id)
        self.membership_epoch += 1
        if (conversation_id, user_id) in self.typing:
            self.set_typing(conversation_id, user_id, active=False)
        for session in self._ready_sessions(user_id):
            if conversation_id in session.last_seq:
                del session.last_seq[conversation_id]
                self.fanout.unsubscribe(conversation_id, session)
                session.send(m.ConversationLeft(conversation_id=conversation_id))
        return info

    async def post(
        self,
        conversation_id: str,
        text: str,
        sender_id: str = "system",
        *,
        kind: Literal["user", "system"] = "system",
    ) -> m.ChatMessage:
        """Store a message as the backend (a `system` one by default, HOOMI-CONV-4) or for a
        user; it is delivered like any message."""
        appended = await self.store.append(
            conversation_id=conversation_id,
            sender_id=sender_id,
            client_msg_id=None,
            text=text,
            kind=kind,
            now_ms=self.wall_ms(),
        )
        return appended.message

    def _joined(self, info: ConversationInfo, user_id: str) -> None:
        cid = info.conversation_id
        # Messages published since the store answered were not delivered to these
        # sessions: announcing them in latest_seq lets the client page them.
        latest = max(info.latest_seq, self.latest_published(cid))
        for session in self._ready_sessions(user_id):
            if cid in session.last_seq:
                continue
            session.last_seq[cid] = latest
            self.fanout.subscribe(cid, session)
            view = MemberView(info=info, read_seq=latest, unread=0)
            session.send(m.ConversationJoined(conversation=self.conversation_record(view, latest)))

    def _ready_sessions(self, user_id: str) -> list[Session]:
        return [s for s in self.by_user.get(user_id, ()) if s.machine.state is State.READY]

    # -- publishing -----------------------------------------------------------------------

    def on_commit(self, messages: Sequence[m.ChatMessage]) -> None:
        """The store's commit hook: called in commit (so seq) order, before any ack."""
        started = time.perf_counter()
        now = trio.current_time()
        deliveries = 0
        typing = self.typing
        for message in messages:
            cid = message.conversation_id
            self.published_seq[cid] = (message.seq, now)
            frame = text_frame(encode_bytes(m.MessageEvent(message=message)))
            try:
                if typing and (cid, message.sender_id) in typing:
                    # The message ends its sender's typing, and the stop goes out first, so
                    # that no member sees the sender typing below the message (HOOMI-TYPING-3).
                    self.set_typing(cid, message.sender_id, active=False)
                deliveries += self.fanout.publish(cid, frame, seq=message.seq)
            except Exception:  # a bug must not stop the rest of the batch from going out
                logs.failure("publish_failed", conversation=cid, seq=message.seq)
        self.metrics.messages_stored += len(messages)
        self.metrics.deliveries += deliveries
        self.metrics.fanout_seconds.observe(time.perf_counter() - started)

    def on_removed(self, conversation_id: str, user_id: str) -> None:
        """The store's hook for a committed removal, before the messages committed after it
        are published: the member's sessions stop receiving the conversation at once.
        `remove_member` tells them (conversation_left) when its caller resumes."""
        for session in self._ready_sessions(user_id):
            if conversation_id in session.last_seq:
                self.fanout.unsubscribe(conversation_id, session)

    def latest_published(self, conversation_id: str) -> int:
        """The newest seq fan-out published lately in a conversation (0 if none lately)."""
        entry = self.published_seq.get(conversation_id)
        return entry[0] if entry else 0

    def set_typing(self, cid: str, user: str, *, active: bool) -> None:
        """Change a typing state; members hear of changes only (HOOMI-TYPING-2)."""
        key = (cid, user)
        was = key in self.typing
        if active:
            self.typing[key] = trio.current_time() + self.settings.typing_ttl_ms / 1000
        elif was:
            del self.typing[key]
        if was != active:
            event = m.UserTyping(conversation_id=cid, user_id=user, active=active)
            self.fanout.publish(cid, text_frame(encode_bytes(event)), skip_user=user)

    # -- requests -------------------------------------------------------------------------

    async def _member(self, session: Session, cid: str) -> None:
        """Raise NotAMember / ConversationNotFound unless the user is a member."""
        if cid not in session.conversations:
            info = await self.store.conversation(cid)
            if session.user_id not in info.members:
                raise NotAMember(f"you are not a member of conversation {cid}")
            # A membership the session did not hear of (made in the store directly):
            # deliver from now on; what came before is history.
            session.last_seq[cid] = max(info.latest_seq, self.latest_published(cid))
            self.fanout.subscribe(cid, session)

    async def handle(self, session: Session, request: m.ClientMessage) -> None:
        """Execute one request from a ready session and send its one reply."""
        user = session.user_id
        if isinstance(request, m.Send):
            if len(request.text) > self.settings.max_text_chars:
                session.reply_error(
                    request.id,
                    ErrorCode.TOO_LARGE,
                    f"text is longer than max_text_chars ({self.settings.max_text_chars})",
                    path="$.text",
                )
                return
            await self._member(session, request.conversation_id)
            # The reader goes on while the message commits: its ack (or error) is sent by
            # `_stored`, and later requests' replies may overtake it (HOOMI-REQ-3).
            await self.store.append_soon(
                conversation_id=request.conversation_id,
                sender_id=user,
                client_msg_id=request.client_msg_id,
                text=request.text,
                kind="user",
                now_ms=self.wall_ms(),
                done=partial(self._stored, session, request, time.perf_counter()),
            )
        elif isinstance(request, m.History):
            await self._member(session, request.conversation_id)
            limit = min(
                request.limit or self.settings.history_page_max, self.settings.history_page_max
            )
            with self._timed("history"):
                page = await self.store.history(
                    request.conversation_id,
                    before_seq=request.before_seq,
                    after_seq=request.after_seq,
                    limit=limit,
                )
            session.send(
                m.HistoryPage(
                    id=request.id,
                    conversation_id=request.conversation_id,
                    messages=page.messages,
                    has_more=page.has_more,
                )
            )
        elif isinstance(request, m.Typing):
            await self._member(session, request.conversation_id)
            self.set_typing(request.conversation_id, user, active=request.active)
            session.send(m.Ok(id=request.id))
        elif isinstance(request, m.Read):
            await self._member(session, request.conversation_id)
            with self._timed("mark_read"):
                marker, moved = await self.store.mark_read(
                    request.conversation_id, user, request.seq
                )
            session.send(m.Ok(id=request.id))
            if moved:
                receipt = m.Receipt(
                    conversation_id=request.conversation_id, user_id=user, seq=marker
                )
                self.fanout.publish(request.conversation_id, text_frame(encode_bytes(receipt)))
        elif isinstance(request, m.Ping):
            session.send(m.Pong(id=request.id, server_time=self.wall_ms()))
        elif isinstance(request, m.Refresh):
            self._refresh(session, request)
        elif isinstance(request, m.PresenceQuery):
            contacts = await self.store.shared_contacts(user)
            users = tuple(self.presence_of(u) for u in request.user_ids if u in contacts)
            session.send(m.PresenceResult(id=request.id, users=users))

    def _stored(
        self, session: Session, request: m.Send, queued_at: float, result: Outcome[Appended]
    ) -> None:
        """A queued send has committed (or failed): ack it to its session, if still there."""
        self._append_seconds.observe(time.perf_counter() - queued_at)
        if session.machine.state is not State.READY:
            return  # gone: as with a lost ack, a retry with the same client_msg_id is safe
        try:
            stored = result.unwrap().message
        except Exception as exc:
            session.refuse(request, exc)
            return
        session.send(
            m.Ack(
                id=request.id,
                conversation_id=stored.conversation_id,
                client_msg_id=request.client_msg_id,
                message_id=stored.message_id,
                seq=stored.seq,
                sent_at=stored.sent_at,
            )
        )

    def _refresh(self, session: Session, request: m.Refresh) -> None:
        try:
            identity = self.verifier.verify(request.token, now_s=self.wall())
        except TokenError as refused:
            # HOOMI-TOKEN-2: `token_expired` for an expired token (the client needs a new one),
            # `unauthorized` otherwise; either way the old token stays in force.
            session.reply_error(request.id, refused.code, refused.message)
            return
        if identity.user_id != session.user_id:
            session.reply_error(request.id, ErrorCode.UNAUTHORIZED, "token is for another user")
            return
        session.expires_at_ms = identity.expires_at_ms
        session.warned = False
        session.due = trio.current_time()  # let the scheduler look at the new expiry
        session.fire(Event.TOKEN_REFRESHED)
        session.send(m.Ok(id=request.id))

    def presence_of(self, user: str) -> m.PresenceState:
        if user in self.online:
            return m.PresenceState(user_id=user, status="online")
        return m.PresenceState(user_id=user, status="offline", last_seen=self.last_seen.get(user))

    # -- the shared scheduler -------------------------------------------------------------

    async def _timers(self) -> None:
        """Heartbeats, hello deadlines, token expiry and typing expiry for every session.

        One task for all sessions instead of timer tasks per session (~2 KB each). It wakes
        a few times per shortest period, so a timer fires at most one tick late.
        """
        settings = self.settings
        tick = min(
            1.0,
            settings.heartbeat_interval_ms / 4000,
            settings.typing_ttl_ms / 4000,
            settings.hello_timeout_ms / 4000,
        )
        interval = settings.heartbeat_interval_ms / 1000
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            wall_ms = self.wall_ms()
            self._sample_rates(now)
            for session in list(self.sessions.values()):
                # Each session says when it next needs a look: most ticks touch no session
                # (a ready one is due about once per heartbeat interval).
                if now < session.due:
                    continue
                state = session.machine.state
                if state in (State.AWAITING_HELLO, State.AUTHENTICATING):
                    if now >= session.hello_deadline:
                        session.fire(Event.HELLO_DEADLINE, detail="no hello in time")
                    session.due = max(session.hello_deadline, now + tick)
                elif state is State.READY:
                    self._tick(session, now, wall_ms, interval)
                    session.due = self._next_due(session, now, wall_ms, interval)
                else:
                    session.due = now + interval  # closing: its close timeout ends it
            for (cid, user), deadline in list(self.typing.items()):
                if now >= deadline:
                    self.set_typing(cid, user, active=False)
            horizon = now - settings.hello_timeout_ms / 1000
            for cid, (_, when) in list(self.published_seq.items()):
                if when < horizon:
                    del self.published_seq[cid]

    def _tick(self, session: Session, now: float, wall_ms: int, interval: float) -> None:
        if now - session.ws.last_received >= 3 * interval:
            session.fire(Event.HEARTBEAT_TIMEOUT, detail="no frame for three heartbeats")
        elif wall_ms >= session.expires_at_ms:
            session.fire(Event.TOKEN_EXPIRED, detail="token expired")
        elif (
            not session.warned and wall_ms >= session.expires_at_ms - self.settings.token_warning_ms
        ):
            session.fire(Event.TOKEN_EXPIRING)
        elif now - session.last_ping >= interval:
            session.fire(Event.HEARTBEAT_TICK)

    def _next_due(self, session: Session, now: float, wall_ms: int, interval: float) -> float:
        """The earliest time any of a ready session's timers can fire."""
        token_ms = session.expires_at_ms - wall_ms
        if not session.warned:
            token_ms -= self.settings.token_warning_ms
        return min(
            session.last_ping + interval,
            session.ws.last_received + 3 * interval,
            now + max(token_ms, 0) / 1000,
        )

    def _timed(self, operation: str) -> Timer:
        return self.metrics.store_seconds.labels(operation).time()

    def _sample_rates(self, now: float) -> None:
        metrics = self.metrics
        metrics.rates.sample(now, metrics.frames_in, metrics.frames_out, metrics.deliveries)
