"""Structured logs: one line per event, ``key=value`` text or JSON (``log_format``)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_logger = logging.getLogger("hoomi")


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self._json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        if self._json:
            return orjson.dumps(fields, default=str).decode()
        return " ".join(f"{k}={_text(v)}" for k, v in fields.items())


def _text(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return orjson.dumps(text).decode()
    return text


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send hoomi's log lines to stderr at `level` in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt == "json"))
    _logger.handlers[:] = [handler]
    _logger.setLevel(level.upper())
    _logger.propagate = False


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one event with its fields."""
    if _logger.isEnabledFor(level):
        _logger.log(level, name, extra={"fields": fields})


def failure(name: str, /, **fields: Any) -> None:
    """Log an unexpected exception (call from an ``except`` block) with its traceback."""
    _logger.error(name, exc_info=True, extra={"fields": fields})
