"""Proof that the test suite catches bugs: apply each planted bug, run the tests that should
catch it, and say whether they did.

    python tools/mutants.py              # every mutant in tests/mutants/ (`just mutants`)
    python tools/mutants.py 03 tls       # those whose file name contains "03" or "tls"
    python tools/mutants.py --json       # one JSON object for scripts

A mutant is one file, ``tests/mutants/NN-name.patch``: a unified diff against the repository
(as ``git diff`` writes it) behind a header of ``# Key: value`` lines, which `git apply`
skips::

    # Mutant: the drain drops the frames still queued
    # Finding: HOOMI-CLOSE-2; issue 20, item 2
    # Test: tests/test_server_drain.py::test_drain_delivers_what_is_queued
    # Timeout: 120            (optional: seconds for the whole pytest run, default 240)
    diff --git a/src/hoomi/server/transport.py b/src/hoomi/server/transport.py
    ...

``Test`` lines (one or more) name pytest node ids: a file, a test, or one parametrization.
Patches in ``tests/mutants/pending/`` are not run: they stand for bugs no test catches yet.

How it runs. The files git would commit (``git ls-files --cached --others
--exclude-standard``: no .venv, no caches) are copied to a scratch directory; the real tree
is never written. A *control* run first runs every named test there, unmutated: a mutant
whose tests fail without it proves nothing. Then each mutant gets its own copy, `git apply`
patches it (a patch that no longer applies is STALE: mutants cannot rot silently), and
pytest runs its tests with ``-x`` under the project's interpreter. The copy's ``src/`` comes
first on ``PYTHONPATH`` (the editable install points at the real tree), and a plugin
(`mutant_probe`) reports from inside pytest where `hoomi` was imported from: a run that
imported anything but the copy is an error, not a verdict.

Verdicts: *caught* (a named test failed), *caught (test timeout)* (pytest-timeout fired: the
bug hangs), *survived* (every test passed), *stale*, *control failed*, *hung* (the run
outlived its timeout with no test timeout firing), *error* (pytest could not run the tests:
a collection error, no test collected, the wrong `hoomi`). Exit status 0 only if every
mutant was caught.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent
MUTANTS_DIR = Path("tests/mutants")
DEFAULT_TIMEOUT_S = 240.0
PROBE_ENV = "HOOMI_MUTANT_PROBE"

CAUGHT = "caught"
CAUGHT_TIMEOUT = "caught (test timeout)"
SURVIVED = "survived"
STALE = "stale"
CONTROL_FAILED = "control failed"
HUNG = "hung"
ERROR = "error"
GOOD = {CAUGHT, CAUGHT_TIMEOUT}


class MutantFormatError(ValueError):
    pass


@dataclass
class Mutant:
    path: Path
    name: str
    description: str
    finding: str
    tests: list[str]
    timeout_s: float


@dataclass
class Result:
    mutant: str
    description: str
    finding: str
    tests: list[str]
    verdict: str
    seconds: float = 0.0
    detail: str = ""
    failed_tests: list[str] = field(default_factory=list)


def parse_mutant(path: Path) -> Mutant:
    """Read a mutant's header; MutantFormatError if it lacks a description, a finding, a
    test or a diff."""
    fields: dict[str, list[str]] = {}
    has_diff = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(("diff --git ", "--- ")):
            has_diff = True
            break
        if line.startswith("#") and ":" in line:
            key, _, value = line.lstrip("#").partition(":")
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    missing = [key for key in ("mutant", "finding", "test") if not fields.get(key)]
    if missing:
        raise MutantFormatError(f"{path.name}: no '# {missing[0].title()}:' line in the header")
    if not has_diff:
        raise MutantFormatError(f"{path.name}: no diff after the header")
    tests = [test for value in fields["test"] for test in value.split()]
    timeout = float(fields["timeout"][0]) if fields.get("timeout") else DEFAULT_TIMEOUT_S
    return Mutant(
        path=path,
        name=path.stem,
        description=" ".join(fields["mutant"]),
        finding=" ".join(fields["finding"]),
        tests=tests,
        timeout_s=timeout,
    )


def find_mutants(directory: Path, selectors: Sequence[str] = ()) -> list[Mutant]:
    paths = sorted(directory.glob("*.patch"))
    if selectors:
        paths = [p for p in paths if any(s in p.name for s in selectors)]
    return [parse_mutant(p) for p in paths]


def tracked_files(root: Path) -> list[str]:
    """The files git would commit: tracked ones and new ones not ignored (no .venv)."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [name for name in listing.split("\0") if name and (root / name).is_file()]


def copy_tree(root: Path, files: Sequence[str], target: Path) -> None:
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)


