"""Generate the human-readable protocol reference from the machine-readable spec.

    python tools/gendocs.py          # (re)write docs/protocol.md and docs/state-machine.mmd
    python tools/gendocs.py --check  # write nothing; exit 1 naming every stale file

The output depends only on the files under ``spec/v1`` (listings are sorted, nothing carries a
timestamp), so it is committed and CI checks that it is current. Pure standard library: the
spec is the source of truth, this module only renders it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = Path("spec/v1")
PROTOCOL_MD = Path("docs/protocol.md")
STATE_MMD = Path("docs/state-machine.mmd")
CLIENT_MMD = Path("docs/client-state-machine.mmd")

# Events per line in the note that lists a state's ignored events (notes do not wrap).
EVENTS_PER_NOTE_LINE = 3
IGNORE_ACTION = "ignore"
MAX_SAFE_INTEGER = 2**53 - 1
# Typographic characters in the output, spelled by name so the source stays ASCII-clear.
EN_DASH = "\N{EN DASH}"
MINUS = "\N{MINUS SIGN}"
TIMES = "\N{MULTIPLICATION SIGN}"

Json = Any


@dataclass(frozen=True)
class Spec:
    """Everything under ``spec/v1`` that the docs render, loaded once."""

    root: Path
    versions: dict[str, Json]
    requirements: dict[str, Json]
    errors: list[dict[str, Json]]
    close_codes: list[dict[str, Json]]
    state_machine: dict[str, Json]
    client_state_machine: dict[str, Json]
    envelope: dict[str, Json]
    common: dict[str, Json]
    messages: dict[str, list[tuple[Path, dict[str, Json]]]]  # "client"/"server" -> schemas
    examples: list[tuple[Path, Json]]
    transcripts: list[tuple[Path, Json]]


def _load(path: Path) -> Json:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _json_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*.json") if p.is_file())


def load_spec(root: Path = ROOT) -> Spec:
    spec = root / SPEC_DIR
    messages: dict[str, list[tuple[Path, dict[str, Json]]]] = {}
    for direction in ("client", "server"):
        messages[direction] = [
            (p.relative_to(root), _load(p)) for p in _json_files(spec / "schemas" / direction)
        ]
    return Spec(
        root=root,
        versions=_load(spec / "spec.json"),
        requirements=_load(spec / "requirements.json"),
        errors=_load(spec / "errors.json")["errors"],
        close_codes=_load(spec / "close-codes.json")["close_codes"],
        state_machine=_load(spec / "state-machine.json"),
        client_state_machine=_load(spec / "client-state-machine.json"),
        envelope=_load(spec / "schemas" / "envelope.json"),
        common=_load(spec / "schemas" / "common.json"),
        messages=messages,
        examples=[(p.relative_to(root), _load(p)) for p in _json_files(spec / "examples")],
        transcripts=[(p.relative_to(root), _load(p)) for p in _json_files(spec / "transcripts")],
    )


# --- Markdown helpers -------------------------------------------------------------------


def cell(text: object) -> str:
    """One table cell: pipes escaped, line breaks kept as <br>."""
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def code(text: object) -> str:
    return f"`{text}`"


def req_link(req_id: str) -> str:
    return f"[{req_id}](#{req_id})"


def req_links(ids: Iterable[str]) -> str:
    return ", ".join(req_link(i) for i in ids)


def msg_link(name: str) -> str:
    return f"[`{name}`](#msg-{name})"


def type_link(name: str) -> str:
    return f"[`{name}`](#type-{name})"


def error_link(name: str) -> str:
    return f"[`{name}`](#error-{name})"


def close_link(name: str, codes: dict[str, int]) -> str:
    return f"[`{name}`](#close-{name}) ({codes[name]})" if name in codes else code(name)


def anchor(anchor_id: str) -> str:
    return f'<a id="{anchor_id}"></a>'


def repo_link(path: Path) -> str:
    """A link from docs/protocol.md to a file of the repository."""
    return f"[`{path.as_posix()}`](../{path.as_posix()})"


# --- JSON Schema rendering ----------------------------------------------------------------


class SchemaRenderer:
    """Turns schema nodes into readable type strings, resolving $refs into other files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._docs: dict[Path, Json] = {}
        self.common = (SPEC_DIR / "schemas" / "common.json").as_posix()

    def doc(self, path: Path) -> Json:
        if path not in self._docs:
            self._docs[path] = _load(self.root / path)
        return self._docs[path]

    def resolve(self, ref: str, base: Path) -> tuple[Path, Json]:
        """The file holding ``ref`` (relative to ``base``, a repo-relative file) and its node."""
        file_part, _, pointer = ref.partition("#")
        target = base
        if file_part:
            parts = [*base.parent.parts]
            for part in Path(file_part).parts:
                if part == "..":
                    parts.pop()
                elif part != ".":
                    parts.append(part)
            target = Path(*parts)
        node = self.doc(target)
        for token in [t for t in pointer.split("/") if t]:
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return target, node

    def type_of(self, node: dict[str, Json], base: Path) -> str:
        if "$ref" in node:
            target, resolved = self.resolve(node["$ref"], base)
            ref_name = node["$ref"].rsplit("/", 1)[-1]
            if target.as_posix() == self.common and "/$defs/" in node["$ref"]:
                if resolved.get("type") == "object":
                    return type_link(ref_name)
                return f"{type_link(ref_name)} ({self.constraints(resolved, target)})"
            return self.constraints(resolved, target)
        return self.constraints(node, base)

    def constraints(self, node: dict[str, Json], base: Path) -> str:
        """A short readable form of one schema node's type and bounds."""
        if "const" in node:
            return f"constant `{json.dumps(node['const'])}`"
        if "enum" in node:
            return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
        kind = node.get("type", "any")
        kinds = " or ".join(kind) if isinstance(kind, list) else str(kind)
        extras: list[str] = []
        if kind == "string":
            extras += _bounds(node.get("minLength"), node.get("maxLength"), "length")
            if "pattern" in node:
                extras.append(f"pattern `{node['pattern']}`")
            if "format" in node:
                extras.append(f"format `{node['format']}`")
        elif kind in ("integer", "number"):
            extras += _range(node)
        elif kind == "array":
            items = node.get("items")
            item = self.type_of(items, base) if isinstance(items, dict) else "any"
            kinds = f"array of {item}"
            extras += _bounds(node.get("minItems"), node.get("maxItems"), "items")
            if node.get("uniqueItems"):
                extras.append("unique")
        return ", ".join([kinds, *extras])

    def fields(self, schema: dict[str, Json], base: Path) -> list[list[str]]:
        """Rows of (name, type, required, description) for an object schema."""
        required = set(schema.get("required", []))
        rows = []
        for name, prop in schema.get("properties", {}).items():
            description = prop.get("description", "")
            if not description and "$ref" in prop:
                _, resolved = self.resolve(prop["$ref"], base)
                description = resolved.get("description", "")
            rows.append(
                [
                    code(name),
                    self.type_of(prop, base),
                    "yes" if name in required else "no",
                    description,
                ]
            )
        return rows

    def extra_rules(self, schema: dict[str, Json]) -> list[str]:
        """Readable forms of object-level constraints beyond `properties`/`required`."""
        rules = []
        negated = schema.get("not")
        if isinstance(negated, dict) and set(negated) == {"required"}:
            names = " and ".join(code(n) for n in negated["required"])
            rules.append(f"Must not carry both {names}.")
        elif negated is not None:
            rules.append("Carries a `not` constraint; see the schema.")
        for keyword in ("oneOf", "anyOf", "if", "dependentRequired", "dependentSchemas"):
            if keyword in schema:
                rules.append(f"Carries a `{keyword}` constraint; see the schema.")
        return rules


