// The chorus web client: plain ES modules, no build step. The connection,
// reconnects, rejoins with `since`, delivery once by id and sends with
// idempotency keys are the client package's (`/js/chorus-client.js`, served
// from clients/js/src/index.js); this file is the page around it: sign-in,
// conversations as shown, rendering, uploads.
//
// Query parameters (all optional):
//   ws=ws://host:port/ws        WebSocket endpoint (default: this page's host)
//   nodes=url1,url2             endpoints to rotate through on reconnect
//   name=alice                  sign in with this name at once (anonymous mode)
//   token=JWT                   sign in with this token at once (token mode)
//   room=dev,ops                join these rooms and open the first

import { ChorusClient, ChorusError, wsUrl } from './js/chorus-client.js';
import { Api, ApiError } from './js/api.js';
import { Conversation, normalize, roomKey, dmKey } from './js/store.js';
import { $, el, avatar, setAvatar, formatTime, formatDay, fullDate, utf8Length } from './js/dom.js';
import { linkify } from './js/links.js';
import { UploadQueue, attachmentNodes } from './js/uploads.js';

const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const PAGE = 50;
const MAX_CONTENT_BYTES = 4096;
const TYPING_SEND_EVERY_MS = 2000;
const TYPING_SHOW_MS = 4000;
const POLL_MS = 10000;
const GROUP_GAP_MS = 5 * 60 * 1000;
// The server remembers an idempotency key 10 minutes. A message waiting for
// a connection waits this long, then fails: sent again later it could be
// stored twice, so that is left to the user.
const IDEMPOTENCY_WINDOW_MS = 9 * 60 * 1000;

const params = new URLSearchParams(location.search);
const api = new Api();
/** Files being uploaded for the next message (bound in bindComposer). */
let uploads = null;

const S = {
  mode: 'name', // 'name' | 'token'
  me: null,
  token: null,
  client: null, // the ChorusClient of the current sign-in
  convs: new Map(),
  roomOrder: [],
  dmOrder: [],
  active: null,
  directory: [],
  online: [],
  restored: false,
  lastTypingSent: 0,
  conn: { state: 'idle' },
  node: null,
  events: [], // connection state history, for diagnostics
};

// ---------------------------------------------------------------- endpoints

/** A `ws` or `nodes` entry (relative to this page, http or ws) as a WebSocket URL, or null. */
function toWsUrl(raw) {
  const s = raw.trim();
  if (!s) return null;
  try {
    const url = wsUrl(new URL(s, location.href).toString());
    return /^wss?:/.test(url) ? url : null;
  } catch {
    return null;
  }
}

function endpoints() {
  const list = (params.get('nodes') || '').split(',').map(toWsUrl).filter(Boolean);
  if (list.length) return list;
  const one = toWsUrl(params.get('ws') || '');
  if (one) return [one];
  return [wsUrl(location.origin)];
}

/** Starts the client of a new sign-in; the one before it, if any, is closed. */
function startClient() {
  const old = S.client;
  S.client = null;
  if (old) old.close();
  const client = new ChorusClient({
    urls: endpoints(),
    ...(S.mode === 'token' ? { token: S.token } : { username: S.me }),
    requestTimeoutMs: IDEMPOTENCY_WINDOW_MS,
  });
  S.client = client;
  // A closed client's last events (its `closed` state, its rejected sends)
  // are not this sign-in's. A fault of the page's own is reported as
  // uncaught rather than handed to the client, which would emit it as one
  // of its `error` events.
  const on = (event, fn) =>
    client.on(event, (...args) => {
      if (client !== S.client) return;
      try {
        fn(...args);
      } catch (err) {
        reportError(err);
      }
    });
  on('state', onConnState);
  on('joined', onJoined);
  on('message', onMessage);
  on('dm', onDm);
  on('presence', onPresence);
  on('typing', onTyping);
  on('deleted', onDeleted);
  on('left', onLeft);
  on('error', onClientError);
  if (S.restored) joinAll();
  // A refusal for good (1008, 4001) arrives as the `closed` state.
  client.connect().catch(() => {});
}

/** Joins every room shown and reads the open DM conversations: once per client, which rejoins by itself. */
function joinAll() {
  for (const name of S.roomOrder) joinOnServer(S.convs.get(roomKey(name)));
  for (const peer of S.dmOrder) {
    const conv = S.convs.get(dmKey(peer));
    if (conv.loaded || conv.key === S.active) loadDm(conv);
  }
}

// ---------------------------------------------------------------- conversations

const activeConv = () => (S.active ? S.convs.get(S.active) : null);

function ensureRoom(name) {
  const key = roomKey(name);
  let conv = S.convs.get(key);
  if (!conv) {
    conv = new Conversation('room', name);
    S.convs.set(key, conv);
  }
  if (!S.roomOrder.includes(name)) S.roomOrder.push(name);
  return conv;
}

function ensureDm(peer) {
  const key = dmKey(peer);
  let conv = S.convs.get(key);
  if (!conv) {
    conv = new Conversation('dm', peer);
    S.convs.set(key, conv);
  }
  if (!S.dmOrder.includes(peer)) S.dmOrder.push(peer);
  return conv;
}

function saveLayout() {
  if (!S.me) return;
  try {
    localStorage.setItem(
      `chorus:layout:${S.me}`,
      JSON.stringify({ rooms: S.roomOrder, dms: S.dmOrder, active: S.active }),
    );
  } catch {
    /* storage may be unavailable */
  }
}

