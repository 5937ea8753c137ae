"""The browser client (src/hoomi/web/hoomi-client.js) in a real headless Chromium: it passes
every scenario of `hoomi-conformance client` through the CLI, and a broken copy (no dedupe,
tests/broken_browser_adapter.py) fails exactly the requirement it breaks, as the SDK's broken
variants do in test_conformance_client.py. An uncaught error or a console error in a page
fails the test (the adapter logs them at level error; errorlog reads its stderr).

Chromium starts once per test, in a host (`python -m hoomi.web.adapter --host PATH`) that
runs each scenario's client in a fresh browser context: starting it per scenario costs
seconds, more than the kit's 5 s to a connection on a loaded machine. Skipped only outside
CI when /usr/bin/chromium is missing; under CI=true a missing Chromium fails.
"""

from __future__ import annotations

import os
import pathlib
import random
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import orjson
import pytest
import trio
from playwright.sync_api import sync_playwright
from rich.console import Console
from typer.testing import CliRunner, Result

import errorlog
from harness import mint, running_server
from hoomi.cli import conformance as cli
from hoomi.client.streams import Step, Streams
from hoomi.conformance import Outcome
from hoomi.conformance import Result as ScenarioResult
from hoomi.conformance.kit import AdapterProcess, run_kit
from hoomi.conformance.scenarios import scenarios
from hoomi.protocol import ProtocolError, decode_server
from hoomi.protocol.errors import ErrorCode
from hoomi.protocol.messages import ChatMessage
from hoomi.web.adapter import HOST_ENV
from hoomi.web.browser import Files, chromium_path

TESTS = pathlib.Path(__file__).resolve().parent
WEB = TESTS.parent / "src" / "hoomi" / "web"
ADAPTER: Final = [sys.executable, "-m", "hoomi.web.adapter"]
BROKEN: Final = [sys.executable, str(TESTS / "broken_browser_adapter.py")]
CHROMIUM = pathlib.Path(chromium_path())
# What each broken variant must fail: {scenario: requirement}.
VARIANTS: Final[Mapping[str, Mapping[str, str]]] = {
    "no-dedupe": {"duplicates": "HOOMI-CLIENT-2"},
}
HOST_START_S = 60.0  # Chromium's start, on a loaded machine

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
)
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=200))
    monkeypatch.setattr(cli, "err_console", Console(width=200, stderr=True))


