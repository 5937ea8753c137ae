"""Store write micro-benchmark: the CPU each appended message costs SQLite's writer thread.

The chat scenario's store cost, alone: 5,000 direct conversations, 100-character messages
appended with `append_soon` by random members, committed in batches of exactly B (`batch_max`
= B and a window long enough that only a full batch commits). Each line gives the writer
thread's CPU per message (the thread named hoomi-sqlite-writer) and the rest of the
process's (the loop: queueing and the commit reports), with synchronous=full (an fsync per
commit, the default) and normal (none: the difference is the fsync's CPU). Thread CPU clocks
(nanoseconds); fresh copies of one seeded database; in-process; one run, so compare lines
within it.

    python bench/bench_writer.py [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from typing import Any

import outcome
import trio

from hoomi.server.sqlite_store import SqliteStore, Synchronous
from hoomi.server.store import Appended

PAIRS = 5_000
TEXT = "x" * 100


async def _seed(db: pathlib.Path, pairs: int) -> list[str]:
    store = SqliteStore(db, synchronous="normal")
    await store.open()
    made = [""] * pairs
    limit = trio.Semaphore(256)

    async def one(i: int) -> None:
        async with limit:
            info = await store.create_conversation(
                kind="direct", members=[f"u{2 * i}", f"u{2 * i + 1}"], title=None, now_ms=1
            )
            made[i] = info.conversation_id

    try:
        async with trio.open_nursery() as nursery:
            for i in range(pairs):
                nursery.start_soon(one, i)
    finally:
        await store.aclose()
    return made


def _cpu_s() -> tuple[float, float]:
    """(the writer thread's CPU seconds, the whole process's, exited threads included)."""
    writer = next(t for t in threading.enumerate() if t.name == "hoomi-sqlite-writer")
    assert writer.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(writer.ident)), time.process_time()


async def _appends(
    db: pathlib.Path, pairs: list[str], synchronous: Synchronous, batch: int, messages: int
) -> dict[str, Any]:
    assert messages % batch == 0, "a last, partial batch would wait out the window"
    store = SqliteStore(db, synchronous=synchronous, batch_max=batch, commit_window_ms=60_000)
    await store.open()
    left = messages
    failures: list[BaseException] = []
    finished = trio.Event()

    def done(result: outcome.Outcome[Appended]) -> None:
        nonlocal left
        if isinstance(result, outcome.Error):
            failures.append(result.error)
        left -= 1
        if not left:
            finished.set()

    rnd = random.Random(1)
    try:
        # One commit first: from then on the window runs, so only a full batch commits (the
        # first write after an idle spell would otherwise commit with whatever is queued).
        await store.append(
            conversation_id=pairs[0],
            sender_id="u0",
            client_msg_id="warm",
            text=TEXT,
            kind="user",
            now_ms=1,
        )
        commits_before = store.commits
        # The messages are made before the clock starts: only the store's work is measured.
        appends = []
        for i in range(messages):
            k = rnd.randrange(len(pairs))
            appends.append((pairs[k], f"u{2 * k + rnd.randrange(2)}", f"m{i}"))
        writer_before, process_before = _cpu_s()
        started = time.perf_counter()
        for conversation_id, sender_id, client_msg_id in appends:
            await store.append_soon(
                conversation_id=conversation_id,
                sender_id=sender_id,
                client_msg_id=client_msg_id,
                text=TEXT,
                kind="user",
                now_ms=1,
                done=done,
            )
        await finished.wait()
        wall = time.perf_counter() - started
        writer_after, process_after = _cpu_s()
    finally:
        await store.aclose()
    if failures:
        raise failures[0]
    writer = writer_after - writer_before
    return {
        "synchronous": synchronous,
        "batch": batch,
        "messages": messages,
        "commits": store.commits - commits_before,
        "writer_us_per_msg": writer / messages * 1e6,
        "loop_us_per_msg": (process_after - process_before - writer) / messages * 1e6,
        "wall_us_per_msg": wall / messages * 1e6,
    }


async def run(quick: bool) -> dict[str, Any]:
    pairs = 200 if quick else PAIRS
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with trio.fail_after(30 if quick else 300), tempfile.TemporaryDirectory() as tmp:
        seeded = pathlib.Path(tmp) / "seeded.db"
        conversations = await _seed(seeded, pairs)
        lines = []
        for synchronous in ("full", "normal"):
            for batch in (1, 10, 30):
                messages = (30 if quick else 3_000) * (1 if batch == 1 else 5)
                db = pathlib.Path(tmp) / f"run-{synchronous}-{batch}.db"
                shutil.copy(seeded, db)
                lines.append(await _appends(db, conversations, synchronous, batch, messages))
    return {
        "started_at": started_at,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "conversations": pairs,
        "text_chars": len(TEXT),
        "lines": lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="few messages (smoke run)")
    args = parser.parse_args()
    result = trio.run(run, args.quick)
    print(
        f"store writes, {result['conversations']:,} direct conversations, "
        f"{result['text_chars']}-char messages (us/message)"
    )
    print(f"  {'synchronous':12} {'batch':>5} {'writer CPU':>11} {'loop CPU':>9} {'wall':>9}")
    for line in result["lines"]:
        print(
            f"  {line['synchronous']:12} {line['batch']:5} {line['writer_us_per_msg']:11.1f}"
            f" {line['loop_us_per_msg']:9.1f} {line['wall_us_per_msg']:9.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
