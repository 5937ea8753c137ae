"""The net under every test (conftest.py's `no_undeclared_errors`, tests/errorlog.py) fails
what it must: a pytest run of its own, with this suite's conftest, errorlog and markers,
holds tests that log errors from a test, a Trio task, a thread and an async fixture's
teardown, and tests that declare them rightly and wrongly. And the log reader finds the
errors a hoomi process writes: its own log lines, text and JSON, and a Python traceback."""

from __future__ import annotations

import logging
import pathlib
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET

import pytest

import errorlog
from conftest import REPO
from hoomi.server.logs import _Formatter

TESTS = REPO / "tests"

CASES = """
import logging
import pathlib
import subprocess
import sys

import pytest
import trio

import errorlog
from hoomi.server import logs


def fail(name: str) -> None:
    try:
        raise ValueError("a bug")
    except ValueError:
        logs.failure(name)


def test_an_error_record_fails_the_test() -> None:
    fail("request_failed")


async def test_one_from_a_trio_task() -> None:
    async def task() -> None:
        await trio.sleep(0)
        fail("publish_failed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task)


async def test_one_from_a_thread_and_a_child_logger() -> None:
    await trio.to_thread.run_sync(logging.getLogger("hoomi.store").critical, "writer_failed")


@pytest.fixture
async def noisy():
    yield
    fail("teardown_failed")


async def test_one_from_an_async_fixtures_teardown(noisy: None) -> None:
    pass


def test_one_after_logs_configure_replaced_the_handlers() -> None:
    logs.configure("info")
    fail("after_configure")


def test_the_logger_is_as_it_was_after_that() -> None:
    logger = logging.getLogger("hoomi")  # the net's handler alone, no stderr handler
    assert ([type(h).__name__ for h in logger.handlers], logger.propagate) == (["Watch"], True)


def test_warnings_and_other_loggers_pass() -> None:
    logs.event("slow_consumer", logging.WARNING)
    logging.getLogger("elsewhere").error("not ours")


@pytest.mark.expect_errors("publish_failed", request_failed=ValueError)
def test_declared_records_pass() -> None:
    fail("request_failed")
    fail("request_failed")
    fail("publish_failed")


@pytest.mark.expect_errors(request_failed=KeyError)
def test_a_record_with_another_exception_than_declared_fails() -> None:
    fail("request_failed")


@pytest.mark.expect_errors("request_failed", "session_failed")
def test_a_declared_record_that_never_comes_fails() -> None:
    fail("request_failed")


def test_a_traceback_in_a_watched_log_fails(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "crash.log"
    with log.open("wb") as sink:
        subprocess.run([sys.executable, "-c", "raise KeyError(1)"], stderr=sink, check=False)
    errorlog.watch("crash.log", log)


@pytest.mark.expect_errors(traceback=KeyError)
def test_a_declared_traceback_passes(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "crash.log"
    with log.open("wb") as sink:
        subprocess.run([sys.executable, "-c", "raise KeyError(1)"], stderr=sink, check=False)
    errorlog.watch("crash.log", log)
"""

# What each case's run ends with: None for a pass, else lines its failure must hold.
OUTCOMES = {
    "test_an_error_record_fails_the_test": ["logged hoomi: request_failed (ValueError)"],
    "test_one_from_a_trio_task": ["logged hoomi: publish_failed (ValueError)"],
    "test_one_from_a_thread_and_a_child_logger": ["logged hoomi.store: writer_failed"],
    "test_one_from_an_async_fixtures_teardown": ["logged hoomi: teardown_failed (ValueError)"],
    "test_one_after_logs_configure_replaced_the_handlers": [
        "logged hoomi: after_configure (ValueError)"
    ],
    "test_the_logger_is_as_it_was_after_that": None,
    "test_warnings_and_other_loggers_pass": None,
    "test_declared_records_pass": None,
    "test_a_record_with_another_exception_than_declared_fails": [
        "logged hoomi: request_failed (ValueError)",
        "declared 'request_failed' (expect_errors), but it was never logged",
    ],
    "test_a_declared_record_that_never_comes_fails": [
        "declared 'session_failed' (expect_errors), but it was never logged"
    ],
    "test_a_traceback_in_a_watched_log_fails": ["logged crash.log: traceback (KeyError)"],
    "test_a_declared_traceback_passes": None,
}


def test_the_net_fails_exactly_the_tests_with_undeclared_or_missing_errors(
    pytester: pytest.Pytester,
) -> None:
    ours = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    markers = "\n".join(f"    {marker!r}," for marker in ours["markers"])
    pytester.makepyprojecttoml(
        f"[tool.pytest.ini_options]\ntrio_mode = true\n"
        f'addopts = ["--strict-markers", "-p", "no:cacheprovider"]\n'
        f"markers = [\n{markers}\n]\n"
    )
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(errorlog=(TESTS / "errorlog.py").read_text(), test_cases=CASES)
    junit = pytester.path / "junit.xml"
    pytester.runpytest_subprocess(f"--junitxml={junit}")
    failed = {
        case.get("name"): "\n".join(
            f"{problem.get('message')}\n{problem.text}"
            for problem in case
            if problem.tag in ("failure", "error")
        )
        for case in ET.parse(junit).getroot().iter("testcase")
    }
    assert set(failed) == set(OUTCOMES)
    for name, lines in OUTCOMES.items():
        if lines is None:
            assert not failed[name], (name, failed[name])
        else:
            assert failed[name], f"{name} passed"
            for line in lines:
                assert line in failed[name], (name, failed[name])


def formatted(as_json: bool, level: int, name: str, **fields: object) -> str:
    """A line as `hoomi serve` logs it (hoomi.server.logs), with a traceback if raised."""
    try:
        raise ConnectionError("the peer went")
    except ConnectionError:
        record = logging.LogRecord("hoomi", level, "x", 1, name, None, sys.exc_info())
    record.fields = fields
    return _Formatter(as_json).format(record)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_log_reader_finds_hoomis_error_lines_with_their_exception(as_json: bool) -> None:
    log = "\n".join(
        [
            "Hoomi 0.1.0 listening on ws://127.0.0.1:1/",
            formatted(as_json, logging.INFO, "connected", session="s1", remote="x y=z"),
            formatted(as_json, logging.WARNING, "store_unavailable", error="level=error"),
            formatted(as_json, logging.ERROR, "session_failed", session="s1"),
            formatted(as_json, logging.CRITICAL, "gone", note='say "level=error"'),
        ]
    )
    assert errorlog.errors_in(log, "serve.log") == [
        errorlog.Logged("serve.log", "session_failed", "ConnectionError"),
        errorlog.Logged("serve.log", "gone", "ConnectionError"),
    ]


def test_the_log_reader_names_the_exception_of_a_crash_and_of_each_in_a_group(
    tmp_path: pathlib.Path,
) -> None:
    crash = (
        "import trio\n"
        "async def main():\n"
        "    async with trio.open_nursery() as nursery:\n"
        "        nursery.start_soon(trio.sleep_forever)\n"
        "        try:\n"
        "            raise KeyError(1)\n"
        "        except KeyError:\n"
        "            raise RuntimeError('gone')\n"
        "trio.run(main)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", crash], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1, done.stderr
    found = errorlog.errors_in(done.stderr, "crash")
    assert [item.error for item in found] == ["ExceptionGroup", "KeyError", "RuntimeError"], (
        done.stderr
    )
    assert {item.event for item in found} == {"traceback"}
    assert errorlog.errors_in("all is well\nlevel=errors are words\n", "fine") == []
