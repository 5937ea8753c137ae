// @ts-check
/**
 * Hoomi Realtime's browser client: one plain ES module, no build step, no dependencies.
 *
 *     import { connect } from "/hoomi-client.js";
 *     const client = connect("wss://chat.example/ws", { tokenProvider: fetchToken });
 *     client.on("message", (message) => show(message));
 *     client.on("state", ({ state }) => indicator(state));
 *     await client.ready;                       // the first welcome
 *     const ack = await client.send("c1", "hello");
 *
 * It behaves as the Python SDK (`hoomi.client`, ADR 10) and follows the spec's client state
 * machine, imported from `client-state-machine.js`, which tools/genjs.py generates from
 * spec/v1 (never edited by hand): every change of state goes through `#fire`, which looks
 * the (state, event) pair up in that table and runs the transition's actions by name. An app
 * imports this module only; it imports its siblings, `hoomi-streams.js` (dedupe and gap
 * fill, Sans-I/O) and `hoomi-frames.js` (server frames against the spec's schemas), and
 * re-exports what they offer.
 *
 * - Sends carry a `client_msg_id` and are sent again, with the same key, after a reconnect
 *   and after a retryable error (`rate_limited`, `unavailable`, `internal`): stored once.
 * - Streams (`Streams`, Sans-I/O): per conversation each message once, in seq order; a seq
 *   jump or a `resume_gap` is filled with `history` (after_seq paging) first.
 * - Reconnects with backoff and full jitter, on close codes marked *reconnect* only; resumes
 *   from the last seq the app was shown; at most `RESUME_MAX` conversations in a hello.
 * - Liveness (HOOMI-LIVE-2): browsers cannot see WebSocket pings, so after
 *   `heartbeat_interval_ms` of silence the client sends an app-level `ping`, and gives the
 *   connection up after another interval without any frame.
 * - Timers are deadlines on the clock (`settings.now`, wall-clock by default), never
 *   countdowns: a background tab's throttled timer (or a suspended device) fires late, and
 *   the check it runs compares clocks, so it fires each rule at most once and never early.
 *   When the tab becomes visible again (or the browser goes online) the client does not
 *   trust those throttled timers: it checks liveness at once (a quiet connection is pinged
 *   now), and a client waiting out a backoff tries at once.
 * - Requests are paced under the welcome's rate limit (HOOMI-LIMIT-2).
 * - Tokens: a fixed `token`, or `tokenProvider` (called at every connect and on
 *   `token_expiring`, then sent in band as `refresh`).
 *
 * Events reach listeners synchronously, after the transition that produced them (so a
 * listener may call any method). Bounded: pending requests (`maxPending`), held out-of-order
 * messages (`holdMax`), reconnect attempts (`backoff.max_attempts`).
 */

import {
  CLOSE_CODES,
  MACHINE,
  RETRYABLE_ERRORS,
  SPEC_VERSION,
  SUBPROTOCOL,
} from "./client-state-machine.js";
import { decodeServerFrame } from "./hoomi-frames.js";
import { RESUME_MAX, Streams } from "./hoomi-streams.js";

export { decodeServerFrame, MACHINE, RESUME_MAX, SPEC_VERSION, Streams, SUBPROTOCOL };

/** This module's version, sent in `hello.client`. */
export const CLIENT_VERSION = "0.1.0";
const PRESENCE_PREFIX = "presence-";
const PRESENCE_QUERY_MAX = 100; // user_ids per presence_query (its schema's maxItems)
const PACE_MARGIN = 0.9; // the share of the server's rate limit the client uses
const ABNORMAL = 1006; // a connection that ended without a close frame
/** @type {Record<string, string>} request type -> the reply type that answers it */
const REPLIES = {
  send: "ack",
  history: "history_page",
  read: "ok",
  typing: "ok",
  refresh: "ok",
  presence_query: "presence_result",
  ping: "pong",
};

/**
 * @typedef {{conversation_id: string, seq: number, message_id: string, sender_id: string,
 *   kind: string, text: string, sent_at: number, client_msg_id?: string | null}} ChatMessage
 * @typedef {{conversation_id: string, kind: string, members: string[], latest_seq: number,
 *   read_seq: number, unread: number}} Conversation
 * @typedef {{max_frame_bytes: number, max_text_chars: number, history_page_max: number,
 *   replay_max: number, rate_per_s: number, rate_burst: number, typing_ttl_ms: number}} Limits
 * @typedef {{type: "welcome", id: string, session_id: string, user_id: string,
 *   protocol: string, spec_version: string, heartbeat_interval_ms: number,
 *   token_expires_at?: number, limits: Limits, conversations: Conversation[]}} Welcome
 * @typedef {{type: "ack", id: string, conversation_id: string, client_msg_id: string,
 *   message_id: string, seq: number, sent_at: number}} Ack
 * @typedef {{type: "history_page", id: string, conversation_id: string,
 *   messages: ChatMessage[], has_more: boolean}} HistoryPage
 * @typedef {{user_id: string, status: "online" | "offline", last_seen?: number | null}} PresenceState
 * @typedef {{type: string, id?: string, [field: string]: any}} Frame
 * @typedef {"connecting" | "authenticating" | "live" | "backoff" | "closed"} ClientState
 * @typedef {{state: ClientState, closeCode: number | null, reason: string, attempt: number,
 *   retryInMs: number | null, welcome: Welcome | null}} StateChange
 * @typedef {{code: string, message: string}} ClientErrorEvent
 * @typedef {{
 *   state: StateChange, message: ChatMessage, typing: Frame, presence: PresenceState,
 *   receipt: Frame, joined: Conversation, left: {conversation_id: string},
 *   error: ClientErrorEvent}} ClientEventMap
 * @typedef {{initial_ms: number, max_ms: number, multiplier: number, jitter: string,
 *   max_attempts: number | null}} BackoffSettings
 * @typedef {{
 *   connectTimeoutMs?: number, backoff?: BackoffSettings, maxPending?: number,
 *   holdMax?: number, closeTimeoutMs?: number, clientName?: string,
 *   now?: () => number, random?: () => number,
 *   document?: {visibilityState: string, addEventListener: Function,
 *     removeEventListener: Function} | null,
 *   window?: {addEventListener: Function, removeEventListener: Function} | null,
 * }} Settings
 * @typedef {{
 *   token?: string, tokenProvider?: () => string | Promise<string>,
 *   positions?: Record<string, number> | Map<string, number>,
 *   WebSocket?: typeof WebSocket, settings?: Settings}} ConnectOptions
 */

