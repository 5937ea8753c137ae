"""A minimal `websockets` (asyncio) broadcast server: every text frame goes to every client.

    python -m bench.peers.websockets_broadcast PORT

`broadcast()` writes without awaiting slow clients (websockets' recommended fan-out).
No auth, no persistence, no acks: a floor for what a Python WebSocket server costs.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(websocket)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None) as server:
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
