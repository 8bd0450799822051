// A node dies under a connected page: the page shows that it is
// reconnecting, moves to the other node of its `nodes` list, rejoins with
// `since`, and shows what was sent meanwhile exactly once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, postMessage } from './lib/cluster.js';
import { launchBrowser, openClient, waitConnected, send, waitMessage, messageTexts } from './lib/browser.js';

let cluster;
let browser;

before(async () => {
  cluster = await startCluster({ count: 3 });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (cluster) await cluster.stop();
});

test('a killed node: reconnect to the other node, nothing missed, nothing twice', async () => {
  const [doomed, survivor] = cluster.nodes;
  // alice's page comes from the surviving node but talks to the doomed one first.
  const alice = await openClient(browser, survivor, {
    name: 'alice',
    room: 'ops',
    nodes: `${doomed.ws},${survivor.ws}`,
  });
  const bob = await openClient(browser, survivor, { name: 'bob', room: 'ops' });
  await waitConnected(alice, doomed.id);
  await waitConnected(bob, survivor.id);
  await alice.locator('#member-list [data-user="bob"]').waitFor();

  await send(bob, 'before the crash');
  await waitMessage(alice, 'before the crash');
  await send(alice, 'alice was here');
  await waitMessage(bob, 'alice was here');
  // A DM before the crash, to check the DM resync too.
  await alice.locator('#people-list [data-user="bob"]').click();
  await send(alice, 'dm before');
  await waitMessage(alice, 'dm before');
  await alice.locator('#room-list [data-key="room:ops"]').click();
  await waitMessage(alice, 'alice was here');

  // Hold alice's reconnects back (the browser is offline) so that the
  // messages below are sent while she is disconnected, whatever the timing.
  await alice.context().setOffline(true);
  await doomed.kill(); // SIGKILL: no close frame, no drain

  await alice.waitForFunction(() => document.querySelector('#conn-status').dataset.state === 'reconnecting');
  await alice.locator('#conn-banner', { hasText: 'Connection lost' }).waitFor();
  assert.match(await alice.textContent('#conn-status'), /^Reconnecting/);

  // While she is away, bob (on the surviving node) talks in the room and by DM.
  const meanwhile = ['while you were away 1', 'while you were away 2', 'while you were away 3'];
  for (const text of meanwhile) {
    await send(bob, text);
    await waitMessage(bob, text);
  }
  await bob.locator('#dm-list [data-key="dm:alice"]').click();
  await send(bob, 'dm while away');
  await waitMessage(bob, 'dm while away');
  // alice writes while offline: queued as pending, sent after the rejoin.
  await send(alice, 'written while offline');
  await alice.locator('#messages .msg[data-state="pending"]').waitFor();
  assert.deepEqual(await messageTexts(alice), ['before the crash', 'alice was here', 'written while offline']);

  await alice.context().setOffline(false);
  await waitConnected(alice, survivor.id);
  assert.match(await alice.textContent('#conn-status'), new RegExp(`Connected · node ${survivor.id}`));
  await alice.locator('#conn-banner').waitFor({ state: 'hidden' });

  for (const text of meanwhile) await waitMessage(alice, text);
  await waitMessage(alice, 'written while offline');
  // One more after the reconnect, live.
  await bob.locator('#room-list [data-key="room:ops"]').click();
  await send(bob, 'after the reconnect');
  await waitMessage(alice, 'after the reconnect');
  await waitMessage(bob, 'written while offline');

  const expected = ['before the crash', 'alice was here', ...meanwhile, 'written while offline', 'after the reconnect'];
  assert.deepEqual(await messageTexts(alice), expected, 'every message exactly once, in order');
  assert.deepEqual(await messageTexts(bob), expected);
  const ids = await alice.$$eval('#messages .msg', (n) => n.map((m) => m.dataset.id));
  assert.equal(new Set(ids).size, expected.length);
  assert.ok(ids.every(Boolean), 'all confirmed');

  // The DM sent while she was away appears once after the resync.
  await alice.locator('#dm-list [data-key="dm:bob"] .badge', { hasText: '1' }).waitFor();
  await alice.locator('#dm-list [data-key="dm:bob"]').click();
  await waitMessage(alice, 'dm while away');
  assert.deepEqual(await messageTexts(alice), ['dm before', 'dm while away']);

  const events = await alice.evaluate(() => window.chorus.state.events.map((e) => e.state));
  assert.ok(events.includes('reconnecting'));
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
});

test('a draining node (close 1001): reconnect at once to the next node', async () => {
  const [, survivor, draining] = cluster.nodes;
  const carol = await openClient(browser, survivor, {
    name: 'carol',
    room: 'drain',
    nodes: `${draining.ws},${survivor.ws}`,
  });
  await waitConnected(carol, draining.id);
  await send(carol, 'on the draining node');
  await waitMessage(carol, 'on the draining node');

  const stopped = draining.stop(); // SIGTERM: the node closes every socket with 1001
  await waitConnected(carol, survivor.id);
  await stopped;
  const events = await carol.evaluate(() => window.chorus.state.events);
  const lost = events.findLastIndex((e) => e.state !== 'open');
  const back = events.findLastIndex((e) => e.state === 'open');
  const firstLost = events.findIndex((e, i) => i > 1 && e.state !== 'open');
  assert.ok(back > lost, 'connected again');
  assert.ok(events[back].t - events[firstLost].t < 2000, 'reconnected within 2 s');

  await postMessage(survivor, 'drain', 'dave', 'after the drain');
  await waitMessage(carol, 'after the drain');
  assert.deepEqual(await messageTexts(carol), ['on the draining node', 'after the drain']);
  assert.deepEqual(carol.errors, []);
});
