"""`tools/mutants.py` (`just mutants`) itself, cheaply: a tiny repository with one caught,
one surviving and one stale mutant; and every real mutant still applies and names tests
that exist (the full run, minutes long, is `just mutants` in CI)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys
from types import ModuleType

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "tools" / "mutants.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutants", module)
    spec.loader.exec_module(module)
    return module


mutants = _load()

ADD = "def add(a: int, b: int) -> int:\n    return a + b\n"


def _patch(header: str, old: str, new: str) -> str:
    return (
        f"{header}"
        "diff --git a/src/hoomi/__init__.py b/src/hoomi/__init__.py\n"
        "--- a/src/hoomi/__init__.py\n"
        "+++ b/src/hoomi/__init__.py\n"
        "@@ -1,2 +1,2 @@\n"
        " def add(a: int, b: int) -> int:\n"
        f"-    {old}\n"
        f"+    {new}\n"
    )


@pytest.fixture
def tiny(tmp_path: pathlib.Path) -> pathlib.Path:
    """A repository holding a package `hoomi` (its own, not the real one), a test, and
    three mutants."""
    repo = tmp_path / "repo"
    (repo / "src" / "hoomi").mkdir(parents=True)
    (repo / "src" / "hoomi" / "__init__.py").write_text(ADD)
    (repo / "tests" / "mutants").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (repo / "tests" / "test_add.py").write_text(
        "from hoomi import add\n\n\ndef test_add() -> None:\n    assert add(2, 3) == 5\n"
    )
    header = "# Mutant: {}\n# Finding: none\n# Test: tests/test_add.py::test_add\n"
    patches = {
        "01-minus": _patch(header.format("adds by subtracting"), "return a + b", "return a - b"),
        "02-swapped": _patch(header.format("adds the other way"), "return a + b", "return b + a"),
        "03-stale": _patch(header.format("changes gone code"), "return a * b", "return a / b"),
    }
    for name, text in patches.items():
        (repo / "tests" / "mutants" / f"{name}.patch").write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


def test_caught_survived_and_stale_are_told_apart_and_fail_the_run(
    tiny: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mutants.main(["--root", str(tiny), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    verdicts = {m["mutant"]: m["verdict"] for m in report["mutants"]}
    assert verdicts == {"01-minus": "caught", "02-swapped": "survived", "03-stale": "stale"}
    assert report["mutants"][0]["failed_tests"] == ["tests/test_add.py::test_add"]
    assert report["ok"] is False
    # The real tree is never written: the mutants went to scratch copies.
    assert (tiny / "src" / "hoomi" / "__init__.py").read_text() == ADD


def test_a_mutant_whose_tests_fail_unmutated_proves_nothing(
    tiny: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tiny / "tests" / "test_add.py").write_text(
        "from hoomi import add\n\n\ndef test_add() -> None:\n    assert add(2, 3) == 6\n"
    )
    assert mutants.main(["--root", str(tiny), "--json", "01"]) == 1
    [result] = json.loads(capsys.readouterr().out)["mutants"]
    assert (result["verdict"], result["detail"]) == (
        "control failed",
        "tests/test_add.py::test_add does not pass unmutated",
    )


def test_tests_that_imported_another_hoomi_are_an_error_not_a_verdict(
    tmp_path: pathlib.Path,
) -> None:
    copy = tmp_path / "copy"
    elsewhere = str(ROOT / "src" / "hoomi" / "__init__.py")
    run = mutants.Run(0, {"hoomi_file": elsewhere, "outcomes": {}}, "", 0.0)
    mutant = mutants.Mutant(tmp_path / "m.patch", "m", "bug", "none", ["t"], 1.0)
    verdict, detail, _ = mutants.verdict_of(run, copy, mutant)
    assert verdict == "error"
    assert detail == f"the tests imported hoomi from {elsewhere}, not from the scratch copy {copy}"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "tests" / "mutants").glob("*.patch")), ids=lambda p: p.stem
)
def test_each_mutant_applies_to_this_tree_and_names_tests_that_exist(path: pathlib.Path) -> None:
    mutant = mutants.parse_mutant(path)
    assert mutants.applies(path, ROOT, check=True) == (True, "")
    assert [mutants.missing_test(ROOT, test) for test in mutant.tests] == [None] * len(mutant.tests)


def test_there_are_at_least_fifteen_mutants() -> None:
    assert len(mutants.find_mutants(ROOT / "tests" / "mutants")) >= 15