// -- errors --------------------------------------------------------------------------------------

/**
 * The error tree:
 *
 *     HoomiError
 *     ├── ClientClosed        the client ended for good; pending requests fail with it
 *     ├── RequestFailed       the server refused a request (`code`: the spec's error code),
 *     │                       or the connection ended under one not safe to repeat
 *     │                       (`disconnected`), or a local bound refused it
 *     └── IllegalTransition   a (state, event) pair the spec does not list: a bug
 */
export class HoomiError extends Error {}

export class ClientClosed extends HoomiError {
  /** @param {string} reason @param {number | null} [closeCode] */
  constructor(reason, closeCode = null) {
    super(reason);
    this.name = "ClientClosed";
    this.reason = reason;
    this.closeCode = closeCode;
  }
}

export class RequestFailed extends HoomiError {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{path?: string | null, retryAfterMs?: number | null}} [details]
   */
  constructor(code, message, details = {}) {
    super(`${code}: ${message}`);
    this.name = "RequestFailed";
    this.code = code;
    this.detail = message;
    this.path = details.path ?? null;
    this.retryAfterMs = details.retryAfterMs ?? null;
  }
}

export class IllegalTransition extends HoomiError {
  /** @param {string} state @param {string} event */
  constructor(state, event) {
    super(`the client state machine has no transition for event ${event} in state ${state}`);
    this.name = "IllegalTransition";
  }
}

// -- the spec's data -----------------------------------------------------------------------------

/** @type {Map<string, {to: ClientState, actions: readonly string[]}>} */
const TABLE = new Map(
  MACHINE.transitions.map((t) => [
    `${t.from} ${t.event}`,
    { to: /** @type {ClientState} */ (t.to), actions: Object.freeze([...t.actions]) },
  ]),
);

/**
 * The transition of `event` in `state`, from the spec's table.
 * @param {string} state @param {string} event
 * @returns {{to: ClientState, actions: readonly string[]}}
 * @throws {IllegalTransition} for a pair the spec does not list
 */
export function transition(state, event) {
  const found = TABLE.get(`${state} ${event}`);
  if (found === undefined) throw new IllegalTransition(state, event);
  return found;
}

/**
 * The most attempt `attempt` (1-based, since the last welcome) may wait, in ms.
 * @param {number} attempt @param {BackoffSettings} [backoff]
 */
export function backoffCapMs(attempt, backoff = MACHINE.backoff) {
  return Math.min(backoff.max_ms, backoff.initial_ms * backoff.multiplier ** (attempt - 1));
}

/**
 * The delay before attempt `attempt` (full jitter), for a uniform `draw` in [0, 1).
 * @param {number} attempt @param {number} draw @param {BackoffSettings} [backoff]
 */
export function backoffDelayMs(attempt, draw, backoff = MACHINE.backoff) {
  return draw * backoffCapMs(attempt, backoff);
}

/**
 * The state machine's event for a connection that ended with `code` (the WebSocket close
 * event's; 1006: no close frame). A code the registry does not list reconnects.
 * @param {number | null | undefined} code
 * @returns {"connection_lost" | "server_close_reconnect" | "server_close_terminal"}
 */
export function closeEvent(code) {
  if (code === null || code === undefined || code === ABNORMAL) return "connection_lost";
  const known = /** @type {Record<string, {reconnect: boolean}>} */ (CLOSE_CODES)[String(code)];
  return known === undefined || known.reconnect ? "server_close_reconnect" : "server_close_terminal";
}
// -- pacing --------------------------------------------------------------------------------------

/** A token bucket like the server's (HOOMI-LIMIT-2), full at each welcome. */
class Pace {
  /** @param {() => number} now */
  constructor(now) {
    this.now = now;
    this.rate = 0; // per ms; 0: no limit known yet
    this.burst = 0;
    this.tokens = 0;
    this.at = 0;
  }

  /** @param {Limits} limits */
  reset(limits) {
    this.rate = (limits.rate_per_s * PACE_MARGIN) / 1000;
    this.burst = Math.max(1, limits.rate_burst - 1);
    this.tokens = this.burst;
    this.at = this.now();
  }