def _number(value: int | float) -> str:
    return f"2^53{MINUS}1" if value == MAX_SAFE_INTEGER else str(value)


def _bounds(low: int | None, high: int | None, what: str) -> list[str]:
    """Length or item-count bounds, e.g. "length 1-64" or "≤ 1000 items"."""
    if low is not None and high is not None:
        text = f"{low}{EN_DASH}{high}"
    elif low is not None:
        text = f"≥ {low}"
    elif high is not None:
        text = f"≤ {high}"
    else:
        return []
    return [f"{what} {text}" if what == "length" else f"{text} {what}"]


def _range(node: dict[str, Json]) -> list[str]:
    low = node.get("minimum")
    high = node.get("maximum")
    parts = []
    if low is not None and high is not None:
        parts.append(f"{_number(low)}…{_number(high)}")
    elif low is not None:
        parts.append(f"≥ {_number(low)}")
    elif high is not None:
        parts.append(f"≤ {_number(high)}")
    if "exclusiveMinimum" in node:
        parts.append(f"> {_number(node['exclusiveMinimum'])}")
    if "exclusiveMaximum" in node:
        parts.append(f"< {_number(node['exclusiveMaximum'])}")
    return parts


# --- Mermaid state diagram ----------------------------------------------------------------


def is_ignore(transition: dict[str, Json]) -> bool:
    """A self-loop whose only action is ``ignore`` (drawn as a note, not an edge)."""
    return bool(transition["from"] == transition["to"] and transition["actions"] == [IGNORE_ACTION])


