"""Errors and the two code registries of protocol v1.

The error tree::

    HoomiError                      anything Hoomi raises on purpose
    ├── ProtocolError               a peer's frame broke the protocol; carries the spec's
    │                               error code, a JSON path and (if readable) the request id
    └── IllegalTransition           a (state, event) pair the state machine does not list:
                                    a bug in the caller, never the peer's fault

`ErrorCode` mirrors ``spec/v1/errors.json`` and `CloseCode` mirrors
``spec/v1/close-codes.json``; ``tests/test_registries.py`` proves they agree.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """The error registry: the `code` of an `error` reply."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_STATE = "invalid_state"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """The close-code registry: WebSocket close codes the server closes with."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    HELLO_TIMEOUT = 4000
    AUTH_FAILED = 4001
    AUTH_EXPIRED = 4002
    PROTOCOL_VIOLATION = 4003
    KICKED = 4004
    SLOW_CONSUMER = 4005
    RATE_LIMITED = 4006
    TOO_MANY_CONNECTIONS = 4007
    HEARTBEAT_TIMEOUT = 4008
    UNSUPPORTED_PROTOCOL = 4009

    @property
    def reconnect(self) -> bool:
        """True if a client should reconnect (with backoff) after this close; False if terminal."""
        return self in _RECONNECT

    @classmethod
    def by_name(cls, name: str) -> CloseCode:
        """The code whose registry name (e.g. ``"slow_consumer"``) is `name`; KeyError if none."""
        return cls[name.upper()]


_RECONNECT = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.INTERNAL_ERROR,
        CloseCode.HELLO_TIMEOUT,
        CloseCode.SLOW_CONSUMER,
        CloseCode.RATE_LIMITED,
        CloseCode.HEARTBEAT_TIMEOUT,
    }
)


class HoomiError(Exception):
    """Base of every error Hoomi raises on purpose."""


class ProtocolError(HoomiError):
    """A frame from the peer cannot be accepted.

    `code` is the spec's error code, `path` the JSON path of the offending value (``$`` for
    the whole frame) and `request_id` the frame's `id` when it could be read, so that the
    error reply can refer to the request (HOOMI-REQ-2).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        path: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"ProtocolError({self.code.value!r}, {self.message!r}, path={self.path!r}, "
            f"request_id={self.request_id!r})"
        )


class IllegalTransition(HoomiError):
    """The state machine got an event its table does not list for the current state."""
