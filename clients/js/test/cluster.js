// Starts a real Redis and real chorus nodes on free ports, and stops them.
// CHORUS_BIN overrides the binary (default: <repo>/target/debug/chorus).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const TARGET = process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target');
export const CHORUS_BIN = process.env.CHORUS_BIN || path.join(TARGET, 'debug', 'chorus');
const SHOW_LOGS = process.env.TEST_LOG === '1';

const children = new Set();
// Last resort: never leave a node or a Redis behind, whatever happened.
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function launch(cmd, args, env, label) {
  const full = { ...process.env, ...env };
  for (const k of Object.keys(full)) if (full[k] === undefined) delete full[k];
  const child = spawn(cmd, args, { cwd: ROOT, env: full, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.log = [];
  const keep = (chunk) => {
    const text = chunk.toString();
    child.log.push(text);
    if (child.log.length > 400) child.log.shift();
    if (SHOW_LOGS) process.stderr.write(text.replace(/^/gm, `[${label}] `));
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.exited.then(() => children.delete(child));
  return child;
}

export async function until(what, deadlineMs, probe) {
  const deadline = Date.now() + deadlineMs;
  let last = null;
  while (Date.now() < deadline) {
    try {
      if (await probe()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function redisPing(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    sock.setTimeout(1000, () => {
      sock.destroy();
      resolve(false);
    });
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      data += d;
      if (data.includes('\r\n')) {
        sock.destroy();
        resolve(data.startsWith('+PONG'));
      }
    });
    sock.on('error', () => resolve(false));
  });
}

async function stopChild(child, signal = 'SIGTERM', graceMs = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = new Promise((r) => setTimeout(() => r('timeout'), graceMs));
  if ((await Promise.race([child.exited, timer])) === 'timeout') {
    child.kill('SIGKILL');
    await child.exited;
  }
}

export async function startRedis() {
  const port = await freePort();
  const proc = launch('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {}, `redis:${port}`);
  await until(`redis on ${port}`, 10000, async () => {
    if (proc.exitCode !== null) throw new Error(`redis-server exited: ${proc.log.join('')}`);
    return redisPing(port);
  });
  return { port, url: `redis://127.0.0.1:${port}`, proc, stop: () => stopChild(proc, 'SIGTERM') };
}

export async function startNode({ redisUrl, prefix, id, env = {} }) {
  if (!fs.existsSync(CHORUS_BIN)) throw new Error(`${CHORUS_BIN} not found: run cargo build --bin chorus first`);
  const port = await freePort();
  const proc = launch(
    CHORUS_BIN,
    [],
    {
      HOST: '127.0.0.1',
      PORT: String(port),
      REDIS_URL: redisUrl,
      CHORUS_REDIS_PREFIX: prefix,
      CHORUS_NODE_ID: id,
      CHORUS_RATE_LIMIT: '0',
      RUST_LOG: process.env.RUST_LOG || 'warn',
      ...env,
    },
    id,
  );
  const http = `http://127.0.0.1:${port}`;
  await until(`${id} /ready`, 20000, async () => {
    if (proc.exitCode !== null) throw new Error(`${id} exited: ${proc.log.join('')}`);
    const res = await fetch(`${http}/ready`);
    return res.status === 200;
  });
  return {
    id,
    port,
    http,
    ws: `ws://127.0.0.1:${port}/ws`,
    proc,
    kill: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await proc.exited;
    },
    stop: () => stopChild(proc, 'SIGTERM'),
  };
}

/** A Redis and `count` chorus nodes sharing it (one cluster). */
export async function startCluster({ count = 2, env = {} } = {}) {
  const redis = await startRedis();
  const prefix = `chorus-jsclient-${process.pid}-${Date.now()}:`;
  const nodes = [];
  try {
    const started = [];
    for (let i = 0; i < count; i += 1) started.push(startNode({ redisUrl: redis.url, prefix, id: `node-${i + 1}`, env }));
    nodes.push(...(await Promise.all(started)));
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
    throw err;
  }
  return {
    redis,
    prefix,
    nodes,
    /** One more node in this cluster. */
    async addNode(id, extraEnv = {}) {
      const node = await startNode({ redisUrl: redis.url, prefix, id, env: { ...env, ...extraEnv } });
      nodes.push(node);
      return node;
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
      await redis.stop();
    },
    logs() {
      return nodes.map((n) => `--- ${n.id}\n${n.proc.log.join('')}`).join('\n');
    },
  };
}
