"""The Sans-I/O core of protocol v1: messages, codec, errors and the connection state machine.

It imports no trio and does no I/O; time is passed in by the caller. The spec it embodies
lives in ``spec/v1`` (schemas, registries, state machine) and is read at import.
"""

from .codec import (
    CONVERTER,
    Direction,
    decode,
    decode_client,
    decode_server,
    encode,
    encode_bytes,
    to_dict,
    warm_up,
)
from .errors import CloseCode, ErrorCode, HoomiError, IllegalTransition, ProtocolError
from .messages import CLIENT_MESSAGES, SERVER_MESSAGES, ClientMessage, Message, ServerMessage
from .spec import SPEC_VERSION, SUBPROTOCOL
from .state import ConnectionState, Event, State, Transition

__all__ = [
    "CLIENT_MESSAGES",
    "CONVERTER",
    "SERVER_MESSAGES",
    "SPEC_VERSION",
    "SUBPROTOCOL",
    "ClientMessage",
    "CloseCode",
    "ConnectionState",
    "Direction",
    "ErrorCode",
    "Event",
    "HoomiError",
    "IllegalTransition",
    "Message",
    "ProtocolError",
    "ServerMessage",
    "State",
    "Transition",
    "decode",
    "decode_client",
    "decode_server",
    "encode",
    "encode_bytes",
    "to_dict",
    "warm_up",
]
