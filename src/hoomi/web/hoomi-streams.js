// @ts-check
/**
 * Per-conversation message streams for hoomi-client.js: each message once, in seq order,
 * gaps filled with history (HOOMI-CLIENT-2). Sans-I/O: no socket, no clock; the same rules
 * as the Python SDK's `hoomi.client.streams`.
 */

/**
 * @typedef {import("./hoomi-client.js").ChatMessage} ChatMessage
 * @typedef {import("./hoomi-client.js").Conversation} Conversation
 * @typedef {import("./hoomi-client.js").Frame} Frame
 */

/** Conversations resumed in one hello (the rest are paged after welcome), as the SDK. */
export const RESUME_MAX = 100;
const FILL_PREFIX = "fill-";

/**
 * @typedef {{position: number, target: number, held: Map<number, ChatMessage>,
 *   filling: string | null, active: number}} Stream
 * @typedef {{deliver: ChatMessage[], requests: Frame[], problems: string[]}} Step
 */

/** @returns {Step} */
function step() {
  return { deliver: [], requests: [], problems: [] };
}

/**
 * Every conversation's message stream for one client, across its connections: each message
 * once, in seq order, gaps filled with history (HOOMI-CLIENT-2). No I/O and no clock: the
 * client feeds in what the server sent and gets back a `Step` (messages for the app,
 * `history` requests to send, problems to report). The same rules as the SDK's
 * `hoomi.client.streams`: a seq at or below the position is dropped; position + 1 is handed
 * over with any held successors; a later one is held (at most `holdMax`) and the gap paged.
 */
export class Streams {
  /** @param {Record<string, number> | Map<string, number> | null} [positions] @param {{holdMax?: number}} [options] */
  constructor(positions = null, { holdMax = 1000 } = {}) {
    /** @type {Map<string, Stream>} */
    this.streams = new Map();
    const entries = positions instanceof Map ? positions.entries() : Object.entries(positions ?? {});
    for (const [cid, seq] of entries) this.streams.set(cid, newStream(seq));
    /** @type {Map<string, string>} fill request id -> conversation id */
    this.fills = new Map();
    this.ids = 0;
    this.ticks = 0;
    /** @type {Set<string>} known, but left out of the last hello */
    this.unresumed = new Set();
    this.holdMax = holdMax;
    /** messages dropped as already handed over */
    this.duplicates = 0;
  }

  /** The last seq handed to the app, or null for an unknown conversation. @param {string} cid */
  position(cid) {
    const stream = this.streams.get(cid);
    return stream === undefined ? null : stream.position;
  }

  /** @returns {Record<string, number>} */
  positions() {
    return Object.fromEntries([...this.streams].map(([cid, s]) => [cid, s.position]));
  }

  /** The hello's `resume`: the most recently active `RESUME_MAX` streams. */
  resume() {
    const ranked = [...this.streams].sort((a, b) => b[1].active - a[1].active);
    this.unresumed = new Set(ranked.slice(RESUME_MAX).map(([cid]) => cid));
    return ranked
      .slice(0, RESUME_MAX)
      .map(([cid, s]) => ({ conversation_id: cid, after_seq: s.position }));
  }

  /** The connection ended: fills in flight and held messages are forgotten (the resume
   * replay brings them again). */
  disconnected() {
    this.fills.clear();
    for (const stream of this.streams.values()) {
      stream.held.clear();
      stream.filling = null;
      stream.target = stream.position;
    }
  }

  /**
   * Match the welcome's conversations with the known ones (see the SDK's `Streams.welcome`).
   * @param {Conversation[]} conversations
   * @returns {{added: Conversation[], gone: string[], step: Step}}
   */
  welcome(conversations) {
    const listed = new Map(conversations.map((c) => [c.conversation_id, c]));
    const gone = [...this.streams.keys()].filter((cid) => !listed.has(cid));
    for (const cid of gone) this.streams.delete(cid);
    /** @type {Conversation[]} */
    const added = [];
    const out = step();
    for (const [cid, conversation] of listed) {
      const seq = conversation.latest_seq;
      const stream = this.streams.get(cid);
      if (stream === undefined) {
        added.push(conversation);
        this.streams.set(cid, newStream(seq));
      } else if (seq < stream.position) {
        out.problems.push(
          `conversation ${cid}: the server's latest seq ${seq} is below the ` +
            `${stream.position} already shown; restarting there`,
        );
        stream.position = stream.target = seq;
      } else if (this.unresumed.has(cid)) {
        stream.target = Math.max(stream.target, seq);
        this.#fill(cid, stream, out);
      }
    }
    this.unresumed.clear();
    return { added, gone, step: out };
  }

  /** `conversation_joined`: a stream from its latest_seq (a known one is kept). @param {Conversation} conversation */
  joined(conversation) {
    if (!this.streams.has(conversation.conversation_id)) {
      this.streams.set(conversation.conversation_id, newStream(conversation.latest_seq));
    }
  }

