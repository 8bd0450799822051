// Attachments in the web client on an embedded node with a local upload
// folder: a picture chosen with the file input (the paper clip's input)
// uploads with a progress chip and shows inline for another user; a PDF
// shows as a "name · size" link; a hostile file name stays text.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startNode } from './lib/cluster.js';
import { launchBrowser, openClient, waitConnected, signToken } from './lib/browser.js';

// A 4×4 red PNG (the same bytes as tests/e2e/uploads.rs).
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGP4z8AARwzEcQCukw/x0F8jngAAAABJRU5ErkJggg==',
  'base64',
);

/** Sends `files` from `page` with the file input and waits until they are delivered. */
async function attachAndSend(page, files) {
  await page.setInputFiles('#file-input', files);
  await page.waitForFunction(
    (n) => {
      const chips = [...document.querySelectorAll('#composer-files .chip')];
      return chips.length === n && chips.every((c) => c.dataset.state === 'done');
    },
    files.length,
  );
  await page.locator('#composer-input').click();
  await page.locator('#composer-input').press('Enter');
}

/** Waits until the page shows the 4×4 picture, decoded. */
async function waitPicture(page) {
  await page.waitForFunction(() => {
    const i = document.querySelector('#messages .msg img.attachment-image');
    return i && i.complete && i.naturalWidth === 4;
  });
  return page.locator('#messages .msg img.attachment-image');
}

describe('attachments in the web client', () => {
  let node;
  let browser;
  let dir;
  const pages = [];
  const open = async (...args) => {
    const page = await openClient(browser, ...args);
    pages.push(page);
    return page;
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-browser-uploads-'));
    node = await startNode({ id: 'node-uploads', env: { CHORUS_UPLOAD_DIR: dir } });
    browser = await launchBrowser();
  });

  after(async () => {
    for (const p of pages) assert.deepEqual(p.errors, [], 'no uncaught errors in the page');
    if (browser) await browser.close();
    if (node) await node.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a picture attached with the file input shows inline for another user', async () => {
    const alice = await open(node, { name: 'alice', room: 'pics' });
    const bob = await open(node, { name: 'bob', room: 'pics' });
    await waitConnected(alice);
    await waitConnected(bob);
    await alice.locator('#member-list [data-user="bob"]').waitFor();

    const hostile = '<img src=x onerror=alert(1)>.png';
    await attachAndSend(alice, [
      { name: hostile, mimeType: 'image/png', buffer: PNG },
      { name: 'notes.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4 tiny') },
    ]);

    for (const page of [bob, alice]) {
      const img = await waitPicture(page);
      assert.equal(await img.getAttribute('alt'), hostile, 'the name is an attribute, not markup');
      assert.equal(await img.getAttribute('loading'), 'lazy');
      const link = page.locator('#messages .msg a.attachment-file');
      assert.equal(await link.textContent(), 'notes.pdf · 13 B');
      assert.equal(await link.getAttribute('download'), 'notes.pdf');
    }
    assert.equal(await bob.locator('#messages img[src="x"]').count(), 0, 'no element came from the name');
    assert.equal(await alice.locator('#composer-files .chip').count(), 0, 'sending cleared the chips');
  });

  test('pasting a file into the message box and dropping one on the messages attach them', async () => {
    const carol = await open(node, { name: 'carol', room: 'paste' });
    const dave = await open(node, { name: 'dave', room: 'paste' });
    await waitConnected(carol);
    await waitConnected(dave);
    await carol.locator('#member-list [data-user="dave"]').waitFor();
    await carol.evaluate((bytes) => {
      const transfer = (name) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name, { type: 'image/png' }));
        return dt;
      };
      document
        .querySelector('#composer-input')
        .dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer('pasted.png'), bubbles: true, cancelable: true }));
      const pane = document.querySelector('#messages');
      pane.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer('dropped.png'), bubbles: true, cancelable: true }));
      pane.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer('dropped.png'), bubbles: true, cancelable: true }));
    }, [...PNG]);
    await carol.waitForFunction(() => {
      const chips = [...document.querySelectorAll('#composer-files .chip')];
      return chips.length === 2 && chips.every((c) => c.dataset.state === 'done');
    });
    assert.deepEqual(await carol.locator('#composer-files .chip-name').allTextContents(), ['pasted.png', 'dropped.png']);
    await carol.locator('#composer-input').press('Enter');
    await dave.waitForFunction(
      () => [...document.querySelectorAll('#messages .msg img.attachment-image')].filter((i) => i.complete && i.naturalWidth === 4).length === 2,
    );
  });

  test('with tokens the picture is fetched with the token and shown from a blob: URL', async () => {
    const secret = 'browser-uploads-secret-of-at-least-32-bytes';
    const authDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-browser-uploads-auth-'));
    const authNode = await startNode({
      id: 'node-uploads-auth',
      env: { CHORUS_UPLOAD_DIR: authDir, CHORUS_JWT_SECRET: secret },
    });
    try {
      const grace = await open(authNode, { token: signToken('grace', secret), room: 'pics' });
      const heidi = await open(authNode, { token: signToken('heidi', secret), room: 'pics' });
      await waitConnected(grace);
      await waitConnected(heidi);
      await grace.locator('#member-list [data-user="heidi"]').waitFor();
      await attachAndSend(grace, [{ name: 'red.png', mimeType: 'image/png', buffer: PNG }]);
      const img = await waitPicture(heidi);
      assert.match(await img.getAttribute('src'), /^blob:/, 'an <img> cannot send the token');
    } finally {
      await authNode.stop();
      fs.rmSync(authDir, { recursive: true, force: true });
    }
  });
});
