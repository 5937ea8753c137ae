"""The storage interface: everything the server keeps durably, behind one Protocol.

Implementations: `hoomi.server.sqlite_store.SqliteStore` (embedded default, WAL) and, for
multi-node deployments, a PostgreSQL store with the same interface. All methods are Trio
coroutines that keep blocking work off the event loop. A method returns only after its
writes are durable (committed); that is what lets the server ack a message (HOOMI-SEND-1).
`append_soon` is the exception: it queues the message and reports its outcome to a callback
once durable, so a connection's reader need not wait for each commit.

A write cancelled after the store took it may still commit (like a lost ack): a retried
send with the same `client_msg_id` is safe.

Errors: `ConversationNotFound`, `NotAMember`, `StoreUnavailable` (the backend cannot be
reached or failed; nothing was written), all below `StoreError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol

import attrs
import outcome

from hoomi.protocol.errors import HoomiError
from hoomi.protocol.messages import ChatMessage

ConversationKind = Literal["direct", "group"]


class StoreError(HoomiError):
    """Base of storage errors."""


class ConversationNotFound(StoreError):
    """The conversation does not exist."""


class NotAMember(StoreError):
    """The user is not a member of the conversation."""


class StoreUnavailable(StoreError):
    """The backend failed or cannot be reached; nothing was written."""


class InvalidConversation(StoreError):
    """A create or membership change breaks a rule (e.g. a direct conversation needs exactly
    two distinct members, and at most one exists per pair)."""


@attrs.frozen(kw_only=True)
class ConversationInfo:
    """A conversation as stored, without per-user state."""

    conversation_id: str
    kind: ConversationKind
    members: tuple[str, ...]
    latest_seq: int
    title: str | None = None
    created_at: int


@attrs.frozen(kw_only=True)
class MemberView:
    """A conversation as one member sees it (the `Conversation` record of `welcome`)."""

    info: ConversationInfo
    read_seq: int
    unread: int


@attrs.frozen(kw_only=True)
class Appended:
    """The result of `append`: the stored message, and whether it was already stored under
    the same (conversation, sender, client_msg_id) — an idempotent retry (HOOMI-SEND-3)."""

    message: ChatMessage
    duplicate: bool


@attrs.frozen(kw_only=True)
class Page:
    messages: tuple[ChatMessage, ...]  # ascending seq
    has_more: bool


class Store(Protocol):
    on_commit: Callable[[list[ChatMessage]], None] | None
    """Called synchronously after each commit with the newly stored messages, in seq order
    per conversation and before any `append` caller resumes: fan-out hangs here so that
    delivery order is commit order. Must not raise or block."""

    on_removed: Callable[[str, str], None] | None
    """Called with (conversation id, user id) for each committed member removal, in its
    place among the commit's `on_commit` calls: messages committed after it in the same
    commit are reported after it (and must not reach the removed member). Must not raise
    or block."""

    reporting: AbstractContextManager[None]
    """A commit of several writes runs its `on_commit` and its writes' callbacks inside
    ``with reporting:`` (the server's `Cork`: the batch's frames go out in one write per
    connection). A lone write's are not held: its recipients get it as it is written."""

    async def open(self) -> None:
        """Connect and create or migrate the schema. Call once before anything else."""

    async def aclose(self) -> None:
        """Finish pending writes and release the backend. Idempotent."""

    async def ping(self) -> None:
        """Raise `StoreUnavailable` if the backend cannot serve requests (for /readyz)."""

    # -- conversations (the application backend's API) --------------------------------
    async def create_conversation(
        self, *, kind: ConversationKind, members: Sequence[str], title: str | None, now_ms: int
    ) -> ConversationInfo:
        """Create a conversation. A direct one needs exactly two distinct members; creating a
        direct conversation for a pair that has one returns the existing one."""

    async def add_member(self, conversation_id: str, user_id: str) -> ConversationInfo:
        """Add a member (no-op if already one). Direct conversations refuse new members."""

    async def remove_member(self, conversation_id: str, user_id: str) -> ConversationInfo:
        """Remove a member (no-op if not one); their read marker is forgotten."""

    async def conversation(self, conversation_id: str) -> ConversationInfo:
        """One conversation; `ConversationNotFound` if none."""

    async def list_conversations(self, *, limit: int, after: str | None) -> list[ConversationInfo]:
        """All conversations ordered by id, paged by `after` (exclusive)."""

    async def conversations_of(self, user_id: str) -> list[MemberView]:
        """Every conversation the user is a member of, with read marker and unread count."""

    async def shared_contacts(self, user_id: str) -> set[str]:
        """Every user sharing at least one conversation with `user_id` (itself excluded)."""

    # -- messages ------------------------------------------------------------------------
    async def append(
        self,
        *,
        conversation_id: str,
        sender_id: str,
        client_msg_id: str | None,
        text: str,
        kind: Literal["user", "system"],
        now_ms: int,
    ) -> Appended:
        """Store a message under the next seq (gap-free per conversation) and return it once
        durable. Membership is checked for `user` messages (`NotAMember`); a repeated
        (conversation, sender, client_msg_id) returns the stored message, duplicate=True."""

    async def append_soon(
        self,
        *,
        conversation_id: str,
        sender_id: str,
        client_msg_id: str | None,
        text: str,
        kind: Literal["user", "system"],
        now_ms: int,
        done: Callable[[outcome.Outcome[Appended]], None],
    ) -> None:
        """`append`, but return once queued: `done` gets what `append` would return or
        raise, called on the loop after `on_commit`, in queue order. Waits only while the
        store's queue is full."""

    async def history(
        self,
        conversation_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int,
    ) -> Page:
        """HOOMI-HISTORY-1..3: with before_seq the newest messages below it, with after_seq
        the oldest above it, with neither the newest; ascending seq; has_more as specified."""

    # -- read markers --------------------------------------------------------------------
    async def mark_read(self, conversation_id: str, user_id: str, seq: int) -> tuple[int, bool]:
        """Move the user's read marker forward to min(seq, latest_seq). Returns the marker
        and whether it moved (HOOMI-READ-1). `NotAMember` if the user is not a member."""
