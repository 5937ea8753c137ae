"""The runner's invariant monitor: seqs on one connection go up by one.

Every `message` event that a step consumes is checked, whatever the step expects: per
(connection, conversation), each seq is exactly one above the one before it on that
connection (spec/v1/transcripts/README.md, "Invariants"):

- a seq that is not above the previous one (a repeat, or out of order) breaks
  HOOMI-DELIVER-2 (a session receives a conversation's messages in ascending seq order);
- a seq more than one above breaks HOOMI-SEND-2 (seqs are gap-free). From one connection a
  seq skipped in storage and a stored message left undelivered look alike: the monitor
  names SEND-2 for both (a server that loses a delivery fails under that id).

"The one before" is the previous message of that conversation on the connection, else the
`latest_seq` that the `welcome` or `conversation_joined` announced (live messages follow it,
HOOMI-HELLO-3, HOOMI-CONV-3), except for a conversation the connection's `hello` resumes:
there the first message may have any seq (the replay's start is for the transcript's steps
to judge, HOOMI-RESUME-2). A `history_page`, `resume_gap` or `conversation_left` about a
conversation resets what is expected of it: the client has paged or been told of a jump.
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
    """The last seq seen (or announced) per conversation on one connection."""

    def __init__(self, connection: str) -> None:
        self.connection = connection
        self._last: dict[str, int] = {}
        self._resumed: set[str] = set()

    def sent(self, frame: Any) -> None:
        """Note a frame the connection sent: a `hello`'s resume positions."""
        if isinstance(frame, dict) and frame.get("type") == "hello":
            resume = frame.get("resume")
            positions = resume if isinstance(resume, list) else []
            self._resumed = {
                str(p.get("conversation_id")) for p in positions if isinstance(p, dict)
            }

    def _announce(self, conversation: Any) -> None:
        if not isinstance(conversation, dict):
            return
        cid, latest = conversation.get("conversation_id"), conversation.get("latest_seq")
        if not isinstance(cid, str) or cid in self._resumed:
            return
        if isinstance(latest, int) and not isinstance(latest, bool):
            self._last[cid] = latest

    def check(self, frame: Any) -> None:
        """Note one consumed frame; raise `InvariantBroken` if it breaks the invariant."""
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind in _RESETS:
            self._last.pop(str(frame.get("conversation_id")), None)
            return
        if kind == "welcome" and isinstance(frame.get("conversations"), list):
            for conversation in frame["conversations"]:
                self._announce(conversation)
            return
        if kind == "conversation_joined":
            conversation = frame.get("conversation")
            if isinstance(conversation, dict):
                self._resumed.discard(str(conversation.get("conversation_id")))
            self._announce(conversation)
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
