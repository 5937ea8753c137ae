"""``hoomi serve``: run one node with the embedded defaults (SQLite, in-process fan-out).

Every field of `hoomi.server.config.Settings` is an option (``--max-frame-bytes``), an
environment variable (``HOOMI_MAX_FRAME_BYTES``) and a key of the ``--config`` TOML file;
the options are generated from the settings class so that none can be forgotten.
"""

from __future__ import annotations

import errno
import gc
import inspect
import json
import os
import pathlib
import secrets
import signal
import socket
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import attrs
import trio
import typer
from rich.console import Console
from rich.markup import escape

from hoomi.cli.chat import dev_file
from hoomi.server import logs
from hoomi.server.admin import serve_admin
from hoomi.server.auth import TokenVerifier, load_public_keys
from hoomi.server.config import FIELDS, ConfigError, Settings, load, tls_context
from hoomi.server.fanout import LocalFanout
from hoomi.server.server import Server
from hoomi.server.sqlite_store import SqliteStore

console = Console(stderr=True)
E = TypeVar("E", bound=BaseException)
T = TypeVar("T")


def _option_type(field: attrs.Attribute[Any]) -> Any:
    """The CLI type of a setting: its own type made optional (None means "not given")."""
    hint = typing.get_type_hints(Settings)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return list[str] | None
    if typing.get_origin(hint) is typing.Literal:
        return str | None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return args[0] | None
    return hint | None


def _settings_parameters() -> list[inspect.Parameter]:
    parameters = []
    for name, field in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        option = typer.Option(
            flag,
            envvar=f"HOOMI_{name.upper()}",
            help=field.metadata.get("help", ""),
            show_default=False,
        )
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[_option_type(field), option],
            )
        )
    return parameters