@pytest.fixture
def adapter_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every adapter's stderr (the page's console and uncaught errors, relayed) is read by
    the error net before the kit removes it: an error there fails the test even when the
    scenario passed."""
    stop = AdapterProcess.stop

    async def checked_stop(self: AdapterProcess) -> None:
        await stop(self)
        text = self._stderr_path.read_text("utf-8", "replace")
        errorlog.watch(f"the browser adapter's stderr ({' '.join(self.argv)})", lambda: text)

    monkeypatch.setattr(AdapterProcess, "stop", checked_stop)


@asynccontextmanager
async def browser_host(
    argv: Sequence[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """A browser host (`argv --host PATH`) until the block ends; adapters started meanwhile
    relay through it (HOOMI_BROWSER_HOST). Its stderr is under the error net."""
    sockets = pathlib.Path(tempfile.mkdtemp(prefix="hoomi-chromium-"))  # a short socket path
    path = str(sockets / "host.sock")
    stderr = tmp_path / "host-stderr.txt"
    with stderr.open("wb") as err:
        process = await trio.lowlevel.open_process(
            [*argv, "--host", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
    errorlog.watch("the browser host's stderr", stderr)
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        said = b""
        with trio.move_on_after(HOST_START_S):
            while b"\n" not in said:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    break
                said += chunk
        assert said == f"ready {path}\n".encode(), (said, stderr.read_text("utf-8", "replace"))
        monkeypatch.setenv(HOST_ENV, path)
        yield path
    finally:
        monkeypatch.delenv(HOST_ENV, raising=False)
        await process.stdin.aclose()  # the host's cue to close Chromium and exit
        with trio.move_on_after(20):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        assert process.returncode == 0, stderr.read_text("utf-8", "replace")
        assert not await trio.Path(path).exists()
        await trio.Path(sockets).rmdir()


async def conformance(*args: str) -> Result:
    return await trio.to_thread.run_sync(runner.invoke, cli.app, list(args))


def failures(results: list[ScenarioResult]) -> dict[str, str]:
    return {r.name: r.failed_requirements[0] for r in results if r.outcome is Outcome.FAILED}


@needs_chromium
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("adapter_stderr")
async def test_the_browser_client_passes_every_scenario_through_the_cli(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with browser_host(ADAPTER, tmp_path, monkeypatch):
        started = trio.current_time()
        run = await conformance("client", "--json", "--", *ADAPTER)
        elapsed = trio.current_time() - started
    assert run.exit_code == 0, run.output
    report = orjson.loads(run.stdout)
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == [spec.name for spec in scenarios()]
    failed = {n: r["failed_requirements"] for n, r in results.items() if r["outcome"] != "passed"}
    assert failed == {}
    assert report["client"] == " ".join(ADAPTER)
    assert report["scenarios"]["passed"] == len(results) == 29
    assert elapsed < 120, f"the kit took {elapsed:.1f} s"


@needs_chromium
@pytest.mark.timeout(240)
@pytest.mark.requirement("HOOMI-CLIENT-2")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_a_broken_browser_client_fails_exactly_the_requirements_it_breaks(
    variant: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with browser_host([*BROKEN, variant], tmp_path, monkeypatch):
        results = await run_kit(scenarios(), ADAPTER, jobs=4)
    assert failures(results) == VARIANTS[variant], [r.describe() for r in results if not r.passed]


@needs_chromium
@pytest.mark.timeout(120)
async def test_page_errors_reach_the_adapters_stderr_at_level_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr: list[str] = []
    stop = AdapterProcess.stop

    async def keep_stderr(self: AdapterProcess) -> None:
        await stop(self)
        stderr.append(self._stderr_path.read_text("utf-8", "replace"))

    monkeypatch.setattr(AdapterProcess, "stop", keep_stderr)
    chosen = [spec for spec in scenarios() if spec.name == "hello-first"]
    async with browser_host([*BROKEN, "page-errors"], tmp_path, monkeypatch):
        results = await run_kit(chosen, ADAPTER)
    assert failures(results) == {}
    (text,) = stderr
    logged = errorlog.errors_in(text, "adapter")
    assert sorted(e.event for e in logged) == ["browser_console_error", "browser_page_error"]
    assert 'text="planted console error"' in text
    assert "planted uncaught error" in text


# -- against the real server -----------------------------------------------------------------

# The page script of each test below: `arg` has the server's URL and tokens; it returns
# what the page saw. It runs after `import * as hoomi from "./hoomi-client.js"`.
CHAT = """async ({ url, alice, bob, cid }) => {
  const seen = { alice: [], bob: [] };
  const a = hoomi.connect(url, { token: alice });
  const b = hoomi.connect(url, { tokenProvider: async () => bob });
  for (const [name, c] of [["alice", a], ["bob", b]]) {
    for (const type of ["state", "message", "typing", "presence", "receipt", "error"]) {
      c.on(type, (d) => seen[name].push([type, type === "state" ? d.state :
        type === "message" ? [d.seq, d.sender_id, d.text] :
        type === "typing" ? [d.user_id, d.active] :
        type === "presence" ? [d.user_id, d.status] :
        type === "receipt" ? [d.user_id, d.seq] : d.code]));
    }
  }
  await Promise.all([a.ready, b.ready]);
  // Until `name` sees an event `want` takes (looking from index `from` on).
  const until = (name, want, from = 0) => new Promise((resolve) => {
    const poll = () => seen[name].slice(from).some(want) ? resolve() : setTimeout(poll, 10);
    poll();
  });
  await until("alice", ([t, d]) => t === "presence" && d[0] === "bob" && d[1] === "online");
  await until("bob", ([t, d]) => t === "presence" && d[0] === "alice" && d[1] === "online");
  const ack = await a.send(cid, "hello from alice");
  await until("bob", ([t]) => t === "message");
  await b.typing(cid, true);
  await until("alice", ([t]) => t === "typing");
  await b.read(cid, ack.seq);
  await until("alice", ([t]) => t === "receipt");
  const again = await a.send(cid, "again", { clientMsgId: ack.client_msg_id });
  const mark = seen.alice.length;
  await b.close();
  await until("alice", ([t, d]) => t === "presence" && d[1] === "offline", mark);
  await a.close();
  return { ack: [ack.seq, again.seq, again.message_id === ack.message_id], seen,
           states: [a.state, b.state] };
}"""

VISIBLE = """async ({ url, alice, dead }) => {
  // A fake document and clock: the test decides what is visible and what time it is.
  const page = new EventTarget();
  page.visibilityState = "visible";
  let skew = 0;
  const now = () => Date.now() + skew;
  const show = (state) => {
    page.visibilityState = state;
    page.dispatchEvent(new Event("visibilitychange"));
  };
  const sent = [];
  let first = true;
  let deaf = false;  // while set, frames from the server never reach the client: a dead line
  class Recording extends WebSocket {
    constructor(target, protocols) {
      // The first attempt goes to a port where nothing listens: a real refused connection.
      super(first ? dead : target, protocols);
      first = false;
    }
    send(data) {
      sent.push(JSON.parse(data).type);
      super.send(data);
    }
    set onmessage(handler) {
      super.onmessage = handler && ((message) => deaf || handler(message));
    }
  }
  const states = [];
  const c = hoomi.connect(url, {
    token: alice, WebSocket: Recording,
    settings: { now, random: () => 0.99, document: page, window: null,
                backoff: { initial_ms: 60000, max_ms: 60000, multiplier: 2, jitter: "full",
                           max_attempts: 50 } },
  });
  c.on("state", (d) => states.push([d.state, d.retryInMs === null ? null : d.retryInMs > 50000]));
  const until = (want) => new Promise((resolve) => {
    const poll = () => want() ? resolve() : setTimeout(poll, 10);
    poll();
  });
  // Refused, then a backoff of about a minute: becoming visible tries at once.
  await until(() => c.state === "backoff");
  show("hidden");
  await new Promise((resolve) => setTimeout(resolve, 100));
  const hiddenState = c.state;
  show("visible");
  await c.ready;
  // Live: hidden for longer than the heartbeat interval (the clock says so; the tab's
  // throttled timers have not fired). Becoming visible pings at once.
  sent.length = 0;
  show("hidden");
  skew += c.welcome.heartbeat_interval_ms + 1;
  const whileHidden = [...sent];
  show("visible");
  const onVisible = [...sent];
  await new Promise((resolve) => setTimeout(resolve, 300));  // the pong
  show("visible");  // visible again, nothing quiet for long: no ping
  const after = [...sent];
  // The line goes dead while hidden: the ping on becoming visible gets no answer, and the
  // next time the tab is shown, an interval later by the clock, the connection is given up
  // and (the backoff ending at once, as the tab is visible) made again.
  deaf = true;
  show("hidden");
  skew += c.welcome.heartbeat_interval_ms + 1;
  show("visible");
  const pinged = [...sent];
  show("hidden");
  skew += c.welcome.heartbeat_interval_ms + 1;
  show("visible");
  const given = c.state;
  deaf = false;
  show("visible");
  await until(() => c.state === "live");
  await c.close();
  return { states, hiddenState, whileHidden, onVisible, after, pinged, given, state: c.state };
}"""


def in_chromium(origin: str, script: str, arg: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """Run `script(arg)` in a page of `origin` (a `Files` server) that imported the client
    as `hoomi`; return its result and the page's errors (uncaught or console). Playwright's
    sync API, for a worker thread: the server under test runs on the test's Trio loop."""
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console: {m.text}")
                    if m.type == "error" and not m.text.startswith("WebSocket connection to ")
                    else None
                ),
            )
            page.goto(origin)
            page.evaluate("async () => { window.hoomi = await import('./hoomi-client.js'); }")
            result = page.evaluate(f"(arg) => ({script})(arg)", dict(arg))
        finally:
            browser.close()
    return result, problems


