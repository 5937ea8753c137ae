"""Server conformance: run the spec's transcripts against a live Hoomi server.

The runner speaks only the wire protocol (its own small WebSocket client on wsproto) and
reaches everything else through a `Backend`, so the same transcripts grade this server in
process or any server at a URL. See `hoomi.conformance.transcripts`.
"""

from __future__ import annotations

from .transcripts import (
    Backend,
    Outcome,
    Result,
    TokenSpec,
    Transcript,
    TranscriptError,
    Unsupported,
    drains,
    load_transcripts,
    match,
    run_transcript,
    token_specs,
    unsigned_jwt,
)

__all__ = [
    "Backend",
    "Outcome",
    "Result",
    "TokenSpec",
    "Transcript",
    "TranscriptError",
    "Unsupported",
    "drains",
    "load_transcripts",
    "match",
    "run_transcript",
    "token_specs",
    "unsigned_jwt",
]
