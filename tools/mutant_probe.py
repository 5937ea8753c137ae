"""A pytest plugin `tools/mutants.py` loads into each run (``-p mutant_probe``).

It writes what the runner cannot trust pytest's exit code for, as JSON, to the file named by
``HOOMI_MUTANT_PROBE``: where `hoomi` was imported from (a run that tested the editable
install instead of the scratch copy would call every mutant survived), and each test's
outcome, with the failures that pytest-timeout caused told apart (a hang is caught only if
a test timeout fired). Standard library and pytest only.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

PROBE_ENV = "HOOMI_MUTANT_PROBE"

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not report.failed:
        return  # setup and teardown count only when they fail
    if report.failed:
        timed_out = "Timeout" in str(report.longrepr) and "pytest-timeout" in str(report.longrepr)
        _outcomes[report.nodeid] = "timeout" if timed_out else "failed"
    elif report.nodeid not in _outcomes:
        _outcomes[report.nodeid] = report.outcome  # passed or skipped


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(PROBE_ENV)
    if not path:
        return
    try:
        import hoomi

        hoomi_file: str | None = hoomi.__file__
    except ImportError:
        hoomi_file = None
    probe: dict[str, Any] = {
        "hoomi_file": hoomi_file,
        "collected": session.testscollected,
        "outcomes": _outcomes,
    }
    with open(path, "w", encoding="utf-8") as out:
        json.dump(probe, out)
