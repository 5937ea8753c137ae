"""The edge of the server: TLS (WSS), the Origin allow-list, the upgrade itself."""

from __future__ import annotations

import pathlib
import ssl
from typing import Any

import orjson
import pytest
import trio
import trio_websocket
import trustme

from harness import exchange, hello_frame, mint, running_server, upgrade_status


def tls_files(tmp_path: pathlib.Path) -> tuple[dict[str, Any], ssl.SSLContext]:
    """Server settings for a fresh certificate for 127.0.0.1, and a client context that
    trusts it."""
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return {"tls_cert": str(cert_file), "tls_key": str(key_file)}, context


async def test_wss_with_a_certificate_and_key(tmp_path: pathlib.Path) -> None:
    settings, context = tls_files(tmp_path)
    async with running_server(tmp_path, **settings) as hoomi:
        url = f"wss://127.0.0.1:{hoomi.server.ports[0]}/"
        async with trio_websocket.open_websocket_url(
            url, ssl_context=context, subprotocols=["hoomi.v1"]
        ) as ws:
            await ws.send_message(orjson.dumps(hello_frame(mint("alice"))).decode())
            with trio.fail_after(5):
                welcome = await ws.get_message()
            assert '"type":"welcome"' in str(welcome)


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


async def test_wss_fan_out_delivers_every_frame_in_order(tmp_path: pathlib.Path) -> None:
    # Over TLS every write is queued (no raw fd, no Cork): a commit's report queues the
    # sender's message event and its ack together, and both must go out.
    settings, context = tls_files(tmp_path)
    async with running_server(tmp_path, **settings) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["alice", "bob"])
        cid = group.conversation_id
        url = f"wss://127.0.0.1:{hoomi.server.ports[0]}/"
        async with (
            trio_websocket.open_websocket_url(
                url, ssl_context=context, subprotocols=["hoomi.v1"]
            ) as alice,
            trio_websocket.open_websocket_url(
                url, ssl_context=context, subprotocols=["hoomi.v1"]
            ) as bob,
        ):
            for ws, user in ((alice, "alice"), (bob, "bob")):
                await ws.send_message(orjson.dumps(hello_frame(mint(user))).decode())
                with trio.fail_after(5):
                    assert orjson.loads(await ws.get_message())["type"] == "welcome"
            count = 20
            for n in range(count):
                frame = {
                    "type": "send",
                    "id": f"s{n}",
                    "conversation_id": cid,
                    "client_msg_id": f"k{n}",
                    "text": f"m{n}",
                }
                await alice.send_message(orjson.dumps(frame).decode())
            acks: list[str] = []
            seen: dict[str, list[int]] = {"alice": [], "bob": []}
            with trio.fail_after(10):
                for ws, user in ((alice, "alice"), (bob, "bob")):
                    while len(seen[user]) < count or (user == "alice" and len(acks) < count):
                        got = orjson.loads(await ws.get_message())
                        if got["type"] == "ack":
                            acks.append(got["id"])
                        elif got["type"] == "message":
                            seen[user].append(got["message"]["seq"])
            assert acks == [f"s{n}" for n in range(count)]
            assert seen == {"alice": list(range(1, count + 1)), "bob": list(range(1, count + 1))}
