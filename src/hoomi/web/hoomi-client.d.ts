// Types of hoomi-client.js (Hoomi Realtime's browser client) for TypeScript users.
// Kept in step with the module by tests/test_browser_client.py (every export is declared).

export const SPEC_VERSION: string;
export const SUBPROTOCOL: string;
/** This module's version, sent in `hello.client`. */
export const CLIENT_VERSION: string;
/** Conversations resumed in one hello (the rest are paged after welcome). */
export const RESUME_MAX: number;

export type ClientState = "connecting" | "authenticating" | "live" | "backoff" | "closed";

export interface BackoffSettings {
  initial_ms: number;
  max_ms: number;
  multiplier: number;
  jitter: string;
  max_attempts: number | null;
}

/** spec/v1/client-state-machine.json, as generated into client-state-machine.js. */
export interface MachineData {
  readonly initial: ClientState;
  readonly states: readonly ClientState[];
  readonly events: readonly string[];
  readonly actions: readonly string[];
  readonly transitions: readonly {
    readonly from: ClientState;
    readonly event: string;
    readonly to: ClientState;
    readonly actions: readonly string[];
  }[];
  readonly timers: Readonly<Record<string, { setting: string; default_ms: number | null }>>;
  readonly backoff: BackoffSettings;
}
export const MACHINE: MachineData;

// -- the protocol's objects (spec/v1/schemas), as the server sends them -----------------------

export interface ChatMessage {
  conversation_id: string;
  seq: number;
  message_id: string;
  sender_id: string;
  kind: "user" | "system";
  text: string;
  sent_at: number;
  client_msg_id?: string | null;
  [field: string]: unknown;
}

export interface Conversation {
  conversation_id: string;
  kind: string;
  members: string[];
  latest_seq: number;
  read_seq: number;
  unread: number;
  [field: string]: unknown;
}

export interface Limits {
  max_frame_bytes: number;
  max_text_chars: number;
  history_page_max: number;
  replay_max: number;
  rate_per_s: number;
  rate_burst: number;
  typing_ttl_ms: number;
  [field: string]: unknown;
}

export interface Welcome {
  type: "welcome";
  id: string;
  session_id: string;
  user_id: string;
  protocol: string;
  spec_version: string;
  heartbeat_interval_ms: number;
  token_expires_at?: number;
  limits: Limits;
  conversations: Conversation[];
  [field: string]: unknown;
}

export interface Ack {
  type: "ack";
  id: string;
  conversation_id: string;
  client_msg_id: string;
  message_id: string;
  seq: number;
  sent_at: number;
  [field: string]: unknown;
}

export interface HistoryPage {
  type: "history_page";
  id: string;
  conversation_id: string;
  messages: ChatMessage[];
  has_more: boolean;
  [field: string]: unknown;
}

export interface PresenceState {
  user_id: string;
  status: "online" | "offline";
  last_seen?: number | null;
  [field: string]: unknown;
}

export interface Typing {
  conversation_id: string;
  user_id: string;
  active: boolean;
  [field: string]: unknown;
}

export interface Receipt {
  conversation_id: string;
  user_id: string;
  seq: number;
  [field: string]: unknown;
}

/** Any server frame: an object with a `type`. */
export interface Frame {
  type: string;
  id?: string;
  [field: string]: any;
}

// -- the client's events ------------------------------------------------------------------------

export interface StateChange {
  state: ClientState;
  /** Why the last connection ended (leaving one), when a close frame said. */
  closeCode: number | null;
  reason: string;
  /** In `backoff`: the attempt about to be made. */
  attempt: number;
  /** In `backoff`: its delay; null when giving up. */
  retryInMs: number | null;
  /** In `live`: the welcome. */
  welcome: Welcome | null;
}

export interface ClientErrorEvent {
  /** The spec's error code, or the client's (`bad_frame`, `protocol`, `token`, `gave_up`,
   * `closed_CODE`). */
  code: string;
  message: string;
}

export interface ClientEventMap {
  state: StateChange;
  message: ChatMessage;
  typing: Typing;
  presence: PresenceState;
  receipt: Receipt;
  joined: Conversation;
  left: { conversation_id: string };
  error: ClientErrorEvent;
}

