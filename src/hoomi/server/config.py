"""Every server setting in one frozen class, with safe defaults.

Sources, strongest first: command-line options, ``HOOMI_<NAME>`` environment variables, a
TOML file (``--config``; keys are the field names below), the defaults here. `load` merges
them and `Settings.check` refuses nonsense with one sentence saying what to fix.
"""

from __future__ import annotations

import os
import pathlib
import ssl
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import cattrs


class ConfigError(ValueError):
    """A setting is missing or out of range; the message says which and what to do."""


def default_database() -> str:
    """`~/.local/share/hoomi/hoomi.db`, or the same below `$XDG_DATA_HOME`."""
    base = os.environ.get("XDG_DATA_HOME") or str(pathlib.Path.home() / ".local" / "share")
    return str(pathlib.Path(base) / "hoomi" / "hoomi.db")


Range = Literal["positive", "non-negative", "port"]


def _help(text: str, range_: Range | None = None) -> dict[str, str]:
    """A field's metadata: its help, and for a number the range `Settings.check` enforces."""
    return {"help": text} if range_ is None else {"help": text, "range": range_}


@attrs.frozen(kw_only=True)
class Settings:
    host: str = attrs.field(default="127.0.0.1", metadata=_help("Address to listen on."))
    port: int = attrs.field(
        default=8765, metadata=_help("WebSocket port (0 picks a free one).", "port")
    )
    path: str = attrs.field(default="/", metadata=_help("WebSocket path."))
    database: str = attrs.field(
        factory=default_database, metadata=_help("SQLite database file (created if missing).")
    )
    sqlite_synchronous: Literal["full", "normal"] = attrs.field(
        default="full",
        metadata=_help("SQLite fsync policy: full survives power loss; normal only crashes."),
    )
    sqlite_commit_window_ms: float = attrs.field(
        default=5.0,
        metadata=_help(
            "At most one SQLite commit per this many ms; writes within share it.", "non-negative"
        ),
    )
    jwt_secret: str | None = attrs.field(
        default=None, metadata=_help("HS256 shared secret for user tokens.")
    )
    jwt_public_key: tuple[str, ...] = attrs.field(
        default=(), metadata=_help("PEM file of an RS256 or EdDSA public key (repeatable).")
    )
    jwt_issuer: str | None = attrs.field(default=None, metadata=_help("Required token `iss`."))
    jwt_audience: str | None = attrs.field(default=None, metadata=_help("Required token `aud`."))
    jwt_leeway_s: float = attrs.field(
        default=5.0, metadata=_help("Clock skew allowed (s).", "non-negative")
    )
    allowed_origin: tuple[str, ...] = attrs.field(
        default=(),
        metadata=_help(
            "Browser Origin allowed to connect (repeatable; '*' allows any). Requests without "
            "an Origin header (non-browser clients) are always allowed."
        ),
    )
    max_frame_bytes: int = attrs.field(
        default=65536, metadata=_help("Largest client frame.", "positive")
    )
    max_text_chars: int = attrs.field(
        default=4000, metadata=_help("Longest message text.", "positive")
    )
    rate_per_s: float = attrs.field(
        default=20.0, metadata=_help("Requests/s per connection.", "positive")
    )
    rate_burst: int = attrs.field(
        default=40, metadata=_help("Request burst per connection.", "positive")
    )
    max_connections_per_user: int = attrs.field(
        default=16, metadata=_help("Sessions per user.", "positive")
    )
    hello_timeout_ms: int = attrs.field(
        default=10_000, metadata=_help("Hello deadline (ms).", "positive")
    )
    history_page_max: int = attrs.field(
        default=100, metadata=_help("Largest history page.", "positive")
    )
    replay_max: int = attrs.field(
        default=1000, metadata=_help("Most messages replayed.", "non-negative")
    )
    outbox_size: int = attrs.field(
        default=1024,
        metadata=_help("Frames queued per session before it is a slow consumer.", "positive"),
    )
    outbox_bytes: int = attrs.field(
        default=8 * 1024 * 1024,
        metadata=_help("Bytes queued per session before it is a slow consumer.", "positive"),
    )
    heartbeat_interval_ms: int = attrs.field(
        default=25_000, metadata=_help("WebSocket pings.", "positive")
    )
    token_warning_ms: int = attrs.field(
        default=60_000,
        metadata=_help("Send token_expiring this long before expiry (ms).", "non-negative"),
    )
    typing_ttl_ms: int = attrs.field(
        default=5_000, metadata=_help("Typing expiry (ms).", "positive")
    )
    close_timeout_ms: int = attrs.field(
        default=5_000, metadata=_help("Close handshake (ms).", "positive")
    )
    drain_timeout_ms: int = attrs.field(
        default=10_000, metadata=_help("Shutdown: time to flush outboxes (ms).", "non-negative")
    )
    admin_host: str = attrs.field(
        default="127.0.0.1", metadata=_help("Admin/server API address (keep it private).")
    )
    admin_port: int = attrs.field(
        default=8766, metadata=_help("Admin/server API port (0 picks a free one).", "port")
    )
    admin_token: str | None = attrs.field(
        default=None,
        metadata=_help(
            "Bearer token of the admin API; without one only health and metrics answer."
        ),
    )
    mint_tokens: bool = attrs.field(
        default=False, metadata=_help("Let the admin API mint user tokens (development, tests).")
    )
    tls_cert: str | None = attrs.field(default=None, metadata=_help("TLS certificate (PEM)."))
    tls_key: str | None = attrs.field(default=None, metadata=_help("TLS private key (PEM)."))
    log_level: Literal["debug", "info", "warning", "error"] = attrs.field(
        default="info", metadata=_help("Log level.")
    )
    log_format: Literal["text", "json"] = attrs.field(
        default="text", metadata=_help("Log lines as key=value text or JSON.")
    )

    def check(self) -> Settings:
        """Return self, or raise `ConfigError` naming the first bad setting."""
        for field in attrs.fields(Settings):
            value, range_ = getattr(self, field.name), field.metadata.get("range")
            if range_ == "positive" and value <= 0:
                raise ConfigError(f"{field.name} must be greater than 0 (got {value}).")
            if range_ == "non-negative" and value < 0:
                raise ConfigError(f"{field.name} must not be negative (got {value}).")
            if range_ == "port" and not 0 <= value <= 65535:
                raise ConfigError(f"{field.name} must be between 0 and 65535 (got {value}).")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ConfigError(
                f"admin_token must be at least 16 characters (got {len(self.admin_token)}): "
                "use a long random string."
            )
        if not self.path.startswith("/"):
            raise ConfigError(f"path must start with '/' (got {self.path!r}).")
        if self.max_frame_bytes < 1024:
            raise ConfigError("max_frame_bytes must be at least 1024 so a hello fits.")
        if not self.jwt_secret and not self.jwt_public_key:
            raise ConfigError(
                "No token key configured: set jwt_secret (HS256) or jwt_public_key, "
                "or run `hoomi serve --dev` for a throwaway development secret."
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = (
                ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            )
            raise ConfigError(f"{given} is set but {missing} is not: TLS needs both.")
        return self


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context from `tls_cert` and `tls_key` (None without TLS), or
    `ConfigError` naming the file that does not load and what to do about it."""
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        return None
    for what, name, path in (("certificate", "tls_cert", cert), ("key", "tls_key", key)):
        try:
            pathlib.Path(path).read_bytes()
        except OSError as error:
            raise ConfigError(
                f"Cannot read the TLS {what} file {path}: {error.strerror}; "
                f"set {name} (--{name.replace('_', '-')}) to a PEM file."
            ) from None
    try:
        # Alone, so that a failure names the file at fault (load_cert_chain cannot tell).
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise ConfigError(
            f"The TLS certificate file {cert} holds no PEM certificate; "
            "set tls_cert (--tls-cert) to a PEM file."
        ) from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"The TLS key file {key} is not the key of the certificate in {cert}; "
                "set tls_key (--tls-key) to the certificate's key."
            ) from None
        raise ConfigError(
            f"The TLS key file {key} holds no PEM private key; "
            "set tls_key (--tls-key) to a PEM file."
        ) from None
    return context


_converter = cattrs.Converter()
FIELDS = {field.name: field for field in attrs.fields(Settings)}


def load(file: pathlib.Path | None, overrides: Mapping[str, Any]) -> Settings:
    """Defaults, then the TOML `file`, then `overrides` (flags and environment)."""
    values: dict[str, Any] = {}
    if file is not None:
        try:
            values.update(tomllib.loads(file.read_text()))
        except OSError as exc:
            raise ConfigError(f"Cannot read config file {file}: {exc.strerror}.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {file} is not valid TOML: {exc}.") from None
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ConfigError(f"Config file {file} has unknown settings: {', '.join(unknown)}.")
    values.update(overrides)
    try:
        settings = _converter.structure(values, Settings)
    except cattrs.BaseValidationError as exc:
        messages = cattrs.transform_error(exc)
        raise ConfigError(f"Invalid setting: {'; '.join(messages)}.") from None
    return settings.check()
