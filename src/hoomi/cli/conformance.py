"""``hoomi-conformance``: check a client's (or server's) frames, or a whole server, against
protocol v1.

``frames`` reads a capture with one frame per line (JSON Lines, as a WebSocket proxy or a
client's debug log writes them) and reports, per frame, the message type or the spec error
code and JSON path that a Hoomi server would answer with.

``server URL`` runs the spec's transcripts against a running server, set up through its
admin API (`hoomi.conformance.remote`), with a progress bar, then prints a table per
requirement id (``--json`` for scripts, ``--junit FILE`` for CI). Exit 0 when nothing
failed (skips alone are not failures), 1 on any failure, 2 when the server cannot be used
at all (one sentence says why and what to do; never a traceback).

``client -- COMMAND...`` runs the client kit's scenarios (`hoomi.conformance.scenarios`)
against the client behind an adapter command (docs/conformance.md), reported the same way;
2 when the command cannot be started.
"""

from __future__ import annotations

import enum
import os
import pathlib
import shlex
import shutil
from collections.abc import Sequence
from typing import Annotated, NoReturn

import orjson
import trio
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from hoomi.cli.render import plural
from hoomi.conformance import Outcome, Result, Transcript, load_transcripts
from hoomi.conformance.kit import ScenarioSpec, run_kit
from hoomi.conformance.remote import ServerUnusable, admin_backend
from hoomi.conformance.report import counts, failure_reason, junit_xml, to_json, verdicts
from hoomi.conformance.scenarios import scenarios
from hoomi.conformance.suite import run_suite
from hoomi.protocol import Direction, ProtocolError, decode
from hoomi.protocol.spec import spec_dir

