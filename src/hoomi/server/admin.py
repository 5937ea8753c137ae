"""The admin/server API: HTTP+JSON for operators and the application backend.

The contract is ``spec/admin/openapi.json``. Health and metrics answer anyone (a load
balancer, Prometheus); everything under ``/v1`` needs ``Authorization: Bearer
<admin_token>``, and without a configured token it is refused entirely. The listener binds
`Settings.admin_host` (loopback by default), apart from the WebSocket port.

Structure: `create_app` builds a Starlette app over one `Server`; `serve_admin` runs it with
Hypercorn's Trio worker beside `Server.serve` and stops it once the server has stopped. Every
refusal is one JSON shape, ``{"error": {"code", "message"}}``, raised as `ApiError` (or a
store error, mapped in `_error_response`) and rendered in one place.
"""

from __future__ import annotations

import hmac
import math
from collections import defaultdict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from functools import partial
from typing import Any, cast

import hypercorn.config
import hypercorn.trio
import orjson
import trio
from hypercorn.typing import ASGIFramework
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hoomi.protocol import messages as m
from hoomi.protocol import to_dict

from . import logs
from .auth import mint_hs256
from .server import Server
from .store import (
    ConversationInfo,
    ConversationNotFound,
    InvalidConversation,
    NotAMember,
    StoreUnavailable,
)

KEEPALIVE_S = 15.0
MAX_BODY_BYTES = 65536
MAX_ID_CHARS = 128
MAX_MEMBERS = 1000
MAX_TITLE_CHARS = 200
MAX_REASON_CHARS = 120
READY_PING_TIMEOUT_S = 2.0
# What `GET /v1/settings` shows: the settings a client sees the effect of (the timers of
# spec/v1/state-machine.json, the keys of welcome.limits, the session limits), so that a
# conformance kit knows which transcripts' `config` this server satisfies.
PROTOCOL_SETTINGS = (
    "hello_timeout_ms",
    "heartbeat_interval_ms",
    "token_warning_ms",
    "close_timeout_ms",
    "typing_ttl_ms",
    "max_frame_bytes",
    "max_text_chars",
    "history_page_max",
    "replay_max",
    "rate_per_s",
    "rate_burst",
    "max_connections_per_user",
    "outbox_size",
)


