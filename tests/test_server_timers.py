"""Timers on a mock clock (conftest's `clock`): typing expiry, token warning/refresh/expiry,
heartbeats. Waits here cost no real time."""

from __future__ import annotations

import pathlib

import httpx
import pytest
import trio
import trio.testing

from harness import running_server


@pytest.mark.requirement("HOOMI-TYPING-1", "HOOMI-TYPING-3")
async def test_typing_expires_after_the_ttl_and_is_never_stuck(
    tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    async with running_server(tmp_path) as hoomi:
        dm = await hoomi.server.create_conversation(kind="direct", members=["alice", "bob"])
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        await alice.request("typing", conversation_id=dm.conversation_id, active=True)
        started = trio.current_time()
        assert (await bob.expect("user_typing", skip=("presence",)))["active"] is True
        # A repeat within the ttl extends it and tells nobody anything new.
        await trio.sleep(3)
        await alice.request("typing", conversation_id=dm.conversation_id, active=True)
        stopped = await bob.expect("user_typing", within=30)
        assert stopped["active"] is False
        waited = trio.current_time() - started
        assert 8 <= waited <= 9.5, waited  # 3 s + ttl 5 s, plus at most one scheduler tick


@pytest.mark.requirement("HOOMI-TOKEN-1", "HOOMI-TOKEN-2", "HOOMI-TOKEN-3")
async def test_token_warning_refresh_and_expiry(
    tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    async with running_server(tmp_path) as hoomi:
        keeper = await hoomi.connect()
        await keeper.hello(hoomi.mint("alice", ttl_s=90))
        forgetful = await hoomi.connect()
        await forgetful.hello(hoomi.mint("bob", ttl_s=90))
        warning = await keeper.expect("token_expiring", within=60, skip=("presence",))
        assert warning["expires_at"] == keeper.welcome["token_expires_at"]
        assert (await keeper.request("refresh", token=hoomi.mint("alice")))["type"] == "ok"
        other_user = await keeper.request("refresh", token=hoomi.mint("bob"))
        assert other_user["code"] == "unauthorized"
        assert await forgetful.closed(within=120) == 4002
        await trio.sleep(60)
        assert (await keeper.request("ping"))["type"] == "pong"


@pytest.mark.requirement("HOOMI-LIVE-1")
async def test_heartbeats_keep_live_clients_and_drop_silent_ones(
    tmp_path: pathlib.Path, clock: trio.testing.MockClock, tls: bool
) -> None:
    async with running_server(tmp_path, tls=tls) as hoomi:
        lively = await hoomi.connect("alice")  # trio-websocket answers pings by itself
        silent = await hoomi.raw()
        await silent.hello(hoomi.mint("bob"), welcome=False)
        started = trio.current_time()
        assert await silent.close_code(within=120) == 4008
        assert 75 <= trio.current_time() - started <= 77
        await silent.aclose()
        await trio.sleep(100)
        assert (await lively.request("ping"))["type"] == "pong"


async def test_stats_rates_are_the_traffic_of_the_last_ten_seconds(
    tmp_path: pathlib.Path, mock_clock: trio.testing.MockClock
) -> None:
    # Time stands still but for the jumps: the scheduler samples the counters once a
    # second; one sample 10 s after the last one is the whole average (weight 1).
    async with running_server(tmp_path, admin=True) as hoomi:
        group = await hoomi.server.create_conversation(kind="group", members=["alice", "bob"])
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")

        async def rates_after(seconds: float) -> tuple[float, float, float]:
            mock_clock.jump(seconds)
            await trio.testing.wait_all_tasks_blocked()  # the scheduler took its sample
            headers = {"Authorization": f"Bearer {hoomi.admin_token}"}
            async with httpx.AsyncClient(base_url=str(hoomi.admin_url), headers=headers) as api:
                stats = (await api.get("/v1/stats")).json()
            return (
                stats["messages_in_per_s"],
                stats["messages_out_per_s"],
                stats["deliveries_per_s"],
            )

        await rates_after(1)  # the first sample: what came before is not counted
        for i in range(30):
            ack = await alice.request(
                "send", conversation_id=group.conversation_id, client_msg_id=f"k{i}", text="hi"
            )
            assert ack["type"] == "ack"
        for _ in range(30):
            await bob.expect("message", skip=("presence",))
        # 30 sends in, 30 acks out, each message delivered to both members, over 10 s.
        assert await rates_after(10) == (3.0, 3.0, 6.0)
        # Smoothed over ~10 s: 5 quiet seconds halve the rates, 10 more clear them.
        assert await rates_after(5) == (1.5, 1.5, 3.0)
        assert await rates_after(10) == (0.0, 0.0, 0.0)