function restoreLayout() {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(`chorus:layout:${S.me}`) || 'null');
  } catch {
    saved = null;
  }
  const rooms = saved && Array.isArray(saved.rooms) ? saved.rooms.filter((r) => ROOM_RE.test(r)) : [];
  const dms = saved && Array.isArray(saved.dms) ? saved.dms.filter((u) => NAME_RE.test(u)) : [];
  // ?room=a,b joins every listed room and opens the first.
  const wanted = (params.get('room') || '').split(',').map((r) => r.trim()).filter((r) => ROOM_RE.test(r));
  if (!rooms.length && !wanted.length) rooms.push('lobby');
  rooms.forEach(ensureRoom);
  dms.forEach(ensureDm);
  if (wanted.length) {
    wanted.forEach(ensureRoom);
    S.active = roomKey(wanted[0]);
  } else if (saved && saved.active && S.convs.has(saved.active)) {
    S.active = saved.active;
  } else {
    S.active = roomKey(rooms[0]);
  }
}

function openConversation(key) {
  const conv = S.convs.get(key);
  if (!conv) return;
  S.active = key;
  conv.unread = 0;
  if (conv.kind === 'dm' && !conv.loaded && S.client) loadDm(conv);
  closeOverlays();
  saveLayout();
  render({ all: true, scroll: 'switch' });
  if (!matchMedia('(pointer: coarse)').matches) $('#composer-input').focus();
}

function joinRoom(name) {
  if (!ROOM_RE.test(name)) {
    toast('Room names are 1–64 letters, digits, _ - or .');
    return;
  }
  const conv = ensureRoom(name);
  if (!S.client.joinedRooms.includes(name)) joinOnServer(conv);
  openConversation(conv.key);
  refreshDirectorySoon();
}

function leaveConversation() {
  const conv = activeConv();
  if (!conv) return;
  if (conv.kind === 'room') {
    // The room is gone from the page whatever the answer: the client rejoins
    // no room it is leaving, so a leave cut off by a dropped connection is done too.
    S.client.leave(conv.name).catch(() => {});
  }
  dropConversation(conv);
}

/** Takes a conversation off the page, opening the next one if it was open. */
function dropConversation(conv) {
  if (conv.kind === 'room') {
    S.roomOrder = S.roomOrder.filter((r) => r !== conv.name);
    refreshDirectorySoon();
  } else {
    S.dmOrder = S.dmOrder.filter((u) => u !== conv.name);
  }
  S.convs.delete(conv.key);
  const wasOpen = S.active === conv.key;
  if (wasOpen) S.active = null;
  const next = S.roomOrder[0] ? roomKey(S.roomOrder[0]) : S.dmOrder[0] ? dmKey(S.dmOrder[0]) : null;
  if (wasOpen && next) openConversation(next);
  else render({ all: true, scroll: 'switch' });
  saveLayout();
}

/** A `left` the page did not ask for: an administrator removed us from the room. */
function onLeft(f) {
  const conv = S.convs.get(roomKey(f.room));
  // Our own leave took the room off the page already.
  if (!conv) return;
  dropConversation(conv);
  toast(`An administrator removed you from #${f.room}. You may join it again.`, 'kicked');
}

function joinOnServer(conv) {
  S.client.join(conv.name).catch((err) => {
    if (isSessionEnd(err)) return;
    toast(`Could not join #${conv.name}: ${errorDetail(err)}`, err.code);
    if (err.code === 'invalid_room' || err.code === 'bad_request') {
      S.roomOrder = S.roomOrder.filter((r) => r !== conv.name);
      S.convs.delete(conv.key);
      if (S.active === conv.key) S.active = S.roomOrder[0] ? roomKey(S.roomOrder[0]) : null;
      saveLayout();
      render({ all: true, scroll: 'switch' });
    }
  });
}

/** Reads the newest page of a DM conversation (the client catches it up after every reconnect from then on). */
function loadDm(conv) {
  S.client.history({ with: conv.name }, { limit: PAGE }).then((page) => {
    const fresh = conv.addAll(page.map(normalize));
    if (!conv.loaded) {
      conv.loaded = true;
      conv.hasMore = page.length >= PAGE;
    } else {
      countUnread(conv, fresh);
    }
    render({ all: true, scroll: conv.key === S.active ? 'auto' : 'none' });
  }, (err) => historyFailed(conv, err));
}

function loadOlder(conv) {
  if (!conv || !conv.loaded || !conv.hasMore || conv.loadingOlder || !S.client || !S.client.connected) return;
  if (!conv.oldestId) {
    conv.hasMore = false;
    render({ messages: true });
    return;
  }
  conv.loadingOlder = true;
  const target = conv.kind === 'room' ? conv.name : { with: conv.name };
  S.client.history(target, { before: conv.oldestId, limit: PAGE }).then((page) => {
    conv.loadingOlder = false;
    conv.addAll(page.map(normalize));
    if (page.length < PAGE) conv.hasMore = false;
    render({ messages: conv.key === S.active, scroll: 'prepend' });
  }, (err) => historyFailed(conv, err));
  render({ messages: true, scroll: 'prepend' });
}

function historyFailed(conv, err) {
  conv.loadingOlder = false;
  if (isSessionEnd(err)) return;
  toast(`Could not load messages: ${errorDetail(err)}`, err.code);
  render({ messages: true });
}

// ---------------------------------------------------------------- sending

/**
 * A key for one outgoing message, kept with it and reused by every retry, so
 * the server stores it once however often it goes out. randomUUID needs a
 * secure context (https or localhost); getRandomValues works on plain http.
 */
function newIdempotencyKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Hands a message to the client, which sends it once joined and connected,
 * and again after a reconnect under the same key; shown as pending until
 * the stored message comes back, failed with the server's reason if refused.
 */
