"""SqliteStore against real database files: semantics of `Store`, durability, group commit."""

from __future__ import annotations

import pathlib
import re
import sqlite3
import time
import types
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Literal

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from outcome import Outcome

from harness import eventually
from hoomi.protocol.messages import ChatMessage
from hoomi.server import sqlite_store
from hoomi.server.sqlite_store import _MIGRATIONS, SCHEMA_VERSION, SqliteStore, _new_id
from hoomi.server.store import (
    Appended,
    ConversationInfo,
    ConversationNotFound,
    InvalidConversation,
    NotAMember,
    Store,
    StoreUnavailable,
)

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "hoomi.db")
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def windowed(tmp_path: pathlib.Path) -> AsyncIterator[SqliteStore]:
    """A store whose commit window is a whole second."""
    s = SqliteStore(tmp_path / "w.db", commit_window_ms=1000)
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


async def group(store: SqliteStore, *members: str) -> ConversationInfo:
    return await store.create_conversation(kind="group", members=members, title="g", now_ms=1)


async def send(
    store: SqliteStore,
    cid: str,
    sender: str,
    text: str = "hi",
    cmid: str | None = None,
    kind: Literal["user", "system"] = "user",
) -> Appended:
    return await store.append(
        conversation_id=cid,
        sender_id=sender,
        client_msg_id=cmid,
        text=text,
        kind=kind,
        now_ms=1000,
    )


async def append_soon(
    store: SqliteStore, cid: str, cmid: str, done: Callable[[Outcome[Appended]], None]
) -> None:
    await store.append_soon(
        conversation_id=cid,
        sender_id="alice",
        client_msg_id=cmid,
        text="hi",
        kind="user",
        now_ms=1000,
        done=done,
    )


def test_satisfies_the_store_protocol(tmp_path: pathlib.Path) -> None:
    store: Store = SqliteStore(tmp_path / "x.db")  # mypy checks the structural match
    assert store is not None


# -- conversations --------------------------------------------------------------------------


async def test_direct_is_one_per_pair(store: SqliteStore) -> None:
    a = await store.create_conversation(
        kind="direct", members=["bob", "alice"], title=None, now_ms=5
    )
    assert CONVERSATION_ID.match(a.conversation_id)
    assert (a.kind, a.members, a.latest_seq, a.created_at) == ("direct", ("alice", "bob"), 0, 5)
    again = await store.create_conversation(
        kind="direct", members=["alice", "bob"], title="x", now_ms=9
    )
    assert again == a
    other = await store.create_conversation(
        kind="direct", members=["alice", "carol"], title=None, now_ms=5
    )
    assert other.conversation_id != a.conversation_id


@pytest.mark.parametrize("members", [[], ["alice"], ["alice", "alice"], ["a", "b", "c"]])
async def test_direct_needs_two_distinct_members(store: SqliteStore, members: list[str]) -> None:
    with pytest.raises(InvalidConversation):
        await store.create_conversation(kind="direct", members=members, title=None, now_ms=1)


async def test_group_create_and_membership(store: SqliteStore) -> None:
    with pytest.raises(InvalidConversation):
        await group(store)
    g = await group(store, "carol", "alice", "alice")
    assert (g.kind, g.members, g.title) == ("group", ("alice", "carol"), "g")
    assert await store.conversation(g.conversation_id) == g
    added = await store.add_member(g.conversation_id, "bob")
    assert added.members == ("alice", "bob", "carol")
    assert await store.add_member(g.conversation_id, "bob") == added  # no-op
    removed = await store.remove_member(g.conversation_id, "alice")
    assert removed.members == ("bob", "carol")
    assert await store.remove_member(g.conversation_id, "alice") == removed  # no-op
    with pytest.raises(ConversationNotFound):
        await store.conversation("c_nope")
    with pytest.raises(ConversationNotFound):
        await store.add_member("c_nope", "bob")
    with pytest.raises(ConversationNotFound):
        await store.remove_member("c_nope", "bob")


