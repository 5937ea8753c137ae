"""The benchmark orchestrator: `python -m bench [SCENARIO ...] [--quick] [--servers ...]`.

Each scenario starts each server as a subprocess pinned to core 0 (`taskset -c 0`), the load
generators (`bench.loadgen`, picows) as separate processes pinned to core 1, drives them with
bounded loops, measures the server's and the load generators' CPU with psutil, kills every
process in a `finally`, prints a table and writes bench/results/<scenario>.json and .png.

Scenarios: fanout, chat, durable, idle, storm (all by default). Traffic goes to 127.0.0.x only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import pathlib
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench import report
from bench.loadgen import merge, percentile_ms
from bench.servers import (
    PEERS,
    SECRET,
    LoadGen,
    Processes,
    Server,
    node_available,
    seed,
    start_server,
)

SERVER_CORES = "0"
LOAD_CORES = "1"
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ALL_SCENARIOS = ("fanout", "chat", "durable", "idle", "storm")
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]  # source addresses for many connections


# A child process echoes one byte back over a socket pair until EOF.
_ECHO = (
    "import socket, sys\n"
    "s = socket.socket(fileno=int(sys.argv[1]))\n"
    "while d := s.recv(64):\n"
    "    s.send(d)\n"
)


def round_trip_us(trips: int = 1_000) -> float:
    """The machine's pace at this moment: the median of five averages of `trips` one-byte
    round trips to another process over a socket pair (system calls, wake-ups, two context
    switches each), in microseconds per round trip. Each socket call waits at most 10 s: a
    child that died or hangs fails the probe rather than hanging it."""
    mine, theirs = socket.socketpair()
    child: subprocess.Popen[bytes] | None = None
    timings = []
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _ECHO, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        mine.settimeout(10)
        mine.send(b"x")  # the first trip waits for the child's interpreter to start
        mine.recv(64)
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(trips):
                mine.send(b"x")
                mine.recv(64)
            timings.append((time.perf_counter() - started) / trips * 1e6)
    finally:
        mine.close()
        theirs.close()
        if child is not None:
            try:
                child.wait(timeout=10)  # EOF ends it
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return statistics.median(timings)


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = "absent"
    if shutil.which("node"):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "node": node,
        "kernel": platform.release(),
        "loadavg": list(os.getloadavg()),
        "round_trip_us": _round_trip_or_none(),
    }


def _round_trip_or_none() -> float | None:
    try:
        return round_trip_us()
    except (OSError, subprocess.SubprocessError) as failure:  # a context figure only
        print(f"the machine's pace was not measured: {failure}", file=sys.stderr)
        return None


class Run:
    """What every scenario needs: options, a temp dir, the process stack."""

    def __init__(self, args: argparse.Namespace, tmp: pathlib.Path) -> None:
        self.quick: bool = args.quick
        self.servers: list[str] = args.servers
        self.tmp = tmp
        self.procs = Processes()
        self.size: int = args.size
        self.profile: pathlib.Path | None = args.profile
        self.observe: str | None = args.observe
        self.scenario = ""

    def start(self, name: str, database: pathlib.Path) -> Server:
        """Start a server on the server core."""
        return start_server(self.procs, name, cores=SERVER_CORES, database=database)

    def watch(self, server: Server) -> None:
        """Under --profile, py-spy records Hoomi from now (the measured part) to its end;
        under --observe, that command does (perf stat, strace -c ...), stopped with SIGINT."""
        if self.observe and server.peer.name == "hoomi":
            command = shlex.split(self.observe.replace("{pid}", str(server.proc.pid)))
            self.procs.add_observer(subprocess.Popen(command), signal.SIGINT)
        if self.profile is None or server.peer.name != "hoomi":
            return
        self.profile.mkdir(parents=True, exist_ok=True)
        out = self.profile / f"{self.scenario}-hoomi.txt"
        spy = str(pathlib.Path(sys.executable).parent / "py-spy")
        self.procs.add_observer(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--gil",
                    "--threads",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            signal.SIGINT,  # py-spy writes its profile on SIGINT
        )

    def loadgen(self, server: Server, **config: Any) -> LoadGen:
        base = {"url": server.url, "proto": server.peer.proto, "secret": SECRET, "size": self.size}
        return LoadGen(self.procs, {**base, **config}, cores=LOAD_CORES)

    def settle(self, gens: list[LoadGen], quiet_s: float = 0.5, limit_s: float = 20) -> None:
        """Wait until the receivers' frame counts stop moving (presence bursts, backlogs)."""
        last = -1
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            now = sum(g.call("stats")["frames"] for g in gens)
            if now == last:
                return
            last = now
            time.sleep(quiet_s)


