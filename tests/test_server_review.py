"""Regressions found in review: each once crashed the server, lost or leaked a message, or
let a client grow the server's memory without bound."""

from __future__ import annotations

import pathlib

import orjson
import trio
import trio.lowlevel

from harness import RawClient, Running, mint, running_server, upgrade_request


async def _alive(hoomi: Running) -> None:
    client = await hoomi.connect("witness")
    assert client.welcome["type"] == "welcome"


async def test_nothing_before_the_session_exists_can_end_the_server(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, hello_timeout_ms=200) as hoomi:
        port = hoomi.server.ports[0]
        idle = await trio.open_tcp_stream("127.0.0.1", port)  # never upgrades
        reset = await trio.open_tcp_stream("127.0.0.1", port)
        await reset.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        reset.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        await reset.aclose()  # RST in the middle of the upgrade
        idna = await trio.open_tcp_stream("127.0.0.1", port)
        await idna.send_all(upgrade_request(drop=("Host",), add=("Host: xn--zz",)))
        lf_only = await trio.open_tcp_stream("127.0.0.1", port)
        await lf_only.send_all(upgrade_request().replace(b"\r\n", b"\n"))
        with trio.fail_after(5):
            assert (await lf_only.receive_some(12)).startswith(b"HTTP/1.1 101")
            assert await idle.receive_some(10) == b""  # closed at the hello deadline
        for stream in (idle, idna, lf_only):
            await stream.aclose()
        await _alive(hoomi)


async def test_a_ping_flood_from_a_client_that_never_reads_stays_bounded(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        raw = await RawClient.open(hoomi.server.ports[0])
        await raw.send_frame(0x1, orjson.dumps({"type": "hello", "id": "h", "token": mint("a")}))
        ping = bytes([0x89, 0x80 | 100]) + b"\0\0\0\0" + b"p" * 100
        with trio.move_on_after(2):
            for _ in range(50):
                await raw.stream.send_all(ping * 2000)  # 20 MB, none of it read back
        [session] = hoomi.server.sessions.values()
        assert session.ws.queued <= 10  # pongs beyond a small budget are not answered
        await raw.aclose()
        await _alive(hoomi)


async def test_empty_fragments_cannot_pile_up(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        raw = await RawClient.open(hoomi.server.ports[0])
        await raw.send_frame(0x1, orjson.dumps({"type": "hello", "id": "h", "token": mint("a")}))
        await raw.next_frame()
        await raw.send_frame(0x1, b"", fin=False)
        empty = bytes([0x00, 0x80]) + b"\0\0\0\0"
        with trio.move_on_after(2):
            await raw.stream.send_all(empty * 5000)
        assert await raw.close_code() == 1009
        await raw.aclose()


async def test_the_outbox_is_bounded_in_bytes_too(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, outbox_bytes=2_000_000, rate_burst=1000) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["a"])
        for _ in range(100):
            await hoomi.server.post(group.conversation_id, "\x01" * 4000)  # 6 bytes each as JSON
        raw = await RawClient.open(hoomi.server.ports[0])
        await raw.send_frame(0x1, orjson.dumps({"type": "hello", "id": "h", "token": mint("a")}))
        page = {"type": "history", "conversation_id": group.conversation_id}
        for i in range(40):  # ~2.4 MB replies to a client that never reads
            await raw.send_frame(0x1, orjson.dumps({**page, "id": f"q{i}"}))
        assert await raw.close_code(within=10) == 4005
        await raw.aclose()


async def test_a_member_added_while_a_message_commits_learns_of_it(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        server = hoomi.server
        other = await server.create_conversation(kind="group", members=["alice", "bob"])
        group = await server.create_conversation(kind="group", members=["alice"])
        cid = group.conversation_id
        bob = await hoomi.connect("bob")
        async with trio.open_nursery() as nursery:  # one batch: add bob, then a message
            nursery.start_soon(server.post, other.conversation_id, "x")
            await trio.lowlevel.checkpoint()
            nursery.start_soon(server.add_member, cid, "bob")
            await trio.lowlevel.checkpoint()
            nursery.start_soon(server.post, cid, "hello bob")
        joined = await bob.expect("conversation_joined", skip=("message",))
        latest = joined["conversation"]["latest_seq"]
        seen: set[int] = set()
        with trio.move_on_after(0.5):
            while True:
                frame = await bob.recv()
                if frame["type"] == "message" and frame["message"]["conversation_id"] == cid:
                    seen.add(frame["message"]["seq"])
        assert latest == 1 or seen == {1}, "the message is either announced or delivered"


async def test_membership_changes_during_a_hello_are_not_lost(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        server = hoomi.server
        group = await server.create_conversation(kind="group", members=["alice", "eve"])
        cid = group.conversation_id
        real = server.store.conversations_of

        async def slow(user: str) -> list[object]:
            views = await real(user)
            await trio.sleep(0.3)
            return views  # type: ignore[return-value]

        server.store.conversations_of = slow  # type: ignore[assignment,method-assign]

        async def remove_later() -> None:
            await trio.sleep(0.1)
            await server.remove_member(cid, "eve")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(remove_later)
            eve = await hoomi.connect("eve")
        server.store.conversations_of = real  # type: ignore[method-assign]
        assert eve.welcome["conversations"] == []
        alice = await hoomi.connect("alice")
        await alice.request("send", conversation_id=cid, client_msg_id="k", text="after eve left")
        await eve.silent(0.3)
        assert (await eve.request("history", conversation_id=cid))["code"] == "forbidden"


async def test_a_long_replay_does_not_close_a_client_that_reads(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, outbox_size=64) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["alice"])
        cid = group.conversation_id
        async with trio.open_nursery() as nursery:
            for _ in range(600):
                nursery.start_soon(hoomi.server.post, cid, "y" * 3000)
        alice = await hoomi.connect("alice", resume=[{"conversation_id": cid, "after_seq": 0}])
        seqs = [(await alice.expect("message"))["message"]["seq"] for _ in range(600)]
        assert seqs == list(range(1, 601))


async def test_a_refresh_with_an_expired_token_is_token_expired_and_changes_nothing(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        alice = await hoomi.connect("alice")
        reply = await alice.request("refresh", token=mint("alice", ttl_s=-60))
        assert (reply["type"], reply["code"]) == ("error", "token_expired")
        assert (await alice.request("ping"))["type"] == "pong"
        session = next(iter(hoomi.server.sessions.values()))
        assert session.expires_at_ms == alice.welcome["token_expires_at"]