async def test_direct_refuses_membership_changes(store: SqliteStore) -> None:
    d = await store.create_conversation(kind="direct", members=["a", "b"], title=None, now_ms=1)
    assert await store.add_member(d.conversation_id, "a") == d  # already a member: no-op
    with pytest.raises(InvalidConversation):
        await store.add_member(d.conversation_id, "c")
    with pytest.raises(InvalidConversation):
        await store.remove_member(d.conversation_id, "a")
    assert await store.conversation(d.conversation_id) == d


async def test_list_conversations_pages_by_id(store: SqliteStore) -> None:
    made = sorted([(await group(store, f"u{i}", "x")).conversation_id for i in range(5)])
    first = await store.list_conversations(limit=2, after=None)
    assert [c.conversation_id for c in first] == made[:2]
    rest = await store.list_conversations(limit=10, after=made[1])
    assert [c.conversation_id for c in rest] == made[2:]
    assert all(len(c.members) == 2 and "x" in c.members for c in first + rest)
    assert await store.list_conversations(limit=10, after=made[-1]) == []


async def test_conversations_of_counts_unread(store: SqliteStore) -> None:
    g = await group(store, "alice", "bob")
    d = await store.create_conversation(
        kind="direct", members=["alice", "carol"], title=None, now_ms=1
    )
    await group(store, "bob")  # not alice's
    for sender in ["alice", "bob", "bob", "alice", "bob"]:
        await send(store, g.conversation_id, sender)
    await send(store, d.conversation_id, "carol")
    await store.mark_read(g.conversation_id, "alice", 2)
    views = {v.info.conversation_id: v for v in await store.conversations_of("alice")}
    assert set(views) == {g.conversation_id, d.conversation_id}
    gv = views[g.conversation_id]
    assert (gv.info.latest_seq, gv.read_seq, gv.unread) == (5, 2, 2)  # seqs 3 and 5 (bob's)
    assert gv.info.members == ("alice", "bob")
    dv = views[d.conversation_id]
    assert (dv.info.latest_seq, dv.read_seq, dv.unread) == (1, 0, 1)
    bob = {v.info.conversation_id: v for v in await store.conversations_of("bob")}
    assert bob[g.conversation_id].unread == 2  # alice's seqs 1 and 4
    assert await store.conversations_of("nobody") == []


async def test_shared_contacts(store: SqliteStore) -> None:
    await group(store, "alice", "bob", "carol")
    await store.create_conversation(kind="direct", members=["alice", "dave"], title=None, now_ms=1)
    await group(store, "erin", "bob")
    await group(store, "alice")
    assert await store.shared_contacts("alice") == {"bob", "carol", "dave"}
    assert await store.shared_contacts("erin") == {"bob"}
    assert await store.shared_contacts("nobody") == set()


# -- ids ------------------------------------------------------------------------------------


def test_ids_are_unique_and_in_time_order() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [_new_id("m_") for _ in range(10_000)]  # many within one millisecond
    after_ms = time.time_ns() // 1_000_000
    assert ids == sorted(set(ids))
    assert all(CONVERSATION_ID.match(i) and len(i) == 22 for i in ids)
    # The top 44 bits are the millisecond the id was made.
    assert before_ms <= int(ids[0][2:13], 16) <= int(ids[-1][2:13], 16) <= after_ms


def test_ids_keep_rising_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now_ns = time.time_ns()
    clock = iter([now_ns, now_ns - 3_600 * 10**9, now_ns - 3_600 * 10**9, now_ns + 10**6])
    monkeypatch.setattr(sqlite_store, "time", types.SimpleNamespace(time_ns=lambda: next(clock)))
    ids = [_new_id("c_") for _ in range(4)]
    assert ids == sorted(set(ids))
    assert int(ids[3][2:13], 16) == now_ns // 1_000_000 + 1  # back on the clock


async def test_later_conversations_and_messages_get_higher_ids(store: SqliteStore) -> None:
    first = await group(store, "alice")
    second = await group(store, "alice")
    assert first.conversation_id < second.conversation_id
    a = await send(store, second.conversation_id, "alice", text="a")
    b = await send(store, first.conversation_id, "alice", text="b")
    assert a.message.message_id < b.message.message_id


# -- messages -------------------------------------------------------------------------------


