// Types of @chorus/client (hand-written; the code is src/index.js).

/** An uploaded file as it appears on a delivered message. */
export interface Attachment {
  id: string;
  name: string;
  type: string;
  size: number;
  /** A stable path, `/api/uploads/{id}`. */
  url: string;
}

/** A room message, as delivered live and in `history`. */
export interface RoomMessage {
  type?: 'message';
  id: string;
  room: string;
  user: string;
  content: string;
  /** RFC 3339, UTC. */
  ts: string;
  attachments?: Attachment[];
  /** Only when the sender gave one. */
  ref?: string;
}

/** A direct message. */
export interface DirectMessage {
  type?: 'dm';
  id: string;
  from: string;
  to: string;
  content: string;
  ts: string;
  attachments?: Attachment[];
  ref?: string;
}

export interface WelcomeFrame {
  type: 'welcome';
  user: string;
  node: string;
  session: string;
}

export interface JoinedFrame {
  type: 'joined';
  room: string;
  members: string[];
  history: RoomMessage[];
  /** `since` was older than the kept history: messages may be missing. */
  truncated?: boolean;
  ref?: string;
}

export interface LeftFrame {
  type: 'left';
  room: string;
  ref?: string;
}

export interface PresenceFrame {
  type: 'presence';
  room: string;
  user: string;
  event: 'join' | 'leave';
}

export interface TypingFrame {
  type: 'typing';
  room: string;
  user: string;
}

export interface DeletedFrame {
  type: 'deleted';
  room: string;
  id: string;
}

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StateEvent {
  state: ConnectionState;
  /** The node's WebSocket URL being used or tried. */
  url?: string;
  /** When open: the node id and our user name. */
  node?: string;
  user?: string;
  session?: string;
  /** The close code that caused this state, when there is one. */
  code?: number;
  reason?: string;
  /** True while waiting out the backoff before the next attempt. */
  waiting?: boolean;
  /** The backoff delay in ms (with `waiting`). */
  delay?: number;
  /** When the next attempt starts, ms since the epoch (with `waiting`). */
  at?: number;
  attempt?: number;
}

export interface DeliveryMeta {
  /**
   * True when the message came back through a rejoin with `since` after a
   * reconnect (it was missed while disconnected), false when delivered live.
   */
  replayed: boolean;
}

export interface JoinedMeta {
  /** An automatic rejoin after a reconnect (not a `join()` call). */
  rejoin: boolean;
  /** On a rejoin: the messages missed while away, also delivered as `message` events. */
  missed: RoomMessage[];
}

/** Error codes of the protocol, plus the client's own. */
export type ErrorCode =
  | 'bad_request'
  | 'invalid_room'
  | 'invalid_user'
  | 'not_member'
  | 'too_large'
  | 'rate_limited'
  | 'unavailable'
  /** the client was closed, or closed itself for good */
  | 'closed'
  /** no answer within `requestTimeoutMs` */
  | 'timeout'
  /** close 1008 with no `getToken`, or `getToken` failed */
  | 'auth'
  /** close 4001: removed by an administrator */
  | 'removed'
  /** a rejoin's history was truncated (emitted on `error`, never thrown) */
  | 'truncated'
  | (string & {});

export class ChorusError extends Error {
  constructor(code: ErrorCode, message: string, frame?: object);
  name: 'ChorusError';
  code: ErrorCode;
  /**
   * On a failed `send`/`dm`: its idempotency key. After `timeout` or
   * `closed` the message may have been stored; send again with
   * `{idempotencyKey}` to get the stored one instead of a duplicate.
   */
  idempotencyKey?: string;
  /** The server's error frame, when the server sent one. */
  frame?: { type: 'error'; code: string; message: string; ref?: string };
}

/**
 * The browser's `WebSocket` constructor or one like it (the `ws` package's
 * fits): `new WebSocket(url)`, `send`, `close`, `readyState`, and the
 * `onmessage` / `onclose` / `onerror` properties.
 */
export type WebSocketConstructor = new (url: string, ...rest: any[]) => any;