def mermaid(state_machine: dict[str, Json], source: str = "state-machine.json") -> str:
    """A Mermaid ``stateDiagram-v2`` of the transitions.

    Parallel edges between one pair of states are merged into one edge whose label lists
    the events in table order; ``ignore`` self-loops become one note per state.
    """
    transitions: list[dict[str, Json]] = state_machine["transitions"]
    edges: dict[tuple[str, str], list[str]] = {}
    ignored: dict[str, list[str]] = {}
    for t in transitions:
        if is_ignore(t):
            ignored.setdefault(t["from"], []).append(t["event"])
        else:
            edges.setdefault((t["from"], t["to"]), []).append(t["event"])
    sources = {t["from"] for t in transitions}
    lines = [
        "stateDiagram-v2",
        f"    %% Generated by tools/gendocs.py from spec/v1/{source};"
        " do not edit (run `just docs`).",
        f"    [*] --> {state_machine['initial']}",
    ]
    for (source, target), events in edges.items():
        lines.append(f"    {source} --> {target} : {', '.join(events)}")
    for state in state_machine["states"]:
        if state["name"] not in sources:
            lines.append(f"    {state['name']} --> [*]")
    for state, events in ignored.items():
        lines.append(f"    note right of {state}")
        lines.append(f"        ignores ({len(events)}):")
        chunks = [
            ", ".join(events[i : i + EVENTS_PER_NOTE_LINE])
            for i in range(0, len(events), EVENTS_PER_NOTE_LINE)
        ]
        lines += [f"        {chunk}," for chunk in chunks[:-1]]
        lines += [f"        {chunks[-1]}", "    end note"]
    return "\n".join(lines) + "\n"


# --- protocol.md ----------------------------------------------------------------------------


