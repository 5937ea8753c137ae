"""Shared test fixtures: where the spec lives, `tls` (a test over plain TCP and TLS), a mock
`clock`, a count of the system's writev calls, the net under every test: it fails on an error
the code logged that the test did not declare (see errorlog.py), and the check that
``@pytest.mark.requirement`` names real ids."""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Iterator

import pytest
import trio.testing

import errorlog

REPO = pathlib.Path(__file__).resolve().parent.parent
SPEC = REPO / "spec" / "v1"


@functools.cache
def requirement_ids() -> frozenset[str]:
    """Every id of spec/v1/requirements.json (read once, when a marker needs it)."""
    data = json.loads((SPEC / "requirements.json").read_text(encoding="utf-8"))
    return frozenset(r["id"] for section in data["sections"] for r in section["requirements"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse the run when a ``requirement`` marker names no id, an id that is not in
    requirements.json, or anything but positional strings (tools/tracegen.py reads them)."""
    problems = []
    for item in items:
        for marker in item.iter_markers("requirement"):
            ids = marker.args
            if not ids or marker.kwargs or not all(isinstance(i, str) for i in ids):
                problems.append(f"{item.nodeid}: requirement marker needs id strings only")
            elif unknown := sorted(set(ids) - requirement_ids()):
                problems.append(f"{item.nodeid}: unknown requirement ids {unknown}")
    if problems:
        raise pytest.UsageError("\n".join(sorted(set(problems))))


@pytest.fixture(params=[False, True], ids=["tcp", "tls"])
def tls(request: pytest.FixtureRequest) -> bool:
    """Run the test over plain TCP and over TLS (ids ``[tcp]``, ``[tls]``): pass it to
    `running_server(tls=...)` where TLS takes the server down another I/O path (no raw fd,
    every write queued, no Cork)."""
    value: bool = request.param
    return value


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """A mock clock for the test's Trio run (pytest-trio uses a fixture that is a clock).
    It jumps only after 10 ms of real idleness, so the store's worker threads (during which
    every task is blocked) do not make time leap."""
    return trio.testing.MockClock(autojump_threshold=0.01)


@pytest.fixture
def writev_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The buffers of each `os.writev` call made from now on (they still write)."""
    calls: list[int] = []
    writev = os.writev

    def counting(fd: int, buffers: list[bytes]) -> int:
        calls.append(len(buffers))
        return writev(fd, buffers)

    monkeypatch.setattr(os, "writev", counting)
    return calls


@pytest.fixture(autouse=True)
def no_undeclared_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if `hoomi` logged at ERROR or above, in this process or in the log of
    a process the harness started, except the records it declares with
    ``@pytest.mark.expect_errors(...)``, which must all come. Autouse fixtures are set up
    first and torn down last, so the test's own fixtures (async ones run inside the test's
    Trio run) are watched too."""
    marker = request.node.get_closest_marker("expect_errors")
    expected = errorlog.Expected.of(marker.args, marker.kwargs) if marker else errorlog.Expected()
    with errorlog.watching() as watch:
        yield
        problems = watch.problems(expected)
    if problems:
        pytest.fail("\n".join(["errors logged while the test ran:", *problems]), pytrace=False)
