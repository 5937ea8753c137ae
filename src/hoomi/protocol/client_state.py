"""A client's connection state machine (``spec/v1/client-state-machine.json``), as code.

The server's view of one connection is `hoomi.protocol.state`; this is the other side,
across reconnects. As there, the table is loaded from the spec file and loading fails on
drift, an unlisted (state, event) pair raises `IllegalTransition` and leaves the state
unchanged, and time is the caller's: timers are events it feeds in. `Backoff` holds the
spec's reconnect delays (HOOMI-LIVE-3); the random draw is passed in, so it is testable.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from . import spec
from .errors import IllegalTransition


class ClientState(enum.StrEnum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    LIVE = "live"
    BACKOFF = "backoff"
    CLOSED = "closed"


class ClientEvent(enum.StrEnum):
    OPENED = "opened"
    NO_SUBPROTOCOL = "no_subprotocol"
    OPEN_FAILED = "open_failed"
    WELCOME = "welcome"
    HELLO_ERROR = "hello_error"
    FRAME = "frame"
    BAD_FRAME = "bad_frame"
    TOKEN_EXPIRING = "token_expiring"
    SERVER_CLOSE_RECONNECT = "server_close_reconnect"
    SERVER_CLOSE_TERMINAL = "server_close_terminal"
    CONNECTION_LOST = "connection_lost"
    CONNECT_TIMEOUT = "connect_timeout"
    QUIET = "quiet"
    DEAD = "dead"
    BACKOFF_ELAPSED = "backoff_elapsed"
    GAVE_UP = "gave_up"
    APP_CLOSE = "app_close"


@attrs.frozen
class ClientTransition:
    """What the client must do for one event: run `actions` in order, then be in `target`."""

    target: ClientState
    actions: tuple[str, ...]


def load_client_table(
    data: Mapping[str, Any],
) -> Mapping[tuple[ClientState, ClientEvent], ClientTransition]:
    """Build the table from the spec's client state-machine data; ValueError on drift."""
    states = {s["name"] for s in data["states"]}
    events = {e["name"] for e in data["events"]}
    if states != set(ClientState) or events != set(ClientEvent):
        raise ValueError(
            "client-state-machine.json and hoomi.protocol.client_state disagree: states "
            f"{sorted(states ^ set(ClientState))}, events {sorted(events ^ set(ClientEvent))}"
        )
    unknown = {a for row in data["transitions"] for a in row["actions"]} - set(data["actions"])
    if unknown:
        raise ValueError(f"client-state-machine.json uses undefined actions {sorted(unknown)}")
    table: dict[tuple[ClientState, ClientEvent], ClientTransition] = {}
    for row in data["transitions"]:
        key = (ClientState(row["from"]), ClientEvent(row["event"]))
        if key in table:
            raise ValueError(f"client-state-machine.json lists {key} twice")
        table[key] = ClientTransition(ClientState(row["to"]), tuple(row["actions"]))
    return MappingProxyType(table)


@attrs.frozen(kw_only=True)
class Backoff:
    """Reconnect delays: full jitter over a capped exponential (the spec's `backoff`)."""

    initial_ms: int
    max_ms: int
    multiplier: float
    max_attempts: int | None

    def ceiling_s(self, attempt: int) -> float:
        """The largest delay of `attempt` (1-based), in seconds."""
        exponent = min(attempt - 1, 64)  # past the cap anyway; keeps the power finite
        return min(self.max_ms, self.initial_ms * self.multiplier**exponent) / 1000

    def delay_s(self, attempt: int, draw: float) -> float:
        """The delay before `attempt`, for a uniform `draw` in [0, 1)."""
        return draw * self.ceiling_s(attempt)


_SPEC = spec.load("client-state-machine.json")
CLIENT_TABLE = load_client_table(_SPEC)
CLIENT_INITIAL = ClientState(_SPEC["initial"])
CLIENT_TIMER_DEFAULTS_MS: Mapping[str, int | None] = MappingProxyType(
    {t["name"]: t["default_ms"] for t in _SPEC["timers"]}
)
BACKOFF = Backoff(
    initial_ms=_SPEC["backoff"]["initial_ms"],
    max_ms=_SPEC["backoff"]["max_ms"],
    multiplier=_SPEC["backoff"]["multiplier"],
    max_attempts=_SPEC["backoff"]["max_attempts"],
)


class ClientConnectionState:
    """A client's position in its state machine."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = CLIENT_INITIAL

    def handle(self, event: ClientEvent) -> ClientTransition:
        """Apply `event`; return what to do. Raises `IllegalTransition`, state unchanged."""
        transition = CLIENT_TABLE.get((self.state, event))
        if transition is None:
            raise IllegalTransition(
                f"client event {event.value!r} is illegal in state {self.state.value!r}"
            )
        self.state = transition.target
        return transition

    def __repr__(self) -> str:
        return f"<ClientConnectionState {self.state.value}>"
