"""``hoomi``: the server's command (``serve`` arrives with the server itself)."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.console import Console

from hoomi import __version__
from hoomi.protocol import SPEC_VERSION, SUBPROTOCOL
from hoomi.protocol.spec import spec_dir

app = typer.Typer(
    help="Hoomi Realtime: a spec-first, real-time messaging server.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.callback()
def _main() -> None:
    """Hoomi Realtime: a spec-first, real-time messaging server."""


@app.command()
def version(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print the server version, the protocol spec version and where the spec lives."""
    info = {
        "hoomi": __version__,
        "spec_version": SPEC_VERSION,
        "subprotocol": SUBPROTOCOL,
        "spec_dir": str(spec_dir()),
    }
    if as_json:
        typer.echo(orjson.dumps(info).decode())
        return
    console.print(
        f"hoomi {info['hoomi']}  spec {info['spec_version']}  "
        f"subprotocol {info['subprotocol']}  spec files: {info['spec_dir']}"
    )
