"""Generate the requirement traceability table: requirement id -> what exercises it.

    python tools/tracegen.py          # (re)write docs/traceability.md
    python tools/tracegen.py --check  # write nothing; exit 1 if it is stale

Either way it exits 1 when a requirement id has no marked test: transcripts and client-kit
scenarios are listed but do not count, and there is no exemption list.

Sources, all read statically so that ``--check`` needs no test run and no import of Hoomi:
the transcripts and examples under ``spec/v1`` (their ``requirements``), the client-kit
scenarios (the ``ScenarioSpec(...)`` calls in ``src/hoomi/conformance/scenarios.py``) and the
tests marked ``@pytest.mark.requirement(...)`` (found with ``ast`` in ``tests/``). Listings
are sorted and nothing carries a timestamp, so the output is committed and CI checks it.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gendocs

ROOT = gendocs.ROOT
TRACE_MD = Path("docs/traceability.md")
TESTS_DIR = Path("tests")
SCENARIOS_PY = Path("src/hoomi/conformance/scenarios.py")
MARKER = "requirement"


@dataclass
class Trace:
    """What exercises one requirement id."""

    transcripts: list[Path] = field(default_factory=list)
    examples: list[Path] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)

    @property
    def exercised(self) -> bool:
        """Run against an implementation (examples are only validated against schemas)."""
        return bool(self.transcripts or self.scenarios or self.tests)


# --- static collection --------------------------------------------------------------------


def _is_marker(node: ast.expr) -> bool:
    """``pytest.mark.requirement`` (the attribute chain, not yet called)."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == MARKER
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "mark"
    )


def _marker_ids(decorators: Sequence[ast.expr]) -> list[str]:
    ids: list[str] = []
    for decorator in decorators:
        if isinstance(decorator, ast.Call) and _is_marker(decorator.func):
            ids += [
                a.value
                for a in decorator.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            ]
    return ids


def _tests_in(
    body: Sequence[ast.stmt], prefix: str, inherited: list[str]
) -> Iterator[tuple[str, list[str]]]:
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            ids = inherited + _marker_ids(node.decorator_list)
            if ids:
                yield f"{prefix}::{node.name}", ids
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            yield from _tests_in(
                node.body,
                f"{prefix}::{node.name}",
                inherited + _marker_ids(node.decorator_list),
            )


def marker_uses(tree: ast.AST) -> int:
    """Every ``pytest.mark.requirement`` in a module, wherever it stands (a cross-check)."""
    return sum(1 for node in ast.walk(tree) if isinstance(node, ast.expr) and _is_marker(node))


