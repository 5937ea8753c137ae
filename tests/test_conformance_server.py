"""`hoomi-conformance server`: the spec's transcripts against running servers, through the
admin API only, over real sockets.

- A `hoomi serve` process with its default settings: every transcript passes or is skipped
  with its reason (the CLI, `--json`, `--junit`, `--allow-drain`).
- Fresh in-process servers, one per transcript with its `config`, driven only through
  `AdminBackend`: a correct server passes everything; each broken variant of `broken.py`
  fails exactly the requirement ids it breaks.
"""

from __future__ import annotations

import pathlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import orjson
import pytest
import trio
from rich.console import Console
from typer.testing import CliRunner, Result

import broken
from harness import ADMIN_TOKEN, SECRET, running_server, serve_process
from hoomi.cli import conformance as cli
from hoomi.conformance import Outcome, TokenSpec, Transcript
from hoomi.conformance import Result as TranscriptResult
from hoomi.conformance.remote import AdminBackend
from hoomi.conformance.report import failed_requirements
from hoomi.conformance.suite import run_suite
from hoomi.server.config import Settings
from test_transcripts import TRANSCRIPTS, InProcessBackend

runner = CliRunner()


# -- fresh servers per transcript, driven through the admin API -----------------------------


class ThroughTheAdminApi(InProcessBackend):
    """A fresh in-process server per transcript (with the transcript's `config` and its
    admin API), set up only through `AdminBackend`, as a server at a URL would be."""

    def __init__(self, tmp_path: pathlib.Path, nursery: trio.Nursery, api: httpx.AsyncClient):
        super().__init__(tmp_path, nursery, admin=True)
        self._api = api
        self._remote: AdminBackend | None = None

    @property
    def remote(self) -> AdminBackend:
        assert self._remote is not None, "start the backend first"
        return self._remote

    async def start(self, config: Mapping[str, Any], tokens: frozenset[TokenSpec]) -> str:
        await super().start(config, tokens)
        assert self.running.admin_url is not None
        self._api.base_url = httpx.URL(self.running.admin_url)
        self._remote = await AdminBackend.connect(self.running.url, self._api, jwt_secret=SECRET)
        return await self.remote.start(config, tokens)  # checks config with GET /v1/settings

    async def mint(self, sub: str, spec: TokenSpec) -> str:
        return await self.remote.mint(sub, spec)

    async def create_conversation(
        self, kind: str, members: Sequence[str], title: str | None
    ) -> str:
        return await self.remote.create_conversation(kind, members, title)

    async def post(self, conversation_id: str, sender: str | None, text: str, kind: str) -> int:
        return await self.remote.post(conversation_id, sender, text, kind)

    async def add_member(self, conversation_id: str, user: str) -> None:
        await self.remote.add_member(conversation_id, user)

    async def remove_member(self, conversation_id: str, user: str) -> None:
        await self.remote.remove_member(conversation_id, user)

    async def kick(self, session_id: str) -> None:
        await self.remote.kick(session_id)

    async def drain(self) -> None:
        await self.remote.drain()


@asynccontextmanager
async def through_the_admin_api(tmp_path: pathlib.Path) -> AsyncIterator[ThroughTheAdminApi]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=10) as api, trio.open_nursery() as n:
        yield ThroughTheAdminApi(tmp_path, n, api)
        n.cancel_scope.cancel()


# Transcripts on fresh servers share nothing, so they run a few at a time: a run is as long
# as its slowest transcripts (token expiry waits whole seconds), not the sum of all.
CONCURRENT: Final = 4


async def run_all(tmp_path: pathlib.Path) -> list[TranscriptResult]:
    """Every transcript, each on a fresh server of its own, with run-unique users, in
    TRANSCRIPTS' order."""
    results: dict[str, TranscriptResult] = {}
    limiter = trio.CapacityLimiter(CONCURRENT)

    async def run_one(transcript: Transcript) -> None:
        async with limiter:
            workdir = tmp_path / transcript.name
            workdir.mkdir()
            async with through_the_admin_api(workdir) as backend:
                (results[transcript.name],) = await run_suite(
                    [transcript], backend, shared=True, allow_drain=True, timeout_ms=3000
                )

    async with trio.open_nursery() as nursery:
        for transcript in TRANSCRIPTS:
            nursery.start_soon(run_one, transcript)
    return [results[t.name] for t in TRANSCRIPTS]


async def test_a_correct_server_passes_everything_through_the_admin_api(
    tmp_path: pathlib.Path,
) -> None:
    results = await run_all(tmp_path)
    assert [r.describe() for r in results if not r.passed] == []
    assert len(results) == len(TRANSCRIPTS)