  /** Reserve a token; return the ms to wait until it exists (0: now). */
  take() {
    if (this.rate <= 0) return 0;
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.at) * this.rate) - 1;
    this.at = now;
    return this.tokens < 0 ? -this.tokens / this.rate : 0;
  }
}

// -- the client ----------------------------------------------------------------------------------

/**
 * @typedef {import("./hoomi-streams.js").Step} Step
 * @typedef {{frame: Frame, repeat: boolean, resolve: (reply: any) => void,
 *   reject: (error: Error) => void, writtenOn: number}} Pending
 * @typedef {{generation: number, ws: WebSocket | null, helloId: string, helloToken: string,
 *   startedAt: number, lastFrameAt: number, pingedAt: number | null, intervalMs: number,
 *   ended: boolean, outbox: Array<[Frame, Pending | null]>, pumping: boolean, reserved: boolean,
 *   closed: Promise<void>, markClosed: () => void}} Connection
 * @typedef {{event: string, closeCode: number | null, reason: string}} End
 */

/** @type {Required<Omit<Settings, "now" | "random" | "document" | "window">>} */
const DEFAULTS = {
  connectTimeoutMs: MACHINE.timers.connect.default_ms ?? 10_000,
  backoff: MACHINE.backoff,
  maxPending: 1000,
  holdMax: 1000,
  closeTimeoutMs: 2000,
  clientName: "hoomi-js",
};

/**
 * A connection to a Hoomi server that outlives its WebSockets; make one with `connect`.
 *
 * Requests (`send`, `history`, `read`, `typing`, `presence`) made while the client is not
 * live wait for the next welcome; `send`, `history`, `read` and `presence` are sent again
 * after a reconnect until answered. After the client closes they reject with `ClientClosed`.
 */
export class HoomiClient extends EventTarget {
  /** @type {ClientState} */
  #state = /** @type {ClientState} */ (MACHINE.initial);
  /** @type {Map<string, Pending>} */
  #pending = new Map();
  #ids = 0;
  #generation = 0;
  /** @type {Connection | null} */
  #conn = null;
  #attempt = 0;
  /** @type {End | null} */
  #end = null;
  #errorCode = "protocol";
  /** @type {ClientClosed | null} */
  #closedBy = null;
  #welcomes = 0;
  /** @type {Frame | null} */
  #frame = null;
  #givingUp = false;
  /** @type {number | null} */
  #backoffDelay = null;
  #backoffDue = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #timer = null;
  #timerDue = Infinity;
  /** @type {Set<ReturnType<typeof setTimeout>>} */
  #later = new Set();
  #depth = 0; // transitions in progress: app events wait until the outermost ends
  /** @type {Array<[string, unknown]>} */
  #events = [];
  /** @type {() => void} */
  #resolveReady = () => {};
  /** @type {(error: Error) => void} */
  #rejectReady = () => {};
  /** @type {(closed: ClientClosed) => void} */
  #resolveClosed = () => {};
  #wake = () => this.#checkNow();
  /** @type {Pace} */
  #pace;

