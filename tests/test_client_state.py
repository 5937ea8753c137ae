"""The client's state machine, backoff and message streams, without I/O.

The state machine behaves exactly as ``spec/v1/client-state-machine.json`` says, pair by
pair, and the SDK implements every action it names; the streams hand each message over
once, in order, without gaps (HOOMI-CLIENT-2).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest
import trio

from conftest import SPEC
from hoomi.client.client import _ACTIONS
from hoomi.client.inbox import Inbox
from hoomi.client.streams import RESUME_MAX, Streams
from hoomi.protocol import IllegalTransition
from hoomi.protocol.client_state import (
    BACKOFF,
    CLIENT_INITIAL,
    CLIENT_TABLE,
    ClientConnectionState,
    ClientEvent,
    ClientState,
    load_client_table,
)
from hoomi.protocol.messages import ChatMessage, Conversation

DATA: dict[str, Any] = orjson.loads((SPEC / "client-state-machine.json").read_bytes())
ROWS = {(row["from"], row["event"]): row for row in DATA["transitions"]}


@pytest.mark.parametrize("state", list(ClientState))
@pytest.mark.parametrize("event", list(ClientEvent))
def test_every_state_event_pair_behaves_as_the_spec_table_says(
    state: ClientState, event: ClientEvent
) -> None:
    machine = ClientConnectionState()
    machine.state = state
    row = ROWS.get((state.value, event.value))
    if row is None:
        with pytest.raises(IllegalTransition):
            machine.handle(event)
        assert machine.state is state, "an illegal event must leave the state unchanged"
        return
    transition = machine.handle(event)
    assert machine.state is ClientState(row["to"]) is transition.target
    assert transition.actions == tuple(row["actions"])


def test_the_spec_and_the_code_name_the_same_states_events_and_actions() -> None:
    assert {s["name"] for s in DATA["states"]} == {s.value for s in ClientState}
    assert {e["name"] for e in DATA["events"]} == {e.value for e in ClientEvent}
    assert ClientState(DATA["initial"]) is CLIENT_INITIAL is ClientConnectionState().state
    assert set(DATA["actions"]) == set(_ACTIONS), "every spec action has exactly one method"


def test_loading_a_drifted_table_fails_loudly() -> None:
    drifted = copy.deepcopy(DATA)
    drifted["states"].append({"name": "limbo", "description": "?"})
    with pytest.raises(ValueError, match="limbo"):
        load_client_table(drifted)
    doubled = copy.deepcopy(DATA)
    doubled["transitions"].append(doubled["transitions"][0])
    with pytest.raises(ValueError, match="twice"):
        load_client_table(doubled)
    undefined = copy.deepcopy(DATA)
    undefined["transitions"][0]["actions"].append("teleport")
    with pytest.raises(ValueError, match="teleport"):
        load_client_table(undefined)


def test_every_state_is_reachable_closed_is_terminal_and_every_state_can_close() -> None:
    reachable = {CLIENT_INITIAL}
    frontier = [CLIENT_INITIAL]
    while frontier:
        state = frontier.pop()
        for (src, _), transition in CLIENT_TABLE.items():
            if src is state and transition.target not in reachable:
                reachable.add(transition.target)
                frontier.append(transition.target)
    assert reachable == set(ClientState)
    assert not [key for key in CLIENT_TABLE if key[0] is ClientState.CLOSED]
    for state in set(ClientState) - {ClientState.CLOSED}:
        assert CLIENT_TABLE[(state, ClientEvent.APP_CLOSE)].target is ClientState.CLOSED
        assert "fail_pending" in CLIENT_TABLE[(state, ClientEvent.APP_CLOSE)].actions


def test_terminal_closes_never_lead_back_to_connecting_and_reconnect_ones_back_off() -> None:
    for (state, event), transition in CLIENT_TABLE.items():
        if event is ClientEvent.SERVER_CLOSE_TERMINAL:
            assert transition.target is ClientState.CLOSED, state
        if event in (ClientEvent.SERVER_CLOSE_RECONNECT, ClientEvent.CONNECTION_LOST):
            assert transition.target is ClientState.BACKOFF, state
            assert transition.actions == ("schedule_backoff",)


def test_backoff_is_full_jitter_over_a_capped_exponential_as_the_spec_says() -> None:
    spec = DATA["backoff"]
    assert (
        (BACKOFF.initial_ms, BACKOFF.max_ms)
        == (spec["initial_ms"], spec["max_ms"])
        == (
            500,
            30_000,
        )
    )  # HOOMI-LIVE-3's numbers
    assert [BACKOFF.ceiling_s(n) for n in (1, 2, 3, 7, 8, 1000)] == [0.5, 1, 2, 30, 30, 30]
    assert BACKOFF.delay_s(4, 0.0) == 0.0
    assert BACKOFF.delay_s(4, 0.5) == 2.0
    rng = random.Random(7)
    delays = [BACKOFF.delay_s(3, rng.random()) for _ in range(2000)]
    assert 0 <= min(delays) < 0.05
    assert 1.95 < max(delays) <= 2.0


# -- streams ----------------------------------------------------------------------------------


def _msg(seq: int, cid: str = "c1") -> ChatMessage:
    return ChatMessage(
        conversation_id=cid,
        seq=seq,
        message_id=f"m{seq}",
        sender_id="bob",
        kind="user",
        text=f"t{seq}",
        sent_at=seq,
    )


def _conv(cid: str, latest: int) -> Conversation:
    return Conversation(
        conversation_id=cid,
        kind="direct",
        members=("alice", "bob"),
        latest_seq=latest,
        read_seq=0,
        unread=0,
    )


def _seqs(messages: list[ChatMessage]) -> list[int]:
    return [message.seq for message in messages]


def test_a_stream_drops_what_it_already_handed_over() -> None:
    streams = Streams({"c1": 3})
    assert _seqs(streams.message(_msg(2)).deliver) == []
    assert _seqs(streams.message(_msg(3)).deliver) == []
    assert _seqs(streams.message(_msg(4)).deliver) == [4]
    assert _seqs(streams.message(_msg(4)).deliver) == []
    assert streams.duplicates == 3
    assert streams.position("c1") == 4


def test_a_seq_jump_is_held_and_filled_from_history_before_going_on() -> None:
    streams = Streams({"c1": 1})
    step = streams.message(_msg(5))
    assert step.deliver == []
    [fill] = step.requests
    assert (fill.conversation_id, fill.after_seq) == ("c1", 1)
    # More live messages meanwhile: held, no second fill request.
    assert streams.message(_msg(6)).requests == []
    # The page may overlap what is held; each message comes once, in order.
    page = streams.page(fill.id, [_msg(2), _msg(3), _msg(4), _msg(5)])
    assert _seqs(page.deliver) == [2, 3, 4, 5, 6]
    assert page.requests == []
    assert streams.position("c1") == 6


def test_a_resume_gap_pages_until_caught_up_even_when_held_messages_overflow() -> None:
    streams = Streams({"c1": 0}, hold_max=2)
    [fill] = streams.gap("c1", 5).requests
    for seq in (6, 7, 8, 9):  # live messages after the gap: only two are held
        assert streams.message(_msg(seq)).deliver == []
    first = streams.page(fill.id, [_msg(1), _msg(2), _msg(3)])
    assert _seqs(first.deliver) == [1, 2, 3]
    [again] = first.requests
    assert again.after_seq == 3
    second = streams.page(again.id, [_msg(4), _msg(5), _msg(6), _msg(7)])
    assert _seqs(second.deliver) == [4, 5, 6, 7]
    [last] = second.requests  # 8 and 9 did not fit: paged, not lost
    assert _seqs(streams.page(last.id, [_msg(8), _msg(9)]).deliver) == [8, 9]
    assert streams.position("c1") == 9


def test_an_empty_fill_page_skips_to_what_is_held_and_says_so() -> None:
    streams = Streams({"c1": 1})
    [fill] = streams.message(_msg(4)).requests
    step = streams.page(fill.id, [])
    assert _seqs(step.deliver) == [4]
    assert step.requests == []
    assert "empty" in step.problems[0]


def test_a_new_connection_forgets_fills_and_resumes_from_the_position() -> None:
    streams = Streams({"c1": 2})
    [fill] = streams.message(_msg(5)).requests
    streams.disconnected()
    assert not streams.is_fill(fill.id)
    assert [(p.conversation_id, p.after_seq) for p in streams.resume()] == [("c1", 2)]
    assert _seqs(streams.message(_msg(3)).deliver) == [3]


def test_welcome_starts_new_conversations_at_their_latest_seq_and_forgets_gone_ones() -> None:
    streams = Streams({"c1": 4, "gone": 9})
    new, gone, step = streams.welcome([_conv("c1", 7), _conv("c2", 10)])
    assert [c.conversation_id for c in new] == ["c2"]
    assert gone == ["gone"]
    assert step.problems == []
    assert step.requests == []  # c1 was resumed (none asked yet: not left out of a hello)
    assert streams.positions() == {"c1": 4, "c2": 10}
    _, _, step = streams.welcome([_conv("c1", 2), _conv("c2", 10)])
    assert "below" in step.problems[0]
    assert _seqs(streams.message(_msg(3)).deliver) == [3]  # not taken for a duplicate


def test_messages_of_unknown_or_left_conversations_are_refused() -> None:
    streams = Streams({"c1": 0})
    [fill] = streams.message(_msg(2)).requests
    streams.left("c1")
    assert streams.page(fill.id, [_msg(1)]).deliver == []
    step = streams.message(_msg(1))
    assert step.deliver == []
    assert "not one of this user's" in step.problems[0]
    streams.joined(_conv("c1", 5))
    assert _seqs(streams.message(_msg(6)).deliver) == [6]


def test_a_hello_resumes_the_most_active_conversations_and_pages_the_rest() -> None:
    streams = Streams({f"c{n}": 5 for n in range(RESUME_MAX + 3)})
    for n in range(3):  # c0..c2 hand something over: the most recently active
        streams.message(_msg(6, f"c{n}"))
    resumed = [p.conversation_id for p in streams.resume()]
    assert len(resumed) == RESUME_MAX
    assert set(resumed) >= {"c0", "c1", "c2"}
    left_out = sorted(set(streams.positions()) - set(resumed))
    assert len(left_out) == 3
    conversations = [_conv(cid, 9) for cid in streams.positions()]
    _, _, step = streams.welcome(conversations)
    assert sorted((r.conversation_id, r.after_seq) for r in step.requests) == [
        (cid, 5) for cid in left_out
    ]


def test_a_full_inbox_stalls_a_stream_until_there_is_room_then_pages_it() -> None:
    streams = Streams({"c1": 0})
    step = streams.message(_msg(1))
    streams.stall("c1", 1)  # the app's inbox refused message 1
    assert streams.stalled("c1")
    assert streams.position("c1") == 0
    for seq in (2, 3):  # neither handed over nor paged while stalled
        assert streams.message(_msg(seq)).deliver == []
    assert streams.message(_msg(3)).requests == []
    [fill] = streams.unstall().requests
    assert fill.after_seq == 0
    assert _seqs(streams.page(fill.id, [_msg(1), _msg(2), _msg(3)]).deliver) == [1, 2, 3]
    assert _seqs(step.deliver) == [1]  # what was handed over (and refused) at first


def test_a_fill_that_failed_for_a_passing_reason_is_asked_again() -> None:
    streams = Streams({"c1": 1})
    [fill] = streams.message(_msg(4)).requests
    streams.fill_failed(fill.id, retryable=True)  # e.g. rate_limited
    [again] = streams.refill().requests
    assert again.after_seq == 1
    assert _seqs(streams.page(again.id, [_msg(2), _msg(3)]).deliver) == [2, 3, 4]
    streams.fill_failed("nonexistent")
    [fill] = streams.message(_msg(7)).requests
    streams.fill_failed(fill.id)  # e.g. forbidden: given up
    assert streams.refill().requests == []


async def test_the_inbox_refuses_when_full_and_says_when_there_is_room_again() -> None:
    inbox: Inbox[int] = Inbox(4)
    rooms: list[int] = []
    inbox.on_room = lambda: rooms.append(len(inbox))
    assert all(inbox.put(n) for n in range(4))
    assert not inbox.put(4)  # full: refused, never waited on
    assert inbox.receive_nowait() == 0
    assert rooms == []  # 3 left: not yet down to half
    assert [await inbox.__anext__() for _ in range(1)] == [1]
    assert rooms == [2]  # read down to half: once
    assert inbox.receive_nowait() == 2
    assert rooms == [2]
    inbox.put(5)
    inbox.close()
    assert not inbox.put(6)
    assert [n async for n in inbox] == [3, 5]
    with pytest.raises(trio.EndOfChannel):
        inbox.receive_nowait()