@needs_chromium
@pytest.mark.timeout(90)
@pytest.mark.requirement("HOOMI-CLIENT-1", "HOOMI-SEND-3")
async def test_two_browser_clients_chat_through_the_real_server(tmp_path: pathlib.Path) -> None:
    files = Files()
    try:
        origin = files.url.rstrip("/")
        async with running_server(tmp_path, allowed_origin=(origin,)) as hoomi:
            dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
            arg = {
                "url": hoomi.url,
                "alice": mint("alice"),
                "bob": mint("bob"),
                "cid": dm.conversation_id,
            }
            result, problems = await trio.to_thread.run_sync(in_chromium, files.url, CHAT, arg)
    finally:
        files.close()
    assert problems == []
    assert result["ack"] == [1, 1, True]  # the retried send (same client_msg_id) is the same
    assert result["states"] == ["closed", "closed"]
    # Presence comes from the query after welcome and from pushes, in an order that depends
    # on which page connected first: alice is online before anything is sent.
    bob = result["seen"]["bob"]
    assert [e for e in bob if e[0] == "presence"][-1] == ["presence", ["alice", "online"]]
    assert [e for e in bob if e[0] != "presence"] == [
        ["state", "authenticating"],
        ["state", "live"],
        ["message", [1, "alice", "hello from alice"]],
        ["receipt", ["bob", 1]],  # every member's sessions get it, the reader's too
        ["state", "closed"],
    ]
    alice = result["seen"]["alice"]
    assert alice[:2] == [["state", "authenticating"], ["state", "live"]]
    assert [e for e in alice if e[0] == "message"] == [
        ["message", [1, "alice", "hello from alice"]]
    ]
    assert [e for e in alice if e[0] in ("typing", "receipt")] == [
        ["typing", ["bob", True]],
        ["receipt", ["bob", 1]],
        ["typing", ["bob", False]],  # bob's session ended: never stuck typing
    ]
    assert [e for e in alice if e[0] == "presence"][-1] == ["presence", ["bob", "offline"]]
    assert alice[-1] == ["state", "closed"]
    assert [e for e in alice if e[0] == "error"] == []


