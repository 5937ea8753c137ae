"""The requirement traceability table (docs/traceability.md, tools/tracegen.py) is current,
reads the markers the way pytest does, and shows every requirement exercised."""

from __future__ import annotations

import ast
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import pytest

from conftest import requirement_ids

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import tracegen  # noqa: E402

# Ids exercised by nothing that runs (no transcript, no client-kit scenario, no marked
# test), each with the reason. Keep it empty: cover an id rather than list it here.
UNEXERCISED: Final[Mapping[str, str]] = {}


def test_traceability_md_is_current() -> None:
    rendered = tracegen.render()
    assert set(rendered) == {Path("docs/traceability.md")}
    for path, text in rendered.items():
        on_disk = ROOT / path
        assert on_disk.is_file(), f"{path} is missing: run `just docs`"
        assert on_disk.read_text(encoding="utf-8") == text, f"{path} is stale: run `just docs`"


def test_check_names_a_stale_table(tmp_path: Path) -> None:
    for part in ("spec", "tests", "src/hoomi/conformance"):
        shutil.copytree(ROOT / part, tmp_path / part)
    (tmp_path / "docs").mkdir()
    assert tracegen.stale(tmp_path) == [Path("docs/traceability.md")]
    for path, text in tracegen.render(tmp_path).items():
        (tmp_path / path).write_text(text, encoding="utf-8")
    assert tracegen.stale(tmp_path) == []
    test_file = tmp_path / "tests" / "test_new.py"
    test_file.write_text(
        'import pytest\n\n\n@pytest.mark.requirement("HOOMI-SEND-3")\ndef test_x() -> None:\n'
        "    pass\n",
        encoding="utf-8",
    )
    assert tracegen.stale(tmp_path) == [Path("docs/traceability.md")]


def test_every_requirement_is_exercised() -> None:
    traces = tracegen.trace()
    assert set(traces) == requirement_ids()
    unexercised = {r for r, t in traces.items() if not t.exercised}
    assert unexercised == set(UNEXERCISED)


def test_every_marker_is_read_by_the_generator() -> None:
    """A marker the static reader cannot see (a module-level `pytestmark`, a `pytest.param`
    mark, ids not written as literals) would silently drop out of the table."""
    marked = tracegen.marked_tests()
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        prefix = path.relative_to(ROOT).as_posix() + "::"
        read = sum(len(ids) for test, ids in marked.items() if test.startswith(prefix))
        decorated = sum(
            len(d.args)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test")
            for d in node.decorator_list
            if isinstance(d, ast.Call) and tracegen._is_marker(d.func)
        )
        assert tracegen.marker_uses(tree) == len(
            [
                d
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                for d in node.decorator_list
                if isinstance(d, ast.Call) and tracegen._is_marker(d.func)
            ]
        ), f"{path}: a requirement marker the generator does not read"
        assert read == decorated, path
    for test, ids in marked.items():
        assert set(ids) <= requirement_ids(), test


def test_static_scenarios_match_the_kit() -> None:
    """The scenario names the generator reads (patterns where made per close code) are the
    kit's, with the same requirement ids."""
    from hoomi.conformance.scenarios import scenarios

    static = tracegen.scenario_requirements()
    for spec in scenarios():
        matches = [
            ids
            for name, ids in static.items()
            if name == spec.name or ("{" in name and spec.name.startswith(name.split("{", 1)[0]))
        ]
        assert matches == [list(spec.requirements)], spec.name


def test_the_collection_hook_refuses_an_unknown_id(pytester: pytest.Pytester) -> None:
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    here = "pathlib.Path(__file__).resolve().parent.parent"
    assert here in conftest
    pytester.makeconftest(conftest.replace(here, f"pathlib.Path({str(ROOT)!r})"))
    pytester.makeini("[pytest]\nmarkers =\n    requirement: ids\n    expect_errors: events\n")
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.requirement("HOOMI-NOPE-1")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*test_x: unknown requirement ids*HOOMI-NOPE-1*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