async def test_append_assigns_gap_free_seqs(store: SqliteStore) -> None:
    g = await group(store, "alice", "bob")
    results = [await send(store, g.conversation_id, "alice", text=f"m{i}") for i in range(5)]
    assert [r.message.seq for r in results] == [1, 2, 3, 4, 5]
    assert not any(r.duplicate for r in results)
    first = results[0].message
    assert (first.text, first.sender_id, first.kind, first.sent_at) == ("m0", "alice", "user", 1000)
    assert CONVERSATION_ID.match(first.message_id)
    ids = [r.message.message_id for r in results]
    assert ids == sorted(set(ids))  # unique, in the order stored
    assert (await store.conversation(g.conversation_id)).latest_seq == 5


async def test_idempotent_retry(store: SqliteStore) -> None:
    g = await group(store, "alice", "bob")
    first = await send(store, g.conversation_id, "alice", text="hello", cmid="k1")
    retry = await store.append(
        conversation_id=g.conversation_id,
        sender_id="alice",
        client_msg_id="k1",
        text="different text",
        kind="user",
        now_ms=99999,
    )
    assert retry == Appended(message=first.message, duplicate=True)
    # The same key from another sender is another message.
    other = await send(store, g.conversation_id, "bob", cmid="k1")
    assert (other.duplicate, other.message.seq) == (False, 2)
    page = await store.history(g.conversation_id, limit=10)
    assert [m.seq for m in page.messages] == [1, 2]


async def test_append_errors(store: SqliteStore) -> None:
    g = await group(store, "alice")
    with pytest.raises(NotAMember):
        await send(store, g.conversation_id, "mallory")
    with pytest.raises(ConversationNotFound):
        await send(store, "c_nope", "alice")
    assert (await store.conversation(g.conversation_id)).latest_seq == 0
    assert (await send(store, g.conversation_id, "alice")).message.seq == 1


async def test_system_messages_skip_membership_and_do_not_collide(store: SqliteStore) -> None:
    g = await group(store, "alice")
    one = await send(store, g.conversation_id, "backend", kind="system")
    two = await send(store, g.conversation_id, "backend", kind="system")
    assert [one.message.seq, two.message.seq] == [1, 2]
    assert (one.message.kind, one.message.client_msg_id, two.duplicate) == ("system", None, False)


async def test_history_paging(store: SqliteStore) -> None:
    g = await group(store, "alice")
    cid = g.conversation_id
    empty = await store.history(cid, limit=5)
    assert (empty.messages, empty.has_more) == ((), False)
    for i in range(10):
        await send(store, cid, "alice", text=str(i + 1))

    async def seqs(**kw: int) -> tuple[list[int], bool]:
        page = await store.history(cid, **kw)
        assert [m.text for m in page.messages] == [str(m.seq) for m in page.messages]
        return [m.seq for m in page.messages], page.has_more

    assert await seqs(limit=3) == ([8, 9, 10], True)
    assert await seqs(limit=10) == (list(range(1, 11)), False)
    assert await seqs(limit=20) == (list(range(1, 11)), False)
    assert await seqs(before_seq=8, limit=3) == ([5, 6, 7], True)
    assert await seqs(before_seq=4, limit=3) == ([1, 2, 3], False)
    assert await seqs(before_seq=3, limit=3) == ([1, 2], False)
    assert await seqs(before_seq=1, limit=3) == ([], False)
    assert await seqs(after_seq=0, limit=3) == ([1, 2, 3], True)
    assert await seqs(after_seq=7, limit=3) == ([8, 9, 10], False)
    assert await seqs(after_seq=6, limit=3) == ([7, 8, 9], True)
    assert await seqs(after_seq=10, limit=3) == ([], False)
    with pytest.raises(ConversationNotFound):
        await store.history("c_nope", limit=3)
    with pytest.raises(ValueError, match="not both"):
        await store.history(cid, before_seq=5, after_seq=1, limit=3)


