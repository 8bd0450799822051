import WS from 'ws';
import { ChorusClient } from '../src/index.js';

// Node 22+ has a global WebSocket; older Node gets the `ws` package (a devDependency).
export const WebSocketImpl = globalThis.WebSocket || WS;

let n = 0;
/** A unique name with a readable stem. */
export function uniq(stem) {
  n += 1;
  return `${stem}${process.pid % 1000}x${n}`;
}

export function client(opts) {
  return new ChorusClient({ WebSocket: WebSocketImpl, backoffStartMs: 100, ...opts });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the first event `event` of `c` for which `pred` holds. */
export function nextEvent(c, event, pred = () => true, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = c.on(event, (frame, meta) => {
      if (!pred(frame, meta)) return;
      clearTimeout(timer);
      off();
      resolve(frame);
    });
  });
}

export async function waitFor(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${what}`);
}