def _md_header(spec: Spec) -> list[str]:
    v = spec.versions
    lines = [
        "<!-- Generated by tools/gendocs.py from spec/v1. Do not edit; run `just docs`. -->",
        "",
        "# Hoomi Realtime protocol reference",
        "",
        "> **Generated file; do not edit.** This page is rendered from the machine-readable",
        "> specification in [`spec/v1/`](../spec/v1) by `tools/gendocs.py`. Change the spec, then",
        "> run `just docs`. Where this page and the spec files disagree, the spec files win.",
        "",
        "Contents: [Versions](#versions) · [Transport](#transport) ·"
        " [Requirements](#requirements) · [Messages](#messages) ·"
        " [Shared types](#shared-types) · [Errors](#errors) · [Close codes](#close-codes) ·"
        " [State machine](#state-machine) · [Client state machine](#client-state-machine) ·"
        " [Examples](#examples) ·"
        " [Transcripts](#transcripts)",
        "",
        anchor("versions"),
        "## Versions",
        "",
    ]
    lines += table(
        ["what", "value"],
        [
            ["spec version (semver)", code(v["spec_version"])],
            ["wire version", code(v["protocol"])],
            ["WebSocket subprotocol", code(v["subprotocol"])],
        ],
    )
    lines += [
        f"Machine-readable: {repo_link(SPEC_DIR / 'asyncapi.json')} (AsyncAPI 3.0, the server's"
        f" view), the message schemas in {repo_link(SPEC_DIR / 'schemas')} (JSON Schema 2020-12),"
        f" {repo_link(SPEC_DIR / 'requirements.json')}, {repo_link(SPEC_DIR / 'errors.json')},"
        f" {repo_link(SPEC_DIR / 'close-codes.json')} and"
        f" {repo_link(SPEC_DIR / 'state-machine.json')}.",
        "",
    ]
    return lines


def _md_transport(spec: Spec, renderer: SchemaRenderer) -> list[str]:
    v = spec.versions
    wire: dict[str, Json] = next(
        (s for s in spec.requirements["sections"] if s["key"] == "WIRE"), {"requirements": []}
    )
    lines = [
        anchor("transport"),
        "## Transport",
        "",
        f"- Clients open a WebSocket and offer the subprotocol `{v['subprotocol']}`.",
        f"- {spec.envelope['description']}",
        f"- Normative rules: {req_links(r['id'] for r in wire['requirements'])}.",
        "",
        "Every frame is an envelope:",
        "",
    ]
    lines += table(
        ["field", "type", "required", "description"],
        renderer.fields(spec.envelope, SPEC_DIR / "schemas" / "envelope.json"),
    )
    return lines


def _md_requirements(spec: Spec) -> list[str]:
    lines = [anchor("requirements"), "## Requirements", ""]
    description = spec.requirements.get("description")
    if description:
        lines += [description, ""]
    lines += [
        "Each requirement has a stable id; link to one as `docs/protocol.md#HOOMI-SEND-3`.",
        "",
    ]
    for section in spec.requirements["sections"]:
        lines += [
            anchor(f"req-{section['key']}"),
            f"### {section['title']} ({section['key']})",
            "",
        ]
        for req in section["requirements"]:
            lines.append(f"- {anchor(req['id'])}**{req['id']}**: {req['text']}")
        lines.append("")
    return lines


def _replied_by(spec: Spec) -> dict[str, list[str]]:
    """Reply type -> the request types it may answer."""
    answers: dict[str, list[str]] = {}
    for _, schema in spec.messages["client"]:
        for reply in schema.get("x-replies", []):
            answers.setdefault(reply, []).append(schema["title"])
    return answers


def _ordered_messages(spec: Spec) -> list[tuple[Path, dict[str, Json]]]:
    kind_order = {"request": 0, "reply": 1, "event": 2}
    everything = spec.messages["client"] + spec.messages["server"]
    return sorted(
        everything,
        key=lambda m: (
            m[1].get("x-direction") != "client",
            kind_order.get(m[1].get("x-kind", ""), 3),
            m[1]["title"],
        ),
    )


def _direction(schema: dict[str, Json]) -> str:
    return "client → server" if schema.get("x-direction") == "client" else "server → client"


