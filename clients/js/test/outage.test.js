// A Redis outage: sends answered `unavailable` are tried again under the
// same idempotency key and resolve once Redis is back, each stored once.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { startCluster, until } from './cluster.js';
import { client, sleep, uniq, WebSocketImpl } from './helpers.js';

let cluster;
const open = [];

before(async () => {
  cluster = await startCluster({ count: 1 });
});

after(async () => {
  for (const c of open) c.close();
  if (cluster) await cluster.stop();
});

test('sends during a Redis outage resolve after it, stored once', async () => {
  const [node] = cluster.nodes;
  const sentKeys = new Map();
  class RecordingWebSocket extends WebSocketImpl {
    send(data) {
      const f = JSON.parse(data);
      if (f.idempotency_key) sentKeys.set(f.idempotency_key, (sentKeys.get(f.idempotency_key) || 0) + 1);
      return super.send(data);
    }
  }
  const c = client({ url: node.http, username: uniq('outage'), unavailableRetries: 8, WebSocket: RecordingWebSocket });
  open.push(c);
  await c.connect();
  const room = uniq('outage');
  await c.join(room);
  await c.send(room, 'before');

  // Stop Redis (no save), start a fresh one on the same port.
  await cluster.redis.stop();
  const sends = [];
  for (let i = 0; i < 5; i += 1) sends.push(c.send(room, `during-${i}`));
  await sleep(1000);
  const redis = spawn('redis-server', ['--port', String(cluster.redis.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  try {
    await until('node ready again', 15000, async () => (await fetch(`${node.http}/ready`)).status === 200);
    const stored = await Promise.all(sends);
    assert.deepEqual(
      stored.map((m) => m.content),
      ['during-0', 'during-1', 'during-2', 'during-3', 'during-4'],
    );
    // Each was answered `unavailable` at least once and sent again under its key.
    assert.equal([...sentKeys.values()].filter((n) => n > 1).length, 5, JSON.stringify([...sentKeys.values()]));
    assert.ok(c.connected, 'the socket stayed open');
    const hist = await c.history(room);
    const counts = {};
    for (const m of hist) counts[m.content] = (counts[m.content] || 0) + 1;
    for (let i = 0; i < 5; i += 1) assert.equal(counts[`during-${i}`], 1);
  } finally {
    c.close();
    await cluster.stop().catch(() => {});
    cluster = null;
    redis.kill('SIGKILL');
  }
});
