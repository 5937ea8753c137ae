"""Every spec transcript against a real in-process server over real sockets.

The backend is the test harness's `running_server` (fresh server and SQLite database per
transcript, the transcript's `config` as `Settings` overrides); the runner is the server-
agnostic `hoomi.conformance.transcripts`, which speaks the protocol with its own client.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import pytest
import trio

import broken
from conftest import SPEC
from harness import SECRET, WRONG_SECRET, Running, mint, running_server
from hoomi.conformance import (
    Outcome,
    Result,
    TokenSpec,
    Transcript,
    Unsupported,
    load_transcripts,
    match,
    run_transcript,
)
from hoomi.conformance.monitor import InvariantBroken, SeqMonitor
from hoomi.conformance.users import unique_ids, with_users
from hoomi.server.config import FIELDS

TRANSCRIPTS: Final = load_transcripts(SPEC / "transcripts")

# Transcripts that fail because the server misbehaves: name -> the diagnosed server bug.
SERVER_BUGS: Final[Mapping[str, str]] = {}


class InProcessBackend:
    """A `Backend` on `running_server`: each `start` is a fresh server and database, served
    by a task in `nursery` (so the runner may bound `start` and `stop` with cancel scopes);
    with `admin`, the server's admin API listens too."""

    def __init__(
        self, tmp_path: pathlib.Path, nursery: trio.Nursery, *, admin: bool = False
    ) -> None:
        self._tmp_path = tmp_path
        self._nursery = nursery
        self._admin = admin
        self._running: Running | None = None
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._stopped.set()
        self._starts = 0

    @property
    def running(self) -> Running:
        assert self._running is not None, "start the backend first"
        return self._running

    async def start(self, config: Mapping[str, Any], tokens: frozenset[TokenSpec]) -> str:
        unknown = sorted(set(config) - set(FIELDS))
        if unknown:
            raise Unsupported(f"no server setting for {', '.join(unknown)}")
        await self.stop()
        self._starts += 1
        url: str = await self._nursery.start(self._serve, config)
        return url

    async def _serve(self, config: Mapping[str, Any], *, task_status: trio.TaskStatus[str]) -> None:
        self._stop = trio.Event()
        self._stopped = trio.Event()
        try:
            database = f"hoomi-{self._starts}.db"
            async with running_server(
                self._tmp_path, database=database, admin=self._admin, **config
            ) as running:
                self._running = running
                task_status.started(running.url)
                await self._stop.wait()
        finally:
            self._running = None
            self._stopped.set()

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    async def mint(self, sub: str, spec: TokenSpec) -> str:
        now = self.running.server.wall()
        return mint(
            sub,
            ttl_s=spec.exp_in_s,
            secret=SECRET if spec.key == "valid" else WRONG_SECRET,
            alg="none" if spec.alg == "none" else "HS256",
            now=now,
            **({} if spec.nbf_in_s is None else {"nbf": int(now) + spec.nbf_in_s}),
        )

    async def create_conversation(
        self, kind: str, members: Sequence[str], title: str | None
    ) -> str:
        conversation_kind: Literal["direct", "group"] = "group" if kind == "group" else "direct"
        assert kind == conversation_kind, f"unknown conversation kind {kind!r}"
        info = await self.running.server.create_conversation(
            kind=conversation_kind, members=list(members), title=title
        )
        return info.conversation_id

    async def post(self, conversation_id: str, sender: str | None, text: str, kind: str) -> int:
        if kind == "system":
            return (await self.running.server.post(conversation_id, text)).seq
        assert sender is not None, "a user message needs a sender"
        # A user's message as if sent, minus the connection: fanned out like any send.
        return (await self.running.server.post(conversation_id, text, sender, kind="user")).seq

    async def add_member(self, conversation_id: str, user: str) -> None:
        await self.running.server.add_member(conversation_id, user)

    async def remove_member(self, conversation_id: str, user: str) -> None:
        await self.running.server.remove_member(conversation_id, user)

    async def kick(self, session_id: str) -> None:
        assert self.running.server.kick(session_id), f"no live session {session_id}"

    async def drain(self) -> None:
        self.running.server.shutdown()


@asynccontextmanager
async def in_process_backend(tmp_path: pathlib.Path) -> AsyncIterator[InProcessBackend]:
    async with trio.open_nursery() as nursery:
        yield InProcessBackend(tmp_path, nursery)
        nursery.cancel_scope.cancel()


async def run(transcript: Transcript, tmp_path: pathlib.Path) -> Result:
    async with in_process_backend(tmp_path) as backend:
        return await run_transcript(transcript, backend)


def _param(transcript: Transcript) -> Any:
    bug = SERVER_BUGS.get(transcript.name)
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(transcript, id=transcript.name, marks=marks)


