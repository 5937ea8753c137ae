"""Memory that stays bounded. The collector policy (ADR 7): sessions leave no reference
cycles, so freezing what a full collection found alive cannot leak a finished session. The
server's own maps: last_seen keeps the newest LAST_SEEN_MAX users, published seqs are
forgotten once no hello can need them."""

from __future__ import annotations

import gc
import pathlib
from collections.abc import Iterator

import orjson
import pytest
import trio
import trio.testing

from harness import RawClient, mint, running_server
from hoomi.cli.serve import tune_gc
from hoomi.server import server as server_module


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_finished_sessions_leave_no_reference_cycles(
    tmp_path: pathlib.Path, collector_off: None
) -> None:
    async with running_server(tmp_path) as hoomi:
        group = await hoomi.store.create_conversation(
            kind="group", members=["u0", "u1"], title=None, now_ms=0
        )
        port = hoomi.server.ports[0]

        async def session(i: int) -> None:
            client = await RawClient.open(port)
            ending = i % 4
            token = mint(f"u{i % 2}") if ending != 3 else mint("u0", secret="x" * 40)
            await client.hello(token, welcome=ending != 3)
            if ending == 3:  # a refused token ends the session from the server's side
                assert await client.close_code() == 4001
                await client.aclose()
                return
            send = {
                "type": "send",
                "id": "s",
                "conversation_id": group.conversation_id,
                "client_msg_id": f"k{i}",
                "text": "hi",
            }
            await client.send_frame(1, orjson.dumps(send))
            while b'"ack"' not in (await client.next_frame())[1]:
                pass
            if ending == 1:  # says goodbye
                await client.send_frame(8, (1000).to_bytes(2, "big"))
                assert await client.close_code() == 1000
            elif ending == 2:  # breaks the protocol: a binary frame
                await client.send_frame(2, b"\x00")
                assert await client.close_code() == 1003
            await client.aclose()  # ending 0: just vanishes

        for i in range(4):  # one of each first: one-time caches are not per-session garbage
            await session(i)
        await trio.testing.wait_all_tasks_blocked(0.05)
        gc.collect()
        for i in range(4, 44):
            await session(i)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert not hoomi.server.sessions
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to look at it
        gc.collect()
        kinds = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage})
        assert kinds == []
        page = await hoomi.store.history(group.conversation_id, limit=100)
        assert len(page.messages) == 33  # the sessions really did their work


def test_tune_gc_freezes_what_a_full_collection_keeps() -> None:
    thresholds = gc.get_threshold()
    try:
        gc.unfreeze()
        tune_gc()
        assert gc.get_freeze_count() > 0  # what start-up left alive is frozen at once
        tune_gc()  # idempotent: one callback
        assert gc.callbacks.count(gc.callbacks[-1]) == 1
        assert gc.get_threshold() == (20_000, 20, 20)
        frozen = gc.get_freeze_count()
        kept: list[list[int]] = [[] for _ in range(100)]  # noqa: F841 - tracked, alive through the collection
        gc.collect()
        assert gc.get_freeze_count() >= frozen + 100
        assert gc.get_count()[2] == 0
    finally:
        gc.unfreeze()
        gc.callbacks[:] = [cb for cb in gc.callbacks if cb.__module__ != "hoomi.cli.serve"]
        gc.set_threshold(*thresholds)


async def test_last_seen_forgets_the_user_gone_longest_beyond_its_bound(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "LAST_SEEN_MAX", 2)
    async with running_server(tmp_path) as hoomi:
        members = ["watcher", "u1", "u2", "u3"]
        await hoomi.server.create_conversation(kind="group", members=members)
        watcher = await hoomi.connect("watcher")
        seen: dict[str, int] = {}
        for user in ("u1", "u2", "u1", "u3"):  # u1 leaves again: newer than u2 now
            client = await hoomi.connect(user)
            assert (await watcher.expect("presence"))["status"] == "online"
            await client.aclose()
            offline = await watcher.expect("presence")
            assert (offline["user_id"], offline["status"]) == (user, "offline")
            seen[user] = offline["last_seen"]
        query = await watcher.request("presence_query", user_ids=["u1", "u2", "u3"])
        assert query["users"] == [
            {"user_id": "u1", "status": "offline", "last_seen": seen["u1"]},
            {"user_id": "u2", "status": "offline"},  # forgotten: no last_seen, nothing wrong
            {"user_id": "u3", "status": "offline", "last_seen": seen["u3"]},
        ]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jumps after 10 ms of real idleness only: the store's threads do not make time leap.
    return trio.testing.MockClock(autojump_threshold=0.01)


async def test_a_published_seq_is_forgotten_after_the_hello_deadline_and_nothing_breaks(
    tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    async with running_server(tmp_path, hello_timeout_ms=10_000) as hoomi:
        server = hoomi.server
        group = await server.create_conversation(kind="group", members=["alice", "bob"])
        cid = group.conversation_id
        alice = await hoomi.connect("alice")
        await alice.request("send", conversation_id=cid, client_msg_id="k1", text="one")
        await trio.sleep(5)  # younger than the hello deadline: a hello may still need it
        assert server.published_seq[cid][0] == 1
        await trio.sleep(7)  # older than it, plus the scheduler's tick
        assert cid not in server.published_seq
        bob = await hoomi.connect("bob")  # the seq comes from the store now
        assert bob.welcome["conversations"][0]["latest_seq"] == 1
        ack = await alice.request("send", conversation_id=cid, client_msg_id="k2", text="two")
        assert ack["seq"] == 2
        message = (await bob.expect("message", skip=("presence",)))["message"]
        assert (message["seq"], message["text"]) == (2, "two")