def _md_messages(spec: Spec, renderer: SchemaRenderer) -> list[str]:
    answers = _replied_by(spec)
    ordered = _ordered_messages(spec)
    lines = [
        anchor("messages"),
        "## Messages",
        "",
        "Every client message is a request answered by exactly one reply carrying its `id`"
        f" ({req_link('HOOMI-REQ-1')}); events are sent by the server unprompted.",
        "",
    ]
    index_rows = []
    for _, schema in ordered:
        name = schema["title"]
        if schema.get("x-kind") == "request":
            related = "replies: " + ", ".join(msg_link(r) for r in schema.get("x-replies", []))
        elif name in answers:
            related = "answers: " + ", ".join(msg_link(r) for r in answers[name])
        else:
            related = ""
        index_rows.append([msg_link(name), _direction(schema), schema.get("x-kind", ""), related])
    lines += table(["type", "direction", "kind", "replies / answers"], index_rows)

    for path, schema in ordered:
        name = schema["title"]
        lines += [anchor(f"msg-{name}"), f"### `{name}`", ""]
        facts = [
            f"**{_direction(schema)} {schema.get('x-kind', 'message')}**",
            f"schema {repo_link(path)}",
        ]
        lines += [" · ".join(facts), "", schema.get("description", ""), ""]
        if schema.get("x-replies"):
            lines.append("- Replies: " + ", ".join(msg_link(r) for r in schema["x-replies"]))
        if name in answers:
            lines.append("- Answers: " + ", ".join(msg_link(r) for r in answers[name]))
        if schema.get("x-requirements"):
            lines.append(f"- Requirements: {req_links(schema['x-requirements'])}")
        for rule in renderer.extra_rules(schema):
            lines.append(f"- {rule}")
        lines.append("")
        lines += table(["field", "type", "required", "description"], renderer.fields(schema, path))
    return lines


def _md_shared_types(spec: Spec, renderer: SchemaRenderer) -> list[str]:
    common_path = SPEC_DIR / "schemas" / "common.json"
    lines = [
        anchor("shared-types"),
        "## Shared types",
        "",
        f"Defined in {repo_link(common_path)}. {spec.common.get('description', '')}".rstrip(),
        "",
    ]
    for name in sorted(spec.common.get("$defs", {})):
        node = spec.common["$defs"][name]
        lines += [anchor(f"type-{name}"), f"### `{name}`", ""]
        if node.get("description"):
            lines += [node["description"], ""]
        if node.get("type") == "object" and "properties" in node:
            lines += table(
                ["field", "type", "required", "description"], renderer.fields(node, common_path)
            )
        else:
            lines += [f"Type: {renderer.constraints(node, common_path)}.", ""]
    return lines


def _md_errors(spec: Spec) -> list[str]:
    lines = [
        anchor("errors"),
        "## Errors",
        "",
        f"The `code` of an {msg_link('error')} reply comes from"
        f" {repo_link(SPEC_DIR / 'errors.json')} ({req_link('HOOMI-ERR-1')}).",
        "",
    ]
    rows = [
        [
            f"{anchor('error-' + e['code'])}`{e['code']}`",
            "yes" if e.get("retryable") else "no",
            e.get("description", ""),
            req_links(e.get("requirements", [])),
        ]
        for e in spec.errors
    ]
    return lines + table(["code", "retryable", "description", "requirements"], rows)


def _md_close_codes(spec: Spec) -> list[str]:
    lines = [
        anchor("close-codes"),
        "## Close codes",
        "",
        "The server closes connections only with these codes"
        f" ({req_link('HOOMI-CLOSE-1')}). After a `reconnect` code clients reconnect with backoff"
        f" and resume; after a `terminal` code they do not reconnect on their own"
        f" ({req_link('HOOMI-LIVE-3')}).",
        "",
    ]
    rows = [
        [
            f"{anchor('close-' + c['name'])}{c['code']}",
            code(c["name"]),
            c.get("action", ""),
            c.get("description", ""),
            req_links(c.get("requirements", [])),
        ]
        for c in spec.close_codes
    ]
    return lines + table(["code", "name", "action", "description", "requirements"], rows)


