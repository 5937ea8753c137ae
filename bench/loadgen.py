"""The load generator: picows WebSocket clients on asyncio (uvloop when installed).

One process, driven by the orchestrator (`bench.run`) over stdin and stdout:

    python -m bench.loadgen CONFIG_FILE   (JSON; the file is removed once read)

Each stdin line is one JSON command; each is answered by one JSON line on stdout. Commands:
`connect` (open `count` more authenticated connections, `concurrency` at a time), `publish`
(open loop: `rate` msg/s for `duration` s, tagged with `step`), `chat` (open loop over every
connection, each to its direct conversation), `closed` (closed loop: `window` sends in
flight per connection, for durable acks), `open` (open-loop sends, ack latency), `stats`,
`quit`. Every loop is bounded by a count and a deadline.

Latency is measured from the *scheduled* send time, which the sender writes into the message
text (`@step:sender:ns#`), so a late sender never hides server latency (no coordinated
omission). Clocks: `time.monotonic_ns` (CLOCK_MONOTONIC, one clock for every process).

Three wire dialects, one client frame: `hoomi` (hello + JWT, then `send`), `raw` (a broadcast
server: the same `send` JSON as a text frame, relayed as is) and `sio` (Engine.IO 4 /
Socket.IO 5 over WebSocket: `40` connect, `42["msg",{...}]` events, `2`/`3` pings).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pathlib
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

BUCKETS_PER_E = 50  # histogram resolution: buckets are 2% wide
HELLO_TIMEOUT_S = 15.0
Histogram = dict[int, int]


def bucket(latency_us: int) -> int:
    return int(math.log(latency_us + 1) * BUCKETS_PER_E) if latency_us > 0 else 0


def bucket_value_us(index: int) -> float:
    """A bucket's midpoint in microseconds."""
    return math.exp((index + 0.5) / BUCKETS_PER_E) - 1


def percentile_ms(hist: dict[int, int], q: float) -> float | None:
    """The q-th percentile (0..100) of a bucket histogram, in milliseconds."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = math.ceil(total * q / 100)
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bucket_value_us(index) / 1000
    return None


def merge(into: dict[int, int], other: dict[Any, int]) -> dict[int, int]:
    for key, count in other.items():
        into[int(key)] = into.get(int(key), 0) + count
    return into


class Client(WSListener):
    """One connection; frames go to the generator once the dialect's handshake is done."""

    def __init__(self, gen: Generator, user: int) -> None:
        super().__init__()
        self.gen = gen
        self.user = user
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.in_flight = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.gen.proto == "hoomi":
            hello = {
                "type": "hello",
                "id": "h",
                "token": self.gen.tokens.pop(self.user),
                "client": {"name": "hoomi-bench", "version": "1"},
            }
            transport.send(WSMsgType.TEXT, orjson.dumps(hello))
        elif self.gen.proto == "raw":
            self.ready.set_result(True)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                self._fail()
            return
        data = frame.get_payload_as_bytes()
        if self.ready.done():
            if self.gen.proto == "sio" and data == b"2":
                transport.send(WSMsgType.TEXT, b"3")
                return
            self.gen.on_data(self, data)
        elif self.gen.proto == "hoomi":
            self.ready.set_result(data.startswith(b'{"type":"welcome"'))
        elif data.startswith(b"0{"):
            transport.send(WSMsgType.TEXT, b"40")
        elif data.startswith(b"40"):
            self.ready.set_result(True)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gen.disconnected += 1
        self._fail()

    def _fail(self) -> None:
        if not self.ready.done():
            self.ready.set_result(False)


