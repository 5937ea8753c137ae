"""Client SDK benchmark: cost per received message, and reconnect plus resume of 100.

Targets (issue 12): the SDK's cost per received message (decode, validate, dedupe, hand to
the app) <= 20 us; a reconnect plus the resume of 100 missed messages <= 50 ms on loopback.

1. Per message: `message` frames fed to the SDK's receive path (`Client._receive`: decode
   and validate, the state machine, the stream's dedupe, the event channel) with the app
   draining `events()`; beside it, in the same run, `orjson.loads` alone (the floor) and
   `decode_server` alone. The WebSocket framing (trio-websocket's) is not in the figure.
2. Resume: a `hoomi serve` process holds 100 messages; each round opens a connection with
   the SDK from seq 0 (`positions`) and times connect → hello → welcome → the 100th message
   handed to the app; beside it a bare trio-websocket client doing the same by hand.

    python bench/bench_client.py [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import jwt
import orjson
import trio
import trio_websocket

from hoomi.client import ClientSettings, ClientState, connect
from hoomi.client.client import Client, _Connection
from hoomi.protocol import codec, decode_server, encode
from hoomi.protocol.messages import ChatMessage, MessageEvent
from hoomi.server.sqlite_store import SqliteStore

SECRET = "bench-secret-of-sufficient-length-for-hs256"


def _frames(count: int) -> list[str]:
    return [
        encode(
            MessageEvent(
                message=ChatMessage(
                    conversation_id="c_bench",
                    seq=seq,
                    message_id=f"m_{seq:020d}",
                    sender_id="alice",
                    kind="user",
                    text="On my way, see you at the usual place",
                    sent_at=1_700_000_000_000 + seq,
                    client_msg_id=f"k{seq}",
                )
            )
        )
        for seq in range(1, count + 1)
    ]


async def _sdk_receive_us(frames: list[str]) -> float:
    async with trio.open_nursery() as nursery:
        client = Client(
            "ws://127.0.0.1:9/",
            token="t",
            token_provider=None,
            positions={"c_bench": 0},
            settings=ClientSettings(event_buffer=len(frames) + 1),
            nursery=nursery,
        )
        client._machine.state = ClientState.LIVE
        connection = _Connection(1, trio.CancelScope(), nursery, started_at=0.0)
        client._connection = connection
        started = time.perf_counter()
        for frame in frames:
            await client._receive(connection, frame)
        drained = 0
        while drained < len(frames):
            client.events().receive_nowait()
            drained += 1
        elapsed = time.perf_counter() - started
        assert client.streams.position("c_bench") == len(frames)
        nursery.cancel_scope.cancel()
    return elapsed / len(frames) * 1e6


def per_message(quick: bool) -> dict[str, float]:
    count, repeat = (2_000, 3) if quick else (20_000, 7)
    frames = _frames(count)
    codec.warm_up()

    def best(fn: Callable[[], float]) -> float:
        return min(fn() for _ in range(repeat))

    def loads_only() -> float:
        started = time.perf_counter()
        for frame in frames:
            orjson.loads(frame)
        return (time.perf_counter() - started) / count * 1e6

    def decode_only() -> float:
        started = time.perf_counter()
        for frame in frames:
            decode_server(frame)
        return (time.perf_counter() - started) / count * 1e6

    return {
        "sdk receive (decode+validate+dedupe+hand over)": best(
            lambda: trio.run(_sdk_receive_us, frames)
        ),
        "baseline decode_server alone": best(decode_only),
        "baseline orjson.loads alone": best(loads_only),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, "HS256")


async def _seed(database: pathlib.Path, count: int) -> str:
    store = SqliteStore(database)
    await store.open()
    dm = await store.create_conversation(
        kind="direct", members=["alice", "bob"], title=None, now_ms=0
    )
    for n in range(count):
        await store.append(
            conversation_id=dm.conversation_id,
            sender_id="alice",
            client_msg_id=f"k{n}",
            text=f"message {n}",
            kind="user",
            now_ms=n,
        )
    await store.aclose()
    return dm.conversation_id


async def _resume_rounds(url: str, cid: str, rounds: int, missed: int) -> dict[str, list[float]]:
    sdk, bare = [], []
    settings = ClientSettings()
    for _ in range(rounds):
        started = time.perf_counter()
        async with connect(url, token=_token("bob"), positions={cid: 0}, settings=settings) as c:
            got = 0
            async for event in c.events():
                if isinstance(event, ChatMessage):
                    got += 1
                    if got == missed:
                        break
        sdk.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        async with trio_websocket.open_websocket_url(url, subprotocols=["hoomi.v1"]) as ws:
            resume = [{"conversation_id": cid, "after_seq": 0}]
            hello = {"type": "hello", "id": "h", "token": _token("bob"), "resume": resume}
            await ws.send_message(json.dumps(hello))
            got = 0
            while got < missed:
                if orjson.loads(await ws.get_message())["type"] == "message":
                    got += 1
        bare.append((time.perf_counter() - started) * 1000)
    return {"sdk": sdk, "bare": bare}


def resume(quick: bool, missed: int = 100) -> dict[str, float]:
    rounds = 5 if quick else 30
    with tempfile.TemporaryDirectory() as tmp:
        database = pathlib.Path(tmp) / "bench.db"
        cid = trio.run(_seed, database, missed)
        port = _free_port()
        env = {**os.environ, "HOOMI_JWT_SECRET": SECRET, "HOOMI_DATABASE": str(database)}
        server = subprocess.Popen(
            [sys.executable, "-m", "hoomi.cli.main", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            times = trio.run(_resume_rounds, f"ws://127.0.0.1:{port}/", cid, rounds, missed)
        finally:
            server.terminate()
            server.wait(timeout=20)
    return {
        "sdk median ms": statistics.median(times["sdk"]),
        "sdk max ms": max(times["sdk"]),
        "bare trio-websocket median ms": statistics.median(times["bare"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    args = parser.parse_args()
    figures = per_message(args.quick)
    resumed = resume(args.quick)
    sdk_us = figures["sdk receive (decode+validate+dedupe+hand over)"]
    result = {
        "us_per_message": figures,
        "resume_100": resumed,
        "ratios": {
            "sdk receive vs decode_server alone": sdk_us / figures["baseline decode_server alone"],
            "sdk resume vs bare client": resumed["sdk median ms"]
            / resumed["bare trio-websocket median ms"],
        },
        "targets": {"sdk receive us": 20.0, "resume 100 ms": 50.0},
    }
    print("client SDK, best of repeats (us/message)")
    for name, value in figures.items():
        print(f"  {name:48} {value:8.2f}")
    print(f"  target <= 20 us: {'met' if sdk_us <= 20 else 'MISSED'}")
    print("reconnect + resume of 100 missed messages (ms)")
    for name, value in resumed.items():
        print(f"  {name:48} {value:8.2f}")
    print(f"  target <= 50 ms: {'met' if resumed['sdk median ms'] <= 50 else 'MISSED'}")
    for name, ratio in result["ratios"].items():
        print(f"  {name:48} {ratio:6.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
