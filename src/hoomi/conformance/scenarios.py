"""The client conformance kit's scenarios: each injects a fault through the scripted server
and grades, per requirement id, what the client does on the wire and what its app sees.

Close codes come from ``close-codes.json`` and error codes from ``errors.json``: one
scenario per close code (reconnect codes must reconnect and resume, terminal ones must
not reconnect), every non-retryable error code reported to the app. Timing bounds follow
the spec (backoff starting at 0.5 s, doubling, full jitter; the heartbeat interval of
`welcome`) plus slack, all scaled by `Kit.s`, except lower bounds (a retry no earlier than
`retry_after_ms`), which waiting longer can only satisfy.
"""

from __future__ import annotations

import json

import trio

from hoomi.protocol import messages as m
from hoomi.protocol import to_dict
from hoomi.protocol.spec import load as load_spec

from .kit import Failed, Kit, Scenario, ScenarioSpec, Wire

C1 = "c1"
SLACK = 3.0  # seconds beyond a spec bound before a missing reaction fails (scaled)
QUIET = 2.0  # seconds without a reconnect that pass a terminal close (scaled)
HELLO_PHASE = frozenset({4000, 4001, 4003, 4007, 4009})  # codes a server sends before welcome
BACKOFF_CAPS = (0.5, 1.0, 2.0)  # HOOMI-LIVE-3: attempt n waits at most 0.5 * 2^(n-1) s


def _close_codes() -> list[dict[str, object]]:
    codes: list[dict[str, object]] = load_spec("close-codes.json")["close_codes"]
    return codes


def _non_retryable() -> list[str]:
    return [e["code"] for e in load_spec("errors.json")["errors"] if not e["retryable"]]


async def _live(kit: Kit, *, heartbeat_ms: int = 30_000) -> Wire:
    """Connect the client to conversation c1 (empty) and see it live on connection 1."""
    kit.store(C1, [])
    await kit.connect()
    wire = await kit.accept("HOOMI-CLIENT-1", "after the connect command")
    await kit.handshake(wire, heartbeat_ms=heartbeat_ms)
    return wire


# -- HOOMI-CLIENT-1 ------------------------------------------------------------------------------


async def hello_first(kit: Kit) -> None:
    kit.store(C1, [])
    await kit.connect()
    wire = await kit.accept("HOOMI-CLIENT-1", "after the connect command")
    hello = await kit.hello(wire)
    kit.where = "connection 1: before welcome"
    await kit.send("early", C1, "sent before welcome")
    await wire.quiet(
        0.5, "HOOMI-CLIENT-1", "expected nothing after hello before welcome", allow=frozenset()
    )
    kit.welcome(wire, hello)
    await kit.live()
    kit.where = "connection 1: after welcome"
    send = await wire.expect("send", 3, "HOOMI-CLIENT-1")
    kit.ack(wire, send, 1)
    await kit.acked("early", 1, "HOOMI-CLIENT-1")
    await kit.app_shows(C1, [1])
    await kit.read(C1, 1)
    read = await wire.expect("read", 3, "HOOMI-CLIENT-1")
    if (read.data["conversation_id"], read.data["seq"]) != (C1, 1):
        raise Failed("HOOMI-CLIENT-1", f"the app read seq 1 of {C1}; the client sent {read.data}")
    await wire.quiet(0.3, "HOOMI-CLIENT-1", "expected no other frame (a second hello?)")


async def websocket_ping(kit: Kit) -> None:
    wire = await _live(kit)
    kit.where = "connection 1: WebSocket ping"
    before = wire.ws.pongs
    wire.ws.ping_nowait()
    with trio.move_on_after(kit.s(2)):
        # The transport counts pongs inside `receive` and signals nothing: poll.
        while wire.ws.pongs == before:  # noqa: ASYNC110
            await trio.sleep(0.01)
    if wire.ws.pongs == before:
        raise Failed("HOOMI-CLIENT-1", f"no pong within {kit.s(2):g} s of a WebSocket ping")


# -- HOOMI-LIVE-2 --------------------------------------------------------------------------------