function sendPending(conv, msg) {
  msg.state = 'pending';
  msg.error = '';
  const opts = { attachments: msg.uploads, idempotencyKey: msg.key };
  const sent = conv.kind === 'room' ? S.client.send(conv.name, msg.content, opts) : S.client.dm(conv.name, msg.content, opts);
  sent.then(
    (stored) => {
      conv.pending.delete(msg.key);
      deliver(conv, normalize(stored));
      render({ messages: conv.key === S.active });
    },
    (err) => {
      if (conv.pending.get(msg.key) !== msg) return;
      msg.state = 'failed';
      msg.error = (err.frame && err.frame.message) || FRIENDLY[err.code] || err.message;
      toast(errorText(err), err.code);
      render({ messages: conv.key === S.active });
    },
  );
}

function sendMessage(text, attachments = []) {
  const conv = activeConv();
  if (!conv || !S.me || !S.client) return false;
  if (utf8Length(text) > MAX_CONTENT_BYTES) {
    toast(`That message is too long (${utf8Length(text)} of ${MAX_CONTENT_BYTES} bytes). Shorten it and try again.`);
    return false;
  }
  const msg = {
    id: null,
    key: newIdempotencyKey(),
    user: S.me,
    content: text,
    uploads: attachments,
    ts: new Date().toISOString(),
    state: 'pending',
  };
  conv.addPending(msg);
  sendPending(conv, msg);
  render({ messages: true, scroll: 'bottom' });
  return true;
}

/** Sends a failed message again under its own idempotency key: if the first try was stored after all, the server answers with that one instead of storing it twice. */
function retryMessage(conv, msg) {
  msg.ts = new Date().toISOString();
  conv.addPending(msg);
  sendPending(conv, msg);
  render({ messages: true, scroll: 'bottom' });
}

function discardMessage(conv, msg) {
  conv.pending.delete(msg.key);
  render({ messages: true });
}

