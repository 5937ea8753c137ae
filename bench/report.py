"""Tables, targets, plots and the docs page from the scenarios' JSON.

    python -m bench.report [--results bench/results] [--docs docs/benchmarks.md]

regenerates docs/benchmarks.md (and copies the PNGs to docs/benchmarks/) from the latest
results; `python -m bench` calls `table`, `targets` and `plot` for each scenario it runs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
ORDER = ("fanout", "chat", "durable", "idle", "storm")
COMMAND = "just bench   # bench_codec.py, bench_writer.py, python -m bench, then bench.report"


def write_json(path: pathlib.Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def _load(path: pathlib.Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _ok(server: dict[str, Any] | None) -> bool:
    return bool(server) and "error" not in (server or {})


def _f(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _target(name: str, value: float | None, limit: float, *, at_least: bool) -> dict[str, Any]:
    met = value is not None and (value >= limit if at_least else value <= limit)
    return {"target": name, "value": value, "limit": limit, "at_least": at_least, "met": met}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue-5 targets this scenario's results speak to (ratios within one run)."""
    servers = results["servers"]
    hoomi = servers.get("hoomi", {})
    out: list[dict[str, Any]] = []
    if not _ok(hoomi):
        return out
    scenario = results["scenario"]
    if scenario == "fanout":
        mine = hoomi["max_sustained_deliveries_per_s"]
        for peer, ratio in (
            ("node-ws", 1.0),
            ("websockets", 2.0),
            ("node-socketio", 3.0),
            ("python-socketio", 3.0),
        ):
            theirs = servers.get(peer)
            if _ok(theirs) and theirs and theirs["max_sustained_deliveries_per_s"] > 0:
                value = mine / theirs["max_sustained_deliveries_per_s"]
                out.append(
                    _target(f"fan-out deliveries/s vs {peer} (x)", value, ratio, at_least=True)
                )
        p99 = hoomi["fixed"]["20"]["p99_ms"]
        rate = hoomi["fixed"]["20"]["offered_deliveries_per_s"]
        out.append(
            _target(f"fan-out p99 at {rate:,.0f} deliveries/s (ms)", p99, 25, at_least=False)
        )
    elif scenario == "durable":
        out.append(_target("durable acked/s", hoomi["max"]["acked_per_s"], 5000, at_least=True))
        out.append(
            _target(
                "durable ack p99 at half rate (ms)", hoomi["half"]["p99_ms"], 20, at_least=False
            )
        )
    elif scenario == "idle":
        for point in hoomi["points"]:
            out.append(
                _target(
                    f"idle KB/connection at {point['connections']:,}",
                    point["kb_per_connection"],
                    10,
                    at_least=False,
                )
            )
        out.append(
            _target("idle marginal KB/connection (flat)", hoomi["marginal_kb"], 10, at_least=False)
        )
    elif scenario == "chat":
        out.append(
            _target(
                "chat server CPU per message (us)",
                hoomi["server_cpu_us_per_msg"],
                100,
                at_least=False,
            )
        )
        # The issue's 100 µs was set beside websockets' ~100 µs per plain echo on the same
        # machine: the same comparison within this run, against its relay of the same load.
        theirs = servers.get("websockets")
        if _ok(theirs) and theirs and theirs["server_cpu_us_per_msg"] > 0:
            out.append(
                _target(
                    "chat server CPU per message vs websockets relay (x)",
                    hoomi["server_cpu_us_per_msg"] / theirs["server_cpu_us_per_msg"],
                    1.0,
                    at_least=False,
                )
            )
    elif scenario == "storm":
        out.append(
            _target("connect storm sessions/s", hoomi["sessions_per_s"], 2000, at_least=True)
        )
    return out


