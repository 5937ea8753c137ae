"""``hoomi-admin`` driven as an operator runs it, against a live server and its admin API.

The CLI is synchronous and blocking, so every invocation runs in a worker thread while the
server and the WebSocket test clients run on Trio in this one. CliRunner swaps the process's
stdout while it runs, so invocations never overlap.
"""

from __future__ import annotations

import pathlib
import re
import socket
from typing import Any

import orjson
import pytest
import trio
from rich.console import Console
from typer.testing import CliRunner, Result

from harness import Running, eventually, running_server
from hoomi.cli import admin, render

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inject consoles that do not depend on the terminal pytest runs in (they still write
    to whatever sys.stdout/sys.stderr are, which CliRunner captures)."""
    monkeypatch.setattr(admin, "console", Console(width=200))
    monkeypatch.setattr(admin, "err_console", Console(width=200, stderr=True))


def invoke(args: list[str]) -> Result:
    return runner.invoke(admin.app, args)


async def run(hoomi: Running, *args: str, token: str | None = None) -> Result:
    """`hoomi-admin --url <admin api> --token <token> ARGS...` in a worker thread."""
    assert hoomi.admin_url is not None
    assert hoomi.admin_token is not None
    argv = ["--url", hoomi.admin_url, "--token", token or hoomi.admin_token, *args]
    return await trio.to_thread.run_sync(invoke, argv)


async def run_json(hoomi: Running, *args: str) -> Any:
    result = await run(hoomi, *args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def assert_one_clean_sentence(result: Result, code: int, starts: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(starts), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


async def wait_for_sessions(hoomi: Running, expected: set[str]) -> list[dict[str, Any]]:
    """Poll `sessions list --json` until the live session ids are `expected`."""
    listed: list[dict[str, Any]] = []

    async def listed_as_expected() -> bool:
        nonlocal listed
        listed = (await run_json(hoomi, "sessions", "list"))["sessions"]
        return {s["session_id"] for s in listed} == expected

    await eventually(listed_as_expected, every=0.05)
    return listed


async def test_sessions_list_shows_the_connected_clients_and_their_users(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        alice = await hoomi.connect("alice", client={"name": "hoomi-py", "version": "1.2"})
        bob = await hoomi.connect("bob")
        a_id, b_id = alice.welcome["session_id"], bob.welcome["session_id"]

        table = await run(hoomi, "sessions", "list")
        assert table.exit_code == 0, table.output
        assert "2 live sessions" in table.stdout
        for needle in (a_id, b_id, "alice", "bob", "ready", "hoomi-py 1.2", " 0s "):
            assert needle in table.stdout

        listed = (await run_json(hoomi, "sessions", "list"))["sessions"]
        assert {(s["session_id"], s["user_id"]) for s in listed} == {
            (a_id, "alice"),
            (b_id, "bob"),
        }
        only = (await run_json(hoomi, "sessions", "list", "--user", "bob"))["sessions"]
        assert [s["session_id"] for s in only] == [b_id]

        shown = await run(hoomi, "sessions", "show", a_id)
        assert shown.exit_code == 0, shown.output
        assert f"Session {a_id}" in shown.stdout
        assert "alice" in shown.stdout
        detail = await run_json(hoomi, "sessions", "show", a_id)
        assert detail["user_id"] == "alice"
        assert detail["last_seq"] == {}

        missing = await run(hoomi, "sessions", "show", "s_nope")
        assert_one_clean_sentence(missing, 1, "Session s_nope not found.")


async def test_kick_closes_that_session_with_4004_and_leaves_the_others(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        a_id, b_id = alice.welcome["session_id"], bob.welcome["session_id"]

        kicked = await run(hoomi, "sessions", "kick", a_id, "--reason", "maintenance")
        assert kicked.exit_code == 0, kicked.output
        assert f"Kicked 1 session (close 4004): {a_id}" in kicked.stdout
        assert await alice.closed() == 4004
        await wait_for_sessions(hoomi, {b_id})
        assert (await bob.request("ping"))["type"] == "pong"

        again = await run(hoomi, "sessions", "kick", a_id)
        assert_one_clean_sentence(again, 1, f"Session {a_id} not found.")


async def test_kick_user_closes_all_of_their_sessions(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        phone = await hoomi.connect("alice")
        laptop = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")

        kicked = await run_json(hoomi, "sessions", "kick", "--user", "alice")
        assert sorted(kicked["kicked"]) == sorted(
            [phone.welcome["session_id"], laptop.welcome["session_id"]]
        )
        assert await phone.closed() == 4004
        assert await laptop.closed() == 4004
        await wait_for_sessions(hoomi, {bob.welcome["session_id"]})

        nobody = await run(hoomi, "sessions", "kick", "--user", "alice")
        assert nobody.exit_code == 0, nobody.output
        assert "User alice has no live sessions; nothing was kicked." in nobody.stdout


async def watch_while_connecting(hoomi: Running, *args: str) -> Result:
    """Run `sessions watch --count 1 ARGS` and connect carol until it has seen her (the
    watch subscribes a moment after its stream opens, so one connect may come too early)."""
    results: list[Result] = []
    done = trio.Event()

    async def watch() -> None:
        results.append(await run(hoomi, "sessions", "watch", "--count", "1", *args))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        with trio.fail_after(15):
            while not done.is_set():
                await hoomi.connect("carol")
                with trio.move_on_after(0.5):
                    await done.wait()
    return results[0]


async def test_watch_shows_a_new_connection_as_it_happens(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        shown = await watch_while_connecting(hoomi, "--timeout", "10")
        assert shown.exit_code == 0, shown.output
        assert "Watching sessions at" in shown.stdout
        carols = {c.welcome["session_id"] for c in hoomi.clients}
        [line] = [line for line in shown.stdout.splitlines() if " connect " in line]
        # A connect is announced on accept, before the hello names the user.
        assert line.split()[2] in carols
        assert "127.0.0.1:" in line
        assert "Stopped watching after 1 event." in shown.stdout

        as_json = await watch_while_connecting(hoomi, "--json", "--timeout", "10")
        assert as_json.exit_code == 0, as_json.output
        [event] = [orjson.loads(line) for line in as_json.stdout.splitlines()]
        assert event["event"] == "connect"
        assert event["session"]["session_id"] in {c.welcome["session_id"] for c in hoomi.clients}


async def test_watch_timeout_ends_a_quiet_watch(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        quiet = await run(hoomi, "sessions", "watch", "--timeout", "0.3")
        assert quiet.exit_code == 0, quiet.output
        assert "Stopped watching after 0 events." in quiet.stdout


async def test_conversations_made_with_hoomi_admin_are_usable_at_once(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")

        created = await run_json(hoomi, "conversations", "create", "alice", "--title", "Core")
        cid = created["conversation_id"]
        assert (created["kind"], created["members"], created["title"]) == (
            "group",
            ["alice"],
            "Core",
        )
        joined = await alice.expect("conversation_joined", skip=("presence",))
        assert joined["conversation"]["conversation_id"] == cid

        added = await run(hoomi, "conversations", "add-member", cid, "bob")
        assert added.exit_code == 0, added.output
        assert f"Added bob to {cid}; members: alice, bob." in added.stdout
        joined = await bob.expect("conversation_joined", skip=("presence",))
        assert joined["conversation"]["members"] == ["alice", "bob"]

        ack = await bob.request("send", conversation_id=cid, client_msg_id="k1", text="hi")
        assert (ack["type"], ack["seq"]) == ("ack", 1)
        got = await alice.expect("message", skip=("presence",))
        assert (got["message"]["sender_id"], got["message"]["seq"]) == ("bob", 1)

        shown = await run(hoomi, "conversations", "show", cid)
        assert shown.exit_code == 0, shown.output
        assert "alice, bob" in shown.stdout
        assert "Core" in shown.stdout
        listed = await run(hoomi, "conversations", "list")
        assert listed.exit_code == 0, listed.output
        assert "1 conversation" in listed.stdout
        assert cid in listed.stdout

        removed = await run_json(hoomi, "conversations", "remove-member", cid, "bob")
        assert removed["members"] == ["alice"]
        left = await bob.expect("conversation_left", skip=("message",))
        assert left["conversation_id"] == cid

        direct = await run(hoomi, "conversations", "create", "--kind", "direct", "a", "b", "c")
        assert_one_clean_sentence(direct, 1, "A direct conversation needs two distinct members.")
        missing = await run(hoomi, "conversations", "add-member", "nope", "bob")
        assert_one_clean_sentence(missing, 1, "Conversation nope not found.")


async def test_posted_messages_reach_members_with_a_seq(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")
        cid = (await run_json(hoomi, "conversations", "create", "alice", "bob"))["conversation_id"]
        for client in (alice, bob):
            await client.expect("conversation_joined", skip=("presence",))

        posted = await run_json(hoomi, "conversations", "post", cid, "Maintenance at noon")
        assert (posted["seq"], posted["kind"], posted["sender_id"]) == (1, "system", "system")
        for client in (alice, bob):
            got = (await client.expect("message", skip=("presence",)))["message"]
            assert (got["seq"], got["text"]) == (1, "Maintenance at noon")

        table = await run(hoomi, "conversations", "post", cid, "Back", "--sender", "alice")
        assert table.exit_code == 0, table.output
        assert f"to {cid} as seq 2." in table.stdout
        got = (await bob.expect("message"))["message"]
        assert (got["seq"], got["sender_id"]) == (2, "alice")


async def test_drain_closes_clients_with_1001_and_reports_not_ready(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        alice = await hoomi.connect("alice")
        bob = await hoomi.connect("bob")

        healthy = await run_json(hoomi, "health")
        assert healthy == {"status": "ok", "ready": True}

        drained = await run(hoomi, "drain", "--wait", "--timeout", "10")
        assert drained.exit_code == 0, drained.output
        assert "Drained: no sessions left (empty); /readyz reports not ready." in drained.stdout
        assert await alice.closed() == 1001
        assert await bob.closed() == 1001

        health = await run(hoomi, "health", "--json")
        assert health.exit_code == 1
        assert orjson.loads(health.stdout)["ready"] is False
        table = await run(hoomi, "health")
        assert table.exit_code == 1
        assert "the server is draining" in table.stdout
        state = await run_json(hoomi, "drain")
        assert (state["draining"], state["sessions"]) == (True, 0)
        assert (await run_json(hoomi, "stats"))["draining"] is True


async def test_stats_shows_the_servers_numbers(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        await hoomi.connect("alice")
        await hoomi.connect("alice")
        numbers = await run_json(hoomi, "stats")
        assert (numbers["connections"], numbers["users_online"]) == (2, 1)
        assert numbers["sessions_per_user"]["max"] == 2

        table = await run(hoomi, "stats")
        assert table.exit_code == 0, table.output
        for needle in ("Server stats", "users online", "max 2, mean 2.0", "uptime", "/s"):
            assert needle in table.stdout


async def test_minted_tokens_are_accepted_by_the_server(tmp_path: pathlib.Path) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        minted = await run(hoomi, "token", "mint", "dave", "--ttl", "600")
        assert minted.exit_code == 0, minted.output
        token = minted.stdout.strip()
        assert "\n" not in token
        # The server counts the lifetime from its whole second, so this may be 9m 59s.
        assert re.fullmatch(r"Token for dave, expires in (10m|9m 5\ds)\.\n", minted.stderr)
        client = await hoomi.connect()
        welcome = await client.hello(token)
        assert (welcome["type"], welcome["user_id"]) == ("welcome", "dave")

        as_json = await run_json(hoomi, "token", "mint", "erin")
        assert set(as_json) == {"token", "expires_at"}


async def test_token_minting_refused_by_the_server_says_how_to_enable_it(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True, mint_tokens=False) as hoomi:
        refused = await run(hoomi, "token", "mint", "dave")
        assert_one_clean_sentence(refused, 1, "Token minting is off")


async def test_a_wrong_or_missing_token_is_one_sentence_and_exit_2(
    tmp_path: pathlib.Path,
) -> None:
    async with running_server(tmp_path, admin=True) as hoomi:
        wrong = await run(hoomi, "sessions", "list", token="not-the-admin-token")
        assert_one_clean_sentence(
            wrong, 2, "The admin token was refused: pass --token or set HOOMI_ADMIN_TOKEN."
        )
        assert hoomi.admin_url is not None
        missing = await trio.to_thread.run_sync(
            invoke, ["--url", hoomi.admin_url, "stats", "--json"]
        )
        assert_one_clean_sentence(missing, 2, "The admin API needs a token")


def test_an_unreachable_server_is_one_sentence_and_exit_2() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    for args in (["sessions", "list"], ["sessions", "watch", "--count", "1"], ["drain"]):
        result = invoke(["--url", url, "--token", "x" * 20, *args])
        assert_one_clean_sentence(result, 2, f"Cannot reach the Hoomi admin API at {url}: ")
        assert "Is `hoomi serve` running, and is --url right?" in result.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["sessions", "kick"], "give a session id"),
        (["sessions", "kick", "s_1", "--user", "alice"], "not both"),
        (["--url", "localhost:8766", "stats"], "is not an http:// or https:// URL"),
        (["sessions", "watch", "--count", "0"], "--count"),
        (["conversations", "create", "--kind", "channel", "alice"], "--kind"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], complaint: str) -> None:
    result = invoke(args)
    assert result.exit_code == 2, result.output
    # Typer draws the complaint in a box as wide as the terminal: read it as one line.
    said = " ".join(result.stderr.translate(str.maketrans("", "", "│╭╮╰╯─")).split())
    assert complaint in said, said
    assert said.startswith("Usage: ")
    assert "Traceback" not in result.output


def test_relative_times_read_like_people_write_them() -> None:
    now = 1_000_000_000.0
    assert render.ago(now - 400, now) == "just now"
    assert render.ago(now - 3_000, now) == "3s ago"
    assert render.ago(now - 185_000, now) == "3m 5s ago"
    assert render.ago(now - 7_800_000, now) == "2h 10m ago"
    assert render.ago(now - 2 * 86_400_000, now) == "2d ago"
    assert render.ago(None, now) == "-"


def test_server_sent_events_are_parsed_with_comments_as_ticks() -> None:
    lines = ["event: connect", 'data: {"a":1}', "", ": keepalive", "", "data: x", "data: y", ""]
    assert list(render.sse_events(lines)) == [
        ("connect", '{"a":1}'),
        None,
        ("message", "x\ny"),
    ]