function sendTyping() {
  const conv = activeConv();
  if (!conv || conv.kind !== 'room' || !conv.joined) return;
  const now = Date.now();
  if (now - S.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  if (S.client.typing(conv.name)) S.lastTypingSent = now;
}

// ---------------------------------------------------------------- events of the client

function onWelcome(s) {
  S.me = s.user;
  // The uploader an anonymous upload names (with a token the server ignores it).
  api.user = s.user;
  S.node = s.node;
  if (!S.restored) {
    S.restored = true;
    restoreLayout();
    joinAll();
  }
  saveLayout();
  refreshDirectory();
  refreshUsers();
  render({ all: true, scroll: 'auto' });
}

function countUnread(conv, msgs) {
  if (conv.key === S.active && !document.hidden) return;
  conv.unread += msgs.filter((m) => m.user !== S.me).length;
}

function onJoined(f, { rejoin }) {
  const conv = S.convs.get(roomKey(f.room));
  if (!conv) return; // left while the join was on its way: the client's leave follows it
  conv.joined = true;
  conv.members = new Set(f.members || []);
  // What a rejoin brings the client delivers as `message` events: shown and counted there.
  if (!rejoin) {
    const history = (f.history || []).map(normalize);
    conv.addAll(history);
    if (!conv.loaded) {
      conv.loaded = true;
      conv.hasMore = history.length >= PAGE;
    }
  }
  if (f.truncated) {
    conv.notice = 'You were away for a while: some messages sent meanwhile are no longer in the history.';
  }
  render({ all: true, scroll: conv.key === S.active ? 'auto' : 'none' });
}

function deliver(conv, msg) {
  if (!conv.add(msg)) return; // already shown
  conv.typing.delete(msg.user);
  if (msg.user !== S.me) {
    countUnread(conv, [msg]);
    if (conv.key === S.active) announce(`${msg.user}: ${msg.content}`);
  }
  render({ sidebar: true, messages: conv.key === S.active, typing: true, scroll: 'auto' });
}

function onMessage(f) {
  const conv = S.convs.get(roomKey(f.room));
  if (!conv) return;
  deliver(conv, normalize(f));
}

/** An administrator deleted a room message: it is no longer shown. */
function onDeleted(f) {
  const conv = S.convs.get(roomKey(f.room));
  if (conv?.remove(f.id)) render({ messages: conv.key === S.active });
}

function onDm(f) {
  const peer = f.from === S.me ? f.to : f.from;
  const isNew = !S.dmOrder.includes(peer);
  const conv = ensureDm(peer);
  if (isNew) saveLayout();
  deliver(conv, normalize(f));
}

function onPresence(f) {
  const conv = S.convs.get(roomKey(f.room));
  if (conv) {
    if (f.event === 'join') conv.members.add(f.user);
    else {
      conv.members.delete(f.user);
      conv.typing.delete(f.user);
    }
  }
  refreshUsersSoon();
  render({ sidebar: true, members: true, header: true, typing: true });
}

function onTyping(f) {
  const conv = S.convs.get(roomKey(f.room));
  if (!conv || f.user === S.me) return;
  conv.typing.set(f.user, Date.now() + TYPING_SHOW_MS);
  render({ typing: true });
  setTimeout(() => render({ typing: true }), TYPING_SHOW_MS + 50);
}


const FRIENDLY = {
  rate_limited: 'You are sending messages too fast. Wait a moment, then try again.',
  too_large: 'That message is too long (the limit is 4096 bytes).',
  unavailable: 'The server could not take that right now. Nothing was sent; try again in a moment.',
  not_member: 'You are not in that room any more.',
  invalid_room: 'Room names are 1–64 letters, digits, _ - or .',
  invalid_user: 'User names are 1–32 letters, digits, _ - or .',
  bad_request: 'The server did not understand a request.',
  timeout: 'The server did not confirm this in time.',
  closed: 'The connection was closed before the server confirmed this.',
};

/** Errors that end with the connection itself: its state says so, not a toast. */
function isSessionEnd(err) {
  return err instanceof ChorusError && (err.code === 'closed' || err.code === 'auth' || err.code === 'removed');
}

function errorText(err) {
  const friendly = FRIENDLY[err.code] || 'Something went wrong.';
  const detail = err.frame && err.frame.message;
  return err.code === 'bad_request' && detail ? `${friendly} (${detail})` : friendly;
}

/** The server's own words when it gave some, else ours. */
function errorDetail(err) {
  return (err.frame && err.frame.message) || FRIENDLY[err.code] || 'Something went wrong.';
}

/** Server errors that answer no command of ours, and the client's own. */
function onClientError(err) {
  if (!(err instanceof ChorusError)) {
    // The browser refused to open a socket (a bad `ws` URL, mixed content):
    // the connection state shows the retries; the cause is for the console.
    console.warn('chorus: could not open a connection:', err);
    return;
  }
  // A truncated rejoin shows as the room's notice (onJoined).
  if (isSessionEnd(err) || err.code === 'truncated') return;
  toast(errorText(err), err.code);
}

// ---------------------------------------------------------------- connection state

let countdown = null;

function onConnState(s) {
  S.conn = s;
  S.events.push({ state: s.state, waiting: !!s.waiting, node: s.node || null, t: Date.now() });
  if (S.events.length > 200) S.events.shift();
  if (s.state === 'open') onWelcome(s);
  else for (const conv of S.convs.values()) conv.joined = false;
  if (s.state === 'closed' && (s.code === 1008 || s.code === 4001)) onSessionExpired(s.code);
  clearInterval(countdown);
  if (s.waiting) countdown = setInterval(renderConn, 500);
  render({ header: true, sidebar: true, messages: true });
}

const CLOSED_BANNER = { 1008: 'Your session expired.', 4001: 'Removed by an administrator.' };

function onSessionExpired(code) {
  S.token = null;
  api.token = null;
  showLogin(
    code === 4001
      ? 'An administrator removed this connection. Sign in again to continue.'
      : 'Your session has ended. Paste a new token to continue.',
  );
}

function renderConn() {
  const s = S.conn;
  const status = $('#conn-status');
  const banner = $('#conn-banner');
  status.dataset.state = s.state;
  let text;
  let bannerText = '';
  if (s.state === 'open') {
    text = `Connected · node ${s.node}`;
  } else if (s.state === 'reconnecting' || s.state === 'connecting') {
    const secs = s.waiting ? Math.max(0, Math.ceil((s.at - Date.now()) / 1000)) : 0;
    const verb = s.state === 'reconnecting' ? 'Reconnecting' : 'Connecting';
    text = s.waiting && secs > 0 ? `${verb} in ${secs}s…` : `${verb}…`;
    if (s.state === 'reconnecting') {
      bannerText = `Connection lost. ${text}`;
    } else if (s.attempt >= 2) {
      bannerText = `Cannot reach the chat server. ${text}`;
    }
  } else if (s.state === 'closed') {
    text = 'Disconnected';
    bannerText = CLOSED_BANNER[s.code] || 'Disconnected.';
  } else {
    text = 'Offline';
  }
  status.textContent = text;
  status.title = s.url ? `Endpoint: ${s.url}` : '';
  banner.dataset.state = s.state;
  if (bannerText) {
    const retry = el('button', { class: 'btn btn-small', type: 'button' }, 'Retry now');
    retry.addEventListener('click', () => S.client.retryNow());
    banner.replaceChildren(el('span', { class: 'spinner', 'aria-hidden': 'true' }), el('span', {}, bannerText));
    if (s.waiting && s.state !== 'closed') banner.append(retry);
    banner.hidden = false;
  } else {
    banner.hidden = true;
    banner.replaceChildren();
  }
  const canSend = !!activeConv();
  $('#composer-input').disabled = !canSend;
  $('#send-btn').disabled = !canSend;
  $('#attach-btn').disabled = !canSend;
}

// ---------------------------------------------------------------- directory & people

let dirTimer = null;
let usersTimer = null;

async function refreshDirectory() {
  try {
    const rooms = await api.rooms();
    if (Array.isArray(rooms)) S.directory = rooms;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401 && S.mode === 'token') onSessionExpired();
  }
  render({ sidebar: true, header: true });
}

async function refreshUsers() {
  try {
    const users = await api.users();
    if (Array.isArray(users)) S.online = users;
  } catch {
    /* keep the last list; presence still updates members */
  }
  render({ sidebar: true, members: true, header: true });
}

function refreshDirectorySoon() {
  clearTimeout(dirTimer);
  dirTimer = setTimeout(refreshDirectory, 300);
}

function refreshUsersSoon() {
  clearTimeout(usersTimer);
  usersTimer = setTimeout(refreshUsers, 500);
}

function isOnline(user) {
  if (user === S.me) return S.conn.state === 'open';
  if (S.online.includes(user)) return true;
  for (const conv of S.convs.values()) if (conv.kind === 'room' && conv.members.has(user)) return true;
  return false;
}

// ---------------------------------------------------------------- rendering

const pendingRender = { flags: {}, scroll: 'none', queued: false };
const SCROLL_RANK = { none: 0, auto: 1, bottom: 2, prepend: 3, switch: 4 };