async def app_ping(kit: Kit) -> None:
    interval = 0.5
    wire = await _live(kit, heartbeat_ms=int(interval * 1000))
    kit.where = "connection 1: quiet"
    ping = await wire.expect("ping", interval + SLACK, "HOOMI-LIVE-2")
    last = max(t for t in wire.sent_at if t < ping.at)
    if ping.at - last < 0.9 * interval:
        raise Failed(
            "HOOMI-LIVE-2",
            f"pinged {ping.at - last:.2f} s after the server's last frame; the heartbeat "
            f"interval is {interval} s",
        )
    # That ping was answered: the connection lives on, and pings again when quiet.
    wire.answer_pings = False
    kit.where = "connection 1: quiet after a pong"
    unanswered = await wire.expect("ping", interval + SLACK, "HOOMI-LIVE-2")
    kit.where = "connection 1: dead"
    again = await kit.accept(
        "HOOMI-LIVE-2", "after a ping that got no answer", within=2 * interval + SLACK
    )
    if wire.ended_at - unanswered.at < 0.9 * interval:
        raise Failed(
            "HOOMI-LIVE-2",
            f"gave up {wire.ended_at - unanswered.at:.2f} s after an unanswered ping; the "
            f"heartbeat interval is {interval} s",
        )
    await kit.handshake(again, {C1: 0})  # c1 was known (empty): resumed at 0, or left out


# -- HOOMI-LIVE-3, HOOMI-RESUME-1 ----------------------------------------------------------------


def reconnect_after(code: int | None, name: str) -> Scenario:
    """A connection ends (close `code`, or lost without a close frame when None): the
    client reconnects within the first backoff and resumes from the last seq shown."""
    why = "after a lost connection" if code is None else f"after close {code} ({name})"

    async def run(kit: Kit) -> None:
        kit.store(C1, [])
        await kit.connect()
        wire = await kit.accept("HOOMI-CLIENT-1", "after the connect command")
        first_bound = BACKOFF_CAPS[0] + SLACK
        if code in HELLO_PHASE:  # closed before welcome: nothing was shown yet
            await kit.hello(wire)
            wire.close(code or 1000, name)
            again = await kit.accept("HOOMI-LIVE-3", why, within=first_bound)
            await kit.handshake(again)
            kit.deliver(again, C1, [1])
            await kit.app_shows(C1, [1])
            return
        await kit.handshake(wire)
        kit.deliver(wire, C1, [1, 2])
        await kit.app_shows(C1, [1, 2])
        kit.where = f"connection 1: {why}"
        if code == 1001:
            # A draining node also refuses new connections (HOOMI-CLOSE-2): the first
            # attempt is reset, so a second one must follow.
            kit.server.refuse = 1
            first_bound += BACKOFF_CAPS[1]
        if code is None:
            await wire.drop()
        else:
            wire.close(code, name)
        again = await kit.accept("HOOMI-LIVE-3", why, within=first_bound)
        kit.store(C1, [3])
        await kit.handshake(again, resume={C1: 2})
        kit.deliver(again, C1, [3])  # the replay (HOOMI-RESUME-2)
        await kit.app_shows(C1, [1, 2, 3])

    return run


async def backoff(kit: Kit) -> None:
    kit.store(C1, [])
    await kit.connect()
    wire = await kit.accept("HOOMI-CLIENT-1", "after the connect command")
    delays: list[float] = []
    for attempt, cap in enumerate(BACKOFF_CAPS, 1):
        await kit.hello(wire)
        wire.close(1011, "internal_error")
        closed_at = trio.current_time()
        kit.where = f"connection {wire.number}: closed 1011 before welcome"
        wire = await kit.accept(
            "HOOMI-LIVE-3", f"attempt {attempt} after close 1011", within=cap + SLACK
        )
        delays.append(wire.opened_at - closed_at)
        if delays[-1] > cap + kit.s(1):
            raise Failed(
                "HOOMI-LIVE-3",
                f"attempt {attempt} came {delays[-1]:.2f} s after the close; backoff caps it "
                f"at {cap} s",
            )
    await kit.handshake(wire)
    if sum(delays) < 0.05:
        shown = ", ".join(f"{d * 1000:.0f} ms" for d in delays)
        raise Failed(
            "HOOMI-LIVE-3",
            f"three attempts without backoff (after {shown}): full jitter over "
            "0.5, 1 and 2 s makes that all but impossible",
        )


