// What an administrator does, as the page shows it: a disconnect (close
// code 4001) signs the user out, with no reconnect of its own; a deleted
// message disappears from the page of everyone in the room at once, and
// stays gone after a reload.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startNode } from './lib/cluster.js';
import { launchBrowser, openClient, waitConnected, send, waitMessage, messageTexts } from './lib/browser.js';

const ADMIN = 'browser-test-admin-token-of-32-bytes-at-least';
let node;
let browser;

before(async () => {
  node = await startNode({ id: 'admin-node', env: { CHORUS_ADMIN_TOKEN: ADMIN } });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (node) await node.stop();
});

test('a user an administrator disconnects is signed out and does not reconnect', async () => {
  const page = await openClient(browser, node, { name: "ivan", room: "lobby" });
  await waitConnected(page, 'admin-node');

  const answer = await fetch(`${node.http}/api/admin/users/ivan/disconnect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}` },
  });
  assert.equal(answer.status, 202);

  await page.locator('#login-error', { hasText: 'administrator removed' }).waitFor();
  // Well past the first reconnect delay: still no connection of ivan.
  await page.waitForTimeout(2500);
  const users = await (await fetch(`${node.http}/api/users`)).json();
  assert.deepEqual(users, [], 'ivan did not come back on his own');
  assert.deepEqual(page.errors, []);
});

test('a message an administrator deletes disappears from the page', async () => {
  const alice = await openClient(browser, node, { name: 'alice', room: 'news' });
  const bob = await openClient(browser, node, { name: 'bob', room: 'news' });
  await waitConnected(alice);
  await waitConnected(bob);
  await alice.locator('#member-list [data-user="bob"]').waitFor();
  await send(alice, 'keep me');
  await waitMessage(alice, 'keep me');
  await send(alice, 'delete me');
  await waitMessage(bob, 'delete me');
  const id = await bob.$$eval('#messages .msg', (nodes) => nodes.find((n) => n.querySelector('.text').textContent === 'delete me').dataset.id);

  const answer = await fetch(`${node.http}/api/admin/rooms/news/messages/${id}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${ADMIN}` },
  });
  assert.equal(answer.status, 204);

  for (const page of [bob, alice]) {
    await page.locator(`#messages .msg[data-id="${id}"]`).waitFor({ state: 'detached' });
    assert.deepEqual(await messageTexts(page), ['keep me']);
  }
  await bob.reload();
  await waitConnected(bob);
  await waitMessage(bob, 'keep me');
  assert.deepEqual(await messageTexts(bob), ['keep me'], 'not back from history');
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
});

test('a user an administrator removes from a room sees the room leave the page, and stays connected', async () => {
  const page = await openClient(browser, node, { name: 'judy', room: 'ops' });
  await waitConnected(page);
  await page.locator('#member-list [data-user="judy"]').waitFor();

  const answer = await fetch(`${node.http}/api/admin/rooms/ops/kick`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ user: 'judy' }),
  });
  assert.equal(answer.status, 202);

  await page.locator('#room-list [data-key="room:ops"]').waitFor({ state: 'detached' });
  await page.locator('#toasts .toast[data-code="kicked"]', { hasText: 'removed you from #ops' }).waitFor();
  const members = await (await fetch(`${node.http}/api/rooms/ops/users`)).json();
  assert.deepEqual(members, [], 'judy left ops');
  // Still signed in: the kick is no disconnect.
  await waitConnected(page);
  assert.deepEqual(page.errors, []);
});
