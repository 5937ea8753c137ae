"""The HTTP upgrade (RFC 6455 section 4.2.1) over a real socket: what is accepted, what is
refused with which status, and that a refused or broken upgrade never harms the server."""

from __future__ import annotations

import pathlib

import pytest
import trio

from harness import exchange, running_server, upgrade_request
from hoomi.server.transport import Handshake, accept_response, parse_upgrade


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        (upgrade_request(first="POST / HTTP/1.1"), 405, b"a WebSocket upgrade is a GET"),
        (upgrade_request(first="GET / HTTP/1.0"), 400, b"HTTP/1.1 request line"),
        (upgrade_request(first="GET /"), 400, b"HTTP/1.1 request line"),
        (upgrade_request(drop=("Host",)), 400, b"Host header"),
        (upgrade_request(add=("Host: again",)), 400, b"Host header"),
        (upgrade_request(drop=("Upgrade",)), 400, b"not a WebSocket upgrade"),
        (upgrade_request(drop=("Connection",)), 400, b"not a WebSocket upgrade"),
        (upgrade_request(drop=("Sec-WebSocket-Version",)), 426, b"Sec-WebSocket-Version: 13"),
        (
            upgrade_request(drop=("Sec-WebSocket-Version",), add=("Sec-WebSocket-Version: 8",)),
            426,
            b"13",
        ),
        (upgrade_request(drop=("Sec-WebSocket-Key",)), 400, b"Sec-WebSocket-Key"),
        (
            upgrade_request(drop=("Sec-WebSocket-Key",), add=("Sec-WebSocket-Key: c2hvcnQ=",)),
            400,
            b"16",
        ),
        (
            upgrade_request(drop=("Sec-WebSocket-Key",), add=("Sec-WebSocket-Key: !!",)),
            400,
            b"16 bytes",
        ),
        (upgrade_request(add=("Content-Length: 5",)), 400, b"no body"),
        (upgrade_request(add=("Transfer-Encoding: chunked",)), 400, b"no body"),
        (upgrade_request(add=("Content-Length: 0", "Content-Length: 5")), 400, b"no body"),
        (upgrade_request(add=("Bad Header: x",)), 400, b"malformed header"),
        (upgrade_request(add=("no colon",)), 400, b"malformed header"),
        (upgrade_request(add=("Origin: https://a", "Origin: https://b")), 400, b"one Origin"),
        (upgrade_request(add=("Origin: https://a\rX-Injected: 1",)), 400, b"control characters"),
        (upgrade_request(add=("X-Nul: a\x00b",)), 400, b"control characters"),
        (upgrade_request(first="GET /elsewhere HTTP/1.1"), 404, b"no WebSocket endpoint"),
        (b"GET / HTTP/1.1\r\nX: " + b"y" * 20_000, 431, b"too large"),
        (
            upgrade_request(add=("X: " + "y" * 20_000,)),
            431,
            b"too large",
        ),  # complete, but too large
    ],
)
async def test_bad_upgrades_are_refused_with_a_status_and_a_reason(
    tmp_path: pathlib.Path, raw: bytes, status: int, says: bytes
) -> None:
    async with running_server(tmp_path) as hoomi:
        port = hoomi.server.ports[0]
        response = await exchange(port, raw)
        assert response.startswith(f"HTTP/1.1 {status} ".encode()), response
        assert says in response
        assert b"Connection: close" in response
        await hoomi.still_serving()


@pytest.mark.parametrize(
    "raw",
    [
        upgrade_request(),
        upgrade_request().replace(b"\r\n", b"\n"),  # bare LF line ends
        upgrade_request(drop=("Connection",), add=("Connection: keep-alive, Upgrade",)),
        upgrade_request(
            drop=("Upgrade",), add=("upgrade: WebSocket",)
        ),  # names and tokens: any case
        upgrade_request(
            drop=("Sec-WebSocket-Protocol",), add=("Sec-WebSocket-Protocol: chat, hoomi.v1",)
        ),
        upgrade_request(add=("Sec-WebSocket-Protocol: other",)),  # the protocol list spans headers
        upgrade_request(first="GET /?token=x HTTP/1.1"),  # the query is not part of the path
    ],
)
async def test_good_upgrades_are_accepted_with_hoomi_v1(tmp_path: pathlib.Path, raw: bytes) -> None:
    async with running_server(tmp_path) as hoomi:
        response = await exchange(hoomi.server.ports[0], raw)
    head = response.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 101 Switching Protocols"
    # RFC 6455 section 1.3's own example key and answer.
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert b"Sec-WebSocket-Protocol: hoomi.v1" in head


def test_parse_upgrade_reads_path_origin_and_every_offered_subprotocol() -> None:
    parsed = parse_upgrade(
        upgrade_request(
            first="GET /ws?x=1 HTTP/1.1",
            add=("Origin: https://app.example", "Sec-WebSocket-Protocol: a, , b"),
        ).removesuffix(b"\r\n\r\n")
    )
    assert parsed == Handshake(
        path="/ws",
        origin="https://app.example",
        subprotocols=("hoomi.v1", "a", "b"),
        key=b"dGhlIHNhbXBsZSBub25jZQ==",
        query="x=1",
    )
    assert accept_response(parsed.key, None).count(b"Sec-WebSocket-Protocol") == 0


async def test_a_request_trickling_in_a_byte_at_a_time_is_accepted(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        stream = await trio.open_tcp_stream("127.0.0.1", hoomi.server.ports[0])
        async with stream:
            for byte in upgrade_request():
                await stream.send_all(bytes([byte]))
            with trio.fail_after(5):
                head = await stream.receive_some(1024)
        assert head.startswith(b"HTTP/1.1 101 ")


async def test_nothing_before_the_session_exists_can_end_the_server(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, hello_timeout_ms=200) as hoomi:
        port = hoomi.server.ports[0]
        idle = await trio.open_tcp_stream("127.0.0.1", port)  # never upgrades
        reset = await trio.open_tcp_stream("127.0.0.1", port)
        await reset.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        reset.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        await reset.aclose()  # RST in the middle of the upgrade
        idna = await trio.open_tcp_stream("127.0.0.1", port)
        await idna.send_all(upgrade_request(drop=("Host",), add=("Host: xn--zz",)))
        lf_only = await trio.open_tcp_stream("127.0.0.1", port)
        await lf_only.send_all(upgrade_request().replace(b"\r\n", b"\n"))
        with trio.fail_after(5):
            assert (await lf_only.receive_some(12)).startswith(b"HTTP/1.1 101")
            assert await idle.receive_some(10) == b""  # closed at the hello deadline
        for stream in (idle, idna, lf_only):
            await stream.aclose()
        await hoomi.still_serving()
