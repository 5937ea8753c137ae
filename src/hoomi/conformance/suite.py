"""Run a set of transcripts against one backend, in an order that suits it.

A backend that starts a fresh server per transcript runs them all, as given. A shared
server (`shared=True`, e.g. `hoomi.conformance.remote.AdminBackend`) is different:

- each run gets its own users (`run_transcript(..., unique_users=True)`);
- a transcript that drains the server ends it for everyone after it: it is skipped unless
  `allow_drain`, and then runs last (and only the first such one runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .transcripts import (
    DEFAULT_TIMEOUT_MS,
    Backend,
    Outcome,
    Result,
    Transcript,
    drains,
    run_transcript,
)

NO_DRAIN = (
    "drains the server (operator drain), which ends it for every later transcript: "
    "give --allow-drain to run it last"
)


async def run_suite(
    transcripts: Sequence[Transcript],
    backend: Backend,
    *,
    shared: bool = False,
    allow_drain: bool = False,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    backend_timeout_s: float = 30.0,
    on_start: Callable[[Transcript], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """The results of `transcripts`, in the order they ran. `on_start` and `on_result` are
    called around each one (progress display). Bounded as `run_transcript` is, per run."""
    ordered = list(transcripts)
    if shared:
        ordered.sort(key=drains)  # stable: drains last, the rest as given
    drained_by: str | None = None
    results = []
    for transcript in ordered:
        if on_start is not None:
            on_start(transcript)
        if shared and drains(transcript) and not allow_drain:
            result = _skipped(transcript, NO_DRAIN)
        elif drained_by is not None:
            result = _skipped(transcript, f"the server was drained by {drained_by}")
        else:
            result = await run_transcript(
                transcript,
                backend,
                timeout_ms=timeout_ms,
                backend_timeout_s=backend_timeout_s,
                unique_users=shared,
            )
            if shared and drains(transcript) and result.outcome is not Outcome.SKIPPED:
                drained_by = transcript.name
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _skipped(transcript: Transcript, reason: str) -> Result:
    return Result(
        name=transcript.name,
        outcome=Outcome.SKIPPED,
        requirements=transcript.requirements,
        message=reason,
    )
