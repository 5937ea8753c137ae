"""The error and close-code enums mirror the spec's registries exactly."""

from __future__ import annotations

import orjson
import pytest

from conftest import SPEC
from hoomi.protocol import CloseCode, ErrorCode


def test_error_codes_equal_the_registry() -> None:
    registry = orjson.loads((SPEC / "errors.json").read_bytes())["errors"]
    assert [e["code"] for e in registry] == [c.value for c in ErrorCode]


@pytest.mark.requirement("HOOMI-CLOSE-1")
def test_close_codes_equal_the_registry_with_their_reconnect_marks() -> None:
    registry = orjson.loads((SPEC / "close-codes.json").read_bytes())["close_codes"]
    assert [(c["code"], c["name"], c["action"]) for c in registry] == [
        (c.value, c.name.lower(), "reconnect" if c.reconnect else "terminal") for c in CloseCode
    ]


def test_close_codes_are_in_the_ranges_websocket_allows() -> None:
    # RFC 6455 7.4: 1000-1011 are defined; 4000-4999 are for applications. 1004-1006 and
    # 1015 must never be sent in a close frame.
    for code in CloseCode:
        assert code in range(4000, 5000) or code in {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011}
