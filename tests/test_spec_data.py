"""Consistency checks for the spec data: schemas, examples, transcripts and registries.

Uses only the reference `jsonschema` implementation (never hoomi code), so that the spec is
checked against itself. See spec/v1/examples/README.md and spec/v1/transcripts/README.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:
    from referencing._core import Resolver

ROOT: Final = Path(__file__).resolve().parents[1]
SPEC: Final = ROOT / "spec" / "v1"

# Error codes no client script can provoke: they need a server fault.
UNCOVERABLE_ERROR_CODES: Final[Mapping[str, str]] = {
    "internal": "needs a failure inside the server while it handles a request",
    "unavailable": "needs unreachable storage (or a draining server that still answers requests)",
}
# Close codes the server never sends in reply to a client script.
UNCOVERABLE_CLOSE_CODES: Final[Mapping[int, str]] = {
    1000: "normal closure is initiated by the client (`close` steps), never by the server",
    1002: "protocol_error needs a frame that breaks WebSocket framing; transcripts send only "
    "well-formed frames (the server's own tests send raw bytes)",
    1011: "internal_error needs the connection's handler to fail inside the server",
}
# Server settings a transcript `config` may name besides state-machine timers and welcome limits.
EXTRA_SETTINGS: Final = frozenset({"max_connections_per_user", "outbox_size"})

MAX_DEPTH: Final = 1024


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def canonical(value: Any) -> str:
    """The file format of examples and transcripts: 2-space JSON, UTF-8, trailing newline."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def rel(path: Path) -> str:
    return str(path.relative_to(SPEC))


SCHEMA_FILES: Final = sorted((SPEC / "schemas").rglob("*.json"))
META_FILES: Final = sorted((SPEC / "meta").rglob("*.json"))
VALID_EXAMPLES: Final = sorted((SPEC / "examples" / "valid").glob("*.json"))
INVALID_EXAMPLES: Final = sorted((SPEC / "examples" / "invalid").glob("*.json"))
TRANSCRIPTS: Final = sorted((SPEC / "transcripts").glob("*.json"))

SCHEMAS: Final[dict[Path, dict[str, Any]]] = {p: load(p) for p in SCHEMA_FILES + META_FILES}
REGISTRY: Final[Registry[Any]] = Registry().with_resources(
    (s["$id"], DRAFT202012.create_resource(s)) for s in SCHEMAS.values() if "$id" in s
)


def message_schemas(direction: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((SPEC / "schemas" / direction).glob("*.json")):
        schema = SCHEMAS[path]
        out[schema["properties"]["type"]["const"]] = schema
    return out


CLIENT: Final = message_schemas("client")
SERVER: Final = message_schemas("server")
BY_DIRECTION: Final = {"client": CLIENT, "server": SERVER}

REQUIREMENTS: Final = load(SPEC / "requirements.json")
REQUIREMENT_IDS: Final = frozenset(
    r["id"] for section in REQUIREMENTS["sections"] for r in section["requirements"]
)
ERRORS: Final = load(SPEC / "errors.json")["errors"]
ERROR_CODES: Final = frozenset(e["code"] for e in ERRORS)
CLOSE_CODES_DATA: Final = load(SPEC / "close-codes.json")["close_codes"]
CLOSE_CODES: Final = frozenset(c["code"] for c in CLOSE_CODES_DATA)
STATE_MACHINE: Final = load(SPEC / "state-machine.json")


def validator(schema: Mapping[str, Any]) -> Any:
    return Draft202012Validator(schema, registry=REGISTRY)


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


# --------------------------------------------------------------------------------------------
# Reference decoder rules (what the server's decoder must answer for a refused frame)


def json_path(parts: Iterator[str | int] | list[str | int]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def text_depth(text: str) -> int:
    """Deepest nesting of objects and arrays in JSON text (brackets inside strings skipped)."""
    deepest = level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_parse(text: str) -> Any:
    """Parse like the decoder: RFC 8259 only, nesting at most MAX_DEPTH. Integers of any
    size parse; the schemas bound every integer field (at 2**53 - 1), so an out-of-range
    one is refused at its own path."""
    if text_depth(text) > MAX_DEPTH:
        raise ValueError("nested too deeply")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * MAX_DEPTH))  # the json module recurses per level
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    finally:
        sys.setrecursionlimit(limit)


