// Tokens and closes that must not be retried: one embedded node with a JWT
// secret. The server accepts a token up to 30 s past its `exp` (clock-skew
// leeway) and closes the socket then, so a token whose `exp` was 27 s ago
// is closed with 1008 about 3 s after connecting.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, test } from 'node:test';
import { WebSocketServer } from 'ws';
import { startNode } from './cluster.js';
import { client, nextEvent, sleep, uniq, waitFor } from './helpers.js';

const SECRET = 'jsclient-test-secret-0123456789abcdef';
let node;
const open = [];
function mk(opts) {
  const c = client(opts);
  open.push(c);
  return c;
}

const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
function jwt(sub, ttlSecs) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + ttlSecs });
  const sig = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

before(async () => {
  node = await startNode({ id: 'auth-node', env: { CHORUS_JWT_SECRET: SECRET } });
});

after(async () => {
  for (const c of open) c.close();
  if (node) await node.stop();
});

test('getToken: asked before expiry; the 1008 at expiry reconnects with the new token', async () => {
  const user = uniq('tok');
  const issued = [];
  const c = mk({
    url: node.http,
    getToken: async () => {
      // The first token lives 3 s more; the refresh (due 30 s before
      // `exp`, so after the 1 s minimum here) gets a long one.
      const t = jwt(user, issued.length === 0 ? -27 : 600);
      issued.push(t);
      return t;
    },
  });
  const room = uniq('tokroom');
  await c.connect();
  assert.equal(c.user, user);
  await c.join(room);
  const closed = nextEvent(c, 'disconnected', () => true, 8000);
  const ev = await closed;
  assert.equal(ev.code, 1008);
  await waitFor('back online', 3000, () => c.connected);
  assert.ok(issued.length >= 2, 'getToken was asked again before expiry');
  assert.deepEqual(c.joinedRooms, [room]);
  const m = await c.send(room, 'with a fresh token');
  assert.equal(m.user, user);
});

test('1008 without getToken: closed for good', async () => {
  const c = mk({ url: node.http, token: jwt(uniq('short'), -28) });
  await c.connect();
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const closed = nextEvent(c, 'state', (s) => s.state === 'closed', 8000);
  const s = await closed;
  assert.equal(s.code, 1008);
  assert.equal(errors[0].code, 'auth');
  await sleep(500);
  assert.equal(c.state, 'closed');
  assert.equal(c.connected, false);
});

test('4001 (removed by an administrator): no reconnect, pending sends rejected', async () => {
  // This chorus build has no admin API yet, so a stand-in server (the ws
  // package) plays the node: welcome, then close 4001; it counts upgrades.
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => server.once('listening', r));
  let upgrades = 0;
  server.on('connection', (sock) => {
    upgrades += 1;
    sock.send(JSON.stringify({ type: 'welcome', user: 'eve', node: 'fake', session: 's' }));
    sock.on('message', (data) => {
      const f = JSON.parse(String(data));
      if (f.type === 'join') {
        sock.send(JSON.stringify({ type: 'joined', room: f.room, members: ['eve'], history: [], ref: f.ref }));
        setTimeout(() => sock.close(4001, 'removed by an administrator'), 50);
      }
    });
  });
  try {
    const c = mk({ url: `ws://127.0.0.1:${server.address().port}/ws`, username: 'eve' });
    await c.connect();
    const closed = nextEvent(c, 'state', (s) => s.state === 'closed', 5000);
    await c.join('r');
    const pending = c.send('r', 'never sent'); // queued: the socket is closing
    assert.equal((await closed).code, 4001);
    await assert.rejects(pending, (err) => err.code === 'removed');
    await sleep(600);
    assert.equal(upgrades, 1, 'did not reconnect');
    assert.equal(c.state, 'closed');
    await assert.rejects(c.send('r', 'x'), (err) => err.code === 'closed');
  } finally {
    server.close();
  }
});
