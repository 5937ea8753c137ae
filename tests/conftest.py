"""Shared test fixtures: where the spec lives, and a count of the system's writev calls."""

from __future__ import annotations

import os
import pathlib

import pytest

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
