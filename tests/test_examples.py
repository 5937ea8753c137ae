"""The spec's examples against the codec: valid ones decode, validate and round-trip;
invalid ones fail with exactly the error code (and path and id) they name."""

from __future__ import annotations

import pathlib
from typing import Any

import orjson
import pytest

from conftest import SPEC
from hoomi.protocol import Direction, ProtocolError, decode, encode

VALID = sorted((SPEC / "examples" / "valid").glob("*.json"))
INVALID = sorted((SPEC / "examples" / "invalid").glob("*.json"))


def _load(path: pathlib.Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def test_there_are_examples() -> None:
    assert len(VALID) >= 23, "every message type needs at least one valid example"
    assert INVALID


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_example_decodes_and_round_trips(path: pathlib.Path) -> None:
    example = _load(path)
    text = orjson.dumps(example["message"]).decode()
    message = decode(text, Direction(example["direction"]))
    assert message.TYPE == example["message"]["type"] == path.stem.split("--")[0]
    # Byte-equal modulo key order: the same JSON object back.
    assert orjson.loads(encode(message)) == example["message"]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_yields_exactly_its_error(path: pathlib.Path) -> None:
    example = _load(path)
    expected = example["error"]
    with pytest.raises(ProtocolError) as caught:
        decode(example["frame"], Direction(example["direction"]))
    error = caught.value
    assert error.code.value == expected["code"], error.message
    if "path" in expected:
        assert error.path == expected["path"], error.message
    assert error.request_id == expected.get("id"), error.message
