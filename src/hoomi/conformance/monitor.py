"""The runner's invariant monitor: seqs on one connection go up by one.

Every `message` event that a step consumes is checked, whatever the step expects: per
(connection, conversation), after the first message seen on that connection, each seq is
exactly one above the previous one (spec/v1/transcripts/README.md, "Invariants"):

- a seq that is not above the previous one (a repeat, or out of order) breaks
  HOOMI-DELIVER-2 (a session receives a conversation's messages in ascending seq order);
- a seq more than one above breaks HOOMI-SEND-2 (seqs are gap-free). From one connection a
  seq skipped in storage and a stored message left undelivered look alike: the monitor
  names SEND-2 for both (a server that loses a delivery fails under that id).

The first message of a conversation on a connection may have any seq (a resume starts
where the client says, a live message where the conversation is). A `history_page`, a
`resume_gap`, `conversation_joined` or `conversation_left` about a conversation resets what
is expected of it on that connection: the client has paged or been told of a jump.
"""

from __future__ import annotations

from typing import Any, Final

from .client import StepFailed

SEND_2: Final = "HOOMI-SEND-2"
DELIVER_2: Final = "HOOMI-DELIVER-2"
_RESETS: Final = frozenset({"history_page", "resume_gap", "conversation_left"})


class InvariantBroken(StepFailed):
    """A consumed frame broke a monitored invariant; `requirements` names what it breaks."""

    def __init__(self, message: str, requirements: tuple[str, ...]) -> None:
        super().__init__(message)
        self.requirements = requirements


class SeqMonitor:
    """The last seq seen per conversation on one connection."""

    def __init__(self, connection: str) -> None:
        self.connection = connection
        self._last: dict[str, int] = {}

    def check(self, frame: Any) -> None:
        """Note one consumed frame; raise `InvariantBroken` if it breaks the invariant."""
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind in _RESETS:
            self._last.pop(str(frame.get("conversation_id")), None)
            return
        if kind == "conversation_joined":
            conversation = frame.get("conversation")
            if isinstance(conversation, dict):
                self._last.pop(str(conversation.get("conversation_id")), None)
            return
        message = frame.get("message") if kind == "message" else None
        if not isinstance(message, dict):
            return
        cid, seq = message.get("conversation_id"), message.get("seq")
        if not isinstance(cid, str) or isinstance(seq, bool) or not isinstance(seq, int):
            return  # not the monitor's business: the step's pattern judges the shape
        last = self._last.get(cid)
        self._last[cid] = seq
        if last is None or seq == last + 1:
            return
        where = f"{self.connection} received seq {seq} of conversation {cid} after seq {last}"
        if seq <= last:
            raise InvariantBroken(
                f"{where}: a conversation's messages arrive in ascending seq order on a "
                "connection, never repeated (HOOMI-DELIVER-2)",
                (DELIVER_2,),
            )
        raise InvariantBroken(
            f"{where}: seqs {last + 1}..{seq - 1} are missing, but seqs are gap-free "
            "(HOOMI-SEND-2)",
            (SEND_2,),
        )