def schema_error_paths(schema: Mapping[str, Any], instance: Any) -> set[str]:
    """JSON paths of the schema violations; a missing property is named by its own path."""
    paths: set[str] = set()
    for error in validator(schema).iter_errors(instance):
        parts: list[str | int] = list(error.absolute_path)
        if error.validator == "required":
            missing = [p for p in error.validator_value if p not in error.instance]
            paths.update(json_path([*parts, m]) for m in missing)
        else:
            paths.add(json_path(parts))
    return paths


def expected_error(frame: str) -> tuple[str, str, str | None] | None:
    """(code, path, id) of the error reply for `frame`, or None if it is a valid request."""
    try:
        value = strict_parse(frame)
    except ValueError:
        return ("bad_request", "$", None)
    if not isinstance(value, dict):
        return ("bad_request", "$", None)
    rid = value.get("id")
    request_id = rid if isinstance(rid, str) and 1 <= len(rid) <= 64 else None
    kind = value.get("type")
    if not isinstance(kind, str):
        return ("bad_request", "$.type", request_id)
    if kind not in CLIENT:
        return ("unknown_type", "$.type", request_id)
    paths = schema_error_paths(CLIENT[kind], value)
    if not paths:
        repeat = first_repeat(CLIENT[kind], value)
        return None if repeat is None else ("bad_request", repeat, request_id)
    assert len(paths) == 1, f"frame has more than one problem: {sorted(paths)}"
    return ("bad_request", paths.pop(), request_id)


def first_repeat(schema: Mapping[str, Any], value: dict[str, Any]) -> str | None:
    """Rule 5: the path of the first item of an `x-unique-by` array that repeats its key."""
    for name, prop in schema.get("properties", {}).items():
        key = prop.get("x-unique-by")
        if key is None:
            continue
        keys = [item[key] for item in value.get(name, [])]
        for index, item_key in enumerate(keys):
            if item_key in keys[:index]:
                return json_path([name, index, key])
    return None


# --------------------------------------------------------------------------------------------
# Schemas


@pytest.mark.parametrize("path", SCHEMA_FILES + META_FILES, ids=lambda p: rel(p))
def test_schema_is_valid(path: Path) -> None:
    Draft202012Validator.check_schema(SCHEMAS[path])


@pytest.mark.parametrize("direction", ["client", "server"])
def test_message_schema_direction(direction: str) -> None:
    for kind, schema in BY_DIRECTION[direction].items():
        assert schema["x-direction"] == direction, kind
        assert schema["$id"].endswith(f"/{direction}/{kind}.json"), kind


# --------------------------------------------------------------------------------------------
# Examples


def _properties(schema: Mapping[str, Any], resolver: Resolver[Any]) -> dict[str, Any]:
    """Declared properties of an object schema (through $ref and allOf) with their resolvers."""
    out: dict[str, Any] = {}
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        out.update(_properties(resolved.contents, resolved.resolver))
    for sub in schema.get("allOf", []):
        out.update(_properties(sub, resolver))
    for name, sub in schema.get("properties", {}).items():
        out[name] = (sub, resolver)
    return out


def _items(schema: Mapping[str, Any], resolver: Resolver[Any]) -> tuple[Any, Resolver[Any]]:
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        return _items(resolved.contents, resolved.resolver)
    return (schema.get("items", {}), resolver)


def undeclared(
    schema: Mapping[str, Any], resolver: Resolver[Any], value: Any, at: str
) -> list[str]:
    """Paths in `value` that its schema does not declare, or that hold null."""
    if value is None:
        return [at]
    if isinstance(value, dict):
        props = _properties(schema, resolver)
        found: list[str] = []
        for key, sub in value.items():
            if key not in props:
                found.append(f"{at}.{key}")
            else:
                found.extend(undeclared(props[key][0], props[key][1], sub, f"{at}.{key}"))
        return found
    if isinstance(value, list):
        item_schema, item_resolver = _items(schema, resolver)
        return [
            p
            for i, item in enumerate(value)
            for p in undeclared(item_schema, item_resolver, item, f"{at}[{i}]")
        ]
    return []