@needs_chromium
@pytest.mark.timeout(90)
@pytest.mark.requirement("HOOMI-LIVE-2", "HOOMI-LIVE-3")
async def test_becoming_visible_checks_liveness_and_ends_a_backoff_at_once(
    tmp_path: pathlib.Path,
) -> None:
    files = Files()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        origin = files.url.rstrip("/")
        async with running_server(tmp_path, allowed_origin=(origin,)) as hoomi:
            await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
            arg = {
                "url": hoomi.url,
                "alice": mint("alice"),
                "dead": f"ws://127.0.0.1:{dead.getsockname()[1]}/",
            }
            result, problems = await trio.to_thread.run_sync(in_chromium, files.url, VISIBLE, arg)
    finally:
        dead.close()
        files.close()
    assert problems == []
    assert result["states"] == [
        ["backoff", True],  # refused; the next attempt about a minute away
        ["connecting", None],  # … made at once when the tab became visible
        ["authenticating", None],
        ["live", None],
        ["backoff", True],  # the dead line given up
        ["connecting", None],  # … and made again at once: the tab is visible
        ["authenticating", None],
        ["live", None],
        ["closed", None],
    ]
    assert result["hiddenState"] == "backoff"  # hidden: nothing happens early
    assert result["whileHidden"] == []
    assert result["onVisible"] == ["ping"]  # quiet for longer than the interval, by the clock
    assert result["after"] == ["ping"]  # answered: no second ping, no reconnect
    assert result["pinged"] == ["ping", "ping"]  # quiet again by the clock
    assert result["given"] == "backoff"  # no answer within an interval of that ping: dead
    assert result["state"] == "closed"