async def test_mark_read_forward_only_and_clamped(store: SqliteStore) -> None:
    g = await group(store, "alice", "bob")
    cid = g.conversation_id
    assert await store.mark_read(cid, "alice", 3) == (0, False)  # nothing to read yet
    for _ in range(5):
        await send(store, cid, "bob")
    assert await store.mark_read(cid, "alice", 3) == (3, True)
    assert await store.mark_read(cid, "alice", 2) == (3, False)
    assert await store.mark_read(cid, "alice", 3) == (3, False)
    assert await store.mark_read(cid, "alice", 99) == (5, True)
    assert await store.mark_read(cid, "alice", 99) == (5, False)
    with pytest.raises(NotAMember):
        await store.mark_read(cid, "mallory", 1)
    with pytest.raises(ConversationNotFound):
        await store.mark_read("c_nope", "alice", 1)
    # Removal forgets the marker; a (re)joining member starts with nothing unread.
    await store.remove_member(cid, "alice")
    await send(store, cid, "bob")
    await store.add_member(cid, "alice")
    views = await store.conversations_of("alice")
    assert (views[0].read_seq, views[0].unread) == (6, 0)


# -- lifecycle, durability, group commit ------------------------------------------------------


async def test_durable_across_reopen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "durable.db"
    first = SqliteStore(path)
    await first.open()
    g = await group(first, "alice", "bob")
    sent = [await send(first, g.conversation_id, "alice", cmid=f"k{i}") for i in range(20)]
    await first.mark_read(g.conversation_id, "bob", 7)
    await first.aclose()
    await first.aclose()  # idempotent
    with pytest.raises(StoreUnavailable):
        await first.ping()

    second = SqliteStore(path, synchronous="normal")
    await second.open()
    try:
        await second.ping()
        page = await second.history(g.conversation_id, limit=100)
        assert page.messages == tuple(a.message for a in sent)
        views = await second.conversations_of("bob")
        assert (views[0].read_seq, views[0].unread) == (7, 13)
        retry = await send(second, g.conversation_id, "alice", cmid="k3")
        assert retry == Appended(message=sent[3].message, duplicate=True)
        assert (await send(second, g.conversation_id, "bob")).message.seq == 21
    finally:
        await second.aclose()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


async def test_a_version_1_database_is_migrated_with_its_messages(tmp_path: pathlib.Path) -> None:
    # Version 1 kept latest_seq with an UPDATE per append, version 2 with a trigger; version 3
    # reads it from the newest message.
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as old:
        for statement in _MIGRATIONS[0]:
            old.execute(statement)
        old.execute(
            "INSERT INTO conversations (id, kind, created_at, latest_seq)"
            " VALUES ('c', 'group', 1, 2)"
        )
        old.executemany(
            "INSERT INTO members (conversation_id, user_id) VALUES ('c', ?)", [("alice",), ("bob",)]
        )
        old.executemany(
            "INSERT INTO messages (conversation_id, seq, message_id, sender_id, kind,"
            " client_msg_id, text, sent_at) VALUES ('c', ?, ?, 'alice', 'user', ?, 'hi', 1)",
            [(1, "m_1", "k1"), (2, "m_2", "k2")],
        )
        old.execute(
            "INSERT INTO conversations (id, kind, title, created_at, direct_a, direct_b)"
            " VALUES ('d', 'direct', 'ab', 1, 'alice', 'bob')"
        )
        old.execute("PRAGMA user_version = 1")
    old.close()
    store = SqliteStore(path)
    await store.open()
    try:
        again = await store.create_conversation(
            kind="direct", members=["bob", "alice"], title=None, now_ms=2
        )
        assert (again.conversation_id, again.title, again.latest_seq) == ("d", "ab", 0)
        assert (await send(store, "c", "bob", cmid="k3")).message.seq == 3
        assert (await send(store, "c", "alice", cmid="k2")).duplicate  # stored under v1
        assert (await store.conversation("c")).latest_seq == 3
        page = await store.history("c", limit=10)
        assert [(m.seq, m.sender_id) for m in page.messages] == [
            (1, "alice"),
            (2, "alice"),
            (3, "bob"),
        ]
    finally:
        await store.aclose()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert (
            check.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == []
        )
        # The version 1 column stays, no longer kept: the latest seq above came from messages.
        assert check.execute("SELECT latest_seq FROM conversations WHERE id = 'c'").fetchone() == (
            2,
        )
    check.close()


async def test_not_open_and_newer_schema(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "future.db"
    store = SqliteStore(path)
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.ping()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreUnavailable, match="newer"):
        await store.open()
    await store.aclose()