@pytest.mark.parametrize("transcript", [_param(t) for t in TRANSCRIPTS])
async def test_transcript(transcript: Transcript, tmp_path: pathlib.Path) -> None:
    result = await run(transcript, tmp_path)
    assert result.passed, result.describe()


def test_every_transcript_is_run() -> None:
    files = sorted(p.stem for p in (SPEC / "transcripts").glob("*.json"))
    assert [t.name for t in TRANSCRIPTS] == files
    assert set(SERVER_BUGS) <= set(files)


# -- the runner itself ----------------------------------------------------------------------


def test_patterns_follow_the_readme() -> None:
    assert match(10, 10.0) is None
    assert match(True, 1) is not None
    assert match(1, True) is not None
    assert match({"a": 1}, {"a": 1, "b": 2}) is None
    assert match({"a": {"$absent": True}}, {"b": 1}) is None
    assert match({"a": {"$absent": True}}, {"a": None}) is not None
    assert match([1, 2], [1, 2, 3]) is not None
    assert match({"$unordered": ["b", "a"]}, ["a", "b"]) is None
    assert match({"$unordered": ["a", "a"]}, ["a", "b"]) is not None
    assert match({"$any": "integer"}, 3) is None
    assert match({"$any": "integer"}, True) is not None
    assert match({"$any": "string"}, 3) is not None
    assert match({"$conv": "dm"}, "c_1", conversations={"dm": "c_1"}) is None
    assert match({"$i": "s"}, "s3", iteration=3) is None
    variables: dict[str, Any] = {}
    assert match({"id": {"$capture": "m"}}, {"id": "x"}, variables=variables) is None
    assert variables == {"m": "x"}
    assert match({"$var": "m"}, "x", variables=variables) is None
    assert match({"$var": "m"}, "y", variables=variables) == 'at $: expected "x" ($var m), got "y"'


def _transcript(steps: list[dict[str, Any]], **extra: Any) -> Transcript:
    return Transcript.from_dict(
        {
            "name": "runner-self-test",
            "title": "t",
            "requirements": ["HOOMI-LIVE-2"],
            "ignore_types": ["presence"],
            "setup": {
                "users": ["alice", "bob"],
                "conversations": [{"ref": "dm", "kind": "direct", "members": ["alice", "bob"]}],
            },
            "steps": steps,
            **extra,
        }
    )


HELLO: Final[list[dict[str, Any]]] = [
    {"connect": "a1", "as": "alice"},
    {"send": "a1", "frame": {"type": "hello", "id": "h1", "token": {"$token": {"sub": "alice"}}}},
    {"expect": "a1", "message": {"type": "welcome", "id": "h1"}},
]


async def test_a_wrong_expectation_fails_at_its_step(tmp_path: pathlib.Path) -> None:
    steps = [
        *HELLO,
        {"send": "a1", "frame": {"type": "ping", "id": "p1"}},
        {"expect": "a1", "message": {"type": "pong", "id": "p2"}},
    ]
    result = await run(_transcript(steps), tmp_path)
    assert result.outcome is Outcome.FAILED
    assert result.step == 4
    assert '"id":"p1"' in result.message
    assert "at $.id" in result.message


async def test_waits_are_bounded(tmp_path: pathlib.Path) -> None:
    steps = [*HELLO, {"expect": "a1", "message": {"type": "pong"}, "timeout_ms": 200}]
    with trio.fail_after(10):
        result = await run(_transcript(steps), tmp_path)
    assert result.outcome is Outcome.FAILED
    assert "within 200 ms; nothing arrived" in result.message


async def test_unknown_settings_skip(tmp_path: pathlib.Path) -> None:
    transcript = _transcript(HELLO, config={"no_such_setting": 1})
    result = await run(transcript, tmp_path)
    assert result.outcome is Outcome.SKIPPED


async def test_a_failing_step_is_attributed_to_its_own_requirements(
    tmp_path: pathlib.Path,
) -> None:
    steps = [
        *HELLO,
        {"send": "a1", "frame": {"type": "ping", "id": "p1"}},
        {"expect": "a1", "message": {"type": "pong", "id": "p2"}, "requirements": ["HOOMI-REQ-1"]},
    ]
    tagged = await run(_transcript(steps, requirements=["HOOMI-LIVE-2", "HOOMI-REQ-1"]), tmp_path)
    assert tagged.failed_requirements == ("HOOMI-REQ-1",)
    del steps[-1]["requirements"]
    untagged = await run(_transcript(steps, requirements=["HOOMI-LIVE-2", "HOOMI-REQ-1"]), tmp_path)
    assert untagged.failed_requirements == ("HOOMI-LIVE-2", "HOOMI-REQ-1")


