"""The admin/server API over real sockets, against ``spec/admin/openapi.json``.

Every response a test reads goes through `conforms`, which finds the documented operation by
path template, method and status and validates the body with the document's own schema.
"""

from __future__ import annotations

import logging
import pathlib
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, cast

import attrs
import httpx
import orjson
import psutil
import pytest
import trio
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from conftest import REPO
from harness import ADMIN_TOKEN, EventStream, Running, eventually, running_server
from hoomi.server.admin import create_app, serve_admin
from hoomi.server.config import Settings
from hoomi.server.server import Server
from hoomi.server.store import StoreUnavailable

OPENAPI_PATH: Final = REPO / "spec" / "admin" / "openapi.json"
OPENAPI: Final[dict[str, Any]] = orjson.loads(OPENAPI_PATH.read_bytes())
_BASE: Final = "urn:hoomi:admin-openapi"
_REGISTRY: Final = Registry().with_resource(
    _BASE, Resource.from_contents(OPENAPI, default_specification=DRAFT202012)
)


# -- the contract -----------------------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _validator(pointer: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{_BASE}#{pointer}"}, registry=_REGISTRY)


def _template(path: str) -> str:
    """The documented path template that `path` matches; literal segments win."""
    templates: list[str] = sorted(OPENAPI["paths"], key=lambda t: t.count("{"))
    for template in templates:
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        if re.fullmatch(pattern, path):
            return template
    raise AssertionError(f"{path} is not documented")


def conforms(response: httpx.Response) -> Any:
    """The parsed body, after checking it against the documented response."""
    method = response.request.method.lower()
    template = _template(response.request.url.path)
    operation = OPENAPI["paths"][template].get(method)
    assert operation is not None, f"{method.upper()} {template} is not documented"
    status = str(response.status_code)
    assert status in operation["responses"], f"{status} not documented for {method} {template}"
    where: tuple[str, ...] = ("paths", template, method, "responses", status)
    documented = operation["responses"][status]
    if "$ref" in documented:
        where = ("components", "responses", documented["$ref"].rsplit("/", 1)[1])
        documented = OPENAPI["components"]["responses"][where[-1]]
    (media,) = documented["content"]
    assert response.headers["content-type"].split(";")[0] == media.split(";")[0], response.headers[
        "content-type"
    ]
    if media != "application/json":
        return response.text
    body = response.json()
    errors = [
        e.message
        for e in _validator(_pointer(*where, "content", media, "schema")).iter_errors(body)
    ]
    assert not errors, f"{method.upper()} {template} {status}: {errors} in {body}"
    return body


def schema_check(name: str, instance: Any) -> None:
    _validator(_pointer("components", "schemas", name)).validate(instance)


def test_the_document_is_valid_openapi_and_covers_every_route() -> None:
    validate(OPENAPI)
    served = set()
    for route in create_app(cast(Server, _NoServer())).routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                served.add((route.path, method.lower()))
    documented = {(path, method) for path, ops in OPENAPI["paths"].items() for method in ops}
    assert served == documented


class _NoServer:
    """Enough of a server to build the routes."""

    settings = Settings(jwt_secret="x" * 32)


# -- fixtures and helpers ---------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [getattr(r, "fields", {}) for r in self.records if r.getMessage() == name]


@pytest.fixture
def hoomi_log() -> Iterator[_Records]:
    logger = logging.getLogger("hoomi")
    handler = _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@asynccontextmanager
