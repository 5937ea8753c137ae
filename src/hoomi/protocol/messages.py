"""One frozen attrs class per message type of protocol v1.

Field names are the wire names. Optional fields default to None and are left out of the
encoded frame. The wire tag lives in the class variable `TYPE`; the codec adds and reads it.
Schemas: ``spec/v1/schemas/{client,server}/<TYPE>.json``.
"""

from __future__ import annotations

from typing import ClassVar, Literal, TypeAlias

import attrs

ConversationKind = Literal["direct", "group"]
MessageKind = Literal["user", "system"]
PresenceStatus = Literal["online", "offline"]


# -- records shared by several messages ---------------------------------------------------


@attrs.frozen(kw_only=True)
class ClientInfo:
    name: str
    version: str


@attrs.frozen(kw_only=True)
class ResumePosition:
    conversation_id: str
    after_seq: int


@attrs.frozen(kw_only=True)
class ChatMessage:
    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    kind: MessageKind
    text: str
    sent_at: int
    client_msg_id: str | None = None


@attrs.frozen(kw_only=True)
class Conversation:
    conversation_id: str
    kind: ConversationKind
    members: tuple[str, ...]
    latest_seq: int
    read_seq: int
    unread: int
    title: str | None = None


@attrs.frozen(kw_only=True)
class Limits:
    max_frame_bytes: int
    max_text_chars: int
    history_page_max: int
    replay_max: int
    rate_per_s: float
    rate_burst: int
    typing_ttl_ms: int


@attrs.frozen(kw_only=True)
class PresenceState:
    user_id: str
    status: PresenceStatus
    last_seen: int | None = None


# -- client -> server: requests -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Hello:
    TYPE: ClassVar[str] = "hello"
    id: str
    token: str
    client: ClientInfo | None = None
    resume: tuple[ResumePosition, ...] | None = None


@attrs.frozen(kw_only=True)
class Send:
    TYPE: ClassVar[str] = "send"
    id: str
    conversation_id: str
    client_msg_id: str
    text: str


@attrs.frozen(kw_only=True)
class History:
    TYPE: ClassVar[str] = "history"
    id: str
    conversation_id: str
    before_seq: int | None = None
    after_seq: int | None = None
    limit: int | None = None


@attrs.frozen(kw_only=True)
class Typing:
    TYPE: ClassVar[str] = "typing"
    id: str
    conversation_id: str
    active: bool


@attrs.frozen(kw_only=True)
class Read:
    TYPE: ClassVar[str] = "read"
    id: str
    conversation_id: str
    seq: int


@attrs.frozen(kw_only=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    id: str


@attrs.frozen(kw_only=True)
class Refresh:
    TYPE: ClassVar[str] = "refresh"
    id: str
    token: str


@attrs.frozen(kw_only=True)
class PresenceQuery:
    TYPE: ClassVar[str] = "presence_query"
    id: str
    user_ids: tuple[str, ...]


# -- server -> client: replies --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Welcome:
    TYPE: ClassVar[str] = "welcome"
    id: str
    session_id: str
    user_id: str
    protocol: str
    spec_version: str
    heartbeat_interval_ms: int
    limits: Limits
    conversations: tuple[Conversation, ...]
    token_expires_at: int | None = None


@attrs.frozen(kw_only=True)
class Ack:
    TYPE: ClassVar[str] = "ack"
    id: str
    conversation_id: str
    client_msg_id: str
    message_id: str
    seq: int
    sent_at: int


@attrs.frozen(kw_only=True)
class HistoryPage:
    TYPE: ClassVar[str] = "history_page"
    id: str
    conversation_id: str
    messages: tuple[ChatMessage, ...]
    has_more: bool


@attrs.frozen(kw_only=True)
class PresenceResult:
    TYPE: ClassVar[str] = "presence_result"
    id: str
    users: tuple[PresenceState, ...]


@attrs.frozen(kw_only=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    id: str
    server_time: int


@attrs.frozen(kw_only=True)
class Ok:
    TYPE: ClassVar[str] = "ok"
    id: str


@attrs.frozen(kw_only=True)
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    id: str | None = None
    path: str | None = None
    retry_after_ms: int | None = None


# -- server -> client: events ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MessageEvent:
    TYPE: ClassVar[str] = "message"
    message: ChatMessage


@attrs.frozen(kw_only=True)
class UserTyping:
    TYPE: ClassVar[str] = "user_typing"
    conversation_id: str
    user_id: str
    active: bool


@attrs.frozen(kw_only=True)
class Presence:
    TYPE: ClassVar[str] = "presence"
    user_id: str
    status: PresenceStatus
    last_seen: int | None = None


@attrs.frozen(kw_only=True)
class Receipt:
    TYPE: ClassVar[str] = "receipt"
    conversation_id: str
    user_id: str
    seq: int


@attrs.frozen(kw_only=True)
class ResumeGap:
    TYPE: ClassVar[str] = "resume_gap"
    conversation_id: str
    after_seq: int
    latest_seq: int


@attrs.frozen(kw_only=True)
class ConversationJoined:
    TYPE: ClassVar[str] = "conversation_joined"
    conversation: Conversation


@attrs.frozen(kw_only=True)
class ConversationLeft:
    TYPE: ClassVar[str] = "conversation_left"
    conversation_id: str


@attrs.frozen(kw_only=True)
class TokenExpiring:
    TYPE: ClassVar[str] = "token_expiring"
    expires_at: int


ClientMessage: TypeAlias = Hello | Send | History | Typing | Read | Ping | Refresh | PresenceQuery
ServerMessage: TypeAlias = (
    Welcome
    | Ack
    | HistoryPage
    | PresenceResult
    | Pong
    | Ok
    | Error
    | MessageEvent
    | UserTyping
    | Presence
    | Receipt
    | ResumeGap
    | ConversationJoined
    | ConversationLeft
    | TokenExpiring
)
Message: TypeAlias = ClientMessage | ServerMessage

CLIENT_MESSAGES: dict[str, type[ClientMessage]] = {
    cls.TYPE: cls for cls in (Hello, Send, History, Typing, Read, Ping, Refresh, PresenceQuery)
}
SERVER_MESSAGES: dict[str, type[ServerMessage]] = {
    cls.TYPE: cls
    for cls in (
        Welcome,
        Ack,
        HistoryPage,
        PresenceResult,
        Pong,
        Ok,
        Error,
        MessageEvent,
        UserTyping,
        Presence,
        Receipt,
        ResumeGap,
        ConversationJoined,
        ConversationLeft,
        TokenExpiring,
    )
}