EXAMPLE_META: Final = validator(load(SPEC / "meta" / "example.schema.json"))


@pytest.mark.parametrize("path", VALID_EXAMPLES + INVALID_EXAMPLES, ids=lambda p: rel(p))
def test_example_file_shape(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    example = json.loads(text)
    assert [e.message for e in EXAMPLE_META.iter_errors(example)] == []
    assert text == canonical(example)
    assert set(example["requirements"]) <= REQUIREMENT_IDS


@pytest.mark.parametrize("path", VALID_EXAMPLES, ids=ids(VALID_EXAMPLES))
def test_valid_example(path: Path) -> None:
    example = load(path)
    assert "frame" not in example
    kind, sep, slug = path.stem.partition("--")
    assert sep, "name is <type>--<slug>.json"
    assert slug, "name is <type>--<slug>.json"
    message = example["message"]
    assert message["type"] == kind
    schemas = BY_DIRECTION[example["direction"]]
    assert kind in schemas, f"{kind} is not a {example['direction']} message type"
    schema = schemas[kind]
    assert [e.message for e in validator(schema).iter_errors(message)] == []
    # Round trip: no unknown field, no optional field set to null.
    resolver = REGISTRY.resolver(base_uri=schema["$id"])
    assert undeclared(schema, resolver, message, "$") == []


def test_every_message_type_has_a_valid_example() -> None:
    seen = {(load(p)["direction"], p.stem.partition("--")[0]) for p in VALID_EXAMPLES}
    wanted = {(d, k) for d, schemas in BY_DIRECTION.items() for k in schemas}
    assert wanted - seen == set()


@pytest.mark.parametrize("path", INVALID_EXAMPLES, ids=ids(INVALID_EXAMPLES))
def test_invalid_example(path: Path) -> None:
    example = load(path)
    assert "--" not in path.stem
    error = example["error"]
    assert error["code"] in ERROR_CODES
    expected = expected_error(example["frame"])
    assert expected is not None, "the frame is a valid request"
    assert (error["code"], error.get("path"), error["id"]) == expected


def test_invalid_examples_are_distinct() -> None:
    frames = [load(p)["frame"] for p in INVALID_EXAMPLES]
    assert len(frames) == len(set(frames))


# --------------------------------------------------------------------------------------------
# Transcripts

TRANSCRIPT_META: Final = validator(load(SPEC / "meta" / "transcript.schema.json"))
FAKE_TOKEN: Final = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


class Unresolvable(Exception):
    """A frame holds a value only known at run time ($var)."""


def substitute(value: Any, iteration: int | None) -> Any:
    """Replace frame placeholders by representative concrete values."""
    if isinstance(value, list):
        return [substitute(v, iteration) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "$token":
            return FAKE_TOKEN
        if key == "$conv":
            return f"conv-{arg}"
        if key == "$fill":
            return str(arg["with"]) * int(arg["length"])
        if key == "$i":
            assert iteration is not None, "$i outside repeat"
            return f"{arg}{iteration}"
        if key == "$var":
            raise Unresolvable(arg)
    return {k: substitute(v, iteration) for k, v in value.items()}


def flat_steps(steps: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], int | None]]:
    """Steps in order, a repeat's body once (as iteration 1)."""
    for step in steps:
        if "repeat" in step:
            yield from ((s, 1) for s in step["steps"])
        else:
            yield (step, None)


def walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every object inside a frame or pattern, outermost first, in document order."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


CONN_VERBS: Final = (
    "connect",
    "send",
    "expect",
    "expect_any_order",
    "expect_silence",
    "expect_close",
    "close",
    "drop",
    "pause_reading",
)