def _duration(ms: int) -> str:
    if ms % 1000 == 0:
        return f"{ms} ms ({ms // 1000} s)"
    return f"{ms} ms"


def _timer_default(timer: dict[str, Json]) -> str:
    setting = timer.get("setting")
    default = timer.get("default_ms")
    if setting and timer.get("multiplier"):
        text = f"{timer['multiplier']} {TIMES} `{setting}`"
        if default is not None:
            text += f" = {_duration(default)}"
    elif setting:
        text = f"`{setting}`"
        if default is not None:
            text += f" = {_duration(default)}"
    elif default is not None:
        text = _duration(default)
    else:
        text = "none (set from the token)"
    if timer.get("repeats"):
        text += "; repeats"
    return text


def _md_state_machine(spec: Spec, diagram: str) -> list[str]:
    sm = spec.state_machine
    close_codes = {c["name"]: int(c["code"]) for c in spec.close_codes}
    lines = [
        anchor("state-machine"),
        "## State machine",
        "",
        f"From {repo_link(SPEC_DIR / 'state-machine.json')} ({req_link('HOOMI-STATE-1')}).",
        "",
        sm.get("description", ""),
        "",
        f"Initial state: `{sm['initial']}`.",
        "",
        "### States",
        "",
    ]
    lines += table(
        ["state", "description"],
        [[f"{anchor('state-' + s['name'])}`{s['name']}`", s["description"]] for s in sm["states"]],
    )
    lines += ["### Events", ""]
    lines += table(
        ["event", "source", "description"],
        [
            [f"{anchor('event-' + e['name'])}`{e['name']}`", e.get("source", ""), e["description"]]
            for e in sm["events"]
        ],
    )
    lines += ["### Actions", ""]
    lines += table(
        ["action", "meaning"], [[code(name), text] for name, text in sm["actions"].items()]
    )
    lines += ["### Timers", ""]
    lines += table(
        ["timer", "duration (setting = default)", "starts", "stops", "fires", "requirement"],
        [
            [
                code(t["name"]),
                _timer_default(t),
                t.get("starts", ""),
                t.get("stops", ""),
                t.get("fires", ""),
                req_link(t["requirement"]) if t.get("requirement") else "",
            ]
            for t in sm["timers"]
        ],
    )
    lines += [
        "### Transitions",
        "",
        "Every (state, event) pair not listed is illegal: an implementation that produces it has"
        " a bug.",
        "",
    ]
    rows = []
    for t in sm["transitions"]:
        rows.append(
            [
                code(t["from"]),
                code(t["event"]),
                code(t["to"]),
                ", ".join(code(a) for a in t["actions"]),
                error_link(t["error"]) if t.get("error") else "",
                close_link(t["close"], close_codes) if t.get("close") else "",
                req_link(t["requirement"]) if t.get("requirement") else "",
            ]
        )
    lines += table(["from", "event", "to", "actions", "error", "close", "requirement"], rows)
    lines += [
        "### Diagram",
        "",
        "Parallel transitions between two states are drawn as one edge listing their events;"
        " self-loops whose only action is `ignore` are listed in a note. The same diagram is in"
        f" {repo_link(STATE_MMD)}.",
        "",
        "```mermaid",
        diagram.rstrip("\n"),
        "```",
        "",
    ]
    return lines


