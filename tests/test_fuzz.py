"""The decoder's contract, fuzzed: any input either decodes or raises `ProtocolError`.

Nothing else may escape ``decode`` — not a KeyError, not a RecursionError, not a crash —
whatever bytes a peer sends (STYLE.md practice 4).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hoomi.protocol import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Direction,
    ErrorCode,
    Message,
    ProtocolError,
    decode,
    encode,
)
from test_spec_data import BY_DIRECTION, first_repeat, schema_error_paths, strict_parse

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


def _judged(data: str | bytes, direction: Direction) -> tuple[ErrorCode, set[str], Any] | None:
    """What the reference decoder of `test_spec_data` (the stdlib's json and the reference
    `jsonschema`, no hoomi code) says of `data`: None if it must decode, else the error code,
    the JSON paths the error may name (one per schema violation) and the request id."""
    try:
        # A WebSocket text frame is UTF-8: no invalid bytes, no lone surrogates.
        text = data.decode() if isinstance(data, bytes) else data
        text.encode()
        value = strict_parse(text)
    except ValueError:  # UnicodeError and JSONDecodeError are ValueErrors
        return ErrorCode.BAD_REQUEST, {"$"}, None
    if not isinstance(value, dict):
        return ErrorCode.BAD_REQUEST, {"$"}, None
    rid = value.get("id")
    request_id = rid if isinstance(rid, str) and 1 <= len(rid) <= 64 else None
    tag = value.get("type")
    schemas = BY_DIRECTION[direction.value]
    if not isinstance(tag, str):
        return ErrorCode.BAD_REQUEST, {"$.type"}, request_id
    if tag not in schemas:
        return ErrorCode.UNKNOWN_TYPE, {"$.type"}, request_id
    paths = schema_error_paths(schemas[tag], value)
    if not paths:
        repeat = first_repeat(schemas[tag], value)
        if repeat is None:
            return None
        paths = {repeat}
    return ErrorCode.BAD_REQUEST, paths, request_id


def _outcome(data: str | bytes, direction: Direction) -> Message | ProtocolError:
    try:
        return decode(data, direction)
    except ProtocolError as exc:
        return exc


def _decode_or_protocol_error(data: str | bytes, direction: Direction) -> None:
    """The decoder's whole contract for `data`: a frame the reference decoder accepts
    decodes, and re-encodes to the fields it was sent (unknown ones dropped) and back to
    the same message; any other raises `ProtocolError` with the reference's code, one of
    its paths and the request id."""
    judged = _judged(data, direction)
    message = _outcome(data, direction)
    if isinstance(message, ProtocolError):
        assert judged is not None, f"refused a frame the reference decoder accepts: {message}"
        code, paths, request_id = judged
        assert (message.code, message.request_id) == (code, request_id), message
        assert message.path in paths, message
        return
    assert judged is None, f"decoded a frame that must be refused with {judged}: {message}"
    frame = encode(message)
    assert decode(frame, direction) == message
    sent = strict_parse(data.decode() if isinstance(data, bytes) else data)
    encoded = orjson.loads(frame)
    assert encoded == {name: sent[name] for name in encoded}


@settings(max_examples=400, deadline=None)
@given(st.text(), directions)
def test_any_text(text: str, direction: Direction) -> None:
    _decode_or_protocol_error(text, direction)


@settings(max_examples=300, deadline=None)
@given(st.binary(), directions)
def test_any_bytes(data: bytes, direction: Direction) -> None:
    _decode_or_protocol_error(data, direction)


@settings(max_examples=600, deadline=None)
@given(message_like, directions)
def test_message_like_objects(obj: dict[str, Any], direction: Direction) -> None:
    # The stdlib encoder, unlike orjson, writes integers beyond 64 bits, as a peer may.
    _decode_or_protocol_error(json.dumps(obj), direction)


def test_deep_nesting_is_a_protocol_error() -> None:
    _decode_or_protocol_error("[" * 100_000 + "]" * 100_000, Direction.CLIENT)
    _decode_or_protocol_error('{"type":"send","id":"a","text":' + "[" * 5000, Direction.CLIENT)
