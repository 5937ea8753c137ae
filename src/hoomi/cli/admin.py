"""``hoomi-admin``: inspect and manage a running Hoomi server through its admin API.

One sub-app per noun (``sessions``, ``conversations``, ``token``) plus ``stats``, ``drain``
and ``health``. Every command prints a table (or a line) by default and the API's JSON with
``--json``. Failures are one sentence on stderr that says what to do next, never a traceback:

- the API cannot be reached, or the admin token is missing or refused: exit 2;
- the API refuses the request (not found, bad request, ...): exit 1;
- bad arguments: Typer's usage error, exit 2.

The CLI is synchronous (httpx's sync client, every request bounded by ``--http-timeout``);
``sessions watch`` streams the API's server-sent events.

Output goes through the module-level ``console`` (and errors through ``err_console``), so
tests and embedding code can swap them.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import quote

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .render import age, ago, client_label, clock, details, now_ms, plural, span, sse_events, text

DEFAULT_URL = "http://127.0.0.1:8766"

app = typer.Typer(
    help="Operate a running Hoomi server: live sessions, stats, conversations, tokens, drain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sessions_app = typer.Typer(
    help="Live WebSocket sessions: list, show, kick, watch.", no_args_is_help=True
)
conversations_app = typer.Typer(
    help="Conversations: list, show, create, manage members, post system messages.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="User tokens for development and tests.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")
app.add_typer(conversations_app, name="conversations")
app.add_typer(token_app, name="token")

console = Console()
err_console = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON (for scripts).")]


# -- talking to the API -------------------------------------------------------------------


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one sentence on stderr and exit with `code`."""
    err_console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class AdminApi:
    """A thin sync client of the admin API that turns every failure into `fail`."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | None] | None = None,
        body: Mapping[str, object | None] | None = None,
        missing: str | None = None,
        accept: Iterable[int] = (),
    ) -> Any:
        """The JSON body of a successful answer (2xx, or a status in `accept`). `missing`
        names what a 404 means ("Session s_1")."""
        try:
            response = self.http.request(
                method,
                path,
                params=_drop_none(params or {}),
                json=_drop_none(body) if body is not None else None,
            )
        except httpx.TransportError as error:
            self.unreachable(error)
        if not (response.is_success or response.status_code in set(accept)):
            self.refused(response, missing)
        return self.body(response)

    def unreachable(self, error: httpx.TransportError) -> NoReturn:
        if isinstance(error, httpx.TimeoutException):
            fail(
                f"The Hoomi admin API at {self.url} did not answer within {self.timeout:g}s. "
                "Is the server overloaded, or is --url pointing at something else?",
                2,
            )
        reason = str(error) or type(error).__name__
        fail(
            f"Cannot reach the Hoomi admin API at {self.url}: {reason}. "
            "Is `hoomi serve` running, and is --url right?",
            2,
        )

    def refused(self, response: httpx.Response, missing: str | None) -> NoReturn:
        status = response.status_code
        message = _error_message(response)
        if status == 401:
            if _error_code(response) == "admin_disabled" and message:
                fail(message, 2)  # the server has no admin token: no token can help
            if not self.token:
                fail("The admin API needs a token: pass --token or set HOOMI_ADMIN_TOKEN.", 2)
            fail("The admin token was refused: pass --token or set HOOMI_ADMIN_TOKEN.", 2)
        if status == 404:
            if missing is not None:
                fail(f"{missing} not found.")
            fail(
                message
                or f"The admin API at {self.url} has no {response.request.url.path}: "
                "is --url pointing at the Hoomi admin API?"
            )
        fail(message or f"The admin API at {self.url} answered HTTP {status}.")

    def body(self, response: httpx.Response) -> Any:
        try:
            return orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            fail(
                f"The admin API at {self.url} answered something that is not JSON: "
                "is --url pointing at the Hoomi admin API?"
            )


V = TypeVar("V")


def _drop_none(values: Mapping[str, V | None]) -> dict[str, V]:
    return {key: value for key, value in values.items() if value is not None}


def _error_code(response: httpx.Response) -> str | None:
    """The code of the API's error envelope, if any."""
    try:
        envelope = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    error = envelope.get("error") if isinstance(envelope, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _error_message(response: httpx.Response) -> str | None:
    """The message of the API's error envelope {"error": {"code", "message"}}, if any."""
    try:
        envelope = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    error = envelope.get("error") if isinstance(envelope, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        return sentence(str(error["message"]))
    return None


def sentence(message: str) -> str:
    """The API's messages as sentences: a capital first letter and a full stop."""
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


def api(ctx: typer.Context) -> AdminApi:
    """The client that the top-level callback made for this run."""
    root = ctx.find_root()
    if not isinstance(root.obj, AdminApi):  # pragma: no cover - the callback always runs
        fail("Internal error: hoomi-admin was started without its API client.")
    return root.obj


def segment(value: str) -> str:
    """An id as one URL path segment (ids may hold characters such as '/' or '?')."""
    return quote(value, safe="")


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{url!r} is not an http:// or https:// URL.")
    return url


@app.callback()
def _main(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="HOOMI_ADMIN_URL",
            callback=_check_url,
            help="Base URL of the server's admin API.",
        ),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="HOOMI_ADMIN_TOKEN", help="The admin API's token."),
    ] = None,
    http_timeout: Annotated[
        float,
        typer.Option("--http-timeout", min=0.1, help="Seconds to wait for each API answer."),
    ] = 10.0,
) -> None:
    """Operate a running Hoomi server: live sessions, stats, conversations, tokens, drain."""
    client = AdminApi(url, token, http_timeout)
    ctx.call_on_close(client.close)
    ctx.obj = client


