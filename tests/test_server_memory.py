"""The collector policy (ADR 7): sessions leave no reference cycles, so freezing what a full
collection found alive cannot leak a finished session."""

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
            hello = {"type": "hello", "id": "h", "token": mint(f"u{i % 2}")}
            await client.send_frame(1, orjson.dumps(hello))
            assert b'"welcome"' in (await client.next_frame())[1]
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
            if i % 2:  # half say goodbye, half vanish
                await client.send_frame(8, (1000).to_bytes(2, "big"))
                assert await client.close_code() == 1000
            await client.aclose()

        for i in range(40):
            await session(i)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert not hoomi.server.sessions
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to look at it
        gc.collect()
        ours = {type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("hoomi")}
        assert ours == set()
        page = await hoomi.store.history(group.conversation_id, limit=100)
        assert len(page.messages) == 40  # the sessions really did their work


def test_tune_gc_freezes_what_a_full_collection_keeps() -> None:
    thresholds = gc.get_threshold()
    try:
        tune_gc()
        tune_gc()  # idempotent: one callback
        assert gc.callbacks.count(gc.callbacks[-1]) == 1
        assert gc.get_threshold() == (20_000, 20, 20)
        kept = [object()]  # noqa: F841 - alive through the collection
        gc.collect()
        assert gc.get_freeze_count() > 0
        assert gc.get_count()[2] == 0
    finally:
        gc.unfreeze()
        gc.callbacks[:] = [cb for cb in gc.callbacks if cb.__module__ != "hoomi.cli.serve"]
        gc.set_threshold(*thresholds)