def _rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    scenario = results["scenario"]
    servers = results["servers"]
    features = results.get("features", {})
    rows: list[list[str]] = []
    if scenario == "fanout":
        head = [
            "server",
            "max sustained deliveries/s",
            "vs hoomi",
            "p50/p99 ms @5 msg/s",
            "p50/p99 ms @20 msg/s",
            "server CPU % @max",
            "load CPU % @max",
            "server / load CPU % (their cores busy %) at the lowest rate not sustained",
            "server CPU us/delivery",
            "features",
        ]
        head[-2] = "server CPU us/delivery @msg/s (highest sustained <= 100)"
        mine = servers.get("hoomi", {}).get("max_sustained_deliveries_per_s")
        for name, r in servers.items():
            if not _ok(r):
                rows.append([name, "failed: " + r.get("error", "")[:60]] + [""] * 8)
                continue
            at = sorted(
                (s for s in r["steps"] if s["ok"] and s["rate_msgs"] <= 100),
                key=lambda s: -s["rate_msgs"],
            )
            best = max(
                (s for s in r["steps"] if s["ok"]),
                key=lambda s: s["deliveries_per_s"],
                default=r["steps"][0],
            )
            # Where the rise stopped: the processes' CPU, and their cores' (the kernel's
            # loopback work included), to tell which side ran out, if one did.
            stop = min(
                (s for s in r["steps"] if not s["ok"]), key=lambda s: s["rate_msgs"], default=None
            )
            f5, f20 = r["fixed"]["5"], r["fixed"]["20"]
            ratio = (
                mine / r["max_sustained_deliveries_per_s"]
                if mine and r["max_sustained_deliveries_per_s"]
                else None
            )
            rows.append(
                [
                    name,
                    _f(r["max_sustained_deliveries_per_s"]),
                    "" if name == "hoomi" else (_f(ratio, 2) + "x" if ratio else "n/a"),
                    f"{_f(f5['p50_ms'], 1)} / {_f(f5['p99_ms'], 1)}",
                    f"{_f(f20['p50_ms'], 1)} / {_f(f20['p99_ms'], 1)}",
                    _f(best["server_cpu_pct"]),
                    _f(best["load_cpu_pct"]),
                    f"{_f(stop['server_cpu_pct'])} / {_f(stop['load_cpu_pct'])} "
                    f"({' / '.join(_f(c) for c in stop['core_busy_pct'])})"
                    if stop
                    else "n/a (every step sustained)",
                    f"{at[0]['server_cpu_us_per_delivery']:.2f} @{at[0]['rate_msgs']:g}"
                    if at
                    else "n/a",
                    features.get(name, ""),
                ]
            )
    elif scenario == "chat":
        head = [
            "server",
            "users",
            "msg/s",
            "delivered",
            "p50 ms",
            "p99 ms",
            "server CPU %",
            "server CPU us/msg",
            "CPU/msg vs hoomi",
            "load CPU %",
            "features",
        ]
        mine = servers.get("hoomi", {}).get("server_cpu_us_per_msg")
        for name, r in servers.items():
            if not _ok(r):
                rows.append([name, "failed: " + r.get("error", "")[:60]] + [""] * 9)
                continue
            theirs = r["server_cpu_us_per_msg"]
            rows.append(
                [
                    name,
                    _f(r["users"]),
                    _f(r["rate_msgs"]),
                    f"{r['delivered']:,}/{r['sent']:,}",
                    _f(r["p50_ms"], 1),
                    _f(r["p99_ms"], 1),
                    _f(r["server_cpu_pct"]),
                    _f(theirs, 1),
                    "" if name == "hoomi" or not mine else _f(theirs / mine, 2) + "x",
                    _f(r["load_cpu_pct"]),
                    features.get(name, ""),
                ]
            )
    elif scenario == "durable":
        head = [
            "server",
            "senders",
            "acked/s (closed loop)",
            "ack p99 ms @max",
            "half rate msg/s",
            "ack p50/p99 ms @half",
            "server CPU % @max",
            "load CPU % @max",
        ]
        for name, r in servers.items():
            if not _ok(r):
                rows.append([name, "failed: " + r.get("error", "")[:60]] + [""] * 6)
                continue
            m, h = r["max"], r["half"]
            rows.append(
                [
                    name,
                    _f(r["senders"]),
                    _f(m["acked_per_s"]),
                    _f(m["p99_ms"], 1),
                    _f(h["rate_msgs"]),
                    f"{_f(h['p50_ms'], 1)} / {_f(h['p99_ms'], 1)}",
                    _f(m["server_cpu_pct"]),
                    _f(m["load_cpu_pct"]),
                ]
            )
        rows.append(["peers", "n/a: no persistence, no acks", "", "", "", "", "", ""])
    elif scenario == "idle":
        head = ["server", "connections", "RSS MB", "KB/connection", "marginal KB/conn", "features"]
        for name, r in servers.items():
            if not _ok(r):
                rows.append([name, "failed: " + r.get("error", "")[:60], "", "", "", ""])
                continue
            for i, p in enumerate(r["points"]):
                rows.append(
                    [
                        name if i == 0 else "",
                        _f(p["connections"]),
                        _f(p["rss_bytes"] / 2**20, 1),
                        _f(p["kb_per_connection"], 2),
                        _f(r["marginal_kb"], 2) if i else "",
                        features.get(name, "") if i == 0 else "",
                    ]
                )
    else:
        head = [
            "server",
            "sessions/s",
            "connected/attempted",
            "server CPU %",
            "load CPU %",
            "what a session is",
        ]
        for name, r in servers.items():
            if not _ok(r):
                rows.append([name, "failed: " + r.get("error", "")[:60], "", "", "", ""])
                continue
            what = (
                "upgrade + hello + JWT verify + welcome"
                if name == "hoomi"
                else (
                    "upgrade + Socket.IO connect"
                    if "socketio" in name
                    else "WebSocket upgrade only"
                )
            )
            rows.append(
                [
                    name,
                    _f(r["sessions_per_s"]),
                    f"{r['connected']:,}/{r['attempted']:,}",
                    _f(r["server_cpu_pct"]),
                    _f(r["load_cpu_pct"]),
                    what,
                ]
            )
    return head, rows