function render({ all, sidebar, header, messages, members, typing, scroll } = {}) {
  const p = pendingRender;
  if (all) Object.assign(p.flags, { sidebar: 1, header: 1, messages: 1, members: 1, typing: 1 });
  if (sidebar) p.flags.sidebar = 1;
  if (header) p.flags.header = 1;
  if (messages) p.flags.messages = 1;
  if (members) p.flags.members = 1;
  if (typing) p.flags.typing = 1;
  if (scroll && SCROLL_RANK[scroll] > SCROLL_RANK[p.scroll]) p.scroll = scroll;
  if (!p.queued) {
    p.queued = true;
    queueMicrotask(flushRender);
  }
}

function flushRender() {
  const { flags, scroll } = pendingRender;
  pendingRender.flags = {};
  pendingRender.scroll = 'none';
  pendingRender.queued = false;
  if (flags.sidebar) renderSidebar();
  if (flags.header) renderHeader();
  if (flags.messages) renderMessages(scroll);
  if (flags.members) renderMembers();
  if (flags.typing) renderTyping();
  renderConn();
  renderTitle();
}

function renderTitle() {
  let total = 0;
  for (const conv of S.convs.values()) total += conv.unread;
  const conv = activeConv();
  const where = conv ? (conv.kind === 'room' ? `#${conv.name}` : conv.name) : '';
  document.title = `${total ? `(${total}) ` : ''}${where ? `${where} · ` : ''}chorus`;
  const badge = $('#menu-badge');
  badge.hidden = !total;
}

function badge(n, label) {
  if (!n) return null;
  return el('span', { class: 'badge', 'aria-label': `${n} unread ${label}` }, n > 99 ? '99+' : String(n));
}

function convButton(conv, content, label) {
  const current = conv.key === S.active;
  const btn = el(
    'button',
    {
      type: 'button',
      class: `conv-item${current ? ' active' : ''}${conv.unread ? ' has-unread' : ''}`,
      'aria-current': current ? 'page' : null,
      'aria-label': label,
      dataset: { key: conv.key },
    },
    ...content,
  );
  btn.addEventListener('click', () => openConversation(conv.key));
  return el('li', {}, btn);
}

function renderSidebar() {
  setAvatar($('#me-avatar'), S.me || '?');
  $('#me-name').textContent = S.me || '';

  const counts = new Map(S.directory.map((r) => [r.name, r.members]));
  const rooms = S.roomOrder.map((name) => {
    const conv = S.convs.get(roomKey(name));
    const n = conv.joined ? conv.members.size : counts.get(name) ?? 0;
    const unreadLabel = conv.unread ? `, ${conv.unread} unread` : '';
    return convButton(
      conv,
      [
        el('span', { class: 'hash', 'aria-hidden': 'true' }, '#'),
        el('span', { class: 'conv-name' }, name),
        el('span', { class: 'count', title: `${n} online` }, String(n)),
        badge(conv.unread, 'messages'),
      ],
      `Room ${name}, ${n} online${unreadLabel}`,
    );
  });
  $('#room-list').replaceChildren(
    ...(rooms.length ? rooms : [el('li', { class: 'side-empty muted' }, 'Not in any room yet')]),
  );

  const others = S.directory.filter((r) => !S.roomOrder.includes(r.name));
  $('#discover-list').replaceChildren(
    ...(others.length
      ? others.map((r) => {
          const btn = el(
            'button',
            {
              type: 'button',
              class: 'conv-item discover',
              'aria-label': `Join room ${r.name}, ${r.members} online`,
              dataset: { room: r.name },
            },
            el('span', { class: 'hash', 'aria-hidden': 'true' }, '#'),
            el('span', { class: 'conv-name' }, r.name),
            el('span', { class: 'count' }, String(r.members)),
            el('span', { class: 'join-hint', 'aria-hidden': 'true' }, 'Join'),
          );
          btn.addEventListener('click', () => joinRoom(r.name));
          return el('li', {}, btn);
        })
      : [el('li', { class: 'side-empty muted' }, 'No other rooms')]),
  );

  const dms = S.dmOrder.map((peer) => {
    const conv = S.convs.get(dmKey(peer));
    const online = isOnline(peer);
    return convButton(
      conv,
      [
        el('span', { class: 'avatar-wrap' }, avatar(peer, 'avatar-sm'), el('span', { class: `dot${online ? ' on' : ''}` })),
        el('span', { class: 'conv-name' }, peer),
        badge(conv.unread, 'messages'),
      ],
      `Direct messages with ${peer}, ${online ? 'online' : 'offline'}${conv.unread ? `, ${conv.unread} unread` : ''}`,
    );
  });
  $('#dm-list').replaceChildren(...(dms.length ? dms : [el('li', { class: 'side-empty muted' }, 'No conversations yet')]));

  // Online users from /api/users, plus anyone seen in a joined room since the last poll.
  const seen = new Set(S.online);
  for (const conv of S.convs.values()) if (conv.kind === 'room') conv.members.forEach((u) => seen.add(u));
  const people = [...seen].filter((u) => u !== S.me).sort((a, b) => a.localeCompare(b));
  $('#people-list').replaceChildren(
    ...(people.length
      ? people.map((u) => {
          const btn = el(
            'button',
            { type: 'button', class: 'conv-item person', 'aria-label': `Message ${u}`, dataset: { user: u } },
            el('span', { class: 'avatar-wrap' }, avatar(u, 'avatar-sm'), el('span', { class: 'dot on' })),
            el('span', { class: 'conv-name' }, u),
          );
          btn.addEventListener('click', () => startDm(u));
          return el('li', {}, btn);
        })
      : [el('li', { class: 'side-empty muted' }, 'Nobody else is online')]),
  );
}

function startDm(user) {
  if (user === S.me) return;
  const conv = ensureDm(user);
  saveLayout();
  openConversation(conv.key);
}

