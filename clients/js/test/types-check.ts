// Compiled by `npx -p typescript tsc` during development, not by npm test:
// the declarations in index.d.ts must accept this ordinary use.
import ChorusClient, { ChorusError, compareIds, type RoomMessage, type JoinedFrame } from '../index.js';

async function main(): Promise<void> {
  const client = new ChorusClient({ urls: ['http://a:8080', 'http://b:8080'], username: 'alice', WebSocket: globalThis.WebSocket });
  const off = client.on('message', (m: RoomMessage, meta) => {
    const r: boolean = meta.replayed;
    console.log(m.id, m.user, m.content, r);
  });
  client.on('state', (s) => console.log(s.state, s.code));
  client.on('dm', (m) => console.log(m.from, m.to));
  client.on('joined', (j, meta) => console.log(j.members, meta.missed.length));
  client.on('error', (e) => console.log(e.message));
  await client.connect();
  const j: JoinedFrame = await client.join('lobby', { since: client.lastId('lobby') ?? undefined });
  console.log(j.history.length);
  try {
    const m = await client.send('lobby', 'hi', { attachments: ['u1'] });
    console.log(m.ts);
  } catch (err) {
    if (err instanceof ChorusError && err.code === 'rate_limited') console.log('slow down');
  }
  const page = await client.history({ with: 'bob' }, { limit: 10 });
  console.log(page.length, compareIds('1-0', '2-0'));
  client.typing('lobby');
  client.on('deleted', (d) => console.log(d.room, d.id));
  client.on('state', (s) => console.log(s.at));
  client.retryNow();
  off();
  client.close();
}
void main;
const withToken = new ChorusClient({ url: 'wss://chat.example', getToken: async () => 'jwt' });
void withToken;
