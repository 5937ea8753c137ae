"""The client SDK (`hoomi.client`) against real servers over real sockets.

Most tests run the real server in process (`running_server`); the liveness and
bad-frame tests use a small scripted server on trio-websocket, which says exactly what
the test needs and nothing else; the SIGKILL test runs `hoomi serve` as a process.
"""

from __future__ import annotations

import contextlib
import pathlib
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from harness import Running, mint, running_server, serve_process
from hoomi.client import (
    Backoff,
    ClientClosed,
    ClientError,
    ClientSettings,
    ClientState,
    Event,
    RequestFailed,
    StateChanged,
    connect,
)
from hoomi.client.client import Client
from hoomi.protocol.messages import ChatMessage, Presence, Receipt


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jumps only after 10 ms of real idleness, so socket round trips never make time leap.
    return trio.testing.MockClock(autojump_threshold=0.01)


_T = TypeVar("_T")
FAST = ClientSettings(backoff=Backoff(initial_ms=20, max_ms=200, multiplier=2, max_attempts=50))


async def _until(client: Client, want: Callable[[Event], bool], within: float = 5) -> list[Event]:
    """Read events until one satisfies `want`; return all read (that one last)."""
    seen: list[Event] = []
    with trio.fail_after(within):
        async for event in client.events():
            seen.append(event)
            if want(event):
                return seen
    raise AssertionError(f"events ended before the wanted one: {seen}")


async def _collect(client: Client, kind: type[_T], count: int, within: float = 10) -> list[_T]:
    """The next `count` events of `kind` from `events()` (other events skipped)."""
    got: list[_T] = []
    with trio.fail_after(within):
        async for event in client.events():
            if isinstance(event, kind):
                got.append(event)
                if len(got) == count:
                    return got
    raise AssertionError(f"events ended after {got}")


async def _messages(client: Client, count: int, within: float = 10) -> list[ChatMessage]:
    return await _collect(client, ChatMessage, count, within)


def _state(state: ClientState) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, StateChanged) and e.state is state


