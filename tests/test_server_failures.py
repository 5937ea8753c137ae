"""Failures inside the server stay inside one request or one connection."""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

import pytest

from harness import hello_frame, mint, running_server
from hoomi.server.store import MemberView


class Boom(RuntimeError):
    pass


@pytest.mark.expect_errors(request_failed=Boom)
@pytest.mark.requirement("HOOMI-ERR-3")
async def test_a_failing_request_gets_internal_and_the_connection_stays(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="group", members=["alice", "bob"])

        async def broken_history(*args: Any, **kwargs: Any) -> Any:
            raise Boom("disk on fire")

        hoomi.store.history = broken_history  # type: ignore[method-assign]
        alice = await hoomi.connect("alice")
        reply = await alice.request("history", conversation_id=dm.conversation_id)
        assert (reply["type"], reply["code"]) == ("error", "internal")
        assert (await alice.request("ping"))["type"] == "pong"


@pytest.mark.expect_errors(session_failed=Boom)
@pytest.mark.requirement("HOOMI-ERR-3")
async def test_a_failing_connection_closes_with_1011_and_others_go_on(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="group", members=["alice", "bob"])
        bob = await hoomi.connect("bob")
        real = hoomi.store.conversations_of

        async def fails_for_alice(user_id: str) -> list[MemberView]:
            if user_id == "alice":
                raise Boom("cannot load alice")
            return await real(user_id)

        hoomi.store.conversations_of = fails_for_alice  # type: ignore[method-assign]
        alice = await hoomi.connect()
        await alice.send(hello_frame(mint("alice")))
        assert await alice.closed() == 1011
        ack = await bob.request(
            "send", conversation_id=dm.conversation_id, client_msg_id="k", text="x"
        )
        assert ack["type"] == "ack"
        await hoomi.still_serving()


async def test_unreachable_storage_is_unavailable_with_retry_after(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="group", members=["alice"])
        alice = await hoomi.connect("alice")
        await hoomi.store.aclose()  # the database goes away under a live server
        reply = await alice.request(
            "send", conversation_id=dm.conversation_id, client_msg_id="k", text="hello?"
        )
        assert (reply["type"], reply["code"]) == ("error", "unavailable")
        assert reply["retry_after_ms"] > 0
        assert (await alice.request("ping"))["type"] == "pong"


async def test_a_send_refused_by_storage_gets_its_error_after_the_commit(
    tmp_path: pathlib.Path,
) -> None:
    # Removed in the store behind the server's back, alice's session still lists the group:
    # the store decides `forbidden` in the writer thread, and the error reaches her in the
    # ack's place; her next send (in the same batch or the next) is not affected.
    async with running_server(tmp_path) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["alice", "bob"])
        other = await hoomi.server.create_conversation(kind="group", members=["alice"])
        alice = await hoomi.connect("alice")
        await hoomi.store.remove_member(group.conversation_id, "alice")
        for rid, cid in (("refused", group.conversation_id), ("kept", other.conversation_id)):
            await alice.send(
                {
                    "type": "send",
                    "id": rid,
                    "conversation_id": cid,
                    "client_msg_id": rid,
                    "text": "x",
                }
            )
        refused = await alice.expect("error", skip=("message",))
        assert (refused["id"], refused["code"]) == ("refused", "forbidden")
        kept = await alice.expect("ack", skip=("message",))
        assert (kept["id"], kept["seq"]) == ("kept", 1)


class CommitFails:
    """The store's writer connection, but every COMMIT fails as a full disk would."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_a_failed_commit_delivers_nothing_and_acks_nothing(tmp_path: pathlib.Path) -> None:
    # Durable before delivered: a message whose COMMIT failed reaches no one, its sender
    # gets `unavailable`, and it never existed (the next one takes its seq).
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        await alice.expect("presence")
        writer = hoomi.store._writer
        assert writer is not None
        hoomi.store._writer = CommitFails(writer)  # type: ignore[assignment]
        refused = await alice.request("send", conversation_id=cid, client_msg_id="a", text="lost")
        assert (refused["type"], refused["code"]) == ("error", "unavailable")
        await bob.silent(0.3)
        await alice.silent(0.1)
        hoomi.store._writer = writer
        ack = await alice.request("send", conversation_id=cid, client_msg_id="b", text="kept")
        assert (ack["type"], ack["seq"]) == ("ack", 1)
        got = await bob.expect("message")
        assert (got["message"]["seq"], got["message"]["text"]) == (1, "kept")
