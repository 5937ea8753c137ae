"""Every spec transcript against a real in-process server over real sockets.

The backend is the test harness's `running_server` (fresh server and SQLite database per
transcript, the transcript's `config` as `Settings` overrides); the runner is the server-
agnostic `hoomi.conformance.transcripts`, which speaks the protocol with its own client.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import jwt
import pytest
import trio

from conftest import SPEC
from harness import SECRET, WRONG_SECRET, Running, running_server
from hoomi.conformance import (
    Outcome,
    Result,
    Transcript,
    Unsupported,
    load_transcripts,
    match,
    run_transcript,
    unsigned_jwt,
)
from hoomi.server.config import FIELDS

TRANSCRIPTS: Final = load_transcripts(SPEC / "transcripts")

# Transcripts that fail because the server misbehaves: name -> the diagnosed server bug.
SERVER_BUGS: Final[Mapping[str, str]] = {}


class InProcessBackend:
    """A `Backend` on `running_server`: each `start` is a fresh server and database, served
    by a task in `nursery` (so the runner may bound `start` and `stop` with cancel scopes)."""

    def __init__(self, tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
        self._tmp_path = tmp_path
        self._nursery = nursery
        self._running: Running | None = None
        self._stop = trio.Event()
        self._stopped = trio.Event()
        self._stopped.set()
        self._starts = 0

    @property
    def running(self) -> Running:
        assert self._running is not None, "start the backend first"
        return self._running

    async def start(self, config: Mapping[str, Any]) -> str:
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
            async with running_server(self._tmp_path, database=database, **config) as running:
                self._running = running
                task_status.started(running.url)
                await self._stop.wait()
        finally:
            self._running = None
            self._stopped.set()

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    def mint(
        self,
        sub: str,
        *,
        exp_in_s: int | None = 3600,
        nbf_in_s: int | None = None,
        alg: str = "HS256",
        key: str = "valid",
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now}
        if exp_in_s is not None:
            claims["exp"] = now + exp_in_s
        if nbf_in_s is not None:
            claims["nbf"] = now + nbf_in_s
        if alg == "none":
            return unsigned_jwt(claims)
        return jwt.encode(claims, SECRET if key == "valid" else WRONG_SECRET, alg)

    async def create_conversation(
        self, kind: str, members: Sequence[str], title: str | None
    ) -> str:
        conversation_kind: Literal["direct", "group"] = "group" if kind == "group" else "direct"
        assert kind == conversation_kind, f"unknown conversation kind {kind!r}"
        info = await self.running.server.create_conversation(
            kind=conversation_kind, members=list(members), title=title
        )
        return info.conversation_id

    async def post(self, conversation_id: str, sender: str | None, text: str, kind: str) -> None:
        if kind == "system":
            await self.running.server.post(conversation_id, text)
            return
        assert sender is not None, "a user message needs a sender"
        # A user's message as if sent, minus the connection: fanned out like any send.
        await self.running.server.post(conversation_id, text, sender, kind="user")

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