def table(results: dict[str, Any], *, markdown: bool = False) -> str:
    head, rows = _rows(results)
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    for t in [] if markdown else results.get("targets", []):
        verdict = "met" if t["met"] else "MISSED"
        sign = ">=" if t["at_least"] else "<="
        line = f"target {t['target']}: {_f(t['value'], 2)} ({sign} {t['limit']:g}) {verdict}"
        lines.append(("- " + line) if markdown else line)
    return "\n".join(lines)


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
    """One PNG per scenario (matplotlib, Agg); silently skipped if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    servers = {n: r for n, r in results["servers"].items() if _ok(r)}
    scenario = results["scenario"]
    names = list(servers)
    if scenario == "fanout":
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        for name, r in servers.items():
            xs = [s["offered_deliveries_per_s"] for s in r["steps"]]
            left.plot(xs, [s["deliveries_per_s"] for s in r["steps"]], marker="o", label=name)
        members = next(iter(servers.values()))["members"] if servers else "?"
        left.set(
            xlabel="offered deliveries/s",
            ylabel="achieved deliveries/s",
            title=f"fan-out to {members} members",
        )
        left.legend()
        width = 0.35
        for i, rate in enumerate(("5", "20")):
            p99 = [servers[n]["fixed"][rate]["p99_ms"] or 0 for n in names]
            left_x = [x + i * width for x in range(len(names))]
            right.bar(left_x, p99, width, label=f"{rate} msg/s")
        right.set_xticks([x + width / 2 for x in range(len(names))], names, rotation=15)
        right.set(ylabel="p99 publish->receive (ms)", title="latency at fixed rates")
        right.legend()
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        if scenario == "idle":
            for i, level in enumerate(("first", "last")):
                values = [
                    servers[n]["points"][0 if i == 0 else -1]["kb_per_connection"] for n in names
                ]
                ax.bar(
                    [x + i * 0.35 for x in range(len(names))], values, 0.35, label=level + " level"
                )
            ax.set_xticks([x + 0.175 for x in range(len(names))], names, rotation=15)
            ax.set(ylabel="server RSS KB per idle connection", title="idle connections")
            ax.legend()
        elif scenario == "storm":
            ax.bar(names, [servers[n]["sessions_per_s"] for n in names])
            ax.set(ylabel="sessions/s", title="connect storm")
        elif scenario == "durable":
            r = servers.get("hoomi")
            if r:
                ax.bar(
                    ["closed loop p50", "closed loop p99", "half rate p50", "half rate p99"],
                    [
                        r["max"]["p50_ms"] or 0,
                        r["max"]["p99_ms"] or 0,
                        r["half"]["p50_ms"] or 0,
                        r["half"]["p99_ms"] or 0,
                    ],
                )
                ax.set(
                    ylabel="ack latency (ms)",
                    title=f"durable sends: {r['max']['acked_per_s']:,.0f} acked/s (SQLite, fsync)",
                )
        elif scenario == "chat":
            ax.bar(names, [servers[n]["server_cpu_us_per_msg"] for n in names])
            ax.set_xticks(range(len(names)), names, rotation=15)
            r = servers[names[0]]
            ax.set(
                ylabel="server CPU per message (us)",
                title=f"chat: {r['users']:,} users, {r['rate_msgs']:,} msg/s "
                "(Hoomi stores and acks; peers relay)",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def docs(results_dir: pathlib.Path, page: pathlib.Path) -> None:
    """Write the results page from every scenario JSON present, PNGs copied beside it."""
    images = page.parent / "benchmarks"
    images.mkdir(parents=True, exist_ok=True)
    loaded = []
    for scenario in ORDER:
        path = results_dir / f"{scenario}.json"
        if path.exists():
            loaded.append(json.loads(path.read_text()))
    out = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench.report` from `bench/results/*.json`; do not edit by hand.",
        "Harness: [`bench/`](../bench/) (`bench/run.py` orchestrates, `bench/loadgen.py` is the "
        "picows load generator, `bench/peers/` holds the peer servers).",
        "",
    ]
    if loaded:
        m = loaded[0]["machine"]
        paces = [
            f"{r['scenario']} {r['machine']['round_trip_us']:.1f} µs"
            for r in loaded
            if r["machine"].get("round_trip_us") is not None
        ]
        out += [
            "## Machine and method",
            "",
            f"- {m['nproc']} cores, {m['cpu']}; Linux {m['kernel']}; "
            f"Python {m['python']}; Node {m['node']}.",
            "- Load average (1 min) at the start of each scenario (it includes the previous "
            "scenario's own load): "
            + ", ".join(f"{r['scenario']} {r['machine']['loadavg'][0]:.2f}" for r in loaded)
            + ".",
        ]
        if paces:
            out.append(
                "- The machine's pace at the start of each scenario: a one-byte round trip to "
                "another process over a socket pair, the median of five 1,000-trip averages "
                "(system calls, wake-ups and context switches, as in every scenario; higher is "
                "slower, and on this virtual machine it moves from hour to hour): "
                + ", ".join(paces)
                + "."
            )
        out += [
            "- Each server runs alone, pinned to core 0 (`taskset -c 0`); the load generators "
            "(picows on uvloop, separate processes) are pinned to core 1. Server and load CPU "
            "are measured with psutil over each window (percent of one core).",
            "- Every client sends the same frame (a Hoomi `send`, "
            f"{loaded[0]['size']}-character text); peers relay it as is (raw WebSocket) or as a "
            "Socket.IO `msg` event. Latency is measured from the *scheduled* send time "
            "(open loop, no coordinated omission), on one CLOCK_MONOTONIC.",
            "- Hoomi does more per message than any peer: JWT auth, a durable SQLite commit "
            "(synchronous=full: fsync) before fan-out, a seq number and an ack.",
            "- Hoomi runs with `--rate-per-s 1000000 --rate-burst 1000000` (the per-connection "
            "limit would otherwise throttle the single publisher) and `--log-level warning`.",
            "- fan-out: 1,000 receivers of one conversation and one publisher whose open-loop "
            "rate rises in 3 s steps; a step is *sustained* when >= 99% of the deliveries "
            "arrive, p99 <= 250 ms and no receiver is disconnected; a step that is not runs "
            "once more (a one-off stall of this virtual machine must not end a rise; "
            "saturation fails twice), the rise stops at the first step that fails twice, then "
            "two more steps halve the gap between the last sustained rate and that one. "
            "Deliveries/s = deliveries / (time from the step's first "
            "scheduled send until they arrived). p50/p99 at 5 and 20 msg/s are 10 s runs.",
            "- chat: 10,000 users in 5,000 direct conversations, 2,000 msg/s open loop over all "
            "senders for 10 s; latency is sender->partner; CPU per message = server CPU over "
            "the window (sends plus 1 s drain) / messages. Peers relay each message to the "
            "partner: each client connects with `?room=<conversation>` and a peer sends a "
            "frame to the others in its room (no store, no ack, no seq).",
            "- durable: 64 senders, each in its own conversation: closed loop with 4 sends in "
            "flight each for 5 s (acked/s), then open loop at half that rate (ack latency "
            "from the scheduled send).",
            "- idle: RSS growth of the server process over its RSS before any connection, "
            "divided by the connections; clients bind 127.0.0.2-9 as source addresses.",
            "- storm: 5,000 sessions opened 256 at a time; sessions/s = sessions / time to "
            "open them all. JWTs are minted before the clock starts.",
            "- The machine has 2 cores. At the top fan-out rates both cores are busy: core 0 "
            "with the server plus the kernel's loopback TCP work, core 1 with the load "
            "generator plus its share of the kernel's work. `core_busy_pct` in the JSON "
            "shows both per step. Near the fan-out ceilings the load core is busy too, so "
            "the ceilings are bounded by this machine as much as by the server; server CPU "
            "per delivery at the same rate does not depend on that and is the fairer "
            "efficiency comparison. The machine's speed varies from day to day (the same "
            "peer's figures moved 2-3x between days), so compare within one run.",
            "",
            "Commands:",
            "",
            "```sh",
            COMMAND,
            ".venv/bin/python -m bench fanout --servers hoomi node-ws  # some servers",
            ".venv/bin/python -m bench --quick                         # tiny sizes (smoke)",
            "```",
            "",
        ]
    codec = _load(results_dir / "codec.json")
    writer = _load(results_dir / "writer.json")
    if loaded:
        out += ["## Targets (issue 5)", "", "| scenario | target | value | limit | verdict |"]
        out.append("|---|---|---|---|---|")
        for results in loaded:
            for t in results.get("targets", []):
                sign = ">=" if t["at_least"] else "<="
                verdict = "met" if t["met"] else "**missed**"
                out.append(
                    f"| {results['scenario']} | {t['target']} | {_f(t['value'], 2)} "
                    f"| {sign} {t['limit']:g} | {verdict} |"
                )
        if codec:
            for name, limit in codec["targets_us"].items():
                value = codec["us_per_message"][name]
                verdict = "met" if value <= limit else "**missed**"
                out.append(
                    f"| codec (issue 2) | {name} (us/message) | {value:.2f} | <= {limit:g} "
                    f"| {verdict} |"
                )
        out.append("")
    for results in loaded:
        scenario = results["scenario"]
        out += [f"## {scenario}" + (" (quick run)" if results["quick"] else ""), ""]
        out += [table(results, markdown=True), ""]
        png = results_dir / f"{scenario}.png"
        if png.exists():
            shutil.copyfile(png, images / png.name)
            out += [f"![{scenario}](benchmarks/{png.name})", ""]
    if codec:
        out += [
            "## codec (`bench/bench_codec.py`)",
            "",
            f"A {codec['frame_bytes']}-byte `send`, in-process, best of repeats.",
            "",
            "| measure | us/message |",
            "|---|---|",
            *(f"| {name} | {value:.2f} |" for name, value in codec["us_per_message"].items()),
            *(f"| {name} | {ratio:.1f}x |" for name, ratio in codec["ratios"].items()),
            "",
        ]
    if writer:
        out += [
            "## store writes (`bench/bench_writer.py`)",
            "",
            f"SQLite appends of {writer['text_chars']}-character messages to "
            f"{writer['conversations']:,} direct conversations, committed in batches of "
            "exactly B writes; CPU per message of the store's writer thread and of the rest "
            "of the process (the loop: queueing, commit reports). synchronous=full is the "
            "default (an fsync per commit); normal shows what the fsync costs. One run "
            f"(started {writer.get('started_at', '?')}, Python {writer.get('python', '?')}, "
            f"SQLite {writer.get('sqlite', '?')}): compare its lines with each other.",
            "",
            "| synchronous | batch | writer thread CPU us/msg | loop CPU us/msg | wall us/msg |",
            "|---|---|---|---|---|",
            *(
                f"| {w['synchronous']} | {w['batch']} | {w['writer_us_per_msg']:.1f} "
                f"| {w['loop_us_per_msg']:.1f} | {w['wall_us_per_msg']:.1f} |"
                for w in writer["lines"]
            ),
            "",
        ]
    # The optimization log and the analysis of misses are written by people, kept beside
    # the harness, and carried into the generated page.
    notes = pathlib.Path(__file__).with_name("NOTES.md")
    if notes.exists():
        out += [notes.read_text().rstrip(), ""]
    page.write_text("\n".join(out))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--results", type=pathlib.Path, default=REPO / "bench" / "results")
    parser.add_argument("--docs", type=pathlib.Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    docs(args.results, args.docs)
    print(f"wrote {args.docs}")


if __name__ == "__main__":
    main()