DECODE = """async ({ texts }) => texts.map((text) => {
  const decoded = hoomi.decodeServerFrame(text);
  return "frame" in decoded ? "frame" : "unknown" in decoded ? "unknown" : "problem";
})"""
WRONG: Final[tuple[object, ...]] = (None, "", -1, 1.5, 2**53, [], {}, "x" * 300, True)


def _variants(message: dict[str, Any]) -> list[dict[str, Any]]:
    """`message`, and it with each field (and each field of an object field) dropped or
    replaced by each of `WRONG`."""
    out = [message]
    for key, value in message.items():
        out.append({k: v for k, v in message.items() if k != key})
        out += [{**message, key: wrong} for wrong in WRONG]
        if isinstance(value, dict):
            out += [{**message, key: inner} for inner in _variants(value)[1:]]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out += [{**message, key: [inner, *value[1:]]} for inner in _variants(value[0])[1:]]
    return out


def python_verdict(text: str) -> str:
    try:
        decode_server(text)
    except ProtocolError as error:
        return "unknown" if error.code is ErrorCode.UNKNOWN_TYPE else "problem"
    return "frame"


@needs_chromium
@pytest.mark.timeout(90)
@pytest.mark.requirement("HOOMI-WIRE-4")
async def test_the_js_decoder_agrees_with_the_python_codec_on_every_server_frame() -> None:
    examples = sorted((TESTS.parent / "spec" / "v1" / "examples" / "valid").glob("*.json"))
    messages = [
        data["message"]
        for data in (orjson.loads(path.read_bytes()) for path in examples)
        if data["direction"] == "server"
    ]
    assert len(messages) >= 20
    texts = ["not JSON {", "[1]", "null", '{"type": 5}', '{"type": "future_event"}', "{}"]
    texts += ['{"type": "constructor"}', '{"type": "__proto__"}', '{"type": "toString"}']
    texts += [orjson.dumps(v).decode() for message in messages for v in _variants(message)]
    files = Files()
    try:
        verdicts, problems = await trio.to_thread.run_sync(
            in_chromium, files.url, DECODE, {"texts": texts}
        )
    finally:
        files.close()
    assert problems == []
    expected = [python_verdict(text) for text in texts]
    differ = [(t, e, j) for t, e, j in zip(texts, expected, verdicts, strict=True) if e != j]
    assert differ == [], f"{len(differ)} of {len(texts)} differ, e.g. {differ[:5]}"
    assert {"frame", "unknown", "problem"} == set(expected)


STREAMS = """async ({ runs }) => runs.map((ops) => {
  const streams = new hoomi.Streams({ c1: 0 }, { holdMax: 3 });
  const chat = (seq) => ({ conversation_id: "c1", seq, message_id: `m${seq}`, sender_id: "u",
                           kind: "user", text: `${seq}`, sent_at: 1 });
  return ops.map(([op, a, b]) => {
    const step = op === "message" ? streams.message(chat(a))
      : op === "gap" ? streams.gap("c1", a)
      : op === "page" ? streams.page(a, b.map(chat))
      : (streams.disconnected(), { deliver: [], requests: [], problems: [] });
    return [step.deliver.map((m) => m.seq), step.requests.map((r) => [r.id, r.after_seq]),
            step.problems.length];
  });
})"""


