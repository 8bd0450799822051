// The admin console (/admin) on two nodes sharing one Redis: it asks for the
// token, shows the cluster as both nodes see it, and its actions reach users
// on the other node. Ends with the screenshot in docs/admin-console.png.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT, startCluster, postMessage, createRoom } from './lib/cluster.js';
import { T, launchBrowser, openClient, waitConnected, send, waitMessage } from './lib/browser.js';

const ADMIN = 'browser-test-admin-token-of-32-bytes-at-least';
let cluster;
let browser;
let admin; // the console, served by node-1
let alice; // a web client on node-1
let n1;
let n2;

before(async () => {
  // A short presence TTL: nodes beat every second, so node-2's counters
  // reach node-1's console quickly. A small POST bucket, so a burst is
  // refused in part however slowly a loaded machine serves it.
  cluster = await startCluster({
    count: 2,
    env: { CHORUS_ADMIN_TOKEN: ADMIN, CHORUS_PRESENCE_TTL_SECS: '4', CHORUS_RATE_LIMIT: '5', CHORUS_RATE_BURST: '10' },
  });
  [n1, n2] = cluster.nodes;
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (cluster) await cluster.stop();
});

async function openConsole(node) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
  context.setDefaultTimeout(T);
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(String(err)));
  // The console's own Content-Security-Policy must not stop any part of it.
  page.on('console', (m) => m.text().includes('Content Security Policy') && page.errors.push(m.text()));
  await page.goto(`${node.http}/admin`);
  return page;
}

async function signIn(page, token) {
  await page.locator('#signin-token').fill(token);
  await page.locator('#signin-token').press('Enter');
}

/** One cell of the row of `table` whose `data-<key>` is `value`. */
const cellOf = (table, key, value, column) => `#${table} tr[data-${key}="${value}"] td:nth-child(${column})`;

/** Waits until that cell reads `is`, or a number of at least `atLeast`. */
async function waitCell(page, selector, { is, atLeast }) {
  await page.waitForFunction(
    ([sel, want, least]) => {
      const text = document.querySelector(sel)?.textContent;
      if (text === undefined) return false;
      return want !== null ? text === want : Number(text) >= least;
    },
    [selector, is ?? null, atLeast ?? null],
    { timeout: T },
  );
}

/** Confirms the console's dialog and returns the answer it logs. */
async function confirmAndRead(page, verb) {
  const dialog = page.locator('#confirm');
  await dialog.waitFor();
  await page.locator('#confirm-ok', { hasText: verb }).click();
  await dialog.waitFor({ state: 'hidden' });
  const entry = page.locator('#action-log li').first();
  await entry.waitFor();
  return entry.textContent();
}

/** A WebSocket of `user` on `node`, opened from a web client's `page` (the console's policy allows no socket), sends to a room it did not join: error `not_member`. */
function provokeError(page, node, user) {
  return page.evaluate(
    ([url, name]) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${url}?username=${name}`);
        const timer = setTimeout(() => reject(new Error('no error frame in time')), 10000);
        ws.onerror = () => reject(new Error('the socket failed'));
        ws.onmessage = (event) => {
          const frame = JSON.parse(event.data);
          if (frame.type === 'welcome') ws.send(JSON.stringify({ type: 'message', room: 'nowhere', content: 'x' }));
          if (frame.type === 'error') {
            clearTimeout(timer);
            ws.close();
            resolve(frame.code);
          }
        };
      }),
    [node.ws, user],
  );
}

/** More POSTs at once than the node's per-address bucket holds: some are refused (`rate:rest`). */
async function restBurst(node, room, count) {
  const answers = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      fetch(`${node.http}/api/rooms/${room}/messages`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user: 'loadbot', content: `load test ${i + 1}` }),
      }),
    ),
  );
  return answers.filter((a) => a.status === 429).length;
}

test('the console asks for the token, refuses a wrong one, forgets it on sign-out and asks again after a 401', async () => {
  admin = await openConsole(n1);
  await admin.locator('#signin').waitFor();
  assert.equal(await admin.locator('#console').isHidden(), true);

  await signIn(admin, 'not-the-admin-token-but-just-as-long-as-it');
  await admin.locator('#signin-error', { hasText: 'refused' }).waitFor();
  assert.equal(await admin.locator('#console').isHidden(), true);

  await signIn(admin, ADMIN);
  await admin.locator('#console').waitFor();
  for (const node of [n1, n2]) await admin.locator(`#nodes tr[data-node="${node.id}"]`).waitFor();
  assert.equal(await admin.evaluate(() => sessionStorage.getItem('chorus.admin.token')), ADMIN);

  // Kept for the tab: a reload does not ask again.
  await admin.reload();
  await admin.locator(`#nodes tr[data-node="${n2.id}"]`).waitFor();
  assert.equal(await admin.locator('#signin').isHidden(), true);

  await admin.locator('#signout').click();
  await admin.locator('#signin').waitFor();
  assert.equal(await admin.evaluate(() => sessionStorage.getItem('chorus.admin.token')), null);
  assert.equal(await admin.locator('#nodes tbody tr').count(), 0, 'nothing of the cluster is left on the page');

  // A kept token the node refuses (the operator changed it): asked again.
  await admin.evaluate(() => sessionStorage.setItem('chorus.admin.token', 'a-token-from-before-the-operator-changed-it'));
  await admin.reload();
  await admin.locator('#signin-error', { hasText: 'enter it again' }).waitFor();
  assert.equal(await admin.evaluate(() => sessionStorage.getItem('chorus.admin.token')), null);

  await signIn(admin, ADMIN);
  await admin.locator(`#nodes tr[data-node="${n1.id}"]`).waitFor();
  assert.deepEqual(admin.errors, []);
});

