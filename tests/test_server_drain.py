"""How a draining server turns connections away (HOOMI-CLOSE-2), over real sockets: new TCP
connections are refused (the listener is closed), and a connection accepted before the drain
but upgraded after it is closed with going_away (1001) like every session."""

from __future__ import annotations

import pathlib

import pytest
import trio
import trio.testing

from harness import RawClient, running_server, upgrade_request


async def assert_refused(port: int) -> None:
    """Connecting fails with a refusal at the TCP level (nothing listens any more)."""
    with pytest.raises(OSError, match="all attempts to connect") as caught, trio.fail_after(5):
        await trio.open_tcp_stream("127.0.0.1", port)
    group = caught.value.__cause__
    assert isinstance(group, ExceptionGroup), caught.value
    assert group.subgroup(ConnectionRefusedError) is not None, group


async def test_a_draining_server_refuses_new_tcp_connections(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        port = hoomi.server.ports[0]
        alice = await hoomi.connect("alice")
        hoomi.server.drain()
        assert await alice.closed() == 1001
        await assert_refused(port)


async def test_a_connection_accepted_before_a_drain_is_upgraded_then_closed_with_1001(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        port = hoomi.server.ports[0]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            # Every task blocked again: the server has accepted the socket and waits for the
            # upgrade request.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            hoomi.server.drain()
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            await assert_refused(port)
            await stream.send_all(upgrade_request())
            late = RawClient(stream)
            with trio.fail_after(5):
                while b"\r\n\r\n" not in late.buffer:
                    late.buffer += await stream.receive_some(4096)
            head, late.buffer = late.buffer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 101"), head
            assert await late.close_code() == 1001