def step_conn(step: Mapping[str, Any]) -> str | None:
    for verb in CONN_VERBS:
        if verb in step:
            return str(step[verb])
    if step.get("operator") == "kick":
        return str(step["target"])
    return None


def expect_patterns(step: Mapping[str, Any]) -> list[Any]:
    if "expect" in step:
        return [step["message"]]
    if "expect_any_order" in step:
        return list(step["messages"])
    return []


def next_on(steps: list[tuple[dict[str, Any], int | None]], index: int, conn: str) -> Any:
    for step, _ in steps[index + 1 :]:
        if step_conn(step) == conn:
            return step
    return None


TRANSCRIPT_DATA: Final = {p: load(p) for p in TRANSCRIPTS}
# Ids no example or transcript cites: the client's behaviour, graded by the client
# conformance kit instead (test_conformance_client.py checks that its scenarios name each).
UNCITED_REQUIREMENTS: Final = REQUIREMENT_IDS - {
    r for p in VALID_EXAMPLES + INVALID_EXAMPLES + TRANSCRIPTS for r in load(p)["requirements"]
}


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=ids(TRANSCRIPTS))
def test_transcript_shape(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    transcript = json.loads(text)
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in TRANSCRIPT_META.iter_errors(transcript)
    ]
    assert errors == []
    assert text == canonical(transcript)
    assert transcript["name"] == path.stem
    assert set(transcript["requirements"]) <= REQUIREMENT_IDS
    assert set(transcript.get("ignore_types", [])) <= set(SERVER)
    for index, step in enumerate(transcript["steps"]):
        for sub in [step, *step.get("steps", [])]:
            tagged = set(sub.get("requirements", []))
            assert tagged <= set(transcript["requirements"]), (
                f"steps[{index}] cites requirements the transcript does not list"
            )


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=ids(TRANSCRIPTS))
def test_transcript_references(path: Path) -> None:
    """Users, conversations, connections and variables are defined before they are used."""
    transcript = TRANSCRIPT_DATA[path]
    setup = transcript["setup"]
    users = set(setup["users"])
    refs: dict[str, set[str]] = {}
    for conversation in setup["conversations"]:
        assert conversation["ref"] not in refs
        assert set(conversation["members"]) <= users
        if conversation["kind"] == "direct":
            assert len(conversation["members"]) == 2
        refs[conversation["ref"]] = set(conversation["members"])
    for message in setup.get("messages", []):
        assert message["conversation"] in refs
        if "sender" in message:
            assert message["sender"] in refs[message["conversation"]]

    conns: dict[str, str] = {}
    captured: set[str] = set()
    for step, iteration in flat_steps(transcript["steps"]):
        conn = step_conn(step)
        if "connect" in step:
            assert step["as"] in users
            conns[step["connect"]] = step["as"]
        elif conn is not None:
            assert conn in conns, f"connection {conn} used before connect"
        if "operator" in step:
            assert {step[k] for k in ("conversation",) if k in step} <= set(refs)
            assert {step[k] for k in ("user", "sender") if k in step} <= users
        values = [step.get("frame"), *expect_patterns(step)]
        for obj in walk(values):
            if "$conv" in obj:
                assert obj["$conv"] in refs
            if "$token" in obj:
                assert obj["$token"]["sub"] in users
            if "$var" in obj:
                assert obj["$var"] in captured, f"$var {obj['$var']} before $capture"
            if "$i" in obj:
                assert iteration is not None, "$i outside repeat"
            if "$capture" in obj:
                assert obj["$capture"] not in captured, f"{obj['$capture']} captured twice"
                captured.add(obj["$capture"])
        frame = step.get("frame") or {}
        token = frame.get("token") if frame.get("type") == "hello" else None
        if isinstance(token, dict) and "$token" in token:
            assert token["$token"]["sub"] == conns[step["send"]], "hello as another user"


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=ids(TRANSCRIPTS))
def test_transcript_messages(path: Path) -> None:
    """Expected types are server types; sent frames are valid unless marked `invalid`, and the
    error expected right after an invalid frame is the one the decoder rules give."""
    transcript = TRANSCRIPT_DATA[path]
    steps = list(flat_steps(transcript["steps"]))
    for index, (step, iteration) in enumerate(steps):
        for pattern in expect_patterns(step):
            kind = pattern.get("type") if isinstance(pattern, dict) else None
            assert isinstance(kind, str), "expect patterns name a literal type"
            assert kind in SERVER, f"{kind} is not a server message type"
            if kind == "error" and isinstance(pattern.get("code"), str):
                assert pattern["code"] in ERROR_CODES
        if "send" not in step or not ("frame" in step or "text" in step):
            continue
        try:
            frame = substitute(step["frame"], iteration) if "frame" in step else None
        except Unresolvable:
            continue
        text = step["text"] if frame is None else json.dumps(frame, separators=(",", ":"))
        expected = expected_error(text)
        if "frame" in step:
            assert step.get("invalid", False) == (expected is not None), (
                f"step {index}: `invalid` must be set exactly on frames that are not valid requests"
            )
        follow = next_on(steps, index, step["send"])
        if expected is None or follow is None or "expect" not in follow:
            continue
        reply = follow["message"]
        if reply.get("type") != "error":
            continue
        code, err_path, request_id = expected
        assert reply["code"] == code, f"step {index}"
        if code in ("bad_request", "unknown_type"):
            assert reply.get("path") == err_path, f"step {index}"
            assert reply.get("id") == (request_id if request_id is not None else {"$absent": True})


