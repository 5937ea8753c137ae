"""``hoomi``: run the server (``serve``), mint development tokens, print versions."""

from __future__ import annotations

from typing import Annotated, NoReturn

import jwt
import orjson
import typer
from rich.console import Console

from hoomi import __version__
from hoomi.protocol import SPEC_VERSION, SUBPROTOCOL
from hoomi.protocol.spec import spec_dir
from hoomi.server.auth import mint_hs256

from .chat import chat
from .serve import register as register_serve

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


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="The user id (the token's `sub`).")],
    secret: Annotated[
        str,
        typer.Option("--secret", envvar="HOOMI_JWT_SECRET", help="The server's HS256 secret."),
    ],
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Lifetime in seconds.")] = 3600,
    issuer: Annotated[
        str | None,
        typer.Option("--issuer", envvar="HOOMI_JWT_ISSUER", help="The `iss` the server needs."),
    ] = None,
    audience: Annotated[
        str | None,
        typer.Option("--audience", envvar="HOOMI_JWT_AUDIENCE", help="The `aud` the server needs."),
    ] = None,
) -> None:
    """Print an HS256 user token (development and tests; production tokens come from your
    backend)."""
    if not 1 <= len(user) <= 128:
        _refuse(f"the user id must be 1-128 characters (got {len(user)}).")
    try:
        minted = mint_hs256(secret, user, ttl_s=ttl, issuer=issuer, audience=audience)
    except jwt.InvalidKeyError:
        _refuse("--secret looks like a PEM or SSH key: give the server's HS256 jwt_secret.")
    typer.echo(minted)


def _refuse(sentence: str) -> NoReturn:
    Console(stderr=True).print(f"[red]Error:[/red] {sentence}", soft_wrap=True)
    raise typer.Exit(2)


register_serve(app)
app.command(name="chat")(chat)


if __name__ == "__main__":
    app()
