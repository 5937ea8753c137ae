"""Decode and encode protocol v1 frames: one converter, validators compiled once.

`decode` is the boundary: text from the peer either becomes a message object or raises
`ProtocolError` with the spec's error code, the JSON path of the offending value and the
request id when it could be read. Nothing else escapes it (``tests/test_fuzz.py``).
`encode` turns a message object into the frame text; it trusts its input (our own code).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import cattrs
import jsonschema_rs
import orjson
from cattrs.gen import make_dict_unstructure_fn

from . import spec
from .errors import ErrorCode, ProtocolError
from .messages import CLIENT_MESSAGES, SERVER_MESSAGES, ClientMessage, Message, ServerMessage


class Direction(enum.Enum):
    """Who sent the frame being decoded: a server decodes CLIENT frames, a client SERVER ones."""

    CLIENT = "client"
    SERVER = "server"


def _make_converter() -> cattrs.Converter:
    # Structuring runs after JSON Schema validation, so detailed errors buy nothing here.
    converter = cattrs.Converter(detailed_validation=False)

    def omit_none(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
        return make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=True)

    converter.register_unstructure_hook_factory(attrs.has, omit_none)
    return converter


CONVERTER = _make_converter()
"""The one converter between message objects and JSON-ready dicts."""


def _schema_registry() -> tuple[jsonschema_rs.Registry, dict[str, Any]]:
    """Every schema under spec/v1/schemas, keyed by `$id`, and the message schemas by path."""
    root = spec.spec_dir() / "schemas"
    resources: list[tuple[str, Any]] = []
    by_path: dict[str, Any] = {}
    for file in sorted(root.rglob("*.json")):
        schema = orjson.loads(file.read_bytes())
        resources.append((schema["$id"], schema))
        by_path[file.relative_to(root).as_posix()] = schema
    return jsonschema_rs.Registry(resources), by_path


# (array field, key): the array's items must differ in that key (`x-unique-by`).
_Unique = tuple[tuple[str, str], ...]
_Entry = tuple[jsonschema_rs.Validator, type[Any], _Unique]


@functools.cache
def _validators() -> dict[Direction, dict[str, _Entry]]:
    registry, by_path = _schema_registry()
    catalogue: dict[Direction, Mapping[str, type[Any]]] = {
        Direction.CLIENT: CLIENT_MESSAGES,
        Direction.SERVER: SERVER_MESSAGES,
    }
    compiled: dict[Direction, dict[str, _Entry]] = {}
    for direction, classes in catalogue.items():
        compiled[direction] = {}
        for tag, cls in classes.items():
            schema = by_path[f"{direction.value}/{tag}.json"]
            validator = jsonschema_rs.Draft202012Validator(
                schema, registry=registry, base_uri=schema["$id"], offline=True
            )
            unique = tuple(
                (name, prop["x-unique-by"])
                for name, prop in schema.get("properties", {}).items()
                if "x-unique-by" in prop
            )
            compiled[direction][tag] = (validator, cls, unique)
    return compiled


def warm_up() -> None:
    """Compile the validators and run the spec's valid examples through decode and encode
    now instead of on the first frames: the first connection then pays neither the
    compilation nor the paging-in of the validator's code (~3.4 MB of it, measured)."""
    _validators()
    for file in sorted((spec.spec_dir() / "examples" / "valid").glob("*.json")):
        example = orjson.loads(file.read_bytes())
        encode(decode(orjson.dumps(example["message"]), Direction(example["direction"])))