@pytest.mark.requirement("HOOMI-DELIVER-1", "HOOMI-HISTORY-1", "HOOMI-READ-2")
async def test_send_is_acked_and_each_member_sees_the_message_once(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        async with (
            connect(hoomi.url, token=mint("alice")) as alice,
            connect(hoomi.url, token=mint("bob")) as bob,
        ):
            assert alice.user_id == "alice"
            assert list(bob.conversations) == [cid]
            # Each learns who is online from the SDK's query after welcome, then the changes
            # pushed in order (HOOMI-PRESENCE-2, -3): alice saw bob offline, then coming.
            [already] = await _collect(bob, Presence, 1)
            assert (already.user_id, already.status) == ("alice", "online")
            absent, came = await _collect(alice, Presence, 2)
            assert [(p.user_id, p.status) for p in (absent, came)] == [
                ("bob", "offline"),
                ("bob", "online"),
            ]
            acks = [await alice.send(cid, f"hi {n}") for n in range(3)]
            assert [ack.seq for ack in acks] == [1, 2, 3]
            for client in (alice, bob):  # the sender's own session too (HOOMI-DELIVER-1)
                got = await _messages(client, 3)
                assert [(g.seq, g.text) for g in got] == [(1, "hi 0"), (2, "hi 1"), (3, "hi 2")]
                assert got[0].message_id == acks[0].message_id
            page = await bob.history(cid, after_seq=1)
            assert [m.seq for m in page.messages] == [2, 3]
            await bob.read(cid, 3)
            [receipt] = await _collect(alice, Receipt, 1)
            assert (receipt.user_id, receipt.seq) == ("bob", 3)
            [state] = await bob.presence(["alice", "nobody-shared"])
            assert (state.user_id, state.status) == ("alice", "online")
            with pytest.raises(RequestFailed) as refused:
                await alice.send("c_nonexistent", "x")
            assert refused.value.code == "not_found"


async def test_a_slow_app_loses_nothing_when_its_inbox_is_full(tmp_path: pathlib.Path) -> None:
    """The app stops reading: its inbox fills, the SDK takes further messages back (the
    reader never waits for the app) and pages them from history once the app reads again;
    the app sees every message once, in order, and nothing reconnects."""
    async with running_server(tmp_path, rate_per_s=10_000, rate_burst=10_000) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        slow = ClientSettings(event_buffer=3, backoff=FAST.backoff)
        async with connect(hoomi.url, token=mint("bob"), settings=slow) as bob:
            async with connect(hoomi.url, token=mint("alice")) as alice:
                for n in range(60):
                    await alice.send(cid, f"m{n}")
            # The inbox (3) is full: the SDK holds the stream back instead of blocking.
            assert bob.streams.stalled(cid)
            assert len(bob.events()) == 3
            position = bob.streams.position(cid)
            assert position is not None
            assert position < 60  # taken back, to be paged: not dropped on the floor
            got = await _collect(bob, ChatMessage, 60, within=20)
            assert [g.seq for g in got] == list(range(1, 61))
            assert [g.text for g in got] == [f"m{n}" for n in range(60)]
            assert bob.state is ClientState.LIVE
            assert len(hoomi.server.sessions) == 1  # bob's first session: no reconnect


async def test_an_app_may_await_sends_inside_its_event_loop(tmp_path: pathlib.Path) -> None:
    """A bot answering each message from inside `async for` over a small inbox: the acks it
    waits for sit behind events in the socket, and still arrive."""
    async with running_server(tmp_path, rate_per_s=10_000, rate_burst=10_000) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        small = ClientSettings(event_buffer=4, backoff=FAST.backoff)
        async with (
            connect(hoomi.url, token=mint("bob"), settings=small) as bob,
            connect(hoomi.url, token=mint("alice")) as alice,
        ):
            for n in range(20):
                await alice.send(cid, f"question {n}")
            answered = 0
            with trio.fail_after(20):
                async for event in bob.events():
                    if isinstance(event, ChatMessage) and event.sender_id == "alice":
                        await bob.send(cid, f"answer to {event.text}")
                        answered += 1
                        if answered == 20:
                            break
            page = await alice.history(cid, after_seq=20, limit=100)
            assert [m.text for m in page.messages] == [f"answer to question {n}" for n in range(20)]


@pytest.mark.requirement("HOOMI-LIVE-3", "HOOMI-CLOSE-3")
async def test_a_terminal_close_ends_the_client_without_a_reconnect(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        async with connect(hoomi.url, token=mint("alice"), settings=FAST) as alice:
            [session] = list(hoomi.server.sessions)
            assert hoomi.server.kick(session)
            closed_at = (await _until(alice, _state(ClientState.CLOSED)))[-1]
            assert isinstance(closed_at, StateChanged)
            assert closed_at.close_code == 4004
            assert "4004" in closed_at.reason
            await trio.sleep(0.5)  # ten backoff ceilings of FAST: a reconnect would be here
            assert not hoomi.server.sessions
            with pytest.raises(ClientClosed) as closed:
                await alice.send(dm.conversation_id, "too late")
            assert closed.value.close_code == 4004
            assert [e async for e in alice.events()] == []  # the stream has ended


@pytest.mark.requirement("HOOMI-HELLO-2")
async def test_a_refused_token_fails_connect_with_its_close_code(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path) as hoomi:
        with pytest.raises(ClientClosed) as refused:
            async with connect(hoomi.url, token=mint("alice", secret="x" * 40), settings=FAST):
                raise AssertionError("connected with a wrongly signed token")
        assert refused.value.close_code == 4001
        assert not hoomi.server.sessions


async def test_connect_gives_up_after_max_attempts_on_a_dead_address(
    clock: trio.testing.MockClock,
) -> None:
    port = _free_port()
    settings = ClientSettings(
        backoff=Backoff(initial_ms=500, max_ms=30_000, multiplier=2, max_attempts=3)
    )
    started = trio.current_time()
    with pytest.raises(ClientClosed, match="gave up after 3"):
        async with connect(f"ws://127.0.0.1:{port}/", token="t", settings=settings):
            raise AssertionError("connected to nothing")
    assert trio.current_time() - started <= 0.5 + 1 + 2  # three jittered waits at most


@pytest.mark.requirement("HOOMI-CLIENT-3")
async def test_restart_resumes_and_resends_unacked_sends_once(tmp_path: pathlib.Path) -> None:
    """The server stops (1001, reconnect); a send made while it is down waits; a new server on
    the same database and port takes the reconnect, the resume and the send."""
    port = _free_port()

    settings: dict[str, Any] = {"port": port}

    async with trio.open_nursery() as servers:
        first_stop = trio.Event()
        first = await servers.start(_serve_until, tmp_path, first_stop, settings)
        dm = await first.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid, url = dm.conversation_id, f"ws://127.0.0.1:{port}/"
        async with (
            connect(url, token=mint("alice"), settings=FAST) as alice,
            connect(url, token=mint("bob"), settings=FAST) as bob,
        ):
            await alice.send(cid, "before")
            first_stop.set()
            going = (await _until(alice, _state(ClientState.BACKOFF)))[-1]
            assert isinstance(going, StateChanged)
            assert going.close_code == 1001  # going away: a reconnect code
            # Bounded: a send that is never sent again would wait for ever.
            with trio.fail_after(15):
                async with trio.open_nursery() as sends:
                    sends.start_soon(alice.send, cid, "during")
                    await trio.sleep(0.3)  # the send waits while nothing listens
                    assert alice.state is not ClientState.LIVE
                    await servers.start(_serve_until, tmp_path, trio.Event(), settings)
            await alice.send(cid, "after")
            got = await _messages(bob, 3)
            assert [(g.seq, g.text) for g in got] == [(1, "before"), (2, "during"), (3, "after")]
            page = await bob.history(cid)
            assert [m.text for m in page.messages] == ["before", "during", "after"]
        servers.cancel_scope.cancel()


async def _serve_until(
    tmp_path: pathlib.Path,
    stop: trio.Event,
    settings: dict[str, Any],
    *,
    task_status: trio.TaskStatus[Running],
) -> None:
    """An in-process server with `settings` until `stop` is set (then it drains, 1001);
    started again on the same database and port, it is the same server restarted."""
    async with running_server(tmp_path, **settings) as hoomi:
        task_status.started(hoomi)
        await stop.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- a scripted server: liveness and bad frames ---------------------------------------------


def _welcome(hello: dict[str, Any], heartbeat_ms: int) -> str:
    return orjson.dumps(
        {
            "type": "welcome",
            "id": hello["id"],
            "session_id": "s1",
            "user_id": "alice",
            "protocol": "hoomi.v1",
            "spec_version": "1.0.0",
            "heartbeat_interval_ms": heartbeat_ms,
            "limits": {
                "max_frame_bytes": 65536,
                "max_text_chars": 4000,
                "history_page_max": 100,
                "replay_max": 1000,
                "rate_per_s": 20,
                "rate_burst": 40,
                "typing_ttl_ms": 5000,
            },
            "conversations": [],
        }
    ).decode()


Script = Callable[[trio_websocket.WebSocketConnection, list[dict[str, Any]]], Awaitable[None]]


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[str, list[list[dict[str, Any]]]]]:
    """A WebSocket server that answers each connection's first frame with a welcome
    (heartbeat 1 s), then runs `script(ws, frames)` while recording what the client sends
    into `frames`; yields its URL and the frames of each connection."""
    frames: list[list[dict[str, Any]]] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept(subprotocol="hoomi.v1")
        hello = orjson.loads(await ws.get_message())
        frames.append([hello])
        mine = frames[-1]
        await ws.send_message(_welcome(hello, heartbeat_ms=1000))

        async def record(done: trio.CancelScope) -> None:
            try:
                while True:
                    mine.append(orjson.loads(await ws.get_message()))
            except trio_websocket.ConnectionClosed:
                done.cancel()  # the client went away: so does this connection's script

        async with trio.open_nursery() as nursery:
            nursery.start_soon(record, nursery.cancel_scope)
            await script(ws, mine)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        yield f"ws://127.0.0.1:{server.port}/", frames
        nursery.cancel_scope.cancel()


@pytest.mark.requirement("HOOMI-LIVE-2", "HOOMI-CLIENT-1")
async def test_quiet_line_gets_an_app_ping_and_a_dead_one_a_reconnect(
    clock: trio.testing.MockClock,
) -> None:

    async def silent_after_welcome(
        ws: trio_websocket.WebSocketConnection, frames: list[dict[str, Any]]
    ) -> None:
        await trio.sleep_forever()

    async with (
        scripted(silent_after_welcome) as (url, frames),
        connect(url, token="t", settings=FAST) as client,
    ):
        live_at = trio.current_time()
        seen = await _until(client, _state(ClientState.BACKOFF), within=30)
        dead_after = trio.current_time() - live_at
        await _until(client, _state(ClientState.LIVE), within=30)
    first = [frame["type"] for frame in frames[0]]
    assert first == ["hello", "ping"]  # one ping after a quiet interval, then given up
    assert 2.0 <= dead_after <= 2.2, dead_after  # quiet 1 s + dead 1 s (HOOMI-LIVE-2)
    assert any("nothing from the server" in getattr(e, "reason", "") for e in seen)
    assert frames[1][0]["type"] == "hello"  # reconnected, hello first


@pytest.mark.requirement("HOOMI-WIRE-4")
async def test_bad_frames_become_error_events_and_unknown_types_are_ignored(
    clock: trio.testing.MockClock,
) -> None:

    async def garbage(ws: trio_websocket.WebSocketConnection, frames: list[dict[str, Any]]) -> None:
        await ws.send_message('{"type": "from_the_future", "x": 1}')
        await ws.send_message("not json")
        await ws.send_message('{"type": "message"}')
        await trio.sleep_forever()

    async with scripted(garbage) as (url, _), connect(url, token="t", settings=FAST) as client:
        errors = await _collect(client, ClientError, 2, within=5)
        assert [e.code for e in errors] == ["bad_frame", "bad_frame"]
        assert "$.message" in errors[1].message  # says where the frame is wrong
        assert client.state is ClientState.LIVE


# -- the SDK against a server process killed with SIGKILL -------------------------------------


@pytest.mark.timeout(120)
async def test_sigkill_mid_conversation_loses_no_acked_message_and_stores_sends_once(
    tmp_path: pathlib.Path,
) -> None:
    from hoomi.server.sqlite_store import SqliteStore

    database = tmp_path / "kill.db"
    store = SqliteStore(database)
    await store.open()
    dm = await store.create_conversation(
        kind="direct", members=["alice", "bob"], title=None, now_ms=0
    )
    await store.aclose()
    cid, port, total = dm.conversation_id, _free_port(), 120
    async with contextlib.AsyncExitStack() as servers:
        first = await servers.enter_async_context(serve_process(database, "--port", str(port)))
        killed = False
        url = f"ws://127.0.0.1:{port}/"
        acked: list[int] = []
        async with (
            connect(url, token=mint("alice"), settings=FAST) as alice,
            connect(url, token=mint("bob"), settings=FAST) as bob,
        ):

            async def chat() -> None:
                for n in range(total):
                    acked.append((await alice.send(cid, f"m{n}")).seq)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(chat)
                got = []
                with trio.fail_after(60):
                    async for event in bob.events():
                        if isinstance(event, ChatMessage):
                            got.append(event)
                            if len(got) == total // 3 and not killed:
                                first.process.send_signal(signal.SIGKILL)
                                await first.wait()
                                killed = True
                                restarted = serve_process(database, "--port", str(port))
                                await servers.enter_async_context(restarted)
                            if len(got) == total:
                                break
            page = await bob.history(cid, after_seq=0, limit=100)
            rest = await bob.history(cid, after_seq=100, limit=100)
            alice_saw = []
            while True:
                try:
                    alice_saw.append(alice.events().receive_nowait())
                except trio.WouldBlock:
                    break
        reconnects = [e for e in alice_saw if isinstance(e, StateChanged)]
        assert ClientState.BACKOFF in [e.state for e in reconnects], "the kill was not seen"
        assert [g.seq for g in got] == list(range(1, total + 1))  # once each, in order
        assert [g.text for g in got] == [f"m{n}" for n in range(total)]
        assert acked == list(range(1, total + 1))
        stored = [m.text for m in page.messages + rest.messages]
        assert stored == [f"m{n}" for n in range(total)]  # each send stored exactly once


@pytest.mark.requirement("HOOMI-RESUME-3", "HOOMI-CLIENT-2")
async def test_a_resume_gap_is_paged_from_history_in_order(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, replay_max=3, history_page_max=4) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        cid = dm.conversation_id
        for n in range(10):
            await hoomi.server.post(cid, f"m{n}", "alice", kind="user")
        async with connect(hoomi.url, token=mint("bob"), positions={cid: 1}) as bob:
            await hoomi.server.post(cid, "live", "alice", kind="user")
            got = await _messages(bob, 10)
        assert [(g.seq, g.text) for g in got] == [
            *[(n + 1, f"m{n}") for n in range(1, 10)],
            (11, "live"),
        ]


@pytest.mark.requirement("HOOMI-TOKEN-2", "HOOMI-CLIENT-4")
async def test_token_refresh_in_band_keeps_the_session(
    tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    async with running_server(tmp_path) as hoomi:
        provided: list[int] = []

        async def provider() -> str:
            provided.append(int(trio.current_time()))
            return hoomi.mint("alice", ttl_s=90)  # on the server's clock, which follows Trio's

        async with connect(hoomi.url, token_provider=provider, settings=FAST) as alice:
            [session] = list(hoomi.server.sessions)
            await trio.sleep(300)  # three token lifetimes
            assert alice.state is ClientState.LIVE
            assert list(hoomi.server.sessions) == [session]  # the same session throughout
        assert len(provided) >= 1 + 300 // 90  # hello, then a refresh per token_expiring


async def test_an_oversized_send_is_refused_before_it_costs_the_connection(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, max_text_chars=100_000) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        async with connect(hoomi.url, token=mint("alice"), settings=FAST) as alice:
            with pytest.raises(RequestFailed) as refused:
                await alice.send(dm.conversation_id, "x" * 70_000)  # over max_frame_bytes
            assert refused.value.code == "too_large"
            assert (await alice.send(dm.conversation_id, "fine")).seq == 1
            assert alice.state is ClientState.LIVE


async def test_sends_are_paced_under_the_rate_limit(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst bigger than rate_burst is spread out by the SDK instead of being refused
    (or closed 4006): every send is acked at the first try, in one session."""
    retries: list[float] = []
    retry_later = Client._retry_later

    async def counting(self: Client, pending: Any, delay_s: float) -> None:
        retries.append(delay_s)  # the server said rate_limited
        await retry_later(self, pending, delay_s)

    monkeypatch.setattr(Client, "_retry_later", counting)
    async with running_server(tmp_path, rate_per_s=50, rate_burst=3) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        acks: list[int] = []
        async with connect(hoomi.url, token=mint("alice"), settings=FAST) as alice:

            async def one(n: int) -> None:
                acks.append((await alice.send(dm.conversation_id, f"m{n}")).seq)

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for n in range(15):
                    nursery.start_soon(one, n)
            took = trio.current_time() - started
            assert sorted(acks) == list(range(1, 16))
            assert took >= (15 - 3) / 50 * 0.9  # paced: the bucket's refill, not a burst
            assert len(hoomi.server.sessions) == 1
            assert retries == []


async def test_many_unacked_sends_after_a_restart_are_paced_without_stalling_the_reader(
    tmp_path: pathlib.Path,
) -> None:
    """30 sends wait while the server restarts; the new one allows 20 requests/s (burst 2)
    and pings every 500 ms. The re-sends are paced by the connection's writer while its
    reader keeps reading: the connection stays up and every send is acked once."""
    port = _free_port()

    settings: dict[str, Any] = {
        "port": port,
        "rate_per_s": 20,
        "rate_burst": 2,
        "heartbeat_interval_ms": 500,
    }

    async with trio.open_nursery() as servers:
        first_stop = trio.Event()
        first = await servers.start(_serve_until, tmp_path, first_stop, settings)
        dm = await first.server.create_conversation(kind="direct", members=["alice", "bob"])
        url = f"ws://127.0.0.1:{port}/"
        async with connect(url, token=mint("alice"), settings=FAST) as alice:
            first_stop.set()
            await _until(alice, _state(ClientState.BACKOFF))
            acks: list[int] = []

            async def one(n: int) -> None:
                acks.append((await alice.send(dm.conversation_id, f"m{n}")).seq)

            with trio.fail_after(15):
                async with trio.open_nursery() as sends:
                    for n in range(30):
                        sends.start_soon(one, n)
                    await trio.sleep(0.2)
                    second = await servers.start(_serve_until, tmp_path, trio.Event(), settings)
            assert sorted(acks) == list(range(1, 31))
            assert second.server.metrics.connections == 1  # one connection: never declared dead
        servers.cancel_scope.cancel()


@asynccontextmanager
async def _raw_listener(
    answer: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP listener that does `answer` with each connection instead of a WebSocket."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"
        nursery.cancel_scope.cancel()


async def test_an_upgrade_never_answered_times_out_and_one_closed_fails_at_once(
    clock: trio.testing.MockClock,
) -> None:
    settings = ClientSettings(
        connect_timeout_s=10,
        backoff=Backoff(initial_ms=1, max_ms=1, multiplier=1, max_attempts=2),
    )

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with _raw_listener(silent) as url:
        started = trio.current_time()
        with pytest.raises(ClientClosed, match="gave up after 2"):
            async with connect(url, token="t", settings=settings):
                raise AssertionError("connected to a silent server")
        assert 20 <= trio.current_time() - started <= 20.5  # two connect timeouts
    async with _raw_listener(hang_up) as url:
        started = trio.current_time()
        with pytest.raises(ClientClosed, match="gave up after 2"):
            async with connect(url, token="t", settings=settings):
                raise AssertionError("connected to a server that hangs up")
        assert trio.current_time() - started < 1  # no connect timeout waited out