  /** @param {string} url @param {ConnectOptions} [options] */
  constructor(url, options = {}) {
    super();
    if (!/^wss?:\/\/[^/?#]+/.test(url)) throw new TypeError(`not a ws:// or wss:// URL: ${url}`);
    if ((options.token === undefined) === (options.tokenProvider === undefined)) {
      throw new TypeError("give exactly one of token and tokenProvider");
    }
    this.url = url;
    this.token = options.token;
    this.tokenProvider = options.tokenProvider;
    const given = options.settings ?? {};
    this.settings = { ...DEFAULTS, ...given };
    this.now = given.now ?? (() => Date.now());
    this.random = given.random ?? Math.random;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.document = given.document !== undefined ? given.document : globalThis.document ?? null;
    this.window = given.window !== undefined ? given.window : globalThis.window ?? null;
    this.streams = new Streams(options.positions ?? null, { holdMax: this.settings.holdMax });
    this.#pace = new Pace(this.now);
    /** @type {Welcome | null} the latest welcome */
    this.welcome = null;
    /** @type {Map<string, Conversation>} */
    this.conversations = new Map();
    /** Resolves at the first welcome; rejects with `ClientClosed` if the client ends first. */
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = () => resolve(undefined);
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {}); // an app that never awaits it is told through events
    /** @type {Promise<ClientClosed>} resolves once the client is closed, with why */
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    this.document?.addEventListener("visibilitychange", this.#wake);
    this.window?.addEventListener("online", this.#wake);
    // The first attempt starts after the caller's synchronous code: listeners it adds right
    // after `connect` see every event.
    queueMicrotask(() => {
      if (this.#state === "connecting") void this.#startAttempt();
    });
  }

  /** The spec's actions by name (checked against client-state-machine.js at load).
   * @type {Record<string, (client: HoomiClient) => void>} */
  static #ACTIONS = {
    send_hello: (c) => c.#sendHello(),
    start_streams: (c) => c.#startStreams(),
    resend_pending: (c) => c.#resendPending(),
    query_presence: (c) => c.#queryPresence(),
    reset_backoff: (c) => c.#resetBackoff(),
    start_quiet_timer: (c) => c.#startQuietTimer(),
    restart_quiet_timer: (c) => c.#restartQuietTimer(),
    handle_frame: (c) => c.#handleFrame(),
    send_ping: (c) => c.#sendPing(),
    start_dead_timer: (c) => c.#startDeadTimer(),
    refresh_token: (c) => c.#refreshToken(),
    report_error: (c) => c.#reportError(),
    schedule_backoff: (c) => c.#scheduleBackoff(),
    open_connection: (c) => c.#openConnection(),
    abort_connection: (c) => c.#abortConnection(),
    close_connection: (c) => c.#closeConnection(),
    fail_pending: (c) => c.#failPending(),
  };

  static {
    const names = Object.keys(HoomiClient.#ACTIONS).sort();
    const spec = [...MACHINE.actions].sort();
    if (JSON.stringify(names) !== JSON.stringify(spec)) {
      throw new Error(`the spec's actions ${spec} are not the client's ${names}`);
    }
  }

  // -- the app's API -----------------------------------------------------------------------------

  /** @returns {ClientState} */
  get state() {
    return this.#state;
  }

  /** @returns {string | null} */
  get userId() {
    return this.welcome === null ? null : this.welcome.user_id;
  }

  /**
   * Call `listener` with each event of `type`'s detail; returns a function that removes it.
   * @template {keyof ClientEventMap} K
   * @param {K} type @param {(detail: ClientEventMap[K]) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    /** @param {Event} event */
    const wrapped = (event) => listener(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /**
   * Store `text` in the conversation; resolves with the ack once it is durable. Retried with
   * the same `client_msg_id` across reconnects and after retryable errors, so it is stored
   * once. Rejects with `RequestFailed` (e.g. `forbidden`, `too_large`) or `ClientClosed`.
   * @param {string} conversationId @param {string} text @param {{clientMsgId?: string}} [options]
   * @returns {Promise<Ack>}
   */
  send(conversationId, text, options = {}) {
    const frame = {
      type: "send",
      id: this.#nextId(),
      conversation_id: conversationId,
      client_msg_id: options.clientMsgId ?? randomId(),
      text,
    };
    const limits = this.welcome?.limits;
    if (limits !== undefined) {
      if ([...text].length > limits.max_text_chars) {
        // Refused here: the server would answer too_large anyway, and a frame over
        // max_frame_bytes would cost the whole connection (1009, terminal).
        const why = `text is over max_text_chars (${limits.max_text_chars})`;
        return Promise.reject(new RequestFailed("too_large", why, { path: "$.text" }));
      }
      if (new TextEncoder().encode(JSON.stringify(frame)).length > limits.max_frame_bytes) {
        const why = `the frame is over max_frame_bytes (${limits.max_frame_bytes})`;
        return Promise.reject(new RequestFailed("too_large", why));
      }
    }
    return this.#request(frame, true);
  }

  /**
   * One page of stored messages (HOOMI-HISTORY-1); it does not touch the message events.
   * @param {string} conversationId
   * @param {{beforeSeq?: number, afterSeq?: number, limit?: number}} [page]
   * @returns {Promise<HistoryPage>}
   */
  history(conversationId, page = {}) {
    /** @type {Frame} */
    const frame = { type: "history", id: this.#nextId(), conversation_id: conversationId };
    if (page.beforeSeq !== undefined) frame.before_seq = page.beforeSeq;
    if (page.afterSeq !== undefined) frame.after_seq = page.afterSeq;
    if (page.limit !== undefined) frame.limit = page.limit;
    return this.#request(frame, true);
  }

  /** Move the user's read marker forward to `seq`. @param {string} conversationId @param {number} seq
   * @returns {Promise<void>} */
  async read(conversationId, seq) {
    const frame = { type: "read", id: this.#nextId(), conversation_id: conversationId, seq };
    await this.#request(frame, true);
  }

  /**
   * Say the user is typing (repeat every `typing_ttl_ms / 2`) or stopped. Of the moment: not
   * sent again after a reconnect (`RequestFailed` `disconnected` if the connection ends).
   * @param {string} conversationId @param {boolean} [active] @returns {Promise<void>}
   */
  async typing(conversationId, active = true) {
    const frame = { type: "typing", id: this.#nextId(), conversation_id: conversationId, active };
    await this.#request(frame, false);
  }

  /** The presence of users who share a conversation with this one.
   * @param {string[]} userIds @returns {Promise<PresenceState[]>} */
  async presence(userIds) {
    const frame = { type: "presence_query", id: this.#nextId(), user_ids: [...userIds] };
    const reply = await this.#request(frame, true);
    return reply.users;
  }

  /** Close the connection (1000, waiting at most `closeTimeoutMs`) and fail what is pending
   * with `ClientClosed`. Idempotent. @returns {Promise<void>} */
  async close() {
    const conn = this.#conn;
    if (this.#state !== "closed") {
      this.#fire("app_close", { event: "app_close", closeCode: null, reason: "closed by the app" });
    }
    if (conn !== null && conn.ws !== null) {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timeout;
      const waited = new Promise((resolve) => {
        timeout = setTimeout(resolve, this.settings.closeTimeoutMs);
      });
      await Promise.race([conn.closed, waited]);
      clearTimeout(timeout);
    }
  }

  // -- requests ----------------------------------------------------------------------------------

  #nextId() {
    return `r${++this.#ids}`;
  }

  /** @param {Frame} frame @param {boolean} repeat @returns {Promise<any>} */
  #request(frame, repeat) {
    if (this.#closedBy !== null) return Promise.reject(this.#closedBy);
    if (this.#pending.size >= this.settings.maxPending) {
      const why = `${this.settings.maxPending} requests are already waiting for a reply`;
      return Promise.reject(new RequestFailed("too_many_pending", why));
    }
    return new Promise((resolve, reject) => {
      /** @type {Pending} */
      const pending = { frame, repeat, resolve, reject, writtenOn: 0 };
      this.#pending.set(/** @type {string} */ (frame.id), pending);
      if (this.#state === "live") this.#writePending(pending);
    });
  }

  /** @param {Pending} pending @param {any} reply @param {Error | null} [error] */
  #finish(pending, reply, error = null) {
    if (this.#pending.get(/** @type {string} */ (pending.frame.id)) !== pending) return;
    this.#pending.delete(/** @type {string} */ (pending.frame.id));
    if (error !== null) pending.reject(error);
    else pending.resolve(reply);
  }

  /** @param {Pending} pending */
  #writePending(pending) {
    const conn = this.#conn;
    if (conn === null || pending.writtenOn === conn.generation) return;
    pending.writtenOn = conn.generation;
    this.#write(pending.frame, pending);
  }

  /** Queue `frame` for the current connection; it goes out in order, paced.
   * @param {Frame} frame @param {Pending | null} [pending] */
  #write(frame, pending = null) {
    const conn = this.#conn;
    if (conn === null || conn.ended) return;
    conn.outbox.push([frame, pending]);
    if (!conn.pumping) this.#pump(conn);
  }

  /** Write the connection's frames in order, requests paced under the server's rate limit
   * (HOOMI-LIMIT-2); a request nobody waits for any more is not sent. @param {Connection} conn */
  #pump(conn) {
    conn.pumping = false;
    while (conn.outbox.length > 0 && !conn.ended) {
      const [frame, pending] = conn.outbox[0];
      if (pending !== null && this.#pending.get(/** @type {string} */ (frame.id)) !== pending) {
        conn.outbox.shift();
        continue;
      }
      if (frame.type !== "hello") {
        if (!conn.reserved) {
          const wait = this.#pace.take();
          if (wait > 0) {
            // The token is taken: whichever frame heads the outbox then uses it.
            conn.pumping = true;
            this.#after(wait, () => {
              conn.reserved = true;
              this.#pump(conn);
            });
            return;
          }
        }
        conn.reserved = false;
      }
      conn.outbox.shift();
      this.#send(conn, frame);
    }
  }

  /** @param {Connection} conn @param {Frame | undefined} frame */
  #send(conn, frame) {
    if (frame === undefined || conn.ended || conn.ws === null) return;
    try {
      conn.ws.send(JSON.stringify(frame));
    } catch {
      // The socket is closing: its close event tells the machine.
    }
  }

  /** A timer the client owns (cleared when it closes). @param {number} ms @param {() => void} fn */
  #after(ms, fn) {
    const id = setTimeout(() => {
      this.#later.delete(id);
      fn();
    }, ms);
    this.#later.add(id);
  }

  // -- the state machine -------------------------------------------------------------------------

  /** @param {string} event @param {End | null} [end] */
  #fire(event, end = null) {
    const before = this.#state;
    const { to, actions } = transition(before, event);
    this.#state = to;
    if (end !== null) this.#end = end;
    this.#depth += 1;
    try {
      for (const action of actions) HoomiClient.#ACTIONS[action](this);
      if (to !== before && this.#state === to) this.#reportState(to);
    } finally {
      this.#depth -= 1;
    }
    this.#arm();
    this.#flush();
  }

  /** @param {ClientState} state */
  #reportState(state) {
    const end = this.#end;
    const ending = end !== null && state !== "live";
    this.#emit("state", {
      state,
      closeCode: ending ? end.closeCode : null,
      reason: ending ? end.reason : "",
      attempt: state === "backoff" ? this.#attempt : 0,
      retryInMs: state === "backoff" ? this.#backoffDelay : null,
      welcome: state === "live" ? this.welcome : null,
    });
  }

  /** Hand the app an event once the transition in progress ends. @param {string} type @param {unknown} detail */
  #emit(type, detail) {
    this.#events.push([type, detail]);
    this.#flush();
  }

  #flush() {
    if (this.#depth > 0) return;
    while (this.#events.length > 0) {
      const [type, detail] = /** @type {[string, unknown]} */ (this.#events.shift());
      this.dispatchEvent(new CustomEvent(type, { detail }));
    }
  }

  /** Arm the one timer for the earliest deadline of the current state. */
  #arm() {
    const due = this.#nextDue();
    if (due === this.#timerDue && this.#timer !== null) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerDue = due;
    if (due === Infinity) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerDue = Infinity;
      this.#check();
    }, Math.max(0, due - this.now()));
  }

  #nextDue() {
    const conn = this.#conn;
    const state = this.#state;
    if ((state === "connecting" || state === "authenticating") && conn !== null && !conn.ended) {
      return conn.startedAt + this.settings.connectTimeoutMs;
    }
    if (state === "live" && conn !== null && !conn.ended) {
      return (conn.pingedAt ?? conn.lastFrameAt) + conn.intervalMs;
    }
    if (state === "backoff") return this.#givingUp ? 0 : this.#backoffDue;
    return Infinity;
  }

  /** Feed the timer events that are due by the clock (late wake-ups fire each at most once). */
  #check() {
    const now = this.now();
    const conn = this.#conn;
    const state = this.#state;
    if ((state === "connecting" || state === "authenticating") && conn !== null && !conn.ended) {
      if (now >= conn.startedAt + this.settings.connectTimeoutMs) {
        const reason = `no welcome within ${this.settings.connectTimeoutMs / 1000} s`;
        this.#fire("connect_timeout", { event: "connect_timeout", closeCode: null, reason });
        return;
      }
    } else if (state === "live" && conn !== null && !conn.ended) {
      if (conn.pingedAt === null) {
        if (now >= conn.lastFrameAt + conn.intervalMs) {
          this.#fire("quiet");
          return;
        }
      } else if (now >= conn.pingedAt + conn.intervalMs) {
        const reason = `nothing from the server for ${((now - conn.lastFrameAt) / 1000).toFixed(1)} s`;
        this.#fire("dead", { event: "dead", closeCode: null, reason });
        return;
      }
    } else if (state === "backoff") {
      if (this.#givingUp) {
        this.#errorCode = "gave_up";
        const reason = `gave up after ${this.#attempt} attempts`;
        this.#fire("gave_up", { event: "gave_up", closeCode: null, reason });
        return;
      }
      if (now >= this.#backoffDue) {
        this.#fire("backoff_elapsed");
        return;
      }
    }
    this.#arm();
  }

  /** The tab became visible or the browser online: throttled timers are not trusted. A
   * backoff ends now; liveness is checked by the clock at once. */
  #checkNow() {
    if (this.document !== null && this.document.visibilityState === "hidden") return;
    if (this.#state === "backoff" && !this.#givingUp) this.#backoffDue = this.now();
    this.#check();
  }

  // -- connections -------------------------------------------------------------------------------

  /** One attempt: a token, then the WebSocket; its events are fed to the machine. */
  async #startAttempt() {
    /** @type {() => void} */
    let markClosed = () => {};
    /** @type {Connection} */
    const conn = {
      generation: ++this.#generation,
      ws: null,
      helloId: "",
      helloToken: "",
      startedAt: this.now(),
      lastFrameAt: 0,
      pingedAt: null,
      intervalMs: 0,
      ended: false,
      outbox: [],
      pumping: false,
      reserved: false,
      closed: new Promise((resolve) => {
        markClosed = () => resolve(undefined);
      }),
      markClosed: () => markClosed(),
    };
    this.#conn = conn;
    this.#arm(); // the connect timer
    const current = () => this.#conn === conn && !conn.ended;
    try {
      conn.helloToken = await this.#getToken();
    } catch (error) {
      if (current()) this.#ended(conn, "open_failed", null, `cannot connect: token_provider failed: ${error}`);
      return;
    }
    if (!current()) return; // the app closed the client, or the connect timer fired
    let ws;
    try {
      ws = new this.WebSocket(this.url, [SUBPROTOCOL]);
    } catch (error) {
      this.#ended(conn, "open_failed", null, `cannot connect: ${error}`);
      return;
    }
    conn.ws = ws;
    ws.onopen = () => {
      if (!current()) return;
      if (ws.protocol !== SUBPROTOCOL) {
        const reason = `the server did not select ${SUBPROTOCOL} (selected ${JSON.stringify(ws.protocol)})`;
        this.#fire("no_subprotocol", { event: "no_subprotocol", closeCode: null, reason });
        return;
      }
      this.#end = null; // how the last connection ended is told; this one is new
      this.#fire("opened");
    };
    ws.onmessage = (message) => {
      if (current()) this.#receive(conn, message.data);
    };
    ws.onerror = () => {}; // the close event follows and says what happened
    ws.onclose = (close) => {
      conn.markClosed();
      if (!current()) return;
      if (this.#state === "connecting") {
        this.#ended(conn, "open_failed", null, `cannot connect (WebSocket close ${close.code})`);
        return;
      }
      const event = closeEvent(close.code);
      if (event === "connection_lost") {
        this.#ended(conn, event, null, "the connection was lost");
        return;
      }
      const detail = close.reason ? `: ${close.reason}` : "";
      const reason = `the server closed the connection with ${close.code}${detail}`;
      this.#ended(conn, event, close.code, reason);
    };
  }

  /** The connection ended by itself: feed how. @param {Connection} conn @param {string} event
   * @param {number | null} closeCode @param {string} reason */
  #ended(conn, event, closeCode, reason) {
    conn.ended = true;
    this.#conn = null;
    this.#errorCode = event === "server_close_terminal" ? `closed_${closeCode}` : "protocol";
    this.#fire(event, { event, closeCode, reason });
  }

  async #getToken() {
    if (this.tokenProvider === undefined) return /** @type {string} */ (this.token);
    return await this.tokenProvider();
  }

  /** @param {Connection} conn @param {unknown} data */
  #receive(conn, data) {
    const authenticating = this.#state === "authenticating";
    const decoded =
      typeof data === "string" ? decodeServerFrame(data) : { problem: "a binary frame" };
    if ("unknown" in decoded) {
      if (!authenticating) this.#restartQuietTimer(); // ignored (HOOMI-WIRE-4), but activity
      return;
    }
    if ("problem" in decoded) {
      this.#bad(`bad frame: ${decoded.problem}`);
      return;
    }
    const frame = decoded.frame;
    if (authenticating) {
      if (frame.type === "welcome" && frame.id === conn.helloId) {
        this.welcome = /** @type {Welcome} */ (frame);
        this.#welcomes += 1;
        conn.intervalMs = frame.heartbeat_interval_ms;
        conn.lastFrameAt = this.now();
        if (this.#welcomes === 1) this.#resolveReady();
        this.#fire("welcome");
      } else if (frame.type === "error" && frame.id === conn.helloId) {
        this.#errorCode = frame.code;
        this.#fire("hello_error", { event: "hello_error", closeCode: null, reason: frame.message });
      } else {
        this.#bad(`a ${frame.type} frame before welcome`);
      }
      return;
    }
    if (frame.type === "welcome") {
      this.#bad("a second welcome");
    } else if (frame.type === "token_expiring") {
      this.#fire("token_expiring");
    } else {
      this.#frame = frame;
      try {
        this.#fire("frame");
      } finally {
        this.#frame = null;
      }
    }
  }

  /** @param {string} reason */
  #bad(reason) {
    this.#errorCode = "bad_frame";
    this.#fire("bad_frame", { event: "bad_frame", closeCode: null, reason });
  }

  // -- actions (named in the spec; see #ACTIONS) -------------------------------------------------------

  #sendHello() {
    const conn = /** @type {Connection} */ (this.#conn);
    conn.helloId = this.#nextId();
    const resume = this.streams.resume();
    /** @type {Frame} */
    const hello = {
      type: "hello",
      id: conn.helloId,
      token: conn.helloToken,
      client: { name: this.settings.clientName, version: CLIENT_VERSION },
    };
    if (resume.length > 0) hello.resume = resume;
    this.#write(hello);
  }

  #startStreams() {
    const welcome = /** @type {Welcome} */ (this.welcome);
    const { added, gone, step: out } = this.streams.welcome(welcome.conversations);
    this.conversations = new Map(welcome.conversations.map((c) => [c.conversation_id, c]));
    this.#pace.reset(welcome.limits);
    for (const cid of gone) this.#emit("left", { conversation_id: cid });
    if (this.#welcomes > 1) {
      for (const conversation of added) this.#emit("joined", conversation); // news, not the start
    }
    this.#apply(out);
  }

  #resendPending() {
    for (const pending of this.#pending.values()) this.#writePending(pending);
  }

  #queryPresence() {
    const user = this.userId;
    const contacts = new Set();
    for (const c of this.conversations.values()) {
      for (const member of c.members) if (member !== user) contacts.add(member);
    }
    const sorted = [...contacts].sort();
    for (let start = 0; start < sorted.length; start += PRESENCE_QUERY_MAX) {
      const user_ids = sorted.slice(start, start + PRESENCE_QUERY_MAX);
      this.#write({ type: "presence_query", id: `${PRESENCE_PREFIX}${++this.#ids}`, user_ids });
    }
  }

  #resetBackoff() {
    this.#attempt = 0;
  }

  #startQuietTimer() {
    this.#restartQuietTimer();
  }

  #restartQuietTimer() {
    const conn = this.#conn;
    if (conn !== null) {
      conn.lastFrameAt = this.now();
      conn.pingedAt = null;
    }
  }

  #handleFrame() {
    this.#handle(/** @type {Frame} */ (this.#frame));
  }

  #sendPing() {
    this.#write({ type: "ping", id: this.#nextId() });
  }

  #startDeadTimer() {
    const conn = this.#conn;
    if (conn !== null) conn.pingedAt = this.now();
  }

  #refreshToken() {
    const conn = this.#conn;
    if (this.tokenProvider === undefined || conn === null) {
      this.#emit("error", {
        code: "token",
        message:
          "the token expires soon and the client has no tokenProvider: the server will " +
          "close the session (4002)",
      });
      return;
    }
    void this.#refresh(conn, this.tokenProvider);
  }

  /** Refresh in band; a failure is reported and tried again (1 s, 2 s, … 10 s apart) while
   * this connection lasts. @param {Connection} conn @param {() => string | Promise<string>} provider */
  async #refresh(conn, provider) {
    let delay = 1000;
    for (;;) {
      try {
        const token = await provider();
        await this.#request({ type: "refresh", id: this.#nextId(), token }, false);
        return;
      } catch (error) {
        if (error instanceof ClientClosed) return;
        if (error instanceof RequestFailed && error.code === "disconnected") return;
        const what = error instanceof RequestFailed ? "token refresh failed" : "tokenProvider failed";
        this.#emit("error", { code: "token", message: `${what}: ${error}` });
      }
      await new Promise((resolve) => this.#after(delay, () => resolve(undefined)));
      if (conn.ended || this.#conn !== conn) return;
      delay = Math.min(10_000, delay * 2);
    }
  }

  #reportError() {
    const end = this.#end;
    if (end !== null && end.reason) this.#emit("error", { code: this.#errorCode, message: end.reason });
  }

  #scheduleBackoff() {
    this.streams.disconnected();
    for (const pending of [...this.#pending.values()]) {
      if (!pending.repeat) {
        this.#finish(pending, null, new RequestFailed("disconnected", "the connection ended"));
      }
    }
    this.#attempt += 1;
    const limit = this.settings.backoff.max_attempts;
    this.#givingUp = limit !== null && this.#attempt >= limit;
    this.#backoffDelay = this.#givingUp
      ? null
      : backoffDelayMs(this.#attempt, this.random(), this.settings.backoff);
    this.#backoffDue = this.now() + (this.#backoffDelay ?? 0);
  }

  #openConnection() {
    void this.#startAttempt();
  }

  #abortConnection() {
    // Browsers cannot drop a TCP connection: close without waiting, and forget it.
    const conn = this.#conn;
    if (conn === null || conn.ended) return;
    conn.ended = true;
    this.#conn = null;
    if (conn.ws !== null) {
      const ws = conn.ws;
      ws.onopen = ws.onmessage = null;
      if (ws.readyState === ws.CONNECTING) ws.onopen = () => ws.close();
      else ws.close();
    }
  }

  #closeConnection() {
    const conn = this.#conn;
    if (conn === null || conn.ended) return;
    conn.ended = true;
    this.#conn = null;
    if (conn.ws === null) return;
    const ws = conn.ws;
    ws.onopen = ws.onmessage = null;
    if (ws.readyState === ws.CONNECTING) ws.onopen = () => ws.close(1000);
    else ws.close(1000);
  }

  #failPending() {
    const end = this.#end;
    const closed = new ClientClosed(end?.reason || "closed", end?.closeCode ?? null);
    this.#closedBy = closed;
    for (const pending of [...this.#pending.values()]) this.#finish(pending, null, closed);
    for (const id of this.#later) clearTimeout(id);
    this.#later.clear();
    this.document?.removeEventListener("visibilitychange", this.#wake);
    this.window?.removeEventListener("online", this.#wake);
    this.#rejectReady(closed);
    this.#resolveClosed(closed);
  }

  // -- frames ------------------------------------------------------------------------------------

  /** @param {Frame} frame */
  #handle(frame) {
    const id = frame.id;
    switch (frame.type) {
      case "message":
        this.#apply(this.streams.message(frame.message));
        return;
      case "resume_gap":
        this.#apply(this.streams.gap(frame.conversation_id, frame.latest_seq));
        return;
      case "conversation_joined":
        this.streams.joined(frame.conversation);
        this.conversations.set(frame.conversation.conversation_id, frame.conversation);
        this.#emit("joined", frame.conversation);
        return;
      case "conversation_left":
        this.streams.left(frame.conversation_id);
        this.conversations.delete(frame.conversation_id);
        this.#emit("left", { conversation_id: frame.conversation_id });
        return;
      case "user_typing":
        this.#emit("typing", frame);
        return;
      case "presence":
        this.#emit("presence", frame);
        return;
      case "receipt":
        this.#emit("receipt", frame);
        return;
    }
    if (frame.type === "history_page" && id !== undefined && this.streams.isFill(id)) {
      this.#apply(this.streams.page(id, frame.messages));
    } else if (frame.type === "error" && id !== undefined && this.streams.isFill(id)) {
      const retryable = RETRYABLE_ERRORS.includes(frame.code);
      this.streams.fillFailed(id, retryable);
      if (retryable) {
        this.#after(frame.retry_after_ms ?? 1000, () => {
          if (this.#state === "live") this.#apply(this.streams.refill());
        });
      } else {
        this.#emit("error", { code: frame.code, message: `filling a gap: ${frame.message}` });
      }
    } else if (frame.type === "error") {
      this.#answerError(frame);
    } else if (frame.type === "presence_result" && id !== undefined && id.startsWith(PRESENCE_PREFIX)) {
      for (const user of frame.users) this.#emit("presence", user); // the snapshot, as if pushed
    } else if (id !== undefined) {
      const pending = this.#pending.get(id);
      if (pending === undefined) return; // answers a request nobody waits for any more
      const wanted = REPLIES[pending.frame.type];
      if (frame.type === wanted) {
        this.#finish(pending, frame);
        return;
      }
      const problem = `a ${frame.type} answered a ${pending.frame.type} (expected ${wanted})`;
      this.#finish(pending, null, new RequestFailed("bad_frame", problem));
      this.#emit("error", { code: "bad_frame", message: problem });
    }
  }

  /** @param {Frame} error */
  #answerError(error) {
    const pending = error.id === undefined ? undefined : this.#pending.get(error.id);
    if (pending === undefined) {
      this.#emit("error", { code: error.code, message: error.message });
      return;
    }
    if (RETRYABLE_ERRORS.includes(error.code) && pending.repeat) {
      const generation = pending.writtenOn;
      this.#after(error.retry_after_ms ?? 1000, () => {
        if (
          this.#pending.get(/** @type {string} */ (error.id)) === pending &&
          this.#state === "live" &&
          pending.writtenOn === generation // not re-sent on a new connection since
        ) {
          pending.writtenOn = 0;
          this.#writePending(pending);
        }
      });
      return;
    }
    const failed = new RequestFailed(error.code, error.message, {
      path: error.path,
      retryAfterMs: error.retry_after_ms,
    });
    this.#finish(pending, null, failed);
  }

  /** @param {Step} out */
  #apply(out) {
    for (const problem of out.problems) this.#emit("error", { code: "protocol", message: problem });
    for (const message of out.deliver) this.#emit("message", message);
    for (const request of out.requests) this.#write(request);
  }
}

function randomId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Connect to a Hoomi server and stay connected until `close()`. Returns at once; the client
 * reconnects with backoff before the first welcome as after it. `client.ready` resolves at
 * the first welcome and rejects with `ClientClosed` if the server refuses for good (a
 * terminal close code) or the attempts run out.
 * @param {string} url @param {ConnectOptions} [options] @returns {HoomiClient}
 */
export function connect(url, options = {}) {
  return new HoomiClient(url, options);
}
