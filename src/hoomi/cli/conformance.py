"""``hoomi-conformance``: check a client's (or server's) frames against protocol v1.

``frames`` reads a capture with one frame per line (JSON Lines, as a WebSocket proxy or a
client's debug log writes them) and reports, per frame, the message type or the spec error
code and JSON path that a Hoomi server would answer with.
"""

from __future__ import annotations

import enum
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from hoomi.protocol import Direction, ProtocolError, decode

app = typer.Typer(
    help="Conformance tools for Hoomi protocol v1 clients and servers.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


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
