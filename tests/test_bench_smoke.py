"""The benchmarks still run (smoke runs: no timing is asserted here).

The harness smoke run needs only the dev extra (picows and psutil are in it): Hoomi alone,
tiny sizes, two scenarios, no plots; it checks the JSON's shape, never the figures.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import orjson

from conftest import REPO


def test_codec_benchmark_runs_and_writes_its_figures(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "codec.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_codec.py"), "--quick", "--json", str(out)],
        check=True,
        capture_output=True,
    )
    result = orjson.loads(out.read_bytes())
    assert set(result["us_per_message"]) >= {"hoomi decode+validate", "hoomi encode"}
    assert all(value > 0 for value in result["us_per_message"].values())


def test_store_write_benchmark_runs_and_writes_its_figures(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "writer.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_writer.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = orjson.loads(out.read_bytes())["lines"]
    assert {(line["synchronous"], line["batch"]) for line in lines} == {
        (sync, batch) for sync in ("full", "normal") for batch in (1, 10, 30)
    }
    for line in lines:  # batches of exactly `batch` writes: batch_max and a long window
        assert line["commits"] == line["messages"] // line["batch"]
        assert line["writer_us_per_msg"] >= 0


def test_client_benchmark_runs_and_writes_its_figures(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "client.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_client.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = orjson.loads(out.read_bytes())
    assert all(value > 0 for value in result["us_per_message"].values())
    assert result["resume_100"]["sdk median ms"] > 0


def test_benchmark_harness_runs_a_tiny_hoomi_fanout_and_storm(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "fanout",
            "storm",
            "--quick",
            "--servers",
            "hoomi",
            "--no-plot",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    fanout = orjson.loads((tmp_path / "fanout.json").read_bytes())
    assert set(fanout) >= {"scenario", "machine", "servers", "targets", "features"}
    assert fanout["machine"]["round_trip_us"] > 0  # the machine's pace, measured
    hoomi = fanout["servers"]["hoomi"]
    assert "error" not in hoomi, hoomi
    assert set(hoomi) >= {"steps", "fixed", "max_sustained_deliveries_per_s", "members"}
    assert set(hoomi["fixed"]) == {"5", "20"}
    for step in [*hoomi["steps"], *hoomi["fixed"].values()]:
        assert set(step) >= {"deliveries_per_s", "p50_ms", "p99_ms", "server_cpu_pct"}
        assert step["delivered"] > 0
    storm = orjson.loads((tmp_path / "storm.json").read_bytes())
    result = storm["servers"]["hoomi"]
    assert "error" not in result, result
    assert result["connected"] == result["attempted"] > 0
    assert {t["target"] for t in storm["targets"]} == {"connect storm sessions/s"}