def test_transcripts_are_listed_in_readme() -> None:
    readme = (SPEC / "transcripts" / "README.md").read_text(encoding="utf-8")
    assert [p.name for p in TRANSCRIPTS if f"[`{p.name}`]({p.name})" not in readme] == []


def test_transcript_config_names() -> None:
    meta = load(SPEC / "meta" / "transcript.schema.json")
    names = set(meta["properties"]["config"]["properties"])
    timers = {t["setting"] for t in STATE_MACHINE["timers"] if t["setting"]}
    common = next(s for s in SCHEMAS.values() if s.get("$id", "").endswith("/schemas/common.json"))
    limits = set(common["$defs"]["Limits"]["properties"])
    assert names <= timers | limits | EXTRA_SETTINGS
    assert timers <= names


# --------------------------------------------------------------------------------------------
# Cross-file references and coverage


def cited_requirements() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}

    def add(source: str, items: list[str] | None) -> None:
        for item in items or []:
            cited.setdefault(item, set()).add(source)

    for path, schema in SCHEMAS.items():
        add(rel(path), schema.get("x-requirements"))
    for error in ERRORS:
        add("errors.json", error.get("requirements"))
    for close in CLOSE_CODES_DATA:
        add("close-codes.json", close.get("requirements"))
    for item in STATE_MACHINE["transitions"] + STATE_MACHINE["timers"]:
        add("state-machine.json", [item["requirement"]] if item.get("requirement") else [])
    for path in VALID_EXAMPLES + INVALID_EXAMPLES + TRANSCRIPTS:
        add(rel(path), load(path)["requirements"])
    return cited


def test_every_cited_requirement_exists() -> None:
    unknown = {r: sorted(s) for r, s in cited_requirements().items() if r not in REQUIREMENT_IDS}
    assert unknown == {}


def test_every_requirement_is_exercised() -> None:
    """Transcripts cite every id but those no example or transcript cites (the client's
    behaviour, `UNCITED_REQUIREMENTS`) and those whose error codes need a fault inside the
    server (`UNCOVERABLE_ERROR_CODES`, through the ids errors.json gives each code)."""
    by_code = {e["code"]: set(e["requirements"]) for e in ERRORS}
    coverable = set().union(
        *(ids for code, ids in by_code.items() if code not in UNCOVERABLE_ERROR_CODES)
    )
    needs_a_fault = set().union(*(by_code[code] for code in UNCOVERABLE_ERROR_CODES)) - coverable
    in_transcripts = {r for p in TRANSCRIPTS for r in TRANSCRIPT_DATA[p]["requirements"]}
    assert REQUIREMENT_IDS - UNCITED_REQUIREMENTS - needs_a_fault - in_transcripts == set()