function renderHeader() {
  const conv = activeConv();
  const title = $('#chat-title');
  const sub = $('#chat-subtitle');
  const leave = $('#leave-btn');
  const label = $('#composer-label');
  const input = $('#composer-input');
  if (!conv) {
    title.textContent = 'chorus';
    sub.textContent = '';
    leave.hidden = true;
    label.textContent = 'Message';
    input.placeholder = 'Open a conversation to write';
    $('#messages').setAttribute('aria-label', 'Messages');
    return;
  }
  leave.hidden = false;
  if (conv.kind === 'room') {
    title.replaceChildren(el('span', { class: 'hash', 'aria-hidden': 'true' }, '#'), conv.name);
    const n = conv.members.size;
    sub.textContent = conv.joined ? `${n} ${n === 1 ? 'member' : 'members'} online` : 'Joining…';
    leave.textContent = 'Leave';
    leave.setAttribute('aria-label', `Leave room ${conv.name}`);
    label.textContent = `Message #${conv.name}`;
    input.placeholder = `Message #${conv.name}`;
    $('#messages').setAttribute('aria-label', `Messages in #${conv.name}`);
  } else {
    title.replaceChildren(conv.name);
    sub.textContent = isOnline(conv.name) ? 'Online · direct message' : 'Offline · they will see it later';
    leave.textContent = 'Close';
    leave.setAttribute('aria-label', `Close conversation with ${conv.name}`);
    label.textContent = `Message ${conv.name}`;
    input.placeholder = `Message ${conv.name}`;
    $('#messages').setAttribute('aria-label', `Direct messages with ${conv.name}`);
  }
}

/**
 * A message's text as DOM nodes: text nodes, and an anchor for each web link.
 * Never HTML: the anchor's text is set with textContent and its href is the
 * parsed http(s) URL linkify returns; it opens in a new tab that gets no
 * handle on this page (noopener) and no Referer (noreferrer).
 */
function messageText(content) {
  return linkify(content).map((part) => {
    if (part.url === undefined) return document.createTextNode(part.text);
    const a = document.createElement('a');
    a.href = part.url;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    a.textContent = part.text;
    return a;
  });
}

function messageNode(conv, m) {
  const node = el('div', {
    class: `msg msg-${m.state}`,
    dataset: { id: m.id || '', state: m.state, user: m.user },
    title: fullDate(m.ts),
  });
  node.append(el('div', { class: 'text' }, ...messageText(m.content)));
  const files = attachmentNodes(m.attachments, S.mode === 'token' ? S.token : null);
  if (files) node.append(files);
  if (m.state === 'pending') {
    node.append(el('div', { class: 'msg-status', role: 'status' }, S.client && S.client.connected ? 'Sending…' : 'Waiting for connection…'));
  } else if (m.state === 'failed') {
    const retry = el('button', { type: 'button', class: 'link-btn' }, 'Retry');
    retry.addEventListener('click', () => retryMessage(conv, m));
    const discard = el('button', { type: 'button', class: 'link-btn' }, 'Discard');
    discard.addEventListener('click', () => discardMessage(conv, m));
    const err = el('span', { class: 'msg-error' });
    err.textContent = `Not sent: ${m.error}`;
    node.append(el('div', { class: 'msg-status failed', role: 'alert' }, err, ' ', retry, ' · ', discard));
  }
  return node;
}

function renderMessages(scroll) {
  const box = $('#messages');
  const conv = activeConv();
  const jump = $('#jump-new');
  if (!conv) {
    box.replaceChildren(emptyState);
    jump.hidden = true;
    return;
  }
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const oldHeight = box.scrollHeight;
  const oldTop = box.scrollTop;

  const frag = document.createDocumentFragment();
  if (conv.loadingOlder) {
    frag.append(el('div', { class: 'history-status', role: 'status' }, el('span', { class: 'spinner' }), 'Loading older messages…'));
  } else if (conv.loaded && !conv.hasMore) {
    frag.append(
      el(
        'div',
        { class: 'history-start' },
        conv.kind === 'room' ? avatarRoom(conv.name) : avatar(conv.name, 'avatar-lg'),
        el('h2', {}, conv.kind === 'room' ? `Welcome to #${conv.name}` : conv.name),
        el(
          'p',
          { class: 'muted' },
          conv.kind === 'room'
            ? `This is the very beginning of #${conv.name}.`
            : `This is the beginning of your direct messages with ${conv.name}.`,
        ),
      ),
    );
  } else if (!conv.loaded) {
    frag.append(el('div', { class: 'history-status', role: 'status' }, el('span', { class: 'spinner' }), 'Loading messages…'));
  } else {
    frag.append(el('div', { class: 'history-more muted' }, 'Scroll up for older messages'));
  }
  if (conv.notice) frag.append(el('div', { class: 'notice', role: 'note' }, conv.notice));

  let prevDay = null;
  let prevUser = null;
  let prevTs = 0;
  let body = null;
  const all = conv.messages.concat(conv.pendingList);
  for (const m of all) {
    const t = Date.parse(m.ts) || 0;
    const day = new Date(t).toDateString();
    if (day !== prevDay) {
      frag.append(el('div', { class: 'day', role: 'separator' }, el('span', {}, formatDay(m.ts))));
      prevDay = day;
      prevUser = null;
    }
    if (m.user !== prevUser || t - prevTs > GROUP_GAP_MS) {
      const own = m.user === S.me;
      body = el('div', { class: 'group-body' });
      const meta = el('div', { class: 'meta' });
      if (!own) meta.append(el('span', { class: 'author' }, m.user));
      meta.append(el('time', { datetime: m.ts }, formatTime(m.ts)));
      body.append(meta);
      frag.append(el('div', { class: `group${own ? ' own' : ''}` }, own ? null : avatar(m.user), body));
    }
    body.append(messageNode(conv, m));
    prevUser = m.user;
    prevTs = t;
  }
  box.replaceChildren(frag);

  if (scroll === 'switch' || scroll === 'bottom' || (scroll === 'auto' && atBottom)) {
    box.scrollTop = box.scrollHeight;
  } else if (scroll === 'prepend') {
    box.scrollTop = oldTop + (box.scrollHeight - oldHeight);
  } else {
    box.scrollTop = oldTop;
  }
  const nowAtBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  if (nowAtBottom) jump.hidden = true;
  else if (scroll === 'auto' && !atBottom) jump.hidden = false;
  // A short history that does not fill the pane: fetch more right away.
  if (conv.loaded && conv.hasMore && !conv.loadingOlder && box.scrollHeight <= box.clientHeight + 4) {
    setTimeout(() => loadOlder(activeConv()), 0);
  }
}

