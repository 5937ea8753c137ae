"""The codec's contract beyond the spec's examples."""

from __future__ import annotations

import orjson
import pytest

from hoomi.protocol import Direction, ErrorCode, ProtocolError, decode, encode, encode_bytes
from hoomi.protocol import messages as m
from hoomi.protocol.codec import json_path

SEND = {"type": "send", "id": "r1", "conversation_id": "c1", "client_msg_id": "k1", "text": "hi"}


def _error(frame: str, direction: Direction = Direction.CLIENT) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode(frame, direction)
    return caught.value


def test_unknown_fields_are_ignored_in_both_directions() -> None:
    message = decode(orjson.dumps({**SEND, "future_field": {"x": 1}}))
    assert message == m.Send(id="r1", conversation_id="c1", client_msg_id="k1", text="hi")
    pong = decode('{"type":"pong","id":"p","server_time":5,"extra":true}', Direction.SERVER)
    assert pong == m.Pong(id="p", server_time=5)


def test_types_are_only_known_in_their_own_direction() -> None:
    welcome_from_client = _error('{"type":"welcome","id":"w1"}')
    assert (welcome_from_client.code, welcome_from_client.request_id) == (
        ErrorCode.UNKNOWN_TYPE,
        "w1",
    )
    assert _error('{"type":"send","id":"x"}', Direction.SERVER).code is ErrorCode.UNKNOWN_TYPE


def test_encode_puts_type_first_and_leaves_out_unset_optionals() -> None:
    error = m.Error(code="forbidden", message="not a member")
    assert encode(error) == '{"type":"error","code":"forbidden","message":"not a member"}'
    assert encode_bytes(error) == encode(error).encode()


def test_a_missing_field_is_reported_at_its_own_path() -> None:
    frame = orjson.dumps({"type": "hello", "id": "h", "token": "t", "resume": [{}]}).decode()
    error = _error(frame)
    assert (error.code, error.path, error.request_id) == (
        ErrorCode.BAD_REQUEST,
        "$.resume[0].conversation_id",
        "h",
    )
    assert "$.resume[0].conversation_id" in error.message


def test_error_detail_is_bounded_even_for_a_huge_value() -> None:
    error = _error(orjson.dumps({**SEND, "text": ["x" * 100_000]}).decode())
    assert error.path == "$.text"
    assert len(error.message) < 400


def test_the_request_id_is_echoed_only_when_it_is_a_valid_id() -> None:
    assert _error('{"type":"nope","id":"ok-1"}').request_id == "ok-1"
    assert _error('{"type":"nope","id":""}').request_id is None
    assert _error('{"type":"nope","id":7}').request_id is None
    assert _error('{"type":"nope","id":"' + "x" * 65 + '"}').request_id is None


@pytest.mark.parametrize(
    "frame",
    ["", "{", "[1]", '"send"', "null", "1e400", '{"type":"ping","id":"a"} x', "\ud800"],
)
def test_non_objects_and_broken_json_are_bad_requests_at_the_root(frame: str) -> None:
    error = _error(frame)
    assert (error.code, error.path, error.request_id) == (ErrorCode.BAD_REQUEST, "$", None)


def test_bytes_input_with_invalid_utf8_is_a_bad_request() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(b'{"type":"ping","id":"\xff"}')
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_json_path_quotes_keys_that_are_not_identifiers() -> None:
    assert json_path(["resume", 3, "after_seq"]) == "$.resume[3].after_seq"
    assert json_path(["a b", 0]) == '$["a b"][0]'
    assert json_path([]) == "$"
