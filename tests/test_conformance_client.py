"""`hoomi-conformance client`: the client kit against real adapter processes over real
sockets. The SDK's adapter passes; each broken SDK variant (tests/broken_adapter.py) fails
exactly the requirement ids of the rule it breaks; a hanging, crashing or babbling adapter
fails its scenarios without hanging the kit; errors are one sentence."""

from __future__ import annotations

import pathlib
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, Final

import jsonschema
import orjson
import pytest
import trio
from rich.console import Console
from typer.testing import CliRunner, Result

import errorlog
from hoomi.cli import conformance as cli
from hoomi.conformance import Outcome
from hoomi.conformance import Result as ScenarioResult
from hoomi.conformance.kit import ADAPTER, AdapterProcess, run_kit
from hoomi.conformance.report import failed_requirements, requirement_order
from hoomi.conformance.scenarios import scenarios
from test_spec_data import UNCITED_REQUIREMENTS

TESTS = pathlib.Path(__file__).resolve().parent
SDK_ADAPTER: Final = [sys.executable, "-m", "hoomi.client.adapter"]
SCHEMA: Final = orjson.loads(
    (TESTS.parent / "spec" / "v1" / "client-kit" / "control.schema.json").read_bytes()
)
# Scenarios the SDK fails today, with the requirement each fails; reported to the SDK's
# owner. Remove an entry when the SDK is fixed (the test below then insists on a pass).
SDK_KNOWN_FAILURES: Final[Mapping[str, str]] = {}
# What each broken variant must fail: {scenario: requirement}.
VARIANTS: Final[Mapping[str, Mapping[str, str]]] = {
    "no-dedupe": {"duplicates": "HOOMI-CLIENT-2"},
    "reconnect-after-terminal": {
        spec.name: "HOOMI-LIVE-3" for spec in scenarios() if spec.name.startswith("terminal-")
    },
    "no-resend": {"resend-after-restart": "HOOMI-CLIENT-3"},
    "no-gap-fill": {"resume-gap": "HOOMI-CLIENT-2"},
}

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=200))
    monkeypatch.setattr(cli, "err_console", Console(width=200, stderr=True))


async def conformance(*args: str) -> Result:
    return await trio.to_thread.run_sync(runner.invoke, cli.app, list(args))


def failures(results: list[ScenarioResult]) -> dict[str, str]:
    return {r.name: r.failed_requirements[0] for r in results if r.outcome is Outcome.FAILED}


def test_the_control_protocol_schema_and_the_scenarios_requirements() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    known = requirement_order()
    graded = {rid for spec in scenarios() for rid in spec.requirements}
    assert graded <= set(known)
    # What the spec's README says the client kit grades, it grades.
    assert set(UNCITED_REQUIREMENTS) <= graded
    names = [spec.name for spec in scenarios()]
    assert len(names) == len(set(names))


