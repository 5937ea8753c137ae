"""SQLite storage, the embedded default: `SqliteStore` implements `hoomi.server.store.Store`.

Threads (ADR 7, ADR 8): reads run on the Trio loop, on one read-only connection: they are
short, bounded index lookups, and in WAL mode a reader never waits for the writer, so a
thread hand-off (which cost more here than the query) buys nothing. Writes run in the
store's own writer thread, started by `open` and ended by `aclose`, because a commit waits
for fsync and `BEGIN IMMEDIATE` may wait `busy_timeout_ms` for another process's write lock.

Group commit: every write (append, mark_read, create, membership) is queued. The writer
thread takes up to `batch_max` queued writes into ONE transaction (one fsync), each inside
its own SAVEPOINT (appends excepted: their one changing statement is atomic by itself), so
one write's failure (say `NotAMember`) rolls back and fails only that write; it commits at
most once per `commit_window_ms` while writes keep coming, so under load writes arriving
within the window or during a commit ride the next one. Each batch's outcome comes back to
the loop in one `run_sync_soon` call, which runs `on_commit` and then reports to each write:
an awaited write's task resumes with its result; a write queued by `append_soon` has its
callback called, so a connection's reader goes on reading while its message commits, and no
Trio task waits, sleeps or wakes for it.

Durability (`synchronous`): "full" (default) fsyncs the WAL at every commit, so an acked
message survives power loss or an OS crash. "normal" skips that fsync: the database stays
consistent and survives a crash of the process, but an OS crash or power loss may drop the
last commits, acked messages included.
"""

from __future__ import annotations

import collections
import enum
import math
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any, Generic, Literal, TypeVar

import attrs
import outcome
import trio

from hoomi.protocol.messages import ChatMessage, MessageKind
from hoomi.server import logs
from hoomi.server.store import (
    Appended,
    ConversationInfo,
    ConversationKind,
    ConversationNotFound,
    InvalidConversation,
    MemberView,
    NotAMember,
    Page,
    StoreUnavailable,
)

T = TypeVar("T")
Synchronous = Literal["full", "normal"]