def _cpu_window(server: Server, gens: list[LoadGen]) -> Callable[[], dict[str, Any]]:
    """Start measuring; the returned function gives CPU use (% of one core) since then."""
    t0 = time.monotonic()
    c0 = psutil.cpu_times(percpu=True)
    s0 = server.cpu_s()
    k0 = server.ps.cpu_times().system
    g0 = [g.cpu_s() for g in gens]

    def done() -> dict[str, Any]:
        elapsed = time.monotonic() - t0
        c1 = psutil.cpu_times(percpu=True)
        busy = []
        for a, b in zip(c0, c1, strict=True):
            total = sum(b) - sum(a)
            busy.append(100 * (1 - (b.idle - a.idle) / total) if total > 0 else 0.0)
        return {
            "core_busy_pct": busy,
            "server_cpu_pct": 100 * (server.cpu_s() - s0) / elapsed,
            # The kernel's share of the server's CPU (system calls: socket I/O, fsync).
            "server_sys_pct": 100 * (server.ps.cpu_times().system - k0) / elapsed,
            "load_cpu_pct": 100
            * sum(g.cpu_s() - c for g, c in zip(gens, g0, strict=True))
            / elapsed,
            "window_s": elapsed,
        }

    return done


def _latency(hist: dict[int, int]) -> dict[str, float | None]:
    return {
        "p50_ms": percentile_ms(hist, 50),
        "p99_ms": percentile_ms(hist, 99),
        "p999_ms": percentile_ms(hist, 99.9),
        "max_ms": percentile_ms(hist, 100),
    }


# -- fan-out -------------------------------------------------------------------------------


def fanout(run: Run, name: str) -> dict[str, Any]:
    members = 100 if run.quick else 1000
    rates = (
        [20, 100]
        if run.quick
        else [10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 650, 800, 1000]
    )
    step_s = 1.0 if run.quick else 3.0
    fixed_s = 1.0 if run.quick else 10.0
    db = run.tmp / f"fanout-{name}.db"
    conv = ["c"]
    if name == "hoomi":
        conv = seed(db, groups=[[f"u{i}" for i in range(members + 1)]])["groups"]
    server = run.start(name, db)
    receivers = run.loadgen(server, user_base=1, conversations=conv)
    publisher = run.loadgen(server, user_base=0, conversations=conv)
    connected = receivers.call("connect", count=members, concurrency=100)
    publisher.call("connect", count=1)
    run.settle([receivers])
    receivers.call("reset")
    gens = [receivers, publisher]
    run.watch(server)

    def one(step: int, rate: float, seconds: float) -> dict[str, Any]:
        before = receivers.call("stats")
        cpu = _cpu_window(server, gens)
        publisher.send("publish", rate=rate, duration=seconds, step=step)
        sent = publisher.recv(seconds + 30)
        expected = sent["sent"] * members
        # Drain: wait (bounded) until every delivery arrived or the count stops moving.
        last, stats = -1, before
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = receivers.call("stats")
            got = stats["counts"].get(str(step), 0)
            if got >= expected or got == last:
                break
            last = got
            time.sleep(0.3)
        usage = cpu()
        got = stats["counts"].get(str(step), 0)
        hist = merge({}, stats["steps"].get(str(step), {}))
        busy = max(sent["elapsed_s"], usage["window_s"] - 0.3)
        lost = stats["disconnected"] - before["disconnected"]
        return {
            "rate_msgs": rate,
            "offered_deliveries_per_s": rate * members,
            "sent": sent["sent"],
            "expected": expected,
            "delivered": got,
            "deliveries_per_s": got / busy,
            "max_send_lag_ms": sent["max_send_lag_ms"],
            "disconnected": lost,
            "server_cpu_us_per_delivery": usage["server_cpu_pct"]
            / 100
            * usage["window_s"]
            / max(1, got)
            * 1e6,
            **_latency(hist),
            **usage,
        }

    step_ids = itertools.count(10)  # 1 and 2 are the fixed-rate runs

    def judged(rate: float) -> dict[str, Any]:
        # A step that is not sustained runs once more: one stall of this virtual machine
        # (seen in the server and the load generator at the same instant) must not end a
        # rise; saturation fails both times.
        for attempt in (1, 2):
            result = one(next(step_ids), rate, step_s)
            result["attempt"] = attempt
            result["ok"] = (
                result["delivered"] >= 0.99 * result["expected"]
                and (result["p99_ms"] or 1e9) <= 250
                and result["disconnected"] == 0
            )
            print(
                f"  {name:16} {rate:5g} msg/s -> {result['deliveries_per_s']:9,.0f} "
                f"deliveries/s p99 {result['p99_ms'] or 0:8.1f} ms  server "
                f"{result['server_cpu_pct']:3.0f}% load {result['load_cpu_pct']:3.0f}% cores "
                + "/".join(f"{c:.0f}" for c in result["core_busy_pct"])
                + f"%  {'ok' if result['ok'] else 'SATURATED'}"
                + (" (second try)" if attempt == 2 else ""),
                flush=True,
            )
            if result["ok"] or run.quick:
                break
        return result

    steps = []
    for rate in rates:
        steps.append(judged(rate))
        if not steps[-1]["ok"]:
            break
    # Two halvings between the last sustained rate and the first that was not, so that
    # servers stopping at the same coarse step are told apart.
    if steps and not steps[-1]["ok"] and not run.quick:
        low = max((s["rate_msgs"] for s in steps if s["ok"]), default=0.0)
        high = steps[-1]["rate_msgs"]
        for _ in range(2):
            steps.append(judged((low + high) / 2))
            low, high = (
                (steps[-1]["rate_msgs"], high) if steps[-1]["ok"] else (low, steps[-1]["rate_msgs"])
            )
    steps.sort(key=lambda s: s["rate_msgs"])
    fixed = {}
    for step, rate in ((1, 5), (2, 20)):
        fixed[str(rate)] = one(step, rate, fixed_s)
    passing = [s for s in steps if s["ok"]]
    return {
        "members": members,
        "connected": connected["connected"],
        "steps": steps,
        "max_sustained_deliveries_per_s": max(
            (s["deliveries_per_s"] for s in passing), default=0.0
        ),
        "peak_deliveries_per_s": max((s["deliveries_per_s"] for s in steps), default=0.0),
        "fixed": fixed,
    }


