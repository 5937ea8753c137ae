"""The app's inbox: events waiting for `Client.events()`, bounded, never waited on.

The connection's reader must never wait for the app: the replies it reads (an `ack` the
app is itself waiting for, inside its `async for` over the events) sit behind the events in
the socket. So `put` either takes an event or says the inbox is full, and the client decides
what a refused event means: a message is taken back into its stream (and paged from history
once there is room, so nothing is lost), anything else is counted and reported once there
is room. `on_room` is called (from the app's task, so it must not block) when a full inbox
has been read down to half.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Inbox(Generic[T]):
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("event_buffer must be at least 1")
        self.size = size
        self._items: collections.deque[T] = collections.deque()
        self._arrived = trio.Event()
        self._closed = False
        self.refused = 0  # put() calls refused since the inbox was last full
        self.on_room: Callable[[], None] | None = None

    def put(self, item: T) -> bool:
        """Take `item`, or return False if the inbox is full or closed."""
        if self._closed or len(self._items) >= self.size:
            self.refused += not self._closed
            return False
        self._items.append(item)
        self._arrived.set()
        return True

    def close(self) -> None:
        """No more events: iteration ends once the app has taken what is here."""
        self._closed = True
        self._arrived.set()

    def __len__(self) -> int:
        return len(self._items)

    def receive_nowait(self) -> T:
        """The next event; trio.WouldBlock if there is none (EndOfChannel once closed)."""
        if not self._items:
            raise trio.EndOfChannel if self._closed else trio.WouldBlock
        return self._took(self._items.popleft())

    def _took(self, item: T) -> T:
        if self.refused and self.on_room is not None and len(self._items) <= self.size // 2:
            self.refused = 0
            self.on_room()
        return item

    def __aiter__(self) -> Inbox[T]:
        return self

    async def __anext__(self) -> T:
        await trio.lowlevel.checkpoint()
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._arrived = trio.Event()
            await self._arrived.wait()
        return self._took(self._items.popleft())
