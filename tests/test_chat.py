"""`hoomi chat` between two users against `hoomi serve --dev`, by the README's words alone:
three processes, no token or URL copied by hand."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import httpx
import pytest
import trio

import errorlog


class Process:
    """A CLI process whose output is collected as it comes (and checked for errors when the
    test ends, like the harness's `serve_process` log)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = ""
        self._changed = trio.Event()

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, args: list[str], env: dict[str, str], stdin: bool = True
    ) -> Process:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "hoomi.cli.main", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        started = cls(process)
        errorlog.watch(f"the output of hoomi {' '.join(args)}", lambda: started.output)
        nursery.start_soon(started._collect)
        return started

    async def _collect(self) -> None:
        assert self.process.stdout is not None
        while data := await self.process.stdout.receive_some(65536):
            self.output += data.decode("utf-8", "replace")
            self._changed.set()

    async def shows(self, text: str, within: float = 15) -> None:
        with trio.move_on_after(within):
            while text not in self.output:
                self._changed = trio.Event()
                await self._changed.wait()
            return
        raise AssertionError(f"{text!r} never appeared in:\n{self.output}")

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")


@pytest.mark.timeout(90)
async def test_two_terminals_chat_against_the_dev_server(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "COLUMNS": "200"}
    async with trio.open_nursery() as nursery:
        dev = tmp_path / "hoomi" / "dev.json"
        dev.parent.mkdir()
        dev.write_text("{}")  # a stale one, readable by anyone
        dev.chmod(0o644)
        server = await Process.start(
            nursery, ["serve", "--dev", "--port", "0", "--admin-port", "0"], env, stdin=False
        )
        await server.shows("hoomi chat alice --with bob")
        assert dev.stat().st_mode & 0o077 == 0  # the admin token is the owner's alone
        bob = await Process.start(nursery, ["chat", "bob", "--with", "alice"], env)
        await bob.shows("connected")
        alice = await Process.start(nursery, ["chat", "alice", "--with", "bob"], env)
        await alice.shows("connected")
        await bob.shows("alice is online")
        await alice.type("hi bob")
        await bob.shows("alice is typing")
        await bob.shows("alice: hi bob")
        await alice.shows("bob read up to #1")  # bob's chat marks what it showed as read
        await bob.type("hello alice")
        await alice.shows("bob: hello alice")
        await alice.type("/quit")
        with trio.fail_after(10):
            assert await alice.process.wait() == 0
        await bob.shows("alice is offline")
        # An operator kick (terminal, 4004) ends bob's chat by itself, input or not.
        info = json.loads(dev.read_text())
        async with httpx.AsyncClient(base_url=info["admin_url"]) as api:
            kicked = await api.post(
                "/v1/users/bob/kick", headers={"Authorization": f"Bearer {info['admin_token']}"}
            )
        assert kicked.status_code < 300, kicked.text
        await bob.shows("4004")
        with trio.fail_after(10):
            assert await bob.process.wait() == 0
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await server.process.wait() == 0
        assert not dev.exists()  # removed when the dev server stops


async def test_chat_without_a_server_says_what_to_do(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "COLUMNS": "200"}
    done = await trio.run_process(
        [sys.executable, "-m", "hoomi.cli.main", "chat", "alice"],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=b"",
    )
    assert done.returncode == 2
    text = done.stdout.decode()
    assert "start `hoomi serve --dev`" in text
    assert "Traceback" not in text + done.stderr.decode()