app = typer.Typer(
    help="Conformance tools for Hoomi protocol v1 clients and servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class Sender(enum.StrEnum):
    client = "client"
    server = "server"


@app.callback()
def _main() -> None:
    """Conformance tools for Hoomi protocol v1 clients and servers."""


@app.command()
def frames(
    capture: Annotated[
        typer.FileText,
        typer.Argument(help="A file with one frame per line; '-' reads standard input."),
    ],
    sender: Annotated[
        Sender, typer.Option("--from", help="Who sent the frames: client or server.")
    ] = Sender.client,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines for scripts.")] = False,
) -> None:
    """Check captured frames against the spec; exit 1 if any frame is refused."""
    direction = Direction(sender.value)
    rows: list[dict[str, object]] = []
    for number, line in enumerate(capture, 1):
        frame = line.rstrip("\r\n")
        if not frame.strip():
            continue
        try:
            message = decode(frame, direction)
        except ProtocolError as error:
            rows.append(
                {
                    "line": number,
                    "ok": False,
                    "code": error.code.value,
                    "path": error.path,
                    "id": error.request_id,
                    "message": error.message,
                }
            )
        else:
            rows.append({"line": number, "ok": True, "type": message.TYPE})
    refused = sum(not row["ok"] for row in rows)
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
    else:
        table = Table(title=f"{len(rows)} {sender.value} frames, {refused} refused")
        for column in ("line", "result", "type / code", "path", "detail"):
            table.add_column(column)
        for row in rows:
            if row["ok"]:
                table.add_row(str(row["line"]), "[green]ok", str(row["type"]), "", "")
            else:
                table.add_row(
                    str(row["line"]),
                    "[red]refused",
                    str(row["code"]),
                    str(row["path"] or ""),
                    str(row["message"]),
                )
        console.print(table)
    if not rows:
        console.print("No frames found: give a file with one JSON frame per line.", style="red")
        raise typer.Exit(2)
    if refused:
        raise typer.Exit(1)


# -- server -------------------------------------------------------------------------------

_STYLE = {Outcome.PASSED: "green", Outcome.FAILED: "red", Outcome.SKIPPED: "yellow"}


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _chosen(only: list[str] | None) -> list[Transcript]:
    transcripts = load_transcripts(spec_dir() / "transcripts")
    if not only:
        return transcripts
    names = {t.name for t in transcripts}
    unknown = [name for name in only if name not in names]
    if unknown:
        _fail(
            f"No transcript named {', '.join(unknown)}; the transcripts are: "
            f"{', '.join(sorted(names))}."
        )
    return [t for t in transcripts if t.name in only]


@app.command()
def server(
    url: Annotated[
        str, typer.Argument(help="WebSocket URL of the server under test (ws:// or wss://).")
    ],
    admin_url: Annotated[
        str,
        typer.Option("--admin-url", envvar="HOOMI_ADMIN_URL", help="The server's admin API."),
    ] = "http://127.0.0.1:8766",
    admin_token: Annotated[
        str | None,
        typer.Option("--admin-token", envvar="HOOMI_ADMIN_TOKEN", help="The admin API's token."),
    ] = None,
    jwt_secret: Annotated[
        str | None,
        typer.Option(
            "--jwt-secret",
            envvar="HOOMI_JWT_SECRET",
            help="The server's HS256 secret: the kit mints every token itself. Without it, "
            "tokens come from the admin API (a server with --mint-tokens or --dev) and "
            "transcripts that need special tokens are skipped.",
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only this transcript (repeatable).", metavar="NAME"),
    ] = None,
    allow_drain: Annotated[
        bool,
        typer.Option(
            "--allow-drain",
            help="Also run transcripts that drain (shut down) the server, last.",
        ),
    ] = False,
    timeout_ms: Annotated[
        int,
        typer.Option("--timeout-ms", min=1, help="How long an expectation waits, in ms."),
    ] = 5000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    junit: Annotated[
        pathlib.Path | None,
        typer.Option("--junit", help="Also write JUnit XML to this file.", dir_okay=False),
    ] = None,
) -> None:
    """Run the spec's transcripts against a running server; exit 1 if any fails."""
    if not url.startswith(("ws://", "wss://")):
        _fail(f"{url} is not a WebSocket URL: give ws://HOST:PORT/ or wss://HOST:PORT/.")
    if not admin_token:
        _fail(
            "The conformance kit needs the admin API: pass --admin-token or set HOOMI_ADMIN_TOKEN."
        )
    transcripts = _chosen(only)
    try:
        results = trio.run(
            _run_server,
            url,
            admin_url,
            admin_token,
            jwt_secret,
            transcripts,
            allow_drain,
            timeout_ms,
        )
    except ServerUnusable as unusable:
        _fail(str(unusable))
    except KeyboardInterrupt:
        _fail("Interrupted: no report.", 130)
    if junit is not None:
        try:
            junit.write_text(junit_xml(results, url), encoding="utf-8")
        except OSError as error:
            _fail(f"Cannot write the JUnit file {junit}: {error.strerror}.")
    if as_json:
        typer.echo(orjson.dumps(to_json(results, url), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_report(results, f"Hoomi server conformance of {url}", "transcript")
    if any(r.outcome is Outcome.FAILED for r in results):
        raise typer.Exit(1)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # a bar in a log file is noise
    )


async def _run_server(
    url: str,
    admin_url: str,
    admin_token: str,
    jwt_secret: str | None,
    transcripts: list[Transcript],
    allow_drain: bool,
    timeout_ms: int,
) -> list[Result]:
    progress = _progress()
    with progress:
        task = progress.add_task(f"connecting to {url}", total=len(transcripts))
        async with admin_backend(url, admin_url, admin_token, jwt_secret=jwt_secret) as backend:
            return await run_suite(
                transcripts,
                backend,
                shared=True,
                allow_drain=allow_drain,
                timeout_ms=timeout_ms,
                on_start=lambda t: progress.update(task, description=t.name),
                on_result=lambda r: progress.advance(task),
            )


def _print_report(results: list[Result], title: str, unit: str) -> None:
    """A table per requirement id, a line per failure, a summary line (`unit`: what ran)."""
    tally = counts(results)
    table = Table(title=Text(f"{title}, per requirement"), title_justify="left", show_lines=True)
    table.add_column("requirement", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column(f"{unit}s")
    for verdict in verdicts(results):
        lines = Text()
        if verdict.passed:
            lines.append(f"passed: {', '.join(verdict.passed)}\n", style="green")
        for name, why in verdict.failed:
            lines.append(f"failed: {name}: {why}\n", style="red")
        for name, why in verdict.skipped:
            lines.append(f"skipped: {name}: {why}\n", style="yellow")
        lines.rstrip()
        style = _STYLE[verdict.outcome]
        table.add_row(verdict.requirement, Text(verdict.outcome.value, style=style), lines)
    console.print(table)
    failed = [r for r in results if r.outcome is Outcome.FAILED]
    for result in failed:
        ids = ", ".join(result.failed_requirements)
        line = Text.assemble(("FAILED", "red"), f" {result.name} ({ids}): ")
        console.print(line.append(failure_reason(result)), highlight=False)
    summary = (
        f"{plural(len(results), unit)}: {tally['passed']} passed, "
        f"{tally['failed']} failed, "
        f"{tally['skipped']} skipped."
    )
    console.print(summary, style="red" if failed else "green", highlight=False)


# -- client -------------------------------------------------------------------------------


def _chosen_scenarios(only: list[str] | None) -> list[ScenarioSpec]:
    specs = scenarios()
    if not only:
        return specs
    names = [spec.name for spec in specs]
    unknown = [name for name in only if name not in names]
    if unknown:
        _fail(f"No scenario named {', '.join(unknown)}; the scenarios are: {', '.join(names)}.")
    return [spec for spec in specs if spec.name in only]


def _check_command(command: Sequence[str]) -> None:
    """One sentence and exit 2 unless `command` names something that can be started."""
    example = "e.g. hoomi-conformance client -- python -m hoomi.client.adapter"
    if not command:
        _fail(f"Give the command that starts your adapter after --, {example}.")
    program = command[0]
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            _fail(f"Cannot start the adapter: {program} is not an executable file.")
    elif shutil.which(program) is None:
        _fail(f"Cannot start the adapter: no command named {program} on PATH ({example}).")


@app.command(context_settings={"ignore_unknown_options": True})
def client(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="The command that starts the adapter of the client under test (after --); "
            "the kit starts it once per scenario and drives it over the control protocol "
            "of spec/v1/client-kit.",
            show_default=False,
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only this scenario (repeatable).", metavar="NAME"),
    ] = None,
    timeout_scale: Annotated[
        float,
        typer.Option(
            "--timeout-scale",
            min=0.1,
            max=100.0,
            help="Multiply every wait by this (a slow machine or client); bounds the spec "
            "sets as minimums stay as they are.",
        ),
    ] = 1.0,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=64, help="Scenarios run at once.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    junit: Annotated[
        pathlib.Path | None,
        typer.Option("--junit", help="Also write JUnit XML to this file.", dir_okay=False),
    ] = None,
) -> None:
    """Run the client kit's scenarios against an adapter command; exit 1 if any fails."""
    argv = list(command or [])
    _check_command(argv)
    specs = _chosen_scenarios(only)
    label = shlex.join(argv)
    try:
        results = trio.run(_run_client, argv, specs, timeout_scale, jobs)
    except KeyboardInterrupt:
        _fail("Interrupted: no report.", 130)
    if junit is not None:
        try:
            junit.write_text(junit_xml(results, label, kind="client"), encoding="utf-8")
        except OSError as error:
            _fail(f"Cannot write the JUnit file {junit}: {error.strerror}.")
    if as_json:
        report = to_json(results, label, kind="client", unit="scenarios")
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_report(results, f"Hoomi client conformance of {label}", "scenario")
    if any(r.outcome is Outcome.FAILED for r in results):
        raise typer.Exit(1)


async def _run_client(
    argv: list[str], specs: list[ScenarioSpec], scale: float, jobs: int
) -> list[Result]:
    progress = _progress()
    with progress:
        task = progress.add_task("starting", total=len(specs))
        return await run_kit(
            specs,
            argv,
            scale=scale,
            jobs=jobs,
            on_start=lambda spec: progress.update(task, description=spec.name),
            on_result=lambda result: progress.advance(task),
        )
