"""A relay on Hoomi's own transport (Trio + `hoomi.server.transport`), without the protocol:
every text frame goes to every client, or, for a client that connected with ``?room=NAME``,
to the other clients of that room.

    python -m bench.peers.trio_relay PORT

The same upgrade, frame parser, non-blocking writes and task-per-connection as Hoomi, but no
auth, no codec, no store, no acks: the floor of Hoomi's stack, so that a scenario shows how
much of Hoomi's cost is the transport and how much is the protocol and the store.
"""

from __future__ import annotations

import collections
import sys
import urllib.parse

import trio

from hoomi.server.transport import Closed, Handshake, Text, WebSocket, text_frame

CLIENTS: set[WebSocket] = set()
ROOMS: dict[str, set[WebSocket]] = collections.defaultdict(set)


async def handler(stream: trio.SocketStream) -> None:
    ws = WebSocket(
        stream,
        max_frame_bytes=65536,
        outbox_size=1024,
        outbox_bytes=4 << 20,
        raw_fd=stream.socket.fileno(),
    )
    handshake = await ws.accept(lambda _: None)
    if handshake is None:
        await ws.aclose()
        return
    members = _members(handshake)
    members.add(ws)
    try:
        async with trio.open_nursery() as nursery:
            ws.run_writer_in(nursery)
            while True:
                incoming = await ws.receive()
                if isinstance(incoming, Closed):
                    break
                if isinstance(incoming, Text):
                    frame = text_frame(incoming.data.encode())
                    for member in members:
                        if member is not ws or members is CLIENTS:
                            member.send_nowait(frame)
            nursery.cancel_scope.cancel()
    finally:
        members.discard(ws)
        await ws.aclose()


def _members(handshake: Handshake) -> set[WebSocket]:
    room = urllib.parse.parse_qs(handshake.query).get("room", [None])[0]
    return ROOMS[room] if room is not None else CLIENTS


async def main(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    print(f"listening on {port}", flush=True)
    await trio.serve_listeners(handler, listeners)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
