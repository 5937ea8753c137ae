"""Results per requirement id, as JSON and as JUnit XML. Pure functions, no I/O.

A transcript's outcome counts for requirement ids as follows:

- passed: every id the transcript lists passed in it;
- failed: the ids its failure is attributed to (`Result.failed_requirements`: the failing
  step's own ids, else the transcript's, or those of a broken invariant) failed; its other
  ids were not judged (the run stopped), and count as skipped with that reason;
- skipped: every id it lists is skipped, with the reason.

A requirement fails if any transcript failed it, else passes if any transcript passed it,
else is skipped. Ids are ordered as in ``requirements.json``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from hoomi.protocol.spec import load as load_spec

from .transcripts import Outcome, Result


@attrs.frozen(kw_only=True)
class Verdict:
    """One requirement id across a run: `passed` names transcripts; `failed` and `skipped`
    are (transcript, reason) pairs."""

    requirement: str
    outcome: Outcome
    passed: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()


def requirement_order() -> dict[str, int]:
    """Each requirement id's position in ``requirements.json``."""
    sections = load_spec("requirements.json")["sections"]
    ids = [r["id"] for section in sections for r in section["requirements"]]
    return {rid: index for index, rid in enumerate(ids)}


def failure_reason(result: Result) -> str:
    where = f"{result.where}: " if result.where else ""
    return f"{where}{result.message}"


def verdicts(results: Iterable[Result]) -> list[Verdict]:
    """One `Verdict` per requirement id that some result lists or failed."""
    passed: dict[str, list[str]] = {}
    failed: dict[str, list[tuple[str, str]]] = {}
    skipped: dict[str, list[tuple[str, str]]] = {}
    for result in results:
        for rid in result.requirements + result.failed_requirements:
            passed.setdefault(rid, [])
        if result.outcome is Outcome.PASSED:
            for rid in result.requirements:
                passed[rid].append(result.name)
        elif result.outcome is Outcome.SKIPPED:
            for rid in result.requirements:
                skipped.setdefault(rid, []).append((result.name, result.message))
        else:
            for rid in result.failed_requirements:
                failed.setdefault(rid, []).append((result.name, failure_reason(result)))
            stopped = f"not judged: the run stopped at {result.where or 'its start'}"
            for rid in result.requirements:
                if rid not in result.failed_requirements:
                    skipped.setdefault(rid, []).append((result.name, stopped))
    order = requirement_order()
    out = []
    for rid in sorted(passed, key=lambda r: (order.get(r, len(order)), r)):
        if failed.get(rid):
            outcome = Outcome.FAILED
        elif passed[rid]:
            outcome = Outcome.PASSED
        else:
            outcome = Outcome.SKIPPED
        out.append(
            Verdict(
                requirement=rid,
                outcome=outcome,
                passed=tuple(passed[rid]),
                failed=tuple(failed.get(rid, ())),
                skipped=tuple(skipped.get(rid, ())),
            )
        )
    return out


def failed_requirements(results: Iterable[Result]) -> set[str]:
    """The ids that some result failed."""
    return {v.requirement for v in verdicts(results) if v.outcome is Outcome.FAILED}


def counts(results: Sequence[Result]) -> dict[str, int]:
    return {outcome.value: sum(r.outcome is outcome for r in results) for outcome in Outcome}


def to_json(
    results: Sequence[Result], server: str, *, kind: str = "server", unit: str = "transcripts"
) -> dict[str, Any]:
    """The whole run: counts, each transcript's (or scenario's) result, each requirement's
    verdict. `kind` names what was graded (``server``: a URL; ``client``: an adapter
    command) and keys `server`; `unit` keys the counts."""
    return {
        kind: server,
        unit: counts(results),
        "results": [
            {
                "name": r.name,
                "outcome": r.outcome.value,
                "requirements": list(r.requirements),
                "failed_requirements": list(r.failed_requirements),
                "step": r.step,
                "where": r.where,
                "message": r.message,
                "duration_s": round(r.duration_s, 3),
            }
            for r in results
        ],
        "requirements": [
            {
                "id": v.requirement,
                "outcome": v.outcome.value,
                "passed": list(v.passed),
                "failed": [{"transcript": n, "reason": why} for n, why in v.failed],
                "skipped": [{"transcript": n, "reason": why} for n, why in v.skipped],
            }
            for v in verdicts(results)
        ],
    }


def junit_xml(results: Sequence[Result], server: str, *, kind: str = "server") -> str:
    """JUnit XML: one testcase per transcript or scenario (a property lists its requirement
    ids), failures and skips with their reasons; `kind` as in `to_json`."""
    tally = counts(results)
    suite = ET.Element(
        "testsuite",
        name=f"hoomi-conformance {kind} {server}",
        tests=str(len(results)),
        failures=str(tally[Outcome.FAILED.value]),
        errors="0",
        skipped=str(tally[Outcome.SKIPPED.value]),
        time=f"{sum(r.duration_s for r in results):.3f}",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"hoomi.conformance.{kind}",
            name=result.name,
            time=f"{result.duration_s:.3f}",
        )
        properties = ET.SubElement(case, "properties")
        ET.SubElement(
            properties, "property", name="requirements", value=" ".join(result.requirements)
        )
        if result.outcome is Outcome.FAILED:
            failure = ET.SubElement(
                case,
                "failure",
                message=f"{', '.join(result.failed_requirements)}: {failure_reason(result)}",
                type="failed",
            )
            failure.text = failure_reason(result)
        elif result.outcome is Outcome.SKIPPED:
            ET.SubElement(case, "skipped", message=result.message)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
