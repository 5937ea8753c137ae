"""Run-unique user ids: one transcript run's users never meet an earlier run's.

On a shared, long-lived server, `alice` of one run would inherit the sessions, presence,
typing and session-limit slots that earlier runs left behind. `with_users` rewrites a
transcript so that every setup user becomes a fresh server-side id (`alice` ->
`alice-<8 hex>`, one suffix per run), wherever a user id appears
(spec/v1/transcripts/README.md, "Users"):

- `setup.users`, the `members` and `sender` of setup conversations and messages;
- `as` of `connect` steps, `user` and `sender` of `operator` steps;
- `sub` of `$token` placeholders;
- in frames and patterns, the values of the keys in `USER_KEYS` (strings, arrays, and the
  patterns inside them such as `$unordered`).

Only names listed in `setup.users` are renamed, so `system` (the sender of system messages)
and literal texts stay as they are. Pure functions, no I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from .transcripts import Transcript

USER_KEYS: Final = frozenset({"user_id", "sender_id", "members", "user_ids"})


def unique_ids(users: list[str] | tuple[str, ...], suffix: str | None = None) -> dict[str, str]:
    """`name -> name-<suffix>` for each user; the suffix is 8 random hex digits unless given."""
    tail = secrets.token_hex(4) if suffix is None else suffix
    return {user: f"{user}-{tail}" for user in users}


def with_users(transcript: Transcript, ids: Mapping[str, str]) -> Transcript:
    """`transcript` with every user id renamed by `ids` (names not in `ids` are kept)."""
    setup = dict(transcript.setup)
    setup["users"] = [ids.get(user, user) for user in setup.get("users", ())]
    setup["conversations"] = [
        {**conv, "members": [ids.get(user, user) for user in conv["members"]]}
        for conv in setup.get("conversations", ())
    ]
    setup["messages"] = [_renamed_fields(message, ids) for message in setup.get("messages", ())]
    return attrs.evolve(
        transcript,
        setup=setup,
        steps=tuple(_step(step, ids) for step in transcript.steps),
    )


def _renamed_fields(obj: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    """A setup message or step with its `sender`, `user` and `as` renamed."""
    return {
        key: ids.get(value, value) if key in ("sender", "user", "as") else value
        for key, value in obj.items()
    }


def _step(step: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    renamed = _renamed_fields(step, ids)
    if "steps" in renamed:  # repeat
        renamed["steps"] = [_step(sub, ids) for sub in renamed["steps"]]
    if "frame" in renamed:
        renamed["frame"] = _value(renamed["frame"], ids, under_user_key=False)
    if "message" in renamed:
        renamed["message"] = _value(renamed["message"], ids, under_user_key=False)
    if "messages" in renamed:
        renamed["messages"] = [_value(p, ids, under_user_key=False) for p in renamed["messages"]]
    return renamed


def _value(value: Any, ids: Mapping[str, str], *, under_user_key: bool) -> Any:
    if isinstance(value, str):
        return ids.get(value, value) if under_user_key else value
    if isinstance(value, list):
        return [_value(item, ids, under_user_key=under_user_key) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(key, arg)] = value.items()
        if key == "$token" and isinstance(arg, dict):
            return {"$token": _renamed_sub(arg, ids)}
        if key.startswith("$") and key != "$unordered":
            return value  # $var, $capture, $any, $conv, $i, $fill: no user names inside
    return {
        key: _value(item, ids, under_user_key=under_user_key or key in USER_KEYS)
        for key, item in value.items()
    }


def _renamed_sub(token: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    return {key: ids.get(v, v) if key == "sub" else v for key, v in token.items()}