class ApiError(Exception):
    """A refusal: an HTTP status, a snake_case code and one sentence."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, ConversationNotFound):
        error = ApiError(404, "not_found", str(exc))
    elif isinstance(exc, InvalidConversation):
        error = ApiError(409, "invalid_conversation", str(exc))
    elif isinstance(exc, NotAMember):
        error = ApiError(409, "not_a_member", str(exc))
    elif isinstance(exc, StoreUnavailable):
        error = ApiError(503, "unavailable", "storage is unavailable; retry shortly")
    elif isinstance(exc, HTTPException):
        error = ApiError(exc.status_code, "bad_request", f"{exc.detail}.")
    else:
        error = ApiError(500, "internal", "the admin API failed on this request")
    return JSONResponse(
        {"error": {"code": error.code, "message": error.message}}, status_code=error.status
    )


async def _on_error(request: Request, exc: Exception) -> Response:
    """Every exception handler: refusals as they are, the rest logged first."""
    if isinstance(exc, HTTPException) and exc.status_code in (404, 405):
        missing = exc.status_code == 404
        exc = ApiError(
            exc.status_code,
            "not_found" if missing else "method_not_allowed",
            f"{'No endpoint' if missing else 'Method not allowed'}: "
            f"{request.method} {request.url.path}.",
        )
    elif isinstance(exc, StoreUnavailable):
        logs.event("admin_store_unavailable", path=request.url.path, error=str(exc))
    elif not isinstance(exc, ApiError | ConversationNotFound | InvalidConversation | NotAMember):
        logs.failure("admin_failed", method=request.method, path=request.url.path)
    return _error_response(exc)


# -- request bodies and queries ---------------------------------------------------------


async def _body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The JSON object body (empty: {}), bounded, with no field outside `allowed`."""
    data = bytearray()
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            data += chunk
            if len(data) > MAX_BODY_BYTES:
                raise _bad_request(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    if not data.strip():
        return {}
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _bad_request("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad_request("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad_request(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return body


def _string(body: dict[str, Any], name: str, *, max_chars: int, required: bool) -> str | None:
    """A non-empty string field of at most `max_chars`; None if absent (or null) and optional."""
    value = body.get(name)
    if value is None:
        if required:
            raise _bad_request(f"field {name!r} is required")
        return None
    if not isinstance(value, str):
        raise _bad_request(f"field {name!r} must be a string")
    if not value:
        raise _bad_request(f"field {name!r} must not be empty")
    if len(value) > max_chars:
        raise _bad_request(f"field {name!r} is longer than {max_chars} characters")
    return value


def _required(body: dict[str, Any], name: str, *, max_chars: int) -> str:
    value = _string(body, name, max_chars=max_chars, required=True)
    assert value is not None
    return value


def _integer(body: dict[str, Any], name: str, *, low: int, high: int, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad_request(f"field {name!r} must be an integer from {low} to {high}")
    return value


def _query_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return 100
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 500:
        raise _bad_request("query parameter 'limit' must be an integer from 1 to 500")
    return limit


# -- shapes -----------------------------------------------------------------------------


def _latency_ms(histogram: Histogram) -> dict[str, float | None]:
    """p50 and p99 in ms, interpolated within the histogram's buckets (all operations), as
    Prometheus' histogram_quantile does; None for both without a sample."""
    cumulative: dict[float, float] = defaultdict(float)
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                cumulative[float(sample.labels["le"])] += sample.value
    total = cumulative.get(math.inf, 0.0)
    if not total:
        return {"p50": None, "p99": None}

    def quantile(q: float) -> float:
        rank = q * total
        lower, below = 0.0, 0.0
        for bound in sorted(cumulative):
            count = cumulative[bound]
            if count >= rank:
                if math.isinf(bound):
                    return lower  # above the largest bucket: its bound is all we know
                share = (rank - below) / (count - below) if count > below else 1.0
                return lower + (bound - lower) * share
            lower, below = bound, count
        return lower

    return {"p50": round(quantile(0.5) * 1000, 3), "p99": round(quantile(0.99) * 1000, 3)}


class _Admin:
    """The endpoints over one server, and the watchers to end when it stops."""

    def __init__(self, server: Server, keepalive_s: float) -> None:
        self.server = server
        self.keepalive_s = keepalive_s
        self.stopping = False
        self._waiting: set[trio.CancelScope] = set()

    def stop(self) -> None:
        """End every event stream (the server has stopped)."""
        self.stopping = True
        for scope in list(self._waiting):
            scope.cancel()

    def conversation(self, info: ConversationInfo) -> dict[str, Any]:
        cid = info.conversation_id
        return {
            "conversation_id": cid,
            "kind": info.kind,
            "title": info.title,
            "members": list(info.members),
            "latest_seq": max(info.latest_seq, self.server.latest_published(cid)),
            "created_at": info.created_at,
        }

    # -- authentication -------------------------------------------------------------------

    def refusal(self, request: Request) -> JSONResponse | None:
        """None if the request carries the admin token, else the 401 to send."""
        expected = self.server.settings.admin_token
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if (
            expected is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(token.strip().encode(), expected.encode())
        ):
            return None
        remote = f"{request.client.host}:{request.client.port}" if request.client else "?"
        if expected is None:
            reason = "disabled"
            message = (
                "The admin API is disabled: start the server with --admin-token "
                "or HOOMI_ADMIN_TOKEN to enable it."
            )
        else:
            reason = "wrong token" if given else "no token"
            message = "Send the admin token as 'Authorization: Bearer <token>'."
        logs.event("admin_refused", remote=remote, path=request.url.path, reason=reason)
        code = "admin_disabled" if expected is None else "unauthorized"
        return _error_response(ApiError(401, code, message))

    # -- health ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        reasons = []
        if self.server.draining:
            reasons.append("the server is draining")
        try:
            with trio.fail_after(READY_PING_TIMEOUT_S):
                await self.server.store.ping()
        except trio.TooSlowError:
            reasons.append(f"the store did not answer within {READY_PING_TIMEOUT_S:g} s")
        except Exception as exc:
            # The detail goes to the log, not to an unauthenticated endpoint.
            logs.event("readyz_store_unavailable", error=str(exc))
            reasons.append("the store is unavailable")
        if reasons:
            return JSONResponse({"ready": False, "reasons": reasons}, status_code=503)
        return JSONResponse({"ready": True})

    async def metrics(self, request: Request) -> Response:
        return Response(
            generate_latest(self.server.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    # -- sessions -------------------------------------------------------------------------

    async def sessions(self, request: Request) -> Response:
        user = request.query_params.get("user")
        conversation = request.query_params.get("conversation")
        found = sorted(self.server.sessions.values(), key=lambda s: (s.connected_at, s.id))
        return JSONResponse(
            {
                "sessions": [
                    s.snapshot()
                    for s in found
                    if (user is None or s.user_id == user)
                    and (conversation is None or conversation in s.conversations)
                ]
            }
        )

    async def session(self, request: Request) -> Response:
        sid = request.path_params["session_id"]
        session = self.server.sessions.get(sid)
        if session is None:
            raise ApiError(404, "not_found", f"no live session {sid}")
        return JSONResponse(session.snapshot(detail=True))

    async def kick(self, request: Request) -> Response:
        sid = request.path_params["session_id"]
        body = await _body(request, frozenset({"reason"}))
        reason = _string(body, "reason", max_chars=MAX_REASON_CHARS, required=False)
        if not self.server.kick(sid, reason or "kicked by an operator"):
            raise ApiError(404, "not_found", f"no live session {sid}")
        return JSONResponse({"kicked": [sid]})

    async def kick_user(self, request: Request) -> Response:
        body = await _body(request, frozenset({"reason"}))
        reason = _string(body, "reason", max_chars=MAX_REASON_CHARS, required=False)
        kicked = self.server.kick_user(
            request.path_params["user_id"], reason or "kicked by an operator"
        )
        return JSONResponse({"kicked": kicked})

    async def watch(self, request: Request) -> Response:
        return _EventStream(self._events(), headers={"Cache-Control": "no-store"})

    async def _events(self) -> AsyncGenerator[bytes, None]:
        """Server-sent events: one per session event, a comment when idle; ends when the
        server stops. The watch channel is closed however the stream ends."""
        with self.server.watch() as channel:
            # Registered: from here no event is missed. Say so, so clients can rely on it.
            yield b": watching\n\n"
            while not self.stopping:
                with trio.move_on_after(self.keepalive_s) as scope:
                    self._waiting.add(scope)
                    try:
                        event = await channel.receive()
                    finally:
                        self._waiting.discard(scope)
                if scope.cancelled_caught:
                    if not self.stopping:
                        yield b": keepalive\n\n"
                    continue
                yield b"event: %s\ndata: %s\n\n" % (
                    str(event["event"]).encode(),
                    orjson.dumps(event),
                )

    # -- stats ----------------------------------------------------------------------------

    async def stats(self, request: Request) -> Response:
        server = self.server
        metrics = server.metrics
        online = server.online
        ready = sum(online.values())
        return JSONResponse(
            {
                "connections": len(server.sessions),
                "sessions_ready": ready,
                "users_online": len(online),
                "sessions_per_user": {
                    "max": max(online.values(), default=0),
                    "mean": round(ready / len(online), 3) if online else 0.0,
                },
                "messages_in_per_s": round(metrics.rates.messages_in_per_s, 3),
                "messages_out_per_s": round(metrics.rates.messages_out_per_s, 3),
                "deliveries_per_s": round(metrics.rates.deliveries_per_s, 3),
                "slow_consumers": metrics.slow_consumers,
                "store_latency_ms": _latency_ms(metrics.store_seconds),
                "draining": server.draining,
                "uptime_s": round(max(0.0, server.wall() - server.started_at), 3),
            }
        )

    # -- conversations --------------------------------------------------------------------

    async def conversations(self, request: Request) -> Response:
        limit = _query_limit(request)
        after = request.query_params.get("after") or None
        page = await self.server.store.list_conversations(limit=limit + 1, after=after)
        more = len(page) > limit
        page = page[:limit]
        return JSONResponse(
            {
                "conversations": [self.conversation(info) for info in page],
                "next": page[-1].conversation_id if more else None,
            }
        )

    async def create_conversation(self, request: Request) -> Response:
        body = await _body(request, frozenset({"kind", "members", "title"}))
        kind = body.get("kind")
        if kind not in ("direct", "group"):
            raise _bad_request("field 'kind' must be 'direct' or 'group'")
        members = body.get("members")
        if not isinstance(members, list) or not members:
            raise _bad_request("field 'members' must be a non-empty array of user ids")
        if len(members) > MAX_MEMBERS:
            raise _bad_request(f"field 'members' has more than {MAX_MEMBERS} user ids")
        for member in members:
            if not isinstance(member, str) or not 1 <= len(member) <= MAX_ID_CHARS:
                raise _bad_request(
                    f"field 'members' must hold user ids of 1-{MAX_ID_CHARS} characters"
                )
        title = _string(body, "title", max_chars=MAX_TITLE_CHARS, required=False)
        info = await self.server.create_conversation(kind=kind, members=members, title=title)
        return JSONResponse(self.conversation(info), status_code=201)

    async def get_conversation(self, request: Request) -> Response:
        info = await self.server.store.conversation(request.path_params["conversation_id"])
        return JSONResponse(self.conversation(info))

    async def add_member(self, request: Request) -> Response:
        body = await _body(request, frozenset({"user_id"}))
        user = _required(body, "user_id", max_chars=MAX_ID_CHARS)
        info = await self.server.add_member(request.path_params["conversation_id"], user)
        return JSONResponse(self.conversation(info))

    async def remove_member(self, request: Request) -> Response:
        cid, user = request.path_params["conversation_id"], request.path_params["user_id"]
        info = await self.server.remove_member(cid, user)
        return JSONResponse(self.conversation(info))

    async def post_message(self, request: Request) -> Response:
        body = await _body(request, frozenset({"text", "sender_id", "kind"}))
        limit = self.server.settings.max_text_chars
        text = _required(body, "text", max_chars=limit)
        sender = _string(body, "sender_id", max_chars=MAX_ID_CHARS, required=False)
        kind = body.get("kind", "system")
        if kind not in ("user", "system"):
            raise _bad_request("field 'kind' must be 'user' or 'system'")
        if kind == "user" and sender is None:
            raise _bad_request("field 'sender_id' is required for a message of kind 'user'")
        message = await self.server.post(
            request.path_params["conversation_id"],
            text,
            sender_id=sender or "system",
            kind=kind,
        )
        return JSONResponse(_message(message), status_code=201)

    # -- settings, tokens and drain -------------------------------------------------------

    async def settings(self, request: Request) -> Response:
        settings = self.server.settings
        return JSONResponse(
            {
                **{name: getattr(settings, name) for name in PROTOCOL_SETTINGS},
                "mint_tokens": settings.mint_tokens,
                "jwt_issuer": settings.jwt_issuer,
                "jwt_audience": settings.jwt_audience,
            }
        )

    async def mint_token(self, request: Request) -> Response:
        settings = self.server.settings
        body = await _body(request, frozenset({"user_id", "ttl_s"}))
        user = _required(body, "user_id", max_chars=MAX_ID_CHARS)
        ttl_s = _integer(body, "ttl_s", low=1, high=86400, default=3600)
        if not settings.mint_tokens:
            raise ApiError(
                403,
                "tokens_disabled",
                "Token minting is off: start the server with --mint-tokens (development only).",
            )
        if not settings.jwt_secret:
            raise ApiError(
                409, "no_secret", "No HS256 jwt_secret is configured, so no token can be minted."
            )
        now = int(self.server.wall())
        token = mint_hs256(
            settings.jwt_secret,
            user,
            ttl_s=ttl_s,
            now_s=now,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        logs.event("admin_token_minted", user=user, ttl_s=ttl_s)
        return JSONResponse({"token": token, "expires_at": (now + ttl_s) * 1000})

    async def drain(self, request: Request) -> Response:
        self.server.drain()
        return JSONResponse(
            {"draining": True, "sessions": len(self.server.sessions)}, status_code=202
        )

    async def drain_status(self, request: Request) -> Response:
        sessions = len(self.server.sessions)
        return JSONResponse(
            {"draining": self.server.draining, "sessions": sessions, "empty": sessions == 0}
        )


def _message(message: m.ChatMessage) -> dict[str, Any]:
    body: dict[str, Any] = to_dict(m.MessageEvent(message=message))["message"]
    return body


class _EventStream(StreamingResponse):
    """A text/event-stream whose generator is closed when the response ends, however it
    ends (a client disconnect cancels the send), so the watch channel closes at once."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        super().__init__(events, headers=headers)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with trio.CancelScope(shield=True):
                await self._events.aclose()


class _BearerGuard:
    """Refuses every request under /v1 without the admin token (before routing, so that
    unknown paths reveal nothing either)."""

    def __init__(self, app: ASGIApp, admin: _Admin) -> None:
        self.app = app
        self.admin = admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/")):
            refusal = self.admin.refusal(Request(scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(server: Server, *, keepalive_s: float = KEEPALIVE_S) -> Starlette:
    """The admin API over `server` (see ``spec/admin/openapi.json``)."""
    admin = _Admin(server, keepalive_s)
    conv = "/v1/conversations/{conversation_id}"
    routes = [
        Route("/healthz", admin.healthz, methods=["GET"]),
        Route("/readyz", admin.readyz, methods=["GET"]),
        Route("/metrics", admin.metrics, methods=["GET"]),
        Route("/v1/sessions", admin.sessions, methods=["GET"]),
        Route("/v1/sessions/watch", admin.watch, methods=["GET"]),
        Route("/v1/sessions/{session_id}", admin.session, methods=["GET"]),
        Route("/v1/sessions/{session_id}/kick", admin.kick, methods=["POST"]),
        Route("/v1/users/{user_id}/kick", admin.kick_user, methods=["POST"]),
        Route("/v1/stats", admin.stats, methods=["GET"]),
        Route("/v1/conversations", admin.conversations, methods=["GET"]),
        Route("/v1/conversations", admin.create_conversation, methods=["POST"]),
        Route(conv, admin.get_conversation, methods=["GET"]),
        Route(f"{conv}/members", admin.add_member, methods=["POST"]),
        Route(f"{conv}/members/{{user_id}}", admin.remove_member, methods=["DELETE"]),
        Route(f"{conv}/messages", admin.post_message, methods=["POST"]),
        Route("/v1/settings", admin.settings, methods=["GET"]),
        Route("/v1/tokens", admin.mint_token, methods=["POST"]),
        Route("/v1/drain", admin.drain, methods=["POST"]),
        Route("/v1/drain", admin.drain_status, methods=["GET"]),
    ]
    errors = (ApiError, ConversationNotFound, InvalidConversation, NotAMember, StoreUnavailable)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_BearerGuard, admin=admin)],
        exception_handlers={
            **dict.fromkeys(errors, _on_error),
            HTTPException: _on_error,
            Exception: _on_error,
        },
    )
    app.state.admin = admin
    return app


async def serve_admin(
    server: Server,
    *,
    keepalive_s: float = KEEPALIVE_S,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin API on `admin_host:admin_port` until `server` has stopped; reports
    the bound port (useful with port 0). Open event streams end when the server stops;
    other requests get Hypercorn's graceful timeout to finish."""
    settings = server.settings
    app = create_app(server, keepalive_s=keepalive_s)
    admin: _Admin = app.state.admin
    config = hypercorn.config.Config()
    host = f"[{settings.admin_host}]" if ":" in settings.admin_host else settings.admin_host
    config.bind = [f"{host}:{settings.admin_port}"]
    config.accesslog = None
    config.errorlog = None  # failures are logged by `_on_error` as structured lines
    config.graceful_timeout = 2.0
    config.include_server_header = False

    async def stopped() -> None:
        await server.wait_stopped()
        admin.stop()

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                hypercorn.trio.serve,
                cast("ASGIFramework", app),
                config,
                shutdown_trigger=stopped,
            )
        )
        port = int(binds[0].rsplit(":", 1)[1])
        if not settings.admin_token:
            logs.event("admin_listening", url=binds[0], note="only /healthz /readyz /metrics")
        else:
            logs.event("admin_listening", url=binds[0])
        task_status.started(port)