def python_streams_run(seed: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """A random run of the SDK's `Streams` against a simulated server (messages live and
    repeated, seq jumps, resume gaps, history pages, empty ones, disconnects): the inputs
    and what each produced."""
    rng = random.Random(seed)
    streams = Streams({"c1": 0}, hold_max=3)
    latest = 0
    fills: list[tuple[str, int]] = []
    ops: list[list[Any]] = []
    outputs: list[list[Any]] = []

    def chat(seq: int) -> ChatMessage:
        return ChatMessage(
            conversation_id="c1", seq=seq, message_id=f"m{seq}", sender_id="u", kind="user",
            text=f"{seq}", sent_at=1,
        )  # fmt: skip

    for _ in range(80):
        draw = rng.random()
        if draw < 0.5:
            seq = rng.randint(max(1, latest - 3), latest + 3)
            latest = max(latest, seq)
            op: list[Any] = ["message", seq]
            step = streams.message(chat(seq))
        elif draw < 0.6:
            latest += rng.randint(0, 6)
            op = ["gap", latest]
            step = streams.gap("c1", latest)
        elif draw < 0.95 and fills:
            request_id, after = fills.pop(0)
            empty = rng.random() < 0.1  # a server that has nothing after `after`
            seqs = [] if empty else list(range(after + 1, min(latest, after + 4) + 1))
            op = ["page", request_id, seqs]
            step = streams.page(request_id, [chat(seq) for seq in seqs])
        else:
            op = ["disconnected"]
            fills.clear()
            streams.disconnected()
            step = Step()
        fills += [(r.id, r.after_seq or 0) for r in step.requests]
        ops.append(op)
        outputs.append(
            [
                [m.seq for m in step.deliver],
                [[r.id, r.after_seq] for r in step.requests],
                len(step.problems),
            ]
        )
    return ops, outputs


@needs_chromium
@pytest.mark.timeout(90)
@pytest.mark.requirement("HOOMI-CLIENT-2")
async def test_the_js_streams_do_what_the_sdks_do_on_random_runs() -> None:
    runs = [python_streams_run(seed) for seed in range(200)]
    files = Files()
    try:
        outputs, problems = await trio.to_thread.run_sync(
            in_chromium, files.url, STREAMS, {"runs": [ops for ops, _ in runs]}
        )
    finally:
        files.close()
    assert problems == []
    for seed, ((ops, expected), got) in enumerate(zip(runs, outputs, strict=True)):
        assert got == expected, (seed, ops)
    # The runs went everywhere: held and filled, duplicates, empty pages.
    steps = [step for _, expected in runs for step in expected]
    assert any(len(deliver) > 1 for deliver, _, _ in steps)
    assert any(problems for _, _, problems in steps)
    assert sum(len(requests) for _, requests, _ in steps) > 200


_EXPORT = re.compile(
    r"^export (?:async )?(?:class|function|const|let) ([A-Za-z_$][\w$]*)|^export \{([^}]*)\}",
    re.MULTILINE,
)
_DECLARED = re.compile(
    r"^export (?:declare )?(class|function|const|let|interface|type) ([A-Za-z_$][\w$]*)",
    re.MULTILINE,
)


def exported(source: str) -> set[str]:
    names: set[str] = set()
    for single, listed in _EXPORT.findall(source):
        if single:
            names.add(single)
        else:
            names.update(part.split(" as ")[-1].strip() for part in listed.split(",") if part)
    return names


def test_the_typescript_declarations_declare_every_export() -> None:
    module = exported((WEB / "hoomi-client.js").read_text("utf-8"))
    declared = _DECLARED.findall((WEB / "hoomi-client.d.ts").read_text("utf-8"))
    assert module == {
        "CLIENT_VERSION", "ClientClosed", "HoomiClient", "HoomiError", "IllegalTransition",
        "MACHINE", "RESUME_MAX", "RequestFailed", "SPEC_VERSION", "SUBPROTOCOL", "Streams",
        "backoffCapMs", "backoffDelayMs", "closeEvent", "connect", "decodeServerFrame",
        "transition",
    }  # fmt: skip
    # Every value the module exports is declared, and the .d.ts declares no value it lacks
    # (its interfaces and types are its own).
    values = {name for kind, name in declared if kind not in ("interface", "type")}
    assert values == module, (sorted(module - values), sorted(values - module))