export interface Settings {
  connectTimeoutMs?: number;
  backoff?: BackoffSettings;
  maxPending?: number;
  holdMax?: number;
  closeTimeoutMs?: number;
  clientName?: string;
  /** The clock timers compare (ms); default Date.now. */
  now?: () => number;
  /** Backoff jitter draws in [0, 1); default Math.random. */
  random?: () => number;
  /** Where visibilitychange comes from; default the page's document, null for none. */
  document?: Pick<Document, "visibilityState" | "addEventListener" | "removeEventListener"> | null;
  /** Where `online` comes from; default the page's window, null for none. */
  window?: Pick<Window, "addEventListener" | "removeEventListener"> | null;
}

export interface ConnectOptions {
  token?: string;
  tokenProvider?: () => string | Promise<string>;
  positions?: Record<string, number> | Map<string, number>;
  WebSocket?: typeof WebSocket;
  settings?: Settings;
}

// -- errors -------------------------------------------------------------------------------------

export class HoomiError extends Error {}

export class ClientClosed extends HoomiError {
  constructor(reason: string, closeCode?: number | null);
  reason: string;
  closeCode: number | null;
}

export class RequestFailed extends HoomiError {
  constructor(
    code: string,
    message: string,
    details?: { path?: string | null; retryAfterMs?: number | null },
  );
  code: string;
  detail: string;
  path: string | null;
  retryAfterMs: number | null;
}

export class IllegalTransition extends HoomiError {
  constructor(state: string, event: string);
}

// -- the spec's rules, as functions --------------------------------------------------------------

export function transition(
  state: string,
  event: string,
): { to: ClientState; actions: readonly string[] };
export function backoffCapMs(attempt: number, backoff?: BackoffSettings): number;
export function backoffDelayMs(attempt: number, draw: number, backoff?: BackoffSettings): number;
export function closeEvent(
  code: number | null | undefined,
): "connection_lost" | "server_close_reconnect" | "server_close_terminal";
export function decodeServerFrame(
  text: string,
): { frame: Frame } | { unknown: string } | { problem: string };

export interface Step {
  deliver: ChatMessage[];
  requests: Frame[];
  problems: string[];
}

export class Streams {
  constructor(
    positions?: Record<string, number> | Map<string, number> | null,
    options?: { holdMax?: number },
  );
  holdMax: number;
  duplicates: number;
  position(conversationId: string): number | null;
  positions(): Record<string, number>;
  resume(): { conversation_id: string; after_seq: number }[];
  disconnected(): void;
  welcome(conversations: Conversation[]): { added: Conversation[]; gone: string[]; step: Step };
  joined(conversation: Conversation): void;
  left(conversationId: string): void;
  message(message: ChatMessage): Step;
  gap(conversationId: string, latestSeq: number): Step;
  isFill(requestId: string): boolean;
  page(requestId: string, messages: ChatMessage[]): Step;
  refill(): Step;
  fillFailed(requestId: string, retryable: boolean): void;
}

// -- the client ---------------------------------------------------------------------------------

export class HoomiClient extends EventTarget {
  constructor(url: string, options?: ConnectOptions);
  readonly url: string;
  readonly state: ClientState;
  readonly userId: string | null;
  /** The latest welcome. */
  welcome: Welcome | null;
  conversations: Map<string, Conversation>;
  streams: Streams;
  /** Resolves at the first welcome; rejects with ClientClosed if the client ends first. */
  readonly ready: Promise<void>;
  /** Resolves once the client is closed, with why. */
  readonly closed: Promise<ClientClosed>;
  on<K extends keyof ClientEventMap>(
    type: K,
    listener: (detail: ClientEventMap[K]) => void,
  ): () => void;
  send(conversationId: string, text: string, options?: { clientMsgId?: string }): Promise<Ack>;
  history(
    conversationId: string,
    page?: { beforeSeq?: number; afterSeq?: number; limit?: number },
  ): Promise<HistoryPage>;
  read(conversationId: string, seq: number): Promise<void>;
  typing(conversationId: string, active?: boolean): Promise<void>;
  presence(userIds: string[]): Promise<PresenceState[]>;
  close(): Promise<void>;
}

export function connect(url: string, options?: ConnectOptions): HoomiClient;
