"""The SDK's adapter with one fault injected, for the client kit's tests:
``python tests/broken_adapter.py VARIANT``. Each variant breaks one rule of the spec the
way a client author might; the kit must fail it on exactly that rule's requirement ids."""

from __future__ import annotations

import sys
from collections.abc import Callable

from hoomi.client import adapter, client, streams
from hoomi.protocol import errors
from hoomi.protocol.messages import ChatMessage


def no_dedupe() -> None:
    """Messages at or below the stream's position are handed over again (HOOMI-CLIENT-2)."""
    take = streams.Streams._take

    def repeating(
        self: streams.Streams, stream: streams._Stream, message: ChatMessage, step: streams.Step
    ) -> None:
        if message.seq <= stream.position:
            step.deliver.append(message)
            return
        take(self, stream, message, step)

    streams.Streams._take = repeating  # type: ignore[method-assign]


def reconnect_after_terminal() -> None:
    """Every close code is taken for a reconnect one (HOOMI-LIVE-3)."""
    errors.CloseCode.reconnect = property(lambda self: True)  # type: ignore[assignment,method-assign]


def no_resend() -> None:
    """Unacked sends are forgotten at a reconnect (HOOMI-CLIENT-3)."""

    async def nothing(self: client.Client) -> None:
        return None

    client.Client._resend_pending = nothing  # type: ignore[method-assign]
    client._ACTIONS["resend_pending"] = nothing


def no_gap_fill() -> None:
    """Gaps are never paged with history (HOOMI-CLIENT-2)."""

    def nothing(self: streams.Streams, cid: str, stream: object, step: object) -> None:
        return None

    streams.Streams._fill = nothing  # type: ignore[method-assign]


VARIANTS: dict[str, Callable[[], None]] = {
    "no-dedupe": no_dedupe,
    "reconnect-after-terminal": reconnect_after_terminal,
    "no-resend": no_resend,
    "no-gap-fill": no_gap_fill,
}

if __name__ == "__main__":
    VARIANTS[sys.argv[1]]()
    adapter.run()
