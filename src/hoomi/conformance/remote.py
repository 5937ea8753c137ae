"""A `Backend` for a server that is already running: its WebSocket URL and its admin API.

Everything goes through the documented admin/server API (``spec/admin/openapi.json``):
conversations, members, posts, kicks and drains, `GET /v1/settings` for the settings the
server runs with, and `POST /v1/tokens` for user tokens when the kit has no secret.

One server serves every transcript, so a transcript runs only if the server already has
the settings its `config` names (else it is skipped, naming each setting), and the runner
gives each run its own users (`run_transcript(..., unique_users=True)`). Tokens:

- with the server's HS256 secret (`jwt_secret`) the kit mints every token itself;
- without it, ordinary tokens come from `POST /v1/tokens` (a server started with
  `--mint-tokens` or `--dev`); unsigned (`alg: none`) and wrongly signed ones need no
  secret; a token with `nbf` or an `exp` the API cannot give (already expired, or more than
  a day away) cannot be made, and such a transcript is skipped.

Every HTTP request is bounded by `timeout_s`; the runner bounds each call again.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import quote

import httpx
import jwt
import trio

from .client import Connection, Frame, StepFailed
from .transcripts import TokenSpec, Unsupported, unsigned_jwt

API_MAX_TTL_S: Final = 86400  # POST /v1/tokens: ttl_s from 1 to a day
PROBE_TIMEOUT_S: Final = 5.0


class ServerUnusable(Exception):
    """The server under test cannot be used at all; the message is one sentence that says
    what to do next."""


class AdminError(Exception):
    """The admin API refused a request the runner made; the message quotes its answer."""


def _segment(value: str) -> str:
    return quote(value, safe="")


def _same(wanted: Any, actual: Any) -> bool:
    """Settings compare as JSON values: numbers by value (10 == 10.0), never bool as number."""
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return wanted is actual
    if isinstance(wanted, int | float) and isinstance(actual, int | float):
        return float(wanted) == float(actual)
    return bool(wanted == actual)


class AdminBackend:
    """Runs transcripts against one live server, set up through its admin API.

    `stop` does nothing: the runner closes its own connections, and run-unique users keep
    what a run leaves behind (presence, typing, sessions) out of later runs.
    """

    def __init__(
        self,
        url: str,
        api: httpx.AsyncClient,
        settings: Mapping[str, Any],
        *,
        jwt_secret: str | None = None,
    ) -> None:
        self.url = url
        self.api = api
        self.settings = dict(settings)
        self.jwt_secret = jwt_secret

    @classmethod
    async def connect(
        cls, url: str, api: httpx.AsyncClient, *, jwt_secret: str | None = None
    ) -> AdminBackend:
        """A backend for the server at `url` whose admin API `api` reaches (its base URL
        and token set), once the API answered with the server's settings; raises
        `ServerUnusable` saying what is wrong."""
        return cls(url, api, await _settings(api), jwt_secret=jwt_secret)

    # -- what can run ---------------------------------------------------------------------

    def config_mismatch(self, config: Mapping[str, Any]) -> str | None:
        """None if the server runs with every setting in `config`, else what differs."""
        differences = []
        for name, wanted in sorted(config.items()):
            if name not in self.settings:
                differences.append(f"{name}={wanted}, which the server does not report")
            elif not _same(wanted, self.settings[name]):
                differences.append(f"{name}={wanted}, the server has {self.settings[name]}")
        return f"needs {'; '.join(differences)}" if differences else None

    def token_problem(self, spec: TokenSpec) -> str | None:
        """None if `mint` can make such a token, else why not."""
        if spec.alg not in (None, "HS256", "none"):
            return f"needs a token with alg {spec.alg}, which the kit cannot sign"
        if self.jwt_secret or spec.alg == "none" or spec.key == "wrong":
            return None
        if (
            spec.nbf_in_s is not None
            or spec.exp_in_s is None
            or not 1 <= spec.exp_in_s <= API_MAX_TTL_S
        ):
            return (
                f"needs a token with {spec.describe()}, which only the kit can sign: "
                "give --jwt-secret (HOOMI_JWT_SECRET)"
            )
        if not self.settings.get("mint_tokens"):
            return (
                "needs user tokens: give --jwt-secret (HOOMI_JWT_SECRET), or start the server "
                "with --mint-tokens"
            )
        return None

    async def start(self, config: Mapping[str, Any], tokens: frozenset[TokenSpec]) -> str:
        problems = [self.config_mismatch(config)]
        problems += sorted({self.token_problem(spec) or "" for spec in tokens})
        reasons = [problem for problem in problems if problem]
        if reasons:
            raise Unsupported("; ".join(reasons))
        return self.url

    async def stop(self) -> None:
        return None

    # -- tokens ---------------------------------------------------------------------------

    async def mint(self, sub: str, spec: TokenSpec) -> str:
        problem = self.token_problem(spec)
        if problem is not None:
            raise Unsupported(problem)
        if spec.alg != "none" and spec.key == "valid" and not self.jwt_secret:
            answer = await self._call(
                "POST", "/v1/tokens", {"user_id": sub, "ttl_s": spec.exp_in_s}
            )
            return str(answer["token"])
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now}
        if spec.exp_in_s is not None:
            claims["exp"] = now + spec.exp_in_s
        if spec.nbf_in_s is not None:
            claims["nbf"] = now + spec.nbf_in_s
        for claim, setting in (("iss", "jwt_issuer"), ("aud", "jwt_audience")):
            if self.settings.get(setting) is not None:
                claims[claim] = self.settings[setting]
        if spec.alg == "none":
            return unsigned_jwt(claims)
        key = self.jwt_secret if spec.key == "valid" else None
        return jwt.encode(claims, key or secrets.token_urlsafe(32), "HS256")

    # -- the admin API --------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            response = await self.api.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise AdminError(f"{method} {path}: {error!r}") from None
        if not response.is_success:
            raise AdminError(
                f"{method} {path} answered HTTP {response.status_code}: {response.text}"
            )
        return response.json()

    async def create_conversation(
        self, kind: str, members: Sequence[str], title: str | None
    ) -> str:
        body: dict[str, Any] = {"kind": kind, "members": list(members)}
        if title is not None:
            body["title"] = title
        created = await self._call("POST", "/v1/conversations", body)
        return str(created["conversation_id"])

    async def post(self, conversation_id: str, sender: str | None, text: str, kind: str) -> int:
        body: dict[str, Any] = {"text": text, "kind": kind}
        if sender is not None:
            body["sender_id"] = sender
        path = f"/v1/conversations/{_segment(conversation_id)}/messages"
        stored = await self._call("POST", path, body)
        return int(stored["seq"])

    async def add_member(self, conversation_id: str, user: str) -> None:
        path = f"/v1/conversations/{_segment(conversation_id)}/members"
        await self._call("POST", path, {"user_id": user})

    async def remove_member(self, conversation_id: str, user: str) -> None:
        path = f"/v1/conversations/{_segment(conversation_id)}/members/{_segment(user)}"
        await self._call("DELETE", path)

    async def kick(self, session_id: str) -> None:
        await self._call("POST", f"/v1/sessions/{_segment(session_id)}/kick", {})

    async def drain(self) -> None:
        await self._call("POST", "/v1/drain")


async def _settings(api: httpx.AsyncClient) -> dict[str, Any]:
    """`GET /v1/settings`, or `ServerUnusable` saying what is wrong."""
    admin_url = str(api.base_url).rstrip("/")
    try:
        response = await api.get("/v1/settings")
    except httpx.TimeoutException:
        raise ServerUnusable(
            f"The admin API at {admin_url} did not answer in time: is --admin-url right?"
        ) from None
    except httpx.HTTPError as error:
        raise ServerUnusable(
            f"Cannot reach the admin API at {admin_url} ({error or type(error).__name__}): "
            "is the server running, and is --admin-url right?"
        ) from None
    if response.status_code == 401:
        raise ServerUnusable(
            f"The admin API at {admin_url} refused the admin token: pass the server's "
            "--admin-token (or set HOOMI_ADMIN_TOKEN)."
        )
    if response.status_code == 404:
        raise ServerUnusable(
            f"The admin API at {admin_url} has no GET /v1/settings: is --admin-url the admin "
            "API of a Hoomi server recent enough for the conformance kit?"
        )
    try:
        settings = response.json()
    except ValueError:
        settings = None
    if not response.is_success or not isinstance(settings, dict):
        raise ServerUnusable(
            f"The admin API at {admin_url} answered GET /v1/settings with HTTP "
            f"{response.status_code} and no settings: is --admin-url right?"
        )
    return settings


async def _probe(backend: AdminBackend, timeout_s: float) -> None:
    """Open one WebSocket and say hello with a token the kit made: the server must answer
    with a welcome. Raises `ServerUnusable` saying what failed."""
    url = backend.url
    try:
        with trio.fail_after(timeout_s):
            connection = await Connection.open("probe", url, ["hoomi.v1"])
    except trio.TooSlowError:
        raise ServerUnusable(
            f"The server at {url} did not complete a WebSocket handshake within "
            f"{timeout_s:g} s: is the URL right?"
        ) from None
    except StepFailed as failed:
        reason = str(failed)
        raise ServerUnusable(
            f"{reason[0].upper()}{reason[1:]}: is the server running, and is the URL right?"
        ) from None
    problem: ServerUnusable | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.read_loop)
        try:
            await _hello(backend, connection, timeout_s)
        except ServerUnusable as unusable:
            problem = unusable
        finally:
            await connection.close(1000, trio.current_time() + timeout_s)
            nursery.cancel_scope.cancel()
    if problem is not None:
        raise problem


async def _hello(backend: AdminBackend, connection: Connection, timeout_s: float) -> None:
    source = "--jwt-secret" if backend.jwt_secret else "POST /v1/tokens"
    try:
        with trio.fail_after(timeout_s):
            token = await backend.mint(f"conformance-probe-{secrets.token_hex(4)}", TokenSpec())
    except (AdminError, trio.TooSlowError) as error:
        raise ServerUnusable(f"The admin API did not mint a user token: {error}.") from None
    await connection.send_text(json.dumps({"type": "hello", "id": "probe", "token": token}))
    item = await connection.next_item(trio.current_time() + timeout_s)
    value = item.value if isinstance(item, Frame) else None
    if isinstance(value, dict) and value.get("type") == "welcome":
        return
    got = json.dumps(value) if isinstance(item, Frame) else getattr(item, "detail", "nothing")
    raise ServerUnusable(
        f"The server at {backend.url} did not welcome a token made with {source} "
        f"(it answered {got}): is the secret the server's?"
    )


@asynccontextmanager
async def admin_backend(
    url: str,
    admin_url: str,
    admin_token: str,
    *,
    jwt_secret: str | None = None,
    timeout_s: float = 10.0,
) -> AsyncIterator[AdminBackend]:
    """An `AdminBackend` for the server at `url` once its admin API answered with its
    settings, the kit can make user tokens, and a probe connection was welcomed; raises
    `ServerUnusable` otherwise. The HTTP client is closed on exit."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(
        base_url=admin_url.rstrip("/"), headers=headers, timeout=timeout_s
    ) as api:
        backend = await AdminBackend.connect(url, api, jwt_secret=jwt_secret)
        if backend.token_problem(TokenSpec()) is not None:
            raise ServerUnusable(
                "The kit cannot make user tokens: give the server's HS256 secret with "
                "--jwt-secret (or HOOMI_JWT_SECRET), or start the server with --mint-tokens."
            )
        await _probe(backend, min(timeout_s, PROBE_TIMEOUT_S))
        yield backend
