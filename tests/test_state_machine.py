"""The connection state machine does what the requirements say: every (state, event) pair
against expectations written out by hand, not read from ``spec/v1/state-machine.json``."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from conftest import SPEC
from hoomi.protocol import ConnectionState, Event, IllegalTransition, State
from hoomi.protocol.state import INITIAL, TABLE, load_table

SPEC_DATA: dict[str, Any] = orjson.loads((SPEC / "state-machine.json").read_bytes())


def _machine_in(state: State) -> ConnectionState:
    machine = ConnectionState()
    machine.state = state
    return machine


S, E = State, Event
# What the requirements' prose (spec/v1/requirements.json) and RFC 6455 say each event does,
# written out by hand rather than read from state-machine.json, so that a wrong row there
# (or in the code that mirrors it) fails: (state, event) -> (next state, close code, error).
Expected = tuple[State, int | None, str | None]
# HOOMI-WIRE-2 and -5: frames no state can read close the connection.
FATAL_FRAMES: dict[Event, Expected] = {
    E.BINARY_FRAME: (S.CLOSING, 1003, None),
    E.INVALID_UTF8: (S.CLOSING, 1007, None),
    E.FRAME_TOO_BIG: (S.CLOSING, 1009, None),
    E.BAD_FRAMING: (S.CLOSING, 1002, None),
}
# Until the connection closes: HOOMI-CLOSE-3 (kick), -CLOSE-2 (drain), -ERR-3 (a failure).
ANY_TIME: dict[Event, Expected] = {
    E.KICK: (S.CLOSING, 4004, None),
    E.DRAIN: (S.CLOSING, 1001, None),
    E.HANDLER_FAILED: (S.CLOSING, 1011, None),
    E.PEER_CLOSED: (S.CLOSED, None, None),
}
EXPECTED: dict[tuple[State, Event], Expected] = {
    **{(S.AWAITING_HELLO, e): x for e, x in {**FATAL_FRAMES, **ANY_TIME}.items()},
    (S.AWAITING_HELLO, E.NO_SUBPROTOCOL): (S.CLOSING, 4009, None),  # HOOMI-WIRE-1
    (S.AWAITING_HELLO, E.HELLO): (S.AUTHENTICATING, None, None),  # HOOMI-HELLO-2
    # HOOMI-HELLO-1: any other request before `welcome` closes with protocol_violation.
    (S.AWAITING_HELLO, E.REQUEST): (S.CLOSING, 4003, None),
    (S.AWAITING_HELLO, E.BAD_FRAME): (S.CLOSING, 4003, None),
    (S.AWAITING_HELLO, E.HELLO_DEADLINE): (S.CLOSING, 4000, None),  # HOOMI-HELLO-4
    # While the hello is checked the reader takes no frame: only outcomes, timers, operators.
    **{(S.AUTHENTICATING, e): x for e, x in ANY_TIME.items()},
    (S.AUTHENTICATING, E.HELLO_ACCEPTED): (S.READY, None, None),  # HOOMI-HELLO-3
    (S.AUTHENTICATING, E.HELLO_REFUSED): (S.CLOSING, 4001, "unauthorized"),  # HOOMI-HELLO-2
    (S.AUTHENTICATING, E.HELLO_EXPIRED): (S.CLOSING, 4002, "token_expired"),
    (S.AUTHENTICATING, E.HELLO_OVER_LIMIT): (S.CLOSING, 4007, None),  # HOOMI-HELLO-5
    (S.AUTHENTICATING, E.HELLO_DEADLINE): (S.CLOSING, 4000, None),  # HOOMI-HELLO-4
    **{(S.READY, e): x for e, x in {**FATAL_FRAMES, **ANY_TIME}.items()},
    (S.READY, E.HELLO): (S.READY, None, "invalid_state"),  # HOOMI-HELLO-1
    (S.READY, E.REQUEST): (S.READY, None, None),  # HOOMI-REQ-1
    (S.READY, E.BAD_FRAME): (S.READY, None, None),  # HOOMI-REQ-2: an error reply, no close
    (S.READY, E.TOKEN_REFRESHED): (S.READY, None, None),  # HOOMI-TOKEN-2
    (S.READY, E.RATE_EXCEEDED): (S.READY, None, "rate_limited"),  # HOOMI-LIMIT-2
    (S.READY, E.FLOOD): (S.CLOSING, 4006, None),  # HOOMI-LIMIT-2
    (S.READY, E.OUTBOX_FULL): (S.CLOSING, 4005, None),  # HOOMI-DELIVER-3
    (S.READY, E.HEARTBEAT_TICK): (S.READY, None, None),  # HOOMI-LIVE-1
    (S.READY, E.HEARTBEAT_TIMEOUT): (S.CLOSING, 4008, None),  # HOOMI-LIVE-1
    (S.READY, E.TOKEN_EXPIRING): (S.READY, None, None),  # HOOMI-TOKEN-1
    (S.READY, E.TOKEN_EXPIRED): (S.CLOSING, 4002, None),  # HOOMI-TOKEN-3
    # Closing ignores everything but the end of the connection (HOOMI-CLOSE-1).
    **{(S.CLOSING, e): (S.CLOSING, None, None) for e in Event},
    (S.CLOSING, E.PEER_CLOSED): (S.CLOSED, None, None),
    (S.CLOSING, E.CLOSE_DONE): (S.CLOSED, None, None),
    # Closed is terminal: no event is legal.
}


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_state_event_pair_does_what_the_requirements_say(state: State, event: Event) -> None:
    machine = _machine_in(state)
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(IllegalTransition):
            machine.handle(event)
        assert machine.state is state, "an illegal event must leave the state unchanged"
        return
    transition = machine.handle(event)
    assert (machine.state, transition.target, transition.close, transition.error) == (
        expected[0],
        *expected,
    )
    if transition.close is not None:
        assert transition.actions[-1] == "close"
    if transition.error is not None or (event is E.BAD_FRAME and state is not S.CLOSING):
        assert transition.actions[0] == "reply_error"
    if state is S.CLOSING and expected[0] is S.CLOSING:
        assert transition.actions == ("ignore",)
    if expected[0] is S.CLOSED:
        assert transition.actions == ("release",)


def test_the_spec_and_the_enums_name_the_same_states_and_events() -> None:
    assert {s["name"] for s in SPEC_DATA["states"]} == {s.value for s in State}
    assert {e["name"] for e in SPEC_DATA["events"]} == {e.value for e in Event}
    assert State(SPEC_DATA["initial"]) is INITIAL is ConnectionState().state


def test_loading_a_drifted_table_fails_loudly() -> None:
    drifted = copy.deepcopy(SPEC_DATA)
    drifted["events"].append({"name": "teleport", "source": "timer", "description": "?"})
    with pytest.raises(ValueError, match="teleport"):
        load_table(drifted)
    doubled = copy.deepcopy(SPEC_DATA)
    doubled["transitions"].append(doubled["transitions"][0])
    with pytest.raises(ValueError, match="twice"):
        load_table(doubled)


def test_every_state_is_reachable_and_every_connection_can_end() -> None:
    reachable = {INITIAL}
    frontier = [INITIAL]
    while frontier:
        state = frontier.pop()
        for (src, _), transition in TABLE.items():
            if src is state and transition.target not in reachable:
                reachable.add(transition.target)
                frontier.append(transition.target)
    assert reachable == set(State)
    for state in State:
        if state is not State.CLOSED:
            assert TABLE[(state, Event.PEER_CLOSED)].target is State.CLOSED
    assert not [key for key in TABLE if key[0] is State.CLOSED], "closed must be terminal"


def test_every_close_and_error_in_the_table_is_registered_and_actionable() -> None:
    for transition in TABLE.values():
        if transition.close is not None:
            assert "close" in transition.actions
        if transition.error is not None:
            assert "reply_error" in transition.actions


def test_a_typical_session_walks_through_the_spec() -> None:
    machine = ConnectionState()
    steps = [
        (Event.HELLO, State.AUTHENTICATING),
        (Event.HELLO_ACCEPTED, State.READY),
        (Event.REQUEST, State.READY),
        (Event.HEARTBEAT_TICK, State.READY),
        (Event.TOKEN_EXPIRING, State.READY),
        (Event.TOKEN_REFRESHED, State.READY),
        (Event.HELLO, State.READY),
        (Event.OUTBOX_FULL, State.CLOSING),
        (Event.REQUEST, State.CLOSING),
        (Event.CLOSE_DONE, State.CLOSED),
    ]
    for event, expected in steps:
        machine.handle(event)
        assert machine.state is expected, (event, machine.state)
    with pytest.raises(IllegalTransition):
        machine.handle(Event.PEER_CLOSED)
    assert machine.state is State.CLOSED
