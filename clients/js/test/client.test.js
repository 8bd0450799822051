// The client against two real chorus nodes sharing a real Redis.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ChorusClient, ChorusError, compareIds } from '../src/index.js';
import { startCluster } from './cluster.js';
import { client, nextEvent, uniq, waitFor, WebSocketImpl } from './helpers.js';

// For the deletion test; no other test needs an administrator.
const ADMIN = 'client-test-admin-token-of-32-bytes-at-least';
let cluster;
const open = [];
function mk(opts) {
  const c = client(opts);
  open.push(c);
  return c;
}

before(async () => {
  cluster = await startCluster({ count: 2, env: { CHORUS_ADMIN_TOKEN: ADMIN } });
});

after(async () => {
  for (const c of open) c.close();
  if (cluster) await cluster.stop();
});

describe('ChorusClient', () => {
  test('constructor checks its options', () => {
    assert.throws(() => new ChorusClient({ username: 'a', WebSocket: WebSocketImpl }), /url/);
    assert.throws(() => new ChorusClient({ url: 'ws://x/ws', WebSocket: WebSocketImpl }), /username/);
  });

  test('connect, join, send resolves with the stored message, seen on another node', async () => {
    const [a, b] = cluster.nodes;
    const room = uniq('room');
    const alice = mk({ url: a.http, username: uniq('alice') });
    const bob = mk({ url: b.ws, username: uniq('bob') });
    const welcome = await alice.connect();
    assert.equal(welcome.type, 'welcome');
    assert.equal(welcome.node, 'node-1');
    await bob.connect();
    const joined = await alice.join(room);
    assert.equal(joined.type, 'joined');
    assert.equal(joined.room, room);
    assert.deepEqual(joined.history, []);
    await bob.join(room);

    const atBob = nextEvent(bob, 'message', (m) => m.content === 'hello');
    const stored = await alice.send(room, 'hello');
    assert.equal(stored.type, 'message');
    assert.equal(stored.room, room);
    assert.equal(stored.user, alice.user);
    assert.equal(stored.content, 'hello');
    assert.ok(stored.id);
    assert.ok(stored.ts);
    const got = await atBob;
    assert.equal(got.id, stored.id);
    assert.equal(alice.lastId(room), stored.id);

    // A later join elsewhere sees it in history.
    const carol = mk({ url: b.http, username: uniq('carol') });
    await carol.connect();
    const j = await carol.join(room);
    assert.deepEqual(
      j.history.map((m) => m.id),
      [stored.id],
    );
    assert.deepEqual(j.members.sort(), [alice.user, bob.user, carol.user].sort());
  });

  test('server errors reject with their code', async () => {
    const c = mk({ url: cluster.nodes[0].http, username: uniq('err') });
    await c.connect();
    await assert.rejects(c.join('bad room!'), (err) => err instanceof ChorusError && err.code === 'invalid_room');
    await assert.rejects(c.send('not-joined', 'x'), (err) => err.code === 'not_member');
    const room = uniq('big');
    await c.join(room);
    await assert.rejects(
      c.send(room, 'x'.repeat(5000)),
      (err) => err.code === 'too_large' && typeof err.message === 'string' && typeof err.idempotencyKey === 'string',
    );
    await assert.rejects(c.dm('no such user!', 'x'), (err) => err.code === 'invalid_user');
    // The socket stays usable.
    const ok = await c.send(room, 'still here');
    assert.equal(ok.content, 'still here');
  });

  test('the same idempotency key twice: one stored message, one event', async () => {
    const c = mk({ url: cluster.nodes[0].http, username: uniq('idem') });
    const peer = mk({ url: cluster.nodes[1].http, username: uniq('idemp') });
    await Promise.all([c.connect(), peer.connect()]);
    const room = uniq('idem');
    await c.join(room);
    await peer.join(room);
    const events = [];
    c.on('message', (m) => events.push(m.id));
    const atPeer = [];
    peer.on('message', (m) => atPeer.push(m.id));
    const first = await c.send(room, 'once', { idempotencyKey: 'key-1' });
    const again = await c.send(room, 'once', { idempotencyKey: 'key-1' });
    assert.equal(again.id, first.id);
    assert.equal(again.ts, first.ts);
    const dm1 = await c.dm(peer.user, 'dm once', { idempotencyKey: 'key-2' });
    const dm2 = await c.dm(peer.user, 'dm once', { idempotencyKey: 'key-2' });
    assert.equal(dm2.id, dm1.id);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(events, [first.id]);
    assert.deepEqual(atPeer, [first.id]);
    assert.equal((await c.history(room)).length, 1);
    assert.equal((await c.history({ with: peer.user })).length, 1);
  });

  test('direct messages reach both sides across nodes', async () => {
    const alice = mk({ url: cluster.nodes[0].http, username: uniq('dma') });
    const bob = mk({ url: cluster.nodes[1].http, username: uniq('dmb') });
    await Promise.all([alice.connect(), bob.connect()]);
    const atBob = nextEvent(bob, 'dm', (m) => m.content === 'psst');
    const atAlice = nextEvent(alice, 'dm', (m) => m.content === 'psst');
    const stored = await alice.dm(bob.user, 'psst');
    assert.equal(stored.type, 'dm');
    assert.equal(stored.from, alice.user);
    assert.equal(stored.to, bob.user);
    assert.equal((await atBob).id, stored.id);
    assert.equal((await atAlice).id, stored.id);
    const hist = await bob.history({ with: alice.user });
    assert.deepEqual(
      hist.map((m) => m.content),
      ['psst'],
    );
  });

  test('history pages backwards, oldest first', async () => {
    const c = mk({ url: cluster.nodes[0].http, username: uniq('hist') });
    await c.connect();
    const room = uniq('hist');
    await c.join(room);
    const sent = [];
    for (let i = 0; i < 25; i += 1) sent.push(await c.send(room, `m${i}`));
    const page1 = await c.history(room, { limit: 10 });
    assert.deepEqual(
      page1.map((m) => m.content),
      sent.slice(15).map((m) => m.content),
    );
    const page2 = await c.history(room, { before: page1[0].id, limit: 10 });
    assert.deepEqual(
      page2.map((m) => m.content),
      sent.slice(5, 15).map((m) => m.content),
    );
    const page3 = await c.history(room, { before: page2[0].id, limit: 10 });
    assert.deepEqual(
      page3.map((m) => m.content),
      sent.slice(0, 5).map((m) => m.content),
    );
    const ids = [...page3, ...page2, ...page1].map((m) => m.id);
    const sorted = [...ids].sort(compareIds);
    assert.deepEqual(ids, sorted);
    // join with since: exactly what came after.
    const other = mk({ url: cluster.nodes[1].http, username: uniq('since') });
    await other.connect();
    const j = await other.join(room, { since: sent[19].id });
    assert.deepEqual(
      j.history.map((m) => m.content),
      ['m20', 'm21', 'm22', 'm23', 'm24'],
    );
  });

  test('presence, typing, leave and switch', async () => {
    const room = uniq('pres');
    const room2 = uniq('pres2');
    const alice = mk({ url: cluster.nodes[0].http, username: uniq('pa') });
    const bob = mk({ url: cluster.nodes[1].http, username: uniq('pb') });
    await Promise.all([alice.connect(), bob.connect()]);
    await alice.join(room);
    const joinSeen = nextEvent(alice, 'presence', (p) => p.room === room && p.user === bob.user && p.event === 'join');
    await bob.join(room);
    await joinSeen;

    const typingSeen = nextEvent(alice, 'typing', (t) => t.room === room && t.user === bob.user);
    assert.equal(bob.typing(room), true);
    await typingSeen;

    const leaveSeen = nextEvent(alice, 'presence', (p) => p.room === room && p.user === bob.user && p.event === 'leave');
    const left = await bob.leave(room);
    assert.equal(left.type, 'left');
    await leaveSeen;
    assert.deepEqual(bob.joinedRooms, []);

    await bob.join(room);
    const switchedAway = nextEvent(alice, 'presence', (p) => p.room === room && p.user === bob.user && p.event === 'leave');
    const joined2 = await bob.switch(room, room2);
    assert.equal(joined2.room, room2);
    await switchedAway;
    assert.deepEqual(bob.joinedRooms, [room2]);
    // A failed switch leaves bob where he was.
    await assert.rejects(bob.switch(room2, 'bad name!'), (err) => err.code === 'invalid_room');
    assert.deepEqual(bob.joinedRooms, [room2]);
    const m = await bob.send(room2, 'still in room2');
    assert.equal(m.room, room2);
  });

  test('a dropped socket: missed room messages and DMs are caught up once', async () => {
    const room = uniq('gap');
    const alice = mk({ urls: [cluster.nodes[0].http, cluster.nodes[1].http], username: uniq('gapa'), backoffStartMs: 400 });
    const bob = mk({ url: cluster.nodes[1].http, username: uniq('gapb') });
    await Promise.all([alice.connect(), bob.connect()]);
    await alice.join(room);
    await bob.join(room);
    const got = [];
    alice.on('message', (m, meta) => got.push([m.content, meta.replayed]));
    alice.on('dm', (m, meta) => got.push([m.content, meta.replayed]));
    const first = nextEvent(alice, 'dm', (m) => m.content === 'dm-0');
    await bob.dm(alice.user, 'dm-0');
    await first;
    await bob.send(room, 'room-0');
    await nextEvent(alice, 'message', (m) => m.content === 'room-0').catch(() => {});
    // Drop alice's socket under her (as a network failure would).
    const down = nextEvent(alice, 'disconnected');
    alice.ws.close();
    await down;
    await bob.send(room, 'room-1');
    await bob.dm(alice.user, 'dm-1');
    await bob.send(room, 'room-2');
    await nextEvent(alice, 'state', (s) => s.state === 'open');
    await waitFor('caught up', 5000, () => got.length >= 5).catch((err) => {
      throw new Error(`${err.message}: ${JSON.stringify(got)} state ${alice.state}`);
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(
      got.sort(),
      [
        ['dm-0', false],
        ['dm-1', true],
        ['room-0', false],
        ['room-1', true],
        ['room-2', true],
      ],
    );
    assert.equal(alice.node, 'node-2');
  });

  test('retryNow skips the backoff; a DM pair read with history is caught up after the reconnect', async () => {
    const aliceName = uniq('rna');
    const alice = mk({ url: cluster.nodes[0].http, username: aliceName, backoffStartMs: 60000, backoffCapMs: 60000 });
    const bob = mk({ url: cluster.nodes[1].http, username: uniq('rnb') });
    await bob.connect();
    await bob.dm(aliceName, 'before alice came');
    await alice.connect();
    // alice learns of bob only from history: no DM of theirs came live.
    assert.deepEqual(
      (await alice.history({ with: bob.user })).map((m) => m.content),
      ['before alice came'],
    );
    const got = [];
    alice.on('dm', (m, meta) => got.push([m.content, meta.replayed]));
    const waiting = nextEvent(alice, 'state', (s) => s.waiting);
    alice.ws.close();
    const wait = await waiting;
    assert.ok(wait.at >= Date.now() + 30000, `waits out the backoff until ${wait.at}`);
    await bob.dm(alice.user, 'while alice was away');
    const back = nextEvent(alice, 'state', (s) => s.state === 'open');
    alice.retryNow();
    await back;
    await waitFor('the missed DM', 5000, () => got.length >= 1);
    assert.deepEqual(got, [['while alice was away', true]]);
  });

  test('a message an administrator deletes: `deleted` event, and no reconnect brings it back', async () => {
    const [a, b] = cluster.nodes;
    const room = uniq('del');
    const writer = mk({ url: a.http, username: uniq('writer') });
    const reader = mk({ urls: [b.http, a.http], username: uniq('reader') });
    await Promise.all([writer.connect(), reader.connect()]);
    await writer.join(room);
    await reader.join(room);
    const delivered = [];
    reader.on('message', (m) => delivered.push(m.content));

    await writer.send(room, 'kept');
    const seen = nextEvent(reader, 'message', (m) => m.content === 'doomed');
    const doomed = await writer.send(room, 'doomed');
    await seen;

    const deleted = nextEvent(reader, 'deleted', (d) => d.id === doomed.id);
    const answer = await fetch(`${a.http}/api/admin/rooms/${room}/messages/${doomed.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    assert.equal(answer.status, 204);
    assert.deepEqual(await deleted, { type: 'deleted', room, id: doomed.id });

    // Reconnected (to the other node) with `since` = the deleted message's id,
    // the newest it had seen: what came after arrives, the deleted message
    // does not, in the rejoin nor in history.
    assert.equal(reader.lastId(room), doomed.id);
    const rejoined = nextEvent(reader, 'joined', (j, meta) => j.room === room && meta.rejoin);
    reader.ws.close();
    await nextEvent(reader, 'disconnected');
    await writer.send(room, 'after the reconnect');
    const joined = await rejoined;
    assert.ok(!joined.history.some((m) => m.id === doomed.id));
    await waitFor('the message sent meanwhile', 5000, () => delivered.includes('after the reconnect'));
    assert.deepEqual(delivered, ['kept', 'doomed', 'after the reconnect']);
    assert.deepEqual(
      (await reader.history(room)).map((m) => m.content),
      ['kept', 'after the reconnect'],
    );
  });

  test('a node that accepts but never answers: the next node after connectTimeoutMs', async () => {
    const silent = net.createServer(() => {}); // takes the TCP connection, never answers the upgrade
    await new Promise((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const c = mk({ urls: [`http://127.0.0.1:${silent.address().port}`, cluster.nodes[0].http], username: uniq('to'), connectTimeoutMs: 300 });
      const t0 = Date.now();
      const welcome = await c.connect();
      assert.equal(welcome.node, 'node-1');
      assert.ok(Date.now() - t0 < 3000);
    } finally {
      silent.close();
    }
  });

  test('state events and close', async () => {
    const c = mk({ url: cluster.nodes[0].http, username: uniq('st') });
    const states = [];
    c.on('state', (s) => states.push(s.state));
    await c.connect();
    c.close();
    assert.deepEqual(states, ['connecting', 'open', 'closed']);
    await assert.rejects(c.join('x'), (err) => err.code === 'closed');
  });
});