# -- chat ----------------------------------------------------------------------------------


def chat(run: Run, name: str) -> dict[str, Any]:
    users = 200 if run.quick else 10_000
    rate = 100 if run.quick else 2000
    seconds = 2.0 if run.quick else 10.0
    db = run.tmp / "chat.db"
    if name == "hoomi":
        pairs = seed(db, pairs=users // 2)["pairs"]
    else:  # a peer's rooms are just names its clients connect with
        pairs = [f"p{i}" for i in range(users // 2)]
    server = run.start(name, db)
    gen = run.loadgen(server, conversations=pairs, conv_mode="pairs", sources=SOURCES)
    connected = gen.call("connect", count=users, concurrency=256, timeout=300)
    run.settle([gen])
    gen.call("reset")
    run.watch(server)
    cpu = _cpu_window(server, [gen])
    sent = gen.call("chat", rate=rate, duration=seconds, step=0, timeout=seconds + 60)
    time.sleep(1.0)
    usage = cpu()
    stats = gen.call("stats")
    hist = merge({}, stats["steps"].get("0", {}))
    delivered = stats["counts"].get("0", 0)
    server_cpu_s = usage["server_cpu_pct"] / 100 * usage["window_s"]
    return {
        "users": users,
        "conversations": len(pairs),
        "connected": connected["connected"],
        "rate_msgs": rate,
        "sent": sent["sent"],
        "delivered": delivered,
        "acks": stats["acks"],
        "server_cpu_us_per_msg": server_cpu_s / max(1, sent["sent"]) * 1e6,
        **_latency(hist),
        **usage,
    }


# -- durable sends -------------------------------------------------------------------------


def durable(run: Run, name: str) -> dict[str, Any]:
    senders = 16 if run.quick else 64
    seconds = 2.0 if run.quick else 5.0
    db = run.tmp / "durable.db"
    groups = seed(db, groups=[[f"u{i}"] for i in range(senders)])["groups"]
    server = run.start(name, db)
    gen = run.loadgen(server, conversations=groups, conv_mode="own")
    gen.call("connect", count=senders)
    run.settle([gen])
    gen.call("reset")
    run.watch(server)
    cpu = _cpu_window(server, [gen])
    gen.call("closed", duration=seconds, window=4, timeout=seconds + 30)
    usage_max = cpu()
    stats = gen.call("stats")
    acked_per_s = stats["acks"] / seconds
    closed_latency = _latency(merge({}, stats["ack_hist"]))
    run.settle([gen])
    gen.call("reset")
    half = max(10.0, acked_per_s / 2)
    cpu = _cpu_window(server, [gen])
    sent = gen.call("open", rate=half, duration=seconds, timeout=seconds + 60)
    time.sleep(0.5)
    usage_half = cpu()
    stats = gen.call("stats")
    return {
        "senders": senders,
        "synchronous": "full",
        "max": {"acked_per_s": acked_per_s, **closed_latency, **usage_max},
        "half": {
            "rate_msgs": half,
            "sent": sent["sent"],
            "acked": stats["acks"],
            **_latency(merge({}, stats["ack_hist"])),
            **usage_half,
        },
    }


# -- idle connections and connect storm ----------------------------------------------------


def idle(run: Run, name: str) -> dict[str, Any]:
    levels = [200, 400] if run.quick else [10_000, 19_000]
    db = run.tmp / f"idle-{name}.db"
    pairs = seed(db, pairs=levels[-1] // 2)["pairs"] if name == "hoomi" else ["c"]
    server = run.start(name, db)
    gen = run.loadgen(
        server,
        conversations=pairs,
        conv_mode="pairs" if name == "hoomi" else "single",
        sources=SOURCES,
    )
    time.sleep(1.0)
    run.watch(server)
    base = server.rss()
    points = []
    have = 0
    for level in levels:
        got = gen.call("connect", count=level - have, concurrency=256, timeout=600)
        have = level
        run.settle([gen], quiet_s=1.0)
        time.sleep(1.0)
        stats = gen.call("stats")
        rss = server.rss()
        points.append(
            {
                "connections": stats["connected"],
                "failed": got["failed"],
                "rss_bytes": rss,
                "kb_per_connection": (rss - base) / max(1, stats["connected"]) / 1024,
            }
        )
    marginal = (points[-1]["rss_bytes"] - points[0]["rss_bytes"]) / max(
        1, points[-1]["connections"] - points[0]["connections"]
    )
    return {"base_rss_bytes": base, "points": points, "marginal_kb": marginal / 1024}


def storm(run: Run, name: str) -> dict[str, Any]:
    count = 300 if run.quick else 5000
    db = run.tmp / f"storm-{name}.db"
    pairs = seed(db, pairs=count // 2)["pairs"] if name == "hoomi" else ["c"]
    server = run.start(name, db)
    gen = run.loadgen(
        server,
        conversations=pairs,
        conv_mode="pairs" if name == "hoomi" else "single",
        sources=SOURCES,
    )
    time.sleep(0.5)
    run.watch(server)
    cpu = _cpu_window(server, [gen])
    got = gen.call("connect", count=count, concurrency=256, timeout=300)
    usage = cpu()
    return {
        "attempted": count,
        "connected": got["connected"],
        "failed": got["failed"],
        "elapsed_s": got["elapsed_s"],
        "sessions_per_s": got["connected"] / got["elapsed_s"],
        **usage,
    }


SCENARIOS: dict[str, tuple[Callable[[Run, str], dict[str, Any]], bool]] = {
    # name -> (function, whether the peers run it too)
    "fanout": (fanout, True),
    "chat": (chat, True),
    "durable": (durable, False),
    "idle": (idle, True),
    "storm": (storm, True),
}


def run_scenario(run: Run, scenario: str) -> dict[str, Any]:
    function, with_peers = SCENARIOS[scenario]
    names = [n for n in run.servers if with_peers or n == "hoomi"]
    results: dict[str, Any] = {
        "scenario": scenario,
        "quick": run.quick,
        "size": run.size,
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "servers": {},
        "features": {n: PEERS[n].features for n in names},
    }
    run.scenario = scenario
    for name in names:
        print(f"{scenario}: {name}", flush=True)
        try:
            results["servers"][name] = function(run, name)
        except Exception as error:  # one server's failure is reported, the run goes on
            print(f"  {name} failed: {error!r}", flush=True)
            results["servers"][name] = {"error": repr(error)}
        finally:
            run.procs.close()
    results["machine_after"] = {"loadavg": list(os.getloadavg())}
    results["targets"] = report.targets(results)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(ALL_SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--servers",
        nargs="+",
        default=list(PEERS),
        choices=list(PEERS),
        help="servers to run (default: Hoomi and every peer)",
    )
    parser.add_argument("--size", type=int, default=100, help="message text length (chars)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--profile",
        type=pathlib.Path,
        help="record the Hoomi server with py-spy (collapsed stacks) into this directory",
    )
    parser.add_argument(
        "--observe",
        metavar="COMMAND",
        help="run COMMAND against the Hoomi server during the measured part, {pid} replaced "
        "by its pid, e.g. 'perf stat -e raw_syscalls:sys_enter -p {pid}'",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNGs (no matplotlib)")
    args = parser.parse_args(argv)
    # Children inherit the limit: the idle scenario holds 19,000 sockets in one process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scenarios = args.scenarios or list(ALL_SCENARIOS)
    unknown = set(scenarios) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {ALL_SCENARIOS}")
    if not node_available():
        dropped = [n for n in args.servers if n.startswith("node-")]
        if dropped:
            print(f"node or bench/peers/node/node_modules missing: skipping {dropped}")
        args.servers = [n for n in args.servers if not n.startswith("node-")]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hoomi-bench-") as tmp:
        run = Run(args, pathlib.Path(tmp))
        try:
            for scenario in scenarios:
                results = run_scenario(run, scenario)
                path = args.out / f"{scenario}.json"
                report.write_json(path, results)
                print(report.table(results))
                if not args.no_plot:
                    report.plot(results, args.out / f"{scenario}.png")
                print(f"wrote {path}", flush=True)
        finally:
            run.procs.close()
    sys.stdout.flush()