  /** `conversation_left`: nothing more of it is delivered. @param {string} cid */
  left(cid) {
    const stream = this.streams.get(cid);
    this.streams.delete(cid);
    if (stream !== undefined && stream.filling !== null) this.fills.delete(stream.filling);
  }

  /** A `message` event (live or replayed). @param {ChatMessage} message */
  message(message) {
    const out = step();
    const stream = this.streams.get(message.conversation_id);
    if (stream === undefined) {
      out.problems.push(
        `a message for conversation ${message.conversation_id}, which is not one of ` +
          "this user's: dropped",
      );
      return out;
    }
    this.take(stream, message, out);
    this.#advance(stream, out);
    this.#fill(message.conversation_id, stream, out);
    return out;
  }

  /** `resume_gap`: everything up to `latestSeq` must be paged. @param {string} cid @param {number} latestSeq */
  gap(cid, latestSeq) {
    const out = step();
    const stream = this.streams.get(cid);
    if (stream === undefined) {
      out.problems.push(`a resume_gap for unknown conversation ${cid}`);
      return out;
    }
    stream.target = Math.max(stream.target, latestSeq);
    this.#fill(cid, stream, out);
    return out;
  }

  /** @param {string} requestId */
  isFill(requestId) {
    return this.fills.has(requestId);
  }

  /** The `history_page` answering fill request `requestId`. @param {string} requestId @param {ChatMessage[]} messages */
  page(requestId, messages) {
    const out = step();
    const cid = this.fills.get(requestId);
    this.fills.delete(requestId);
    const stream = cid === undefined ? undefined : this.streams.get(cid);
    if (cid === undefined || stream === undefined) return out; // left meanwhile
    stream.filling = null;
    const before = stream.position;
    for (const message of messages) {
      if (message.conversation_id === cid) this.take(stream, message, out);
    }
    this.#advance(stream, out);
    if (stream.position === before && stream.position < stream.target) {
      // The server has nothing after our position yet announced more: skip to what we
      // hold rather than ask the same question forever.
      out.problems.push(
        `conversation ${cid}: history after seq ${before} is empty though seq ` +
          `${stream.target} exists; skipping the gap`,
      );
      for (const seq of [...stream.held.keys()].sort((a, b) => a - b)) {
        out.deliver.push(/** @type {ChatMessage} */ (stream.held.get(seq)));
        stream.position = seq;
      }
      stream.held.clear();
      stream.target = stream.position;
    }
    this.#fill(cid, stream, out);
    return out;
  }

  /** Page again wherever a stream is behind and no page is in flight. */
  refill() {
    const out = step();
    for (const [cid, stream] of this.streams) this.#fill(cid, stream, out);
    return out;
  }

  /** The fill request got an error (`retryable`: for now; `refill` asks again).
   * @param {string} requestId @param {boolean} retryable */
  fillFailed(requestId, retryable) {
    const cid = this.fills.get(requestId);
    this.fills.delete(requestId);
    const stream = cid === undefined ? undefined : this.streams.get(cid);
    if (stream !== undefined) {
      stream.filling = null;
      if (!retryable) {
        stream.held.clear();
        stream.target = stream.position;
      }
    }
  }

  /**
   * One message into its stream: dropped (a duplicate), handed over, or held.
   * @param {Stream} stream @param {ChatMessage} message @param {Step} out
   */
  take(stream, message, out) {
    if (message.seq <= stream.position) {
      this.duplicates += 1;
    } else if (message.seq === stream.position + 1) {
      out.deliver.push(message);
      stream.position = message.seq;
      stream.active = ++this.ticks;
    } else {
      stream.target = Math.max(stream.target, message.seq);
      if (stream.held.size < this.holdMax) stream.held.set(message.seq, message);
    }
  }

  /** @param {Stream} stream @param {Step} out */
  #advance(stream, out) {
    for (;;) {
      const following = stream.held.get(stream.position + 1);
      if (following === undefined) break;
      stream.held.delete(following.seq);
      out.deliver.push(following);
      stream.position = following.seq;
    }
    for (const seq of [...stream.held.keys()]) {
      if (seq <= stream.position) stream.held.delete(seq);
    }
    stream.target = Math.max(stream.target, stream.position);
  }

  /** @param {string} cid @param {Stream} stream @param {Step} out */
  #fill(cid, stream, out) {
    if (stream.position < stream.target && stream.filling === null) {
      const id = `${FILL_PREFIX}${++this.ids}`;
      stream.filling = id;
      this.fills.set(id, cid);
      out.requests.push({ type: "history", id, conversation_id: cid, after_seq: stream.position });
    }
  }
}

/** @param {number} seq @returns {Stream} */
function newStream(seq) {
  return { position: seq, target: seq, held: new Map(), filling: null, active: 0 };
}
