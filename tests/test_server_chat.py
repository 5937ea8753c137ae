"""End to end over real sockets: two users chat through a real server."""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from harness import Client, Running, eventually, running_server
from hoomi.server.store import MemberView


@pytest.mark.requirement(
    "HOOMI-HELLO-3",
    "HOOMI-SEND-1",
    "HOOMI-DELIVER-1",
    "HOOMI-TYPING-2",
    "HOOMI-TYPING-3",
    "HOOMI-READ-2",
    "HOOMI-PRESENCE-2",
)
async def test_two_clients_authenticate_chat_and_see_each_other(
    tmp_path: pathlib.Path, tls: bool
) -> None:
    async with running_server(tmp_path, tls=tls) as hoomi:
        dm = await hoomi.store.create_conversation(
            kind="direct", members=["alice", "bob"], title=None, now_ms=0
        )
        cid = dm.conversation_id
        alice = await hoomi.connect("alice")
        assert alice.welcome["type"] == "welcome"
        assert alice.welcome["user_id"] == "alice"
        [conv] = alice.welcome["conversations"]
        assert (conv["conversation_id"], conv["latest_seq"], conv["unread"]) == (cid, 0, 0)

        bob = await hoomi.connect("bob")
        online = await alice.expect("presence")
        assert (online["user_id"], online["status"]) == ("bob", "online")

        typing = await bob.request("typing", conversation_id=cid, active=True)
        assert typing["type"] == "ok"
        seen = await alice.expect("user_typing")
        assert (seen["user_id"], seen["active"]) == ("bob", True)

        ack = await bob.request("send", conversation_id=cid, client_msg_id="k1", text="hi alice")
        assert (ack["type"], ack["seq"]) == ("ack", 1)
        # Sending ends typing, and the stop comes before the message (HOOMI-TYPING-3).
        stopped, got = await alice.recv(), await alice.recv()
        assert (stopped["type"], stopped["active"]) == ("user_typing", False)
        assert got["type"] == "message"
        assert got["message"]["text"] == "hi alice"
        assert got["message"]["seq"] == 1
        assert got["message"]["sender_id"] == "bob"
        assert got["message"]["message_id"] == ack["message_id"]

        ok = await alice.request("read", conversation_id=cid, seq=1)
        assert ok["type"] == "ok"
        receipt = await bob.expect("receipt", skip=("message",))
        assert (receipt["user_id"], receipt["seq"]) == ("alice", 1)

        await bob.aclose()
        offline = await alice.expect("presence", skip=("receipt",))
        assert (offline["user_id"], offline["status"]) == ("bob", "offline")
        assert isinstance(offline["last_seen"], int)
        await alice.aclose()


@pytest.mark.requirement("HOOMI-PRESENCE-1", "HOOMI-PRESENCE-2", "HOOMI-PRESENCE-3")
async def test_presence_aggregates_over_a_users_sessions(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, hello_timeout_ms=300) as hoomi:
        await hoomi.server.create_conversation(kind="group", members=["alice", "bob"])
        bob = await hoomi.connect("bob")
        phone = await hoomi.connect("alice")
        assert (await bob.expect("presence"))["status"] == "online"
        laptop = await hoomi.connect("alice")
        # A session that never finishes its hello does not count either way.
        stalled = await hoomi.connect()
        assert await stalled.closed() == 4000
        await phone.aclose()
        await bob.silent(0.2)  # alice is still online on her laptop
        query = await bob.request("presence_query", user_ids=["alice", "stranger"])
        assert query["users"] == [{"user_id": "alice", "status": "online"}]
        await laptop.aclose()
        offline = await bob.expect("presence")
        assert (offline["user_id"], offline["status"]) == ("alice", "offline")
        query = await bob.request("presence_query", user_ids=["alice"])
        assert query["users"][0]["last_seen"] == offline["last_seen"]


@pytest.mark.requirement("HOOMI-REQ-3", "HOOMI-SEND-1", "HOOMI-SEND-2")
async def test_replies_overtake_an_ack_waiting_for_its_commit(tmp_path: pathlib.Path) -> None:
    # HOOMI-REQ-3: an ack waits for durable storage, later replies need not. A long commit
    # window, restarted by a commit just before, holds the sends, so the ping is answered
    # while they wait; the acks then come in the order of the sends, with gap-free seqs.
    async with running_server(tmp_path, sqlite_commit_window_ms=1000) as hoomi:
        group = await hoomi.store.create_conversation(
            kind="group", members=["alice"], title="notes", now_ms=0
        )
        alice = await hoomi.connect("alice")
        cid = group.conversation_id
        await hoomi.store.create_conversation(kind="group", members=["bob"], title=None, now_ms=0)
        await _sends(alice, cid, 3)
        await alice.send({"type": "ping", "id": "p"})
        replies: list[dict[str, Any]] = []
        while len(replies) < 4:
            frame = await alice.recv()
            if frame["type"] != "message":  # her own messages' events: their order is open
                replies.append(frame)
        assert replies[0]["type"] == "pong", replies
        assert [(f["type"], f["id"], f["seq"]) for f in replies[1:]] == [
            ("ack", "s0", 1),
            ("ack", "s1", 2),
            ("ack", "s2", 3),
        ]


