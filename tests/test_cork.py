"""`Cork`: frames written inside ``with cork:`` reach each socket in one write, in order."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from hoomi.server.transport import Cork, WebSocket, text_frame


@contextmanager
def _pair(cork: Cork, *, outbox_size: int = 8) -> Iterator[tuple[WebSocket, socket.socket]]:
    """A server-side WebSocket on one end of a real socket pair; the plain socket is the client."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
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


async def test_frames_are_held_until_the_outermost_block_ends_then_written_at_once() -> None:
    cork = Cork()
    with _pair(cork) as (a, client_a), _pair(cork) as (b, client_b):
        _one_write_per_socket(cork, a, client_a, b, client_b)


def _one_write_per_socket(
    cork: Cork, a: WebSocket, client_a: socket.socket, b: WebSocket, client_b: socket.socket
) -> None:
    frames = [text_frame(b'{"n":%d}' % i) for i in range(4)]
    with cork:
        assert a.send_nowait(frames[0])
        assert b.send_nowait(frames[1])
        with cork:
            assert a.send_nowait(frames[2])
        assert _pending(client_a) == b""  # the inner block's end writes nothing
        assert a.send_nowait(frames[3])
        assert _pending(client_a) == _pending(client_b) == b""
    assert _pending(client_a) == frames[0] + frames[2] + frames[3]
    assert _pending(client_b) == frames[1]
    assert a.send_nowait(frames[0])  # uncorked again: straight to the socket
    assert _pending(client_a) == frames[0]


async def test_a_close_inside_the_block_follows_the_held_frames_and_ends_the_stream() -> None:
    cork = Cork()
    with _pair(cork) as (ws, client):
        with cork:
            ws.send_nowait(text_frame(b"first"))
            ws.close_nowait(1001, "going away")
            ws.send_nowait(text_frame(b"dropped"))  # after a close nothing more is sent
        close = bytes((0x88, 12)) + (1001).to_bytes(2, "big") + b"going away"
        assert _pending(client) == text_frame(b"first") + close


async def test_frames_behind_a_queue_keep_their_place_and_its_bound() -> None:
    cork = Cork()
    with _pair(cork, outbox_size=2) as (ws, client):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = text_frame(b"x" * 500_000)  # more than the socket takes: the rest is queued
        async with trio.open_nursery() as nursery:
            assert ws.send_nowait(big)
            assert ws.queued == 1
            with cork:
                # A queue exists, so these are queued behind it (bounded), not held.
                assert ws.send_nowait(text_frame(b"second"))
                assert not ws.send_nowait(text_frame(b"over the bound"))
            assert ws.queued == 2
            ws.run_writer_in(nursery)
            received = b""
            expected = big + text_frame(b"second")
            with trio.fail_after(5):
                while len(received) < len(expected):
                    await trio.lowlevel.wait_readable(client)
                    received += _pending(client)
            assert received == expected
            await ws.flushed()