async def test_unwritable_path_is_unavailable(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(tmp_path / "missing-dir" / "x.db")
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await store.open()
    await store.aclose()


async def test_locked_database_is_unavailable_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "locked.db"
    store = SqliteStore(path, busy_timeout_ms=0)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        g = await group(store, "alice")
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        outcomes: list[str] = []

        async def one() -> None:
            try:
                await send(store, g.conversation_id, "alice")
                outcomes.append("stored")
            except StoreUnavailable as exc:
                outcomes.append(str(exc))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
        assert outcomes == ["sqlite write failed: database is locked"] * 5
        await store.ping()  # reads still work beside the lock holder
        other.execute("ROLLBACK")
        assert (await send(store, g.conversation_id, "alice")).message.seq == 1
    finally:
        other.close()
        await store.aclose()


async def test_group_commit_batches_concurrent_appends(store: SqliteStore) -> None:
    g = await group(store, *(f"u{i}" for i in range(10)))
    commits_before = store.commits
    results: list[Appended] = []

    async def one(i: int) -> None:
        results.append(await send(store, g.conversation_id, f"u{i % 10}", cmid=f"k{i}"))

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert sorted(r.message.seq for r in results) == list(range(1, 201))
    commits = store.commits - commits_before
    assert 1 <= commits < 200
    page = await store.history(g.conversation_id, limit=1000)
    assert [m.seq for m in page.messages] == list(range(1, 201))


async def test_one_failure_does_not_fail_its_batch(store: SqliteStore) -> None:
    g = await group(store, "alice", "bob")
    ok: list[int] = []
    refused: list[str] = []

    async def one(i: int) -> None:
        sender = "mallory" if i == 7 else ("alice", "bob")[i % 2]
        try:
            ok.append((await send(store, g.conversation_id, sender)).message.seq)
        except NotAMember:
            refused.append(sender)

    commits_before = store.commits
    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    assert refused == ["mallory"]
    assert sorted(ok) == list(range(1, 50))
    assert store.commits - commits_before < 50  # really batched together


async def test_an_append_refused_by_a_constraint_changes_nothing_and_fails_alone(
    windowed: SqliteStore,
) -> None:
    # Appends run in a batch without a savepoint: SQLite undoes the failing INSERT. A kind
    # outside the CHECK of `messages` (no caller sends one) makes A's INSERT fail.
    a, b = await group(windowed, "alice"), await group(windowed, "bob")
    first = await send(windowed, a.conversation_id, "alice")  # a commit: the window runs
    seqs: dict[str, int] = {}
    refused: dict[str, str] = {}

    async def one(key: str, cid: str, sender: str, kind: str = "user") -> None:
        try:
            sent = await send(windowed, cid, sender, cmid=key, kind=kind)  # type: ignore[arg-type]
            seqs[key] = sent.message.seq
        except StoreUnavailable as exc:
            refused[key] = str(exc)

    before = windowed.commits
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "b1", b.conversation_id, "bob")
        nursery.start_soon(one, "a", a.conversation_id, "alice", "bogus")
        nursery.start_soon(one, "b2", b.conversation_id, "bob")
        nursery.start_soon(one, "a2", a.conversation_id, "alice")
    assert windowed.commits - before == 1
    assert sorted([seqs["b1"], seqs["b2"]]) == [1, 2]
    assert seqs["a2"] == 2  # the refused write took no seq
    assert list(refused) == ["a"]
    assert "constraint failed" in refused["a"]
    assert (await windowed.conversation(a.conversation_id)).latest_seq == 2
    stored = (await windowed.history(a.conversation_id, limit=10)).messages
    assert [(m.seq, m.client_msg_id) for m in stored] == [(1, None), (2, "a2")]
    assert stored[0] == first.message