def covered_codes() -> tuple[set[str], set[int]]:
    errors: set[str] = set()
    closes: set[int] = set()
    for transcript in TRANSCRIPT_DATA.values():
        for step, _ in flat_steps(transcript["steps"]):
            for pattern in expect_patterns(step):
                if pattern.get("type") == "error" and isinstance(pattern.get("code"), str):
                    errors.add(pattern["code"])
            if "expect_close" in step:
                closes.add(step["code"])
    return errors, closes


def test_error_code_coverage() -> None:
    errors, _ = covered_codes()
    assert errors <= ERROR_CODES
    assert set(UNCOVERABLE_ERROR_CODES) <= ERROR_CODES
    assert errors & set(UNCOVERABLE_ERROR_CODES) == set(), "exception list is stale"
    assert ERROR_CODES - errors == set(UNCOVERABLE_ERROR_CODES)


def test_close_code_coverage() -> None:
    _, closes = covered_codes()
    assert closes <= CLOSE_CODES
    assert set(UNCOVERABLE_CLOSE_CODES) <= CLOSE_CODES
    assert closes & set(UNCOVERABLE_CLOSE_CODES) == set(), "exception list is stale"
    assert CLOSE_CODES - closes == set(UNCOVERABLE_CLOSE_CODES)


def test_uncoverable_codes_have_examples() -> None:
    """What no transcript can provoke is at least shown as a valid example."""
    shown = {load(p)["message"].get("code") for p in VALID_EXAMPLES if p.stem.startswith("error--")}
    assert set(UNCOVERABLE_ERROR_CODES) <= shown


def test_decoder_rules_sanity() -> None:
    """The reference decoder rules used above behave as the README states."""
    assert expected_error('{"type":"ping","id":"p1"}') is None
    assert expected_error('{"type":"ping","id":"p1","extra":{"a":[1]}}') is None
    assert expected_error("[1]") == ("bad_request", "$", None)
    assert expected_error('{"type":"ping","id":"p","n":Infinity}') == ("bad_request", "$", None)
    assert expected_error('{"type":"ping","id":"p","n":9223372036854775807}') is None
    # A huge integer in an unknown field is ignored like the field; in a known one the
    # schema's bound refuses it at its path.
    assert expected_error('{"type":"ping","id":"p","n":18446744073709551616}') is None
    assert expected_error(
        '{"type":"read","id":"r","conversation_id":"c","seq":18446744073709551616}'
    ) == ("bad_request", "$.seq", "r")
    nested = '{"type":"ping","id":"p","x":' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    assert expected_error(nested) is None
    too_deep = '{"type":"ping","id":"p","x":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    assert expected_error(too_deep) == ("bad_request", "$", None)
    # Rule 5: resume positions differ in conversation_id, whatever their after_seq.
    resume = '{"type":"hello","id":"h","token":"t","resume":[%s]}'
    a0, b0, a1 = (
        f'{{"conversation_id":"{c}","after_seq":{n}}}' for c, n in [("a", 0), ("b", 0), ("a", 1)]
    )
    assert expected_error(resume % f"{a0},{b0}") is None
    assert expected_error(resume % f"{a0},{b0},{a1}") == (
        "bad_request",
        "$.resume[2].conversation_id",
        "h",
    )


def test_unique_by_names_a_required_key_of_the_items() -> None:
    """`x-unique-by` (decoder rule 5) sits on arrays whose items all carry that key."""
    found = 0
    for schema in CLIENT.values():
        resolver = REGISTRY.resolver(base_uri=schema["$id"])
        for name, prop in schema["properties"].items():
            if "x-unique-by" in prop:
                found += 1
                assert prop["type"] == "array", name
                items, items_resolver = _items(prop, resolver)
                if "$ref" in items:
                    items = items_resolver.lookup(items["$ref"]).contents
                assert prop["x-unique-by"] in items["required"], name
    assert found >= 1