def terminal(code: int, name: str) -> Scenario:
    """A close with a code marked terminal: the client must not reconnect on its own."""

    async def run(kit: Kit) -> None:
        kit.store(C1, [])
        await kit.connect()
        wire = await kit.accept("HOOMI-CLIENT-1", "after the connect command")
        if code in HELLO_PHASE:
            hello = await kit.hello(wire)
            if code == 4001:
                wire.send(
                    m.Error(code="unauthorized", message="bad token", id=str(hello.data["id"]))
                )
        else:
            await kit.handshake(wire)
        kit.where = f"connection 1: closed {code} ({name})"
        wire.close(code, name)
        await kit.server.no_connection(
            kit.s(QUIET), "HOOMI-LIVE-3", f"after close {code} ({name}), which is terminal"
        )

    return run


# -- HOOMI-CLIENT-2 ------------------------------------------------------------------------------


async def duplicates(kit: Kit) -> None:
    wire = await _live(kit)
    kit.where = "connection 1: live repeats"
    kit.deliver(wire, C1, [1, 2, 3, 2, 3, 1, 4])
    await kit.app_shows(C1, [1, 2, 3, 4])
    await wire.drop()
    again = await kit.accept("HOOMI-LIVE-3", "after a lost connection", within=0.5 + SLACK)
    kit.store(C1, [5, 6])
    await kit.handshake(again, resume={C1: 4})
    kit.where = "connection 2: a replay repeating 3 and 4"
    kit.deliver(again, C1, [3, 4, 5, 6])
    await kit.app_shows(C1, [1, 2, 3, 4, 5, 6])


async def resume_gap(kit: Kit) -> None:
    kit.store(C1, range(1, 13))
    await kit.connect(positions={C1: 2})
    wire = await kit.accept("HOOMI-CLIENT-1", "after the connect command")
    await kit.handshake(wire, resume={C1: 2})
    kit.where = "connection 1: resume_gap after 2 up to 12"
    wire.send(m.ResumeGap(conversation_id=C1, after_seq=2, latest_seq=12))
    kit.deliver(wire, C1, [13])  # live, after the gap
    await kit.app_shows(C1, list(range(3, 14)))
    pages = [f.data for f in wire.frames if f.type == "history"]
    if pages[0].get("after_seq") != 2 or any(p.get("before_seq") is not None for p in pages):
        raise Failed(
            "HOOMI-CLIENT-2",
            f"the gap after seq 2 was paged with {json.dumps(pages)}, not with after_seq from 2",
        )
    kit.where = "connection 1: a seq jump from 13 to 16"
    kit.store(C1, [14, 15])
    kit.deliver(wire, C1, [16])
    await kit.app_shows(C1, list(range(3, 17)))


# -- HOOMI-CLIENT-3, HOOMI-CLIENT-4 --------------------------------------------------------------


async def resend_after_restart(kit: Kit) -> None:
    wire = await _live(kit)
    await kit.send("a", C1, "first")
    await kit.send("b", C1, "second")
    kit.where = "connection 1: two sends"
    sent = [await wire.expect("send", 3, "HOOMI-CLIENT-3") for _ in range(2)]
    ids = {str(f.data["text"]): str(f.data["client_msg_id"]) for f in sent}
    if set(ids) != {"first", "second"}:
        raise Failed("HOOMI-CLIENT-3", f"the client sent {[f.data for f in sent]}")
    # The server goes away before either ack; it had stored the first send.
    await wire.drop()
    kit.store(C1, [1], client_msg_id=ids["first"], text="first")
    again = await kit.accept("HOOMI-LIVE-3", "after the server went away", within=0.5 + SLACK)
    await kit.handshake(again, resume={C1: 0})
    kit.where = "connection 2: after welcome"
    kit.deliver(again, C1, [1])  # the replay of the stored first send
    resent = {}
    for _ in range(2):
        frame = await again.expect("send", 3, "HOOMI-CLIENT-3")
        resent[str(frame.data["client_msg_id"])] = frame
    if set(resent) != set(ids.values()) or any(
        resent[cmid].data["text"] != text for text, cmid in ids.items()
    ):
        raise Failed(
            "HOOMI-CLIENT-3",
            f"after the next welcome the client sent {[f.data for f in resent.values()]}; "
            f"expected both unacked sends again with their client_msg_id {ids}",
        )
    kit.ack(again, resent[ids["first"]], 1, deliver=False)  # the original ack (HOOMI-SEND-3)
    kit.ack(again, resent[ids["second"]], 2)
    await kit.acked("a", 1, "HOOMI-CLIENT-3")
    await kit.acked("b", 2, "HOOMI-CLIENT-3")
    await kit.app_shows(C1, [1, 2], "HOOMI-CLIENT-3")


