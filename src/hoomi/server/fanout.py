"""Fan-out: who receives a conversation's frames, behind one interface.

`publish` is synchronous and never awaits: a frame is encoded once by the caller and handed
to every subscribed session's `deliver`, which queues it without blocking (a full queue
closes that session as a slow consumer, HOOMI-DELIVER-3). `LocalFanout` serves one process;
a Redis implementation of the same interface carries frames between nodes.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Protocol


class Subscriber(Protocol):
    """A session, as fan-out sees it."""

    user_id: str

    def deliver(self, conversation_id: str, seq: int | None, frame: bytes) -> None:
        """Queue `frame` (a `message` when `seq` is given); must not block or raise."""

    def push(self, frame: bytes) -> None:
        """Queue a frame that belongs to no conversation's sequence (e.g. presence)."""


class Fanout(Protocol):
    def subscribe(self, conversation_id: str, subscriber: Subscriber) -> None: ...

    def unsubscribe(self, conversation_id: str, subscriber: Subscriber) -> None: ...

    def publish(
        self,
        conversation_id: str,
        frame: bytes,
        *,
        seq: int | None = None,
        skip_user: str | None = None,
    ) -> int:
        """Deliver `frame` to every subscriber of the conversation (but `skip_user`'s);
        returns how many sessions it was handed to."""

    def subscribers(self, conversation_ids: Iterable[str]) -> set[Subscriber]:
        """The local subscribers of any of these conversations, each once."""


class LocalFanout:
    """In-process fan-out: a dict of conversation id -> subscribed sessions."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscriber]] = collections.defaultdict(set)

    def subscribe(self, conversation_id: str, subscriber: Subscriber) -> None:
        self._subscribers[conversation_id].add(subscriber)

    def unsubscribe(self, conversation_id: str, subscriber: Subscriber) -> None:
        members = self._subscribers.get(conversation_id)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del self._subscribers[conversation_id]

    def publish(
        self,
        conversation_id: str,
        frame: bytes,
        *,
        seq: int | None = None,
        skip_user: str | None = None,
    ) -> int:
        # A copy: a delivery may end a session, which unsubscribes it later, not during this.
        delivered = 0
        for subscriber in tuple(self._subscribers.get(conversation_id, ())):
            if subscriber.user_id != skip_user:
                subscriber.deliver(conversation_id, seq, frame)
                delivered += 1
        return delivered

    def subscribers(self, conversation_ids: Iterable[str]) -> set[Subscriber]:
        found: set[Subscriber] = set()
        for conversation_id in conversation_ids:
            found.update(self._subscribers.get(conversation_id, ()))
        return found