async def admin_api(running: Running, token: str | None = "") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the admin API, with the admin token unless `token` is given."""
    assert running.admin_url is not None
    secret = running.admin_token if token == "" else token
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
    async with httpx.AsyncClient(base_url=running.admin_url, headers=headers, timeout=5) as api:
        yield api


async def group(api: httpx.AsyncClient, *members: str, title: str | None = None) -> str:
    response = await api.post(
        "/v1/conversations", json={"kind": "group", "members": list(members), "title": title}
    )
    assert response.status_code == 201
    cid: str = conforms(response)["conversation_id"]
    return cid


async def session_ids(api: httpx.AsyncClient, **query: str) -> list[str]:
    body = conforms(await api.get("/v1/sessions", params=query))
    return [s["session_id"] for s in body["sessions"]]


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


# -- health, metrics, authentication ----------------------------------------------------


async def test_health_readiness_and_metrics_answer_without_a_token(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running, None) as api:
        assert conforms(await api.get("/healthz")) == {"status": "ok"}
        assert conforms(await api.get("/readyz")) == {"ready": True}
        metrics = await api.get("/metrics")
        assert metrics.status_code == 200
        text = conforms(metrics)
        assert metric(text, "hoomi_connections") == 0
        assert metrics.headers["content-type"].startswith("text/plain; version=")


async def test_every_v1_endpoint_refuses_a_missing_or_wrong_token_and_logs_it(
    tmp_path: pathlib.Path, hoomi_log: _Records
) -> None:
    wrong = "not-the-admin-token-at-all"
    async with running_server(tmp_path, admin=True) as running:
        for token in (None, wrong):
            async with admin_api(running, token) as api:
                for template, operations in OPENAPI["paths"].items():
                    if not template.startswith("/v1"):
                        continue
                    path = re.sub(r"\{[^}]+\}", "x", template)
                    for method in operations:
                        response = await api.request(method, path, json={})
                        assert response.status_code == 401, (method, path)
                        body = conforms(response)
                        assert body["error"]["code"] == "unauthorized"
        assert running.server.sessions == {}  # nothing was kicked or drained
        assert not running.server.draining
    refused = hoomi_log.events("admin_refused")
    assert len(refused) == 2 * sum(
        len(ops) for t, ops in OPENAPI["paths"].items() if t.startswith("/v1")
    )
    assert {r["reason"] for r in refused} == {"no token", "wrong token"}
    assert all(
        r["remote"].startswith("127.0.0.1:") and r["path"].startswith("/v1") for r in refused
    )
    assert not any(wrong in repr(r) or ADMIN_TOKEN in repr(r) for r in refused)


async def test_without_an_admin_token_the_v1_api_is_disabled_and_says_how_to_enable_it(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        running_server(tmp_path, admin=True, admin_token=None) as running,
        admin_api(running, "some-token-someone-guessed") as api,
    ):
        refused = conforms(await api.get("/v1/stats"))
        assert refused["error"]["code"] == "admin_disabled"
        assert "--admin-token" in refused["error"]["message"]
        assert "HOOMI_ADMIN_TOKEN" in refused["error"]["message"]
        assert conforms(await api.get("/healthz")) == {"status": "ok"}


async def test_the_admin_listener_binds_loopback_by_default(tmp_path: pathlib.Path) -> None:
    assert Settings(jwt_secret="x" * 32).admin_host == "127.0.0.1"
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        assert conforms(await api.get("/healthz")) == {"status": "ok"}
        assert running.admin_url is not None
        port = int(running.admin_url.rsplit(":", 1)[1])
        # The socket itself: one listener on that port, bound to loopback, not to all
        # interfaces (0.0.0.0 or ::) ...
        bound = [
            tuple(c.laddr)
            for c in psutil.Process().net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        ]
        assert bound == [("127.0.0.1", port)]
        # ... so another loopback address, which a wildcard bind would answer, is refused.
        with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            await sock.connect(("127.0.0.2", port))


async def test_unknown_endpoints_and_methods_answer_json_errors(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        missing = await api.get("/v1/nothing-here")
        assert missing.status_code == 404
        schema_check("Error", missing.json())
        assert missing.json()["error"]["code"] == "not_found"
        wrong_method = await api.delete("/v1/stats")
        assert wrong_method.status_code == 405
        schema_check("Error", wrong_method.json())


# -- sessions ---------------------------------------------------------------------------


async def test_sessions_are_listed_filtered_and_shown_in_detail(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        cid = await group(api, "alice", "bob")
        alice = await running.connect("alice", client={"name": "test", "version": "1"})
        bob = await running.connect("bob")
        ids = await session_ids(api)
        assert ids == [alice.welcome["session_id"], bob.welcome["session_id"]]
        assert await session_ids(api, user="bob") == [bob.welcome["session_id"]]
        assert await session_ids(api, conversation=cid) == ids
        assert await session_ids(api, conversation="c_none") == []
        listed = conforms(await api.get("/v1/sessions", params={"user": "alice"}))["sessions"][0]
        assert listed["state"] == "ready"
        assert listed["client"] == {"name": "test", "version": "1"}
        detail = conforms(await api.get(f"/v1/sessions/{alice.welcome['session_id']}"))
        assert detail["last_seq"] == {cid: 0}
        assert detail["conversations"] == [cid]
        missing = await api.get("/v1/sessions/s_nope")
        assert missing.status_code == 404
        assert conforms(missing)["error"]["code"] == "not_found"


async def test_a_kicked_session_is_closed_with_4004_and_others_are_untouched(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        alice = await running.connect("alice")
        bob = await running.connect("bob")
        sid = alice.welcome["session_id"]
        bad = await api.post(f"/v1/sessions/{sid}/kick", json={"reason": 5})
        assert bad.status_code == 400
        assert "reason" in conforms(bad)["error"]["message"]
        kicked = await api.post(f"/v1/sessions/{sid}/kick", json={"reason": "spam"})
        assert conforms(kicked) == {"kicked": [sid]}
        assert await alice.closed() == 4004

        async def gone() -> bool:
            return sid not in await session_ids(api)

        await eventually(gone)
        assert await session_ids(api) == [bob.welcome["session_id"]]
        assert (await bob.request("ping"))["type"] == "pong"
        again = await api.post(f"/v1/sessions/{sid}/kick")
        assert again.status_code == 404
        assert conforms(again)["error"]["code"] == "not_found"


async def test_kicking_a_user_closes_all_their_sessions(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        first = await running.connect("alice")
        second = await running.connect("alice")
        bob = await running.connect("bob")
        kicked = conforms(await api.post("/v1/users/alice/kick", json={}))["kicked"]
        assert sorted(kicked) == sorted([first.welcome["session_id"], second.welcome["session_id"]])
        assert await first.closed() == 4004
        assert await second.closed() == 4004
        assert (await bob.request("ping"))["type"] == "pong"
        assert conforms(await api.post("/v1/users/nobody/kick")) == {"kicked": []}


async def test_watch_streams_connects_kicks_and_disconnects_as_they_happen(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        refused = await api.get("/v1/sessions/watch", headers={"Authorization": "Bearer nope"})
        assert conforms(refused)["error"]["code"] == "unauthorized"
        assert running.admin_url is not None
        async with EventStream.open(running.admin_url, running.admin_token) as events:
            assert events.status == 200
            assert events.headers["content-type"].startswith("text/event-stream")
            alice = await running.connect("alice")
            sid = alice.welcome["session_id"]
            seen: list[tuple[str, dict[str, Any]]] = []
            while len(seen) < 4:
                if len(seen) == 2:
                    await api.post(f"/v1/sessions/{sid}/kick", json={"reason": "watch me"})
                event = await events.next()
                assert event is not None
                data = orjson.loads(event["data"])
                schema_check("WatchEvent", data)
                assert data["event"] == event["event"]
                seen.append((event["event"], data))
            assert [kind for kind, _ in seen] == ["connect", "ready", "kick", "disconnect"]
            assert all(data["session"]["session_id"] == sid for _, data in seen)
            assert seen[0][1]["session"]["user_id"] is None  # before the hello
            assert seen[1][1]["session"]["user_id"] == "alice"
            assert seen[2][1]["reason"] == "watch me"
            assert seen[3][1]["session"]["user_id"] == "alice"
            assert await alice.closed() == 4004

        async def unwatched() -> bool:
            # The client went away: the server closed its end of the watch channel.
            watchers = running.server._watchers
            return all(w.statistics().open_receive_channels == 0 for w in watchers)

        await eventually(unwatched)


async def test_watch_sends_keepalives_and_ends_when_the_server_stops(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        running_server(tmp_path, admin_port=0, admin_token=ADMIN_TOKEN) as running,
        trio.open_nursery() as nursery,
    ):
        server = running.server
        port = await nursery.start(partial(serve_admin, server, keepalive_s=0.1))
        async with EventStream.open(f"http://127.0.0.1:{port}", ADMIN_TOKEN) as events:
            assert await events.next() == {"comment": "keepalive"}
            assert await events.next() == {"comment": "keepalive"}
            server.shutdown()
            while (event := await events.next()) is not None:
                assert event == {"comment": "keepalive"}
            assert events.ended
        # serve_admin ends by itself once the server has stopped.


# -- stats and metrics ------------------------------------------------------------------


async def test_stats_agree_with_what_happened(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        before = conforms(await api.get("/v1/stats"))
        assert before["connections"] == before["sessions_ready"] == before["users_online"] == 0
        assert before["store_latency_ms"] == {"p50": None, "p99": None}
        assert before["sessions_per_user"] == {"max": 0, "mean": 0.0}
        cid = await group(api, "alice", "bob")
        alice = await running.connect("alice")
        await running.connect("alice")
        await running.connect("bob")
        pending = await running.connect()  # no hello: connected, not ready
        for n in range(3):
            ack = await alice.request(
                "send", conversation_id=cid, client_msg_id=f"k{n}", text="hello"
            )
            assert ack["type"] == "ack"
        stats = conforms(await api.get("/v1/stats"))
        assert stats["connections"] == 4
        assert stats["sessions_ready"] == 3
        assert stats["users_online"] == 2
        assert stats["sessions_per_user"] == {"max": 2, "mean": 1.5}
        assert stats["slow_consumers"] == 0
        assert stats["draining"] is False
        latency = stats["store_latency_ms"]
        assert latency["p50"] is not None
        assert 0 < latency["p50"] <= latency["p99"] <= 2500
        assert 0 < stats["uptime_s"] < 60
        await pending.aclose()


async def test_metrics_move_when_messages_flow(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        cid = await group(api, "alice", "bob", "carol")
        alice = await running.connect("alice")
        bob = await running.connect("bob")
        carol = await running.connect("carol")
        before = conforms(await api.get("/metrics"))
        for n in range(4):
            await alice.request("send", conversation_id=cid, client_msg_id=f"m{n}", text="hi")
        for client in (bob, carol):
            for _ in range(4):
                await client.expect("message", skip=("presence",))
        after = conforms(await api.get("/metrics"))
        stored = "hoomi_messages_stored_total"
        delivered = "hoomi_deliveries_total"
        assert metric(after, stored) - metric(before, stored) == 4
        assert metric(after, delivered) - metric(before, delivered) == 4 * 3
        assert metric(after, "hoomi_sessions_ready") == 3


# -- conversations ----------------------------------------------------------------------


async def test_conversations_made_through_the_api_are_live_for_connected_clients(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        alice = await running.connect("alice")
        bob = await running.connect("bob")
        carol = await running.connect("carol")
        created = await api.post(
            "/v1/conversations",
            json={"kind": "group", "members": ["alice", "bob"], "title": "Team"},
        )
        assert created.status_code == 201
        conv = conforms(created)
        cid = conv["conversation_id"]
        assert (conv["kind"], conv["title"], conv["members"], conv["latest_seq"]) == (
            "group",
            "Team",
            ["alice", "bob"],
            0,
        )
        for client in (alice, bob):
            joined = await client.expect("conversation_joined", skip=("presence",))
            assert joined["conversation"]["conversation_id"] == cid
        ack = await alice.request("send", conversation_id=cid, client_msg_id="a1", text="hi bob")
        assert (ack["type"], ack["seq"]) == ("ack", 1)
        assert (await bob.expect("message", skip=("presence",)))["message"]["seq"] == 1

        added = conforms(
            await api.post(f"/v1/conversations/{cid}/members", json={"user_id": "carol"})
        )
        assert added["members"] == ["alice", "bob", "carol"]
        assert added["latest_seq"] == 1
        joined = await carol.expect("conversation_joined", skip=("presence",))
        assert joined["conversation"]["latest_seq"] == 1
        ack = await carol.request("send", conversation_id=cid, client_msg_id="c1", text="hello")
        assert ack["seq"] == 2

        removed = conforms(await api.delete(f"/v1/conversations/{cid}/members/bob"))
        assert removed["members"] == ["alice", "carol"]
        left = await bob.expect("conversation_left", skip=("presence", "message"))
        assert left["conversation_id"] == cid
        assert conforms(await api.get(f"/v1/conversations/{cid}")) == removed


async def test_conversations_are_listed_in_pages(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        created = sorted([await group(api, f"u{n}") for n in range(5)])
        seen: list[str] = []
        after: str | None = None
        while True:
            params = {"limit": "2", **({"after": after} if after else {})}
            page = conforms(await api.get("/v1/conversations", params=params))
            seen += [c["conversation_id"] for c in page["conversations"]]
            after = page["next"]
            if after is None:
                break
        assert seen == created
        everything = conforms(await api.get("/v1/conversations"))
        assert [c["conversation_id"] for c in everything["conversations"]] == created
        assert everything["next"] is None
        for limit in ("0", "501", "many"):
            refused = await api.get("/v1/conversations", params={"limit": limit})
            assert refused.status_code == 400
            assert "limit" in conforms(refused)["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"members": ["a"]}, "kind"),
        ({"kind": "channel", "members": ["a"]}, "kind"),
        ({"kind": "group"}, "members"),
        ({"kind": "group", "members": []}, "members"),
        ({"kind": "group", "members": "alice"}, "members"),
        ({"kind": "group", "members": ["a", 7]}, "members"),
        ({"kind": "group", "members": ["a"], "title": 3}, "title"),
        ({"kind": "group", "members": ["a"], "colour": "red"}, "colour"),
        ([1, 2], "object"),
        ("{not json", "JSON"),
    ],
)
async def test_bad_conversation_bodies_are_refused_naming_the_field(
    tmp_path: pathlib.Path, body: Any, field: str
) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        if isinstance(body, str):
            response = await api.post("/v1/conversations", content=body)
        else:
            response = await api.post("/v1/conversations", json=body)
        assert response.status_code == 400
        error = conforms(response)["error"]
        assert error["code"] == "bad_request"
        assert field in error["message"]


@pytest.mark.requirement("HOOMI-CONV-1")
async def test_conversation_errors_map_to_their_statuses(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        for response in (
            await api.get("/v1/conversations/c_missing"),
            await api.post("/v1/conversations/c_missing/members", json={"user_id": "a"}),
            await api.delete("/v1/conversations/c_missing/members/a"),
            await api.post("/v1/conversations/c_missing/messages", json={"text": "hi"}),
        ):
            assert response.status_code == 404
            assert conforms(response)["error"]["code"] == "not_found"
        for members in (["a", "b", "c"], ["a", "a"]):
            bad = await api.post("/v1/conversations", json={"kind": "direct", "members": members})
            assert bad.status_code == 409
            assert conforms(bad)["error"]["code"] == "invalid_conversation"
        direct = await api.post("/v1/conversations", json={"kind": "direct", "members": ["a", "b"]})
        cid = conforms(direct)["conversation_id"]
        same = await api.post("/v1/conversations", json={"kind": "direct", "members": ["b", "a"]})
        assert conforms(same)["conversation_id"] == cid
        third = await api.post(f"/v1/conversations/{cid}/members", json={"user_id": "c"})
        assert third.status_code == 409
        assert conforms(third)["error"]["code"] == "invalid_conversation"
        missing = await api.post(f"/v1/conversations/{cid}/members", json={})
        assert "user_id" in conforms(missing)["error"]["message"]

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("database is locked")

        monkeypatch.setattr(running.store, "conversation", down)
        unavailable = await api.get(f"/v1/conversations/{cid}")
        assert unavailable.status_code == 503
        assert conforms(unavailable)["error"]["code"] == "unavailable"


@pytest.mark.requirement("HOOMI-CONV-4")
async def test_a_posted_system_message_reaches_members_with_a_seq(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        cid = await group(api, "alice", "bob")
        alice = await running.connect("alice")
        bob = await running.connect("bob")
        posted = await api.post(f"/v1/conversations/{cid}/messages", json={"text": "Welcome!"})
        assert posted.status_code == 201
        message = conforms(posted)
        assert (message["seq"], message["kind"], message["sender_id"]) == (1, "system", "system")
        for client in (alice, bob):
            event = await client.expect("message", skip=("presence",))
            assert event["message"] == message
        as_bot = await api.post(
            f"/v1/conversations/{cid}/messages", json={"text": "beep", "sender_id": "bot"}
        )
        assert (conforms(as_bot)["seq"], conforms(as_bot)["sender_id"]) == (2, "bot")
        limit = running.server.settings.max_text_chars
        for body in ({}, {"text": ""}, {"text": 5}, {"text": "x" * (limit + 1)}):
            refused = await api.post(f"/v1/conversations/{cid}/messages", json=body)
            assert refused.status_code == 400
            assert "text" in conforms(refused)["error"]["message"]
        assert conforms(await api.get(f"/v1/conversations/{cid}"))["latest_seq"] == 2


async def test_a_message_posted_as_a_member_is_a_user_message(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        cid = await group(api, "alice", "bob")
        bob = await running.connect("bob")
        body = {"text": "hi", "sender_id": "alice", "kind": "user"}
        posted = await api.post(f"/v1/conversations/{cid}/messages", json=body)
        assert posted.status_code == 201
        message = conforms(posted)
        assert (message["seq"], message["kind"], message["sender_id"]) == (1, "user", "alice")
        assert "client_msg_id" not in message
        assert (await bob.expect("message", skip=("presence",)))["message"] == message
        # A user message counts as unread for the others, not for its sender (HOOMI-READ-3).
        views = {v.info.conversation_id: v for v in await running.store.conversations_of("bob")}
        assert views[cid].unread == 1
        mine = {v.info.conversation_id: v for v in await running.store.conversations_of("alice")}
        assert mine[cid].unread == 0
        stranger = await api.post(
            f"/v1/conversations/{cid}/messages",
            json={"text": "hi", "sender_id": "mallory", "kind": "user"},
        )
        assert stranger.status_code == 409
        assert conforms(stranger)["error"]["code"] == "not_a_member"
        for bad in ({"text": "x", "kind": "user"}, {"text": "x", "kind": "bot"}):
            refused = await api.post(f"/v1/conversations/{cid}/messages", json=bad)
            assert refused.status_code == 400, bad
            assert conforms(refused)["error"]["code"] == "bad_request"
        assert conforms(await api.get(f"/v1/conversations/{cid}"))["latest_seq"] == 1


# -- settings ---------------------------------------------------------------------------


async def test_settings_show_what_the_server_was_started_with(tmp_path: pathlib.Path) -> None:
    async with (
        running_server(tmp_path, admin=True, replay_max=3, rate_per_s=2.5) as running,
        admin_api(running) as api,
    ):
        shown = conforms(await api.get("/v1/settings"))
        settings = running.server.settings
        assert shown["replay_max"] == 3
        assert shown["rate_per_s"] == 2.5
        assert shown["typing_ttl_ms"] == settings.typing_ttl_ms
        assert shown["outbox_size"] == settings.outbox_size
        assert (shown["mint_tokens"], shown["jwt_issuer"], shown["jwt_audience"]) == (
            True,
            None,
            None,
        )
        # Every transcript `config` name is shown (spec/v1/meta/transcript.schema.json).
        meta = orjson.loads((REPO / "spec/v1/meta/transcript.schema.json").read_bytes())
        assert set(meta["properties"]["config"]["properties"]) <= set(shown)


# -- tokens -----------------------------------------------------------------------------


async def test_minted_tokens_open_sessions(
    tmp_path: pathlib.Path, mock_clock: trio.testing.MockClock
) -> None:
    # Trio's clock stands still (pytest-trio's `mock_clock`), and the server's wall clock
    # follows it: the expiry is exact, not within a window of wall-clock time.
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        now_s = int(running.server.wall())
        minted = conforms(await api.post("/v1/tokens", json={"user_id": "dana", "ttl_s": 600}))
        assert minted["expires_at"] == (now_s + 600) * 1000
        client = await running.connect()
        welcome = await client.hello(minted["token"])
        assert (welcome["type"], welcome["user_id"]) == ("welcome", "dana")
        default = conforms(await api.post("/v1/tokens", json={"user_id": "dana"}))
        assert default["expires_at"] == (now_s + 3600) * 1000
        for body in (
            {},
            {"user_id": ""},
            {"user_id": "d", "ttl_s": 0},
            {"user_id": "d", "ttl_s": 86401},
            {"user_id": "d", "ttl_s": True},
        ):
            refused = await api.post("/v1/tokens", json=body)
            assert refused.status_code == 400, body
            conforms(refused)


async def test_tokens_are_refused_when_minting_is_off_or_there_is_no_secret(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        running_server(tmp_path, admin=True, mint_tokens=False) as running,
        admin_api(running) as api,
    ):
        off = await api.post("/v1/tokens", json={"user_id": "dana"})
        assert off.status_code == 403
        assert conforms(off)["error"]["code"] == "tokens_disabled"
        # A node that verifies public keys only has no secret to sign with.
        server = running.server
        server.settings = attrs.evolve(server.settings, mint_tokens=True, jwt_secret=None)
        no_secret = await api.post("/v1/tokens", json={"user_id": "dana"})
        assert no_secret.status_code == 409
        assert conforms(no_secret)["error"]["code"] == "no_secret"


# -- drain ------------------------------------------------------------------------------


async def test_drain_closes_sessions_with_1001_and_turns_readiness_off(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        alice = await running.connect("alice")
        bob = await running.connect("bob")
        assert conforms(await api.get("/v1/drain")) == {
            "draining": False,
            "sessions": 2,
            "empty": False,
        }
        started = await api.post("/v1/drain")
        assert started.status_code == 202
        assert conforms(started) == {"draining": True, "sessions": 2}
        assert await alice.closed() == 1001
        assert await bob.closed() == 1001
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert any("draining" in reason for reason in conforms(ready)["reasons"])

        async def empty() -> bool:
            status = conforms(await api.get("/v1/drain"))
            return bool(status["empty"])

        await eventually(empty)
        assert conforms(await api.get("/v1/drain")) == {
            "draining": True,
            "sessions": 0,
            "empty": True,
        }
        assert conforms(await api.get("/v1/stats"))["draining"] is True
        assert conforms(await api.post("/v1/drain"))["sessions"] == 0  # idempotent
        assert conforms(await api.get("/healthz")) == {"status": "ok"}  # the process serves on


async def test_readiness_fails_when_the_store_does_not_answer(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> None:
        raise StoreUnavailable("disk I/O error")

    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        monkeypatch.setattr(running.store, "ping", down)
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert conforms(ready) == {
            "ready": False,
            "reasons": ["the store is unavailable"],  # the detail is logged, not shown
        }


async def test_request_bodies_are_bounded(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as running, admin_api(running) as api:
        huge = await api.post("/v1/tokens", content=b'{"user_id": "' + b"x" * 70000 + b'"}')
        assert huge.status_code == 400
        assert "larger than" in conforms(huge)["error"]["message"]


async def test_a_watcher_that_falls_behind_is_told_how_many_events_it_lost(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        await hoomi.server.create_conversation(kind="group", members=["alice", "bob"])
        events = hoomi.server.watch(buffer=1)
        async with events:
            first = await hoomi.connect(
                "alice"
            )  # connect queued (the buffer holds one), ready dropped
            bob = await hoomi.connect("bob")  # connect and ready dropped
            await first.aclose()  # disconnect dropped
            offline = await bob.expect("presence")  # alice's last session has ended
            assert offline["status"] == "offline"
            assert (await events.receive())["event"] == "connect"
            third = await hoomi.connect("carol")
            latest = await events.receive()
            assert (latest["event"], latest["dropped"]) == ("connect", 4)
            await third.aclose()
