"""Errors the code under test logged, for the autouse fixture in conftest.py that fails a
test on any it did not declare.

Two sources: ERROR (and above) records of the ``hoomi`` logger tree in this process, from
any task or thread; and the logs of the ``hoomi`` processes a test started (a
``level=error`` line or a Python traceback), which the harness hands to `watch`.

A test declares what it expects with ``@pytest.mark.expect_errors("publish_failed",
request_failed=Boom)``: by event name (a record's message, a log line's ``event``, or
``"traceback"`` for a traceback outside any log line), each with any exception or, as a
keyword, with exactly the exception type named. Every record logged must be declared, and
every declared one must come: a declaration cannot go stale.
"""

from __future__ import annotations

import logging
import pathlib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import orjson

from hoomi.server import logs

TRACEBACK = "Traceback (most recent call last)"
_LOG_LINE = re.compile(r'ts=\S+ level=|\{"ts":')  # hoomi.server.logs, text or JSON
_TEXT_ERROR = re.compile(r"ts=\S+ level=(?:error|critical) event=(\S*)")
_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*)(?::|$)")


@attrs.frozen
class Logged:
    """One error the code under test logged."""

    where: str  # the logger's name, or the log it is in
    event: str  # the record's message or the line's event; "traceback" for a bare one
    error: str = ""  # the exception's type name, if it carried one

    def __str__(self) -> str:
        raised = f" ({self.error})" if self.error else ""
        return f"{self.where}: {self.event}{raised}"


@attrs.frozen
class Expected:
    """What a test declared: event names with any exception, or with the type named."""

    any_error: frozenset[str] = frozenset()
    typed: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def of(cls, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Expected:
        for name in (*args, *kwargs):
            if not isinstance(name, str) or not name:
                raise TypeError(f"expect_errors takes event names, not {name!r}")
        typed = {
            event: raised if isinstance(raised, str) else raised.__name__
            for event, raised in kwargs.items()
        }
        return cls(frozenset(args), typed)

    def allows(self, logged: Logged) -> bool:
        if logged.event in self.any_error:
            return True
        return self.typed.get(logged.event, None) == logged.error

    def events(self) -> set[str]:
        return {*self.any_error, *self.typed}


class Watch(logging.Handler):
    """Collects the ERROR records of the ``hoomi`` logger tree, and the logs to read."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []  # appended under the handler's lock
        self.sources: list[tuple[str, Callable[[], str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def logged(self) -> list[Logged]:
        """Everything logged so far, in this process and in the logs watched."""
        found = [
            Logged(
                record.name,
                record.getMessage(),
                record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "",
            )
            for record in self.records
        ]
        for name, read in self.sources:
            found += errors_in(read(), name)
        return found

    def problems(self, expected: Expected) -> list[str]:
        """Why the test fails: each error it did not declare, each declared one that
        never came (empty when all is as declared)."""
        logged = self.logged()
        problems = [f"logged {item}" for item in logged if not expected.allows(item)]
        came = {item.event for item in logged if expected.allows(item)}
        problems += [
            f"declared {event!r} (expect_errors), but it was never logged"
            for event in sorted(expected.events() - came)
        ]
        return problems


_current: Watch | None = None


def watch(name: str, read: pathlib.Path | Callable[[], str]) -> None:
    """Check a log of a process the test started when the test ends: a file, or a
    function returning the text. Outside a test (no watch running) it does nothing."""
    if _current is None:
        return
    if isinstance(read, pathlib.Path):
        path = read
        _current.sources.append((name, lambda: path.read_text("utf-8", "replace")))
    else:
        _current.sources.append((name, read))


@contextmanager
def watching() -> Iterator[Watch]:
    """Watch the ``hoomi`` logger tree until the block ends, then put it back as it was.
    The watch survives `logs.configure` (which replaces the logger's handlers)."""
    global _current
    logger = logging.getLogger("hoomi")
    saved = (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
    handler = Watch()
    configure = logs.configure

    def configure_watched(*args: Any, **kwargs: Any) -> None:
        configure(*args, **kwargs)
        logger.addHandler(handler)
        if not logger.isEnabledFor(logging.ERROR):
            logger.setLevel(logging.ERROR)

    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.ERROR):
        logger.setLevel(logging.ERROR)
    logger.disabled = False
    logs.configure = configure_watched
    _current = handler
    try:
        yield handler
    finally:
        _current = None
        logs.configure = configure
        logger.handlers[:], logger.level, logger.propagate, logger.disabled = saved


def errors_in(text: str, where: str) -> list[Logged]:
    """The errors in a hoomi process's log: ``level=error`` lines (text or JSON) and
    tracebacks printed outside any log line."""
    found: list[Logged] = []
    lines = text.splitlines()
    at = 0
    while at < len(lines):
        line = lines[at]
        at += 1
        if _LOG_LINE.match(line):
            record = _error_line(line)
            if record is not None:  # a log line is judged by its level alone
                found.append(Logged(where, *record))
        elif TRACEBACK in line:
            # Its exception is named on the first line back at the header's indentation
            # (a chained exception's traceback follows as one of its own).
            column = len(line) - len(line.lstrip(" |+-"))
            error = ""
            while at < len(lines):
                body = lines[at][column:]
                if body and not body[0].isspace():
                    named = _EXCEPTION.match(body)
                    if named:
                        error = named[1].rsplit(".", 1)[-1]
                        at += 1
                    break
                at += 1
            found.append(Logged(where, "traceback", error))
    return found


def _error_line(line: str) -> tuple[str, str] | None:
    """(event, exception type) if `line` is a hoomi log line at error level or above."""
    if line.startswith("{"):
        try:
            fields = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(fields, dict) or fields.get("level") not in ("error", "critical"):
            return None
        return str(fields.get("event", "")), _raised(str(fields.get("error", "")))
    event = _TEXT_ERROR.match(line)
    if event is None:
        return None
    error = ""
    if " error=" in line:
        value = line.rsplit(" error=", 1)[1]
        try:
            error = orjson.loads(value) if value.startswith('"') else value
        except orjson.JSONDecodeError:
            error = value
    return event[1], _raised(str(error))


def _raised(traceback: str) -> str:
    """The exception type a formatted traceback ends with."""
    last = traceback.strip().splitlines()[-1:] or [""]
    return last[0].split(":", 1)[0].strip().rsplit(".", 1)[-1]