async def test_the_sdk_adapter_passes_every_scenario_through_the_cli(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[dict[str, Any]] = []
    validator = jsonschema.Draft202012Validator({**SCHEMA, "oneOf": [{"$ref": "#/$defs/command"}]})
    command = AdapterProcess.command

    async def checked(self: AdapterProcess, sent: Mapping[str, Any], requirement: str) -> None:
        validator.validate(dict(sent))  # the kit speaks the protocol it specifies
        commands.append(dict(sent))
        await command(self, sent, requirement)

    monkeypatch.setattr(AdapterProcess, "command", checked)
    stop = AdapterProcess.stop

    async def checked_stop(self: AdapterProcess) -> None:
        await stop(self)
        # The SDK's own stderr, read before the kit removes it: a traceback there fails
        # the test even when the scenario passed (errorlog).
        text = self._stderr_path.read_text("utf-8", "replace")
        errorlog.watch(f"the SDK adapter's stderr ({' '.join(self.argv)})", lambda: text)

    monkeypatch.setattr(AdapterProcess, "stop", checked_stop)
    junit = tmp_path / "junit.xml"
    started = trio.current_time()
    run = await conformance("client", "--json", "--junit", str(junit), "--", *SDK_ADAPTER)
    elapsed = trio.current_time() - started
    assert run.exit_code == (1 if SDK_KNOWN_FAILURES else 0), run.output
    report = orjson.loads(run.stdout)
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == [spec.name for spec in scenarios()]
    failed = {n: r["failed_requirements"] for n, r in results.items() if r["outcome"] != "passed"}
    assert failed == {name: [rid] for name, rid in SDK_KNOWN_FAILURES.items()}
    assert report["client"] == " ".join(SDK_ADAPTER)
    assert report["scenarios"]["passed"] == len(results) - len(SDK_KNOWN_FAILURES)
    assert {c["cmd"] for c in commands} == {"connect", "token", "send", "read", "close"}
    assert elapsed < 40, f"the kit took {elapsed:.1f} s"

    suite = ET.parse(junit).getroot()
    assert suite.get("name", "").startswith("hoomi-conformance client ")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == set(results)
    assert all(case.get("classname") == "hoomi.conformance.client" for case in cases.values())
    for name, case in cases.items():
        assert (case.find("failure") is not None) == (name in SDK_KNOWN_FAILURES)

    table = await conformance(
        "client", "--only", "hello-first", "--only", "terminal-4001", "--", *SDK_ADAPTER
    )
    assert table.exit_code == 0, table.output
    assert "Hoomi client conformance of" in table.stdout
    assert "passed: hello-first" in table.stdout
    assert "passed: terminal-4001" in table.stdout
    assert "2 scenarios: 2 passed, 0 failed, 0 skipped." in table.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_a_broken_sdk_fails_exactly_the_requirements_it_breaks(variant: str) -> None:
    command = [sys.executable, str(TESTS / "broken_adapter.py"), variant]
    results = await run_kit(scenarios(), command, jobs=6)
    expected = {**VARIANTS[variant], **SDK_KNOWN_FAILURES}
    assert failures(results) == expected, [r.describe() for r in results if not r.passed]
    judged = [r for r in results if r.name not in SDK_KNOWN_FAILURES]
    assert failed_requirements(judged) == set(VARIANTS[variant].values())


async def test_a_hanging_crashing_or_babbling_adapter_fails_without_hanging_the_kit() -> None:
    chosen = [s for s in scenarios() if s.name in ("hello-first", "token-refresh")]
    python = sys.executable
    runs: dict[str, list[ScenarioResult]] = {}

    async def run(name: str, code: str, scale: float = 1.0) -> None:
        runs[name] = await run_kit(chosen, [python, "-c", code], scale=scale)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:  # the three share nothing
            nursery.start_soon(run, "hanging", "import time; time.sleep(60)", 0.2)
            nursery.start_soon(
                run, "crashing", "import sys; print('boom', file=sys.stderr); sys.exit(3)"
            )
            nursery.start_soon(
                run, "babbling", "import sys; print('not json', flush=True); sys.stdin.read()"
            )
    hanging, crashing, babbling = runs["hanging"], runs["crashing"], runs["babbling"]
    for result in hanging:
        assert failures([result]) == {result.name: "HOOMI-CLIENT-1"}
        assert "did not connect" in result.message
        assert result.duration_s < 5
    for result in crashing:
        assert result.outcome is Outcome.FAILED
        assert "the adapter exited with 3; its stderr ends: boom" in result.message
    for result in babbling:
        assert failures([result]) == {result.name: ADAPTER}
        assert "breaks the control protocol" in result.message
        assert "not json" in result.message


def assert_one_sentence(result: Result, starts: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(starts), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


async def test_errors_are_one_sentence(tmp_path: pathlib.Path) -> None:
    assert_one_sentence(await conformance("client"), "Give the command that starts your adapter")
    missing = await conformance("client", "--", "no-such-adapter-command", "--flag")
    assert_one_sentence(missing, "Cannot start the adapter: no command named no-such-adapter")
    not_executable = tmp_path / "adapter.js"
    not_executable.write_text("", encoding="utf-8")
    file = await conformance("client", "--", str(not_executable))
    assert_one_sentence(file, f"Cannot start the adapter: {not_executable} is not an executable")
    unknown = await conformance("client", "--only", "nope", "--", *SDK_ADAPTER)
    assert_one_sentence(unknown, "No scenario named nope; the scenarios are: hello-first")
