"""The SDK's adapter for the client conformance kit: ``python -m hoomi.client.adapter``.

`hoomi-conformance client -- python -m hoomi.client.adapter` starts this once per
scenario and drives it over the line-JSON control protocol of
``spec/v1/client-kit/`` (docs/conformance.md): commands on stdin, every event the app
sees on stdout, one JSON object a line, each line flushed. It is also the example an
author of another client's adapter can follow::

    stdin  ─ commands ─→ _commands ─┬─ connect → _run: hoomi.client.connect(…), then
                                    │            each event of Client.events() → stdout
                                    ├─ send / read → a task each (waits for the first
                                    │                welcome), its outcome → stdout
                                    ├─ token → the provider's token, `token_set`
                                    └─ close → the client closes, `closed`, exit 0

Bounded: a command line (`MAX_LINE`; a longer one is skipped and reported as an
`error`), events waiting for stdout (`_OUTBOX`), the client's own bounds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import orjson
import trio

from hoomi.protocol import messages as m

from .client import Client, connect
from .events import ClientClosed, ClientError, Event, RequestFailed, StateChanged

MAX_LINE = 1024 * 1024  # bytes of one command line
_OUTBOX = 1000  # event lines waiting for stdout


def _event(event: Event) -> dict[str, Any]:
    """An SDK event as the control protocol's event object."""
    if isinstance(event, m.ChatMessage):
        return {
            "event": "message",
            "conversation_id": event.conversation_id,
            "seq": event.seq,
            "message_id": event.message_id,
            "sender_id": event.sender_id,
            "text": event.text,
            "client_msg_id": event.client_msg_id,
        }
    if isinstance(event, StateChanged):
        return {"event": "state", "state": event.state.value, "close_code": event.close_code}
    if isinstance(event, ClientError):
        return {"event": "error", "code": event.code, "message": event.message}
    if isinstance(event, m.UserTyping):
        return {
            "event": "typing",
            "conversation_id": event.conversation_id,
            "user_id": event.user_id,
            "active": event.active,
        }
    if isinstance(event, m.Presence):
        return {"event": "presence", "user_id": event.user_id, "status": event.status}
    if isinstance(event, m.Receipt):
        return {
            "event": "receipt",
            "conversation_id": event.conversation_id,
            "user_id": event.user_id,
            "seq": event.seq,
        }
    if isinstance(event, m.ConversationJoined):
        return {"event": "joined", "conversation_id": event.conversation.conversation_id}
    return {"event": "left", "conversation_id": event.conversation_id}


