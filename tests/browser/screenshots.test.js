// Desktop (1280×800) and phone (390×844) screenshots of a real conversation,
// saved to docs/screenshots/ for the README.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, startCluster, postMessage, createRoom } from './lib/cluster.js';
import { launchBrowser, openClient, waitConnected, send, waitMessage } from './lib/browser.js';

const OUT = path.join(ROOT, 'docs', 'screenshots');
let cluster;
let browser;

before(async () => {
  cluster = await startCluster({ count: 2 });
  browser = await launchBrowser();
  fs.mkdirSync(OUT, { recursive: true });
});

after(async () => {
  if (browser) await browser.close();
  if (cluster) await cluster.stop();
});

test('screenshots of the desktop and phone layouts', async () => {
  const [n1, n2] = cluster.nodes;
  for (const room of ['general', 'design', 'random', 'releases', 'support']) await createRoom(n1, room);
  const small = { viewport: { width: 800, height: 600 } };
  const bob = await openClient(browser, n2, { name: 'bob', room: 'general' }, small);
  const carol = await openClient(browser, n1, { name: 'carol', room: 'general,design' }, small);
  const dave = await openClient(browser, n2, { name: 'dave.k', room: 'general,random' }, small);
  const erin = await openClient(browser, n1, { name: 'erin', room: 'support' }, small);
  for (const p of [bob, carol, dave, erin]) await waitConnected(p);

  const history = [
    [n1, 'carol', 'Morning all! The 0.4 release notes are up for review.'],
    [n2, 'bob', "Nice, I'll take a look right after standup."],
    [n2, 'dave.k', 'Heads-up: staging restarts at 11:00 for the Redis upgrade.'],
    [n1, 'carol', 'Anything we need to do on our side?'],
    [n2, 'dave.k', 'Nope. Clients reconnect on their own and catch up with `since`, so nobody should notice.'],
  ];
  for (const [node, user, text] of history) await postMessage(node, 'general', user, text);

  const alice = await openClient(browser, n1, { name: 'alice', room: 'general,design,releases', nodes: `${n1.ws},${n2.ws}` });
  await waitConnected(alice, n1.id);
  await waitMessage(alice, history[4][2]);
  for (const u of ['bob', 'carol', 'dave.k']) await alice.locator(`#member-list [data-user="${u}"]`).waitFor();

  await send(alice, 'Perfect. I tried it by killing a node mid-conversation: no gaps, no duplicates.');
  await waitMessage(bob, 'Perfect. I tried it by killing a node mid-conversation: no gaps, no duplicates.');
  await send(bob, "That's the best kind of boring.");
  await send(carol, 'Shipping it then!');
  await waitMessage(alice, 'Shipping it then!');
  await send(alice, "I'll tag the release after lunch.");
  await waitMessage(alice, "I'll tag the release after lunch.");

  // Something unread elsewhere: a room and a DM.
  await carol.locator('#room-list [data-key="room:design"]').click();
  await send(carol, 'New sidebar mockups are in the design doc, comments welcome');
  await send(carol, 'Especially on the unread badges');
  await alice.locator('#room-list [data-key="room:design"] .badge', { hasText: '2' }).waitFor();
  await bob.locator('#people-list [data-user="alice"]').click();
  await send(bob, 'Got a minute to pair on the reconnect tests?');
  await alice.locator('#dm-list [data-key="dm:bob"] .badge', { hasText: '1' }).waitFor();

  // dave starts typing in #general.
  await dave.locator('#room-list [data-key="room:general"]').click();
  await dave.locator('#composer-input').click();
  await dave.keyboard.type('Congrats team', { delay: 5 });
  await alice.waitForFunction(() => document.querySelector('#typing').textContent === 'dave.k is typing…');
  await alice.locator('#composer-input').fill('Thanks everyone!');
  await alice.mouse.move(0, 0);

  const desktop = path.join(OUT, 'desktop.png');
  await alice.screenshot({ path: desktop, animations: 'disabled' });

  await alice.setViewportSize({ width: 390, height: 844 });
  await alice.waitForFunction(() => getComputedStyle(document.querySelector('#sidebar')).position === 'fixed');
  await alice.evaluate(() => {
    const m = document.querySelector('#messages');
    m.scrollTop = m.scrollHeight;
  });
  const phone = path.join(OUT, 'phone.png');
  await alice.screenshot({ path: phone, animations: 'disabled' });

  for (const file of [desktop, phone]) assert.ok(fs.statSync(file).size > 10000, `${file} written`);
  assert.deepEqual(alice.errors, []);
});
