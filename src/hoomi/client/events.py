"""What the SDK hands the app: events from `Client.events()` and the errors it raises.

Events are the protocol's own message classes where the server's frame says it all
(`ChatMessage`, `UserTyping`, `Presence`, `Receipt`, `ConversationJoined`,
`ConversationLeft`), plus two of the SDK's: `StateChanged` and `ClientError`.

The error tree (below `hoomi.protocol.HoomiError`)::

    ClientClosed      the client ended for good: a terminal close code, the app closed
                      it, or the reconnect attempts ran out; unacked sends fail with it
    RequestFailed     the server answered a request with a non-retryable `error`, or the
                      connection ended under a request that is not safe to repeat
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from hoomi.protocol import HoomiError
from hoomi.protocol.client_state import ClientState
from hoomi.protocol.messages import (
    ChatMessage,
    ConversationJoined,
    ConversationLeft,
    Presence,
    Receipt,
    UserTyping,
    Welcome,
)


@attrs.frozen(kw_only=True)
class StateChanged:
    """The connection moved to `state`. In `live`, `welcome` is the server's welcome; in
    `backoff`, `attempt` is the attempt about to be made and `retry_in_s` its delay; when
    leaving a connection, `close_code` and `reason` say why it ended (None: no close frame)."""

    state: ClientState
    welcome: Welcome | None = None
    attempt: int = 0
    retry_in_s: float | None = None
    close_code: int | None = None
    reason: str = ""


@attrs.frozen(kw_only=True)
class ClientError:
    """Something the app should know but that did not stop the client: an `error` the
    server sent without a request to answer, a frame that broke the protocol, a refused
    token refresh. `code` is the spec's error code where there is one, else the SDK's
    (`bad_frame`, `protocol`, `token`)."""

    code: str
    message: str


Event: TypeAlias = (
    ChatMessage
    | UserTyping
    | Presence
    | Receipt
    | ConversationJoined
    | ConversationLeft
    | StateChanged
    | ClientError
)


class ClientClosed(HoomiError):
    """The client is closed and will not reconnect on its own."""

    def __init__(self, reason: str, close_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class RequestFailed(HoomiError):
    """A request failed: `code` is the spec's error code (or ``disconnected``)."""

    def __init__(
        self, code: str, message: str, *, path: str | None = None, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.path = path
        self.retry_after_ms = retry_after_ms