class Adapter:
    """One client under test, driven by commands; `events` takes the lines for stdout."""

    def __init__(self, nursery: trio.Nursery, events: trio.MemorySendChannel[bytes]) -> None:
        self._nursery = nursery
        self._events = events
        self._token = ""
        self.client: Client | None = None
        self._ready = trio.Event()  # the first welcome came: sends may go
        self._done = trio.Event()  # the client ended: `closed` was reported
        self._closing = trio.Event()  # the app asked to close

    async def emit(self, event: Mapping[str, Any]) -> None:
        await self._events.send(orjson.dumps(event) + b"\n")

    async def handle(self, command: Mapping[str, Any]) -> None:
        """Run one command (long ones in tasks of their own, so the next line is read)."""
        cmd = command.get("cmd")
        if cmd == "connect" and self.client is None:
            self._token = str(command["token"])
            positions = {str(k): int(v) for k, v in (command.get("positions") or {}).items()}
            self._nursery.start_soon(self._run, str(command["url"]), positions)
        elif cmd == "token":
            self._token = str(command["token"])
            await self.emit({"event": "token_set"})
        elif cmd == "send":
            self._nursery.start_soon(self._send, command)
        elif cmd == "read":
            self._nursery.start_soon(self._read, command)
        elif cmd == "close":
            self._closing.set()
        else:
            await self.emit({"event": "error", "code": "bad_command", "message": f"{cmd!r}"})

    async def _provider(self) -> str:
        return self._token

    async def _run(self, url: str, positions: dict[str, int]) -> None:
        closed: dict[str, Any] = {"event": "closed", "code": None, "reason": "closed by the app"}
        try:
            async with connect(url, token_provider=self._provider, positions=positions) as client:
                self.client = client
                self._ready.set()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._close_when_asked, client)
                    async for event in client.events():
                        await self.emit(_event(event))
                        if isinstance(event, StateChanged) and event.state.value == "closed":
                            closed.update(code=event.close_code, reason=event.reason)
                    nursery.cancel_scope.cancel()
        except ClientClosed as gone:  # refused for good before the first welcome
            closed.update(code=gone.close_code, reason=gone.reason)
        await self.emit(closed)
        self._done.set()

    async def _close_when_asked(self, client: Client) -> None:
        await self._closing.wait()
        await client.aclose()

    async def _send(self, command: Mapping[str, Any]) -> None:
        ref = str(command["ref"])
        await self._ready.wait()
        assert self.client is not None
        try:
            ack = await self.client.send(str(command["conversation_id"]), str(command["text"]))
        except RequestFailed as failed:
            await self.emit({"event": "send_failed", "ref": ref, "code": failed.code})
        except ClientClosed as gone:
            await self.emit(
                {"event": "send_failed", "ref": ref, "code": "closed", "message": gone.reason}
            )
        else:
            await self.emit(
                {
                    "event": "ack",
                    "ref": ref,
                    "conversation_id": ack.conversation_id,
                    "seq": ack.seq,
                    "message_id": ack.message_id,
                    "client_msg_id": ack.client_msg_id,
                }
            )

    async def _read(self, command: Mapping[str, Any]) -> None:
        await self._ready.wait()
        assert self.client is not None
        try:
            await self.client.read(str(command["conversation_id"]), int(command["seq"]))
        except (RequestFailed, ClientClosed) as failed:
            await self.emit({"event": "error", "code": "read_failed", "message": str(failed)})

    async def finish(self) -> None:
        """Close the client (if it runs) and wait until `closed` is reported."""
        self._closing.set()
        if self.client is None and not self._ready.is_set():
            await self.emit({"event": "closed", "code": None, "reason": "never connected"})
            return
        await self._done.wait()


async def _commands(stdin: trio.abc.ReceiveStream, adapter: Adapter) -> None:
    """Commands from `stdin`, one JSON object a line, until EOF or `close`."""
    buffer = b""
    skipping = False  # inside a line longer than MAX_LINE
    while True:
        data = await stdin.receive_some(65536)
        if not data:
            return
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if skipping:
                skipping = False
                continue
            if not line.strip():
                continue
            try:
                command = orjson.loads(line)
                if not isinstance(command, dict):
                    raise ValueError("not a JSON object")
                await adapter.handle(command)
            except (ValueError, KeyError, TypeError) as bad:  # orjson's error is a ValueError
                message = f"cannot run the command {line[:200]!r}: {bad}"
                await adapter.emit({"event": "error", "code": "bad_command", "message": message})
                continue
            if command.get("cmd") == "close":
                return
        if len(buffer) > MAX_LINE:
            buffer, skipping = b"", True
            message = f"a command line longer than {MAX_LINE} bytes: skipped"
            await adapter.emit({"event": "error", "code": "bad_command", "message": message})


async def _write(stdout: trio.abc.SendStream, lines: trio.MemoryReceiveChannel[bytes]) -> None:
    async with lines:
        async for line in lines:
            await stdout.send_all(line)


async def main(stdin: trio.abc.ReceiveStream, stdout: trio.abc.SendStream) -> None:
    """Run the adapter until `close` (or EOF on stdin); every event is written first."""
    send, receive = trio.open_memory_channel[bytes](_OUTBOX)
    async with trio.open_nursery() as outer:
        outer.start_soon(_write, stdout, receive)
        async with send, trio.open_nursery() as nursery:
            adapter = Adapter(nursery, send)
            await _commands(stdin, adapter)
            await adapter.finish()
            nursery.cancel_scope.cancel()


def run() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    stdout = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    trio.run(main, stdin, stdout)


if __name__ == "__main__":
    run()
