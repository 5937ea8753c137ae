"""Where the protocol spec lives, and its files loaded as JSON.

The source of truth is ``spec/`` at the top of the repository. Wheels carry a copy inside
the package (``hoomi/spec``, see pyproject.toml); a source checkout uses the repository's.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import orjson

SPEC_VERSION_DIR = "v1"


@functools.cache
def spec_root() -> pathlib.Path:
    """The directory holding ``v1/``; raises FileNotFoundError if neither copy exists."""
    here = pathlib.Path(__file__).resolve()
    for candidate in (here.parent.parent / "spec", here.parents[3] / "spec"):
        if (candidate / SPEC_VERSION_DIR / "spec.json").is_file():
            return candidate
    raise FileNotFoundError("the Hoomi protocol spec (spec/v1/spec.json) is missing")


def spec_dir() -> pathlib.Path:
    """``spec/v1``."""
    return spec_root() / SPEC_VERSION_DIR


def load(relative: str) -> Any:
    """Parse one JSON file below ``spec/v1``."""
    return orjson.loads((spec_dir() / relative).read_bytes())


_META = load("spec.json")
SPEC_VERSION: str = _META["spec_version"]
SUBPROTOCOL: str = _META["subprotocol"]
