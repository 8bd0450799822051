// The admin console: reads the admin API every few seconds and runs its
// actions. The token lives in sessionStorage (this tab only); every answer
// is rendered with textContent, never as HTML.
import { el, $ } from '/js/dom.js';

const TOKEN_KEY = 'chorus.admin.token';
/** Between the end of one poll and the start of the next. */
const POLL_MS = 3000;
/** A call that has not answered by then is given up (and counted as a failed poll). */
const CALL_TIMEOUT_MS = 5000;
/** How far back "recent" errors and refusals reach. */
const WINDOW_MS = 5 * 60 * 1000;
/** Messages offered for deletion from one room. */
const RECENT_MESSAGES = 10;

let token = sessionStorage.getItem(TOKEN_KEY);
/** Bumped on sign-out, so that a poll in flight then neither renders nor schedules another. */
let generation = 0;
let pollTimer = null;
/** Counter readings, oldest first: {at, nodes: Map(node → Map(counter → n))}. */
let samples = [];

/** One admin API call: {status, body, retryAfter}; throws on a network failure or timeout. */
async function call(method, path, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  return { status: res.status, body: parsed, retryAfter: Number(res.headers.get('retry-after')) || 1 };
}

function failure(err) {
  return err.name === 'TimeoutError' ? `no answer within ${CALL_TIMEOUT_MS / 1000} s` : 'the node cannot be reached';
}

/** What an answer means, for the operator. */
function describe(answer) {
  const said = answer.body?.error?.message;
  switch (answer.status) {
    case 202:
      return '202 Accepted: sent to every node';
    case 204:
      return '204 No Content: deleted';
    case 404:
      return `404 Not Found${said ? `: ${said}` : ''}`;
    case 429:
      return `429 Too Many Requests: try again in ${answer.retryAfter} s`;
    default:
      return `${answer.status}${said ? `: ${said}` : ''}`;
  }
}

// ---------- sign-in ----------

function showSignin(message = '') {
  $('#console').hidden = true;
  $('#signin').hidden = false;
  $('#signin-error').textContent = message;
  $('#signin-token').value = '';
  $('#signin-token').focus();
}

function showConsole() {
  $('#signin').hidden = true;
  $('#console').hidden = false;
  samples = [];
  generation += 1;
  poll(generation);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  generation += 1;
  clearTimeout(pollTimer);
  for (const body of document.querySelectorAll('#console tbody, #action-log, #recent-list')) body.replaceChildren();
  $('#recent').hidden = true;
  showSignin(message);
}

$('#signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const given = $('#signin-token').value.trim();
  if (!given) {
    $('#signin-error').textContent = 'Enter the admin token.';
    return;
  }
  const submit = $('#signin-submit');
  submit.disabled = true;
  token = given;
  try {
    const answer = await call('GET', '/api/admin/nodes');
    if (answer.status === 200) {
      sessionStorage.setItem(TOKEN_KEY, token);
      showConsole();
    } else {
      $('#signin-error').textContent = answer.status === 401 ? 'That token was refused.' : describe(answer);
    }
  } catch (err) {
    $('#signin-error').textContent = `Could not check the token: ${failure(err)}.`;
  } finally {
    submit.disabled = false;
  }
});

$('#signout').addEventListener('click', () => signOut(''));

// ---------- polling ----------

/** One round of reads; the next starts only when this one has ended, so one is in flight at most. */
async function poll(mine) {
  let delay = POLL_MS;
  try {
    const [nodes, rooms, users] = await Promise.all(
      ['nodes', 'rooms', 'users'].map((what) => call('GET', `/api/admin/${what}`)),
    );
    if (mine !== generation) return;
    const refused = [nodes, rooms, users].find((a) => a.status !== 200);
    if (refused?.status === 401) {
      signOut('The token was refused: enter it again.');
      return;
    }
    if (refused) {
      if (refused.status === 429) delay = refused.retryAfter * 1000;
      setStatus(`Could not read: ${describe(refused)}`, true);
    } else {
      renderNodes(nodes.body);
      renderRooms(rooms.body);
      renderUsers(users.body);
      renderProblems(nodes.body);
      setStatus(`Updated ${new Date().toLocaleTimeString()} · ${plural(nodes.body.length, 'node')}`, false);
    }
  } catch (err) {
    if (mine !== generation) return;
    setStatus(`Could not read: ${failure(err)}; trying again`, true);
  }
  if (mine === generation) pollTimer = setTimeout(() => poll(mine), delay);
}