def _md_client_state_machine(spec: Spec, diagram: str) -> list[str]:
    sm = spec.client_state_machine
    backoff = sm["backoff"]
    lines = [
        anchor("client-state-machine"),
        "## Client state machine",
        "",
        f"From {repo_link(SPEC_DIR / 'client-state-machine.json')}"
        f" ({req_link('HOOMI-CLIENT-1')}); the Python SDK (`hoomi.client`) is tested against it"
        " pair by pair.",
        "",
        sm.get("description", ""),
        "",
        f"Initial state: `{sm['initial']}`.",
        "",
        "### Client states",
        "",
    ]
    lines += table(
        ["state", "description"], [[code(s["name"]), s["description"]] for s in sm["states"]]
    )
    lines += ["### Client events", ""]
    lines += table(
        ["event", "source", "description"],
        [[code(e["name"]), e.get("source", ""), e["description"]] for e in sm["events"]],
    )
    lines += ["### Client actions", ""]
    lines += table(
        ["action", "meaning"], [[code(name), text] for name, text in sm["actions"].items()]
    )
    lines += ["### Client timers and backoff", ""]
    lines += table(
        ["timer", "duration (setting = default)", "starts", "stops", "fires", "requirement"],
        [
            [
                code(t["name"]),
                _timer_default(t) + (f" ({t['note']})" if t.get("note") else ""),
                t.get("starts", ""),
                t.get("stops", ""),
                t.get("fires", ""),
                req_link(t["requirement"]) if t.get("requirement") else "",
            ]
            for t in sm["timers"]
        ],
    )
    lines += [
        f"Backoff ({req_link(backoff['requirement'])}): {backoff['formula']}; `initial_ms` ="
        f" {backoff['initial_ms']}, `max_ms` = {backoff['max_ms']}, `multiplier` ="
        f" {backoff['multiplier']}, jitter {backoff['jitter']}, `max_attempts` ="
        f" {backoff['max_attempts']} (a client setting).",
        "",
        "### Client transitions",
        "",
    ]
    lines += table(
        ["from", "event", "to", "actions", "requirement"],
        [
            [
                code(t["from"]),
                code(t["event"]),
                code(t["to"]),
                ", ".join(code(a) for a in t["actions"]),
                req_link(t["requirement"]) if t.get("requirement") else "",
            ]
            for t in sm["transitions"]
        ],
    )
    lines += [
        "### Client diagram",
        "",
        f"The same diagram is in {repo_link(CLIENT_MMD)}.",
        "",
        "```mermaid",
        diagram.rstrip("\n"),
        "```",
        "",
    ]
    return lines


def _first_str(data: Json, *keys: str) -> str:
    if isinstance(data, dict):
        for key in keys:
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _expected_error(data: Json) -> str:
    """The error code an invalid example expects, wherever the example file keeps it."""
    if not isinstance(data, dict):
        return ""
    for key in ("expected_error", "error", "expect", "expected"):
        value = data.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            found = _first_str(value, "code", "error")
            if found:
                return found
    return ""


def _requirement_ids(data: Json) -> list[str]:
    reqs = data.get("requirements", []) if isinstance(data, dict) else []
    return [r for r in reqs if isinstance(r, str)]


def _example_type(data: Json) -> str:
    message = data.get("message") if isinstance(data, dict) else None
    name = message.get("type") if isinstance(message, dict) else None
    return msg_link(name) if isinstance(name, str) else ""


def _error_path(data: Json) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    path = error.get("path") if isinstance(error, dict) else None
    return code(path) if isinstance(path, str) else ""


def _md_examples(spec: Spec) -> list[str]:
    lines = [
        anchor("examples"),
        "## Examples",
        "",
        f"Language-neutral test vectors under {repo_link(SPEC_DIR / 'examples')}: valid messages,"
        " and invalid frames with the error they must produce.",
        "",
    ]
    examples_dir = SPEC_DIR / "examples"
    valid = [e for e in spec.examples if e[0].relative_to(examples_dir).parts[0] == "valid"]
    invalid = [e for e in spec.examples if e[0].relative_to(examples_dir).parts[0] == "invalid"]
    other = [e for e in spec.examples if e not in valid and e not in invalid]
    lines += [f"### Valid ({len(valid)})", ""]
    if valid:
        lines += table(
            ["file", "type", "description", "requirements"],
            [
                [
                    repo_link(p),
                    _example_type(d),
                    _first_str(d, "description", "title"),
                    req_links(_requirement_ids(d)),
                ]
                for p, d in valid
            ],
        )
    else:
        lines += ["None yet.", ""]
    lines += [f"### Invalid ({len(invalid)})", ""]
    if invalid:
        lines += table(
            ["file", "expected error", "path", "description", "requirements"],
            [
                [
                    repo_link(p),
                    error_link(_expected_error(d)) if _expected_error(d) else "",
                    _error_path(d),
                    _first_str(d, "description", "title"),
                    req_links(_requirement_ids(d)),
                ]
                for p, d in invalid
            ],
        )
    else:
        lines += ["None yet.", ""]
    if other:
        lines += ["### Other files", ""]
        lines += table(
            ["file", "description"],
            [[repo_link(p), _first_str(d, "description", "title")] for p, d in other],
        )
    return lines


