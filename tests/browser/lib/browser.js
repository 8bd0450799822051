// Debian's chromium driven by playwright-core; one fresh profile per launch.
import crypto from 'node:crypto';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const T = 15000; // default bound of every wait

export async function launchBrowser() {
  // launch() gives every browser a new, empty temporary user-data-dir.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Opens the client for one user in its own browser context.
 * `node` serves the page; `query` adds parameters (ws, nodes, name, room).
 */
export async function openClient(browser, node, query, { viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport, locale: 'en-US', timezoneId: 'UTC' });
  context.setDefaultTimeout(T);
  const page = await context.newPage();
  page.dialogs = [];
  page.errors = [];
  page.on('dialog', async (d) => {
    page.dialogs.push(d.message());
    await d.dismiss();
  });
  page.on('pageerror', (err) => page.errors.push(String(err)));
  const qs = new URLSearchParams(query).toString();
  await page.goto(`${node.http}/?${qs}`);
  return page;
}

/** Waits until the page is connected, to `nodeId` when given. */
export async function waitConnected(page, nodeId) {
  await page.waitForFunction(
    (id) => {
      const s = document.querySelector('#conn-status');
      return s && s.dataset.state === 'open' && (!id || s.textContent.includes(id));
    },
    nodeId || null,
    { timeout: T },
  );
}

/** The texts of the messages shown in the open conversation. */
export function messageTexts(page) {
  return page.$$eval('#messages .msg .text', (nodes) => nodes.map((n) => n.textContent));
}

/** Waits until a message with exactly this text is shown (and confirmed, if `confirmed`). */
export async function waitMessage(page, text, { confirmed = true, timeout = T } = {}) {
  await page.waitForFunction(
    ([t, c]) =>
      [...document.querySelectorAll('#messages .msg')].some(
        (m) => m.querySelector('.text').textContent === t && (!c || (m.dataset.state === 'sent' && m.dataset.id)),
      ),
    [text, confirmed],
    { timeout },
  );
}

export async function send(page, text) {
  const input = page.locator('#composer-input');
  await input.click();
  await input.fill(text);
  await input.press('Enter');
}

/** An HS256 JWT for `sub`, good for an hour, signed with `secret`. */
export function signToken(sub, secret) {
  const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  const sig = crypto.createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}
