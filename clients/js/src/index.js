// @chorus/client: a client for the chorus chat server (protocol v2).
//
// One WebSocket to one node at a time. On a lost connection it reconnects
// with exponential backoff and jitter (at once after 1001 draining or 1013
// too slow), moving on to the next of `urls`; on every new connection it
// rejoins each room with `since` = the last id it saw, delivers the messages
// it missed exactly once (merged by id), and sends again what was still
// pending, under the same idempotency key, so nothing is stored twice.
// No runtime dependencies; ES module; browsers and Node 18+.

const BACKOFF_START_MS = 250;
const BACKOFF_CAP_MS = 5000;
const HEARTBEAT_EVERY_MS = 10000;
const DEAD_AFTER_MS = 25000;
const SEEN_KEEP = 5000; // ids remembered per conversation for deduplication
const TOKEN_REFRESH_AHEAD_MS = 30000;

/** An error answered by the server (`code` as in the protocol) or by the client. */
export class ChorusError extends Error {
  /**
   * @param {string} code e.g. `invalid_room`, `not_member`, `rate_limited`, `unavailable`,
   *   or the client's own `closed`, `timeout`, `auth`
   * @param {string} message
   * @param {object} [frame] the server's error frame
   */
  constructor(code, message, frame) {
    super(message || code);
    this.name = 'ChorusError';
    this.code = code;
    if (frame) this.frame = frame;
  }
}

const ID_RE = /^(\d+)-(\d+)$/;

/** Orders two message ids ("<ms>-<seq>"); other shapes fall back to string order. */
export function compareIds(a, b) {
  if (a === b) return 0;
  const ma = ID_RE.exec(a);
  const mb = ID_RE.exec(b);
  if (ma && mb) {
    const ams = BigInt(ma[1]);
    const bms = BigInt(mb[1]);
    if (ams !== bms) return ams < bms ? -1 : 1;
    const aseq = BigInt(ma[2]);
    const bseq = BigInt(mb[2]);
    if (aseq !== bseq) return aseq < bseq ? -1 : 1;
    return 0;
  }
  return a < b ? -1 : 1;
}

function randomKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  let s = '';
  for (let i = 0; i < 32; i += 1) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

/** `http(s)://host[:port]` (path `/ws` added) or a `ws(s)://…/ws` URL, as a WebSocket URL. */
export function wsUrl(url) {
  const u = new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
  return u.toString();
}