export interface ChorusClientOptions {
  /** One node: `http(s)://host:port` (`/ws` is added) or `ws(s)://host:port/ws`. */
  url?: string;
  /** Several nodes of one cluster; on a failure the client moves to the next. */
  urls?: string[];
  /** Anonymous mode: the user name (1–32 of `A-Za-z0-9_-.`). */
  username?: string;
  /** A JWT (HS256, `sub` = user name) when the server has `CHORUS_JWT_SECRET`. */
  token?: string;
  /**
   * Returns a fresh token. Called before the first connection when `token` is
   * not given, 30 s before the current token's `exp`, and on close 1008.
   * Without it, a close 1008 ends the client.
   */
  getToken?: () => Promise<string> | string;
  /** The WebSocket constructor; default `globalThis.WebSocket` (browsers, Node 22+). */
  WebSocket?: WebSocketConstructor;
  /** First reconnect delay; doubles per failed attempt, with ±25% jitter. Default 250. */
  backoffStartMs?: number;
  /** Largest reconnect delay. Default 5000. */
  backoffCapMs?: number;
  /** A command with no answer for this long rejects with `timeout`. Default 30000. */
  requestTimeoutMs?: number;
  /** How often a send answered `unavailable` is tried again (same idempotency key). Default 5. */
  unavailableRetries?: number;
  /** A connection attempt that has no `welcome` after this long is dropped and retried. Default 10000. */
  connectTimeoutMs?: number;
}

export interface SendOptions {
  /** Upload ids (at most 10) from `POST /api/uploads`. */
  attachments?: string[];
  /** Default: a fresh random key per call; retries reuse it. */
  idempotencyKey?: string;
}

export interface HistoryOptions {
  /** Messages older than this id. */
  before?: string;
  /** Default 50, max 100. */
  limit?: number;
}

export interface ChorusEvents {
  state: (s: StateEvent) => void;
  message: (m: RoomMessage, meta: DeliveryMeta) => void;
  dm: (m: DirectMessage, meta: DeliveryMeta) => void;
  presence: (p: PresenceFrame) => void;
  typing: (t: TypingFrame) => void;
  joined: (j: JoinedFrame, meta: JoinedMeta) => void;
  left: (l: LeftFrame) => void;
  /** An administrator deleted a message of a joined room: drop it from view. */
  deleted: (d: DeletedFrame) => void;
  disconnected: (ev: { code: number; reason: string }) => void;
  /** Server errors that answer no pending command, and connection-level errors. */
  error: (err: ChorusError | Error) => void;
  /** Any frame of a type this client does not know. */
  frame: (f: { type: string; [k: string]: unknown }) => void;
}

export class ChorusClient {
  constructor(opts: ChorusClientOptions);

  /** `connecting`, `open`, `reconnecting`, `closed` (or `idle` before `connect`). */
  readonly state: ConnectionState;
  /** Welcomed on the current socket. */
  readonly connected: boolean;
  /** Our user name, once welcomed. */
  readonly user: string | null;
  /** The node we are on, once welcomed. */
  readonly node: string | null;
  /** Rooms this client is in and rejoins after a reconnect. */
  readonly joinedRooms: string[];

  on<E extends keyof ChorusEvents>(event: E, fn: ChorusEvents[E]): () => void;
  once<E extends keyof ChorusEvents>(event: E, fn: ChorusEvents[E]): () => void;
  off<E extends keyof ChorusEvents>(event: E, fn: ChorusEvents[E]): void;

  /** Connects (retrying with backoff); resolves with the welcome frame. */
  connect(): Promise<WelcomeFrame>;
  /** Closes for good; pending commands reject with `closed`. */
  close(): void;

  /** Joins a room (rejoined on every reconnect with `since`). */
  join(room: string, opts?: { since?: string }): Promise<JoinedFrame>;
  leave(room: string): Promise<LeftFrame>;
  /** Leave `from`, join `to`; on failure stays in `from`. */
  switch(from: string, to: string): Promise<JoinedFrame>;
  /** Resolves with the stored message; rejects with a `ChorusError`. Never stored twice. */
  send(room: string, content: string, opts?: SendOptions): Promise<RoomMessage>;
  dm(to: string, content: string, opts?: SendOptions): Promise<DirectMessage>;
  /** False when not connected (typing is never queued). */
  typing(room: string): boolean;
  /** While waiting out a reconnect delay: try the next node now. */
  retryNow(): void;
  /** One page, oldest first. A DM pair read here is caught up after every reconnect. */
  history(target: string | { with: string } | { room: string }, opts?: HistoryOptions): Promise<Array<RoomMessage | DirectMessage>>;
  /** The newest id seen in `room`: the `since` of the next rejoin. */
  lastId(room: string): string | null;
}

/** Orders two message ids. */
export function compareIds(a: string, b: string): number;
/** The WebSocket URL for a node URL (`http://h:p` → `ws://h:p/ws`). */
export function wsUrl(url: string): string;

export default ChorusClient;