def _md_transcripts(spec: Spec) -> list[str]:
    lines = [
        anchor("transcripts"),
        "## Transcripts",
        "",
        f"Scripted conversations under {repo_link(SPEC_DIR / 'transcripts')}, run by the"
        " conformance suite.",
        "",
    ]
    if not spec.transcripts:
        return [*lines, "None yet.", ""]
    rows = []
    for path, data in spec.transcripts:
        name = _first_str(data, "name") or path.stem
        rows.append(
            [
                f"{repo_link(path)}" if name == path.stem else f"{code(name)} ({repo_link(path)})",
                _first_str(data, "title", "description"),
                req_links(_requirement_ids(data)),
            ]
        )
    return lines + table(["transcript", "title", "requirements"], rows)


def render_protocol_md(spec: Spec, diagram: str, client_diagram: str) -> str:
    renderer = SchemaRenderer(spec.root)
    lines: list[str] = []
    lines += _md_header(spec)
    lines += _md_transport(spec, renderer)
    lines += _md_requirements(spec)
    lines += _md_messages(spec, renderer)
    lines += _md_shared_types(spec, renderer)
    lines += _md_errors(spec)
    lines += _md_close_codes(spec)
    lines += _md_state_machine(spec, diagram)
    lines += _md_client_state_machine(spec, client_diagram)
    lines += _md_examples(spec)
    lines += _md_transcripts(spec)
    text = "\n".join(line.rstrip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def render(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file: repo-relative path -> its exact content."""
    spec = load_spec(root)
    diagram = mermaid(spec.state_machine)
    client = mermaid(spec.client_state_machine, "client-state-machine.json")
    return {
        PROTOCOL_MD: render_protocol_md(spec, diagram, client),
        STATE_MMD: diagram,
        CLIENT_MMD: client,
    }


Renderer = Callable[[Path], dict[Path, str]]


def stale(root: Path = ROOT, renderer: Renderer | None = None) -> list[Path]:
    """Generated files whose committed content differs from what `renderer` (default:
    this module's `render`) gives, or that are missing."""
    out = []
    for path, text in (renderer or render)(root).items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            out.append(path)
    return out


def main(
    argv: Sequence[str] | None = None,
    renderer: Renderer | None = None,
    *,
    description: str | None = None,
    fresh: str = "docs are up to date",
) -> int:
    """Write the generated files, or with --check only report the stale ones (exit 1).
    `tools/tracegen.py` runs the same command line over its own `renderer`."""
    parser = argparse.ArgumentParser(
        description=description or (__doc__.splitlines()[0] if __doc__ else None)
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any output is stale"
    )
    args = parser.parse_args(argv)
    rendering = renderer or render
    if args.check:
        outdated = stale(ROOT, rendering)
        for path in outdated:
            print(f"stale: {path.as_posix()} (run `just docs`)", file=sys.stderr)
        if outdated:
            return 1
        print(fresh)
        return 0
    for path, text in rendering(ROOT).items():
        target = ROOT / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            print(f"unchanged {path.as_posix()}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8"))
        print(f"wrote {path.as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
