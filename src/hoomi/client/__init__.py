"""The Python client SDK of Hoomi protocol v1 (trio, trio-websocket).

    async with hoomi.client.connect(url, token=jwt) as client:
        ack = await client.send(conversation_id, "hi")
        async for event in client.events():
            ...

It reconnects with backoff on close codes marked *reconnect* (never after *terminal*
ones), resumes from the last seq per conversation, re-sends unacked sends with their
`client_msg_id`, hands the app each message once and in seq order (paging history over
gaps), refreshes the token in band and pings when the line is quiet. Its state machine
is ``spec/v1/client-state-machine.json``.
"""

from hoomi.protocol.client_state import Backoff, ClientState

from .client import Client, ClientSettings, TokenProvider, connect
from .events import ClientClosed, ClientError, Event, RequestFailed, StateChanged
from .streams import Streams

__all__ = [
    "Backoff",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientSettings",
    "ClientState",
    "Event",
    "RequestFailed",
    "StateChanged",
    "Streams",
    "TokenProvider",
    "connect",
]
