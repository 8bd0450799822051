// Conversations (rooms and DMs) and their messages: confirmed messages are
// kept sorted by id and deduplicated; own messages wait as "pending" under
// their `ref` until the server echoes them back.

const ID_RE = /^(\d+)-(\d+)$/;

/** Orders two message ids ("<ms>-<seq>"); unknown shapes fall back to string order. */
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

export const roomKey = (name) => `room:${name}`;
export const dmKey = (peer) => `dm:${peer}`;

export class Conversation {
  constructor(kind, name) {
    this.kind = kind; // "room" | "dm"
    this.name = name; // room name, or the peer's user name
    this.key = kind === 'room' ? roomKey(name) : dmKey(name);
    this.messages = []; // confirmed, sorted by id
    this.ids = new Set();
    // Deleted by an administrator: a history page read before the delete
    // and answered after it must not bring them back.
    this.deleted = new Set();
    this.pending = new Map(); // ref -> pending/failed own message, in send order
    this.unread = 0;
    this.members = new Set();
    this.typing = new Map(); // user -> expiry (ms since epoch)
    this.hasMore = true; // older history may exist on the server
    this.loadingOlder = false;
    this.loaded = false; // first page of history received
    this.joined = false; // rooms: joined on the current connection
    this.notice = ''; // e.g. history truncated after a long disconnect
  }

  /** The newest confirmed id, the `since` for a rejoin. */
  get lastId() {
    return this.messages.length ? this.messages[this.messages.length - 1].id : null;
  }

  get oldestId() {
    return this.messages.length ? this.messages[0].id : null;
  }

  /**
   * Adds a confirmed message. Returns false when it was already there.
   * A pending message of ours with the same ref is replaced by it.
   */
  add(msg, me) {
    if (msg.ref && msg.user === me && this.pending.has(msg.ref)) {
      this.pending.delete(msg.ref);
    }
    if (this.ids.has(msg.id) || this.deleted.has(msg.id)) return false;
    this.ids.add(msg.id);
    const list = this.messages;
    if (!list.length || compareIds(list[list.length - 1].id, msg.id) < 0) {
      list.push(msg);
    } else {
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (compareIds(list[mid].id, msg.id) < 0) lo = mid + 1;
        else hi = mid;
      }
      list.splice(lo, 0, msg);
    }
    return true;
  }

  /** Adds many; returns how many were new. */
  addAll(msgs, me) {
    let added = 0;
    for (const m of msgs) if (this.add(m, me)) added += 1;
    return added;
  }

  /** Drops a deleted message; returns false when it was not shown. */
  remove(id) {
    this.deleted.add(id);
    if (!this.ids.delete(id)) return false;
    this.messages = this.messages.filter((m) => m.id !== id);
    return true;
  }

  addPending(msg) {
    this.pending.set(msg.ref, msg);
  }

  /** Own messages not confirmed yet (pending or failed), in send order. */
  get pendingList() {
    return [...this.pending.values()];
  }
}

/** A room `message` frame or a `dm` frame, as the UI stores it. */
export function normalize(frame) {
  return {
    id: frame.id,
    user: frame.type === 'dm' || frame.from !== undefined ? frame.from : frame.user,
    content: frame.content,
    attachments: Array.isArray(frame.attachments) ? frame.attachments : [],
    ts: frame.ts,
    ref: frame.ref || null,
    state: 'sent',
  };
}