VARIANTS: Final[dict[str, tuple[Callable[[pytest.MonkeyPatch], None], set[str]]]] = {
    "skip_a_seq": (broken.skip_a_seq, {"HOOMI-SEND-2"}),
    "drop_the_resume_replay": (broken.drop_the_resume_replay, {"HOOMI-RESUME-2"}),
    "never_expire_typing": (broken.never_expire_typing, {"HOOMI-TYPING-3"}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_a_broken_server_fails_exactly_the_requirements_it_breaks(
    variant: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    breaking, expected = VARIANTS[variant]
    breaking(monkeypatch)
    results = await run_all(tmp_path)
    failed = [r for r in results if r.outcome is Outcome.FAILED]
    assert failed, "the variant broke nothing the transcripts see"
    assert failed_requirements(results) == expected, [r.describe() for r in failed]
    assert all(r.outcome is Outcome.PASSED for r in results if r not in failed)


# -- each variant really is broken the way it claims ------------------------------------------


async def test_skip_a_seq_stores_no_seq_2(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken.skip_a_seq(monkeypatch)
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        alice = await hoomi.connect("alice")
        seqs = []
        for i in range(3):
            ack = await alice.request(
                "send", conversation_id=dm.conversation_id, client_msg_id=f"k{i}", text="t"
            )
            seqs.append(ack["seq"])
        assert seqs == [1, 3, 4]


async def test_drop_the_resume_replay_replays_nothing_but_still_tells_a_gap(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken.drop_the_resume_replay(monkeypatch)
    async with running_server(tmp_path, replay_max=2) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        for text in ("m1", "m2", "m3"):
            await hoomi.server.post(cid, text)
        within = await hoomi.connect("alice", resume=[{"conversation_id": cid, "after_seq": 1}])
        await within.silent(0.3)  # a correct server replays seqs 2 and 3 here
        beyond = await hoomi.connect("bob", resume=[{"conversation_id": cid, "after_seq": 0}])
        gap = await beyond.expect("resume_gap", skip=("presence",))
        assert (gap["after_seq"], gap["latest_seq"]) == (0, 3)
        await hoomi.server.post(cid, "m4")
        live = await within.expect("message", skip=("presence",))
        assert live["message"]["seq"] == 4


async def test_never_expire_typing_keeps_typing_past_the_ttl_until_a_send(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken.never_expire_typing(monkeypatch)
    async with running_server(tmp_path, typing_ttl_ms=200) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        await alice.request("typing", conversation_id=cid, active=True)
        started = await bob.expect("user_typing", skip=("presence",))
        assert started["active"] is True
        await bob.silent(0.6)  # three ttls: a correct server says active false here
        await alice.request("send", conversation_id=cid, client_msg_id="k", text="done")
        stopped = await bob.expect("user_typing", skip=("presence", "message"))
        assert stopped["active"] is False


# -- hoomi serve in its own process, and the command line ------------------------------------

# With its default settings a server satisfies no transcript whose config differs from them;
# operator-drain runs (last) with --allow-drain.
DEFAULTS: Final = Settings(jwt_secret=SECRET)
DEFAULT_SKIPS: Final = {
    t.name for t in TRANSCRIPTS if any(getattr(DEFAULTS, k) != v for k, v in t.config.items())
}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consoles that do not depend on the terminal pytest runs in (CliRunner still captures
    what they write)."""
    monkeypatch.setattr(cli, "console", Console(width=200))
    monkeypatch.setattr(cli, "err_console", Console(width=200, stderr=True))


async def conformance(*args: str) -> Result:
    """`hoomi-conformance ARGS...` in a worker thread (it runs its own Trio loop)."""
    return await trio.to_thread.run_sync(runner.invoke, cli.app, list(args))


def assert_one_sentence(result: Result, code: int, starts: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(starts), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


async def test_a_hoomi_serve_process_passes_or_skips_every_transcript(
    tmp_path: pathlib.Path,
) -> None:
    async with serve_process(tmp_path / "hoomi.db", "--admin-token", ADMIN_TOKEN) as hoomi:
        common = [hoomi.url, "--admin-url", hoomi.admin_url, "--admin-token", ADMIN_TOKEN]

        table = await conformance(
            "server",
            *common,
            "--jwt-secret",
            SECRET,
            "--only",
            "ping-pong",
            "--only",
            "typing-stop",
        )
        assert table.exit_code == 0, table.output
        assert "HOOMI-LIVE-2" in table.stdout
        assert "passed: ping-pong" in table.stdout
        assert "skipped: typing-stop: needs typing_ttl_ms=30000, the server has 5000" in (
            table.stdout
        )
        assert "2 transcripts: 1 passed, 0 failed, 1 skipped." in table.stdout

        junit = tmp_path / "junit.xml"
        args = ["--jwt-secret", SECRET, "--allow-drain", "--json", "--junit", str(junit)]
        run = await conformance("server", *common, *args)
        assert run.exit_code == 0, run.output
        report = orjson.loads(run.stdout)
        results = {r["name"]: r for r in report["results"]}
        assert set(results) == {t.name for t in TRANSCRIPTS}
        skipped = {name for name, r in results.items() if r["outcome"] == "skipped"}
        assert skipped == DEFAULT_SKIPS
        assert all(results[name]["message"].startswith("needs ") for name in skipped)
        passed = {name for name, r in results.items() if r["outcome"] == "passed"}
        assert passed == set(results) - skipped
        assert report["results"][-1]["name"] == "operator-drain"  # drains run last
        assert report["transcripts"] == {
            "passed": len(passed),
            "failed": 0,
            "skipped": len(skipped),
        }

        suite = ET.parse(junit).getroot()
        assert suite.tag == "testsuite"
        assert (suite.get("tests"), suite.get("failures")) == (str(len(TRANSCRIPTS)), "0")
        assert suite.get("skipped") == str(len(skipped))
        cases = {case.get("name"): case for case in suite.iter("testcase")}
        assert set(cases) == set(results)
        for name in skipped:
            assert cases[name].find("skipped") is not None

        hoomi.process.terminate()  # drained, it still serves its admin API until told
        assert await hoomi.wait() == 0


async def test_operator_drain_is_skipped_without_allow_drain_and_errors_are_one_sentence(
    tmp_path: pathlib.Path,
) -> None:
    async with serve_process(tmp_path / "hoomi.db", "--admin-token", ADMIN_TOKEN) as hoomi:
        common = [hoomi.url, "--admin-url", hoomi.admin_url]
        drain = await conformance(
            "server", *common, "--admin-token", ADMIN_TOKEN, "--jwt-secret", SECRET,
            "--only", "operator-drain", "--json",
        )  # fmt: skip
        assert drain.exit_code == 0, drain.output
        (result,) = orjson.loads(drain.stdout)["results"]
        assert result["outcome"] == "skipped"
        assert "--allow-drain" in result["message"]

        wrong = await conformance("server", *common, "--admin-token", "not-the-admin-token")
        assert_one_sentence(wrong, 2, "The admin API at ")
        assert "refused the admin token" in wrong.stderr
        no_tokens = await conformance("server", *common, "--admin-token", ADMIN_TOKEN)
        assert_one_sentence(no_tokens, 2, "The kit cannot make user tokens")
        bad_secret = await conformance(
            "server", *common, "--admin-token", ADMIN_TOKEN, "--jwt-secret", "x" * 40
        )
        assert_one_sentence(bad_secret, 2, f"The server at {hoomi.url} did not welcome")
        admin_port = hoomi.admin_port
    gone = await conformance(
        "server", hoomi.url, "--admin-url", f"http://127.0.0.1:{admin_port}",
        "--admin-token", ADMIN_TOKEN,
    )  # fmt: skip
    assert_one_sentence(gone, 2, "Cannot reach the admin API at ")


async def test_a_failing_run_exits_1_and_names_the_requirement(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken.never_expire_typing(monkeypatch)
    # The transcript's ttl; the step timeout is long enough for a correct server's stop.
    async with running_server(tmp_path, admin=True, typing_ttl_ms=1500) as hoomi:
        assert hoomi.admin_url is not None
        junit = tmp_path / "junit.xml"
        failing = await conformance(
            "server", hoomi.url, "--admin-url", hoomi.admin_url, "--admin-token", ADMIN_TOKEN,
            "--jwt-secret", SECRET, "--only", "typing-expiry", "--timeout-ms", "3000",
            "--junit", str(junit),
        )  # fmt: skip
    assert failing.exit_code == 1, failing.output
    assert "FAILED typing-expiry (HOOMI-TYPING-3): steps[13] (expect b1)" in failing.stdout
    assert "1 transcript: 0 passed, 1 failed, 0 skipped." in failing.stdout
    (case,) = ET.parse(junit).getroot().iter("testcase")
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("HOOMI-TYPING-3: steps[13]")


async def test_without_a_secret_tokens_come_from_the_admin_api(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:  # mints tokens
        assert hoomi.admin_url is not None
        run = await conformance(
            "server", hoomi.url, "--admin-url", hoomi.admin_url, "--admin-token", ADMIN_TOKEN,
            "--only", "ping-pong", "--only", "auth-refused", "--only", "auth-expired", "--json",
        )  # fmt: skip
    assert run.exit_code == 0, run.output
    results = {r["name"]: r for r in orjson.loads(run.stdout)["results"]}
    assert results["ping-pong"]["outcome"] == "passed"
    for name, token in (("auth-refused", "nbf now+600 s"), ("auth-expired", "exp now-120 s")):
        assert results[name]["outcome"] == "skipped"
        assert (
            f"needs a token with {token}, which only the kit can sign" in (results[name]["message"])
        )
