"""WebSocket framing as the server parses it (RFC 6455 section 5), byte by byte."""

from __future__ import annotations

import pathlib

import orjson
import pytest
import trio

from harness import RawClient, Running, hello_frame, mint, running_server


async def _ready(hoomi: Running) -> RawClient:
    raw = await hoomi.raw()
    await raw.hello(mint("alice"))
    return raw


async def test_fragmented_text_messages_are_reassembled_and_pings_answered(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        raw = await _ready(hoomi)
        frame = '{"type":"ping","id":"p-ü"}'.encode()
        await raw.send_frame(0x1, frame[:5], fin=False)
        await raw.send_frame(0x9, b"are you there")  # a ping between fragments
        middle = frame.index("ü".encode()) + 1  # split inside the two-byte character
        await raw.send_frame(0x0, frame[5:middle], fin=False)
        await raw.send_frame(0x0, frame[middle:])
        assert await raw.next_frame() == (0xA, b"are you there")
        opcode, payload = await raw.next_frame()
        assert opcode == 0x1
        pong = orjson.loads(payload)
        assert (pong["type"], pong["id"]) == ("pong", "p-ü")
        await raw.send_frame(0x8, (1000).to_bytes(2, "big") + b"bye")
        assert await raw.next_frame() == (0x8, (1000).to_bytes(2, "big"))
        await raw.aclose()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([(0x1, b'{"type":"ping","id":"p"}', {"rsv": 4})], 1002),  # reserved bit
        ([(0x3, b"", {})], 1002),  # unknown opcode
        ([(0x9, b"x" * 126, {})], 1002),  # control frame over 125 bytes
        ([(0x9, b"x", {"fin": False})], 1002),  # fragmented control frame
        ([(0x0, b"{}", {})], 1002),  # continuation with nothing to continue
        ([(0x1, b"{", {"fin": False}), (0x1, b"}", {})], 1002),  # new message mid-message
        ([(0x8, b"\x03", {})], 1002),  # close payload of one byte
        ([(0x1, b'{"type":"ping","id":"\xc3"', {"fin": False}), (0x0, b'"}', {})], 1007),
        ([(0x2, b"\x00", {})], 1003),
    ],
    ids=[
        "rsv",
        "opcode",
        "long-control",
        "fragmented-control",
        "lone-continuation",
        "interleaved",
        "short-close",
        "split-invalid-utf8",
        "binary",
    ],
)
@pytest.mark.requirement("HOOMI-WIRE-2")
async def test_broken_frames_close_with_the_right_code(
    tmp_path: pathlib.Path, frames: list[tuple[int, bytes, dict[str, object]]], code: int
) -> None:
    async with running_server(tmp_path) as hoomi:
        raw = await _ready(hoomi)
        for opcode, payload, options in frames:
            await raw.send_frame(opcode, payload, **options)  # type: ignore[arg-type]
        assert await raw.close_code() == code
        await raw.aclose()
        bob = await hoomi.connect("bob")
        assert (await bob.request("ping"))["type"] == "pong"


async def test_an_oversized_frame_is_skipped_not_buffered_and_the_close_completes(
    tmp_path: pathlib.Path, tls: bool
) -> None:
    async with running_server(
        tmp_path, tls=tls, max_frame_bytes=2048, close_timeout_ms=30_000
    ) as hoomi:
        raw = await _ready(hoomi)
        # Announce 50 kB but send only the start: the server refuses it from the header.
        header = bytes([0x81, 0x80 | 126]) + (50_000).to_bytes(2, "big") + b"\0\0\0\0"
        await raw.stream.send_all(header + b"x" * 1000)
        assert await raw.close_code() == 1009
        await raw.stream.send_all(b"x" * 49_000)  # the rest of it, then our close reply
        started = trio.current_time()
        await raw.send_frame(0x8, (1009).to_bytes(2, "big"))
        with trio.fail_after(5):
            assert await raw.stream.receive_some(10) == b""  # the server ends TCP at once
        assert trio.current_time() - started < 5  # not the 30 s close timeout
        await raw.aclose()


async def test_frames_sent_right_behind_the_upgrade_request_are_not_lost(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        stream = await trio.open_tcp_stream("127.0.0.1", hoomi.server.ports[0])
        hello = RawClient.frame(0x1, orjson.dumps(hello_frame(mint("alice"))))
        raw = await RawClient.upgrade(stream, early=hello)
        opcode, payload = await raw.next_frame()
        assert (opcode, orjson.loads(payload)["type"]) == (0x1, "welcome")
        await raw.aclose()


async def test_a_burst_larger_than_one_read_is_answered_in_full_and_in_order(
    tmp_path: pathlib.Path,
) -> None:
    # 5,000 pings in one write (~170 KB): frames span the server's reads and several reads
    # come in a row, whether a read waits for readiness or not. (The client shares the
    # server's thread here, so the pongs wait in a large outbox.)
    count = 5000
    async with running_server(
        tmp_path, rate_per_s=100_000, rate_burst=100_000, outbox_size=2 * count
    ) as hoomi:
        raw = await _ready(hoomi)
        key = b"\x01\x02\x03\x04"
        burst = bytearray()
        for i in range(count):
            ping = orjson.dumps({"type": "ping", "id": f"p{i}"})
            masked = bytes(b ^ key[j % 4] for j, b in enumerate(ping))
            burst += bytes([0x81, 0x80 | len(ping)]) + key + masked
        assert len(burst) > 2 * 65536
        ids: list[str] = []

        async def read_replies() -> None:  # while the burst goes out: a client that reads
            while len(ids) < count:
                opcode, payload = await raw.next_frame()
                assert opcode == 0x1, (opcode, payload)
                reply = orjson.loads(payload)
                assert reply["type"] == "pong", reply
                ids.append(reply["id"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_replies)
            await raw.stream.send_all(bytes(burst))
        assert ids == [f"p{i}" for i in range(count)]
        await raw.aclose()


async def test_a_close_without_a_code_is_answered_without_one(
    tmp_path: pathlib.Path, tls: bool
) -> None:
    # An empty close means "no status" (1005 to the application), and 1005 must never be
    # put on the wire (RFC 6455 7.4.1): the answer is an empty close too, and then the
    # server ends the connection.
    async with running_server(tmp_path, tls=tls) as hoomi:
        raw = await _ready(hoomi)
        await raw.send_frame(0x8, b"")
        assert await raw.next_frame() == (0x8, b"")
        with trio.fail_after(5):
            assert await raw.stream.receive_some(10) == b""
        await raw.aclose()


async def test_a_ping_flood_from_a_client_that_never_reads_stays_bounded(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        raw = await RawClient.open(hoomi.server.ports[0])
        await raw.hello(mint("a"), welcome=False)
        ping = bytes([0x89, 0x80 | 100]) + b"\0\0\0\0" + b"p" * 100
        with trio.move_on_after(2):
            for _ in range(50):
                await raw.stream.send_all(ping * 2000)  # 20 MB, none of it read back
        [session] = hoomi.server.sessions.values()
        assert session.ws.queued <= 10  # pongs beyond a small budget are not answered
        await raw.aclose()
        await hoomi.still_serving()


async def test_empty_fragments_cannot_pile_up(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        raw = await RawClient.open(hoomi.server.ports[0])
        await raw.hello(mint("a"))
        await raw.send_frame(0x1, b"", fin=False)
        empty = bytes([0x00, 0x80]) + b"\0\0\0\0"
        with trio.move_on_after(2):
            await raw.stream.send_all(empty * 5000)
        assert await raw.close_code() == 1009
        await raw.aclose()
