"""python-socketio rooms on aiohttp: a `msg` event is emitted to everyone in one room (or,
with ``?room=NAME``, to the others in that room).

    python -m bench.peers.python_socketio_rooms PORT

WebSocket transport only (clients connect with transport=websocket). No auth, no
persistence, no acks.
"""

from __future__ import annotations

import sys
import urllib.parse
from typing import Any

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"])


ROOM_OF: dict[str, str | None] = {}


async def on_connect(sid: str, environ: dict[str, Any]) -> None:
    # `?room=NAME`: relay to the others in that room; otherwise everyone is in one room.
    room = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("room", [None])[0]
    ROOM_OF[sid] = room
    await sio.enter_room(sid, room or "room")


async def on_disconnect(sid: str) -> None:
    ROOM_OF.pop(sid, None)


async def on_msg(sid: str, data: Any) -> None:
    room = ROOM_OF.get(sid)
    if room is None:
        await sio.emit("msg", data, room="room")
    else:
        await sio.emit("msg", data, room=room, skip_sid=sid)


def main(port: int) -> None:
    sio.on("connect", on_connect)
    sio.on("disconnect", on_disconnect)
    sio.on("msg", on_msg)
    app = web.Application()
    sio.attach(app)
    print(f"listening on {port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