@pytest.mark.expect_errors(write_batch_failed=RuntimeError)
async def test_a_bug_after_an_appends_insert_fails_its_whole_batch(
    windowed: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a savepoint only the transaction's rollback can undo a stored row, so an
    # exception raised after the INSERT fails every write of the batch, and none is stored.
    g = await group(windowed, "alice")
    await send(windowed, g.conversation_id, "alice", cmid="before")  # the window runs

    def appended(*, message: ChatMessage, duplicate: bool) -> Appended:
        if message.text == "boom":
            raise RuntimeError("a bug after the INSERT")
        return Appended(message=message, duplicate=duplicate)

    monkeypatch.setattr("hoomi.server.sqlite_store.Appended", appended)
    failed: list[str] = []

    async def one(text: str) -> None:
        try:
            await send(windowed, g.conversation_id, "alice", text=text)
        except StoreUnavailable:
            failed.append(text)

    async with trio.open_nursery() as nursery:
        for text in ("ok", "boom", "ok too"):
            nursery.start_soon(one, text)
    assert sorted(failed) == ["boom", "ok", "ok too"]
    page = await windowed.history(g.conversation_id, limit=10)
    assert [m.client_msg_id for m in page.messages] == ["before"]
    assert (await windowed.conversation(g.conversation_id)).latest_seq == 1


async def test_batch_max_bounds_a_transaction(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(tmp_path / "b.db", batch_max=4)
    await store.open()
    try:
        g = await group(store, "alice")
        before = (store.commits, store.writes)
        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(send, store, g.conversation_id, "alice")
        commits, writes = store.commits - before[0], store.writes - before[1]
        assert writes == 40
        assert commits >= 10  # at most 4 per transaction
    finally:
        await store.aclose()


async def stored_after_reopening(path: pathlib.Path, cid: str) -> tuple[ChatMessage, ...]:
    """What a fresh store on `path` holds of a conversation (the newest 1,000 messages)."""
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        return (await reopened.history(cid, limit=1000)).messages
    finally:
        await reopened.aclose()


async def test_a_write_cancelled_while_queued_is_withdrawn(tmp_path: pathlib.Path) -> None:
    # A long window holds every write after the first commit in the queue, so the cancelled
    # send is surely still queued when it is cancelled; aclose then ends the window.
    path = tmp_path / "c.db"
    store = SqliteStore(path, commit_window_ms=60_000)
    await store.open()
    g = await group(store, "alice")  # a commit now: the next one waits out the window
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(send, store, g.conversation_id, "alice", "keep", f"k{i}")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await send(store, g.conversation_id, "alice", "gone", "cancelled")
        nursery.start_soon(store.aclose)
    stored = await stored_after_reopening(path, g.conversation_id)
    assert [(m.seq, m.text) for m in stored] == [(i, "keep") for i in range(1, 6)]


async def test_aclose_commits_a_write_waiting_out_the_window(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.db"
    store = SqliteStore(path, commit_window_ms=60_000)
    await store.open()
    g = await group(store, "alice")
    results: list[Appended] = []

    async def one() -> None:
        results.append(await send(store, g.conversation_id, "alice", "kept", "k1"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()  # the write waits out the window
        await store.aclose()
    assert [r.message.seq for r in results] == [1]
    assert [m.text for m in await stored_after_reopening(path, g.conversation_id)] == ["kept"]


async def test_aclose_commits_queued_writes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "drain.db"
    store = SqliteStore(path)
    await store.open()
    g = await group(store, "alice")
    done: list[int] = []

    async def one() -> None:
        done.append((await send(store, g.conversation_id, "alice")).message.seq)

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(store.aclose)
    assert sorted(done) == list(range(1, 31))
    with pytest.raises(StoreUnavailable, match="closed"):
        await send(store, g.conversation_id, "alice")
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert (await reopened.conversation(g.conversation_id)).latest_seq == 30
    finally:
        await reopened.aclose()


# -- a property: any interleaving of operations keeps the invariants ---------------------------

_ops = st.lists(
    st.tuples(st.sampled_from(["send", "retry", "read", "intruder"]), st.integers(0, 12)),
    max_size=25,
)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(ops=_ops)
def test_property_seq_unread_idempotency(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "p.db"

    async def run() -> None:
        store = SqliteStore(path)
        await store.open()
        try:
            g = await group(store, "alice", "bob")
            cid = g.conversation_id
            senders: dict[int, str] = {}
            marker = 0
            for op, n in ops:
                if op == "send":
                    a = await send(store, cid, ("alice", "bob")[n % 2], cmid=f"k{len(senders)}")
                    assert (a.message.seq, a.duplicate) == (len(senders) + 1, False)
                    senders[a.message.seq] = a.message.sender_id
                elif op == "retry" and senders:
                    seq = n % len(senders) + 1
                    a = await send(store, cid, senders[seq], cmid=f"k{seq - 1}")
                    assert (a.duplicate, a.message.seq) == (True, seq)
                elif op == "read":
                    got = await store.mark_read(cid, "alice", n)
                    new = max(marker, min(n, len(senders)))
                    assert got == (new, new != marker)
                    marker = new
                elif op == "intruder":
                    with pytest.raises(NotAMember):
                        await send(store, cid, "mallory")
            views = await store.conversations_of("alice")
            expected = sum(1 for s, who in senders.items() if s > marker and who != "alice")
            assert (views[0].info.latest_seq, views[0].read_seq) == (len(senders), marker)
            assert views[0].unread == expected
        finally:
            await store.aclose()

    trio.run(run)


async def test_commit_window_shares_one_commit_and_idle_writes_go_at_once(
    windowed: SqliteStore,
) -> None:
    began = trio.current_time()
    g = await group(windowed, "alice")  # a commit now: the window runs for a second
    before = (windowed.commits, windowed.writes)
    acked_at: list[float] = []

    async def one(i: int) -> None:
        await send(windowed, g.conversation_id, "alice", cmid=f"k{i}")
        acked_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(one, i)
    assert (windowed.commits - before[0], windowed.writes - before[1]) == (1, 5)
    # Held to the window's end, then together. The window began after `began` (with the
    # commit of `group`), so this holds whatever the load; without a window the acks come
    # in milliseconds. (Trio's default clock and the writer's time.monotonic tick alike.)
    assert min(acked_at) - began >= 1.0

    # That batch began before its acks: the store is idle for longer than the window now.
    await trio.sleep(1.05)
    start = trio.current_time()
    await send(windowed, g.conversation_id, "alice", cmid="idle")
    # Not held: a commit takes milliseconds, a write held for a window at least a second;
    # the bound leaves a loaded machine all of that second.
    assert trio.current_time() - start < 1.0


async def test_append_soon_reports_after_fan_out_in_queue_order(store: SqliteStore) -> None:
    g = await group(store, "alice")
    seen: list[object] = []
    store.on_commit = lambda messages: seen.append([m.seq for m in messages])
    finished = trio.Event()

    def done(i: int, result: Outcome[Appended]) -> None:
        seen.append((i, result.unwrap().message.seq))
        if i == 2:
            finished.set()

    for i in range(3):
        await append_soon(store, g.conversation_id, f"k{i}", partial(done, i))
    with trio.fail_after(10):
        await finished.wait()
    fanned_out = [x for x in seen if isinstance(x, list)]
    acked = [x for x in seen if isinstance(x, tuple)]
    assert sorted(s for batch in fanned_out for s in batch) == [1, 2, 3]
    assert acked == [(0, 1), (1, 2), (2, 3)]
    for i, seq in acked:  # each message was handed to fan-out before its callback ran
        assert any(seq in x for x in seen[: seen.index((i, seq))] if isinstance(x, list))


@pytest.mark.expect_errors(write_callback_failed=RuntimeError)
async def test_append_soon_failures_and_a_failing_callback_reach_only_their_own(
    store: SqliteStore,
) -> None:
    g = await group(store, "alice")
    results: list[Outcome[Appended]] = []
    finished = trio.Event()

    def broken(_: Outcome[Appended]) -> None:
        raise RuntimeError("a bug in one caller")

    def last(result: Outcome[Appended]) -> None:
        results.append(result)
        finished.set()

    for sender, done in (("mallory", results.append), ("alice", broken), ("alice", last)):
        await store.append_soon(
            conversation_id=g.conversation_id,
            sender_id=sender,
            client_msg_id=None,
            text="hi",
            kind="user",
            now_ms=1000,
            done=done,
        )
    with trio.fail_after(10):
        await finished.wait()
    refused, stored = results
    with pytest.raises(NotAMember):
        refused.unwrap()
    assert stored.unwrap().message.seq == 2  # the broken callback's message was stored too


async def test_append_soon_waits_for_room_in_a_full_queue(tmp_path: pathlib.Path) -> None:
    # Another connection holds the write lock, so the writer thread's first batch waits in
    # BEGIN IMMEDIATE; two more writes fill the queue and the fifth waits for room. It goes
    # in once the lock is released and that batch commits; all five commit in order.
    path = tmp_path / "full.db"
    store = SqliteStore(path, batch_max=2, backlog_max=2, commit_window_ms=0)
    await store.open()
    try:
        g = await group(store, "alice")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        queued: list[int] = []
        results: list[Outcome[Appended]] = []

        async def one(i: int) -> None:
            await append_soon(store, g.conversation_id, f"k{i}", results.append)
            queued.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(2):
                await one(i)
            await eventually(lambda: not store._queue, within=10)  # the thread took them, and waits
            for i in range(2, 5):
                nursery.start_soon(one, i)
            await eventually(lambda: len(queued) == 4, within=10)
            await trio.testing.wait_all_tasks_blocked()
            assert len(queued) == 4  # the last one still waits for room
            holder.execute("ROLLBACK")
        holder.close()
        await eventually(lambda: len(results) == 5, within=10)
        assert [r.unwrap().message.seq for r in results] == [1, 2, 3, 4, 5]
    finally:
        await store.aclose()


async def test_a_write_cancelled_after_its_batch_took_it_still_commits(
    tmp_path: pathlib.Path,
) -> None:
    # The caller sees Cancelled at once; the write is in a transaction already and commits
    # (a retried send with the same client_msg_id then gets the stored message).
    path = tmp_path / "taken.db"
    store = SqliteStore(path, commit_window_ms=0)
    await store.open()
    try:
        g = await group(store, "alice")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        scope = trio.CancelScope()

        async def sending() -> None:
            with scope:
                await send(store, g.conversation_id, "alice", "taken", "k1")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sending)
            await trio.testing.wait_all_tasks_blocked()  # queued
            await eventually(lambda: not store._queue, within=10)  # and taken by the thread
            scope.cancel()
        assert scope.cancelled_caught
        assert not store._queue  # it was taken, not withdrawn
        holder.execute("ROLLBACK")
        holder.close()
        retry = await send(store, g.conversation_id, "alice", "taken", "k1")
        assert (retry.message.seq, retry.duplicate) == (1, True)
    finally:
        await store.aclose()


@pytest.mark.expect_errors(on_commit_failed=RuntimeError)
async def test_a_failing_on_commit_costs_no_write_its_reply(store: SqliteStore) -> None:
    g = await group(store, "alice")

    def broken(_: object) -> None:
        raise RuntimeError("a bug in fan-out")

    store.on_commit = broken
    first = await send(store, g.conversation_id, "alice", cmid="k1")
    second = await send(store, g.conversation_id, "alice", cmid="k2")
    assert [first.message.seq, second.message.seq] == [1, 2]


def test_commit_window_must_not_be_negative(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="commit_window_ms"):
        SqliteStore(tmp_path / "x.db", commit_window_ms=-1)


async def test_a_batch_of_several_writes_is_reported_inside_reporting_a_lone_one_outside(
    windowed: SqliteStore,
) -> None:
    class Recording:
        depth = 0

        def __enter__(self) -> None:
            Recording.depth += 1

        def __exit__(self, *exc_info: object) -> None:
            Recording.depth -= 1
            seen.append("exit")

    seen: list[object] = []
    windowed.reporting = Recording()
    windowed.on_commit = lambda messages: seen.append(("fan-out", len(messages), Recording.depth))
    g = await group(windowed, "alice")  # a commit now: the window runs for a second
    await trio.sleep(1.05)  # idle again: the next write is committed at once, alone
    await send(windowed, g.conversation_id, "alice", cmid="alone")
    assert seen == [("fan-out", 1, 0)]
    seen.clear()
    finished = trio.Event()

    def done(i: int, result: Outcome[Appended]) -> None:
        seen.append(("ack", i, Recording.depth))
        if i == 2:
            finished.set()

    for i in range(3):  # within the window that commit started: one batch
        await append_soon(windowed, g.conversation_id, f"k{i}", partial(done, i))
    with trio.fail_after(10):
        await finished.wait()
    assert seen == [("fan-out", 3, 1), ("ack", 0, 1), ("ack", 1, 1), ("ack", 2, 1), "exit"]
