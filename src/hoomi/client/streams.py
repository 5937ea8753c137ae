"""Per-conversation message streams: each message once, in seq order, without gaps.

Sans-I/O (no trio, no clock): the client feeds in what the server sent and gets back the
messages to hand to the app and the `history` requests to send (HOOMI-CLIENT-2)::

    message seq ≤ position        → dropped (a replay or a retry repeated it)
    message seq = position + 1    → handed over, then any held successors
    message seq > position + 1    → held (bounded), and the gap filled with history
    resume_gap                    → the gap filled with history (after_seq paging)
    history page for a fill       → handed over in order; the next page until caught up

A stream starts where the app's knowledge starts: at a position the app gave (`positions`),
or at a conversation's `latest_seq` when it first appears (older messages are the app's to
page). Held messages are bounded by `hold_max`; one that does not fit is dropped, which
loses nothing, because the fill pages on until the highest seq seen (`target`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import attrs

from hoomi.protocol.messages import ChatMessage, Conversation, History, ResumePosition

FILL_PREFIX = "fill-"
# Conversations resumed in one hello: a hello must fit the 16 KB bound before welcome
# (HOOMI-WIRE-5); a position is ~60 bytes plus its id (up to 64). The others are paged.
RESUME_MAX = 100


@attrs.define
class _Stream:
    position: int  # the last seq handed to the app
    target: int  # the highest seq known to exist
    held: dict[int, ChatMessage] = attrs.field(factory=dict)
    filling: str | None = None  # the request id of the fill page in flight
    stalled: bool = False  # the app's inbox was full: nothing handed over or paged
    active: int = 0  # when it last handed a message over (a tick), to rank resumes


@attrs.define
class Step:
    """What one input produced: messages for the app (in order), requests for the server,
    and problems with the server's frames worth telling the app about."""

    deliver: list[ChatMessage] = attrs.field(factory=list)
    requests: list[History] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)


