"""Generate the browser client's spec data, src/hoomi/web/client-state-machine.js, from spec/v1.

    python tools/genjs.py          # (re)write the module
    python tools/genjs.py --check  # write nothing; exit 1 if it is stale

The JS client (src/hoomi/web/hoomi-client.js) follows the spec's data, never a copy typed
by hand: the client state machine (states, events, transitions with their actions, timers,
backoff), the close-code registry (reconnect or terminal), the retryable error codes, the
subprotocol, and the server frames' JSON Schemas (for its small validator: a frame that
breaks them is a `bad_frame`). The schemas are bundled: `$ref`s into common.json and the
envelope become `#/defs/NAME`, and descriptions are dropped. Pure data, sorted keys where
the spec's order carries no meaning, so that the output is deterministic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gendocs

ROOT = gendocs.ROOT
SPEC_DIR = gendocs.SPEC_DIR
OUTPUT = Path("src/hoomi/web/client-state-machine.js")
# Schema keywords that only document; everything else is kept for the validator.
_DOC_KEYWORDS = frozenset(
    {"$schema", "$id", "title", "description", "x-direction", "x-kind", "x-requirements"}
)
ENVELOPE = "Envelope"
# The keywords the JS validator (hoomi-frames.js) implements: a schema using another is refused
# here, so that a spec change cannot be silently ignored by the browser client.
VALIDATED = frozenset(
    {
        "$ref", "allOf", "const", "enum", "type", "required", "properties", "items",
        "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
        "uniqueItems",
    }
)  # fmt: skip


def _load(root: Path, name: str) -> Any:
    return json.loads((root / SPEC_DIR / name).read_text(encoding="utf-8"))


def _bundle(node: Any) -> Any:
    """A schema node without documentation keywords, its `$ref`s made local (`#/defs/…`)."""
    if isinstance(node, list):
        return [_bundle(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DOC_KEYWORDS or key == "$defs":
            continue
        if key == "$ref":
            target = str(value)
            if target.endswith("envelope.json"):
                out[key] = f"#/defs/{ENVELOPE}"
            elif "#/$defs/" in target:
                out[key] = "#/defs/" + target.split("#/$defs/", 1)[1]
            else:
                raise ValueError(f"a $ref the bundler does not know: {target}")
        elif key not in VALIDATED:
            raise ValueError(f"schema keyword {key} is not one hoomi-frames.js validates")
        elif key == "properties":
            out[key] = {name: _bundle(sub) for name, sub in value.items()}
        else:
            out[key] = _bundle(value)
    return out


def spec_data(root: Path = ROOT) -> dict[str, Any]:
    """Everything the JS client takes from the spec, as plain JSON data."""
    machine = _load(root, "client-state-machine.json")
    versions = _load(root, "spec.json")
    common = _load(root, "schemas/common.json")
    defs = {name: _bundle(schema) for name, schema in sorted(common["$defs"].items())}
    defs[ENVELOPE] = _bundle(_load(root, "schemas/envelope.json"))
    frames: dict[str, Any] = {}
    for path in sorted((root / SPEC_DIR / "schemas" / "server").glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        frames[schema["properties"]["type"]["const"]] = _bundle(schema)
    close_codes = {
        str(c["code"]): {"name": c["name"], "reconnect": c["action"] == "reconnect"}
        for c in _load(root, "close-codes.json")["close_codes"]
    }
    errors = _load(root, "errors.json")["errors"]
    return {
        "spec_version": versions["spec_version"],
        "subprotocol": versions["subprotocol"],
        "machine": {
            "initial": machine["initial"],
            "states": [s["name"] for s in machine["states"]],
            "events": [e["name"] for e in machine["events"]],
            "actions": sorted(machine["actions"]),
            "transitions": [
                {"from": t["from"], "event": t["event"], "to": t["to"], "actions": t["actions"]}
                for t in machine["transitions"]
            ],
            "timers": {
                t["name"]: {"setting": t["setting"], "default_ms": t["default_ms"]}
                for t in machine["timers"]
            },
            "backoff": {
                key: machine["backoff"][key]
                for key in ("initial_ms", "max_ms", "multiplier", "jitter", "max_attempts")
            },
        },
        "close_codes": close_codes,
        "retryable": sorted(e["code"] for e in errors if e["retryable"]),
        "schemas": {"defs": defs, "frames": frames},
    }


def _const(name: str, doc: str, value: Any) -> list[str]:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return [f"/** {doc} */", f"export const {name} = Object.freeze({text});", ""]


def render_js(root: Path = ROOT) -> str:
    data = spec_data(root)
    lines = [
        "// Generated by tools/genjs.py from spec/v1 (`just docs`); do not edit by hand.",
        "// The browser client's view of the spec: hoomi-client.js and hoomi-frames.js import it.",
        "",
        "/** The spec version this data comes from. */",
        f"export const SPEC_VERSION = {json.dumps(data['spec_version'])};",
        "/** The WebSocket subprotocol to offer. */",
        f"export const SUBPROTOCOL = {json.dumps(data['subprotocol'])};",
        "",
    ]
    lines += _const(
        "MACHINE",
        "spec/v1/client-state-machine.json: states, events, transitions (actions in order), "
        "timers, backoff.",
        data["machine"],
    )
    lines += _const(
        "CLOSE_CODES",
        "spec/v1/close-codes.json: code -> {name, reconnect}; a code not listed reconnects.",
        data["close_codes"],
    )
    lines += _const(
        "RETRYABLE_ERRORS",
        "spec/v1/errors.json: the error codes marked retryable.",
        data["retryable"],
    )
    lines += _const(
        "SERVER_SCHEMAS",
        "spec/v1/schemas/server/*.json by frame type, their $refs bundled into `defs`.",
        data["schemas"],
    )
    return "\n".join(lines).rstrip("\n") + "\n"


def render(root: Path = ROOT) -> dict[Path, str]:
    """Every file this tool generates: repo-relative path -> its exact content."""
    return {OUTPUT: render_js(root)}


def stale(root: Path = ROOT) -> list[Path]:
    return gendocs.stale(root, render)


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.splitlines()[0] if __doc__ else None
    return gendocs.main(argv, render, description=description, fresh="JS spec data is up to date")


if __name__ == "__main__":
    sys.exit(main())