test('the console shows rooms with members and rates, and users with their nodes', async () => {
  await createRoom(n1, 'general');
  alice = await openClient(browser, n1, { name: 'alice', room: 'general' });
  const bob = await openClient(browser, n2, { name: 'bob', room: 'general' });
  await waitConnected(alice, n1.id);
  await waitConnected(bob, n2.id);
  await send(bob, 'hello from node 2');
  await waitMessage(alice, 'hello from node 2');
  await send(alice, 'hello from node 1');
  await waitMessage(bob, 'hello from node 1');

  await waitCell(admin, cellOf('rooms', 'room', 'general', 2), { is: '2' });
  // Both nodes' rates (each counts the message it accepted, about 1 a
  // minute): node-2's reaches node-1's console with its beat.
  await waitCell(admin, cellOf('rooms', 'room', 'general', 3), { atLeast: 1.5 });
  await waitCell(admin, cellOf('users', 'user', 'alice', 3), { is: n1.id });
  await waitCell(admin, cellOf('users', 'user', 'bob', 3), { is: n2.id });
  for (const node of [n1, n2]) await waitCell(admin, cellOf('nodes', 'node', node.id, 2), { atLeast: 1 });
  assert.match(await admin.locator(cellOf('nodes', 'node', n2.id, 3)).textContent(), /\(\d+ min\)/);
  assert.deepEqual(admin.errors, []);
});

test('the console shows the recent errors and refusals of the other node', async () => {
  assert.equal(await provokeError(alice, n2, 'mallory'), 'not_member');
  assert.ok((await restBurst(n2, 'general', 30)) > 0, 'the burst was limited');

  const row = (counter) => admin.locator(`#problems tr[data-node="${n2.id}"][data-counter="${counter}"]`);
  for (const counter of ['error:not_member', 'rate:rest']) {
    await waitCell(admin, `#problems tr[data-node="${n2.id}"][data-counter="${counter}"] .recent`, { atLeast: 1 });
    const total = Number(await row(counter).locator('.total').textContent());
    const recent = Number(await row(counter).locator('.recent').textContent());
    assert.ok(total >= recent, `${counter}: ${recent} recent of ${total}`);
  }
});

test('a disconnect from the console signs out a user of the other node', async () => {
  const carol = await openClient(browser, n2, { name: 'carol', room: 'general' });
  await waitConnected(carol, n2.id);
  await admin.locator('#users tr[data-user="carol"]').waitFor();

  await admin.getByRole('button', { name: 'Disconnect carol' }).click();
  assert.match(await admin.locator('#confirm-text').textContent(), /carol/);
  assert.match(await confirmAndRead(admin, 'Disconnect'), /disconnect carol → 202/);

  await carol.locator('#login-error', { hasText: 'administrator removed' }).waitFor();
  await admin.locator('#users tr[data-user="carol"]').waitFor({ state: 'detached' });
});