async def test_a_commit_of_several_messages_reaches_each_member_in_one_write(
    tmp_path: pathlib.Path, writev_calls: list[int]
) -> None:
    # Three sends held by a long commit window commit together; the report is corked, so bob
    # gets the three `message` events in one writev and alice her events and acks in another.
    async with running_server(tmp_path, sqlite_commit_window_ms=1000) as hoomi:
        group = await hoomi.store.create_conversation(
            kind="group", members=["alice", "bob"], title="team", now_ms=0
        )
        cid = group.conversation_id
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        await alice.expect("presence")
        await hoomi.store.create_conversation(kind="group", members=["carol"], title=None, now_ms=0)
        writev_calls.clear()
        await _sends(alice, cid, 3)
        events = [await bob.expect("message") for _ in range(3)]
        assert [e["message"]["seq"] for e in events] == [1, 2, 3]
        own = [await alice.recv() for _ in range(6)]
        assert sorted(f["type"] for f in own) == ["ack"] * 3 + ["message"] * 3
        assert sorted(writev_calls) == [3, 6]


@pytest.mark.requirement("HOOMI-DELIVER-1")
async def test_fan_out_delivers_every_frame_to_every_member_in_order(
    tmp_path: pathlib.Path, tls: bool
) -> None:
    # On TCP a commit's report is corked and written with writev; over TLS every write is
    # queued (no raw fd, no Cork) and the writer sends what piled up in one go. Either way
    # each member gets every message in order and the sender every ack.
    async with running_server(tmp_path, tls=tls) as hoomi:
        members = ["alice", "bob", "carol"]
        group = await hoomi.server.create_conversation(kind="group", members=members)
        alice, bob, carol = [await hoomi.connect(user) for user in members]
        for client in (alice, alice, bob):  # bob came online, then carol
            await client.expect("presence")
        count = 20
        await _sends(alice, group.conversation_id, count)
        frames = [await alice.recv() for _ in range(2 * count)]
        acks = [f["id"] for f in frames if f["type"] == "ack"]
        assert acks == [f"s{n}" for n in range(count)]
        for client in (alice, bob, carol):
            got = frames if client is alice else [await client.recv() for _ in range(count)]
            events = [f for f in got if f["type"] != "ack"]
            assert [(e["type"], e["message"]["seq"], e["message"]["text"]) for e in events] == [
                ("message", n + 1, f"m{n}") for n in range(count)
            ]


async def _sends(client: Client, cid: str, count: int) -> None:
    """`count` sends to `cid` (ids s0.., client_msg_ids k0.., texts m0..), none awaited."""
    for i in range(count):
        await client.send(
            {
                "type": "send",
                "id": f"s{i}",
                "conversation_id": cid,
                "client_msg_id": f"k{i}",
                "text": f"m{i}",
            }
        )


async def test_a_chat_fails_nowhere_silently_and_counts_what_it_stored(
    tmp_path: pathlib.Path,
) -> None:
    # The store catches what `on_commit` raises (the rest of the batch must go out): only
    # the log (the error net of conftest fails any test it hears an ERROR in) and the
    # counters show such a bug.
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        for n in range(3):
            ack = await alice.request(
                "send", conversation_id=cid, client_msg_id=f"k{n}", text=f"m{n}"
            )
            assert (ack["type"], ack["seq"]) == ("ack", n + 1)
            got = await bob.expect("message")
            assert got["message"]["seq"] == n + 1
        metrics = hoomi.server.metrics
        assert (metrics.messages_stored, metrics.deliveries) == (3, 6)  # each to both members


@pytest.mark.requirement("HOOMI-CONV-2", "HOOMI-CONV-3")
async def test_a_removed_member_hears_conversation_left_and_nothing_after(
    tmp_path: pathlib.Path,
) -> None:
    # HOOMI-CONV-3, with bob connected all along.
    async with running_server(tmp_path) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["alice", "bob"])
        cid = group.conversation_id
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        await alice.expect("presence")
        await hoomi.server.remove_member(cid, "bob")
        assert await bob.recv() == {"type": "conversation_left", "conversation_id": cid}
        ack = await alice.request("send", conversation_id=cid, client_msg_id="k", text="bob left")
        assert ack["type"] == "ack"
        await bob.silent(0.3)
        refused = await bob.request("history", conversation_id=cid)
        assert (refused["type"], refused["code"]) == ("error", "forbidden")