def test_the_monitor_wants_each_seq_one_above_the_last() -> None:
    def message(seq: int, cid: str = "c1") -> dict[str, Any]:
        return {"type": "message", "message": {"conversation_id": cid, "seq": seq}}

    monitor = SeqMonitor("a1")
    for frame in (message(4), message(5), message(1, "c2"), {"type": "pong"}, message(6)):
        monitor.check(frame)  # any first seq; then one above the last
    with pytest.raises(InvariantBroken) as gap:
        monitor.check(message(8))
    assert gap.value.requirements == ("HOOMI-SEND-2",)
    assert "seqs 7..7 are missing" in str(gap.value)
    with pytest.raises(InvariantBroken) as repeat:
        monitor.check(message(8))
    assert repeat.value.requirements == ("HOOMI-DELIVER-2",)
    with pytest.raises(InvariantBroken):
        monitor.check(message(2))
    # A history page, resume_gap or conversation_left resets what is expected, and
    # conversation_joined announces it: each jump below follows one (else it is a gap).
    resets = (
        {"type": "history_page", "conversation_id": "c1", "messages": []},
        {"type": "resume_gap", "conversation_id": "c1", "after_seq": 1, "latest_seq": 9},
        {"type": "conversation_left", "conversation_id": "c1"},
        {
            "type": "conversation_joined",
            "conversation": {"conversation_id": "c1", "latest_seq": 79},
        },
    )
    for jump, reset in zip((50, 60, 70, 80), resets, strict=True):
        monitor.check(reset)
        monitor.check(message(jump))


async def test_the_monitor_fails_the_step_that_consumes_a_gap(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken.skip_a_seq(monkeypatch)
    steps = [
        *HELLO,
        {"operator": "post", "conversation": "dm", "text": "one", "kind": "system"},
        {"expect": "a1", "message": {"type": "message"}},
        {"operator": "post", "conversation": "dm", "text": "two", "kind": "system"},
        {"expect": "a1", "message": {"type": "message"}, "requirements": ["HOOMI-LIVE-2"]},
    ]
    result = await run(_transcript(steps), tmp_path)
    assert result.outcome is Outcome.FAILED
    assert result.step == 6
    assert result.failed_requirements == ("HOOMI-SEND-2",)
    assert "received seq 3 of conversation" in result.message


def test_users_get_run_unique_ids_wherever_a_user_id_appears() -> None:
    transcript = Transcript.from_dict(
        {
            "name": "t",
            "title": "t",
            "requirements": ["HOOMI-LIVE-2"],
            "setup": {
                "users": ["alice", "bob"],
                "conversations": [{"ref": "dm", "kind": "direct", "members": ["alice", "bob"]}],
                "messages": [{"conversation": "dm", "sender": "bob", "text": "alice"}],
            },
            "steps": [
                {"connect": "a1", "as": "alice"},
                {"send": "a1", "frame": {"type": "hello", "token": {"$token": {"sub": "alice"}}}},
                {"send": "a1", "frame": {"type": "presence_query", "user_ids": ["bob", "zed"]}},
                {
                    "expect": "a1",
                    "message": {
                        "user_id": "alice",
                        "text": "bob",
                        "conversations": [{"members": {"$unordered": ["alice", "bob"]}}],
                        "message": {"sender_id": "system", "id": {"$var": "alice"}},
                    },
                },
                {"operator": "add_member", "conversation": "dm", "user": "bob"},
                {
                    "repeat": 2,
                    "steps": [{"expect_any_order": "a1", "messages": [{"sender_id": "bob"}]}],
                },
            ],
        }
    )
    renamed = with_users(transcript, unique_ids(["alice", "bob"], suffix="0f"))
    assert renamed.setup == {
        "users": ["alice-0f", "bob-0f"],
        "conversations": [{"ref": "dm", "kind": "direct", "members": ["alice-0f", "bob-0f"]}],
        "messages": [{"conversation": "dm", "sender": "bob-0f", "text": "alice"}],
    }
    connect, hello, query, expect, operator, repeat = renamed.steps
    assert connect["as"] == "alice-0f"
    assert hello["frame"]["token"] == {"$token": {"sub": "alice-0f"}}
    assert query["frame"]["user_ids"] == ["bob-0f", "zed"]
    assert expect["message"] == {
        "user_id": "alice-0f",
        "text": "bob",
        "conversations": [{"members": {"$unordered": ["alice-0f", "bob-0f"]}}],
        "message": {"sender_id": "system", "id": {"$var": "alice"}},
    }
    assert operator["user"] == "bob-0f"
    assert repeat["steps"][0]["messages"] == [{"sender_id": "bob-0f"}]
    assert len(unique_ids(["alice"])["alice"]) == len("alice-") + 8
