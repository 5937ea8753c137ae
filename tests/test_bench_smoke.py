"""The codec benchmark still runs (a smoke run: no timing is asserted here)."""

from __future__ import annotations

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
