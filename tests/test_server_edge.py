"""The edge of the server: TLS (WSS), the Origin allow-list, the upgrade itself."""

from __future__ import annotations

import pathlib

import jwt
import pytest
import trio
import trio.testing
import trustme
from typer.testing import CliRunner

from harness import (
    SECRET,
    exchange,
    mint,
    open_stream,
    running_server,
    tls_files,
    upgrade_request,
    upgrade_status,
)
from hoomi.cli.main import app
from hoomi.protocol import SPEC_VERSION
from hoomi.server.server import Server


async def test_wss_with_a_certificate_and_key(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, tls=True) as hoomi:
        assert hoomi.url == f"wss://127.0.0.1:{hoomi.server.ports[0]}/"
        token = mint("alice")
        client = await hoomi.connect()
        await client.send({"type": "hello", "id": "h", "token": token})
        welcome = await client.expect("welcome")
        [session] = hoomi.server.by_user["alice"]
        settings = hoomi.server.settings
        assert welcome == {
            "type": "welcome",
            "id": "h",
            "session_id": session.id,
            "user_id": "alice",
            "protocol": "hoomi.v1",
            "spec_version": SPEC_VERSION,
            "heartbeat_interval_ms": settings.heartbeat_interval_ms,
            "limits": {
                "max_frame_bytes": settings.max_frame_bytes,
                "max_text_chars": settings.max_text_chars,
                "history_page_max": settings.history_page_max,
                "replay_max": settings.replay_max,
                "rate_per_s": settings.rate_per_s,
                "rate_burst": settings.rate_burst,
                "typing_ttl_ms": settings.typing_ttl_ms,
            },
            "conversations": [],
            "token_expires_at": jwt.decode(token, options={"verify_signature": False})["exp"]
            * 1000,
        }


@pytest.mark.parametrize(
    ("origin", "status"),
    [("https://app.hoomi.example", 101), ("https://evil.example", 403), (None, 101)],
)
async def test_only_allowed_browser_origins_connect(
    tmp_path: pathlib.Path, origin: str | None, status: int
) -> None:
    async with running_server(tmp_path, allowed_origin=("https://app.hoomi.example",)) as hoomi:
        assert await upgrade_status(hoomi.server.ports[0], origin=origin) == status


async def test_a_wrong_path_is_404_and_plain_http_is_400(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        assert await upgrade_status(hoomi.server.ports[0], path="/elsewhere") == 404
        response = await exchange(hoomi.server.ports[0], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 400")


def connection_tasks() -> list[trio.lowlevel.Task]:
    """The tasks alive now that serve an accepted socket (`Server._connection`)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found, nurseries = [], list(root.child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            if any(f.f_code is Server._connection.__code__ for f, _ in task.iter_await_frames()):
                found.append(task)
            nurseries.extend(task.child_nurseries)
    return found


@pytest.mark.parametrize(
    "sent",
    [upgrade_request(), b"\x00 not TLS \xff" * 8],
    ids=["plain-websocket-upgrade", "garbage"],
)
async def test_plain_tcp_to_the_tls_port_is_closed_and_tls_clients_still_connect(
    tmp_path: pathlib.Path, sent: bytes
) -> None:
    async with running_server(tmp_path, tls=True) as hoomi:
        stream = await open_stream(hoomi.server.ports[0])
        async with stream:
            await stream.send_all(sent)
            # The TLS handshake fails on the first bytes: the server ends the connection at
            # once, answering nothing (not even an alert), and logs no error.
            with trio.fail_after(5):
                assert await stream.receive_some(4096) == b""
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert connection_tasks() == []
        assert hoomi.server.sessions == {}
        alice = await hoomi.connect("alice")
        assert (alice.welcome["type"], alice.welcome["user_id"]) == ("welcome", "alice")
        assert len(connection_tasks()) == 1


@pytest.mark.parametrize(
    ("cert", "key", "sentence"),
    [
        (
            "missing/cert.pem",
            "key.pem",
            "Cannot read the TLS certificate file {cert}: No such file or directory; "
            "set tls_cert (--tls-cert) to a PEM file.",
        ),
        (
            "cert.pem",
            "missing/key.pem",
            "Cannot read the TLS key file {key}: No such file or directory; "
            "set tls_key (--tls-key) to a PEM file.",
        ),
        (
            ".",
            "key.pem",
            "Cannot read the TLS certificate file {cert}: Is a directory; "
            "set tls_cert (--tls-cert) to a PEM file.",
        ),
        (
            "garbage.pem",
            "key.pem",
            "The TLS certificate file {cert} holds no PEM certificate; "
            "set tls_cert (--tls-cert) to a PEM file.",
        ),
        (
            "key.pem",
            "key.pem",
            "The TLS certificate file {cert} holds no PEM certificate; "
            "set tls_cert (--tls-cert) to a PEM file.",
        ),
        (
            "cert.pem",
            "garbage.pem",
            "The TLS key file {key} holds no PEM private key; "
            "set tls_key (--tls-key) to a PEM file.",
        ),
        (
            "cert.pem",
            "other-key.pem",
            "The TLS key file {key} is not the key of the certificate in {cert}; "
            "set tls_key (--tls-key) to the certificate's key.",
        ),
    ],
    ids=[
        "no-cert",
        "no-key",
        "cert-a-directory",
        "cert-garbage",
        "cert-a-key",
        "key-garbage",
        "key-of-another-cert",
    ],
)
def test_hoomi_serve_names_the_tls_file_that_does_not_load(
    tmp_path: pathlib.Path, cert: str, key: str, sentence: str
) -> None:
    tls_files(tmp_path)  # cert.pem, key.pem
    (tmp_path / "garbage.pem").write_text("not PEM\n")
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    cert_path, key_path = tmp_path / cert, tmp_path / key
    database = tmp_path / "db" / "hoomi.db"
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--jwt-secret",
            SECRET,
            "--port",
            "0",
            "--database",
            str(database),
            "--tls-cert",
            str(cert_path),
            "--tls-key",
            str(key_path),
        ],
    )
    assert (result.exit_code, result.output) == (
        2,
        "Error: " + sentence.format(cert=cert_path, key=key_path) + "\n",
    )
    assert not database.parent.exists()  # refused before anything started
