"""Broken server variants: the real server with one fault each, for the conformance tests.

Each function patches the real code (through pytest's `monkeypatch`, undone after the test)
so that every server started afterwards in this process breaks one requirement:

- `skip_a_seq`: the store never assigns seq 2 (1, 3, 4, ...): HOOMI-SEND-2;
- `drop_the_resume_replay`: a resume within replay_max replays nothing, while a gap is
  still told with `resume_gap`: HOOMI-RESUME-2;
- `never_expire_typing`: typing stops on a send or when the last session ends, never when
  the ttl passes: HOOMI-TYPING-3.

`tests/test_conformance_server.py` checks that each variant really is broken that way.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from hoomi.protocol import messages as m
from hoomi.protocol.messages import ChatMessage
from hoomi.server import sqlite_store
from hoomi.server.server import Server
from hoomi.server.session import Session


def skip_a_seq(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seq 2 is never assigned: the message due to get it is stored as seq 3."""

    def message(**fields: Any) -> ChatMessage:
        if fields["seq"] == 2:
            fields["seq"] = 3
        return ChatMessage(**fields)

    monkeypatch.setattr(sqlite_store, "ChatMessage", message)


def drop_the_resume_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resume positions within replay_max are dropped before the replay (their live frames
    flow at once); positions beyond it still get `resume_gap`."""
    replay = Session._replay

    async def without_replay(self: Session, hello: m.Hello) -> None:
        replay_max = self.server.settings.replay_max
        gaps = []
        for position in hello.resume or ():
            latest = self.last_seq.get(position.conversation_id, 0)
            if latest - position.after_seq > replay_max:
                gaps.append(position)
            elif self._held:
                self._held.pop(position.conversation_id, None)
        await replay(self, attrs.evolve(hello, resume=tuple(gaps)))

    monkeypatch.setattr(Session, "_replay", without_replay)


def never_expire_typing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typing state's deadline is never reached; explicit stops still work."""
    set_typing = Server.set_typing

    def forever(self: Server, cid: str, user: str, *, active: bool) -> None:
        set_typing(self, cid, user, active=active)
        if active:
            self.typing[(cid, user)] = math.inf

    monkeypatch.setattr(Server, "set_typing", forever)