function avatarRoom(name) {
  const a = avatar(name, 'avatar-lg');
  a.textContent = '#';
  return a;
}

function renderMembers() {
  const conv = activeConv();
  const list = $('#member-list');
  const title = $('#members-title');
  if (!conv) {
    title.textContent = 'Members';
    list.replaceChildren();
    return;
  }
  let users;
  if (conv.kind === 'room') {
    users = [...conv.members].sort((a, b) => a.localeCompare(b));
    title.textContent = `Members — ${users.length}`;
  } else {
    users = [conv.name, S.me].filter(Boolean);
    title.textContent = 'In this conversation';
  }
  list.replaceChildren(
    ...users.map((u) => {
      const me = u === S.me;
      const online = conv.kind === 'room' ? true : isOnline(u);
      const item = el(
        'li',
        { class: 'member', dataset: { user: u } },
        el('span', { class: 'avatar-wrap' }, avatar(u, 'avatar-sm'), el('span', { class: `dot${online ? ' on' : ''}` })),
        el('span', { class: 'member-name' }, u),
        me ? el('span', { class: 'you' }, 'you') : null,
      );
      if (!me) {
        const dm = el('button', { type: 'button', class: 'icon-btn small', 'aria-label': `Message ${u}` });
        dm.append(svgIcon('M4 6h16v10H8l-4 4z'));
        dm.addEventListener('click', () => startDm(u));
        item.append(dm);
      }
      return item;
    }),
  );
}

function svgIcon(d) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', d);
  svg.append(path);
  return svg;
}

function renderTyping() {
  const conv = activeConv();
  const box = $('#typing');
  if (!conv || conv.kind !== 'room') {
    box.textContent = '';
    return;
  }
  const now = Date.now();
  for (const [u, until] of conv.typing) if (until <= now) conv.typing.delete(u);
  const names = [...conv.typing.keys()].filter((u) => u !== S.me);
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  box.textContent = text;
}

function announce(text) {
  $('#announcer').textContent = text.length > 140 ? `${text.slice(0, 140)}…` : text;
}

// ---------------------------------------------------------------- toasts

function toast(text, code = '') {
  const box = $('#toasts');
  while (box.children.length >= 4) box.firstElementChild.remove();
  const close = el('button', { type: 'button', class: 'icon-btn small', 'aria-label': 'Dismiss' });
  close.append(svgIcon('M6 6l12 12M18 6L6 18'));
  const item = el('div', { class: 'toast', dataset: { code } }, el('span', { class: 'toast-text' }, text), close);
  const remove = () => item.remove();
  close.addEventListener('click', remove);
  box.append(item);
  setTimeout(remove, 7000);
}

// ---------------------------------------------------------------- layout (phone overlays)

const wideMembers = matchMedia('(min-width: 1100px)');

function membersVisible() {
  const b = document.body.classList;
  return wideMembers.matches ? !b.contains('members-hidden') : b.contains('members-open');
}

function syncToggles() {
  $('#members-toggle').setAttribute('aria-expanded', String(membersVisible()));
  $('#members-toggle').setAttribute('aria-label', membersVisible() ? 'Hide members' : 'Show members');
  $('#sidebar-open').setAttribute('aria-expanded', String(document.body.classList.contains('sidebar-open')));
  $('#scrim').hidden = !(document.body.classList.contains('sidebar-open') || (!wideMembers.matches && membersVisible()));
}

function closeOverlays() {
  document.body.classList.remove('sidebar-open', 'members-open');
  syncToggles();
}

function bindLayout() {
  $('#sidebar-open').addEventListener('click', () => {
    document.body.classList.add('sidebar-open');
    syncToggles();
    const first = $('#sidebar .conv-item');
    if (first) first.focus();
  });
  $('#sidebar-close').addEventListener('click', () => {
    closeOverlays();
    $('#sidebar-open').focus();
  });
  $('#scrim').addEventListener('click', closeOverlays);
  $('#members-toggle').addEventListener('click', () => {
    const b = document.body.classList;
    if (wideMembers.matches) b.toggle('members-hidden');
    else b.toggle('members-open');
    syncToggles();
  });
  $('#members-close').addEventListener('click', () => {
    if (wideMembers.matches) document.body.classList.add('members-hidden');
    else document.body.classList.remove('members-open');
    syncToggles();
    $('#members-toggle').focus();
  });
  wideMembers.addEventListener('change', syncToggles);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && (document.body.classList.contains('sidebar-open') || document.body.classList.contains('members-open'))) {
      closeOverlays();
    }
  });
  syncToggles();
}

// ---------------------------------------------------------------- composer