function setStatus(text, bad) {
  const status = $('#poll-status');
  status.textContent = text;
  status.classList.toggle('bad', bad);
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

function cell(content, className) {
  return el('td', { class: className }, content);
}

function emptyRow(table, text) {
  const columns = $(`#${table} thead tr`).children.length;
  return el('tr', {}, el('td', { class: 'muted', colspan: columns }, text));
}

function since(iso) {
  if (!iso) return el('span', { class: 'muted' }, 'unknown');
  const at = new Date(iso);
  const minutes = Math.max(0, Math.floor((Date.now() - at.getTime()) / 60000));
  const up = minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  return el('time', { datetime: iso, title: at.toISOString() }, `${at.toLocaleString()} (${up})`);
}

/** Fills `table`'s body with `row(item)` for each item, or one line saying `empty`. */
function fillTable(table, items, empty, row) {
  const rows = items.map(row);
  $(`#${table} tbody`).replaceChildren(...(rows.length ? rows : [emptyRow(table, empty)]));
}

/** A small button in a table row; `label` names it for a screen reader, with its row's subject. */
function rowButton(text, label, onclick, className = 'btn btn-ghost') {
  return el('button', { class: className, type: 'button', 'aria-label': label, onclick }, text);
}

function renderNodes(nodes) {
  const sorted = [...nodes].sort((a, b) => a.node.localeCompare(b.node));
  fillTable('nodes', sorted, 'No live node.', (n) =>
    el('tr', { dataset: { node: n.node } }, cell(n.node), cell(String(n.connections), 'num'), cell(since(n.since))),
  );
}

function renderRooms(rooms) {
  const messages = (r) =>
    rowButton('Messages', `Recent messages of ${r.name}`, () => {
      $('#delete-room').value = r.name;
      // An id typed for another room is no id of this one.
      $('#delete-id').value = '';
      loadRecent();
    });
  fillTable('rooms', rooms, 'No rooms.', (r) =>
    el(
      'tr',
      { dataset: { room: r.name } },
      cell(r.name),
      cell(String(r.members), 'num'),
      cell(r.messages_per_minute.toFixed(1), 'num'),
      cell(messages(r), 'end'),
    ),
  );
}

function renderUsers(users) {
  const kick = (u) =>
    rowButton('Remove from room', `Remove ${u.user} from a room`, () => {
      $('#kick-user').value = u.user;
      $('#kick-room').focus();
    });
  const cut = (u) => rowButton('Disconnect', `Disconnect ${u.user}`, () => disconnect(u.user), 'btn btn-ghost danger');
  fillTable('users', users, 'Nobody is online.', (u) =>
    el(
      'tr',
      { dataset: { user: u.user } },
      cell(u.user),
      cell(String(u.connections), 'num'),
      cell(u.nodes.join(', ')),
      cell(el('span', { class: 'row end' }, kick(u), cut(u)), 'end'),
    ),
  );
}

/** Each node's counters as one map, `error:<code>` beside the refusal kinds. */
function counters(node) {
  const all = new Map();
  for (const [code, n] of Object.entries(node.errors ?? {})) all.set(`error:${code}`, n);
  for (const [kind, n] of Object.entries(node.refusals ?? {})) all.set(kind, n);
  return all;
}

function renderProblems(nodes) {
  const now = Date.now();
  samples.push({ at: now, nodes: new Map(nodes.map((n) => [n.node, counters(n)])) });
  // Keep the newest reading that is older than the window: it is the baseline.
  while (samples.length > 1 && samples[1].at <= now - WINDOW_MS) samples.shift();
  const rows = [];
  for (const [node, current] of samples.at(-1).nodes) {
    // The oldest reading of this node still kept; for a node that appeared
    // after the page opened, its first one.
    const baseline = samples.find((s) => s.nodes.has(node)).nodes.get(node);
    for (const [counter, total] of current) {
      if (total === 0) continue;
      const before = baseline.get(counter) ?? 0;
      // A lower total means the node restarted under the same id.
      const recent = total >= before ? total - before : total;
      rows.push({ node, counter, recent, total });
    }
  }
  rows.sort((a, b) => b.recent - a.recent || b.total - a.total || a.node.localeCompare(b.node));
  fillTable('problems', rows, 'No errors or refusals.', (r) =>
    el(
      'tr',
      { class: r.recent > 0 ? 'hot' : undefined, dataset: { node: r.node, counter: r.counter } },
      cell(r.node),
      cell(el('code', {}, r.counter)),
      cell(String(r.recent), 'num recent'),
      cell(String(r.total), 'num total'),
    ),
  );
}

// ---------- actions ----------

/** Asks before an action; resolves true when the operator confirms. */
function confirmAction(question, verb) {
  const dialog = $('#confirm');
  $('#confirm-text').textContent = question;
  $('#confirm-ok').textContent = verb;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

function logAnswer(what, text, ok) {
  const entry = el(
    'li',
    { class: ok ? 'ok' : 'bad' },
    el('time', {}, new Date().toLocaleTimeString()),
    ' ',
    el('strong', {}, what),
    ' → ',
    text,
  );
  $('#action-log').prepend(entry);
}

/** Runs one action after confirmation and logs the answer; returns it (null if not run). */
async function act({ question, verb, what, method, path, body }) {
  if (!(await confirmAction(question, verb))) return null;
  try {
    const answer = await call(method, path, body);
    if (answer.status === 401) {
      signOut('The token was refused: enter it again.');
      return answer;
    }
    logAnswer(what, describe(answer), answer.status >= 200 && answer.status < 300);
    return answer;
  } catch (err) {
    logAnswer(what, `not done: ${failure(err)}`, false);
    return null;
  }
}

const segment = encodeURIComponent;

function disconnect(user) {
  return act({
    question: `Disconnect ${user}? Every connection of ${user}, on every node, is closed.`,
    verb: 'Disconnect',
    what: `disconnect ${user}`,
    method: 'POST',
    path: `/api/admin/users/${segment(user)}/disconnect`,
  });
}

function deleteMessage(room, id) {
  return act({
    question: `Delete message ${id} from ${room}? It cannot be brought back.`,
    verb: 'Delete',
    what: `delete ${id} in ${room}`,
    method: 'DELETE',
    path: `/api/admin/rooms/${segment(room)}/messages/${segment(id)}`,
  });
}

function formValue(selector) {
  return $(selector).value.trim();
}

$('#disconnect-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const user = formValue('#disconnect-user');
  if (user) disconnect(user);
});

$('#kick-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const room = formValue('#kick-room');
  const user = formValue('#kick-user');
  if (!room || !user) return;
  act({
    question: `Remove ${user} from ${room}? Every connection of ${user} leaves the room.`,
    verb: 'Remove',
    what: `remove ${user} from ${room}`,
    method: 'POST',
    path: `/api/admin/rooms/${segment(room)}/kick`,
    body: { user },
  });
});

