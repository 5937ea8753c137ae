"""The requirement traceability table (docs/traceability.md, tools/tracegen.py) is current,
reads the markers the way pytest does, and has a marked test for every requirement."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest

from conftest import requirement_ids

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import tracegen  # noqa: E402


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


def test_every_requirement_is_verified_by_a_marked_test() -> None:
    """Transcripts and client-kit scenarios do not count, and nothing is exempt."""
    traces = tracegen.trace()
    assert set(traces) == requirement_ids()
    assert tracegen.untested() == []


def test_an_id_without_a_marked_test_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for part in ("spec", "tests", "src/hoomi/conformance"):
        shutil.copytree(ROOT / part, tmp_path / part)
    only = [
        path
        for path in (tmp_path / "tests").rglob("test_*.py")
        if '"HOOMI-STATE-1"' in path.read_text(encoding="utf-8")
    ]
    assert only, "HOOMI-STATE-1 is marked somewhere"
    for path in only:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace('"HOOMI-STATE-1"', '"HOOMI-CLOSE-1"'), encoding="utf-8")
    assert tracegen.untested(tmp_path) == ["HOOMI-STATE-1"]
    monkeypatch.setattr(tracegen, "untested", lambda: ["HOOMI-STATE-1"])
    assert tracegen.main(["--check"]) == 1
    assert capsys.readouterr().err == "no marked test verifies HOOMI-STATE-1\n"


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
