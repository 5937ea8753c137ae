"""Run the spec's transcripts (spec/v1/transcripts/README.md) against a live server.

    run_transcript ─┬─ backend.start(config) → ws URL
                    ├─ setup through the backend: conversations, then messages
                    ├─ one nursery per run ─┬─ steps (this task)
                    │                       └─ one reader task per connection
                    ├─ close what is still open (bounded), cancel the readers
                    └─ backend.stop()

The runner speaks the protocol with its own small WebSocket client (wsproto over a trio
stream), so it controls what a library would hide: `pause_reading` stops reading the socket
altogether (no pongs, the server's writes back up), `drop` aborts the TCP connection without
a close frame and `text_bytes` sends a text frame with arbitrary bytes. Everything that is not
the WebSocket goes through a `Backend`: the in-process test backend wraps `Server`; another
one could drive a server process through its admin API.

Setup messages and `post` steps of kind `user` are stored through `Backend.post` as well, not
sent over a connection: setup then opens no sessions, so it causes no presence events, uses
no rate-limit tokens and no session slots, and seqs stay deterministic.

On a shared server (`unique_users=True`) each run renames its users to run-unique ids
(`hoomi.conformance.users`). Every consumed `message` event passes the seq monitor
(`hoomi.conformance.monitor`). A failing step is attributed to its own `requirements` if it
lists any, else to the transcript's; a broken invariant to the monitor's ids.

Bounds: `expect`, `expect_any_order`, `expect_close`, `close` and `connect` wait at most the
step timeout (`timeout_ms`, or the step's own `timeout_ms`); `expect_silence` and `sleep_ms`
wait what they say; backend calls at most `backend_timeout_s`; closing what is left open at
the end at most `_CLEANUP_S`. A run's reader tasks never outlive `run_transcript`.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import pathlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from .client import SHOW_CHARS, Bad, Connection, End, Frame, StepFailed
from .monitor import SEND_2, InvariantBroken, SeqMonitor
from .users import unique_ids, with_users

DEFAULT_TIMEOUT_MS = 5000
_CLEANUP_S = 2.0

# -- errors and results -------------------------------------------------------------------


class TranscriptError(Exception):
    """The transcript itself is wrong: an unknown verb, connection, conversation ref or var."""


class Unsupported(Exception):
    """Raised by `Backend.start` when it cannot apply a config setting or mint a token the
    transcript needs: the transcript is then reported as skipped, never as passed."""


class _Failure(Exception):
    def __init__(
        self, step: int | None, where: str, message: str, requirements: tuple[str, ...]
    ) -> None:
        super().__init__(message)
        self.step = step
        self.where = where
        self.message = message
        self.requirements = requirements


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@attrs.frozen(kw_only=True)
class Result:
    """What happened to one transcript. `step` is the index into `Transcript.steps` of the
    failing step (None if setup or the server itself failed); `where` names it for people.
    `failed_requirements` are the ids a failure is attributed to (empty unless failed)."""

    name: str
    outcome: Outcome
    requirements: tuple[str, ...]
    step: int | None = None
    where: str = ""
    message: str = ""
    duration_s: float = 0.0
    failed_requirements: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    def describe(self) -> str:
        ids = self.failed_requirements or self.requirements
        head = f"{self.name}: {self.outcome.value} ({', '.join(ids)})"
        if self.outcome is Outcome.PASSED:
            return head
        where = f" at {self.where}" if self.where else ""
        return f"{head}{where}: {self.message}"


# -- transcripts ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Transcript:
    """One parsed transcript file; `steps` and `setup` stay plain JSON."""

    name: str
    title: str
    requirements: tuple[str, ...]
    config: Mapping[str, Any]
    ignore_types: frozenset[str]
    setup: Mapping[str, Any]
    steps: tuple[Mapping[str, Any], ...]
    description: str = ""
    path: pathlib.Path | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: pathlib.Path | None = None) -> Transcript:
        try:
            return cls(
                name=data["name"],
                title=data["title"],
                requirements=tuple(data["requirements"]),
                config=dict(data.get("config", {})),
                ignore_types=frozenset(data.get("ignore_types", ())),
                setup=data["setup"],
                steps=tuple(data["steps"]),
                description=data.get("description", ""),
                path=path,
            )
        except (KeyError, TypeError) as exc:
            raise TranscriptError(f"{path or 'transcript'}: missing or bad field {exc}") from None


def load_transcripts(directory: str | os.PathLike[str]) -> list[Transcript]:
    """Every `*.json` transcript in `directory`, sorted by file name."""
    transcripts = []
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        transcript = Transcript.from_dict(json.loads(path.read_text(encoding="utf-8")), path)
        if transcript.name != path.stem:
            raise TranscriptError(f"{path}: name {transcript.name!r} is not the file stem")
        transcripts.append(transcript)
    return transcripts


# -- the backend ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TokenSpec:
    """What a `$token` placeholder asks for, besides its `sub` (see the README). `alg`
    None: the algorithm the server is configured for."""

    exp_in_s: int | None = 3600  # None: no exp claim at all
    nbf_in_s: int | None = None
    alg: str | None = None
    key: str = "valid"

    @classmethod
    def of(cls, placeholder: Mapping[str, Any]) -> TokenSpec:
        """The spec of a `$token` argument ({"sub": ..., "exp_in_s"?: ..., ...})."""
        names = ("exp_in_s", "nbf_in_s", "alg", "key")
        return cls(**{name: placeholder[name] for name in names if name in placeholder})

    def describe(self) -> str:
        parts = [f"alg {self.alg}"] if self.alg is not None else []
        if self.key != "valid":
            parts.append(f"a {self.key} key")
        if self.nbf_in_s is not None:
            parts.append(f"nbf now{self.nbf_in_s:+d} s")
        if self.exp_in_s is None:
            parts.append("no exp")
        elif self.exp_in_s != 3600:
            parts.append(f"exp now{self.exp_in_s:+d} s")
        return ", ".join(parts) or "a default token"


class Backend(Protocol):
    """Everything the runner needs that is not the WebSocket.

    The runner bounds every call with a cancel scope, so a backend must not leave anything
    open in the caller's task: an in-process server runs in a task of the backend's own
    nursery (`await nursery.start(...)` in `start`), not in a context entered by `start`.
    """

    async def start(self, config: Mapping[str, Any], tokens: frozenset[TokenSpec]) -> str:
        """Start (or reset to) a fresh server with an empty store and `config` on top of the
        defaults, or check that a shared server runs with `config`; return its WebSocket URL.
        `tokens` are the kinds of token the transcript will ask `mint` for. Raise
        `Unsupported` for a setting it cannot apply or a token it cannot mint."""
        ...

    async def stop(self) -> None:
        """Stop the server started by `start` (it is never reused after a drain)."""
        ...

    async def mint(self, sub: str, spec: TokenSpec) -> str:
        """A JWT for `sub` with iat = now, exp = now + exp_in_s (none if exp_in_s is None),
        nbf = now + nbf_in_s if given, plus any claims the server requires. alg "none":
        unsigned (see `unsigned_jwt`); key "wrong": signed with a key the server does not
        trust."""
        ...

    async def create_conversation(
        self, kind: str, members: Sequence[str], title: str | None
    ) -> str:
        """Create a conversation; return the server's id for it."""
        ...

    async def post(self, conversation_id: str, sender: str | None, text: str, kind: str) -> int:
        """Store a message: kind "user" as `sender`'s message, kind "system" as the server's;
        return the seq it was stored under."""
        ...

    async def add_member(self, conversation_id: str, user: str) -> None: ...

    async def remove_member(self, conversation_id: str, user: str) -> None: ...

    async def kick(self, session_id: str) -> None:
        """Close that session with kicked (4004)."""
        ...

    async def drain(self) -> None:
        """Start a graceful shutdown; return without waiting for it to finish."""
        ...


