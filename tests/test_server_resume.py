"""Resume and restart: nothing acked is ever lost, nothing is delivered twice."""

from __future__ import annotations

import pathlib
import signal
from typing import Any

import pytest
import trio

from harness import Client, hello_frame, mint, running_server, serve_process
from hoomi.server.store import Page


@pytest.mark.requirement("HOOMI-RESUME-2", "HOOMI-DELIVER-2")
async def test_a_reconnecting_client_gets_exactly_what_it_missed_then_live(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, rate_burst=100) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        for i in range(3):
            await bob.request("send", conversation_id=cid, client_msg_id=f"a{i}", text=f"m{i}")
        seen = [
            (await alice.expect("message", skip=("presence",)))["message"]["seq"] for _ in range(3)
        ]
        assert seen == [1, 2, 3]
        await alice.ws._stream.aclose()  # killed mid-conversation: no close frame

        # Bob keeps talking while alice is away and while she comes back.
        sent: list[int] = []

        async def chatter() -> None:
            for i in range(40):
                ack = await bob.request(
                    "send", conversation_id=cid, client_msg_id=f"b{i}", text=f"n{i}"
                )
                sent.append(ack["seq"])
                await trio.sleep(0.002)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(chatter)
            await trio.sleep(0.03)
            back = await hoomi.connect("alice", resume=[{"conversation_id": cid, "after_seq": 3}])
            got: list[int] = []
            while len(got) < 40:
                frame = await back.expect("message", skip=("presence",))
                got.append(frame["message"]["seq"])
        assert sent == list(range(4, 44))
        assert got == sent, "replay then live: every missed seq once, in order"
        await back.silent(0.1)


@pytest.mark.requirement("HOOMI-RESUME-3", "HOOMI-HISTORY-1", "HOOMI-HISTORY-3")
async def test_a_gap_larger_than_the_replay_bound_is_said_explicitly(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, replay_max=5) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        for i in range(8):
            await hoomi.server.post(cid, f"notice {i}")
        alice = await hoomi.connect("alice", resume=[{"conversation_id": cid, "after_seq": 2}])
        gap = await alice.expect("resume_gap")
        assert (gap["after_seq"], gap["latest_seq"]) == (2, 8)
        await alice.silent(0.1)  # never a partial replay
        page = await alice.request("history", conversation_id=cid, after_seq=2)
        assert [m["seq"] for m in page["messages"]] == [3, 4, 5, 6, 7, 8]
        assert page["has_more"] is False


@pytest.mark.requirement("HOOMI-SEND-3")
async def test_an_idempotent_retry_returns_the_original_ack_and_delivers_once(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        first = await alice.request("send", conversation_id=cid, client_msg_id="same", text="hi")
        again = await alice.request("send", conversation_id=cid, client_msg_id="same", text="hi")
        keys = ("message_id", "seq", "sent_at", "client_msg_id")
        assert [first[k] for k in keys] == [again[k] for k in keys]
        assert (await bob.expect("message", skip=("presence",)))["message"]["seq"] == 1
        await bob.silent(0.1)


@pytest.mark.requirement("HOOMI-SEND-1", "HOOMI-CLOSE-2", "HOOMI-RESUME-2")
async def test_sigterm_restart_keeps_every_acked_message(tmp_path: pathlib.Path) -> None:
    database = tmp_path / "restart.db"
    # Seed a conversation through the store, as the backend would.
    from hoomi.server.sqlite_store import SqliteStore

    store = SqliteStore(database)
    await store.open()
    dm = await store.create_conversation(
        kind="direct", members=["alice", "bob"], title=None, now_ms=0
    )
    await store.aclose()
    cid = dm.conversation_id

    async with serve_process(database) as first:
        async with trio.open_nursery() as nursery:
            bob = await Client.open(nursery, first.url)
            await bob.hello(mint("bob"))
            acked = [
                (
                    await bob.request(
                        "send", conversation_id=cid, client_msg_id=f"k{i}", text=f"t{i}"
                    )
                )["seq"]
                for i in range(25)
            ]
            first.process.send_signal(signal.SIGTERM)
            assert await bob.closed() == 1001  # going away: reconnect elsewhere
            await bob.aclose()
        assert await first.wait() == 0
    assert acked == list(range(1, 26))

    async with serve_process(database) as second:
        async with trio.open_nursery() as nursery:
            alice = await Client.open(nursery, second.url)
            welcome = await alice.hello(
                mint("alice"), resume=[{"conversation_id": cid, "after_seq": 0}]
            )
            assert welcome["conversations"][0]["latest_seq"] == 25
            replayed = [(await alice.expect("message"))["message"]["seq"] for _ in range(25)]
            assert replayed == acked
            await alice.aclose()
        second.process.send_signal(signal.SIGINT)
        assert await second.wait() == 0


async def test_a_long_replay_does_not_close_a_client_that_reads(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, outbox_size=64) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["alice"])
        cid = group.conversation_id
        async with trio.open_nursery() as nursery:
            for _ in range(600):
                nursery.start_soon(hoomi.server.post, cid, "y" * 3000)
        alice = await hoomi.connect("alice", resume=[{"conversation_id": cid, "after_seq": 0}])
        seqs = [(await alice.expect("message"))["message"]["seq"] for _ in range(600)]
        assert seqs == list(range(1, 601))


@pytest.mark.requirement("HOOMI-RESUME-2", "HOOMI-DELIVER-3")
@pytest.mark.parametrize("live", [4, 5])
async def test_live_messages_held_during_a_replay_are_bounded_by_the_outbox(
    tmp_path: pathlib.Path, live: int
) -> None:
    # While a replay reads the store, live messages of its conversation are held, to follow
    # it in order: at most outbox_size of them (4 here); one more is a slow consumer (4005).
    async with running_server(tmp_path, outbox_size=4) as hoomi:
        server = hoomi.server
        group = await server.create_conversation(kind="group", members=["alice"])
        cid = group.conversation_id
        await server.post(cid, "missed")
        reading, release = trio.Event(), trio.Event()
        history = server.store.history

        async def held_up(conversation_id: str, **page: Any) -> Page:
            reading.set()
            await release.wait()
            return await history(conversation_id, **page)

        server.store.history = held_up  # type: ignore[method-assign]
        alice = await hoomi.connect()
        await alice.send(
            hello_frame(mint("alice"), resume=[{"conversation_id": cid, "after_seq": 0}])
        )
        assert (await alice.expect("welcome"))["conversations"][0]["latest_seq"] == 1
        await reading.wait()
        for i in range(live):
            await server.post(cid, f"live {i}")  # returns once fanned out: held
        if live == 5:
            assert await alice.closed() == 4005
            release.set()
            return
        release.set()
        seqs = [(await alice.expect("message"))["message"]["seq"] for _ in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert (await alice.request("ping"))["type"] == "pong"