async def token_refresh(kit: Kit) -> None:
    wire = await _live(kit)
    token = await kit.new_token()
    kit.where = "connection 1: token_expiring"
    wire.send(m.TokenExpiring(expires_at=1_700_000_060_000))
    refresh = await wire.expect("refresh", SLACK, "HOOMI-CLIENT-4")
    if refresh.data["token"] != token:
        raise Failed(
            "HOOMI-CLIENT-4",
            f"refresh carried {refresh.data['token']!r}, not the newest token {token!r}",
        )
    wire.send(m.Ok(id=str(refresh.data["id"])))
    await wire.quiet(0.5, "HOOMI-CLIENT-4", "expected nothing more after the refresh was answered")
    if wire.ended.is_set():
        raise Failed("HOOMI-CLIENT-4", "the client ended the connection after refreshing")


# -- errors: HOOMI-ERR-1, HOOMI-LIMIT-2, HOOMI-ERR-3 ---------------------------------------------


async def send_errors(kit: Kit) -> None:
    wire = await _live(kit)
    for index, code in enumerate(_non_retryable()):
        kit.where = f"connection 1: a send refused with {code}"
        ref = f"e{index}"
        await kit.send(ref, C1, f"refused with {code}")
        send = await wire.expect("send", 3, "HOOMI-ERR-1")
        wire.send(m.Error(code=code, message=f"refused ({code})", id=str(send.data["id"])))
        outcome = await kit.outcome(ref, "HOOMI-ERR-1")
        if outcome["event"] != "send_failed" or outcome["code"] != code:
            raise Failed("HOOMI-ERR-1", f"a send refused with {code} ended as {outcome}")
    kit.where = "connection 1: after the refusals"
    await wire.quiet(0.5, "HOOMI-ERR-1", "expected no retry of a send refused for good")


async def send_retry(kit: Kit) -> None:
    wire = await _live(kit)
    cases = (
        ("r", "rate_limited", "HOOMI-LIMIT-2", 400),
        ("u", "unavailable", "HOOMI-ERR-3", 300),
        ("i", "internal", "HOOMI-ERR-3", 200),  # retryable in errors.json: sends are idempotent
    )
    for seq, (ref, code, requirement, delay_ms) in enumerate(cases, 1):
        kit.where = f"connection 1: a send refused with {code}, retry_after_ms {delay_ms}"
        await kit.send(ref, C1, f"retried after {code}")
        send = await wire.expect("send", 3, requirement)
        error = m.Error(
            code=code, message="later", id=str(send.data["id"]), retry_after_ms=delay_ms
        )
        wire.send(error)
        refused_at = trio.current_time()
        again = await wire.expect("send", delay_ms / 1000 + SLACK, requirement)
        fields = ("conversation_id", "client_msg_id", "text")
        if any(again.data[f] != send.data[f] for f in fields):
            raise Failed(requirement, f"retried as {again.data}, not as {send.data}")
        waited = again.at - refused_at
        if waited < delay_ms / 1000 - 0.005:
            raise Failed(
                requirement,
                f"retried {waited * 1000:.0f} ms after {code}; retry_after_ms was {delay_ms}",
            )
        kit.ack(wire, again, seq)
        await kit.acked(ref, seq, requirement)
    await kit.app_shows(C1, [1, 2, 3], "HOOMI-LIMIT-2")


# -- HOOMI-WIRE-4 ----------------------------------------------------------------------------------


async def bad_frames(kit: Kit) -> None:
    wire = await _live(kit)
    kit.where = "connection 1: unknown type and fields"
    wire.send_text('{"type":"kit_future_event","detail":"from a later spec version"}')
    event = to_dict(m.MessageEvent(message=kit.store(C1, [1])[0]))
    event["kit_extra"] = {"added": "later"}
    event["message"]["kit_extra"] = 1
    wire.send_text(json.dumps(event))
    await kit.app_shows(C1, [1], "HOOMI-WIRE-4")
    kit.where = "connection 1: frames that break the spec"
    for text in (
        "this is not JSON {",
        "[1, 2, 3]",
        '{"no_type": true}',
        '{"type": "message", "message": {"conversation_id": "c1"}}',
    ):
        wire.send_text(text)
    await trio.sleep(kit.s(0.3))
    if wire.ended.is_set():  # allowed to drop the connection, but must come back and go on
        wire = await kit.accept("HOOMI-WIRE-4", "after bad frames", within=0.5 + SLACK)
        kit.store(C1, [2])
        await kit.handshake(wire, resume={C1: 1})
    kit.where = f"connection {wire.number}: the next message"
    kit.deliver(wire, C1, [2])
    await kit.app_shows(C1, [1, 2], "HOOMI-WIRE-4")


