"""The connection state machine of ``spec/v1/state-machine.json``, as code.

States and events are enums so that callers are type-checked; the transition table is
loaded from the spec file itself, and loading fails if the file names a state or event
these enums do not (or the other way round). Like h11's ``_state.py``: an event the table
does not list for the current state raises `IllegalTransition` and leaves the state as it
was. No clock and no I/O: timers are events the caller feeds in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from . import spec
from .errors import CloseCode, ErrorCode, IllegalTransition


class State(enum.StrEnum):
    AWAITING_HELLO = "awaiting_hello"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSING = "closing"
    CLOSED = "closed"


class Event(enum.StrEnum):
    NO_SUBPROTOCOL = "no_subprotocol"
    HELLO = "hello"
    REQUEST = "request"
    BAD_FRAME = "bad_frame"
    BINARY_FRAME = "binary_frame"
    INVALID_UTF8 = "invalid_utf8"
    FRAME_TOO_BIG = "frame_too_big"
    BAD_FRAMING = "bad_framing"
    HELLO_ACCEPTED = "hello_accepted"
    HELLO_REFUSED = "hello_refused"
    HELLO_EXPIRED = "hello_expired"
    HELLO_OVER_LIMIT = "hello_over_limit"
    TOKEN_REFRESHED = "token_refreshed"
    RATE_EXCEEDED = "rate_exceeded"
    FLOOD = "flood"
    OUTBOX_FULL = "outbox_full"
    KICK = "kick"
    DRAIN = "drain"
    HANDLER_FAILED = "handler_failed"
    HELLO_DEADLINE = "hello_deadline"
    HEARTBEAT_TICK = "heartbeat_tick"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    TOKEN_EXPIRING = "token_expiring"
    TOKEN_EXPIRED = "token_expired"
    PEER_CLOSED = "peer_closed"
    CLOSE_DONE = "close_done"


@attrs.frozen
class Transition:
    """What the caller must do for one event: run `actions` in order, then be in `target`."""

    target: State
    actions: tuple[str, ...]
    error: ErrorCode | None = None
    close: CloseCode | None = None


def load_table(data: Mapping[str, Any]) -> Mapping[tuple[State, Event], Transition]:
    """Build the transition table from the spec's state-machine data; ValueError on drift."""
    states = {s["name"] for s in data["states"]}
    events = {e["name"] for e in data["events"]}
    if states != set(State) or events != set(Event):
        raise ValueError(
            "state-machine.json and hoomi.protocol.state disagree: "
            f"states {sorted(states ^ set(State))}, events {sorted(events ^ set(Event))}"
        )
    table: dict[tuple[State, Event], Transition] = {}
    for row in data["transitions"]:
        key = (State(row["from"]), Event(row["event"]))
        if key in table:
            raise ValueError(f"state-machine.json lists {key} twice")
        table[key] = Transition(
            target=State(row["to"]),
            actions=tuple(row["actions"]),
            error=ErrorCode(row["error"]) if "error" in row else None,
            close=CloseCode.by_name(row["close"]) if "close" in row else None,
        )
    return MappingProxyType(table)


_SPEC = spec.load("state-machine.json")
TABLE = load_table(_SPEC)
INITIAL = State(_SPEC["initial"])
TIMER_DEFAULTS_MS: Mapping[str, int | None] = MappingProxyType(
    {t["name"]: t["default_ms"] for t in _SPEC["timers"]}
)


class ConnectionState:
    """One connection's position in the state machine."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = INITIAL

    def handle(self, event: Event) -> Transition:
        """Apply `event`; return what to do. Raises `IllegalTransition`, state unchanged."""
        transition = TABLE.get((self.state, event))
        if transition is None:
            raise IllegalTransition(
                f"event {event.value!r} is illegal in state {self.state.value!r}"
            )
        self.state = transition.target
        return transition

    def __repr__(self) -> str:
        return f"<ConnectionState {self.state.value}>"