def marked_tests(root: Path = ROOT) -> dict[str, list[str]]:
    """Test node id -> the requirement ids its marker names (functions and classes only)."""
    out: dict[str, list[str]] = {}
    directory = root / TESTS_DIR
    if not directory.is_dir():
        return out
    for path in sorted(directory.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        out.update(_tests_in(tree.body, path.relative_to(root).as_posix(), []))
    return out


def _name(node: ast.expr) -> str | None:
    """A scenario name: a string, or an f-string shown with its placeholders."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                parts.append("{" + ast.unparse(value.value) + "}")
        return "".join(parts)
    return None


def scenario_requirements(root: Path = ROOT) -> dict[str, list[str]]:
    """Client-kit scenario name (a pattern where it is built per close code) -> its ids."""
    path = root / SCENARIOS_PY
    if not path.is_file():
        return {}
    out: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "ScenarioSpec"
        ):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        name = _name(keywords["name"]) if "name" in keywords else None
        reqs = keywords.get("requirements")
        if name is None or not isinstance(reqs, ast.Tuple | ast.List):
            continue
        out[name] = [
            e.value for e in reqs.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
    return out


def requirement_ids(spec: gendocs.Spec) -> list[str]:
    return [r["id"] for s in spec.requirements["sections"] for r in s["requirements"]]


def trace(root: Path = ROOT) -> dict[str, Trace]:
    """Requirement id (in spec order) -> what exercises it. Ids that no requirement has are
    dropped here; the tests and the marker's collection hook refuse them."""
    spec = gendocs.load_spec(root)
    out = {req_id: Trace() for req_id in requirement_ids(spec)}

    def at(req_id: object) -> Trace | None:
        return out.get(req_id) if isinstance(req_id, str) else None

    for paths, kind in ((spec.transcripts, "transcripts"), (spec.examples, "examples")):
        for path, data in paths:
            for req_id in data.get("requirements", []) if isinstance(data, dict) else []:
                if (entry := at(req_id)) is not None:
                    getattr(entry, kind).append(path)
    for name, ids in scenario_requirements(root).items():
        for req_id in ids:
            if (entry := at(req_id)) is not None:
                entry.scenarios.append(name)
    for test, ids in marked_tests(root).items():
        for req_id in dict.fromkeys(ids):
            if (entry := at(req_id)) is not None:
                entry.tests.append(test)
    for entry in out.values():
        entry.transcripts.sort()
        entry.examples.sort()
        entry.scenarios.sort()
        entry.tests.sort()
    return out


# --- traceability.md ----------------------------------------------------------------------


def _file_link(path: Path) -> str:
    return f"[`{path.stem}`](../{path.as_posix()})"


def _test_link(node_id: str) -> str:
    file, _, name = node_id.partition("::")
    return f"[`{name}`](../{file})"


def render_md(root: Path = ROOT) -> str:
    traces = trace(root)
    by_tests = sum(1 for t in traces.values() if t.tests)
    only_spec = sum(1 for t in traces.values() if t.exercised and not t.tests)
    missing = [r for r, t in traces.items() if not t.exercised]
    lines = [
        "<!-- Generated by tools/tracegen.py. Do not edit; run `just docs`. -->",
        "",
        "# Requirement traceability",
        "",
        "> **Generated file; do not edit.** For every requirement id of"
        " [`spec/v1/requirements.json`](../spec/v1/requirements.json): the transcripts and"
        " client-kit scenarios that cite it, the tests marked"
        ' `@pytest.mark.requirement("HOOMI-…")` that verify it, and the examples that show it.'
        " Run `just docs` after changing any of them.",
        "",
        f"{len(traces)} requirements: {by_tests} verified by a marked test,"
        f" {only_spec} only by transcripts or client-kit scenarios,"
        f" {len(missing)} by nothing that runs" + (f" ({', '.join(missing)})." if missing else "."),
        "",
        "Transcripts run against the server in `tests/test_transcripts.py` and"
        " `hoomi-conformance server`; scenarios grade a client through `hoomi-conformance"
        " client` (see [conformance.md](conformance.md)); examples are validated against the"
        " schemas only. Scenario names in braces are made once per close code of that action.",
        "",
    ]
    rows = [
        [
            f"[{req_id}](protocol.md#{req_id})",
            ", ".join(_test_link(t) for t in t_.tests),
            ", ".join(_file_link(p) for p in t_.transcripts),
            ", ".join(gendocs.code(s) for s in t_.scenarios),
            ", ".join(_file_link(p) for p in t_.examples),
        ]
        for req_id, t_ in traces.items()
    ]
    lines += gendocs.table(
        ["requirement", "marked tests", "transcripts", "client-kit scenarios", "examples"], rows
    )
    return "\n".join(line.rstrip() for line in lines).rstrip("\n") + "\n"


def render(root: Path = ROOT) -> dict[Path, str]:
    """Every file this tool generates: repo-relative path -> its exact content."""
    return {TRACE_MD: render_md(root)}


def stale(root: Path = ROOT) -> list[Path]:
    return gendocs.stale(root, render)


def untested(root: Path = ROOT) -> list[str]:
    """Requirement ids (in spec order) that no ``@pytest.mark.requirement`` test names."""
    return [req_id for req_id, entry in trace(root).items() if not entry.tests]


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.splitlines()[0] if __doc__ else None
    status = gendocs.main(argv, render, description=description, fresh="traceability is up to date")
    if missing := untested():
        print(f"no marked test verifies {', '.join(missing)}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