# -- the list --------------------------------------------------------------------------------------


def scenarios() -> list[ScenarioSpec]:
    """Every scenario, in the order the kit reports them."""
    specs = [
        ScenarioSpec(
            name="hello-first",
            title="hello is the first frame, sent once; no request before welcome",
            requirements=("HOOMI-CLIENT-1",),
            run=hello_first,
        ),
        ScenarioSpec(
            name="websocket-ping",
            title="a WebSocket ping is answered with a pong",
            requirements=("HOOMI-CLIENT-1",),
            run=websocket_ping,
        ),
        ScenarioSpec(
            name="app-ping",
            title="ping after a quiet heartbeat interval; reconnect when the ping is not answered",
            requirements=("HOOMI-LIVE-2",),
            run=app_ping,
        ),
        ScenarioSpec(
            name="lost-connection",
            title="a connection lost without a close frame: reconnect, resume at the last seq",
            requirements=("HOOMI-LIVE-3", "HOOMI-RESUME-1"),
            run=reconnect_after(None, "lost"),
        ),
    ]
    reconnect = [c for c in _close_codes() if c["action"] == "reconnect"]
    for close in reconnect:
        code, name = int(str(close["code"])), str(close["name"])
        specs.append(
            ScenarioSpec(
                name=f"reconnect-{code}",
                title=f"close {code} ({name}) is marked reconnect: reconnect and resume",
                requirements=("HOOMI-LIVE-3", "HOOMI-RESUME-1"),
                run=reconnect_after(code, name),
            )
        )
    specs.append(
        ScenarioSpec(
            name="backoff",
            title="failed attempts back off: within 0.5, 1, 2 s caps, never a tight loop",
            requirements=("HOOMI-LIVE-3",),
            run=backoff,
        )
    )
    for close in _close_codes():
        if close["action"] == "terminal":
            code, name = int(str(close["code"])), str(close["name"])
            specs.append(
                ScenarioSpec(
                    name=f"terminal-{code}",
                    title=f"close {code} ({name}) is marked terminal: no reconnect",
                    requirements=("HOOMI-LIVE-3",),
                    run=terminal(code, name),
                )
            )
    specs += [
        ScenarioSpec(
            name="duplicates",
            title="repeated messages, live and in a resume replay, reach the app once",
            requirements=("HOOMI-CLIENT-2",),
            run=duplicates,
        ),
        ScenarioSpec(
            name="resume-gap",
            title="resume_gap and a seq jump are paged with history after_seq, in order",
            requirements=("HOOMI-CLIENT-2",),
            run=resume_gap,
        ),
        ScenarioSpec(
            name="resend-after-restart",
            title="sends unacked when the server went away are resent with their "
            "client_msg_id; each message shown once",
            requirements=("HOOMI-CLIENT-3",),
            run=resend_after_restart,
        ),
        ScenarioSpec(
            name="token-refresh",
            title="token_expiring: refresh with the newest token on the same connection",
            requirements=("HOOMI-CLIENT-4",),
            run=token_refresh,
        ),
        ScenarioSpec(
            name="send-errors",
            title="every non-retryable error code of a send reaches the app; no retry",
            requirements=("HOOMI-ERR-1",),
            run=send_errors,
        ),
        ScenarioSpec(
            name="send-retry",
            title="rate_limited, unavailable and internal: retried with the same "
            "client_msg_id, no earlier than retry_after_ms",
            requirements=("HOOMI-LIMIT-2", "HOOMI-ERR-3"),
            run=send_retry,
        ),
        ScenarioSpec(
            name="bad-frames",
            title="unknown types and fields are ignored; bad frames do not stop the client",
            requirements=("HOOMI-WIRE-4",),
            run=bad_frames,
        ),
    ]
    return specs
