// A node SIGKILLed mid-conversation: the client on it moves to the other
// node, rejoins with `since`, and ends with every message of the others
// exactly once and each of its own sends stored and delivered exactly once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startCluster } from './cluster.js';
import { client, nextEvent, sleep, uniq, waitFor, WebSocketImpl } from './helpers.js';

let cluster;
const open = [];
function mk(opts) {
  const c = client(opts);
  open.push(c);
  return c;
}

before(async () => {
  cluster = await startCluster({ count: 2 });
});

after(async () => {
  for (const c of open) c.close();
  if (cluster) await cluster.stop();
});

test('SIGKILL of the node under a client: nothing lost, nothing twice', async (t) => {
  const [a, b] = cluster.nodes;
  const room = uniq('failover');
  // Counts the subject's outgoing sends per idempotency key.
  const sentKeys = new Map();
  class RecordingWebSocket extends WebSocketImpl {
    send(data) {
      const f = JSON.parse(data);
      if (f.idempotency_key) sentKeys.set(f.idempotency_key, (sentKeys.get(f.idempotency_key) || 0) + 1);
      return super.send(data);
    }
  }
  const subject = mk({ urls: [a.http, b.http], username: uniq('subject'), WebSocket: RecordingWebSocket });
  const senders = [mk({ url: b.http, username: uniq('s1') }), mk({ url: b.http, username: uniq('s2') })];

  const states = [];
  subject.on('state', (s) => states.push(s));
  const received = new Map(); // id -> times delivered as 'message'
  const receivedContent = new Map(); // content -> times
  let replayed = 0;
  subject.on('message', (m, meta) => {
    if (meta.replayed) replayed += 1;
    received.set(m.id, (received.get(m.id) || 0) + 1);
    receivedContent.set(m.content, (receivedContent.get(m.content) || 0) + 1);
  });

  const welcome = await subject.connect();
  assert.equal(welcome.node, a.id);
  await subject.join(room);
  for (const s of senders) {
    await s.connect();
    await s.join(room);
  }

  let running = true;
  const othersSent = new Map(); // id -> content
  const senderErrors = [];
  const senderLoops = senders.map(async (s, k) => {
    let i = 0;
    while (running) {
      try {
        const m = await s.send(room, `other-${k}-${i}`);
        othersSent.set(m.id, m.content);
      } catch (err) {
        senderErrors.push(err);
      }
      i += 1;
      await sleep(8);
    }
  });

  const ownSends = [];
  const ownLoop = (async () => {
    let i = 0;
    while (running) {
      const content = `own-${i}`;
      ownSends.push({ content, p: subject.send(room, content) });
      i += 1;
      await sleep(15);
    }
  })();

  await sleep(1000);
  const beforeKill = received.size;
  // A burst written just before the kill: most of it is in flight when the
  // node dies, so it must go out again, under the same keys, on node 2.
  for (let i = 0; i < 20; i += 1) {
    const content = `burst-${i}`;
    ownSends.push({ content, p: subject.send(room, content) });
  }
  await a.kill(); // SIGKILL: no close frame, no presence cleanup
  await waitFor('the subject back on the other node', 10000, () => subject.connected && subject.node === b.id);
  await sleep(1000);
  running = false;
  await Promise.all([...senderLoops, ownLoop]);

  const own = await Promise.all(ownSends.map((s) => s.p));
  await waitFor('every message of the others at the subject', 10000, () => [...othersSent.keys()].every((id) => received.has(id)));
  await waitFor('every own message at the subject', 10000, () => own.every((m) => received.has(m.id)));
  await sleep(200); // would-be duplicates arriving late

  assert.deepEqual(senderErrors, []);
  assert.ok(beforeKill > 0, 'messages flowed before the kill');
  assert.ok(states.some((s) => s.state === 'reconnecting'), 'went through reconnecting');

  const lost = [...othersSent.keys()].filter((id) => !received.has(id));
  const dups = [...received.entries()].filter(([, n]) => n > 1);
  const dupContents = [...receivedContent.entries()].filter(([, n]) => n > 1);
  const summary = {
    othersSent: othersSent.size,
    ownSent: own.length,
    received: received.size,
    replayedAfterRejoin: replayed,
    ownResent: [...sentKeys.values()].filter((n) => n > 1).length,
    lost: lost.length,
    duplicated: dups.length + dupContents.length,
  };
  t.diagnostic(`failover: ${JSON.stringify(summary)}`);
  assert.ok(replayed > 0, 'some messages came back through the rejoin with since');
  assert.ok(summary.ownResent > 0, 'some own sends went out again after the failover');
  assert.equal(lost.length, 0, `lost: ${lost.slice(0, 5)}`);
  assert.equal(dups.length, 0, `delivered twice: ${dups.slice(0, 5)}`);
  assert.equal(dupContents.length, 0, `same content twice: ${dupContents.slice(0, 5)}`);

  // Own sends: each resolved with its own stored message, each stored once.
  assert.equal(new Set(own.map((m) => m.id)).size, own.length);
  own.forEach((m, i) => assert.equal(m.content, ownSends[i].content));
  const stored = [];
  let before;
  for (;;) {
    const page = await senders[0].history(room, { before, limit: 100 });
    if (!page.length) break;
    stored.unshift(...page);
    before = page[0].id;
    if (page.length < 100) break;
  }
  const storedOwn = stored.filter((m) => m.user === subject.user).map((m) => m.content);
  assert.equal(storedOwn.length, own.length, 'each own send stored exactly once');
  assert.equal(new Set(storedOwn).size, own.length);
  assert.equal(stored.length, othersSent.size + own.length);
  // And the subject saw exactly the stored set.
  assert.equal(received.size, stored.length);
});

test('a draining node (1001): the client moves on at once, rejoins, keeps sending', async () => {
  const b = cluster.nodes[1];
  const c = await cluster.addNode('node-3');
  const room = uniq('drain');
  const subject = mk({ urls: [c.http, b.http], username: uniq('drainee'), backoffStartMs: 2000 });
  const peer = mk({ url: b.http, username: uniq('peer') });
  await Promise.all([subject.connect(), peer.connect()]);
  assert.equal(subject.node, 'node-3');
  await subject.join(room);
  await peer.join(room);
  const waits = [];
  subject.on('state', (s) => {
    if (s.waiting) waits.push(s);
  });
  const t0 = Date.now();
  await c.stop(); // SIGTERM: the node closes every socket with 1001
  await waitFor('the subject on node-2', 5000, () => subject.connected && subject.node === b.id);
  const took = Date.now() - t0;
  assert.equal(waits[0].code, 1001);
  assert.ok(waits[0].delay < 200, `retried at once, not after the 2 s backoff (waited ${waits[0].delay} ms)`);
  assert.ok(took < 2000, `back within ${took} ms`);
  const atPeer = nextEvent(peer, 'message', (m) => m.content === 'after drain');
  const m = await subject.send(room, 'after drain');
  assert.equal((await atPeer).id, m.id);
});