async def one_batch(
    hoomi: Running, lead: Callable[[], Awaitable[object]], *writes: Callable[[], Awaitable[object]]
) -> None:
    """Run `lead` (committed on its own, first), then `writes`, which commit together in
    this order. Another connection holds SQLite's write lock meanwhile: the writer thread
    takes the lead's write and waits for the lock, and the writes queue behind it."""
    store = hoomi.store
    commits = store.commits
    holder = sqlite3.connect(hoomi.server.settings.database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lead)
            await trio.testing.wait_all_tasks_blocked()  # the lead's write is queued
            await eventually(lambda: not store._queue)  # and taken
            for write in writes:
                nursery.start_soon(write)
                await trio.testing.wait_all_tasks_blocked()  # queued, in this order
            assert len(store._queue) == len(writes)
            holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert store.commits == commits + 2, "the writes did not share one commit"


@pytest.mark.requirement("HOOMI-CONV-3")
async def test_a_member_removed_in_the_batch_of_a_message_does_not_get_it(
    tmp_path: pathlib.Path,
) -> None:
    # One commit holds bob's removal, then a message: the message is published before
    # `remove_member` resumes, and must not reach bob all the same (HOOMI-CONV-3).
    async with running_server(tmp_path) as hoomi:
        server = hoomi.server
        other = await server.create_conversation(kind="group", members=["alice", "bob"])
        group = await server.create_conversation(kind="group", members=["alice", "bob"])
        cid = group.conversation_id
        bob = await hoomi.connect("bob")
        await one_batch(
            hoomi,
            partial(server.post, other.conversation_id, "before"),
            partial(server.remove_member, cid, "bob"),
            partial(server.post, cid, "after bob left"),
        )
        got = await bob.expect("message")
        assert (got["message"]["conversation_id"], got["message"]["text"]) == (
            other.conversation_id,
            "before",
        )
        assert await bob.recv() == {"type": "conversation_left", "conversation_id": cid}
        await server.post(other.conversation_id, "later")
        got = await bob.recv()  # the next frame: nothing of the group came before it
        assert (got["type"], got["message"]["text"]) == ("message", "later")


@pytest.mark.requirement("HOOMI-CONV-3")
async def test_a_member_added_in_the_batch_of_a_message_learns_of_it_from_latest_seq(
    tmp_path: pathlib.Path,
) -> None:
    # One commit holds bob's addition, then a message: the message is published before
    # `add_member` resumes, when bob is not subscribed yet, so `conversation_joined` must
    # announce it in latest_seq (it is never delivered to him).
    async with running_server(tmp_path) as hoomi:
        server = hoomi.server
        other = await server.create_conversation(kind="group", members=["alice", "bob"])
        group = await server.create_conversation(kind="group", members=["alice"])
        cid = group.conversation_id
        bob = await hoomi.connect("bob")
        await one_batch(
            hoomi,
            partial(server.post, other.conversation_id, "x"),
            partial(server.add_member, cid, "bob"),
            partial(server.post, cid, "hello bob"),
        )
        got = await bob.expect("message")
        assert (got["message"]["conversation_id"], got["message"]["text"]) == (
            other.conversation_id,
            "x",
        )
        joined = (await bob.expect("conversation_joined"))["conversation"]
        assert (joined["conversation_id"], joined["latest_seq"]) == (cid, 1)
        await server.post(cid, "next")
        got = await bob.expect("message")  # not seq 1: that one is announced, not delivered
        assert (got["message"]["conversation_id"], got["message"]["seq"]) == (cid, 2)


@pytest.mark.requirement("HOOMI-CONV-3")
async def test_a_member_removed_while_a_hello_reads_the_store_is_not_welcomed_to_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # eve's hello reads her conversations; eve is removed from the group before the read
    # returns: her welcome must not list it, and nothing of it reaches her.
    async with running_server(tmp_path) as hoomi:
        server = hoomi.server
        group = await server.create_conversation(kind="group", members=["alice", "eve"])
        cid = group.conversation_id
        real = server.store.conversations_of
        reads: list[str] = []
        read, removed = trio.Event(), trio.Event()

        async def held(user_id: str) -> list[MemberView]:
            views = await real(user_id)
            reads.append(user_id)
            if len(reads) == 1:  # the first read answered, the hello not yet resumed
                read.set()
                await removed.wait()
            return views

        monkeypatch.setattr(server.store, "conversations_of", held)

        async def remove_during_the_read() -> None:
            await read.wait()
            await server.remove_member(cid, "eve")
            removed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(remove_during_the_read)
            eve = await hoomi.connect("eve")
        monkeypatch.undo()
        assert reads == ["eve", "eve"]  # the stale read was noticed and read again
        assert eve.welcome["conversations"] == []
        alice = await hoomi.connect("alice")
        ack = await alice.request("send", conversation_id=cid, client_msg_id="k", text="eve left")
        assert ack["type"] == "ack"  # fanned out before it was acked
        # The next frame eve gets is the answer to this: no message of the group came first.
        await eve.send({"type": "history", "id": "q", "conversation_id": cid})
        refused = await eve.expect("error", skip=("presence",))
        assert (refused["id"], refused["code"]) == ("q", "forbidden")
