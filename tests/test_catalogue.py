"""No drift between the Python message classes and the spec's schemas."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest

from conftest import SPEC
from hoomi.protocol import CLIENT_MESSAGES, SERVER_MESSAGES

CATALOGUES: dict[str, dict[str, type[Any]]] = {
    "client": dict(CLIENT_MESSAGES),
    "server": dict(SERVER_MESSAGES),
}


def _schema(direction: str, tag: str) -> dict[str, Any]:
    path = SPEC / "schemas" / direction / f"{tag}.json"
    schema: dict[str, Any] = orjson.loads(path.read_bytes())
    return schema


@pytest.mark.parametrize("direction", ["client", "server"])
def test_the_python_types_are_exactly_the_schemas(direction: str) -> None:
    files = {p.stem for p in (SPEC / "schemas" / direction).glob("*.json")}
    assert set(CATALOGUES[direction]) == files


def test_no_type_is_in_both_directions() -> None:
    assert set(CLIENT_MESSAGES).isdisjoint(SERVER_MESSAGES)


@pytest.mark.parametrize(
    ("direction", "tag"),
    [(d, t) for d, classes in CATALOGUES.items() for t in sorted(classes)],
)
def test_fields_and_required_fields_match_the_schema(direction: str, tag: str) -> None:
    schema = _schema(direction, tag)
    cls = CATALOGUES[direction][tag]
    fields = attrs.fields(cls)
    assert schema["properties"]["type"] == {"const": tag}
    assert {f.name for f in fields} == set(schema["properties"]) - {"type"}
    required = {f.name for f in fields if f.default is attrs.NOTHING}
    assert required == set(schema["required"]) - {"type"}
    assert schema["x-direction"] == direction
