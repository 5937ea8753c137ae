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


@attrs.define
class _Stream:
    position: int  # the last seq handed to the app
    target: int  # the highest seq known to exist
    held: dict[int, ChatMessage] = attrs.field(factory=dict)
    filling: str | None = None  # the request id of the fill page in flight


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
        self.hold_max = hold_max
        self.duplicates = 0  # messages dropped as already handed over

    def position(self, conversation_id: str) -> int | None:
        """The last seq handed to the app, or None for an unknown conversation."""
        stream = self._streams.get(conversation_id)
        return None if stream is None else stream.position

    def positions(self) -> dict[str, int]:
        return {cid: stream.position for cid, stream in self._streams.items()}

    def resume(self) -> tuple[ResumePosition, ...]:
        """The `hello.resume` positions: per known conversation, the last seq handed over."""
        return tuple(
            ResumePosition(conversation_id=cid, after_seq=stream.position)
            for cid, stream in self._streams.items()
        )

    # -- connections and membership ---------------------------------------------------------

    def disconnected(self) -> None:
        """The connection ended: fills in flight get no answer and held messages come again
        with the resume replay, so both are forgotten."""
        self._fills.clear()
        for stream in self._streams.values():
            stream.held.clear()
            stream.filling = None
            stream.target = stream.position

    def welcome(
        self, conversations: Iterable[Conversation]
    ) -> tuple[list[Conversation], list[str], list[str]]:
        """Match the welcome's conversations with the known ones; return (new, gone,
        problems). New ones start at their `latest_seq`; gone ones are forgotten. A known
        one whose `latest_seq` is below its position (the server lost messages, or is
        another server) restarts at `latest_seq`, so that its next messages are not taken
        for duplicates, and is named in `problems`."""
        listed = {c.conversation_id: c for c in conversations}
        gone = [cid for cid in self._streams if cid not in listed]
        for cid in gone:
            del self._streams[cid]
        new, problems = [], []
        for cid, conversation in listed.items():
            seq = conversation.latest_seq
            stream = self._streams.get(cid)
            if stream is None:
                new.append(conversation)
                self._streams[cid] = _Stream(seq, seq)
            elif seq < stream.position:
                problems.append(
                    f"conversation {cid}: the server's latest seq {seq} is below the "
                    f"{stream.position} already shown; restarting there"
                )
                stream.position = stream.target = seq
        return new, gone, problems

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

    def fill_failed(self, request_id: str) -> None:
        """The fill request got an error (e.g. the user left): stop filling that stream."""
        cid = self._fills.pop(request_id, None)
        stream = None if cid is None else self._streams.get(cid)
        if stream is not None:
            stream.filling = None
            stream.held.clear()
            stream.target = stream.position

    # -- inside -----------------------------------------------------------------------------

    def _take(self, stream: _Stream, message: ChatMessage, step: Step) -> None:
        if message.seq <= stream.position:
            self.duplicates += 1
        elif message.seq == stream.position + 1:
            step.deliver.append(message)
            stream.position = message.seq
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
        if stream.position < stream.target and stream.filling is None:
            request_id = f"{FILL_PREFIX}{next(self._ids)}"
            stream.filling = request_id
            self._fills[request_id] = cid
            step.requests.append(
                History(id=request_id, conversation_id=cid, after_seq=stream.position)
            )
