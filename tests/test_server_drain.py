"""How a draining server turns connections away (HOOMI-CLOSE-2), over real sockets: new TCP
connections are refused (the listener is closed), and a connection accepted before the drain
but upgraded after it is closed with going_away (1001) like every session."""

from __future__ import annotations

import pathlib

import orjson
import pytest
import trio
import trio.testing

from harness import RawClient, mint, running_server
from hoomi.server import transport


async def assert_refused(port: int) -> None:
    """Connecting fails with a refusal at the TCP level (nothing listens any more)."""
    with pytest.raises(OSError, match="all attempts to connect") as caught, trio.fail_after(5):
        await trio.open_tcp_stream("127.0.0.1", port)
    group = caught.value.__cause__
    assert isinstance(group, ExceptionGroup), caught.value
    assert group.subgroup(ConnectionRefusedError) is not None, group


@pytest.mark.requirement("HOOMI-CLOSE-2")
async def test_a_draining_server_refuses_new_tcp_connections(
    tmp_path: pathlib.Path, tls: bool
) -> None:
    async with running_server(tmp_path, tls=tls) as hoomi:
        port = hoomi.server.ports[0]
        alice = await hoomi.connect("alice")
        hoomi.server.drain()
        assert await alice.closed() == 1001
        await assert_refused(port)


@pytest.mark.requirement("HOOMI-CLOSE-2")
async def test_a_connection_accepted_before_a_drain_is_upgraded_then_closed_with_1001(
    tmp_path: pathlib.Path, tls: bool
) -> None:
    async with running_server(tmp_path, tls=tls) as hoomi:
        port = hoomi.server.ports[0]
        stream = await hoomi.stream()
        async with stream:
            # Every task blocked again: the server has accepted the socket and waits for the
            # upgrade request (over TLS, for the handshake before it).
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            hoomi.server.drain()
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            await assert_refused(port)
            late = await RawClient.upgrade(stream)
            assert await late.close_code() == 1001


@pytest.mark.requirement("HOOMI-CLOSE-2")
async def test_a_drain_delivers_what_is_queued_then_closes_with_1001(
    tmp_path: pathlib.Path, tls: bool
) -> None:
    # HOOMI-CLOSE-2 promises the close comes "after delivering what is queued": bob reads
    # nothing until his frames wait in the server's outbox (his receive buffer is tiny, so
    # the kernel holds little), then the drain starts, then he reads them all, in order.
    async with running_server(tmp_path, tls=tls) as hoomi:
        server = hoomi.server
        group = await server.create_conversation(kind="group", members=["bob"])
        bob = await RawClient.upgrade(await hoomi.stream(receive_buffer=4096))
        async with bob.stream:
            await bob.hello(mint("bob"))
            [session] = server.by_user["bob"]
            # More than the writer sends in one go (`_WRITE_BATCH`), so that frames wait
            # behind the write in progress, not only in it.
            text = "x" * 4000
            posted = 0
            while session.ws.queued * len(text) <= 2 * transport._WRITE_BATCH:
                await server.post(group.conversation_id, text)
                posted += 1
                assert posted < 1000, "the outbox never filled"
            server.drain()
            seqs = []
            while (frame := await bob.next_frame())[0] == 0x1:
                seqs.append(orjson.loads(frame[1])["message"]["seq"])
            assert seqs == list(range(1, posted + 1))
            assert frame == (0x8, (1001).to_bytes(2, "big") + b"server is draining")