def serve(
    config: Annotated[
        pathlib.Path | None, typer.Option("--config", help="TOML file with settings.")
    ] = None,
    dev: Annotated[
        bool,
        typer.Option("--dev", help="Development: a throwaway HS256 secret, any Origin allowed."),
    ] = False,
    **options: Any,
) -> None:
    """Run the Hoomi server until SIGTERM or SIGINT, then shut down gracefully."""
    overrides = {name: value for name, value in options.items() if value not in (None, [])}
    if dev:
        overrides.setdefault("jwt_secret", secrets.token_urlsafe(32))
        overrides.setdefault("allowed_origin", ["*"])
        overrides.setdefault("admin_token", secrets.token_urlsafe(24))
        overrides.setdefault("mint_tokens", True)
    try:
        settings = load(config, overrides)
        verifier = _verifier(settings)
        tls_context(settings)  # refuse a bad file now, not from inside the running server
    except ConfigError as error:
        # Escaped and unwrapped: a path in the sentence must come out whole ("[x]" is markup).
        console.print(f"[red]Error:[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    pathlib.Path(settings.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        trio.run(_run, settings, verifier, dev)
    except (CannotListen, OSError, BaseExceptionGroup) as failure:
        # A listener that cannot bind fails inside a nursery: look into the group.
        cannot_listen = _found(failure, CannotListen)
        if cannot_listen is not None:
            console.print(f"[red]Error:[/red] {cannot_listen}", soft_wrap=True)
            raise typer.Exit(1) from None
        bind_error = _found(failure, OSError)
        if bind_error is None:
            raise
        console.print(
            f"[red]Error:[/red] cannot serve: {bind_error.strerror or bind_error} (WebSocket "
            f"{settings.host}:{settings.port}, admin API {settings.admin_host}:"
            f"{settings.admin_port})."
        )
        raise typer.Exit(1) from None


class CannotListen(Exception):
    """A listener could not bind its address: one sentence naming it and what to do."""


def _found(failure: BaseException, kind: type[E]) -> E | None:
    """`failure` if it is a `kind`, else the first `kind` in its exception group."""
    if isinstance(failure, kind):
        return failure
    if isinstance(failure, BaseExceptionGroup):
        for inner in failure.exceptions:
            found = _found(inner, kind)
            if found is not None:
                return found
    return None


async def _listening(start: Awaitable[T], what: str, host: str, port: int, flags: str) -> T:
    """`start`'s value (a `nursery.start` of a listener); its failure to bind becomes
    `CannotListen`, saying what to change (`flags`: "" or "admin-", the options' prefix).
    Other errors (an unreadable TLS certificate) pass."""
    try:
        return await start
    except (OSError, BaseExceptionGroup) as failure:
        error = _found(failure, OSError)
        if error is None:
            raise
        if error.errno == errno.EADDRINUSE:
            todo = f"stop what uses that port or choose another with --{flags}port"
        elif error.errno == errno.EADDRNOTAVAIL or isinstance(error, socket.gaierror):
            todo = f"give --{flags}host an address of this machine"
        else:
            raise
        raise CannotListen(
            f"cannot listen for {what} on {_host(host)}:{port}: {error.strerror}; {todo}."
        ) from None


def _verifier(settings: Settings) -> TokenVerifier:
    pems = []
    for path in settings.jwt_public_key:
        try:
            pems.append(pathlib.Path(path).read_bytes())
        except OSError as error:
            raise ConfigError(f"Cannot read public key {path}: {error.strerror}.") from None
    try:
        keys = load_public_keys(pems)
    except ValueError as error:
        raise ConfigError(f"Bad public key: {error}.") from None
    try:
        return TokenVerifier(
            hs256_secret=settings.jwt_secret,
            public_keys=keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
        )
    except ValueError as error:
        raise ConfigError(f"Bad jwt_secret: {error}.") from None


def tune_gc() -> None:
    """The collector policy of a server process (ADR 7).

    Sessions are long-lived and leave no reference cycles, so full collections mostly
    re-scan the same live objects: at 10k sessions one took 0.3-0.8 s, stalling every
    connection. After each full collection, what it found alive is frozen (moved out of
    the collector's view), so every object is scanned by at most one full collection;
    objects freed by reference counting are freed whether frozen or not. A larger young
    generation lets fewer short-lived objects survive into the old ones.

    Called once the server is up, it also collects (and so freezes) what start-up left:
    modules, schemas, the codec's warm-up, the admin app (that collection took 40-44 ms in
    `hoomi serve` here), which the first full collection under load would otherwise scan.
    """
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
    gc.set_threshold(20_000, 20, 20)
    gc.collect()


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


async def _run(settings: Settings, verifier: TokenVerifier, dev: bool) -> None:
    store = SqliteStore(
        settings.database,
        synchronous=settings.sqlite_synchronous,
        commit_window_ms=settings.sqlite_commit_window_ms,
    )
    await store.open()
    written: pathlib.Path | None = None
    try:
        server = Server(settings, store, LocalFanout(), verifier)
        async with trio.open_nursery() as nursery:
            await _listening(
                nursery.start(server.serve),
                "WebSocket connections",
                settings.host,
                settings.port,
                "",
            )
            admin_port = await _listening(
                nursery.start(serve_admin, server),
                "the admin API",
                settings.admin_host,
                settings.admin_port,
                "admin-",
            )
            tune_gc()  # start-up is done: the codec warmed up, both listeners bound
            if dev:  # before the announcements: once they are out, `hoomi chat` finds it
                written = _write_dev_file(settings, server, admin_port)
            _announce(settings, server, dev)
            _announce_admin(settings, admin_port, dev)
            nursery.start_soon(_stop_on_signal, server)
            await server.wait_stopped()
            nursery.cancel_scope.cancel()
    finally:
        if written is not None:
            written.unlink(missing_ok=True)
        with trio.CancelScope(shield=True):
            await store.aclose()
    console.print("Stopped: every session closed, the store is closed.")


async def _stop_on_signal(server: Server) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            deadline = server.settings.drain_timeout_ms
            console.print(f"{signal.Signals(signum).name}: draining (up to {deadline} ms)…")
            server.shutdown()
            return


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _write_dev_file(settings: Settings, server: Server, admin_port: int) -> pathlib.Path:
    """Leave the dev server's URLs and admin token beside its database, readable by its
    owner only, for `hoomi chat` (removed when the server stops)."""
    path = dev_file(settings.database)
    info = {
        "url": f"ws://{_host(settings.host)}:{server.ports[0]}{settings.path}",
        "admin_url": f"http://{_host(settings.admin_host)}:{admin_port}",
        "admin_token": settings.admin_token,
    }
    path.unlink(missing_ok=True)  # a stale one may have other permissions
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(info, file)
    return path


def _announce(settings: Settings, server: Server, dev: bool) -> None:
    scheme = "wss" if settings.tls_cert else "ws"
    for port in server.ports:
        url = f"{scheme}://{settings.host}:{port}{settings.path}"
        console.print(f"Hoomi listening on {url} (subprotocol hoomi.v1)")
    console.print(f"Database: {settings.database}")
    if dev:
        console.print(
            "[yellow]Development mode[/yellow]: throwaway token secret, any Origin allowed. "
            "A token for user alice:\n"
            f"  hoomi token alice --secret {settings.jwt_secret}"
        )
    else:
        console.print(
            "Tokens: JWTs from your backend (or `hoomi token USER --secret …` for HS256)."
        )


def _announce_admin(settings: Settings, port: int, dev: bool) -> None:
    host = settings.admin_host
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    if not settings.admin_token:
        console.print(
            f"Admin API on {url}: only /healthz /readyz /metrics answer "
            "(set --admin-token or HOOMI_ADMIN_TOKEN to enable /v1)."
        )
        return
    console.print(f"Admin API on {url} (Bearer token required for /v1)")
    if dev:
        # soft_wrap: the command must stay on one line to be copied.
        console.print(
            f"  admin token: {settings.admin_token}\n"
            f"  HOOMI_ADMIN_URL={url} HOOMI_ADMIN_TOKEN={settings.admin_token} "
            "hoomi-admin sessions list\n"
            "  chat: hoomi chat alice --with bob   (another terminal: hoomi chat bob --with alice)",
            soft_wrap=True,
        )


serve.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [p for p in inspect.signature(serve).parameters.values() if p.kind is not p.VAR_KEYWORD]
    + _settings_parameters()
)


def register(app: typer.Typer, command: Callable[..., Any] = serve) -> None:
    app.command(name="serve", context_settings={"max_content_width": 100})(command)
