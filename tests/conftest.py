"""Shared test fixtures: where the spec lives, a count of the system's writev calls, and
the net under every test: it fails on an error the code logged that the test did not
declare (see errorlog.py)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

import errorlog

REPO = pathlib.Path(__file__).resolve().parent.parent
SPEC = REPO / "spec" / "v1"


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
