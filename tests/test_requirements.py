"""Requirements no other test verifies on its own, each over a real socket against a real
server, with the exact code, path or number the spec names (see docs/traceability.md)."""

from __future__ import annotations

import collections
import json
import pathlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
import pytest
import trio
import trio.testing

from conftest import SPEC
from harness import WRONG_SECRET, RawClient, Running, mint, running_server, upgrade_request

SPEC_JSON: Final = json.loads((SPEC / "spec.json").read_text(encoding="utf-8"))
ERROR_CODES: Final = frozenset(
    e["code"] for e in json.loads((SPEC / "errors.json").read_text(encoding="utf-8"))["errors"]
)
CLOSE_CODES: Final = {
    c["name"]: c
    for c in json.loads((SPEC / "close-codes.json").read_text(encoding="utf-8"))["close_codes"]
}
TABLE: Final = json.loads((SPEC / "state-machine.json").read_text(encoding="utf-8"))
ROWS: Final = {(row["from"], row["event"]): row for row in TABLE["transitions"]}


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Time jumps (to the next deadline: the server's 1 s tick at most) only after 50 ms of
    # real idleness, which a store read on a loaded machine does not reach.
    return trio.testing.MockClock(autojump_threshold=0.05)


def assert_error(frame: dict[str, Any], code: str, *, path: str | None = None) -> None:
    """An `error` with exactly `code` (a registry code) and a human-readable message."""
    assert (frame["type"], frame["code"]) == ("error", code), frame
    assert code in ERROR_CODES
    assert isinstance(frame["message"], str), frame
    assert frame["message"].strip(), frame
    assert frame.get("path") == path, frame


async def hello_raw(raw: RawClient, user: str = "alice") -> dict[str, Any]:
    await raw.send_frame(0x1, orjson.dumps({"type": "hello", "id": "h", "token": mint(user)}))
    opcode, payload = await raw.next_frame()
    welcome: dict[str, Any] = orjson.loads(payload)
    assert (opcode, welcome["type"]) == (0x1, "welcome")
    return welcome


# -- transport and versions ------------------------------------------------------------------


@pytest.mark.requirement("HOOMI-WIRE-1")
@pytest.mark.parametrize(
    ("offer", "selected"),
    [
        ("hoomi.v1", "hoomi.v1"),
        ("chat.v2, hoomi.v1", "hoomi.v1"),
        ("chat.v2", None),
        (None, None),
    ],
)
async def test_hoomi_v1_is_selected_and_without_it_nothing_is_and_4009_says_why(
    tmp_path: pathlib.Path, offer: str | None, selected: str | None
) -> None:
    async with running_server(tmp_path) as hoomi:
        stream = await trio.open_tcp_stream("127.0.0.1", hoomi.server.ports[0])
        extra = () if offer is None else (f"Sec-WebSocket-Protocol: {offer}",)
        await stream.send_all(upgrade_request(drop=("Sec-WebSocket-Protocol",), add=extra))
        raw = RawClient(stream)
        with trio.fail_after(5):
            while b"\r\n\r\n" not in raw.buffer:
                raw.buffer += await raw._more()
        head, raw.buffer = raw.buffer.split(b"\r\n\r\n", 1)
        status, *headers = head.decode().split("\r\n")
        assert status == "HTTP/1.1 101 Switching Protocols"
        chosen = [
            h.split(":", 1)[1].strip()
            for h in headers
            if h.lower().startswith("sec-websocket-protocol:")
        ]
        assert chosen == ([] if selected is None else [selected])
        if selected is None:
            assert await raw.close_code() == CLOSE_CODES["unsupported_protocol"]["code"] == 4009
        else:
            await hello_raw(raw)
        await raw.aclose()


@pytest.mark.requirement("HOOMI-WIRE-3", "HOOMI-HELLO-3")
async def test_welcome_names_the_wire_version_and_the_semver_spec_version(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        alice = await hoomi.connect("alice")
        assert (alice.welcome["protocol"], alice.welcome["spec_version"]) == (
            SPEC_JSON["protocol"],
            SPEC_JSON["spec_version"],
        )
        assert SPEC_JSON["protocol"] == SPEC_JSON["subprotocol"] == "hoomi.v1"
        assert re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", SPEC_JSON["spec_version"])


@pytest.mark.requirement("HOOMI-WIRE-5")
async def test_before_welcome_a_max_frame_bytes_below_16_kb_is_the_bound(
    tmp_path: pathlib.Path,
) -> None:
    # The smaller of max_frame_bytes and 16384: here max_frame_bytes.
    async with running_server(tmp_path, max_frame_bytes=2048) as hoomi:
        hello = orjson.dumps({"type": "hello", "id": "h", "token": mint("alice")})
        at_limit = await RawClient.open(hoomi.server.ports[0])
        await at_limit.send_frame(0x1, hello + b" " * (2048 - len(hello)))
        opcode, payload = await at_limit.next_frame()
        assert (opcode, orjson.loads(payload)["type"]) == (0x1, "welcome")
        await at_limit.aclose()
        over = await RawClient.open(hoomi.server.ports[0])
        await over.send_frame(0x1, hello + b" " * (2049 - len(hello)))
        assert await over.close_code() == 1009
        await over.aclose()


# -- requests and replies, errors ------------------------------------------------------------


@pytest.mark.requirement("HOOMI-REQ-1", "HOOMI-ERR-1")
async def test_every_request_gets_exactly_one_reply_carrying_its_id(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        other = await hoomi.server.create_conversation(kind="direct", members=["bob", "carol"])
        cid = dm.conversation_id
        alice = await hoomi.connect("alice")
        requests: list[tuple[dict[str, Any], str]] = [
            ({"type": "ping", "id": "p"}, "pong"),
            (
                {
                    "type": "send",
                    "id": "s",
                    "conversation_id": cid,
                    "client_msg_id": "k",
                    "text": "a",
                },
                "ack",
            ),
            ({"type": "typing", "id": "t", "conversation_id": cid, "active": True}, "ok"),
            ({"type": "read", "id": "r", "conversation_id": cid, "seq": 1}, "ok"),
            ({"type": "history", "id": "q", "conversation_id": cid}, "history_page"),
            ({"type": "presence_query", "id": "u", "user_ids": ["bob"]}, "presence_result"),
            ({"type": "refresh", "id": "f", "token": mint("alice")}, "ok"),
            ({"type": "hello", "id": "h", "token": mint("alice")}, "invalid_state"),
            ({"type": "teleport", "id": "x"}, "unknown_type"),
            ({"type": "history", "id": "n", "conversation_id": other.conversation_id}, "forbidden"),
            ({"type": "ping", "id": "i" * 64}, "pong"),  # the longest id
        ]
        for frame, _ in requests:
            await alice.send(frame)
        replies: collections.Counter[str] = collections.Counter()
        types: dict[str, str] = {}
        while set(replies) != {frame["id"] for frame, _ in requests}:
            got = await alice.recv()
            if "id" in got:  # events (message, receipt) carry none
                replies[got["id"]] += 1
                types[got["id"]] = got["code"] if got["type"] == "error" else got["type"]
                if got["type"] == "error":
                    assert_error(got, got["code"], path=got.get("path"))
        await alice.silent(0.3)  # and no second reply to anything
        assert replies == collections.Counter(frame["id"] for frame, _ in requests)
        assert types == {frame["id"]: reply for frame, reply in requests}


@pytest.mark.requirement("HOOMI-REQ-2", "HOOMI-ERR-1", "HOOMI-ERR-2")
async def test_an_invalid_frame_gets_an_error_with_its_id_only_when_the_id_is_valid(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        alice = await hoomi.connect("alice")
        cases: list[tuple[str, str | None, str, str]] = [
            # (frame, the id the error must carry, its code, its path)
            ("not json", None, "bad_request", "$"),
            ("[1, 2]", None, "bad_request", "$"),
            ('{"type": "ping"}', None, "bad_request", "$.id"),
            ('{"type": "ping", "id": 5}', None, "bad_request", "$.id"),
            ('{"type": "ping", "id": ""}', None, "bad_request", "$.id"),
            (orjson.dumps({"type": "ping", "id": "i" * 65}).decode(), None, "bad_request", "$.id"),
            ('{"type": 5, "id": "t"}', "t", "bad_request", "$.type"),
            ('{"id": "m"}', "m", "bad_request", "$.type"),
            ('{"type": "warp", "id": "w"}', "w", "unknown_type", "$.type"),
            (
                orjson.dumps(
                    {"type": "read", "id": "r", "conversation_id": dm.conversation_id}
                ).decode(),
                "r",
                "bad_request",
                "$.seq",
            ),
            (
                orjson.dumps(
                    {
                        "type": "history",
                        "id": "l",
                        "conversation_id": dm.conversation_id,
                        "limit": 0,
                    }
                ).decode(),
                "l",
                "bad_request",
                "$.limit",
            ),
        ]
        for frame, rid, code, path in cases:
            await alice.send(frame)
            error = await alice.recv()
            assert_error(error, code, path=path)
            assert error.get("id") == rid, (frame, error)
        assert (await alice.request("ping"))["type"] == "pong"  # the connection is fine


# -- handshake ---------------------------------------------------------------------------------


@pytest.mark.requirement("HOOMI-HELLO-4")
async def test_the_hello_deadline_is_ten_seconds_by_default(
    tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    async with running_server(tmp_path) as hoomi:
        started = trio.current_time()
        punctual = await hoomi.connect()
        idle = await hoomi.connect()
        await trio.sleep(5)
        assert (await punctual.hello(mint("alice")))["type"] == "welcome"
        assert await idle.closed(within=30) == 4000
        # Deadlines are checked on the server's tick (1 s here): closed within one tick.
        assert 10 <= trio.current_time() - started <= 11
        await trio.sleep(10)
        assert (await punctual.request("ping"))["type"] == "pong"


@pytest.mark.requirement("HOOMI-HELLO-5")
async def test_a_user_holds_at_most_16_sessions_by_default(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        sessions = [await hoomi.connect("alice") for _ in range(16)]
        extra = await hoomi.connect()
        await extra.send({"type": "hello", "id": "h", "token": mint("alice")})
        assert await extra.closed() == 4007
        assert (await sessions[0].request("ping"))["type"] == "pong"
        assert (await hoomi.connect("bob")).welcome["type"] == "welcome"


# -- conversations and sending -----------------------------------------------------------------


@pytest.mark.requirement("HOOMI-CONV-1")
async def test_clients_cannot_create_conversations_or_change_members(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        alice = await hoomi.connect("alice")
        for kind in ("create_conversation", "add_member", "remove_member"):
            reply = await alice.request(kind, kind="group", members=["alice", "bob"])
            assert_error(reply, "unknown_type", path="$.type")
        assert await hoomi.store.conversations_of("alice") == []


@pytest.mark.requirement("HOOMI-CONV-4")
async def test_a_system_message_takes_a_seq_and_is_delivered_without_a_client_msg_id(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        await hoomi.server.post(cid, "hi", sender_id="alice", kind="user")  # as a member
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        await alice.expect("presence")
        await hoomi.server.post(cid, "Bob joined the team")
        await hoomi.server.post(cid, "beep", sender_id="bot")
        for client in (alice, bob):
            events = [(await client.expect("message"))["message"] for _ in range(2)]
            assert [(e["seq"], e["kind"], e["sender_id"], e["text"]) for e in events] == [
                (2, "system", "system", "Bob joined the team"),
                (3, "system", "bot", "beep"),
            ]
            assert ["client_msg_id" in e for e in events] == [False, False]
        page = await bob.request("history", conversation_id=cid)
        assert [(m["seq"], m["sender_id"]) for m in page["messages"]] == [
            (1, "alice"),
            (2, "system"),
            (3, "bot"),
        ]


@pytest.mark.requirement("HOOMI-SEND-4")
async def test_text_length_counts_unicode_code_points(tmp_path: pathlib.Path) -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one grapheme, five code points
    accented = "e" + "\u0301" * 4  # one grapheme, five code points
    async with running_server(tmp_path, max_text_chars=5) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        await alice.expect("presence")
        texts = [
            ("\U0001f600" * 5, True),  # 10 UTF-16 units, 20 UTF-8 bytes
            ("\U0001f600" * 6, False),
            (family, True),
            (family + "x", False),
            (accented, True),
            (accented + "\u0301", False),
        ]
        for n, (text, fits) in enumerate(texts):
            reply = await alice.request(
                "send", conversation_id=cid, client_msg_id=f"k{n}", text=text
            )
            if fits:
                assert reply["type"] == "ack", (text, reply)
            else:
                assert_error(reply, "too_large", path="$.text")
        got = [(await bob.expect("message"))["message"]["text"] for _ in range(3)]
        assert got == ["\U0001f600" * 5, family, accented]
        await bob.silent(0.2)
        assert (await hoomi.store.conversation(cid)).latest_seq == 3


# -- history and resume ------------------------------------------------------------------------


@pytest.mark.requirement("HOOMI-HISTORY-2")
async def test_history_limit_defaults_and_is_clamped_to_history_page_max(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, history_page_max=3) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["alice"])
        cid = group.conversation_id
        for n in range(5):
            await hoomi.server.post(cid, f"m{n}")
        alice = await hoomi.connect("alice")
        assert alice.welcome["limits"]["history_page_max"] == 3

        async def page(**bounds: int) -> tuple[list[int], bool]:
            reply = await alice.request("history", conversation_id=cid, **bounds)
            assert reply["type"] == "history_page", reply
            return [m["seq"] for m in reply["messages"]], reply["has_more"]

        assert await page() == ([3, 4, 5], True)
        assert await page(limit=1000) == ([3, 4, 5], True)
        assert await page(limit=2) == ([4, 5], True)
        assert await page(after_seq=0, limit=1000) == ([1, 2, 3], True)
        assert await page(before_seq=3, limit=4) == ([1, 2], False)


@pytest.mark.requirement("HOOMI-RESUME-1", "HOOMI-HELLO-1")
async def test_resume_ignores_foreign_conversations_and_refuses_a_repeated_one(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        foreign = await hoomi.server.create_conversation(kind="group", members=["bob", "carol"])
        cid = dm.conversation_id
        for n in range(3):
            await hoomi.server.post(cid, f"m{n}")
            await hoomi.server.post(foreign.conversation_id, f"secret {n}")

        repeated = await hoomi.connect()
        twice = [{"conversation_id": cid, "after_seq": 0}, {"conversation_id": cid, "after_seq": 1}]
        await repeated.send({"type": "hello", "id": "h", "token": mint("alice"), "resume": twice})
        error = await repeated.recv()
        assert_error(error, "bad_request", path="$.resume[1].conversation_id")
        assert error["id"] == "h"
        assert await repeated.closed(skip_frames=False) == 4003

        positions = [
            {"conversation_id": foreign.conversation_id, "after_seq": 0},
            {"conversation_id": "c_nowhere", "after_seq": 0},
            {"conversation_id": cid, "after_seq": 1},
        ]
        alice = await hoomi.connect("alice", resume=positions)
        assert [c["conversation_id"] for c in alice.welcome["conversations"]] == [cid]
        replayed = [(await alice.expect("message"))["message"] for _ in range(2)]
        assert [(m["conversation_id"], m["seq"]) for m in replayed] == [(cid, 2), (cid, 3)]
        await alice.silent(0.3)  # nothing of the foreign conversation, no resume_gap


# -- read markers --------------------------------------------------------------------------------


@pytest.mark.requirement("HOOMI-READ-1", "HOOMI-READ-3")
async def test_read_markers_move_only_forward_clamped_and_only_by_read(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        for n in range(3):
            await hoomi.server.post(cid, f"m{n}", sender_id="bob", kind="user")
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        await alice.expect("presence")

        async def read(seq: int) -> None:
            assert (await alice.request("read", conversation_id=cid, seq=seq))["type"] == "ok"

        async def receipts(seq: int) -> None:
            for client in (alice, bob):
                receipt = await client.expect("receipt")
                assert (receipt["user_id"], receipt["seq"]) == ("alice", seq)

        await read(2)
        await receipts(2)
        await read(1)  # backwards: nothing moves, nobody hears of it
        await read(2)  # the same place: nothing moves either
        await alice.silent(0.2)
        await bob.silent(0)
        await read(99)  # beyond latest_seq: clamped to it
        await receipts(3)
        # Sending moves no marker and causes no receipt, neither for bob nor for alice.
        for sender, other, key, seq in ((bob, alice, "b3", 4), (alice, bob, "a4", 5)):
            frame = {"type": "send", "id": key, "conversation_id": cid, "client_msg_id": key}
            await sender.send({**frame, "text": key})
            own = [await sender.recv() for _ in range(2)]  # in either order
            assert sorted((f["type"], f.get("id")) for f in own) == [
                ("ack", key),
                ("message", None),
            ]
            assert (await other.expect("message"))["message"]["seq"] == seq
        await alice.silent(0.2)
        await bob.silent(0)

        def marker(welcome: dict[str, Any]) -> tuple[int, int, int]:
            [conv] = welcome["conversations"]
            return conv["latest_seq"], conv["read_seq"], conv["unread"]

        # alice read up to 3; above it, bob's 4 is unread and her own 5 is not.
        assert marker((await hoomi.connect("alice")).welcome) == (5, 3, 1)
        # bob never read: of 1..5 only alice's 5 is unread, his own four are not.
        assert marker((await hoomi.connect("bob")).welcome) == (5, 0, 1)


# -- limits --------------------------------------------------------------------------------------

DEFAULT_LIMITS: Final[dict[str, Any]] = {
    "max_frame_bytes": 65536,
    "max_text_chars": 4000,
    "history_page_max": 100,
    "replay_max": 1000,
    "rate_per_s": 20.0,
    "rate_burst": 40,
    "typing_ttl_ms": 5000,
}
CONFIGURED_LIMITS: Final[dict[str, Any]] = {
    "max_frame_bytes": 4096,
    "max_text_chars": 50,
    "history_page_max": 7,
    "replay_max": 9,
    "rate_per_s": 2.5,
    "rate_burst": 3,
    "typing_ttl_ms": 1500,
}


@pytest.mark.requirement("HOOMI-LIMIT-1")
async def test_welcome_announces_every_limit_with_its_default_or_configured_value(
    tmp_path: pathlib.Path,
) -> None:
    schema = json.loads((SPEC / "schemas" / "common.json").read_text(encoding="utf-8"))
    assert set(DEFAULT_LIMITS) == set(schema["$defs"]["Limits"]["required"])
    async with running_server(tmp_path, "defaults.db") as hoomi:
        assert (await hoomi.connect("alice")).welcome["limits"] == DEFAULT_LIMITS
    async with running_server(tmp_path, "configured.db", **CONFIGURED_LIMITS) as hoomi:
        assert (await hoomi.connect("alice")).welcome["limits"] == CONFIGURED_LIMITS


@pytest.mark.requirement("HOOMI-LIMIT-2")
async def test_a_rate_limited_request_is_not_executed_and_the_bucket_starts_full(
    tmp_path: pathlib.Path,
) -> None:
    # One token per 1000 s: nothing refills during the test, however slow the machine.
    async with running_server(tmp_path, rate_per_s=0.001, rate_burst=2) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["alice"])
        cid = group.conversation_id
        alice = await hoomi.connect("alice")  # the hello took no token
        for n in range(3):
            await alice.send(
                {
                    "type": "send",
                    "id": f"s{n}",
                    "conversation_id": cid,
                    "client_msg_id": f"k{n}",
                    "text": "x",
                }
            )
        replies: dict[str, dict[str, Any]] = {}
        while len(replies) < 3:
            frame = await alice.recv()
            if "id" in frame:
                replies[frame["id"]] = frame
        assert [replies[f"s{n}"]["type"] for n in range(3)] == ["ack", "ack", "error"]
        refused = replies["s2"]
        assert_error(refused, "rate_limited")
        assert 999_000 < refused["retry_after_ms"] <= 1_000_001
        refused_again = await alice.request("ping")
        assert_error(refused_again, "rate_limited")
        await alice.send({"type": "ping", "id": "third"})  # a third refusal in a row: closed
        assert await alice.closed() == 4006
        page = await hoomi.store.history(cid, limit=10)
        assert [m.seq for m in page.messages] == [1, 2]


# -- the state machine and close codes ---------------------------------------------------------

Provoke = Callable[[Running], Awaitable[RawClient]]


async def _ready(hoomi: Running) -> RawClient:
    raw = await RawClient.open(hoomi.server.ports[0])
    await hello_raw(raw)
    return raw


async def _sending(
    hoomi: Running, opcode: int, payload: bytes, *, ready: bool, **options: Any
) -> RawClient:
    raw = await (_ready(hoomi) if ready else RawClient.open(hoomi.server.ports[0]))
    await raw.send_frame(opcode, payload, **options)
    return raw


async def _hello_with(hoomi: Running, token: str) -> RawClient:
    raw = await RawClient.open(hoomi.server.ports[0])
    await raw.send_frame(0x1, orjson.dumps({"type": "hello", "id": "h", "token": token}))
    return raw


async def _second_session(hoomi: Running) -> RawClient:
    await hoomi.connect("alice")
    return await _hello_with(hoomi, mint("alice"))


async def _kicked(hoomi: Running) -> RawClient:
    raw = await _ready(hoomi)
    [session] = hoomi.server.by_user["alice"]
    assert hoomi.server.kick(session.id)
    return raw


async def _drained(hoomi: Running) -> RawClient:
    raw = await _ready(hoomi)
    hoomi.server.drain()
    return raw


CLOSES: Final[dict[tuple[str, str], tuple[dict[str, Any], Provoke]]] = {
    ("awaiting_hello", "no_subprotocol"): (
        {},
        lambda h: RawClient.open(h.server.ports[0], "chat.v2"),
    ),
    ("awaiting_hello", "request"): (
        {},
        lambda h: _sending(h, 0x1, b'{"type":"ping","id":"p"}', ready=False),
    ),
    ("awaiting_hello", "bad_frame"): ({}, lambda h: _sending(h, 0x1, b"not json", ready=False)),
    ("awaiting_hello", "binary_frame"): ({}, lambda h: _sending(h, 0x2, b"\x00", ready=False)),
    ("awaiting_hello", "frame_too_big"): (
        {},
        lambda h: _sending(h, 0x1, b" " * 16385, ready=False),
    ),
    ("awaiting_hello", "hello_deadline"): (
        {"hello_timeout_ms": 200},
        lambda h: RawClient.open(h.server.ports[0]),
    ),
    ("authenticating", "hello_refused"): (
        {},
        lambda h: _hello_with(h, mint("alice", secret=WRONG_SECRET)),
    ),
    ("authenticating", "hello_expired"): ({}, lambda h: _hello_with(h, mint("alice", ttl_s=-60))),
    ("authenticating", "hello_over_limit"): ({"max_connections_per_user": 1}, _second_session),
    ("ready", "binary_frame"): ({}, lambda h: _sending(h, 0x2, b"\x00", ready=True)),
    ("ready", "invalid_utf8"): ({}, lambda h: _sending(h, 0x1, b'{"id":"\xff"}', ready=True)),
    ("ready", "bad_framing"): ({}, lambda h: _sending(h, 0x1, b"{}", ready=True, masked=False)),
    ("ready", "frame_too_big"): (
        {"max_frame_bytes": 2048},
        lambda h: _sending(h, 0x1, b" " * 2049, ready=True),
    ),
    ("ready", "kick"): ({}, _kicked),
    ("ready", "drain"): ({}, _drained),
}


@pytest.mark.requirement("HOOMI-CLOSE-1", "HOOMI-STATE-1")
@pytest.mark.parametrize("key", list(CLOSES), ids=["/".join(k) for k in CLOSES])
async def test_each_close_is_the_tables_and_a_registered_code(
    tmp_path: pathlib.Path, key: tuple[str, str]
) -> None:
    # The expected code comes from the spec's data: the table's row names the close, the
    # registry gives its number and marks it reconnect or terminal.
    row = ROWS[key]
    registered = CLOSE_CODES[row["close"]]
    assert registered["action"] in ("reconnect", "terminal")
    settings, provoke = CLOSES[key]
    async with running_server(tmp_path, **settings) as hoomi:
        raw = await provoke(hoomi)
        errors: list[str] = []
        with trio.fail_after(5):
            while True:
                opcode, payload = await raw.next_frame()
                if opcode == 0x8:
                    code = int.from_bytes(payload[:2], "big")
                    break
                if opcode == 0x1 and (frame := orjson.loads(payload))["type"] == "error":
                    assert_error(frame, frame["code"], path=frame.get("path"))
                    errors.append(frame["code"])
        assert code == registered["code"]
        fixed = [row["error"]] if "error" in row else []
        assert errors == ((fixed or ["bad_request"]) if "reply_error" in row["actions"] else [])
        assert row["to"] == "closing"
        await raw.aclose()


@pytest.mark.requirement("HOOMI-STATE-1", "HOOMI-HELLO-1")
async def test_a_ready_session_stays_ready_through_the_tables_self_transitions(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        alice = await hoomi.connect("alice")
        [session] = hoomi.server.by_user["alice"]
        assert session.machine.state.value == ROWS[("authenticating", "hello_accepted")]["to"]
        steps: list[tuple[str, dict[str, Any] | str, str]] = [
            ("hello", {"type": "hello", "id": "h2", "token": mint("alice")}, "invalid_state"),
            ("bad_frame", "not json", "bad_request"),
            ("request", {"type": "ping", "id": "p"}, "pong"),
        ]
        for event, frame, reply in steps:
            row = ROWS[("ready", event)]
            await alice.send(frame)
            got = await alice.recv()
            assert (got["code"] if got["type"] == "error" else got["type"]) == reply
            assert row.get("error", reply) == reply
            assert session.machine.state.value == row["to"] == "ready"