class Streams:
    """Every conversation's stream for one client, across its connections."""

    def __init__(self, positions: Mapping[str, int] | None = None, *, hold_max: int = 1000):
        self._streams = {cid: _Stream(seq, seq) for cid, seq in (positions or {}).items()}
        self._fills: dict[str, str] = {}  # fill request id -> conversation id
        self._ids = itertools.count(1)
        self._ticks = itertools.count(1)
        self._unresumed: set[str] = set()  # known, but left out of the last hello
        self.hold_max = hold_max
        self.duplicates = 0  # messages dropped as already handed over

    def position(self, conversation_id: str) -> int | None:
        """The last seq handed to the app, or None for an unknown conversation."""
        stream = self._streams.get(conversation_id)
        return None if stream is None else stream.position

    def stalled(self, conversation_id: str) -> bool:
        """True while the app's full inbox holds this stream back (see `stall`)."""
        stream = self._streams.get(conversation_id)
        return stream is not None and stream.stalled

    def positions(self) -> dict[str, int]:
        return {cid: stream.position for cid, stream in self._streams.items()}

    def resume(self) -> tuple[ResumePosition, ...]:
        """The `hello.resume` positions: per known conversation, the last seq handed over;
        at most `RESUME_MAX`, the most recently active (the rest are paged after welcome)."""
        ranked = sorted(self._streams.items(), key=lambda item: item[1].active, reverse=True)
        self._unresumed = {cid for cid, _ in ranked[RESUME_MAX:]}
        return tuple(
            ResumePosition(conversation_id=cid, after_seq=stream.position)
            for cid, stream in ranked[:RESUME_MAX]
        )

    # -- connections and membership ---------------------------------------------------------

    def disconnected(self) -> None:
        """The connection ended: fills in flight get no answer and held messages come again
        with the resume replay, so both are forgotten."""
        self._fills.clear()
        for stream in self._streams.values():
            stream.held.clear()
            stream.filling = None
            stream.stalled = False
            stream.target = stream.position

    def welcome(
        self, conversations: Iterable[Conversation]
    ) -> tuple[list[Conversation], list[str], Step]:
        """Match the welcome's conversations with the known ones; return (new, gone, step).

        New ones start at their `latest_seq`; gone ones are forgotten. Known ones left out
        of the hello's resume are paged up to their `latest_seq` (`step.requests`). A known
        one whose `latest_seq` is below its position (the server lost messages, or is
        another server) restarts at `latest_seq`, so that its next messages are not taken
        for duplicates, and is named in `step.problems`."""
        listed = {c.conversation_id: c for c in conversations}
        gone = [cid for cid in self._streams if cid not in listed]
        for cid in gone:
            del self._streams[cid]
        new: list[Conversation] = []
        step = Step()
        for cid, conversation in listed.items():
            seq = conversation.latest_seq
            stream = self._streams.get(cid)
            if stream is None:
                new.append(conversation)
                self._streams[cid] = _Stream(seq, seq)
            elif seq < stream.position:
                step.problems.append(
                    f"conversation {cid}: the server's latest seq {seq} is below the "
                    f"{stream.position} already shown; restarting there"
                )
                stream.position = stream.target = seq
            elif cid in self._unresumed:
                stream.target = max(stream.target, seq)
                self._fill(cid, stream, step)
        self._unresumed.clear()
        return new, gone, step

    def joined(self, conversation: Conversation) -> None:
        """`conversation_joined`: a stream from its `latest_seq` (a known one is kept)."""
        seq = conversation.latest_seq
        self._streams.setdefault(conversation.conversation_id, _Stream(seq, seq))

    def left(self, conversation_id: str) -> None:
        """`conversation_left`: nothing more of it is delivered."""
        stream = self._streams.pop(conversation_id, None)
        if stream is not None and stream.filling is not None:
            self._fills.pop(stream.filling, None)

    # -- messages ---------------------------------------------------------------------------

    def message(self, message: ChatMessage) -> Step:
        """A `message` event (live or replayed)."""
        step = Step()
        stream = self._streams.get(message.conversation_id)
        if stream is None:
            step.problems.append(
                f"a message for conversation {message.conversation_id}, which is not one of "
                "this user's: dropped"
            )
            return step
        self._take(stream, message, step)
        self._advance(stream, step)
        self._fill(message.conversation_id, stream, step)
        return step

    def gap(self, conversation_id: str, latest_seq: int) -> Step:
        """`resume_gap`: everything up to `latest_seq` must be paged."""
        step = Step()
        stream = self._streams.get(conversation_id)
        if stream is None:
            step.problems.append(f"a resume_gap for unknown conversation {conversation_id}")
            return step
        stream.target = max(stream.target, latest_seq)
        self._fill(conversation_id, stream, step)
        return step

    def is_fill(self, request_id: str) -> bool:
        return request_id in self._fills

    def page(self, request_id: str, messages: Iterable[ChatMessage]) -> Step:
        """The `history_page` answering fill request `request_id`."""
        step = Step()
        cid = self._fills.pop(request_id, None)
        stream = None if cid is None else self._streams.get(cid)
        if cid is None or stream is None:
            return step  # the conversation was left meanwhile
        stream.filling = None
        before = stream.position
        for message in messages:
            if message.conversation_id == cid:
                self._take(stream, message, step)
        self._advance(stream, step)
        if stream.position == before and stream.position < stream.target:
            # The server has nothing after our position yet announced more: skip to what
            # we hold rather than ask the same question forever.
            step.problems.append(
                f"conversation {cid}: history after seq {before} is empty though seq "
                f"{stream.target} exists; skipping the gap"
            )
            for seq in sorted(stream.held):
                step.deliver.append(stream.held.pop(seq))
                stream.position = seq
            stream.target = stream.position
        self._fill(cid, stream, step)
        return step

    def stall(self, conversation_id: str, seq: int) -> None:
        """The app's inbox refused message `seq`: take it and what followed it back (the
        position returns to before it), and hand over or page nothing more of this stream
        until `unstall`."""
        stream = self._streams.get(conversation_id)
        if stream is None:
            return
        stream.target = max(stream.target, stream.position)
        stream.position = min(stream.position, seq - 1)
        stream.held.clear()
        stream.stalled = True
        if stream.filling is not None:
            self._fills.pop(stream.filling, None)
            stream.filling = None

    def unstall(self) -> Step:
        """There is room again: page what the stalled streams missed."""
        step = Step()
        for cid, stream in self._streams.items():
            if stream.stalled:
                stream.stalled = False
                self._fill(cid, stream, step)
        return step

    def refill(self) -> Step:
        """Page again wherever a stream is behind and no page is in flight (after a fill
        that failed for a reason that passes, e.g. rate_limited)."""
        step = Step()
        for cid, stream in self._streams.items():
            self._fill(cid, stream, step)
        return step

    def fill_failed(self, request_id: str, *, retryable: bool = False) -> None:
        """The fill request got an error: stop filling that stream (`retryable`: for now;
        `refill` asks again)."""
        cid = self._fills.pop(request_id, None)
        stream = None if cid is None else self._streams.get(cid)
        if stream is not None:
            stream.filling = None
            if not retryable:  # e.g. forbidden: what was missed cannot be had
                stream.held.clear()
                stream.target = stream.position

    # -- inside -----------------------------------------------------------------------------

    def _take(self, stream: _Stream, message: ChatMessage, step: Step) -> None:
        if stream.stalled:
            stream.target = max(stream.target, message.seq)
        elif message.seq <= stream.position:
            self.duplicates += 1
        elif message.seq == stream.position + 1:
            step.deliver.append(message)
            stream.position = message.seq
            stream.active = next(self._ticks)
        else:
            stream.target = max(stream.target, message.seq)
            if len(stream.held) < self.hold_max:
                stream.held[message.seq] = message

    def _advance(self, stream: _Stream, step: Step) -> None:
        while stream.held:
            following = stream.held.pop(stream.position + 1, None)
            if following is None:
                break
            step.deliver.append(following)
            stream.position = following.seq
        for seq in [seq for seq in stream.held if seq <= stream.position]:
            del stream.held[seq]
        stream.target = max(stream.target, stream.position)

    def _fill(self, cid: str, stream: _Stream, step: Step) -> None:
        if stream.position < stream.target and stream.filling is None and not stream.stalled:
            request_id = f"{FILL_PREFIX}{next(self._ids)}"
            stream.filling = request_id
            self._fills[request_id] = cid
            step.requests.append(
                History(id=request_id, conversation_id=cid, after_seq=stream.position)
            )
