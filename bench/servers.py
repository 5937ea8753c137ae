"""The servers under test and the load-generator processes: start, wait, measure, stop.

Every process started here is registered with a `Processes` stack and killed in its
`close` (always called from a `finally`), so a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import psutil
import trio

REPO = pathlib.Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "bench" / "peers" / "node"
SECRET = "bench-secret-not-for-production-0123456789"


@dataclass(frozen=True)
class Peer:
    name: str
    proto: str  # the load generator's dialect: hoomi, raw or sio
    features: str


PEERS: dict[str, Peer] = {
    "hoomi": Peer(
        "hoomi",
        "hoomi",
        "JWT auth, SQLite persistence (fsync per commit), acks, per-conversation seq",
    ),
    "node-ws": Peer("node-ws", "raw", "relay only: no auth, no persistence, no acks"),
    "websockets": Peer("websockets", "raw", "relay only: no auth, no persistence, no acks"),
    "trio-relay": Peer(
        "trio-relay", "raw", "Hoomi's transport as a relay: no auth, no persistence, no acks"
    ),
    "node-socketio": Peer("node-socketio", "sio", "rooms; no auth, no persistence, no acks"),
    "python-socketio": Peer(
        "python-socketio", "sio", "rooms (aiohttp); no auth, no persistence, no acks"
    ),
}


def cpu_prefix(cores: str) -> list[str]:
    """`taskset -c cores` where it exists and the machine has more than one core."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cores]
    return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ws").is_dir()


class Processes:
    """Every child process of a run; `close` ends them all (terminate, then kill)."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[str]] = []
        self._first: list[tuple[subprocess.Popen[Any], int]] = []

    def add(self, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        self._procs.append(proc)
        return proc

    def add_observer(self, proc: subprocess.Popen[Any], stop: int) -> None:
        """A process that watches another (a profiler): stopped first, with `stop`."""
        self._first.append((proc, stop))

    def close(self) -> None:
        for proc, stop in self._first:
            if proc.poll() is None:
                proc.send_signal(stop)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._first.clear()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()


class Server:
    """A running server process."""

    def __init__(self, peer: Peer, proc: subprocess.Popen[str], port: int) -> None:
        self.peer = peer
        self.proc = proc
        self.port = port
        self.ps = psutil.Process(proc.pid)
        path = "/socket.io/?EIO=4&transport=websocket" if peer.proto == "sio" else "/"
        self.url = f"ws://127.0.0.1:{port}{path}"

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.peer.name} exited with {self.proc.returncode}")


def start_server(
    procs: Processes, name: str, *, cores: str, database: pathlib.Path | None = None
) -> Server:
    peer = PEERS[name]
    port = free_port()
    python = sys.executable
    if name == "hoomi":
        hoomi = str(pathlib.Path(python).parent / "hoomi")
        assert database is not None
        # Rate limits are per connection; a benchmark publisher is one connection.
        cmd = [
            hoomi,
            "serve",
            "--port",
            str(port),
            "--database",
            str(database),
            "--jwt-secret",
            SECRET,
            "--rate-per-s",
            "1000000",
            "--rate-burst",
            "1000000",
            "--log-level",
            "warning",
            "--admin-port",
            "0",
        ]
    elif name == "websockets":
        cmd = [python, "-m", "bench.peers.websockets_broadcast", str(port)]
    elif name == "trio-relay":
        cmd = [python, "-m", "bench.peers.trio_relay", str(port)]
    elif name == "python-socketio":
        cmd = [python, "-m", "bench.peers.python_socketio_rooms", str(port)]
    elif name == "node-ws":
        cmd = ["node", str(NODE_DIR / "ws_broadcast.js"), str(port)]
    elif name == "node-socketio":
        cmd = ["node", str(NODE_DIR / "socketio_rooms.js"), str(port)]
    else:
        raise ValueError(f"unknown server {name!r}")
    proc = procs.add(
        subprocess.Popen(
            cpu_prefix(cores) + cmd,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    )
    server = Server(peer, proc, port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        server.check()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port} within 30 s")


class LoadGen:
    """One `bench.loadgen` process, driven line by line."""

    def __init__(self, procs: Processes, config: dict[str, Any], *, cores: str) -> None:
        # The config goes in a file: 19,000 conversation ids exceed one argument's limit.
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            json.dump(config, file)
        self.config_path = pathlib.Path(file.name)
        self.proc = procs.add(
            subprocess.Popen(
                [*cpu_prefix(cores), sys.executable, "-m", "bench.loadgen", file.name],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        self.ps = psutil.Process(self.proc.pid)

    def send(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"load generator gave no answer within {timeout:g} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited with {self.proc.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def call(self, cmd: str, timeout: float = 120, **args: Any) -> dict[str, Any]:
        self.send(cmd, **args)
        return self.recv(timeout)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def quit(self) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError, BrokenPipeError):
            self.call("quit", timeout=10)


# -- the Hoomi database, written before the server starts ---------------------------------


def seed(
    database: pathlib.Path, *, groups: list[list[str]] | None = None, pairs: int = 0
) -> dict[str, list[str]]:
    """Create conversations directly in SQLite (the admin API's job in production):
    `groups` (members each) and `pairs` direct conversations u0-u1, u2-u3, …"""
    from hoomi.server.sqlite_store import SqliteStore

    async def create() -> dict[str, list[str]]:
        store = SqliteStore(database, synchronous="normal")
        await store.open()
        groups_ = groups or []
        made: dict[str, list[str]] = {"groups": [""] * len(groups_), "pairs": [""] * pairs}
        limit = trio.Semaphore(512)
        try:

            async def one(kind: str, members: list[str], slot: int) -> None:
                async with limit:
                    info = await store.create_conversation(
                        kind=kind,  # type: ignore[arg-type]
                        members=members,
                        title=None,
                        now_ms=int(time.time() * 1000),
                    )
                made["pairs" if kind == "direct" else "groups"][slot] = info.conversation_id

            async with trio.open_nursery() as nursery:
                for i, members in enumerate(groups_):
                    nursery.start_soon(one, "group", members, i)
                for i in range(pairs):
                    nursery.start_soon(one, "direct", [f"u{2 * i}", f"u{2 * i + 1}"], i)
        finally:
            await store.aclose()
        return made

    return trio.run(create)