function bindComposer() {
  const form = $('#composer');
  const input = $('#composer-input');
  const count = $('#composer-count');
  const grow = () => {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 180)}px`;
  };
  const updateCount = () => {
    const n = utf8Length(input.value);
    count.textContent = n > MAX_CONTENT_BYTES - 600 ? ` · ${n}/${MAX_CONTENT_BYTES} bytes` : '';
    count.classList.toggle('over', n > MAX_CONTENT_BYTES);
  };
  uploads = new UploadQueue(api, $('#composer-files'), () => {});
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value;
    if (uploads.busy) {
      toast('Wait for the files to finish uploading, then send.');
      return;
    }
    const ids = uploads.ids;
    if (!text.trim() && ids.length === 0) return;
    if (sendMessage(text.trim() ? text : '', ids)) {
      input.value = '';
      uploads.clear();
      grow();
      updateCount();
    }
  });
  // Three ways to attach, one queue: the paper clip, paste, drag and drop.
  const picker = $('#file-input');
  $('#attach-btn').addEventListener('click', () => picker.click());
  picker.addEventListener('change', () => {
    uploads.add(picker.files);
    picker.value = '';
  });
  input.addEventListener('paste', (e) => {
    const files = e.clipboardData && e.clipboardData.files;
    if (files && files.length) {
      e.preventDefault();
      uploads.add(files);
    }
  });
  const pane = $('#messages');
  pane.addEventListener('dragover', (e) => {
    if (!activeConv() || !e.dataTransfer || !Array.from(e.dataTransfer.types).includes('Files')) return;
    e.preventDefault();
    pane.classList.add('drop-target');
  });
  pane.addEventListener('dragleave', () => pane.classList.remove('drop-target'));
  pane.addEventListener('drop', (e) => {
    pane.classList.remove('drop-target');
    if (!activeConv() || !e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    uploads.add(e.dataTransfer.files);
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener('input', () => {
    grow();
    updateCount();
    if (input.value.trim()) sendTyping();
  });

  const box = $('#messages');
  box.addEventListener('scroll', () => {
    if (box.scrollTop < 150) loadOlder(activeConv());
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) $('#jump-new').hidden = true;
  });
  $('#jump-new').addEventListener('click', () => {
    box.scrollTop = box.scrollHeight;
    $('#jump-new').hidden = true;
  });
  $('#leave-btn').addEventListener('click', leaveConversation);

  $('#create-room').addEventListener('submit', async (e) => {
    e.preventDefault();
    const field = $('#create-room-name');
    const errBox = $('#create-room-error');
    const name = field.value.trim().replace(/^#/, '');
    errBox.textContent = '';
    if (!ROOM_RE.test(name)) {
      errBox.textContent = 'Use 1–64 letters, digits, _ - or .';
      field.focus();
      return;
    }
    try {
      await api.createRoom(name);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 409) {
        errBox.textContent = err instanceof ApiError ? err.message : 'Could not reach the server.';
        return;
      }
    }
    field.value = '';
    joinRoom(name);
  });
  document.addEventListener('visibilitychange', () => {
    const conv = activeConv();
    if (!document.hidden && conv && conv.unread) {
      conv.unread = 0;
      render({ sidebar: true });
    }
  });
}

// ---------------------------------------------------------------- sign-in

function showLogin(error = '') {
  document.body.classList.add('signed-out');
  $('#login').hidden = false;
  $('#shell').hidden = true;
  const token = S.mode === 'token';
  $('#login-name-field').hidden = token;
  $('#login-token-field').hidden = !token;
  $('#login-hint').textContent = token
    ? 'This server requires an access token. Paste yours to sign in.'
    : 'Pick a name to start chatting. No account needed.';
  $('#login-error').textContent = error;
  (token ? $('#login-token') : $('#login-name')).focus();
}

async function signIn() {
  const errBox = $('#login-error');
  errBox.textContent = '';
  if (S.mode === 'token') {
    const token = $('#login-token').value.trim();
    if (!token) {
      errBox.textContent = 'Paste your access token.';
      return;
    }
    api.token = token;
    try {
      await api.rooms();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        api.token = null;
        errBox.textContent = 'That token was not accepted (invalid or expired).';
        return;
      }
    }
    S.token = token;
  } else {
    const name = $('#login-name').value.trim();
    if (!NAME_RE.test(name)) {
      errBox.textContent = 'Names are 1–32 characters: letters, digits, _ - or .';
      $('#login-name').focus();
      return;
    }
    if (S.me && S.me !== name) {
      // A different person on this page: start from a clean slate.
      S.convs.clear();
      S.roomOrder = [];
      S.dmOrder = [];
      S.active = null;
      S.restored = false;
    }
    S.me = name;
  }
  document.body.classList.remove('signed-out');
  $('#login').hidden = true;
  $('#shell').hidden = false;
  render({ all: true });
  startClient();
}

let emptyState;

async function main() {
  emptyState = $('#empty-state');
  bindLayout();
  bindComposer();
  $('#login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn();
  });
  window.addEventListener('online', () => S.client && S.client.retryNow());
  setInterval(() => {
    if (S.conn.state === 'open') {
      refreshDirectory();
      refreshUsers();
    }
  }, POLL_MS);

  S.mode = await api.detectMode();
  const name = params.get('name');
  const token = params.get('token');
  if (S.mode === 'token' && token) {
    $('#login-token').value = token;
    showLogin();
    signIn();
  } else if (S.mode === 'name' && name) {
    $('#login-name').value = name;
    showLogin();
    signIn();
  } else {
    if (name) $('#login-name').value = name;
    showLogin();
  }
  document.documentElement.dataset.ready = 'true';
}

// For diagnostics from the console (and the browser tests).
window.chorus = { state: S };

main();
