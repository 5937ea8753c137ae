"""Rendering helpers of the command-line tools: ages and clocks for people, tables of one
object's fields, and a server-sent-events line parser. Pure functions, no I/O."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from rich.table import Table
from rich.text import Text


def now_ms() -> float:
    return time.time() * 1000


def span(seconds: float) -> str:
    """A duration for people: 42s, 3m 5s, 2h 10m, 4d 1h."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def age(at_ms: object, now: float | None = None) -> str:
    """How long ago a wall-clock time in ms was ("3s"); "-" if unknown."""
    if not isinstance(at_ms, int | float):
        return "-"
    return span(((now_ms() if now is None else now) - at_ms) / 1000)


def ago(at_ms: object, now: float | None = None) -> str:
    """A wall-clock time in ms as a relative age ("3s ago", "just now"); "-" if unknown."""
    if not isinstance(at_ms, int | float):
        return "-"
    seconds = ((now_ms() if now is None else now) - at_ms) / 1000
    return "just now" if seconds < 1 else f"{span(seconds)} ago"


def clock(at_ms: object) -> str:
    """A wall-clock time in ms as local HH:MM:SS."""
    if not isinstance(at_ms, int | float):
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(at_ms / 1000))


def client_label(client: object) -> str:
    if not isinstance(client, dict):
        return "-"
    name, version = client.get("name"), client.get("version")
    return f"{name} {version}" if version else str(name or "-")


def text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def details(title: str, rows: Iterable[tuple[str, object]]) -> Table:
    """A two-column table of one object's fields."""
    table = Table(title=title, show_header=False, title_justify="left", min_width=len(title))
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else text(value))
    return table


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str] | None]:
    """Server-sent events from a stream of lines: (event, data) per event, None per comment
    (a keepalive), so that callers get a chance to look at the clock."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            yield None
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
