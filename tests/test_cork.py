"""`Cork`: frames written inside ``with cork:`` reach each socket in one write, in order."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from hoomi.server.transport import Cork, WebSocket, text_frame


@contextmanager
def _pair(
    cork: Cork, *, outbox_size: int = 8, small: bool = False
) -> Iterator[tuple[WebSocket, socket.socket]]:
    """A server-side WebSocket on one end of a real socket pair; the plain socket is the client.
    `small`: a 4 KB send buffer, which a 100 KB frame overflows."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    if small:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with ours, theirs:
        yield _websocket(ours, cork, outbox_size), theirs


def _websocket(ours: socket.socket, cork: Cork, outbox_size: int) -> WebSocket:
    return WebSocket(
        trio.SocketStream(trio.socket.from_stdlib_socket(ours)),
        max_frame_bytes=1 << 20,
        outbox_size=outbox_size,
        outbox_bytes=1 << 20,
        raw_fd=ours.fileno(),
        cork=cork,
    )


def _pending(sock: socket.socket) -> bytes:
    """What the client could read right now, without waiting."""
    try:
        return sock.recv(1 << 20, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


async def test_frames_are_held_until_the_outermost_block_ends_then_written_at_once(
    writev_calls: list[int],
) -> None:
    cork = Cork()
    with _pair(cork) as (a, client_a), _pair(cork) as (b, client_b):
        frames = [text_frame(b'{"n":%d}' % i) for i in range(4)]
        with cork:
            assert a.send_nowait(frames[0])
            assert b.send_nowait(frames[1])
            with cork:
                assert a.send_nowait(frames[2])
            assert _pending(client_a) == b""  # the inner block's end writes nothing
            assert a.send_nowait(frames[3])
            assert _pending(client_a) == _pending(client_b) == b""
        assert sorted(writev_calls) == [1, 3]  # one system call per socket
        assert _pending(client_a) == frames[0] + frames[2] + frames[3]
        assert _pending(client_b) == frames[1]
        assert a.send_nowait(frames[0])  # uncorked again: straight to the socket
        assert _pending(client_a) == frames[0]


async def test_a_close_inside_the_block_follows_the_held_frames_and_later_ones_are_dropped() -> (
    None
):
    cork = Cork()
    with _pair(cork) as (ws, client):
        with cork:
            ws.send_nowait(text_frame(b"first"))
            ws.close_nowait(1001, "going away")
            ws.send_nowait(text_frame(b"dropped"))  # after a close nothing more is sent
            assert _pending(client) == b""
        close = bytes((0x88, 12)) + (1001).to_bytes(2, "big") + b"going away"
        assert _pending(client) == text_frame(b"first") + close


async def test_what_the_socket_does_not_take_is_queued_in_order() -> None:
    cork = Cork()
    with _pair(cork, outbox_size=2, small=True) as (ws, client):
        big = text_frame(b"x" * 100_000)  # more than the socket takes
        frames = [text_frame(b"first"), big, text_frame(b"after"), text_frame(b"last")]
        async with trio.open_nursery() as nursery:
            with cork:
                for frame in frames:
                    assert ws.send_nowait(frame)
            # Queued frame by frame, the cut one first: the bound counts frames again.
            assert ws.queued == 3
            assert not ws.send_nowait(text_frame(b"over the bound"))
            ws.run_writer_in(nursery)
            await _received(client, b"".join(frames))
            await ws.flushed()


async def test_frames_behind_a_queue_keep_their_place_and_its_bound() -> None:
    cork = Cork()
    with _pair(cork, outbox_size=2, small=True) as (ws, client):
        big = text_frame(b"x" * 100_000)  # more than the socket takes: the rest is queued
        async with trio.open_nursery() as nursery:
            assert ws.send_nowait(big)
            assert ws.queued == 1
            with cork:
                # A queue exists, so these are queued behind it (bounded), not held.
                assert ws.send_nowait(text_frame(b"second"))
                assert not ws.send_nowait(text_frame(b"over the bound"))
            assert ws.queued == 2
            ws.run_writer_in(nursery)
            await _received(client, big + text_frame(b"second"))
            await ws.flushed()


async def _received(client: socket.socket, expected: bytes) -> None:
    received = b""
    with trio.fail_after(5):
        while len(received) < len(expected):
            await trio.lowlevel.wait_readable(client)
            received += _pending(client)
    assert received == expected