class Generator:
    def __init__(self, config: dict[str, Any]) -> None:
        self.url: str = config["url"]
        self.proto: str = config["proto"]
        self.secret: str = config.get("secret", "")
        self.base: int = config.get("user_base", 0)
        self.conversations: list[str] = config.get("conversations", ["c"])
        self.conv_mode: str = config.get("conv_mode", "single")
        self.sources: list[str] = config.get("sources", [])
        self.size: int = config.get("size", 100)
        self.clients: list[Client] = []
        self.tokens: dict[int, str] = {}
        self.disconnected = 0
        self.failed = 0
        self.frames = 0
        self.own = 0
        self.other = 0
        self.steps: dict[int, dict[int, int]] = {}
        self.counts: dict[int, int] = {}
        self.acks = 0
        self.ack_hist: dict[int, int] = {}
        self.closed_loop_until = 0
        self.window = 1
        self.sent = 0
        self._prefix = os.urandom(3).hex()
        self._pad = "x" * self.size

    # -- receiving -------------------------------------------------------------------------

    def on_data(self, client: Client, data: bytes) -> None:
        self.frames += 1
        at = data.find(b"@")
        if at >= 0:
            end = data.find(b"#", at)
            step_s, sender_s, ns_s = data[at + 1 : end].split(b":")
            if int(sender_s) == client.user:
                self.own += 1
                return
            step = int(step_s)
            latency_us = (time.monotonic_ns() - int(ns_s)) // 1000
            hist = self.steps.get(step)
            if hist is None:
                hist = self.steps[step] = {}
                self.counts[step] = 0
            self.counts[step] += 1
            index = bucket(latency_us)
            hist[index] = hist.get(index, 0) + 1
        elif data.startswith(b'{"type":"ack"'):
            ack = orjson.loads(data)
            latency_us = (time.monotonic_ns() - int(ack["id"][1:])) // 1000
            self.acks += 1
            index = bucket(latency_us)
            self.ack_hist[index] = self.ack_hist.get(index, 0) + 1
            client.in_flight -= 1
            if self.closed_loop_until and time.monotonic_ns() < self.closed_loop_until:
                while client.in_flight < self.window:
                    self.send(client, 0, time.monotonic_ns())
        else:
            self.other += 1

    # -- sending ---------------------------------------------------------------------------

    def conversation(self, user: int) -> str:
        if self.conv_mode == "pairs":
            return self.conversations[user // 2]
        if self.conv_mode == "own":
            return self.conversations[user - self.base]
        return self.conversations[0]

    def send(self, client: Client, step: int, scheduled_ns: int) -> None:
        if client.transport is None or client.transport.is_disconnected:
            return
        self.sent += 1
        marker = f"@{step}:{client.user}:{scheduled_ns}#"
        text = marker + self._pad[len(marker) :]
        frame = (
            f'{{"type":"send","id":"d{scheduled_ns}","conversation_id":'
            f'"{self.conversation(client.user)}","client_msg_id":"{self._prefix}-{self.sent}",'
            f'"text":"{text}"}}'
        )
        if self.proto == "sio":
            frame = f'42["msg",{frame}]'
        client.in_flight += 1
        client.transport.send(WSMsgType.TEXT, frame.encode())

    async def open_loop(
        self, rate: float, duration: float, step: int, pick: Callable[[int], Client]
    ) -> dict[str, Any]:
        """Send `rate`/s for `duration` s on schedule; late sends keep their scheduled time."""
        total = int(rate * duration)
        interval = 1e9 / rate
        start = time.monotonic_ns() + 2_000_000
        deadline = start + int((duration + 10) * 1e9)
        sent = 0
        max_lag = 0
        while sent < total:
            now = time.monotonic_ns()
            if now > deadline:
                break
            due = start + int(sent * interval)
            if due > now:
                # At least 1 ms: uvloop's timers have 1 ms resolution, and a shorter sleep
                # would spin. A send up to 1 ms late still carries its scheduled time.
                await asyncio.sleep(max(0.001, (due - now) / 1e9))
                continue
            max_lag = max(max_lag, now - due)
            while sent < total and start + int(sent * interval) <= now:
                self.send(pick(sent), step, start + int(sent * interval))
                sent += 1
        elapsed = (time.monotonic_ns() - start) / 1e9
        return {"sent": sent, "elapsed_s": elapsed, "max_send_lag_ms": max_lag / 1e6}

    # -- connecting ------------------------------------------------------------------------

    def _mint(self, users: range) -> None:
        if self.proto != "hoomi":
            return
        exp = int(time.time()) + 3600
        for user in users:
            claims = {"sub": f"u{user}", "exp": exp}
            self.tokens[user] = jwt.encode(claims, self.secret, algorithm="HS256")

    async def _connect_one(self, user: int, sem: asyncio.Semaphore) -> bool:
        async with sem:
            client = Client(self, user)
            extra: dict[str, Any] = {}
            if self.sources:
                extra["local_addr"] = (self.sources[user % len(self.sources)], 0)
            headers = [("Sec-WebSocket-Protocol", "hoomi.v1")] if self.proto == "hoomi" else []
            url = self.url
            if self.proto != "hoomi" and self.conv_mode != "single":
                # Peers have no conversations: the client names its room when it connects.
                url += f"{'&' if '?' in url else '?'}room={self.conversation(user)}"
            try:
                async with asyncio.timeout(HELLO_TIMEOUT_S):
                    await ws_connect(lambda: client, url, extra_headers=headers, **extra)
                    ok = await client.ready
            except (OSError, TimeoutError, RuntimeError, ValueError):
                ok = False
            if ok:
                self.clients.append(client)
            else:
                self.failed += 1
                if client.transport is not None:
                    client.transport.disconnect()
            return ok

    async def connect(self, count: int, concurrency: int) -> dict[str, Any]:
        first = self.base + len(self.clients) + self.failed
        users = range(first, first + count)
        self._mint(users)  # before the clock starts: minting is the backend's work
        sem = asyncio.Semaphore(concurrency)
        started = time.monotonic()
        results = await asyncio.gather(*(self._connect_one(u, sem) for u in users))
        elapsed = time.monotonic() - started
        return {"connected": sum(results), "failed": count - sum(results), "elapsed_s": elapsed}

    # -- commands --------------------------------------------------------------------------

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "connect":
            return await self.connect(cmd["count"], cmd.get("concurrency", 256))
        if name == "publish":
            clients = self.clients
            return await self.open_loop(
                cmd["rate"], cmd["duration"], cmd["step"], lambda k: clients[k % len(clients)]
            )
        if name == "chat":
            # Walk the users in a stride so that consecutive sends hit different pairs.
            clients = self.clients
            return await self.open_loop(
                cmd["rate"], cmd["duration"], cmd["step"], lambda k: clients[k % len(clients)]
            )
        if name == "open":
            clients = self.clients
            return await self.open_loop(
                cmd["rate"], cmd["duration"], 0, lambda k: clients[k % len(clients)]
            )
        if name == "closed":
            self.window = cmd.get("window", 1)
            self.closed_loop_until = time.monotonic_ns() + int(cmd["duration"] * 1e9)
            for client in self.clients:
                for _ in range(self.window):
                    self.send(client, 0, time.monotonic_ns())
            await asyncio.sleep(cmd["duration"])
            self.closed_loop_until = 0
            await asyncio.sleep(0.5)  # let in-flight acks land; they still count
            return {"sent": self.sent}
        if name == "stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return {
                "connected": len(self.clients),
                "failed": self.failed,
                "disconnected": self.disconnected,
                "frames": self.frames,
                "own": self.own,
                "other": self.other,
                "sent": self.sent,
                "counts": self.counts,
                "steps": self.steps,
                "acks": self.acks,
                "ack_hist": self.ack_hist,
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        if name == "reset":
            self.steps, self.counts, self.acks, self.ack_hist = {}, {}, 0, {}
            return {}
        if name == "quit":
            for client in self.clients:
                if client.transport is not None:
                    client.transport.disconnect(graceful=False)
            return {}
        raise ValueError(f"unknown command {name!r}")


async def _main(config: dict[str, Any]) -> None:
    gen = Generator(config)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    # Bounded: the orchestrator sends a finite script; EOF (it died) ends the process too.
    while line := await reader.readline():
        cmd = json.loads(line)
        result = await gen.command(cmd)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        if cmd["cmd"] == "quit":
            break
    await asyncio.sleep(0.1)


def main() -> None:
    path = pathlib.Path(sys.argv[1])
    config = json.loads(path.read_text())
    path.unlink()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(config))
    else:
        uvloop.run(_main(config))


if __name__ == "__main__":
    main()
