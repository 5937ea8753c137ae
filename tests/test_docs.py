"""The generated docs are current, and the AsyncAPI document agrees with the schemas.

The AsyncAPI document is validated against the official AsyncAPI 3.0.0 JSON Schema, vendored
in spec/meta/asyncapi/ (see the README there), with an empty registry so that no $ref is ever
fetched from the network.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from referencing import Registry

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec" / "v1"
ASYNCAPI = SPEC / "asyncapi.json"
ASYNCAPI_META = ROOT / "spec" / "meta" / "asyncapi" / "asyncapi-3.0.0.schema.json"
ASYNCAPI_SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"


def _import_gendocs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gendocs", ROOT / "tools" / "gendocs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up in sys.modules.
    sys.modules["gendocs"] = module
    spec.loader.exec_module(module)
    return module


gendocs = _import_gendocs()


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def message_schemas() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Message type -> (schema path relative to spec/v1, schema), client and server."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for direction in ("client", "server"):
        for path in sorted((SPEC / "schemas" / direction).glob("*.json")):
            schema = load(path)
            name = schema["properties"]["type"]["const"]
            assert name not in found, f"two schemas define message type {name!r}"
            found[name] = (path.relative_to(SPEC), schema)
    return found


def resolve_local(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"expected a local $ref, got {ref!r}"
    node: Any = document
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def message_name(document: dict[str, Any], ref: dict[str, str]) -> str:
    """The `name` of the message that a channel-message $ref points at (refs followed)."""
    node = resolve_local(document, ref["$ref"])
    while "$ref" in node:
        node = resolve_local(document, node["$ref"])
    name = node["name"]
    assert isinstance(name, str)
    return name


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document = load(ASYNCAPI)
    assert isinstance(document, dict)
    return document


# --- generated docs ---------------------------------------------------------------------


def test_docs_are_current() -> None:
    rendered: dict[Path, str] = gendocs.render()
    assert set(rendered) == {
        Path("docs/protocol.md"),
        Path("docs/state-machine.mmd"),
        Path("docs/client-state-machine.mmd"),
    }
    for path, text in rendered.items():
        on_disk = ROOT / path
        assert on_disk.is_file(), f"{path} is missing: run `just docs`"
        assert on_disk.read_text(encoding="utf-8") == text, f"{path} is stale: run `just docs`"


def test_render_is_deterministic() -> None:
    assert gendocs.render() == gendocs.render()


def test_check_names_stale_files(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "spec", tmp_path / "spec")
    assert sorted(gendocs.stale(tmp_path)) == [
        Path("docs/client-state-machine.mmd"),
        Path("docs/protocol.md"),
        Path("docs/state-machine.mmd"),
    ]
    for path, text in gendocs.render(tmp_path).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    assert gendocs.stale(tmp_path) == []
    (tmp_path / "docs" / "state-machine.mmd").write_text("stateDiagram-v2\n", encoding="utf-8")
    assert gendocs.stale(tmp_path) == [Path("docs/state-machine.mmd")]


def mermaid_edges(diagram: str) -> dict[tuple[str, str], set[str]]:
    edges: dict[tuple[str, str], set[str]] = {}
    for line in diagram.splitlines():
        match = re.fullmatch(r"\s*(\S+)\s+-->\s+(\S+)(?:\s*:\s*(.*))?", line)
        if match:
            label = match.group(3) or ""
            events = {e.strip() for e in re.split(r",|<br\s*/?>", label) if e.strip()}
            edges.setdefault((match.group(1), match.group(2)), set()).update(events)
    return edges


@pytest.mark.parametrize("name", ["state-machine", "client-state-machine"])
def test_mermaid_diagram_covers_the_state_machine(name: str) -> None:
    machine = load(SPEC / f"{name}.json")
    diagram = (ROOT / "docs" / f"{name}.mmd").read_text(encoding="utf-8")
    assert diagram.startswith("stateDiagram-v2\n")
    edges = mermaid_edges(diagram)
    nodes = {state for edge in edges for state in edge}
    for state in machine["states"]:
        assert state["name"] in nodes, f"state {state['name']} is not in the diagram"
    assert ("[*]", machine["initial"]) in edges
    notes = "\n".join(re.findall(r"note right of \S+\n(.*?)\n\s*end note", diagram, re.S))
    for t in machine["transitions"]:
        ignored = t["from"] == t["to"] and t["actions"] == ["ignore"]
        if ignored:
            assert re.search(rf"\b{re.escape(t['event'])}\b", notes), t
        else:
            label = edges.get((t["from"], t["to"]), set())
            assert t["event"] in label, f"{t['from']} --{t['event']}--> {t['to']} is not drawn"


def test_protocol_md_embeds_the_diagram_and_links_every_id() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    diagram = (ROOT / "docs" / "state-machine.mmd").read_text(encoding="utf-8")
    assert f"```mermaid\n{diagram}```\n" in text
    for section in load(SPEC / "requirements.json")["sections"]:
        for requirement in section["requirements"]:
            assert f'<a id="{requirement["id"]}"></a>' in text, requirement["id"]
    for name in message_schemas():
        assert f'<a id="msg-{name}"></a>' in text, name
    for error in load(SPEC / "errors.json")["errors"]:
        assert f'<a id="error-{error["code"]}"></a>' in text, error["code"]
    for close in load(SPEC / "close-codes.json")["close_codes"]:
        assert f'<a id="close-{close["name"]}"></a>' in text, close["name"]
    # Every in-page link has its anchor.
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for target in set(re.findall(r"\]\(#([^)]+)\)", text)):
        assert target in anchors, f"link to #{target} has no anchor"


def test_protocol_md_lists_every_example_and_transcript() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    for folder in ("examples", "transcripts"):
        for path in sorted((SPEC / folder).rglob("*.json")):
            assert path.relative_to(ROOT).as_posix() in text, f"{path} is not listed"


# --- AsyncAPI ------------------------------------------------------------------------------


def asyncapi_validator() -> Any:
    meta = load(ASYNCAPI_META)
    cls = jsonschema.validators.validator_for(meta)
    cls.check_schema(meta)
    # An empty registry: every $ref must resolve inside the bundled meta-schema, never remotely.
    return cls(meta, registry=Registry(), format_checker=cls.FORMAT_CHECKER)


def test_asyncapi_validates_against_the_official_schema(asyncapi: dict[str, Any]) -> None:
    validator = asyncapi_validator()
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(asyncapi)
    ]
    assert errors == []


def test_asyncapi_validator_is_not_vacuous(asyncapi: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(asyncapi))
    broken["operations"]["receive_send"]["action"] = "publish"  # the 2.x verb
    assert not asyncapi_validator().is_valid(broken)


def test_asyncapi_version_is_the_spec_version(asyncapi: dict[str, Any]) -> None:
    versions = load(SPEC / "spec.json")
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["version"] == versions["spec_version"]
    assert versions["subprotocol"] in json.dumps(asyncapi["servers"])


def test_asyncapi_messages_reference_exactly_the_schema_files(asyncapi: dict[str, Any]) -> None:
    schemas = message_schemas()
    referenced: dict[str, Path] = {}
    for key, message in asyncapi["components"]["messages"].items():
        payload = message["payload"]
        assert payload["schemaFormat"] == ASYNCAPI_SCHEMA_FORMAT, key
        ref = payload["schema"]["$ref"]
        target = (SPEC / ref).resolve()
        assert target.is_file(), f"{key}: {ref} does not exist"
        referenced[message["name"]] = target.relative_to(SPEC)
        assert key == message["name"]
    assert referenced == {name: path for name, (path, _) in schemas.items()}
    channel_messages = asyncapi["channels"]["connection"]["messages"]
    assert {message_name(asyncapi, ref) for ref in channel_messages.values()} == set(schemas)


def test_asyncapi_messages_carry_kind_and_correlation(asyncapi: dict[str, Any]) -> None:
    for name, (_, schema) in message_schemas().items():
        message = asyncapi["components"]["messages"][name]
        kind = schema["x-kind"]
        tags = {resolve_local(asyncapi, t["$ref"])["name"] for t in message.get("tags", [])}
        assert tags == {kind}, name
        assert ("correlationId" in message) == (kind in ("request", "reply")), name


def test_asyncapi_operations_follow_directions_and_replies(asyncapi: dict[str, Any]) -> None:
    schemas = message_schemas()
    received: dict[str, list[str]] = {}  # request -> reply types of its operation
    sent: set[str] = set()
    replied: set[str] = set()
    for key, operation in asyncapi["operations"].items():
        assert operation["channel"] == {"$ref": "#/channels/connection"}, key
        names = [message_name(asyncapi, ref) for ref in operation["messages"]]
        for name in names:
            direction = schemas[name][1]["x-direction"]
            expected = "receive" if direction == "client" else "send"
            assert operation["action"] == expected, f"{key}: {name} is a {direction} message"
        if operation["action"] == "receive":
            assert len(names) == 1, f"{key}: one request per receive operation"
            assert names[0] not in received, f"{names[0]} is received by two operations"
            reply = operation.get("reply", {})
            received[names[0]] = [message_name(asyncapi, r) for r in reply.get("messages", [])]
            replied.update(received[names[0]])
        else:
            assert "reply" not in operation, key
            sent.update(names)
    for name, (_, schema) in schemas.items():
        kind = schema["x-kind"]
        if kind == "request":
            assert received.get(name) == schema["x-replies"], f"{name}: replies differ"
        elif kind == "event":
            assert name in sent, f"event {name} has no send operation"
        else:
            assert name in replied, f"reply {name} answers no request"


def test_asyncapi_local_refs_resolve(asyncapi: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                resolve_local(asyncapi, ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(asyncapi)