def applies(patch: Path, tree: Path, *, check: bool) -> tuple[bool, str]:
    """`git apply` the patch inside `tree` (only --check with `check`)."""
    command = ["git", "apply", "--whitespace=nowarn"]
    if check:
        command.append("--check")
    done = subprocess.run(
        [*command, str(patch.resolve())], cwd=tree, capture_output=True, text=True, check=False
    )
    return done.returncode == 0, done.stderr.strip()


@dataclass
class Run:
    exit_code: int | None  # None: killed at the timeout
    probe: dict[str, Any] | None
    output: str
    seconds: float


def run_pytest(
    python: str, tree: Path, tests: Sequence[str], timeout_s: float, *, exitfirst: bool = True
) -> Run:
    """Run pytest on `tests` inside `tree`, importing the tree's own `src/` (stopping at
    the first failure with `exitfirst`)."""
    probe_path = tree / ".mutant-probe.json"
    probe_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree / "src"), str(TOOLS), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env[PROBE_ENV] = str(probe_path)
    command = [
        python,
        "-m",
        "pytest",
        "-p",
        "mutant_probe",
        "-p",
        "no:cacheprovider",
        *(["-x"] if exitfirst else []),
        "-q",
        "--no-header",
        *tests,
    ]
    started = time.monotonic()
    # Its own process group: at the timeout, the servers a test started die with it.
    process = subprocess.Popen(
        command,
        cwd=tree,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
        exit_code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        exit_code = None
    seconds = time.monotonic() - started
    probe = json.loads(probe_path.read_text()) if probe_path.is_file() else None
    return Run(exit_code, probe, output.decode(errors="replace"), seconds)


def _selected(outcomes: dict[str, str], test: str) -> dict[str, str]:
    """The outcomes of the node ids that `test` names (itself, its parametrizations, the
    tests in its file or class)."""
    return {
        node: outcome
        for node, outcome in outcomes.items()
        if node == test or node.startswith((test + "[", test + "::"))
    }


def _wrong_import(run: Run, tree: Path) -> str | None:
    if run.probe is None:
        return "pytest wrote no probe (did it start?)"
    hoomi_file = run.probe.get("hoomi_file")
    if hoomi_file is None or not Path(hoomi_file).resolve().is_relative_to(tree.resolve()):
        return f"the tests imported hoomi from {hoomi_file}, not from the scratch copy {tree}"
    return None


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def verdict_of(run: Run, tree: Path, mutant: Mutant) -> tuple[str, str, list[str]]:
    wrong = _wrong_import(run, tree) if run.exit_code is not None else None
    if run.exit_code is None:
        return HUNG, f"killed after {mutant.timeout_s:.0f}s with no test timeout", []
    if wrong:
        return ERROR, wrong, []
    assert run.probe is not None
    outcomes: dict[str, str] = run.probe["outcomes"]
    failed = sorted(node for node, outcome in outcomes.items() if outcome in ("failed", "timeout"))
    if run.exit_code == 0:
        return SURVIVED, f"{len(outcomes)} tests passed", []
    if run.exit_code == 1 and failed:
        timed_out = all(outcomes[node] == "timeout" for node in failed)
        return (CAUGHT_TIMEOUT if timed_out else CAUGHT), "", failed
    return ERROR, f"pytest exit {run.exit_code}:\n{_tail(run.output)}", failed


def missing_test(tree: Path, test: str) -> str | None:
    """Why node id `test` names nothing in `tree` (a file that is not there, or no ``def``
    or ``class`` of that name in it), or None. Checked before pytest runs: one unknown node
    id would stop the whole control run."""
    file, _, rest = test.partition("::")
    if not (tree / file).is_file():
        return f"{test}: no file {file}"
    source = (tree / file).read_text(encoding="utf-8")
    for name in rest.split("[")[0].split("::") if rest else ():
        if not re.search(rf"^\s*(async def|def|class) {re.escape(name)}\b", source, re.M):
            return f"{test}: no test {name} in {file}"
    return None


def control(
    python: str, base: Path, mutants: Sequence[Mutant]
) -> tuple[dict[str, str], str | None]:
    """Run every named test once on the unmutated copy: {mutant name: why its control
    failed} for the mutants whose tests do not all pass, and a fatal error if any."""
    broken: dict[str, str] = {}
    for mutant in mutants:
        for test in mutant.tests:
            why = missing_test(base, test)
            if why:
                broken[mutant.name] = why
                break
    mutants = [m for m in mutants if m.name not in broken]
    if not mutants:
        return broken, None
    tests = sorted({test for mutant in mutants for test in mutant.tests})
    timeout = sum(m.timeout_s for m in mutants) or DEFAULT_TIMEOUT_S
    run = run_pytest(python, base, tests, timeout, exitfirst=False)
    if run.exit_code is None:
        return {}, f"the control run hung (killed after {timeout:.0f}s)"
    wrong = _wrong_import(run, base)
    if wrong:
        return {}, wrong
    assert run.probe is not None
    outcomes: dict[str, str] = run.probe["outcomes"]
    if run.exit_code not in (0, 1):
        return {}, f"the control run could not run the tests (pytest exit {run.exit_code}):\n" + (
            _tail(run.output)
        )
    for mutant in mutants:
        for test in mutant.tests:
            selected = _selected(outcomes, test)
            bad = sorted(node for node, outcome in selected.items() if outcome != "passed")
            if not selected:
                broken[mutant.name] = f"{test} ran no test unmutated"
            elif bad:
                broken[mutant.name] = f"{bad[0]} does not pass unmutated"
            if mutant.name in broken:
                break
    if run.exit_code == 1 and not broken:
        return {}, "the control run failed:\n" + _tail(run.output)
    return broken, None


def run_all(root: Path, mutants: Sequence[Mutant], python: str, scratch: Path) -> list[Result]:
    files = tracked_files(root)
    base = scratch / "base"
    copy_tree(root, files, base)
    results: dict[str, Result] = {}
    runnable: list[Mutant] = []
    for mutant in mutants:
        result = Result(mutant.name, mutant.description, mutant.finding, mutant.tests, "")
        results[mutant.name] = result
        ok, why = applies(mutant.path, base, check=True)
        if ok:
            runnable.append(mutant)
        else:
            result.verdict, result.detail = STALE, why
    if runnable:
        broken, fatal = control(python, base, runnable)
        if fatal:
            for mutant in runnable:
                results[mutant.name].verdict = CONTROL_FAILED
                results[mutant.name].detail = fatal
            runnable = []
        for name, why in broken.items():
            results[name].verdict, results[name].detail = CONTROL_FAILED, why
        runnable = [m for m in runnable if m.name not in broken]
    for mutant in runnable:
        tree = scratch / mutant.name
        shutil.copytree(base, tree, symlinks=True)
        result = results[mutant.name]
        ok, why = applies(mutant.path, tree, check=False)
        if not ok:
            result.verdict, result.detail = STALE, why
            continue
        run = run_pytest(python, tree, mutant.tests, mutant.timeout_s)
        result.verdict, result.detail, result.failed_tests = verdict_of(run, tree, mutant)
        result.seconds = round(run.seconds, 1)
        shutil.rmtree(tree, ignore_errors=True)
    return [results[m.name] for m in mutants]


def print_table(results: Sequence[Result], seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Mutants: planted bugs and the tests that should catch them")
    table.add_column("mutant", no_wrap=True)
    table.add_column("the bug")
    table.add_column("finding")
    table.add_column("verdict", no_wrap=True)
    table.add_column("s", justify="right")
    for result in results:
        style = "green" if result.verdict in GOOD else "bold red"
        table.add_row(
            result.mutant,
            result.description,
            result.finding,
            f"[{style}]{result.verdict}[/]",
            f"{result.seconds:.1f}",
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # CI logs: one line per mutant
    console.print(table)
    caught = sum(r.verdict in GOOD for r in results)
    console.print(f"{caught}/{len(results)} caught in {seconds:.0f}s", markup=False)
    for result in results:
        if result.verdict not in GOOD:
            console.print(f"\n{result.mutant}: {result.verdict}", style="bold red", markup=False)
            if result.detail:
                console.print(result.detail, markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("select", nargs="*", help="run only mutants whose file name has this")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="the mutants' directory (default tests/mutants)"
    )
    parser.add_argument("--python", default=None, help="the interpreter (default .venv's)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    directory: Path = args.dir or root / MUTANTS_DIR
    venv_python = ROOT / ".venv" / "bin" / "python"
    python = args.python or (str(venv_python) if venv_python.exists() else sys.executable)
    try:
        mutants = find_mutants(directory, args.select)
    except MutantFormatError as error:
        print(f"mutants: {error}", file=sys.stderr)
        return 2
    if not mutants:
        print(f"mutants: no mutant in {directory}", file=sys.stderr)
        return 2
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="hoomi-mutants-"))
    try:
        results = run_all(root, mutants, python, scratch)
    finally:
        if args.keep:
            print(f"mutants: scratch copies kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.monotonic() - started
    ok = all(r.verdict in GOOD for r in results)
    if args.json:
        report = {"ok": ok, "seconds": round(seconds, 1), "mutants": [asdict(r) for r in results]}
        print(json.dumps(report, indent=2))
    else:
        print_table(results, seconds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
