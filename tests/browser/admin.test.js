// An administrator's disconnect (close code 4001): the page stops, says so,
// and does not reconnect on its own.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startNode } from './lib/cluster.js';
import { launchBrowser, openClient, waitConnected } from './lib/browser.js';

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