def print_json(data: object) -> None:
    console.out(orjson.dumps(data).decode(), highlight=False)


# -- sessions -----------------------------------------------------------------------------


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's sessions.")] = None,
    conversation: Annotated[
        str | None,
        typer.Option("--conversation", help="Only sessions subscribed to this conversation."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List live sessions: who is connected, from where, and how busy they are."""
    data = api(ctx).call("GET", "/v1/sessions", params={"user": user, "conversation": conversation})
    if as_json:
        print_json(data)
        return
    sessions: list[dict[str, Any]] = data.get("sessions", [])
    if not sessions:
        filters = " and ".join(
            f"{name} {value}"
            for name, value in (("user", user), ("conversation", conversation))
            if value
        )
        console.print(f"No live sessions{' for ' + filters if filters else ''}.", markup=False)
        return
    now = now_ms()
    # Compact enough for 80 columns: ages without "ago", long cells wrap rather than vanish.
    table = Table(
        title=plural(len(sessions), "live session"),
        title_justify="left",
        box=None,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        header_style="bold underline",
        caption="up: connected for; idle: since the client last sent anything",
        caption_justify="left",
    )
    table.add_column("session", no_wrap=True)
    table.add_column("user", no_wrap=True, style="bold")
    table.add_column("state", no_wrap=True)
    table.add_column("client")
    table.add_column("remote", no_wrap=True)
    table.add_column("up", no_wrap=True)
    table.add_column("idle", no_wrap=True)
    table.add_column("queue", justify="right")
    table.add_column("in/out", justify="right")
    for s in sessions:
        table.add_row(
            text(s.get("session_id")),
            text(s.get("user_id")),
            text(s.get("state")),
            client_label(s.get("client")),
            text(s.get("remote")),
            age(s.get("connected_at"), now),
            age(s.get("last_activity"), now),
            text(s.get("outbox_depth")),
            f"{s.get('messages_in', 0)}/{s.get('messages_out', 0)}",
        )
    console.print(table)


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session id (from `sessions list`).")],
    as_json: JsonFlag = False,
) -> None:
    """Show one session in detail, with its position (last seq) in each conversation."""
    s = api(ctx).call("GET", f"/v1/sessions/{segment(session_id)}", missing=f"Session {session_id}")
    if as_json:
        print_json(s)
        return
    now = now_ms()
    last_seq: dict[str, Any] = s.get("last_seq") or {}
    positions = ", ".join(f"{cid} @ {seq}" for cid, seq in last_seq.items())
    console.print(
        details(
            f"Session {session_id}",
            [
                ("user", s.get("user_id")),
                ("state", s.get("state")),
                ("client", client_label(s.get("client"))),
                ("protocol", s.get("protocol")),
                ("remote", s.get("remote")),
                ("connected", ago(s.get("connected_at"), now)),
                ("last active", ago(s.get("last_activity"), now)),
                ("outbox depth", s.get("outbox_depth")),
                ("messages in", s.get("messages_in")),
                ("messages out", s.get("messages_out")),
                ("conversations", s.get("conversations")),
                ("last seq", positions or "-"),
            ],
        )
    )


@sessions_app.command("kick")
def sessions_kick(
    ctx: typer.Context,
    session_id: Annotated[
        str | None, typer.Argument(help="The session to close (or use --user).")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Close every session of this user instead.")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; logged and sent in the close frame.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Close a session (or all of a user's sessions) with the `kicked` close code (4004)."""
    if (session_id is None) == (user is None):
        raise typer.BadParameter(
            "give a session id to kick one session, or --user USER to kick all of a user's "
            "sessions (not both).",
            param_hint="'SESSION_ID' / '--user'",
        )
    if session_id is not None:
        path, missing = f"/v1/sessions/{segment(session_id)}/kick", f"Session {session_id}"
    else:
        path, missing = f"/v1/users/{segment(str(user))}/kick", f"User {user}"
    data = api(ctx).call("POST", path, body={"reason": reason}, missing=missing)
    if as_json:
        print_json(data)
        return
    kicked: list[str] = data.get("kicked", [])
    if not kicked:
        console.print(f"User {user} has no live sessions; nothing was kicked.", markup=False)
        return
    whose = f" of {user}" if user is not None else ""
    console.print(
        f"Kicked {plural(len(kicked), 'session')}{whose} (close 4004): {', '.join(kicked)}",
        markup=False,
        highlight=False,
    )


WATCH_STYLES = {"connect": "green", "ready": "cyan", "disconnect": "yellow", "kick": "red"}


def watch_line(kind: str, event: dict[str, Any]) -> Text:
    session: dict[str, Any] = event.get("session") or {}
    line = Text.assemble(
        (clock(event.get("at")), "dim"),
        "  ",
        (f"{kind:<10}", WATCH_STYLES.get(kind, "bold")),
        " ",
        (text(session.get("session_id")), ""),
        "  ",
        (f"{text(session.get('user_id')):<12}", "bold"),
        " ",
        (f"{text(session.get('state')):<14}", "dim"),
        " ",
        f"{text(session.get('remote')):<21}",
        "  ",
        client_label(session.get("client")),
    )
    if event.get("reason"):
        line.append(f"  reason: {event['reason']}", style="italic")
    if event.get("dropped"):
        line.append(f"  ({event['dropped']} events dropped)", style="red")
    return line


@sessions_app.command("watch")
def sessions_watch(
    ctx: typer.Context,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop after this many events.")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.1,
            help="Stop after about this many seconds.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show connects, disconnects and kicks as they happen (Ctrl-C stops)."""
    client = api(ctx)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    # The read timeout bounds each wait for a line; with --timeout, a wait that outlasts it
    # is the end of the watch (a sync read cannot be interrupted by a shorter deadline).
    timeouts = httpx.Timeout(client.timeout, read=timeout)
    try:
        with client.http.stream("GET", "/v1/sessions/watch", timeout=timeouts) as response:
            if not response.is_success:
                response.read()
                client.refused(response, None)
            if not as_json:
                console.print(
                    f"Watching sessions at {client.url} (Ctrl-C stops)...",
                    style="dim",
                    markup=False,
                )
            for item in sse_events(response.iter_lines()):
                if item is not None:
                    kind, data = item
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        event = {"event": kind, "data": data}
                    seen += 1
                    if as_json:
                        print_json(event)
                    else:
                        console.print(watch_line(kind, event), highlight=False, soft_wrap=True)
                if count is not None and seen >= count:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
            else:
                fail(
                    "The admin API ended the event stream: the server is probably shutting "
                    "down. Run `hoomi-admin health` to check it.",
                )
    except httpx.ReadTimeout:
        pass  # --timeout passed without another line
    except httpx.TransportError as error:
        if seen or isinstance(error, httpx.RemoteProtocolError):
            fail(
                "The admin API ended the event stream: the server is probably shutting "
                "down. Run `hoomi-admin health` to check it.",
            )
        client.unreachable(error)
    except KeyboardInterrupt:
        pass
    if not as_json:
        console.print(f"Stopped watching after {plural(seen, 'event')}.", style="dim")


# -- stats, health, drain -----------------------------------------------------------------


def _rate(value: object) -> str:
    return f"{value:.1f}/s" if isinstance(value, int | float) else "-"


def _ms(value: object) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "-"


@app.command()
def stats(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show server-wide numbers: connections, users online, message rates, store latency."""
    data: dict[str, Any] = api(ctx).call("GET", "/v1/stats")
    if as_json:
        print_json(data)
        return
    per_user = data.get("sessions_per_user") or {}
    latency = data.get("store_latency_ms") or {}
    mean = per_user.get("mean")
    shown = {
        "connections": data.get("connections"),
        "sessions ready": data.get("sessions_ready"),
        "users online": data.get("users_online"),
        "sessions per user": f"max {text(per_user.get('max'))}, mean "
        + (f"{mean:.1f}" if isinstance(mean, int | float) else "-"),
        "messages in": _rate(data.get("messages_in_per_s")),
        "messages out": _rate(data.get("messages_out_per_s")),
        "deliveries": _rate(data.get("deliveries_per_s")),
        "slow consumers": data.get("slow_consumers"),
        "store latency": f"p50 {_ms(latency.get('p50'))}, p99 {_ms(latency.get('p99'))}",
        "draining": "yes" if data.get("draining") else "no",
        "uptime": span(data["uptime_s"]) if isinstance(data.get("uptime_s"), int | float) else "-",
    }
    known = {
        "connections",
        "sessions_ready",
        "users_online",
        "sessions_per_user",
        "messages_in_per_s",
        "messages_out_per_s",
        "deliveries_per_s",
        "slow_consumers",
        "store_latency_ms",
        "draining",
        "uptime_s",
    }
    rows = [*shown.items(), *((k, v) for k, v in data.items() if k not in known)]
    console.print(details("Server stats", rows))


def _health(client: AdminApi) -> dict[str, Any]:
    healthz = client.call("GET", "/healthz")
    readyz = client.call("GET", "/readyz", accept=(503,))
    return {**healthz, **readyz}


@app.command()
def health(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show liveness (/healthz) and readiness (/readyz); exit 1 if the server is not ready."""
    data = _health(api(ctx))
    if as_json:
        print_json(data)
    else:
        ready = data.get("ready") is True
        console.print(
            details(
                "Server health",
                [
                    ("alive", Text("yes", "green") if data.get("status") == "ok" else "no"),
                    ("ready", Text("yes", "green") if ready else Text("no", "red")),
                    ("reasons", data.get("reasons") or "-"),
                ],
            )
        )
    if data.get("ready") is not True:
        raise typer.Exit(1)


@app.command()
def drain(
    ctx: typer.Context,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until every session has closed.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="With --wait: give up after this long.")
    ] = 30.0,
    as_json: JsonFlag = False,
) -> None:
    """Drain the server: every client is told to reconnect elsewhere.

    The server stops accepting, closes every session with going_away (1001) and turns
    /readyz not ready; the process keeps serving the admin API until it is stopped."""
    client = api(ctx)
    started: dict[str, Any] = client.call("POST", "/v1/drain")
    if not wait:
        if as_json:
            print_json(started)
        else:
            console.print(
                f"Draining: {plural(int(started.get('sessions', 0)), 'session')} told to "
                "reconnect elsewhere (close 1001). Follow it with `hoomi-admin drain --wait`.",
                markup=False,
            )
        return
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = started
    with console.status("Draining: waiting for sessions to close...") as status:
        while True:
            state = client.call("GET", "/v1/drain")
            if state.get("empty"):
                break
            left = int(state.get("sessions", 0))
            if time.monotonic() >= deadline:
                fail(
                    f"The drain did not finish within {timeout:g}s: "
                    f"{plural(left, 'session')} still open. Run `hoomi-admin drain --wait` "
                    "again, or stop the server to close them."
                )
            status.update(f"Draining: {plural(left, 'session')} still open...")
            time.sleep(0.1)
    if as_json:
        print_json(state)
        return
    readiness = client.call("GET", "/readyz", accept=(503,))
    ready = "ready" if readiness.get("ready") else "not ready"
    console.print(
        "Drained: no sessions left (empty); "
        f"/readyz reports {ready}. The server can be stopped safely.",
        markup=False,
    )


# -- conversations ------------------------------------------------------------------------


class Kind(enum.StrEnum):
    direct = "direct"
    group = "group"


def conversation_table(title: str, conv: dict[str, Any]) -> Table:
    return details(
        title,
        [
            ("id", conv.get("conversation_id")),
            ("kind", conv.get("kind")),
            ("title", conv.get("title")),
            ("members", conv.get("members")),
            ("latest seq", conv.get("latest_seq")),
            ("created", ago(conv.get("created_at"))),
        ],
    )


@conversations_app.command("list")
def conversations_list(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many per page.")
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="The `next` cursor of the previous page.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List conversations, a page at a time."""
    data = api(ctx).call("GET", "/v1/conversations", params={"limit": limit, "after": after})
    if as_json:
        print_json(data)
        return
    convs: list[dict[str, Any]] = data.get("conversations", [])
    if not convs:
        console.print("No conversations." if after is None else "No more conversations.")
        return
    now = now_ms()
    table = Table(title=plural(len(convs), "conversation"), title_justify="left")
    table.add_column("conversation", no_wrap=True)
    table.add_column("kind")
    table.add_column("title")
    table.add_column("members")
    table.add_column("latest seq", justify="right")
    table.add_column("created")
    for c in convs:
        table.add_row(
            text(c.get("conversation_id")),
            text(c.get("kind")),
            text(c.get("title")),
            text(c.get("members")),
            text(c.get("latest_seq")),
            ago(c.get("created_at"), now),
        )
    console.print(table)
    if data.get("next"):
        console.print(
            f"More: hoomi-admin conversations list --after {data['next']}",
            style="dim",
            markup=False,
        )


@conversations_app.command("show")
def conversations_show(
    ctx: typer.Context,
    conversation_id: Annotated[str, typer.Argument(help="The conversation id.")],
    as_json: JsonFlag = False,
) -> None:
    """Show one conversation: kind, title, members, latest seq."""
    conv = api(ctx).call(
        "GET",
        f"/v1/conversations/{segment(conversation_id)}",
        missing=f"Conversation {conversation_id}",
    )
    if as_json:
        print_json(conv)
        return
    console.print(conversation_table(f"Conversation {conversation_id}", conv))


@conversations_app.command("create")
def conversations_create(
    ctx: typer.Context,
    members: Annotated[list[str], typer.Argument(help="The member user ids.")],
    kind: Annotated[
        Kind, typer.Option("--kind", help="direct (exactly two members) or group.")
    ] = Kind.group,
    title: Annotated[str | None, typer.Option("--title", help="A title (groups).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a conversation; members who are online get `conversation_joined` at once."""
    conv = api(ctx).call(
        "POST",
        "/v1/conversations",
        body={"kind": kind.value, "members": members, "title": title},
    )
    if as_json:
        print_json(conv)
        return
    console.print(conversation_table(f"Created conversation {conv.get('conversation_id')}", conv))


@conversations_app.command("add-member")
def conversations_add_member(
    ctx: typer.Context,
    conversation_id: Annotated[str, typer.Argument(help="The conversation id.")],
    user: Annotated[str, typer.Argument(help="The user to add.")],
    as_json: JsonFlag = False,
) -> None:
    """Add a member; their live sessions get `conversation_joined` at once."""
    conv = api(ctx).call(
        "POST",
        f"/v1/conversations/{segment(conversation_id)}/members",
        body={"user_id": user},
        missing=f"Conversation {conversation_id}",
    )
    if as_json:
        print_json(conv)
        return
    console.print(
        f"Added {user} to {conversation_id}; members: {text(conv.get('members'))}.",
        markup=False,
    )


@conversations_app.command("remove-member")
def conversations_remove_member(
    ctx: typer.Context,
    conversation_id: Annotated[str, typer.Argument(help="The conversation id.")],
    user: Annotated[str, typer.Argument(help="The user to remove.")],
    as_json: JsonFlag = False,
) -> None:
    """Remove a member; their live sessions get `conversation_left` at once."""
    conv = api(ctx).call(
        "DELETE",
        f"/v1/conversations/{segment(conversation_id)}/members/{segment(user)}",
        missing=f"Conversation {conversation_id}",
    )
    if as_json:
        print_json(conv)
        return
    console.print(
        f"Removed {user} from {conversation_id}; members: {text(conv.get('members'))}.",
        markup=False,
    )


@conversations_app.command("post")
def conversations_post(
    ctx: typer.Context,
    conversation_id: Annotated[str, typer.Argument(help="The conversation id.")],
    message: Annotated[str, typer.Argument(help="The message text.")],
    sender: Annotated[
        str | None,
        typer.Option("--sender", help="Post as this member (default: a system message)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Post a message to a conversation; every member's sessions receive it."""
    posted = api(ctx).call(
        "POST",
        f"/v1/conversations/{segment(conversation_id)}/messages",
        body={"text": message, "sender_id": sender},
        missing=f"Conversation {conversation_id}",
    )
    if as_json:
        print_json(posted)
        return
    console.print(
        f"Posted {posted.get('kind', 'message')} message {posted.get('message_id')} to "
        f"{conversation_id} as seq {posted.get('seq')}.",
        markup=False,
    )


# -- tokens -------------------------------------------------------------------------------


@token_app.command("mint")
def token_mint(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user id (the token's `sub`).")],
    ttl: Annotated[
        int | None, typer.Option("--ttl", min=1, help="Lifetime in seconds (server default).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Mint a user token (the server must allow it: `mint_tokens`). Prints the token alone
    on stdout, so `TOKEN=$(hoomi-admin token mint alice)` works."""
    minted = api(ctx).call("POST", "/v1/tokens", body={"user_id": user, "ttl_s": ttl})
    if as_json:
        print_json(minted)
        return
    console.out(str(minted.get("token")), highlight=False)
    expires_ms = minted.get("expires_at")  # ms since the epoch, as every API time
    if isinstance(expires_ms, int | float):
        err_console.print(
            f"Token for {user}, expires in {span(round((expires_ms - now_ms()) / 1000))}.",
            style="dim",
            markup=False,
        )


if __name__ == "__main__":
    app()
