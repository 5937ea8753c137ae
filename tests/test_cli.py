"""The command-line tools, driven as a user runs them."""

from __future__ import annotations

import pathlib

import jwt
import orjson
import pytest
from typer.testing import CliRunner

from conftest import SPEC
from harness import SECRET, running_server
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


async def test_hoomi_token_mints_a_token_the_server_accepts(tmp_path: pathlib.Path) -> None:
    result = runner.invoke(
        hoomi, ["token", "alice", "--ttl", "120"], env={"HOOMI_JWT_SECRET": SECRET}
    )
    assert (result.exit_code, result.stderr) == (0, "")
    token = result.stdout.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["exp"] - claims["iat"]) == ("alice", 120)
    async with running_server(tmp_path) as server:
        client = await server.connect()
        welcome = await client.hello(token)
    assert (welcome["type"], welcome["user_id"]) == ("welcome", "alice")
    assert welcome["token_expires_at"] == claims["exp"] * 1000


PEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----"


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["", "--secret", SECRET], "the user id must be 1-128 characters (got 0)."),
        (["u" * 129, "--secret", SECRET], "the user id must be 1-128 characters (got 129)."),
        (
            ["alice", "--secret", PEM],
            "--secret looks like a PEM or SSH key: give the server's HS256 jwt_secret.",
        ),
    ],
)
def test_hoomi_token_refuses_what_no_server_would_accept(args: list[str], sentence: str) -> None:
    result = runner.invoke(hoomi, ["token", *args])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {sentence}\n")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["alice", "--secret", SECRET, "--ttl", "0"], "Invalid value for '--ttl'"),
        (["alice"], "Missing option '--secret'"),
    ],
)
def test_hoomi_token_names_a_bad_or_missing_option(args: list[str], problem: str) -> None:
    result = runner.invoke(hoomi, ["token", *args], env={"HOOMI_JWT_SECRET": None})
    assert (result.exit_code, result.stdout) == (2, "")
    assert problem in result.stderr
