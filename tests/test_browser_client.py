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
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final

import orjson
import pytest
import trio
from rich.console import Console
from typer.testing import CliRunner, Result

import errorlog
from hoomi.cli import conformance as cli
from hoomi.conformance import Outcome
from hoomi.conformance import Result as ScenarioResult
from hoomi.conformance.kit import AdapterProcess, run_kit
from hoomi.conformance.scenarios import scenarios
from hoomi.web.adapter import HOST_ENV
from hoomi.web.browser import chromium_path

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
