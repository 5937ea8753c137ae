"""The decoder's contract, fuzzed: any input either decodes or raises `ProtocolError`.

Nothing else may escape ``decode`` — not a KeyError, not a RecursionError, not a crash —
whatever bytes a peer sends (STYLE.md practice 4).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hoomi.protocol import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Direction,
    ErrorCode,
    ProtocolError,
    decode,
    encode,
)

TAGS = sorted({*CLIENT_MESSAGES, *SERVER_MESSAGES})
FIELD_NAMES = [
    "id",
    "type",
    "token",
    "conversation_id",
    "client_msg_id",
    "text",
    "seq",
    "before_seq",
    "after_seq",
    "limit",
    "active",
    "resume",
    "user_ids",
    "message",
    "conversations",
    "limits",
]

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | st.sampled_from(TAGS),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=20,
)
# Objects that look like messages, so that fuzzing reaches schema validation and structuring.
message_like = st.builds(
    lambda tag, fields: {**fields, "type": tag},
    st.sampled_from(TAGS) | st.text(max_size=10),
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8),
)
directions = st.sampled_from(list(Direction))


def _decode_or_protocol_error(data: str | bytes, direction: Direction) -> None:
    try:
        message = decode(data, direction)
    except ProtocolError as exc:
        error = exc
    else:
        # Whatever decodes must survive a round trip unchanged.
        assert decode(encode(message), direction) == message
        return
    assert isinstance(error.code, ErrorCode)
    assert error.path is None or error.path.startswith("$")


@settings(max_examples=400)
@given(st.text(), directions)
def test_any_text(text: str, direction: Direction) -> None:
    _decode_or_protocol_error(text, direction)


@settings(max_examples=300)
@given(st.binary(), directions)
def test_any_bytes(data: bytes, direction: Direction) -> None:
    _decode_or_protocol_error(data, direction)


@settings(max_examples=600)
@given(message_like, directions)
def test_message_like_objects(obj: dict[str, Any], direction: Direction) -> None:
    # The stdlib encoder, unlike orjson, writes integers beyond 64 bits, as a peer may.
    _decode_or_protocol_error(json.dumps(obj), direction)


def test_deep_nesting_is_a_protocol_error() -> None:
    _decode_or_protocol_error("[" * 100_000 + "]" * 100_000, Direction.CLIENT)
    _decode_or_protocol_error('{"type":"send","id":"a","text":' + "[" * 5000, Direction.CLIENT)
