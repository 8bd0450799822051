// An administrator deletes a message (DELETE /api/admin/rooms/{room}/messages/{id})
// on two real nodes sharing a real Redis: a client in the room on the other
// node gets `deleted`, and a reconnect with `since` does not bring it back.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startCluster } from './cluster.js';
import { client, nextEvent, uniq, waitFor } from './helpers.js';

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
