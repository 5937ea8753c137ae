"""The connection state machine behaves exactly as ``spec/v1/state-machine.json`` says."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from conftest import SPEC
from hoomi.protocol import CloseCode, ConnectionState, ErrorCode, Event, IllegalTransition, State
from hoomi.protocol.state import INITIAL, TABLE, load_table

SPEC_DATA: dict[str, Any] = orjson.loads((SPEC / "state-machine.json").read_bytes())
ROWS = {(row["from"], row["event"]): row for row in SPEC_DATA["transitions"]}


def _machine_in(state: State) -> ConnectionState:
    machine = ConnectionState()
    machine.state = state
    return machine


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_state_event_pair_behaves_as_the_spec_table_says(state: State, event: Event) -> None:
    machine = _machine_in(state)
    row = ROWS.get((state.value, event.value))
    if row is None:
        with pytest.raises(IllegalTransition):
            machine.handle(event)
        assert machine.state is state, "an illegal event must leave the state unchanged"
        return
    transition = machine.handle(event)
    assert machine.state is State(row["to"]) is transition.target
    assert transition.actions == tuple(row["actions"])
    assert transition.error == (ErrorCode(row["error"]) if "error" in row else None)
    assert transition.close == (CloseCode.by_name(row["close"]) if "close" in row else None)


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
