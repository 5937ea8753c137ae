"""Shared test fixtures: where the spec lives."""

from __future__ import annotations

import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
SPEC = REPO / "spec" / "v1"
