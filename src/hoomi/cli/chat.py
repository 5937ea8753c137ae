"""``hoomi chat USER``: a small terminal chat on the client SDK.

Against ``hoomi serve --dev`` it needs nothing else: the dev server leaves its URLs and admin
token in ``dev.json`` beside its database (owner-only, removed when it stops), and the chat
mints its token and creates the direct conversation (``--with OTHER``) through the admin
API. Elsewhere, give ``--url`` and ``--token`` (a JWT from your backend).

Input is read a line at a time: a line is sent as a message (after a `typing` so the others
see it), ``/who`` asks who is online, ``/quit`` (or end of input) leaves. Messages, typing,
presence, receipts and the connection's state are printed as they come.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Annotated, Any

import httpx
import trio
import typer
from rich.console import Console
from rich.markup import escape

from hoomi.client import (
    ClientClosed,
    ClientError,
    ClientState,
    RequestFailed,
    StateChanged,
    connect,
)
from hoomi.client.client import Client
from hoomi.protocol import messages as m
from hoomi.server.config import default_database

console = Console(highlight=False)

DEV_FILE = "dev.json"


def dev_file(database: str | None = None) -> pathlib.Path:
    """Where `hoomi serve --dev` leaves its URLs and admin token: beside its database."""
    return pathlib.Path(database or default_database()).parent / DEV_FILE


class ChatError(Exception):
    """One sentence for the user, saying what to do."""


def chat(
    user: Annotated[str, typer.Argument(help="Who you are (the token's user id).")],
    with_: Annotated[
        str | None,
        typer.Option("--with", help="Chat with this user (a direct conversation, created if new)."),
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", envvar="HOOMI_URL", help="The server's ws:// URL.")
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", envvar="HOOMI_TOKEN", help="Your JWT.")
    ] = None,
    admin_url: Annotated[
        str | None, typer.Option("--admin-url", envvar="HOOMI_ADMIN_URL", help="Admin API URL.")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option("--admin-token", envvar="HOOMI_ADMIN_TOKEN", help="Admin API token."),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            envvar="HOOMI_DATABASE",
            help="The dev server's database (its dev.json is found beside it).",
        ),
    ] = None,
) -> None:
    """Chat in the terminal: messages, typing and presence live; type a line to send it."""
    dev = _read_dev(dev_file(database))
    url = url or dev.get("url")
    admin_url = admin_url or dev.get("admin_url")
    admin_token = admin_token or dev.get("admin_token")
    try:
        if url is None:
            raise ChatError(
                "No server to talk to: start `hoomi serve --dev` (it tells this chat where it "
                "is), or give --url."
            )
        trio.run(_chat, user, with_, url, token, admin_url, admin_token)
    except ValueError as error:  # e.g. not a ws:// URL
        console.print(f"[red]Error:[/red] {escape(str(error))}.")
        raise typer.Exit(2) from None
    except ChatError as error:
        console.print(f"[red]Error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    except ClientClosed as closed:
        console.print(
            f"[red]Error:[/red] the server refused the connection: {escape(closed.reason)}"
        )
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _read_dev(path: pathlib.Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


async def _admin(admin_url: str | None, admin_token: str | None, path: str, body: Any) -> Any:
    if not admin_url or not admin_token:
        raise ChatError(
            "Without --token this chat needs the admin API to mint one: start `hoomi serve "
            "--dev`, or give --admin-url and --admin-token (or --token)."
        )
    try:
        async with httpx.AsyncClient(base_url=admin_url, timeout=10) as api:
            response = await api.post(
                path, json=body, headers={"Authorization": f"Bearer {admin_token}"}
            )
    except httpx.HTTPError as error:
        raise ChatError(f"Cannot reach the admin API at {admin_url}: {error}.") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("message", response.text)
        except ValueError:
            detail = response.text
        raise ChatError(f"The admin API refused {path}: {detail}")
    return response.json()


async def _chat(
    user: str,
    other: str | None,
    url: str,
    token: str | None,
    admin_url: str | None,
    admin_token: str | None,
) -> None:
    if token is None:
        token = str(
            (await _admin(admin_url, admin_token, "/v1/tokens", {"user_id": user}))["token"]
        )
    wanted = None
    if other is not None:
        body = {"kind": "direct", "members": [user, other]}
        created = await _admin(admin_url, admin_token, "/v1/conversations", body)
        wanted = str(created["conversation_id"])
    async with connect(url, token=token) as client:
        cid = _pick(client, wanted)
        conversation = client.conversations[cid]
        others = [u for u in conversation.members if u != user]
        console.print(
            f"[bold]{escape(user)}[/bold] in {escape(conversation.title or ', '.join(others))}"
            f" ({cid}). Type a line to send it; /who, /quit."
        )
        page = await client.history(cid, limit=20)
        for message in page.messages:
            _show_message(message, user)
        async with trio.open_nursery() as nursery:
            seen = _Seen()
            nursery.start_soon(_mark_read, client, cid, seen)
            nursery.start_soon(_show_events, client, cid, user, seen, nursery.cancel_scope)
            await _read_input(client, cid)
            nursery.cancel_scope.cancel()


def _pick(client: Client, wanted: str | None) -> str:
    if wanted is not None:
        return wanted
    if not client.conversations:
        raise ChatError("You are in no conversation yet: start one with --with OTHER_USER.")
    if len(client.conversations) == 1:
        return next(iter(client.conversations))
    names = ", ".join(
        f"{c.conversation_id} ({'/'.join(c.members)})" for c in client.conversations.values()
    )
    raise ChatError(f"You are in several conversations; pick one with --with USER: {names}.")


def _show_message(message: m.ChatMessage, me: str) -> None:
    who = "you" if message.sender_id == me else message.sender_id
    style = "cyan" if message.sender_id == me else "green"
    console.print(f"[{style}]{escape(who)}[/{style}]: {escape(message.text)}")


class _Seen:
    """The newest seq shown, for the read marker (one `read` however many were shown)."""

    def __init__(self) -> None:
        self.seq = 0
        self.changed = trio.Event()


async def _mark_read(client: Client, cid: str, seen: _Seen) -> None:
    marked = 0
    while True:
        await seen.changed.wait()
        seen.changed = trio.Event()
        if seen.seq > marked:
            marked = seen.seq
            try:
                await client.read(cid, marked)
            except (RequestFailed, ClientClosed):
                return


async def _show_events(
    client: Client, cid: str, me: str, seen: _Seen, done: trio.CancelScope
) -> None:
    async for event in client.events():
        if isinstance(event, m.ChatMessage):
            if event.conversation_id == cid:
                _show_message(event, me)
                if event.sender_id != me:
                    seen.seq = event.seq
                    seen.changed.set()
            else:
                console.print(f"[dim](a new message in {event.conversation_id})[/dim]")
        elif isinstance(event, m.UserTyping) and event.conversation_id == cid:
            doing = "is typing…" if event.active else "stopped typing"
            console.print(f"[dim]{escape(event.user_id)} {doing}[/dim]")
        elif isinstance(event, m.Presence):
            console.print(f"[dim]{escape(event.user_id)} is {event.status}[/dim]")
        elif isinstance(event, m.Receipt) and event.conversation_id == cid and event.user_id != me:
            console.print(f"[dim]{escape(event.user_id)} read up to #{event.seq}[/dim]")
        elif isinstance(event, StateChanged):
            _show_state(event)
        elif isinstance(event, ClientError):
            console.print(f"[red]{escape(event.code)}: {escape(event.message)}[/red]")
    done.cancel()  # the client closed for good: so does the chat, input or not


def _show_state(change: StateChanged) -> None:
    if change.state is ClientState.LIVE:
        console.print("[dim]connected[/dim]")
    elif change.state is ClientState.BACKOFF:
        retry = f", retrying in {change.retry_in_s:.1f} s" if change.retry_in_s is not None else ""
        console.print(f"[yellow]connection lost ({escape(change.reason)}){retry}[/yellow]")
    elif change.state is ClientState.CLOSED:
        console.print(f"[red]closed: {escape(change.reason)}[/red]")


async def _read_input(client: Client, cid: str) -> None:
    while True:
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line or line.strip() == "/quit":
            return
        text = line.rstrip("\n")
        try:
            if text.strip() == "/who":
                members = [u for u in client.conversations[cid].members if u != client.user_id]
                for state in await client.presence(members):
                    console.print(f"[dim]{escape(state.user_id)} is {state.status}[/dim]")
            elif text.strip():
                await client.typing(cid, True)
                await client.send(cid, text)
        except RequestFailed as failed:
            console.print(f"[red]not sent: {escape(failed.message)}[/red]")
        except ClientClosed:
            return