def unsigned_jwt(claims: Mapping[str, Any]) -> str:
    """A JWT with alg "none" and an empty signature, for backends' `mint`."""

    def part(obj: Mapping[str, Any]) -> str:
        raw = json.dumps(dict(obj), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# -- placeholders and patterns --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Env:
    conversations: Mapping[str, str]
    variables: Mapping[str, Any]
    iteration: int | None = None

    def resolve(self, key: str, arg: Any) -> Any:
        if key == "$conv":
            if arg not in self.conversations:
                raise TranscriptError(f"unknown conversation ref {arg!r}")
            return self.conversations[arg]
        if key == "$var":
            if arg not in self.variables:
                raise TranscriptError(f"$var {arg!r} was never captured")
            return self.variables[arg]
        if key == "$i":
            if self.iteration is None:
                raise TranscriptError("$i outside repeat")
            return f"{arg}{self.iteration}"
        raise TranscriptError(f"unknown placeholder {key}")

    def with_captures(self, captures: Mapping[str, Any]) -> _Env:
        if not captures:
            return self
        return attrs.evolve(self, variables={**self.variables, **captures})


def _special(value: Any) -> tuple[str, Any] | None:
    """(key, argument) if `value` is a placeholder object like {"$conv": "dm"}."""
    if isinstance(value, dict) and len(value) == 1:
        [(key, arg)] = value.items()
        if isinstance(key, str) and key.startswith("$"):
            return key, arg
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    if len(text) > SHOW_CHARS:
        return f"{text[:SHOW_CHARS]}…({len(text)} chars)"
    return text


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, but booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and bool(a == b)


def _is_type(value: Any, name: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name == "integer":
        return number and (isinstance(value, int) or float(value).is_integer())
    checks: dict[str, bool] = {
        "string": isinstance(value, str),
        "number": number,
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "null": value is None,
    }
    if name not in checks:
        raise TranscriptError(f"unknown $any type {name!r}")
    return checks[name]


class _Mismatch(Exception):
    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"at {path}: {detail}")
        self.path = path
        self.detail = detail


def _match(pattern: Any, value: Any, env: _Env, path: str) -> dict[str, Any]:
    """Match per the README; return the new captures or raise `_Mismatch`."""
    special = _special(pattern)
    if special is not None:
        key, arg = special
        if key == "$any":
            if not _is_type(value, arg):
                raise _Mismatch(path, f"expected any {arg}, got {_show(value)}")
            return {}
        if key == "$capture":
            if arg in env.variables:
                raise TranscriptError(f"$capture {arg!r} is captured twice")
            return {arg: value}
        if key == "$unordered":
            return _match_unordered(arg, value, env, path)
        expected = env.resolve(key, arg)
        if not _json_equal(expected, value):
            what = f"{_show(expected)} ({key} {arg})"
            raise _Mismatch(path, f"expected {what}, got {_show(value)}")
        return {}
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            raise _Mismatch(path, f"expected an object, got {_show(value)}")
        captures: dict[str, Any] = {}
        for key, sub in pattern.items():
            sub_path = f"{path}.{key}"
            if _special(sub) == ("$absent", True):
                if key in value:
                    raise _Mismatch(sub_path, f"expected no such key, got {_show(value[key])}")
                continue
            if key not in value:
                raise _Mismatch(sub_path, f"missing (expected {_show(sub)})")
            captures.update(_match(sub, value[key], env.with_captures(captures), sub_path))
        return captures
    if isinstance(pattern, list):
        if not isinstance(value, list) or len(value) != len(pattern):
            raise _Mismatch(path, f"expected an array of {len(pattern)}, got {_show(value)}")
        captures = {}
        for index, (sub, item) in enumerate(zip(pattern, value, strict=True)):
            captures.update(_match(sub, item, env.with_captures(captures), f"{path}[{index}]"))
        return captures
    if not _json_equal(pattern, value):
        raise _Mismatch(path, f"expected {_show(pattern)}, got {_show(value)}")
    return {}


def _assign(patterns: Sequence[Any], values: Sequence[Any], env: _Env) -> dict[str, Any] | None:
    """Captures of a one-to-one matching of `patterns` to `values` in some order, or None."""

    def search(i: int, used: frozenset[int], captures: dict[str, Any]) -> dict[str, Any] | None:
        if i == len(patterns):
            return captures
        for j, value in enumerate(values):
            if j in used:
                continue
            try:
                got = _match(patterns[i], value, env.with_captures(captures), "$")
            except _Mismatch:
                continue
            found = search(i + 1, used | {j}, {**captures, **got})
            if found is not None:
                return found
        return None

    if len(patterns) != len(values):
        return None
    return search(0, frozenset(), {})


def _match_unordered(patterns: Any, value: Any, env: _Env, path: str) -> dict[str, Any]:
    if not isinstance(patterns, list):
        raise TranscriptError("$unordered needs an array")
    if not isinstance(value, list) or len(value) != len(patterns):
        raise _Mismatch(path, f"expected an array of {len(patterns)}, got {_show(value)}")
    found = _assign(patterns, value, env)
    if found is None:
        raise _Mismatch(path, f"no order of {_show(value)} matches {_show(patterns)}")
    return found


def match(
    pattern: Any,
    value: Any,
    *,
    conversations: Mapping[str, str] | None = None,
    variables: dict[str, Any] | None = None,
    iteration: int | None = None,
) -> str | None:
    """Match `value` against a transcript pattern: None if it matches (new captures are
    stored into `variables`), else where and why it does not."""
    store = {} if variables is None else variables
    env = _Env(conversations=conversations or {}, variables=store, iteration=iteration)
    try:
        captures = _match(pattern, value, env, "$")
    except _Mismatch as mismatch:
        return str(mismatch)
    store.update(captures)
    return None


Mint = Callable[[str, TokenSpec], Awaitable[str]]


async def _substitute(value: Any, env: _Env, mint: Mint) -> Any:
    """A frame with its placeholders replaced ($token, $conv, $var, $fill, $i)."""
    special = _special(value)
    if special is not None:
        key, arg = special
        if key == "$token":
            return await mint(arg["sub"], TokenSpec.of(arg))
        if key == "$fill":
            return str(arg["with"]) * int(arg["length"])
        return env.resolve(key, arg)
    if isinstance(value, dict):
        return {k: await _substitute(v, env, mint) for k, v in value.items()}
    if isinstance(value, list):
        return [await _substitute(v, env, mint) for v in value]
    return value


def token_specs(transcript: Transcript) -> frozenset[TokenSpec]:
    """The kinds of token the transcript's frames ask for."""
    found: set[TokenSpec] = set()

    def walk(value: Any) -> None:
        special = _special(value)
        if special is not None and special[0] == "$token":
            found.add(TokenSpec.of(special[1]))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for step in transcript.steps:
        for sub in step.get("steps", [step]):
            walk(sub.get("frame"))
    return frozenset(found)


def drains(transcript: Transcript) -> bool:
    """Whether the transcript drains (shuts down) the server."""
    return any(
        sub.get("operator") == "drain"
        for step in transcript.steps
        for sub in step.get("steps", [step])
    )


# -- the WebSocket client -------------------------------------------------------------------


def _verb(step: Mapping[str, Any]) -> str:
    for verb in (
        "connect",
        "send",
        "expect",
        "expect_any_order",
        "expect_silence",
        "expect_close",
        "close",
        "drop",
        "pause_reading",
        "sleep_ms",
        "operator",
        "repeat",
    ):
        if verb in step:
            return verb
    raise TranscriptError(f"a step without a known verb: {_show(step)}")


def _label(step: Mapping[str, Any]) -> str:
    verb = _verb(step)
    target = step[verb]
    if verb == "operator" and "target" in step:
        return f"operator {target} {step['target']}"
    return f"{verb} {target}"


class _Run:
    def __init__(
        self,
        transcript: Transcript,
        backend: Backend,
        url: str,
        nursery: trio.Nursery,
        *,
        timeout_ms: int,
        backend_timeout_s: float,
    ) -> None:
        self.transcript = transcript
        self.backend = backend
        self.url = url
        self.nursery = nursery
        self.timeout_ms = timeout_ms
        self.backend_timeout_s = backend_timeout_s
        self.conversations: dict[str, str] = {}
        self.variables: dict[str, Any] = {}
        self.iteration: int | None = None
        self.connections: dict[str, Connection] = {}
        self.monitors: dict[str, SeqMonitor] = {}

    @property
    def env(self) -> _Env:
        return _Env(
            conversations=self.conversations, variables=self.variables, iteration=self.iteration
        )

    async def _call(self, what: str, call: Awaitable[Any]) -> Any:
        try:
            with trio.fail_after(self.backend_timeout_s):
                return await call
        except trio.TooSlowError:
            raise StepFailed(f"{what}: no answer within {self.backend_timeout_s} s") from None
        except (TranscriptError, StepFailed):
            raise
        except Exception as exc:
            raise StepFailed(f"{what} failed: {exc!r}") from exc

    def _conv(self, ref: str) -> str:
        return str(self.env.resolve("$conv", ref))

    def _connection(self, name: str) -> Connection:
        if name not in self.connections:
            raise TranscriptError(f"no connection named {name!r}")
        return self.connections[name]

    def _deadline(self, step: Mapping[str, Any]) -> tuple[float, int]:
        ms = int(step.get("timeout_ms", self.timeout_ms))
        return trio.current_time() + ms / 1000, ms

    # -- the whole run ---------------------------------------------------------------------

    async def execute(self) -> None:
        everything = self.transcript.requirements
        try:
            await self.setup()
        except InvariantBroken as broken:
            raise _Failure(None, "setup", str(broken), broken.requirements) from None
        except StepFailed as failed:
            raise _Failure(None, "setup", str(failed), everything) from None
        for index, step in enumerate(self.transcript.steps):
            if _verb(step) == "repeat":
                times = int(step["repeat"])
                for iteration in range(1, times + 1):
                    self.iteration = iteration
                    for sub_index, sub in enumerate(step["steps"]):
                        where = (
                            f"steps[{index}].steps[{sub_index}] ({_label(sub)}, iteration "
                            f"{iteration} of {times})"
                        )
                        ids = sub.get("requirements") or step.get("requirements") or everything
                        await self._step(index, where, sub, tuple(ids))
                self.iteration = None
            else:
                ids = tuple(step.get("requirements") or everything)
                await self._step(index, f"steps[{index}] ({_label(step)})", step, ids)
        for name, connection in self.connections.items():
            if connection.violations:
                raise _Failure(
                    None,
                    "end",
                    f"{name} received {connection.violations[0]} (left unread)",
                    everything,
                )

    async def _step(
        self, index: int, where: str, step: Mapping[str, Any], requirements: tuple[str, ...]
    ) -> None:
        """Run one step; a failure is attributed to `requirements`, a broken invariant to
        the ids it names."""
        try:
            await self.step(step)
        except InvariantBroken as broken:
            raise _Failure(index, where, str(broken), broken.requirements) from None
        except StepFailed as failed:
            raise _Failure(index, where, str(failed), requirements) from None
        except TranscriptError as bad:
            raise _Failure(index, where, f"invalid transcript: {bad}", requirements) from None

    async def _mint(self, sub: str, spec: TokenSpec) -> str:
        token: str = await self._call(f"minting a token for {sub}", self.backend.mint(sub, spec))
        return token

    async def _take(self, connection: Connection, deadline: float) -> Frame | Bad | End | None:
        """`connection.next_item`, with every consumed frame shown to its seq monitor."""
        item = await connection.next_item(deadline)
        if isinstance(item, Frame):
            self.monitors[connection.name].check(item.value)
        return item

    async def setup(self) -> None:
        setup = self.transcript.setup
        for conv in setup.get("conversations", ()):
            cid = await self._call(
                f"creating conversation {conv['ref']!r}",
                self.backend.create_conversation(conv["kind"], conv["members"], conv.get("title")),
            )
            self.conversations[conv["ref"]] = str(cid)
        stored: dict[str, int] = {}
        for number, message in enumerate(setup.get("messages", ()), 1):
            ref = message["conversation"]
            seq = await self._call(
                f"storing setup message {number}",
                self.backend.post(
                    self._conv(ref),
                    message.get("sender"),
                    message["text"],
                    message.get("kind", "user"),
                ),
            )
            stored[ref] = stored.get(ref, 0) + 1
            if seq != stored[ref]:
                # The README promises literal seqs from 1 in setup order; this is the
                # first place a server that skips or reuses seqs shows it.
                raise InvariantBroken(
                    f"setup message {number} was stored as seq {seq} of conversation {ref!r} "
                    f"where seq {stored[ref]} was due: seqs start at 1 and are gap-free "
                    "(HOOMI-SEND-2)",
                    (SEND_2,),
                )

    async def close_all(self) -> None:
        """Close what is still open, politely and concurrently, within `_CLEANUP_S`."""
        deadline = trio.current_time() + _CLEANUP_S
        async with trio.open_nursery() as nursery:
            for connection in self.connections.values():
                if not connection.closed_locally:
                    nursery.start_soon(connection.close, 1000, deadline)

    # -- steps -----------------------------------------------------------------------------

    async def step(self, step: Mapping[str, Any]) -> None:
        verb = _verb(step)
        if verb == "connect":
            await self._connect(step)
        elif verb == "send":
            await self._send(step)
        elif verb == "expect":
            await self._expect(step)
        elif verb == "expect_any_order":
            await self._expect_any_order(step)
        elif verb == "expect_silence":
            await self._expect_silence(step)
        elif verb == "expect_close":
            await self._expect_close(step)
        elif verb == "close":
            connection = self._connection(step["close"])
            deadline, ms = self._deadline(step)
            end = await connection.close(int(step.get("code", 1000)), deadline)
            if end is None:
                raise StepFailed(f"the server did not answer the close within {ms} ms")
            if end.code is None:
                raise StepFailed(f"expected the server's close frame, but {end.detail}")
        elif verb == "drop":
            await self._connection(step["drop"]).drop()
        elif verb == "pause_reading":
            self._connection(step["pause_reading"]).pause()
        elif verb == "sleep_ms":
            await trio.sleep(int(step["sleep_ms"]) / 1000)
        elif verb == "operator":
            await self._operator(step)
        else:
            raise TranscriptError("repeat inside repeat")

    async def _connect(self, step: Mapping[str, Any]) -> None:
        name = step["connect"]
        if name in self.connections:
            raise TranscriptError(f"connection {name!r} is opened twice")
        subprotocols = step.get("subprotocols", ["hoomi.v1"])
        deadline, ms = self._deadline(step)
        with trio.move_on_at(deadline):
            connection = await Connection.open(name, self.url, subprotocols)
            self.connections[name] = connection
            self.monitors[name] = SeqMonitor(name)
            self.nursery.start_soon(connection.read_loop)
            return
        raise StepFailed(f"the WebSocket handshake did not complete within {ms} ms")

    async def _send(self, step: Mapping[str, Any]) -> None:
        connection = self._connection(step["send"])
        if "frame" in step:
            frame = await _substitute(step["frame"], self.env, self._mint)
            self.monitors[connection.name].sent(frame)
            await connection.send_text(json.dumps(frame, separators=(",", ":"), ensure_ascii=False))
        elif "text" in step:
            await connection.send_text(step["text"])
        elif "binary" in step:
            await connection.send_binary(base64.b64decode(step["binary"], validate=True))
        elif "text_bytes" in step:
            await connection.send_text_bytes(base64.b64decode(step["text_bytes"], validate=True))
        else:
            raise TranscriptError("send without frame, text, binary or text_bytes")

    def _ignored(self, item: Frame) -> bool:
        value = item.value
        return isinstance(value, dict) and value.get("type") in self.transcript.ignore_types

    async def _next_frame(
        self, connection: Connection, deadline: float, ms: int, wanted: str
    ) -> Frame:
        """The next frame that is not of an ignored type, or fail saying what came instead."""
        while True:
            item = await self._take(connection, deadline)
            if item is None:
                raise StepFailed(f"expected {wanted} within {ms} ms; nothing arrived")
            if isinstance(item, End):
                raise StepFailed(f"expected {wanted}, but {item.detail}")
            if isinstance(item, Bad):
                raise StepFailed(f"expected {wanted}, got {item.detail}")
            if not self._ignored(item):
                return item

    async def _expect(self, step: Mapping[str, Any]) -> None:
        connection = self._connection(step["expect"])
        pattern = step["message"]
        deadline, ms = self._deadline(step)
        frame = await self._next_frame(connection, deadline, ms, _show(pattern))
        try:
            captures = _match(pattern, frame.value, self.env, "$")
        except _Mismatch as mismatch:
            raise StepFailed(
                f"expected {_show(pattern)}, got {_show(frame.value)}: {mismatch}"
            ) from None
        self.variables.update(captures)

    async def _expect_any_order(self, step: Mapping[str, Any]) -> None:
        connection = self._connection(step["expect_any_order"])
        patterns = list(step["messages"])
        deadline, ms = self._deadline(step)
        frames: list[Frame] = []
        for number in range(len(patterns)):
            wanted = f"{len(patterns)} frames matching {_show(patterns)} (got {number} so far: "
            wanted += f"{_show([f.value for f in frames])})"
            frames.append(await self._next_frame(connection, deadline, ms, wanted))
        values = [frame.value for frame in frames]
        found = _assign(patterns, values, self.env)
        if found is None:
            reasons = []
            for i, pattern in enumerate(patterns):
                for j, value in enumerate(values):
                    try:
                        _match(pattern, value, self.env, "$")
                    except _Mismatch as mismatch:
                        reasons.append(f"pattern {i + 1} vs frame {j + 1}: {mismatch}")
            raise StepFailed(
                f"expected frames matching {_show(patterns)} in any order, got {_show(values)}; "
                + "; ".join(reasons)
            )
        self.variables.update(found)

    async def _expect_silence(self, step: Mapping[str, Any]) -> None:
        connection = self._connection(step["expect_silence"])
        ms = int(step["ms"])
        deadline = trio.current_time() + ms / 1000
        while True:
            item = await self._take(connection, deadline)
            if item is None:
                return
            if isinstance(item, End):
                raise StepFailed(f"expected silence for {ms} ms, but {item.detail}")
            if isinstance(item, Bad):
                raise StepFailed(f"expected silence for {ms} ms, got {item.detail}")
            if not self._ignored(item):
                raise StepFailed(f"expected silence for {ms} ms, got {_show(item.value)}")

    async def _expect_close(self, step: Mapping[str, Any]) -> None:
        connection = self._connection(step["expect_close"])
        code = int(step["code"])
        deadline, ms = self._deadline(step)
        while True:
            item = await self._take(connection, deadline)
            if item is None:
                raise StepFailed(f"expected the server to close with {code} within {ms} ms")
            if isinstance(item, Bad):
                raise StepFailed(f"expected the server to close with {code}, got {item.detail}")
            if isinstance(item, Frame):
                if self._ignored(item):
                    continue
                raise StepFailed(
                    f"expected the server to close with {code}, got {_show(item.value)}"
                )
            if item.by != "server" or item.code != code:
                raise StepFailed(f"expected the server to close with {code}, but {item.detail}")
            return

    async def _operator(self, step: Mapping[str, Any]) -> None:
        action = step["operator"]
        if action == "kick":
            connection = self._connection(step["target"])
            if connection.session_id is None:
                raise StepFailed(f"{connection.name} has no session id: no welcome came")
            await self._call("kick", self.backend.kick(connection.session_id))
        elif action == "drain":
            await self._call("drain", self.backend.drain())
        elif action in ("add_member", "remove_member"):
            cid = self._conv(step["conversation"])
            change = (
                self.backend.add_member if action == "add_member" else self.backend.remove_member
            )
            await self._call(action, change(cid, step["user"]))
        elif action == "post":
            await self._call(
                "post",
                self.backend.post(
                    self._conv(step["conversation"]),
                    step.get("sender"),
                    step["text"],
                    step.get("kind", "user"),
                ),
            )
        else:
            raise TranscriptError(f"unknown operator action {action!r}")


async def run_transcript(
    transcript: Transcript,
    backend: Backend,
    *,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    backend_timeout_s: float = 30.0,
    unique_users: bool = False,
) -> Result:
    """Run one transcript against a fresh server from `backend` and report how it went.

    Bounded throughout (see the module docstring); the connections' reader tasks run in a
    nursery of this call and are cancelled before it returns. A setting the backend cannot
    apply or a token it cannot mint gives a skipped result. With `unique_users` the run's
    users get run-unique ids (for a shared server; `hoomi.conformance.users`). Exceptions
    other than failed expectations, a malformed transcript or a failing backend call (i.e.
    bugs in the runner) propagate.
    """
    started = trio.current_time()
    everything = transcript.requirements

    def result(
        outcome: Outcome,
        step: int | None = None,
        where: str = "",
        message: str = "",
        failed: tuple[str, ...] = (),
    ) -> Result:
        return Result(
            name=transcript.name,
            outcome=outcome,
            requirements=everything,
            step=step,
            where=where,
            message=message,
            duration_s=trio.current_time() - started,
            failed_requirements=failed,
        )

    try:
        with trio.fail_after(backend_timeout_s):
            url = await backend.start(transcript.config, token_specs(transcript))
    except Unsupported as unsupported:
        return result(Outcome.SKIPPED, message=str(unsupported))
    except trio.TooSlowError:
        return result(
            Outcome.FAILED,
            where="start",
            message="the server did not start in time",
            failed=everything,
        )
    if unique_users:
        transcript = with_users(transcript, unique_ids(transcript.setup.get("users", ())))
    failure: _Failure | None = None
    try:
        async with trio.open_nursery() as nursery:
            run = _Run(
                transcript,
                backend,
                url,
                nursery,
                timeout_ms=timeout_ms,
                backend_timeout_s=backend_timeout_s,
            )
            try:
                await run.execute()
            except _Failure as failed:
                failure = failed
            except TranscriptError as bad:
                failure = _Failure(None, "setup", f"invalid transcript: {bad}", everything)
            finally:
                await run.close_all()
                nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(backend_timeout_s) as stopping:
            await backend.stop()
    if failure is not None:
        return result(
            Outcome.FAILED, failure.step, failure.where, failure.message, failure.requirements
        )
    if stopping.cancelled_caught:
        return result(
            Outcome.FAILED,
            where="stop",
            message="the server did not stop in time",
            failed=everything,
        )
    return result(Outcome.PASSED)