test('a cancelled action does nothing', async () => {
  await admin.getByRole('button', { name: 'Disconnect alice' }).click();
  await admin.locator('#confirm').waitFor();
  await admin.keyboard.press('Escape');
  await admin.locator('#confirm').waitFor({ state: 'hidden' });
  assert.equal(await admin.locator('#action-log li', { hasText: 'disconnect alice' }).count(), 0);
  const users = await (await fetch(`${n1.http}/api/users`)).json();
  assert.ok(users.includes('alice'));
});

test('a kick from the console removes a user of the other node from the room', async () => {
  await alice.locator('#member-list [data-user="bob"]').waitFor();

  await admin.locator('#kick-room').fill('general');
  await admin.locator('#kick-user').fill('bob');
  await admin.locator('#kick-form button[type="submit"]').click();
  assert.match(await confirmAndRead(admin, 'Remove'), /remove bob from general → 202/);

  await alice.locator('#member-list [data-user="bob"]').waitFor({ state: 'detached' });
  const members = await (await fetch(`${n1.http}/api/rooms/general/users`)).json();
  assert.ok(!members.includes('bob'), JSON.stringify(members));
  // Still online: a kick is no disconnect.
  await admin.locator('#users tr[data-user="bob"]').waitFor();
});

test('a delete from the console removes a message from the pages of the room', async () => {
  const said = await postMessage(n2, 'general', 'dave', 'an ill-judged remark');
  await waitMessage(alice, 'an ill-judged remark');
  await admin.getByRole('button', { name: 'Recent messages of general' }).click();
  const item = admin.locator(`#recent-list li[data-id="${said.id}"]`);
  await item.waitFor();
  assert.equal(await admin.locator('#delete-room').inputValue(), 'general');

  await item.getByRole('button').click();
  assert.match(await admin.locator('#confirm-text').textContent(), new RegExp(said.id));
  assert.match(await confirmAndRead(admin, 'Delete'), new RegExp(`delete ${said.id} in general → 204`));

  await item.waitFor({ state: 'detached' });
  await alice.waitForFunction(
    (text) => ![...document.querySelectorAll('#messages .msg .text')].some((t) => t.textContent === text),
    'an ill-judged remark',
  );
  const history = await (await fetch(`${n1.http}/api/rooms/general/messages`)).json();
  assert.ok(!history.some((m) => m.id === said.id), 'gone from the history');
});

test('a delete of an unknown message shows the 404', async () => {
  await admin.locator('#delete-room').fill('general');
  await admin.locator('#delete-id').fill('1-0');
  await admin.locator('#delete-form button[type="submit"]').click();
  assert.match(await confirmAndRead(admin, 'Delete'), /delete 1-0 in general → 404/);
});

test('screenshot of the console with real data', async () => {
  for (const room of ['design', 'random', 'support']) await createRoom(n1, room);
  const pages = [
    await openClient(browser, n2, { name: 'dave.k', room: 'general,random' }),
    await openClient(browser, n1, { name: 'erin', room: 'support,design' }),
    await openClient(browser, n2, { name: 'frank', room: 'design' }),
  ];
  for (const p of pages) await waitConnected(p);
  await postMessage(n1, 'design', 'erin', 'New sidebar mockups are in the design doc');
  await postMessage(n2, 'random', 'dave.k', 'Anyone up for lunch?');
  await postMessage(n2, 'design', 'frank', 'Looks great');
  for (const user of ['dave.k', 'erin', 'frank']) await admin.locator(`#users tr[data-user="${user}"]`).waitFor();
  await waitCell(admin, cellOf('rooms', 'room', 'design', 3), { atLeast: 0.1 });
  await admin.getByRole('button', { name: 'Recent messages of design' }).click();
  await admin.locator('#recent-list li', { hasText: 'Looks great' }).waitFor();
  await admin.evaluate(() => window.scrollTo(0, 0));
  await admin.mouse.move(0, 0);

  const out = path.join(ROOT, 'docs', 'admin-console.png');
  await admin.screenshot({ path: out, fullPage: true, animations: 'disabled' });
  assert.deepEqual(admin.errors, []);
});
