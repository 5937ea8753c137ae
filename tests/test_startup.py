"""`hoomi serve` as a user starts it, in its own process: development mode, the token
settings wired into the verifier, JSON logs, and a port that is taken."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import stat
import sys
from typing import Any

import httpx
import orjson
import pytest
import trio
from typer.testing import CliRunner

from harness import SECRET, Client, mint, running_server, serve_process, upgrade_status
from hoomi.cli.main import app
from hoomi.server import logs


async def _refusal(url: str, token: str) -> tuple[str, str, int | None]:
    """(error code, message, close code) of a hello with `token`."""
    async with trio.open_nursery() as nursery:
        client = await Client.open(nursery, url)
        reply = await client.hello(token)
        assert reply["type"] == "error", reply
        closed = await client.closed()
        await client.aclose()
    return reply["code"], reply["message"], closed


async def _welcomed(url: str, token: str) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        client = await Client.open(nursery, url)
        welcome = await client.hello(token)
        await client.aclose()
    return welcome


async def test_dev_mode_prints_its_secret_and_leaves_its_urls_for_the_owner_only(
    tmp_path: pathlib.Path,
) -> None:
    database = tmp_path / "hoomi.db"
    async with serve_process(database, "--dev", secret=None) as hoomi:
        # Printed before the ports were announced (the admin token after them: read below).
        secret = re.findall(r"^  hoomi token alice --secret (\S+)$", hoomi.log.read_text(), re.M)
        assert len(secret) == 1
        assert secret[0] != SECRET
        dev = database.parent / "dev.json"
        assert stat.S_IMODE(dev.stat().st_mode) == 0o600
        written = json.loads(dev.read_text())
        assert written == {
            "url": hoomi.url,
            "admin_url": hoomi.admin_url,
            "admin_token": written["admin_token"],
        }
        # The printed secret signs tokens; no other does.
        assert (await _welcomed(hoomi.url, mint("alice", secret=secret[0])))["user_id"] == "alice"
        code, _, closed = await _refusal(hoomi.url, mint("alice"))
        assert (code, closed) == ("unauthorized", 4001)
        assert await upgrade_status(hoomi.port, origin="https://any.example") == 101
        async with httpx.AsyncClient(base_url=hoomi.admin_url, timeout=5) as api:
            minted = await api.post(
                "/v1/tokens",
                json={"user_id": "bob"},
                headers={"Authorization": f"Bearer {written['admin_token']}"},
            )
        assert minted.status_code == 200, minted.text
        assert (await _welcomed(hoomi.url, minted.json()["token"]))["user_id"] == "bob"
        hoomi.process.send_signal(signal.SIGTERM)
        assert await hoomi.wait() == 0
    assert not dev.exists()  # removed with the server
    printed = re.findall(r"^  admin token: (\S+)$", hoomi.log.read_text(), re.M)
    assert printed == [written["admin_token"]]


async def test_allowed_origin_star_lets_any_browser_origin_connect(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, allowed_origin=("*",)) as hoomi:
        for origin in ("https://any.example", "null", "http://localhost:3000"):
            assert await upgrade_status(hoomi.server.ports[0], origin=origin) == 101


ISSUER, AUDIENCE = "https://login.example", "hoomi-chat"


def _cli_token(*options: str) -> str:
    result = CliRunner().invoke(app, ["token", "alice", "--secret", SECRET, *options])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.mark.requirement("HOOMI-HELLO-2")
async def test_the_issuer_audience_and_leeway_settings_reach_the_verifier(
    tmp_path: pathlib.Path,
) -> None:
    settings = {
        "HOOMI_JWT_ISSUER": ISSUER,
        "HOOMI_JWT_AUDIENCE": AUDIENCE,
        "HOOMI_JWT_LEEWAY_S": "60",
    }
    async with serve_process(tmp_path / "hoomi.db", **settings) as hoomi:
        url = hoomi.url
        token = _cli_token("--issuer", ISSUER, "--audience", AUDIENCE)
        assert (await _welcomed(url, token))["user_id"] == "alice"
        listed = mint("alice", iss=ISSUER, aud=["other", AUDIENCE])
        assert (await _welcomed(url, listed))["user_id"] == "alice"
        wrong_iss = "token `iss` is not the configured issuer"
        wrong_aud = "token `aud` does not name the configured audience"
        for bad, message in [
            (mint("alice", aud=AUDIENCE), wrong_iss),
            (mint("alice", iss="https://elsewhere.example", aud=AUDIENCE), wrong_iss),
            (mint("alice", iss=ISSUER), wrong_aud),
            (mint("alice", iss=ISSUER, aud="other"), wrong_aud),
        ]:
            assert await _refusal(url, bad) == ("unauthorized", message, 4001)
        # 60 s of leeway: in 30 s after expiry (5 s, the default, would refuse it), not 90 s.
        late = mint("alice", ttl_s=-30, iss=ISSUER, aud=AUDIENCE)
        assert (await _welcomed(url, late))["user_id"] == "alice"
        too_late = mint("alice", ttl_s=-90, iss=ISSUER, aud=AUDIENCE)
        expired = ("token_expired", "token has expired; get a new one", 4002)
        assert await _refusal(url, too_late) == expired


async def test_json_logs_are_one_object_a_line(tmp_path: pathlib.Path) -> None:
    async with serve_process(tmp_path / "hoomi.db", "--log-format", "json") as hoomi:
        assert (await _welcomed(hoomi.url, mint("alice")))["user_id"] == "alice"
        await _refusal(hoomi.url, mint("alice", ttl_s=-60))
        hoomi.process.send_signal(signal.SIGTERM)
        assert await hoomi.wait() == 0
    lines = hoomi.log.read_text().splitlines()
    assert not [line for line in lines if "level=" in line]  # no text log line
    records = [orjson.loads(line) for line in lines if line.startswith("{")]
    assert all(set(r) >= {"ts", "level", "event"} for r in records), records
    events = [(r["level"], r["event"]) for r in records]
    for expected in [
        ("info", "admin_listening"),
        ("info", "connected"),
        ("info", "ready"),
        ("info", "auth_failed"),
        ("info", "disconnected"),
        ("info", "drain"),
    ]:
        assert expected in events, events
    connected, ready = (next(r for r in records if r["event"] == e) for e in ("connected", "ready"))
    assert (ready["user"], ready["session"]) == ("alice", connected["session"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ready["ts"])


@pytest.mark.expect_errors(boom=ZeroDivisionError)
def test_a_json_error_record_carries_its_traceback_as_a_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("info", "json")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logs.failure("boom", session="s1")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    record = orjson.loads(lines[0])
    assert (record["level"], record["event"], record["session"]) == ("error", "boom", "s1")
    assert record["error"].startswith("Traceback (most recent call last):\n")
    assert record["error"].endswith("\nZeroDivisionError: division by zero")


@pytest.mark.parametrize(
    ("taken", "what", "flag"),
    [
        ("--port", "WebSocket connections", "--port"),
        ("--admin-port", "the admin API", "--admin-port"),
    ],
)
async def test_a_port_in_use_is_one_sentence_and_exit_code_1(
    tmp_path: pathlib.Path, taken: str, what: str, flag: str
) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    ports = {"--port": "0", "--admin-port": "0", taken: str(port)}
    command = [
        sys.executable,
        "-m",
        "hoomi.cli.main",
        "serve",
        *[x for p in ports.items() for x in p],
    ]
    env = {**os.environ, "HOOMI_JWT_SECRET": SECRET, "HOOMI_DATABASE": str(tmp_path / "h.db")}
    async with listener:
        with trio.fail_after(30):
            result = await trio.run_process(
                command, env=env, capture_stdout=True, capture_stderr=True, check=False
            )
    assert (result.returncode, result.stderr.decode(), result.stdout) == (
        1,
        f"Error: cannot listen for {what} on 127.0.0.1:{port}: Address already in use; "
        f"stop what uses that port or choose another with {flag}.\n",
        b"",
    )
