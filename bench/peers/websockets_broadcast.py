"""A minimal `websockets` (asyncio) relay: every text frame goes to every client, or, for a
client that connected with ``?room=NAME``, to the other clients of that room.

    python -m bench.peers.websockets_broadcast PORT

`broadcast()` writes without awaiting slow clients (websockets' recommended fan-out).
No auth, no persistence, no acks: a floor for what a Python WebSocket server costs.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import urllib.parse

from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()
ROOMS: dict[str, set[ServerConnection]] = collections.defaultdict(set)


async def handler(websocket: ServerConnection) -> None:
    assert websocket.request is not None
    query = urllib.parse.urlsplit(websocket.request.path).query
    room = urllib.parse.parse_qs(query).get("room", [None])[0]
    members = ROOMS[room] if room is not None else CLIENTS
    members.add(websocket)
    try:
        async for message in websocket:
            if room is None:
                broadcast(CLIENTS, message)
            else:
                broadcast([m for m in members if m is not websocket], message)
    finally:
        members.discard(websocket)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None) as server:
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