/** The `exp` of a JWT in ms since the epoch, or null. */
function tokenExpiry(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json =
      typeof atob === 'function'
        ? atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
        : Buffer.from(b64, 'base64').toString('utf8');
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Remembers the ids of one room or DM pair: dedup plus the newest id (the `since`). */
class Seen {
  constructor() {
    this.ids = new Set();
    this.order = [];
    this.lastId = null;
  }

  has(id) {
    return this.ids.has(id);
  }

  /** Returns false when `id` was seen already. */
  add(id) {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    this.order.push(id);
    if (this.order.length > SEEN_KEEP) this.ids.delete(this.order.shift());
    if (this.lastId === null || compareIds(this.lastId, id) < 0) this.lastId = id;
    return true;
  }

  /**
   * Moves the newest id forward without marking `id` seen: a page of
   * history read by the caller is not missed, yet its live frames, if any
   * are still on their way, are delivered.
   */
  reach(id) {
    if (this.lastId === null || compareIds(this.lastId, id) < 0) this.lastId = id;
  }

  /**
   * Forgets a deleted message. `lastId` stays: it is a position in the
   * room's history, and the next rejoin's `since` still reads from there.
   */
  delete(id) {
    if (!this.ids.delete(id)) return;
    this.order.splice(this.order.indexOf(id), 1);
  }
}

export class ChorusClient {
  /**
   * @param {object} opts see index.d.ts (`ChorusClientOptions`)
   */
  constructor(opts = {}) {
    const urls = opts.urls || (opts.url ? [opts.url] : null);
    if (!urls || !urls.length) throw new TypeError('ChorusClient: `url` or `urls` is required');
    if (!opts.username && !opts.token && !opts.getToken) {
      throw new TypeError('ChorusClient: `username`, `token` or `getToken` is required');
    }
    this.urls = urls.map(wsUrl);
    this.username = opts.username || null;
    this.token = opts.token || null;
    this.getToken = opts.getToken || null;
    this.WebSocket = opts.WebSocket || globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('ChorusClient: no global WebSocket here; pass the `WebSocket` option (e.g. from the `ws` package)');
    }
    this.backoffStart = opts.backoffStartMs ?? BACKOFF_START_MS;
    this.backoffCap = opts.backoffCapMs ?? BACKOFF_CAP_MS;
    this.requestTimeout = opts.requestTimeoutMs ?? 30000;
    this.unavailableRetries = opts.unavailableRetries ?? 5;
    this.connectTimeout = opts.connectTimeoutMs ?? 10000;

    this.listeners = new Map();
    this.index = 0; // which of `urls` to use next
    this.ws = null;
    this.seq = 0; // connections welcomed so far
    this.attempt = 0; // failed attempts since the last welcome
    this.open = false; // welcomed on the current socket
    this.stopped = true;
    this.timer = null;
    this.heartbeat = null;
    this.refreshTimer = null;
    this.lastHeard = 0;
    this.usedToken = null; // the token the current/last socket was opened with
    this.user = null;
    this.node = null;
    this.session = null;
    this.state = 'idle';
    this.refSeq = 0;
    // Refs are echoed inside the frame every member of a room receives, so
    // make ours unlikely to match another client's.
    this.refPrefix = randomKey().replace(/-/g, '').slice(0, 8);

    /** room -> { seen: Seen, joinedOn: connection seq or 0 } for the rooms we want to be in */
    this.rooms = new Map();
    /** peer -> Seen, for DM pairs */
    this.dms = new Map();
    /** ref -> pending command */
    this.pending = new Map();
    this.connectWaiters = [];
  }

  // ---- events ----------------------------------------------------------

  /** Subscribes to an event; returns a function that unsubscribes. */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const set = this.listeners.get(event);
    if (set) set.delete(fn);
  }

  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  emit(event, ...args) {
    const set = this.listeners.get(event);
    if (!set || !set.size) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        if (event !== 'error') this.emit('error', err);
      }
    }
  }

  // ---- connection ------------------------------------------------------

  /** Opens the connection; resolves with the welcome frame once connected. Retries until then. */
  connect() {
    if (this.open) return Promise.resolve({ type: 'welcome', user: this.user, node: this.node, session: this.session });
    const p = new Promise((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this.stopped) {
      this.stopped = false;
      this.fatal = null;
      this.dial();
    }
    return p;
  }

  /** Closes the connection for good; pending commands reject with `closed`. */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    this.teardown(1000, 'bye');
    this.setState('closed', { code: 1000 });
    this.failAll(new ChorusError('closed', 'the client was closed'));
  }

  get connected() {
    return this.open;
  }

  /** Skips the backoff wait and tries the next node now (e.g. when the browser is back online). */
  retryNow() {
    if (this.stopped || this.ws || this.timer === null) return;
    clearTimeout(this.timer);
    this.dial();
  }

  setState(state, extra = {}) {
    this.state = state;
    this.emit('state', { state, ...extra });
  }

  async dial() {
    this.timer = null;
    if (this.stopped) return;
    const base = this.urls[this.index % this.urls.length];
    this.setState(this.seq ? 'reconnecting' : 'connecting', { url: base, attempt: this.attempt });
    let query;
    try {
      if (this.getToken && !this.token) await this.refreshToken();
      if (this.stopped) return;
      query = this.token ? `token=${encodeURIComponent(this.token)}` : `username=${encodeURIComponent(this.username)}`;
    } catch (err) {
      this.emit('error', err);
      this.scheduleReconnect(0);
      return;
    }
    this.usedToken = this.token;
    const url = base + (base.includes('?') ? '&' : '?') + query;
    let ws;
    try {
      ws = new this.WebSocket(url);
    } catch (err) {
      this.emit('error', err);
      this.scheduleReconnect(0);
      return;
    }
    this.ws = ws;
    this.open = false;
    this.lastHeard = Date.now();
    // An upgrade that hangs, or a socket that never says welcome: give up on it.
    clearTimeout(this.welcomeTimer);
    this.welcomeTimer = setTimeout(() => {
      if (ws !== this.ws || this.open) return;
      try {
        ws.close();
      } catch {
        /* closing */
      }
      this.onClose(1006, 'no welcome');
    }, this.connectTimeout);
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        const data = typeof ev.data === 'string' ? ev.data : new TextDecoder().decode(ev.data);
        frame = JSON.parse(data);
      } catch {
        return;
      }
      this.onFrame(frame, base);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // always followed by close
  }

  onClose(code, reason) {
    clearTimeout(this.welcomeTimer);
    this.ws = null;
    this.open = false;
    this.stopHeartbeat();
    for (const room of this.rooms.values()) room.joinedOn = 0;
    if (this.stopped) return;
    this.emit('disconnected', { code, reason });
    if (code === 4001) {
      // Removed by an administrator: never come back on our own.
      this.stopForGood(code, new ChorusError('removed', reason || 'removed by an administrator'));
      return;
    }
    if (code === 1008) {
      if (!this.getToken) {
        this.stopForGood(code, new ChorusError('auth', reason || 'authentication failed or expired'));
        return;
      }
      // A token newer than the one this socket used is already here: go now.
      if (this.token && this.token !== this.usedToken) {
        this.scheduleReconnect(code, 0);
        return;
      }
      this.token = null; // dial() asks getToken for a new one
    }
    this.scheduleReconnect(code);
  }

  stopForGood(code, err) {
    this.stopped = true;
    clearTimeout(this.refreshTimer);
    this.setState('closed', { code, reason: err.message });
    this.emit('error', err);
    this.failAll(err);
  }

  scheduleReconnect(code, forcedDelay) {
    if (this.stopped) return;
    if (this.urls.length > 1) this.index = (this.index + 1) % this.urls.length;
    let delay;
    if (forcedDelay !== undefined) delay = forcedDelay;
    else if ((code === 1001 || code === 1013) && this.attempt === 0) {
      delay = Math.random() * 100; // draining / too slow: go again at once
    } else {
      delay = Math.min(this.backoffCap, this.backoffStart * 2 ** this.attempt);
      delay = Math.min(this.backoffCap, delay * (0.75 + Math.random() * 0.5));
    }
    this.attempt += 1;
    this.setState(this.seq ? 'reconnecting' : 'connecting', {
      waiting: true,
      code,
      delay,
      at: Date.now() + delay,
      attempt: this.attempt,
      url: this.urls[this.index],
    });
    this.timer = setTimeout(() => this.dial(), delay);
  }

  async refreshToken() {
    const token = await this.getToken();
    if (!token || typeof token !== 'string') throw new ChorusError('auth', 'getToken returned no token');
    this.token = token;
    this.scheduleRefresh();
    return token;
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    if (!this.getToken || !this.token) return;
    const exp = tokenExpiry(this.token);
    if (!exp) return;
    const wait = Math.max(1000, exp - Date.now() - TOKEN_REFRESH_AHEAD_MS);
    this.refreshTimer = setTimeout(() => {
      if (this.stopped) return;
      // The server closes the current socket with 1008 at expiry; we then
      // reconnect at once with this fresh token.
      this.refreshToken().catch((err) => this.emit('error', err));
    }, wait);
    if (typeof this.refreshTimer === 'object' && this.refreshTimer && this.refreshTimer.unref) this.refreshTimer.unref();
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      if (!this.ws) return;
      const quiet = Date.now() - this.lastHeard;
      if (quiet > DEAD_AFTER_MS) {
        const dead = this.ws;
        try {
          dead.close();
        } catch {
          /* closing */
        }
        this.onClose(1006, 'no answer to pings');
      } else if (quiet > HEARTBEAT_EVERY_MS && this.open) {
        this.raw({ type: 'ping' });
      }
    }, HEARTBEAT_EVERY_MS / 2);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  teardown(code, reason) {
    clearTimeout(this.welcomeTimer);
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = null;
    this.open = false;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* ignore */
      }
    }
  }

  raw(obj) {
    if (!this.ws || !this.open) return false;
    try {
      this.ws.send(JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  }

  // ---- frames ----------------------------------------------------------

  onFrame(frame, base) {
    const pend = frame.ref !== undefined ? this.pending.get(frame.ref) : undefined;
    switch (frame.type) {
      case 'welcome':
        clearTimeout(this.welcomeTimer);
        this.open = true;
        this.attempt = 0;
        this.seq += 1;
        this.user = frame.user;
        this.node = frame.node;
        this.session = frame.session;
        this.startHeartbeat();
        this.setState('open', { url: base, node: frame.node, user: frame.user, session: frame.session });
        for (const w of this.connectWaiters.splice(0)) w.resolve(frame);
        this.resume();
        return;
      case 'joined':
        this.onJoined(frame);
        return;
      case 'left': {
        // Our leave, or a kick by an administrator: either way, not rejoined.
        this.rooms.delete(frame.room);
        this.settleByType('left', frame, (p) => p.room === frame.room);
        this.emit('left', frame);
        return;
      }
      case 'message':
        this.onMessage(frame, pend);
        return;
      case 'dm':
        this.onDm(frame, pend);
        return;
      case 'history':
        // Not marked as seen: a page may hold a message whose live frame is
        // still on its way, and that one must still be delivered.
        if (pend) this.settle(pend, frame.messages || []);
        return;
      case 'error':
        this.onError(frame, pend);
        return;
      case 'pong':
        return;
      case 'deleted':
        this.rooms.get(frame.room)?.seen.delete(frame.id);
        this.emit('deleted', frame);
        return;
      case 'presence':
      case 'typing':
        this.emit(frame.type, frame);
        return;
      default:
        this.emit('frame', frame);
    }
  }

  seenDm(peer) {
    if (!this.dms.has(peer)) this.dms.set(peer, new Seen());
    return this.dms.get(peer);
  }

  onJoined(frame) {
    let room = this.rooms.get(frame.room);
    if (!room) {
      room = { seen: new Seen(), joinedOn: 0, leaving: false };
      this.rooms.set(frame.room, room);
    }
    room.joinedOn = this.seq;
    room.leaving = false;
    const rejoin = room.rejoining === true;
    room.rejoining = false;
    // On a rejoin after a reconnect, the history holds what we missed:
    // deliver each message we have not seen, once, in order.
    const fresh = [];
    for (const m of frame.history || []) {
      if (room.seen.add(m.id)) fresh.push(m);
    }
    const waiter = [...this.pending.values()].find(
      (p) => (p.kind === 'join' || p.kind === 'switch') && p.target === frame.room,
    );
    if (waiter) this.settle(waiter, frame);
    this.emit('joined', frame, { rejoin, missed: rejoin ? fresh : [] });
    if (rejoin) {
      if (frame.truncated) this.emit('error', new ChorusError('truncated', `history of ${frame.room} was truncated: messages may be missing`, frame));
      // A message of ours among them settles nothing: its pending send goes
      // out again under the same idempotency key, and the server answers
      // with this same stored message.
      for (const m of fresh) {
        this.emit('message', m, { replayed: true });
      }
    }
    this.flush();
  }

  onMessage(frame, pend) {
    const room = this.rooms.get(frame.room);
    const seen = room ? room.seen : null;
    const isNew = seen ? seen.add(frame.id) : true;
    if (pend && pend.kind === 'message' && frame.user === this.user) this.settle(pend, frame);
    if (isNew) this.emit('message', frame, { replayed: false });
  }

  onDm(frame, pend) {
    const peer = frame.from === this.user ? frame.to : frame.from;
    const isNew = this.seenDm(peer).add(frame.id);
    if (pend && pend.kind === 'dm' && frame.from === this.user) this.settle(pend, frame);
    if (isNew) this.emit('dm', frame, { replayed: false });
  }

  onError(frame, pend) {
    const err = new ChorusError(frame.code, frame.message, frame);
    if (!pend) {
      this.emit('error', err);
      return;
    }
    if (frame.code === 'unavailable' && (pend.kind === 'message' || pend.kind === 'dm' || pend.kind === 'history') && pend.retries < this.unavailableRetries) {
      // Not sent: try again later under the same idempotency key.
      pend.retries += 1;
      pend.sentOn = -1;
      const delay = Math.min(this.backoffCap, this.backoffStart * 2 ** pend.retries) * (0.75 + Math.random() * 0.5);
      setTimeout(() => {
        if (this.pending.get(pend.ref) === pend) {
          pend.sentOn = 0;
          this.flush();
        }
      }, delay);
      return;
    }
    if (pend.kind === 'join' && !this.rooms.get(pend.target)?.joinedOn) {
      const room = this.rooms.get(pend.target);
      if (room && !room.everJoined) this.rooms.delete(pend.target);
    }
    this.settle(pend, null, err);
  }

  /** After a welcome: rejoin every room with `since`, then send what is pending. */
  resume() {
    const seq = this.seq;
    // A leave in flight when the old socket died is done: we do not rejoin.
    for (const p of [...this.pending.values()]) {
      if (p.kind === 'left') this.settle(p, { type: 'left', room: p.room });
    }
    for (const [name, room] of this.rooms) {
      if (room.leaving) continue;
      room.joinedOn = 0;
      const explicit = [...this.pending.values()].some((p) => p.kind === 'join' && p.target === name);
      if (explicit) continue; // flush() sends that join
      room.rejoining = room.everJoined === true;
      const frame = { type: 'join', room: name };
      if (room.seen.lastId) frame.since = room.seen.lastId;
      this.raw(frame);
    }
    if (seq === this.seq) this.flush();
    // DMs sent while we were away: fetch the newest page of each known pair.
    if (this.seq > 1) {
      for (const peer of this.dms.keys()) this.catchUpDm(peer);
    }
  }

  async catchUpDm(peer) {
    try {
      const seen = this.seenDm(peer);
      const messages = await this.request('history', { type: 'history', with: peer, limit: 100 });
      for (const m of messages) {
        if (seen.lastId !== null && compareIds(m.id, seen.lastId) <= 0 && !seen.has(m.id)) {
          // older than what we knew about: history, not missed
          seen.add(m.id);
          continue;
        }
        if (seen.add(m.id)) this.emit('dm', { type: 'dm', ...m }, { replayed: true });
      }
    } catch {
      /* best effort */
    }
  }

  /** Sends every pending command that is not yet sent on this connection and whose room is joined. */
  flush() {
    if (!this.open) return;
    for (const p of this.pending.values()) {
      if (p.sentOn === this.seq || p.sentOn < 0) continue;
      if (p.kind === 'message') {
        const room = this.rooms.get(p.frame.room);
        if (!room || room.joinedOn !== this.seq) {
          if (!room) this.settle(p, null, new ChorusError('not_member', `not in room ${p.frame.room}`));
          continue;
        }
      }
      if (this.raw(p.frame)) p.sentOn = this.seq;
    }
  }

  // ---- commands --------------------------------------------------------

  nextRef() {
    this.refSeq += 1;
    return `${this.refPrefix}.${this.refSeq}`;
  }

  /** Registers a command with a ref; it is sent now if possible, else on the next flush. */
  request(kind, frame, extra = {}) {
    if (this.stopped && this.state === 'closed') {
      return Promise.reject(new ChorusError('closed', 'the client is closed'));
    }
    const ref = this.nextRef();
    frame.ref = ref;
    return new Promise((resolve, reject) => {
      const p = { kind, ref, frame, resolve, reject, sentOn: 0, retries: 0, ...extra };
      p.timer = setTimeout(() => {
        if (this.pending.get(ref) === p) this.settle(p, null, new ChorusError('timeout', `no answer to ${kind} within ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this.pending.set(ref, p);
      this.flush();
    });
  }

  settle(p, value, err) {
    if (this.pending.get(p.ref) !== p) return;
    this.pending.delete(p.ref);
    clearTimeout(p.timer);
    // A send that timed out may still have been stored: retrying it with
    // this key (the `idempotencyKey` option) can never duplicate it.
    if (err && p.frame.idempotency_key && err.idempotencyKey === undefined) err.idempotencyKey = p.frame.idempotency_key;
    if (err) p.reject(err);
    else p.resolve(value);
  }

  settleByType(kind, value, match) {
    for (const p of [...this.pending.values()]) if (p.kind === kind && match(p)) this.settle(p, value);
  }

  failAll(err) {
    for (const p of [...this.pending.values()]) this.settle(p, null, err);
    for (const w of this.connectWaiters.splice(0)) w.reject(err);
  }

  /**
   * Joins a room. Resolves with the `joined` frame. Without `since`, the
   * server sends the last 50 messages; with it, every message after it.
   * The room is rejoined on every reconnect.
   */
  join(room, { since } = {}) {
    let r = this.rooms.get(room);
    if (!r) {
      r = { seen: new Seen(), joinedOn: 0, leaving: false };
      this.rooms.set(room, r);
    }
    r.leaving = false;
    const frame = { type: 'join', room };
    if (since) frame.since = since;
    return this.request('join', frame, { target: room }).then((joined) => {
      r.everJoined = true;
      return joined;
    });
  }

  /** Leaves a room; resolves with the `left` frame. */
  leave(room) {
    const r = this.rooms.get(room);
    if (r) r.leaving = true;
    return this.request('left', { type: 'leave', room }, { room }).then((left) => {
      this.rooms.delete(room);
      return left;
    });
  }

  /** Leaves `from` and joins `to`; resolves with the `joined` frame of `to`. On failure the client stays in `from`. */
  switch(from, to) {
    let r = this.rooms.get(to);
    const created = !r;
    if (!r) {
      r = { seen: new Seen(), joinedOn: 0, leaving: false };
      this.rooms.set(to, r);
    }
    const frame = { type: 'switch', from, to };
    return this.request('switch', frame, { target: to }).then(
      (joined) => {
        r.everJoined = true;
        this.rooms.delete(from);
        return joined;
      },
      (err) => {
        if (created && !r.everJoined) this.rooms.delete(to);
        throw err;
      },
    );
  }

  /**
   * Sends a message to a joined room. Resolves with the stored message, or
   * rejects with the server's error. A fresh idempotency key rides along, so
   * the retries after a reconnect or `unavailable` never duplicate it.
   */
  send(room, content, { attachments, idempotencyKey } = {}) {
    if (!this.rooms.has(room)) return Promise.reject(new ChorusError('not_member', `not in room ${room}: join it first`));
    const frame = { type: 'message', room, content, idempotency_key: idempotencyKey || randomKey() };
    if (attachments && attachments.length) frame.attachments = attachments;
    return this.request('message', frame);
  }

  /** Sends a direct message; resolves with the stored `dm` frame. */
  dm(to, content, { attachments, idempotencyKey } = {}) {
    const frame = { type: 'dm', to, content, idempotency_key: idempotencyKey || randomKey() };
    if (attachments && attachments.length) frame.attachments = attachments;
    this.seenDm(to);
    return this.request('dm', frame);
  }

  /** Tells the room we are typing; returns false when not connected (nothing is queued). */
  typing(room) {
    return this.raw({ type: 'typing', room });
  }

  /**
   * A page of history, oldest first: `history('r', {before, limit})` for a
   * room, `history({with: 'bob'}, …)` for a DM pair.
   */
  history(target, { before, limit } = {}) {
    const frame = { type: 'history' };
    if (typeof target === 'string') frame.room = target;
    else if (target && typeof target.with === 'string') frame.with = target.with;
    else if (target && typeof target.room === 'string') frame.room = target.room;
    else return Promise.reject(new TypeError('history: a room name or {with: user}'));
    if (before) frame.before = before;
    if (limit) frame.limit = limit;
    const page = this.request('history', frame);
    if (!frame.with) return page;
    // A DM pair read here is caught up after every reconnect from then on,
    // as if a DM of it had come live.
    const seen = this.seenDm(frame.with);
    return page.then((messages) => {
      for (const m of messages) seen.reach(m.id);
      return messages;
    });
  }

  /** Room names this client is in (and rejoins after a reconnect). */
  get joinedRooms() {
    return [...this.rooms.entries()].filter(([, r]) => !r.leaving).map(([n]) => n);
  }

  /** The newest message id seen in `room`, the `since` of the next rejoin. */
  lastId(room) {
    const r = this.rooms.get(room);
    return r ? r.seen.lastId : null;
  }
}

export default ChorusClient;
