// Token mode: a server with CHORUS_JWT_SECRET (embedded, one node). The page
// finds out from GET /api/rooms (401) and asks for a token instead of a name.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startNode } from './lib/cluster.js';
import { launchBrowser, openClient, waitConnected, send, waitMessage, messageTexts, signToken } from './lib/browser.js';

// At least 32 bytes, as the node requires.
const SECRET = 'browser-test-secret-of-at-least-32-bytes';
let node;
let browser;

const token = (sub, secret = SECRET) => signToken(sub, secret);

before(async () => {
  node = await startNode({ id: 'auth-node', env: { CHORUS_JWT_SECRET: SECRET } });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (node) await node.stop();
});

test('token mode: asks for a token, refuses a bad one, signs in with a good one', async () => {
  const page = await openClient(browser, node, {});
  await page.locator('#login-token').waitFor();
  assert.equal(await page.locator('#login-name').isVisible(), false, 'no name field in token mode');

  await page.locator('#login-token').fill(token('grace', 'wrong-secret'));
  await page.getByRole('button', { name: 'Join chat' }).click();
  await page.locator('#login-error', { hasText: 'not accepted' }).waitFor();

  await page.locator('#login-token').fill(token('grace'));
  await page.getByRole('button', { name: 'Join chat' }).click();
  await waitConnected(page, 'auth-node');
  assert.equal(await page.textContent('#me-name'), 'grace', 'the name comes from the token');
  await page.waitForFunction(() => document.querySelector('#chat-title').textContent === '#lobby');
  await send(page, 'signed in with a token');
  await waitMessage(page, 'signed in with a token');

  // ?token= signs in at once; the room list (an /api call) works with the token.
  const heidi = await openClient(browser, node, { token: token('heidi'), room: 'lobby' });
  await waitConnected(heidi);
  await waitMessage(heidi, 'signed in with a token');
  await heidi.locator('#member-list [data-user="grace"]').waitFor();
  await heidi.locator('#people-list [data-user="grace"]').waitFor();
  assert.deepEqual(await messageTexts(heidi), ['signed in with a token']);
  assert.deepEqual(page.errors, []);
  assert.deepEqual(heidi.errors, []);
});
