"""python-socketio rooms on aiohttp: a `msg` event is emitted to everyone in one room.

    python -m bench.peers.python_socketio_rooms PORT

WebSocket transport only (clients connect with transport=websocket). No auth, no
persistence, no acks.
"""

from __future__ import annotations

import sys
from typing import Any

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"])


async def on_connect(sid: str, environ: dict[str, Any]) -> None:
    await sio.enter_room(sid, "room")


async def on_msg(sid: str, data: Any) -> None:
    await sio.emit("msg", data, room="room")


def main(port: int) -> None:
    sio.on("connect", on_connect)
    sio.on("msg", on_msg)
    app = web.Application()
    sio.attach(app)
    print(f"listening on {port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