# Migration N takes `PRAGMA user_version` from N to N+1. Append; never edit a shipped one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # direct_a < direct_b is the sorted member pair of a direct conversation; the UNIQUE
        # pair keeps it to one per pair (NULLs, i.e. groups, never collide).
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
            title TEXT,
            created_at INTEGER NOT NULL,
            latest_seq INTEGER NOT NULL DEFAULT 0,
            direct_a TEXT,
            direct_b TEXT,
            UNIQUE (direct_a, direct_b)
        )""",
        """CREATE TABLE members (
            conversation_id TEXT NOT NULL REFERENCES conversations (id),
            user_id TEXT NOT NULL,
            read_seq INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (conversation_id, user_id)
        ) WITHOUT ROWID""",
        # conversations_of and shared_contacts start from the user.
        "CREATE INDEX members_by_user ON members (user_id, conversation_id)",
        # A rowid table: message rows carry text, too wide for WITHOUT ROWID to pay off.
        # UNIQUE (conversation, sender, client_msg_id) is the idempotency key; system
        # messages have a NULL client_msg_id and NULLs never collide.
        """CREATE TABLE messages (
            conversation_id TEXT NOT NULL REFERENCES conversations (id),
            seq INTEGER NOT NULL,
            message_id TEXT NOT NULL UNIQUE,
            sender_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('user', 'system')),
            client_msg_id TEXT,
            text TEXT NOT NULL,
            sent_at INTEGER NOT NULL,
            PRIMARY KEY (conversation_id, seq),
            UNIQUE (conversation_id, sender_id, client_msg_id)
        )""",
        # unread = (latest_seq - read_seq) - own messages above read_seq, since seqs are
        # gap-free; this index makes that a scan of the user's own recent messages only.
        "CREATE INDEX messages_by_sender ON messages (conversation_id, sender_id, seq)",
    ),
    (
        # latest_seq follows each stored message inside its INSERT: an append then changes
        # the database in one statement, atomic without a savepoint of its own in a batch.
        """CREATE TRIGGER messages_latest_seq AFTER INSERT ON messages BEGIN
            UPDATE conversations SET latest_seq = max(latest_seq, NEW.seq)
            WHERE id = NEW.conversation_id;
        END""",
    ),
    (
        # A conversation's latest seq is read from its newest message (one step down the
        # (conversation_id, seq) key, `_LATEST`), no longer kept in a column: an append then
        # dirties no page of `conversations`, one random page per message less (ADR 5).
        # The column `conversations.latest_seq` stays, unused: dropping it would need SQLite
        # 3.35.5 and rewrite every row.
        "DROP TRIGGER messages_latest_seq",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
# The latest seq of conversation `c` (0 before its first message). Seqs are never deleted, so
# the next one is always this + 1 (HOOMI-SEND-2).
_LATEST = "(SELECT coalesce(max(l.seq), 0) FROM messages l WHERE l.conversation_id = c.id)"
_INFO_COLS = f"SELECT c.id, c.kind, c.title, c.created_at, {_LATEST} FROM conversations c"

_MSG_FIELDS = tuple(f.name for f in attrs.fields(ChatMessage))
_MSG_COLS = ", ".join(_MSG_FIELDS)  # the columns of `messages` are ChatMessage's fields
_MAX_SEQ = 2**63 - 1
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MSG_COLS}) VALUES ({', '.join('?' * len(_MSG_FIELDS))})"
    " ON CONFLICT (conversation_id, sender_id, client_msg_id) DO NOTHING"
)


# Ids must be unique, not secret (they grant nothing). An id is 80 bits in time order: the
# milliseconds since the epoch, then 36 bits that start from a 35-bit draw of a generator
# seeded once from the OS (~0.8 µs; a system call per id cost ~8 µs here), and always above
# this process's previous id, even when the clock steps back. So ids are unique within the
# process by construction, and each new id lands at the right edge of its UNIQUE index: one
# page per commit, not one random page per row (ADR 5: -12% of the writer's CPU per
# message). One database has one writing process; a new process's ids could meet an older
# one's only if the clock stepped back across the restart, and then that write fails (a
# UNIQUE error, `unavailable`) and its retry gets a new id.
_ids = random.Random(secrets.token_bytes(32))
_ids_lock = threading.Lock()  # each store's writer thread makes ids
_last_id = 0


def _new_id(prefix: str) -> str:
    global _last_id
    drawn = (time.time_ns() // 1_000_000) << 36 | _ids.getrandbits(35)
    with _ids_lock:
        _last_id = max(_last_id + 1, drawn)
        value = _last_id
    # 20 hex digits (until the year 2527): URL-safe, within the ConversationId pattern
    # ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$.
    return f"{prefix}{value:020x}"


def _message(row: Sequence[Any]) -> ChatMessage:
    return ChatMessage(**dict(zip(_MSG_FIELDS, row, strict=True)))


def _infos(
    rows: Sequence[Sequence[Any]], members: Iterable[Sequence[Any]]
) -> list[ConversationInfo]:
    """ConversationInfo from (id, kind, title, created_at, latest_seq, ...) rows and
    (conversation_id, user_id) rows ordered by user_id."""
    by_conversation: dict[str, list[str]] = collections.defaultdict(list)
    for cid, uid in members:
        by_conversation[cid].append(uid)
    return [
        ConversationInfo(
            conversation_id=row[0],
            kind=row[1],
            title=row[2],
            created_at=row[3],
            latest_seq=row[4],
            members=tuple(by_conversation[row[0]]),
        )
        for row in rows
    ]


def _info(conn: sqlite3.Connection, conversation_id: str) -> ConversationInfo:
    row = conn.execute(f"{_INFO_COLS} WHERE c.id = ?", (conversation_id,)).fetchone()
    if row is None:
        raise ConversationNotFound(f"no conversation {conversation_id!r}")
    members = conn.execute(
        "SELECT conversation_id, user_id FROM members WHERE conversation_id = ? ORDER BY user_id",
        (conversation_id,),
    )
    return _infos([row], members)[0]


def _membership(conn: sqlite3.Connection, cid: str, user_id: str) -> tuple[str, int, int | None]:
    """(kind, latest_seq, read_seq or None if not a member); ConversationNotFound if none."""
    row = conn.execute(
        f"SELECT c.kind, {_LATEST}, m.read_seq FROM conversations c"
        " LEFT JOIN members m ON m.conversation_id = c.id AND m.user_id = ? WHERE c.id = ?",
        (user_id, cid),
    ).fetchone()
    if row is None:
        raise ConversationNotFound(f"no conversation {cid!r}")
    return row[0], row[1], row[2]


def _appending(
    conversation_id: str,
    sender_id: str,
    client_msg_id: str | None,
    text: str,
    kind: MessageKind,
    now_ms: int,
) -> Callable[[sqlite3.Connection], Appended]:
    """The write of `SqliteStore.append`, run in the writer thread."""

    def insert(conn: sqlite3.Connection) -> Appended:
        _, latest, read_seq = _membership(conn, conversation_id, sender_id)
        if kind == "user" and read_seq is None:
            raise NotAMember(f"{sender_id!r} is not a member of {conversation_id!r}")
        message = ChatMessage(
            conversation_id=conversation_id,
            seq=latest + 1,  # under the write lock: gap-free, no other writer
            message_id=_new_id("m_"),
            sender_id=sender_id,
            kind=kind,
            client_msg_id=client_msg_id,
            text=text,
            sent_at=now_ms,
        )
        # The idempotency key decides in the same statement: a retry inserts nothing. The
        # INSERT is this write's only change: atomic.
        if not conn.execute(_INSERT_MESSAGE, attrs.astuple(message)).rowcount:
            row = conn.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ?"
                " AND sender_id = ? AND client_msg_id = ?",
                (conversation_id, sender_id, client_msg_id),
            ).fetchone()
            return Appended(message=_message(row), duplicate=True)
        return Appended(message=message, duplicate=False)

    return insert


@attrs.frozen
class _Removed:
    """What a removal's write returns in the writer thread: `_published` reports it in its
    place in the batch (`on_removed`) before the messages committed after it."""

    info: ConversationInfo
    user_id: str


class _State(enum.Enum):
    QUEUED = enum.auto()
    TAKEN = enum.auto()  # in a batch: it will be committed or failed, no longer withdrawable


class _Write(Generic[T]):
    __slots__ = ("atomic", "done", "fn", "result", "state")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], T],
        done: Callable[[outcome.Outcome[T]], None] | None = None,
        *,
        atomic: bool = False,
    ) -> None:
        self.fn = fn
        self.done = done  # called on the loop with the result; None: nobody waits any more
        # True: `fn` changes the database in one statement at most and raises nothing after
        # it, so when it fails it has changed nothing: no savepoint of its own in a batch.
        self.atomic = atomic
        self.state = _State.QUEUED
        self.result: outcome.Outcome[T] | None = None


class SqliteStore:
    """The `Store` on one SQLite database file (WAL mode; `:memory:` is not supported).

    Bounded: at most `batch_max` writes per transaction, at most one commit per
    `commit_window_ms` while writes keep coming (a full batch or a full queue commits at
    once), `append_soon` waits for room while `backlog_max` writes of any kind are queued
    (awaited writes are bounded by their callers), one writer thread; each statement waits
    at most `busy_timeout_ms` for a lock held by another process. Raises `StoreUnavailable`
    for any SQLite failure (I/O error, disk full, lock timeout) and when used before `open`
    or after `aclose`. `commits` and `writes` count committed transactions and the writes
    they held (for tests and metrics).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_max: int = 256,
        backlog_max: int = 1024,
        commit_window_ms: float = 5.0,
        synchronous: Synchronous = "full",
        busy_timeout_ms: int = 5000,
    ) -> None:
        if batch_max < 1 or backlog_max < 1 or busy_timeout_ms < 0 or commit_window_ms < 0:
            raise ValueError(
                "batch_max and backlog_max must be >= 1, busy_timeout_ms and commit_window_ms >= 0"
            )
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self._path = os.fspath(path)
        self._batch_max = batch_max
        self._backlog_max = backlog_max
        self._full = min(batch_max, backlog_max)  # queued writes that end a window early
        self._window = commit_window_ms / 1000
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # The queue is shared with the writer thread: `_wake` (and its lock) guards it.
        self._queue: collections.deque[_Write[Any]] = collections.deque()
        self._wake = threading.Condition(threading.Lock())
        self._stopping = False  # the writer thread ends once the queue is empty
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._room = trio.Event()  # set when the queue shrank (append_soon waits for room)
        self._closing = False
        self._closed = trio.Event()
        self.commits = 0
        self.writes = 0
        self.on_commit: Callable[[list[ChatMessage]], None] | None = None
        self.on_removed: Callable[[str, str], None] | None = None
        self.reporting: AbstractContextManager[None] = nullcontext()

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the connections and create or migrate the schema. Call once."""
        if self._writer is not None or self._closing:
            raise RuntimeError("SqliteStore.open() may be called once, before aclose()")
        await trio.to_thread.run_sync(self._open_sync)
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(
            target=self._writer_loop, name="hoomi-sqlite-writer", daemon=True
        )
        self._thread.start()

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False:
        # the writer is used by the writer thread only, the reader only on the Trio loop,
        # each opened and closed in a worker thread.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            # The read connection is used on the Trio loop: a lock it must wait for (WAL
            # recovery, another process's exclusive lock) fails fast rather than stall it.
            timeout = self._busy_timeout_ms if writer else min(self._busy_timeout_ms, 100)
            conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
            conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            if writer:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreUnavailable(f"{self._path!r} cannot use WAL (got {mode!r})")
            else:
                conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_sync(self) -> None:
        try:
            self._writer = self._connect(writer=True)
            self._migrate(self._writer)
            self._reader = self._connect(writer=False)
        except BaseException as exc:
            self._close_sync()
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"cannot open {self._path!r}: {exc}") from exc
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # the version check and the DDL are one unit
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"{self._path!r} has schema v{version}, newer than v{SCHEMA_VERSION}"
                )
            for migration in _MIGRATIONS[version:]:
                for statement in migration:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _close_sync(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._writer is not None:
            self._writer.close()

    async def aclose(self) -> None:
        """Commit every queued write, stop the writer thread, close. Idempotent.

        Shielded from cancellation (it must not leak connections); bounded by the queued
        writes (ceil(n / batch_max) commits) and `busy_timeout_ms` per commit.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True  # refuse new calls; already queued writes still commit
        with trio.CancelScope(shield=True):
            try:
                if self._thread is not None:
                    with self._wake:
                        self._stopping = True
                        self._wake.notify()
                    await trio.to_thread.run_sync(self._thread.join)
                    # Its last batch's report was queued before the join's: it has run.
            finally:
                await trio.to_thread.run_sync(self._close_sync)
                self._closed.set()

    def _check_open(self) -> None:
        if self._closing:
            raise StoreUnavailable("the store is closed")
        if self._writer is None:
            raise StoreUnavailable("the store is not open")

    async def ping(self) -> None:
        """Raise `StoreUnavailable` if the database cannot serve a read."""
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- the two ways in: reads and (group-committed) writes --------------------------------
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # On the loop, with no await inside: reads never interleave on the one connection.
        await trio.lowlevel.checkpoint()
        self._check_open()
        conn = self._reader
        if conn is None:
            raise StoreUnavailable("the store is still opening")
        try:
            conn.execute("BEGIN")  # one snapshot for all the queries of this read
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite read failed: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, atomic: bool = False) -> T:
        """Queue `fn` for the next batch and return its result once that batch committed.

        Cancelled while still queued, the write is withdrawn (never written); cancelled
        after a batch took it, it may still commit — as with a lost ack, a retry with the
        same client_msg_id is safe.
        """
        self._check_open()
        task = trio.lowlevel.current_task()
        write: _Write[T] = _Write(fn, partial(trio.lowlevel.reschedule, task), atomic=atomic)
        self._enqueue(write)

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            with self._wake:
                withdrawn = write.state is _State.QUEUED
                if withdrawn:
                    self._queue.remove(write)
            if withdrawn:
                self._room_made()  # an append_soon may be waiting for this place
            write.done = None
            return trio.lowlevel.Abort.SUCCEEDED

        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async def _write_soon(
        self,
        fn: Callable[[sqlite3.Connection], T],
        done: Callable[[outcome.Outcome[T]], None],
        *,
        atomic: bool = False,
    ) -> None:
        """Queue `fn` and return; `done` gets its outcome on the loop once its batch ended.

        Returns at once unless `backlog_max` writes are queued: then it waits for room, so a
        store that falls behind slows its writers' readers (TCP pushes back on clients). Like
        a `*_nowait` call, it is no schedule point when there is room: a reader goes on with
        the frames already in its buffer (at most one 64 KB read, and rate-limited).
        """
        while len(self._queue) >= self._backlog_max:
            self._check_open()
            await self._room.wait()
        self._check_open()
        self._enqueue(_Write(fn, done, atomic=atomic))

    def _enqueue(self, write: _Write[Any]) -> None:
        with self._wake:
            self._queue.append(write)
            if len(self._queue) == 1 or len(self._queue) >= self._full:
                self._wake.notify()  # the thread waits for a first write or a full queue

    # -- the writer thread -----------------------------------------------------------------
    def _writer_loop(self) -> None:
        last = -math.inf  # when the last batch started (time.monotonic)
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                # At most one commit per window: under load, writes arriving within it
                # share one commit (one fsync); a write finding the store idle for longer
                # than the window commits at once. Nothing is taken yet, so a write whose
                # caller is cancelled meanwhile is withdrawn.
                while not self._stopping and len(self._queue) < self._full:
                    wait = last + self._window - time.monotonic()
                    if wait <= 0:
                        break
                    self._wake.wait(wait)
                if not self._queue:
                    if self._stopping:
                        return  # every write is done
                    continue  # the writes were withdrawn while the window ran
                taken = min(self._batch_max, len(self._queue))
                batch = [self._queue.popleft() for _ in range(taken)]
                for write in batch:
                    write.state = _State.TAKEN
            last = time.monotonic()
            try:
                committed = self._batch_sync(batch)
            except BaseException as exc:  # a bug: fail this batch, keep the writer alive
                # Its callers see only StoreUnavailable (logged at info): the bug is logged
                # here, on the writer thread, or nobody would hear of it.
                logs.failure("write_batch_failed", writes=len(batch))
                committed = False
                for write in batch:
                    write.result = outcome.Error(StoreUnavailable(f"the write failed: {exc!r}"))
            assert self._token is not None
            try:
                self._token.run_sync_soon(self._report, batch, committed)
            except trio.RunFinishedError:
                return  # the loop is gone: nobody is left to tell

    def _report(self, batch: list[_Write[Any]], committed: bool) -> None:
        """On the loop: a batch ended. Fan-out first, then every write's waiter."""
        # A lone write is reported uncorked: its fan-out reaches each recipient as soon as
        # it is written, rather than after the whole loop (coalescing needs two frames).
        with self.reporting if len(batch) > 1 else nullcontext():
            if committed:
                self._published(batch)
            for write in batch:
                if write.done is None:
                    continue
                # Nothing may raise here (Trio's run_sync_soon context): the writer thread
                # sets every result, and a missing one is reported, not asserted.
                result = write.result or outcome.Error(StoreUnavailable("the write did not run"))
                try:
                    write.done(result)
                except Exception:  # one caller's bug must not cost the others their reply
                    logs.failure("write_callback_failed")
        self._room_made()

    def _published(self, batch: list[_Write[Any]]) -> None:
        self.commits += 1
        self.writes += len(batch)
        stored: list[ChatMessage] = []
        for write in batch:
            if not isinstance(write.result, outcome.Value):
                continue
            value = write.result.value
            if isinstance(value, Appended) and not value.duplicate:
                stored.append(value.message)
            elif isinstance(value, _Removed) and self.on_removed is not None:
                # A message committed after a removal in the same batch must not reach the
                # removed member: what came before goes out first, then the removal.
                self._fan_out(stored)
                stored = []
                try:
                    self.on_removed(value.info.conversation_id, value.user_id)
                except Exception:
                    logs.failure("on_removed_failed")
        self._fan_out(stored)

    def _fan_out(self, stored: list[ChatMessage]) -> None:
        if stored and self.on_commit is not None:
            # In commit order, so per conversation in seq order, before any ack.
            try:
                self.on_commit(stored)
            except Exception:
                logs.failure("on_commit_failed")

    def _room_made(self) -> None:
        """Wake whoever waits for room in the queue (a batch was taken, or a write withdrawn)."""
        room, self._room = self._room, trio.Event()
        room.set()

    def _batch_sync(self, batch: list[_Write[Any]]) -> bool:
        conn = self._writer
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if len(batch) == 1:
                    # Alone in its transaction, a write needs no savepoint: its failure
                    # rolls back just itself anyway.
                    batch[0].result = self._alone(conn, batch[0].fn)
                else:
                    for write in batch:
                        write.result = self._savepoint(conn, write.fn, write.atomic)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # The whole transaction is gone: nothing of this batch was written. One exception
            # object per caller, as each raises it in its own task.
            for write in batch:
                write.result = outcome.Error(StoreUnavailable(f"sqlite write failed: {exc}"))
            return False
        return True

    @staticmethod
    def _alone(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> Any:
        try:
            return outcome.Value(fn(conn))
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")  # COMMIT follows: an empty transaction
            return outcome.Error(StoreUnavailable(f"constraint failed: {exc}"))
        except sqlite3.Error:
            raise  # I/O error, disk full, corruption: the caller fails the batch
        except Exception as exc:  # StoreError, or a bug confined to this write
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            return outcome.Error(exc)

    @staticmethod
    def _savepoint(
        conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], atomic: bool
    ) -> Any:
        """One write of a batch of several. Its own failure undoes just it: through a
        savepoint, or by itself if it is `atomic` (its one statement changed nothing)."""
        if not atomic:
            conn.execute("SAVEPOINT w")
        changes = conn.total_changes  # an aborted statement's changes are not counted
        error: Exception
        try:
            result = fn(conn)
        except sqlite3.IntegrityError as exc:
            error = StoreUnavailable(f"constraint failed: {exc}")
        except sqlite3.Error:
            raise  # I/O error, disk full, corruption: the whole batch fails
        except Exception as exc:  # StoreError, or a bug confined to this one write
            if atomic and conn.total_changes != changes:
                raise  # a bug after its change: only the whole batch's rollback undoes it
            error = exc
        else:
            if not atomic:
                conn.execute("RELEASE w")
            return outcome.Value(result)
        # This write's own failure: undo just it; the rest of the batch goes on.
        if not atomic:
            conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
        return outcome.Error(error)

    # -- conversations ----------------------------------------------------------------------
    async def create_conversation(
        self, *, kind: ConversationKind, members: Sequence[str], title: str | None, now_ms: int
    ) -> ConversationInfo:
        """Create a conversation; a direct one for a pair that has one returns that one.

        `InvalidConversation` for an unknown kind, an empty member id, a direct conversation
        without exactly two distinct members, or a group without members.
        """
        if isinstance(members, str):
            raise InvalidConversation("members must be a sequence of user ids, not a string")
        users = sorted(set(members))
        if any(not isinstance(u, str) or not u for u in users):
            raise InvalidConversation("member ids must be non-empty strings")
        if kind == "direct":
            if len(users) != 2:
                raise InvalidConversation("a direct conversation needs two distinct members")
        elif kind == "group":
            if not users:
                raise InvalidConversation("a group needs at least one member")
        else:
            raise InvalidConversation(f"unknown conversation kind {kind!r}")
        pair = (users[0], users[1]) if kind == "direct" else (None, None)

        def create(conn: sqlite3.Connection) -> ConversationInfo:
            if kind == "direct":
                row = conn.execute(
                    "SELECT id FROM conversations WHERE direct_a = ? AND direct_b = ?", pair
                ).fetchone()
                if row is not None:
                    return _info(conn, row[0])
            cid = _new_id("c_")
            conn.execute(
                "INSERT INTO conversations (id, kind, title, created_at, direct_a, direct_b)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (cid, kind, title, now_ms, *pair),
            )
            conn.executemany(
                "INSERT INTO members (conversation_id, user_id) VALUES (?, ?)",
                [(cid, u) for u in users],
            )
            return _info(conn, cid)

        return await self._write(create)

    async def add_member(self, conversation_id: str, user_id: str) -> ConversationInfo:
        """Add a member (no-op if one); `InvalidConversation` for direct ones. The read marker
        starts at the latest seq: what was said before joining is history, not unread."""
        if not user_id:
            raise InvalidConversation("member ids must be non-empty strings")

        def add(conn: sqlite3.Connection) -> ConversationInfo:
            kind, latest_seq, read_seq = _membership(conn, conversation_id, user_id)
            if read_seq is None:
                if kind == "direct":
                    raise InvalidConversation("a direct conversation cannot take new members")
                conn.execute(
                    "INSERT INTO members (conversation_id, user_id, read_seq) VALUES (?, ?, ?)",
                    (conversation_id, user_id, latest_seq),
                )
            return _info(conn, conversation_id)

        return await self._write(add)

    async def remove_member(self, conversation_id: str, user_id: str) -> ConversationInfo:
        """Remove a member and its read marker (no-op if not one). `InvalidConversation` for
        a direct conversation (it must keep exactly two members, HOOMI-CONV-1)."""

        def remove(conn: sqlite3.Connection) -> _Removed:
            kind, _, read_seq = _membership(conn, conversation_id, user_id)
            if read_seq is not None:
                if kind == "direct":
                    raise InvalidConversation("a direct conversation keeps its two members")
                conn.execute(
                    "DELETE FROM members WHERE conversation_id = ? AND user_id = ?",
                    (conversation_id, user_id),
                )
            return _Removed(_info(conn, conversation_id), user_id)

        return (await self._write(remove)).info

    async def conversation(self, conversation_id: str) -> ConversationInfo:
        """One conversation; `ConversationNotFound` if none."""
        return await self._read(lambda conn: _info(conn, conversation_id))

    async def list_conversations(self, *, limit: int, after: str | None) -> list[ConversationInfo]:
        """At most `limit` conversations ordered by id, those with id > `after` if given."""
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def page(conn: sqlite3.Connection) -> list[ConversationInfo]:
            if after is None:
                rows = conn.execute(f"{_INFO_COLS} ORDER BY c.id LIMIT ?", (limit,)).fetchall()
            else:
                q = f"{_INFO_COLS} WHERE c.id > ? ORDER BY c.id LIMIT ?"
                rows = conn.execute(q, (after, limit)).fetchall()
            if not rows:
                return []
            # The page is a contiguous id range, so its members are one range scan.
            members = conn.execute(
                "SELECT conversation_id, user_id FROM members"
                " WHERE conversation_id BETWEEN ? AND ? ORDER BY conversation_id, user_id",
                (rows[0][0], rows[-1][0]),
            )
            return _infos(rows, members)

        return await self._read(page)

    async def conversations_of(self, user_id: str) -> list[MemberView]:
        """Every conversation of the user (ordered by id) with read marker and unread count.

        Bounded by the user's memberships; each unread count scans only the user's own
        messages above the marker.
        """

        def views(conn: sqlite3.Connection) -> list[MemberView]:
            rows = conn.execute(
                f"SELECT c.id, c.kind, c.title, c.created_at, {_LATEST}, m.read_seq,"
                f" {_LATEST} - m.read_seq - (SELECT count(*) FROM messages x"
                "   WHERE x.conversation_id = c.id AND x.sender_id = m.user_id"
                "   AND x.seq > m.read_seq)"
                " FROM members m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE m.user_id = ? ORDER BY c.id",
                (user_id,),
            ).fetchall()
            members = conn.execute(
                "SELECT o.conversation_id, o.user_id FROM members me"
                " JOIN members o ON o.conversation_id = me.conversation_id"
                " WHERE me.user_id = ? ORDER BY o.conversation_id, o.user_id",
                (user_id,),
            )
            return [
                MemberView(info=info, read_seq=row[5], unread=row[6])
                for info, row in zip(_infos(rows, members), rows, strict=True)
            ]

        return await self._read(views)

    async def shared_contacts(self, user_id: str) -> set[str]:
        """Every user sharing a conversation with `user_id`, itself excluded."""

        def contacts(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT DISTINCT o.user_id FROM members me"
                " JOIN members o ON o.conversation_id = me.conversation_id"
                " WHERE me.user_id = ? AND o.user_id != me.user_id",
                (user_id,),
            )
            return {r[0] for r in rows}

        return await self._read(contacts)

    # -- messages ---------------------------------------------------------------------------
    async def append(
        self,
        *,
        conversation_id: str,
        sender_id: str,
        client_msg_id: str | None,
        text: str,
        kind: MessageKind,
        now_ms: int,
    ) -> Appended:
        """Store a message under the next seq and return it once committed (group commit).

        `ConversationNotFound`; `NotAMember` for a `user` message whose sender is not a
        member (`system` messages skip the check). A stored (conversation, sender,
        client_msg_id) returns the stored message with duplicate=True and writes nothing.
        """
        return await self._write(
            _appending(conversation_id, sender_id, client_msg_id, text, kind, now_ms), atomic=True
        )

    async def append_soon(
        self,
        *,
        conversation_id: str,
        sender_id: str,
        client_msg_id: str | None,
        text: str,
        kind: MessageKind,
        now_ms: int,
        done: Callable[[outcome.Outcome[Appended]], None],
    ) -> None:
        """`append` without waiting for the commit: `done` gets what `append` would return or
        raise, on the loop, after `on_commit`. Waits only for room in the queue."""
        await self._write_soon(
            _appending(conversation_id, sender_id, client_msg_id, text, kind, now_ms),
            done,
            atomic=True,
        )

    async def history(
        self,
        conversation_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int,
    ) -> Page:
        """HOOMI-HISTORY-1..3: at most `limit` messages in ascending seq. `before_seq`: the
        newest below it; `after_seq`: the oldest above it; neither: the newest. has_more:
        more exist beyond the page in the paging direction. `ConversationNotFound`;
        ValueError for both bounds or a negative limit (membership is the caller's check).
        """
        if before_seq is not None and after_seq is not None:
            raise ValueError("give before_seq or after_seq, not both")
        if limit < 0:
            raise ValueError("limit must be >= 0")

        def page(conn: sqlite3.Connection) -> Page:
            if (
                conn.execute(
                    "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
                ).fetchone()
                is None
            ):
                raise ConversationNotFound(f"no conversation {conversation_id!r}")
            # One extra row tells whether more exist beyond the page.
            if after_seq is not None:
                rows = conn.execute(
                    f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? AND seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (conversation_id, after_seq, limit + 1),
                ).fetchall()
                return Page(messages=tuple(map(_message, rows[:limit])), has_more=len(rows) > limit)
            bound = _MAX_SEQ if before_seq is None else before_seq
            rows = conn.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? AND seq < ?"
                " ORDER BY seq DESC LIMIT ?",
                (conversation_id, bound, limit + 1),
            ).fetchall()
            newest_first = rows[:limit]
            return Page(
                messages=tuple(map(_message, reversed(newest_first))), has_more=len(rows) > limit
            )

        return await self._read(page)

    # -- read markers -----------------------------------------------------------------------
    async def mark_read(self, conversation_id: str, user_id: str, seq: int) -> tuple[int, bool]:
        """Move the marker forward to min(seq, latest_seq); returns (marker, moved).
        `ConversationNotFound`; `NotAMember`."""

        def mark(conn: sqlite3.Connection) -> tuple[int, bool]:
            _, latest, read_seq = _membership(conn, conversation_id, user_id)
            if read_seq is None:
                raise NotAMember(f"{user_id!r} is not a member of {conversation_id!r}")
            target = min(seq, latest)
            if target <= read_seq:
                return read_seq, False
            conn.execute(
                "UPDATE members SET read_seq = ? WHERE conversation_id = ? AND user_id = ?",
                (target, conversation_id, user_id),
            )
            return target, True

        return await self._write(mark)