$('#delete-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const room = formValue('#delete-room');
  const id = formValue('#delete-id');
  if (!room || !id) return;
  const answer = await deleteMessage(room, id);
  if (answer?.status === 204 && !$('#recent').hidden) loadRecent();
});

$('#recent-load').addEventListener('click', () => loadRecent());

/**
 * The room's last messages, from the public history route (the one the web
 * client reads): with user tokens required it refuses the admin token, and
 * the id is entered by hand.
 */
async function loadRecent() {
  const room = formValue('#delete-room');
  const section = $('#recent');
  const note = $('#recent-note');
  const list = $('#recent-list');
  section.hidden = false;
  list.replaceChildren();
  if (!room) {
    note.textContent = 'Enter a room first.';
    $('#delete-room').focus();
    return;
  }
  $('#recent-title').textContent = `Recent messages in ${room}`;
  note.textContent = 'Loading…';
  let res;
  try {
    res = await fetch(`/api/rooms/${segment(room)}/messages?limit=${RECENT_MESSAGES}`, {
      cache: 'no-store',
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
    });
  } catch (err) {
    note.textContent = `Could not read the history: ${failure(err)}.`;
    return;
  }
  if (res.status === 401) {
    note.textContent = 'This server requires user tokens for history: enter the message id by hand.';
    return;
  }
  if (res.status !== 200) {
    note.textContent = `Could not read the history: ${res.status}.`;
    return;
  }
  const messages = await res.json();
  note.textContent = messages.length ? `The last ${plural(messages.length, 'message')}, newest first.` : 'No messages.';
  list.replaceChildren(
    ...messages.reverse().map((m) =>
      el(
        'li',
        { dataset: { id: m.id } },
        el('span', { class: 'recent-meta muted' }, `${new Date(m.ts).toLocaleTimeString()} · ${m.user}`),
        el('span', { class: 'recent-text' }, m.content),
        rowButton(
          'Delete',
          `Delete the message of ${m.user}: ${m.content.slice(0, 60)}`,
          async () => {
            const answer = await deleteMessage(room, m.id);
            if (answer?.status === 204) loadRecent();
          },
          'btn btn-ghost danger',
        ),
      ),
    ),
  );
}

$('#window-minutes').textContent = String(WINDOW_MS / 60000);
if (token) showConsole();
else showSignin();
