"""The command-line tools, driven as a user runs them."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from conftest import SPEC
from hoomi.cli.conformance import app as conformance
from hoomi.cli.main import app as hoomi
from hoomi.protocol import SPEC_VERSION

runner = CliRunner()


def test_version_reports_the_spec_version() -> None:
    result = runner.invoke(hoomi, ["version", "--json"])
    assert result.exit_code == 0
    info = orjson.loads(result.stdout)
    assert info["spec_version"] == SPEC_VERSION
    assert info["subprotocol"] == "hoomi.v1"


def test_frames_accepts_a_capture_of_valid_client_frames() -> None:
    frames = [
        orjson.dumps(orjson.loads(p.read_bytes())["message"]).decode()
        for p in sorted((SPEC / "examples" / "valid").glob("*.json"))
        if orjson.loads(p.read_bytes())["direction"] == "client"
    ]
    assert frames
    result = runner.invoke(conformance, ["frames", "-", "--json"], input="\n".join(frames))
    assert result.exit_code == 0, result.stdout
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == len(frames)
    assert all(row["ok"] for row in rows)


def test_frames_reports_each_refusal_with_its_code_and_path_and_exits_1() -> None:
    capture = '{"type":"ping","id":"p1"}\n{"type":"read","id":"r1","conversation_id":"c1"}\n'
    result = runner.invoke(conformance, ["frames", "-", "--json"], input=capture)
    assert result.exit_code == 1
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert rows[0] == {"line": 1, "ok": True, "type": "ping"}
    assert (rows[1]["ok"], rows[1]["code"], rows[1]["path"], rows[1]["id"]) == (
        False,
        "bad_request",
        "$.seq",
        "r1",
    )


def test_frames_shows_a_table_and_says_what_to_do_with_an_empty_capture() -> None:
    table = runner.invoke(conformance, ["frames", "-"], input='{"type":"nope","id":"x"}\n')
    assert table.exit_code == 1
    assert "unknown_type" in table.stdout
    empty = runner.invoke(conformance, ["frames", "-"], input="\n")
    assert empty.exit_code == 2
    assert "one JSON frame per line" in empty.stdout