# Validator messages quote the offending value; a peer can make that value large.
_MAX_DETAIL = 200
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def json_path(parts: Sequence[str | int]) -> str:
    """``["resume", 0, "after_seq"]`` -> ``$.resume[0].after_seq``."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}")
        else:
            out.append(f"[{orjson.dumps(part).decode()}]")
    return "".join(out)


def _request_id(obj: dict[str, Any]) -> str | None:
    rid = obj.get("id")
    if type(rid) is str and 1 <= len(rid) <= 64:
        return rid
    return None


def _schema_error(error: jsonschema_rs.ValidationError, tag: str, rid: str | None) -> ProtocolError:
    parts = list(error.instance_path)
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        # Point at the missing property itself, not at the object that lacks it.
        parts.append(kind.property)
        message = f"`{tag}` is missing the required field {json_path(parts)}"
    elif isinstance(kind, jsonschema_rs.ValidationErrorKind.Not):
        forbidden = kind.schema
        names = forbidden.get("required", []) if isinstance(forbidden, dict) else []
        together = " and ".join(str(name) for name in names) if isinstance(names, list) else ""
        message = f"`{tag}` may not carry {together or 'this combination of fields'} together"
    else:
        detail = error.message
        if len(detail) > _MAX_DETAIL:
            detail = detail[:_MAX_DETAIL] + "…"
        message = f"`{tag}`: {json_path(parts)}: {detail}"
    return ProtocolError(ErrorCode.BAD_REQUEST, message, path=json_path(parts), request_id=rid)


def _check_unique(obj: dict[str, Any], unique: _Unique, tag: str, rid: str | None) -> None:
    """Decoder rule 5 (examples/README.md): no two items of an `x-unique-by` array share
    that key; the error names the first repeat (`$.resume[1].conversation_id`)."""
    for name, key in unique:
        seen: set[Any] = set()
        for index, item in enumerate(obj.get(name) or ()):
            value = item[key]  # the schema requires the key and makes it a string
            if value in seen:
                path = json_path([name, index, key])
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"`{tag}`: {path} repeats {value!r}; list each at most once",
                    path=path,
                    request_id=rid,
                )
            seen.add(value)


def decode(data: str | bytes, direction: Direction = Direction.CLIENT) -> Message:
    """Parse and validate one frame sent by `direction`.

    Raises `ProtocolError` (and nothing else) when the frame is not JSON, not an object,
    has no string `type`, names no message of that direction (``unknown_type``), breaks
    the message's schema, or repeats a key in an `x-unique-by` array such as `hello.resume`
    (``bad_request`` with the JSON path).
    """
    message: Message = _decode(data, direction)
    return message


def decode_client(data: str | bytes) -> ClientMessage:
    """`decode` for what a server receives."""
    message: ClientMessage = _decode(data, Direction.CLIENT)
    return message


def decode_server(data: str | bytes) -> ServerMessage:
    """`decode` for what a client receives. Clients should ignore ``unknown_type`` errors."""
    message: ServerMessage = _decode(data, Direction.SERVER)
    return message


def _decode(data: str | bytes, direction: Direction) -> Any:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"frame is not valid JSON: {exc}", path="$"
        ) from None
    if type(obj) is not dict:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "frame must be a JSON object", path="$")
    rid = _request_id(obj)
    tag = obj.get("type")
    if type(tag) is not str:
        what = "is missing" if tag is None and "type" not in obj else "must be a string"
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"frame `type` {what}", path="$.type", request_id=rid
        )
    entry = _validators()[direction].get(tag)
    if entry is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown {direction.value} message type {tag!r}",
            path="$.type",
            request_id=rid,
        )
    validator, cls, unique = entry
    try:
        validator.validate(obj)
    except jsonschema_rs.ValidationError as exc:
        raise _schema_error(exc, tag, rid) from None
    if unique:
        _check_unique(obj, unique, tag, rid)
    try:
        return CONVERTER.structure(obj, cls)
    except Exception as exc:  # pragma: no cover - the schema admits only what structures
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"`{tag}` does not structure: {exc}", path="$", request_id=rid
        ) from None


def to_dict(message: Message) -> dict[str, Any]:
    """The JSON-ready dict of `message`, `type` first."""
    return {"type": message.TYPE, **CONVERTER.unstructure(message)}


def encode_bytes(message: Message) -> bytes:
    """The UTF-8 frame of `message`: fan-out encodes once and sends these bytes to everyone."""
    return orjson.dumps(to_dict(message))


def encode(message: Message) -> str:
    """The frame text of `message`."""
    return encode_bytes(message).decode()
