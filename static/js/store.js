// What the page shows of each conversation (a room or a DM): its messages in
// id order, its own sends not yet confirmed, unread count, members, typing.
// Which messages are new is the client package's to decide (chorus-client.js
// delivers each once); this keeps the list in order, since pages of older
// history arrive after newer messages.

import { compareIds } from './chorus-client.js';

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
    this.pending = new Map(); // idempotency key -> own message not confirmed yet (pending or failed), in send order
    this.unread = 0;
    this.members = new Set();
    this.typing = new Map(); // user -> expiry (ms since epoch)
    this.hasMore = true; // older history may exist on the server
    this.loadingOlder = false;
    this.loaded = false; // first page of history received
    this.joined = false; // rooms: joined on the current connection
    this.notice = ''; // e.g. history truncated after a long disconnect
  }

  get oldestId() {
    return this.messages.length ? this.messages[0].id : null;
  }

  /** Adds a confirmed message in id order. Returns false when it was already there, or deleted. */
  add(msg) {
    if (this.ids.has(msg.id) || this.deleted.has(msg.id)) return false;
    this.ids.add(msg.id);
    const list = this.messages;
    if (!list.length || compareIds(list[list.length - 1].id, msg.id) < 0) {
      list.push(msg);
    } else {
      list.splice(this.indexAfter(msg.id), 0, msg);
    }
    return true;
  }

  /** Adds many; returns the ones that were new. */
  addAll(msgs) {
    return msgs.filter((m) => this.add(m));
  }

  /** Removes a deleted message. Returns false when it was not shown. */
  remove(id) {
    this.deleted.add(id);
    if (!this.ids.delete(id)) return false;
    this.messages = this.messages.filter((m) => m.id !== id);
    return true;
  }

  /** The index of the first message whose id is not below `id` (binary search). */
  indexAfter(id) {
    const list = this.messages;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareIds(list[mid].id, id) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Queues an own message at the end (a retry moves it there too). */
  addPending(msg) {
    this.pending.delete(msg.key);
    this.pending.set(msg.key, msg);
  }

  /** Own messages not confirmed yet (pending or failed), in send order. */
  get pendingList() {
    return [...this.pending.values()];
  }
}

/** A room message or a DM, from a frame or a page of history, as the page shows it. */
export function normalize(frame) {
  return {
    id: frame.id,
    user: frame.from !== undefined ? frame.from : frame.user,
    content: frame.content,
    attachments: Array.isArray(frame.attachments) ? frame.attachments : [],
    ts: frame.ts,
    state: 'sent',
  };
}
