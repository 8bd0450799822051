// Two people on two nodes of a real cluster: rooms, presence, typing, DMs,
// unread counts, history paging, message text that looks like HTML, and links.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, postMessage } from './lib/cluster.js';
import { launchBrowser, openClient, waitConnected, send, waitMessage, messageTexts, T } from './lib/browser.js';

describe('web client on a two-node cluster', () => {
  let cluster;
  let browser;
  let n1;
  let n2;
  const pages = [];
  const open = async (...args) => {
    const page = await openClient(browser, ...args);
    pages.push(page);
    return page;
  };

  before(async () => {
    cluster = await startCluster({ count: 2 });
    [n1, n2] = cluster.nodes;
    browser = await launchBrowser();
  });

  after(async () => {
    for (const p of pages) assert.deepEqual(p.errors, [], 'no uncaught errors in the page');
    if (browser) await browser.close();
    if (cluster) await cluster.stop();
  });

  test('chat in a room and by DM across nodes, with presence and typing', async () => {
    const alice = await open(n1, { name: 'alice', room: 'team' });
    await waitConnected(alice, n1.id);
    assert.match(await alice.textContent('#conn-status'), /Connected · node node-1/);
    await alice.locator('#member-list [data-user="alice"]').waitFor();

    const bob = await open(n2, { name: 'bob', room: 'team' });
    await waitConnected(bob, n2.id);

    // Presence: alice sees bob arrive (a live presence event from the other node).
    await alice.locator('#member-list [data-user="bob"]').waitFor();
    await bob.locator('#member-list [data-user="alice"]').waitFor();
    await alice.waitForFunction(() => document.querySelector('#chat-subtitle').textContent === '2 members online');

    // Typing: bob types, alice sees it; the message then replaces the hint.
    await bob.locator('#composer-input').click();
    await bob.keyboard.type('hello alice, this is bob on node 2', { delay: 5 });
    await alice.waitForFunction(() => document.querySelector('#typing').textContent === 'bob is typing…');
    await bob.keyboard.press('Enter');
    await waitMessage(alice, 'hello alice, this is bob on node 2');
    await waitMessage(bob, 'hello alice, this is bob on node 2');
    await alice.waitForFunction(() => document.querySelector('#typing').textContent === '');
    assert.equal(await bob.inputValue('#composer-input'), '', 'Enter sent and cleared the box');

    // Shift+Enter makes a new line; Enter sends.
    await alice.locator('#composer-input').click();
    await alice.keyboard.type('two');
    await alice.keyboard.press('Shift+Enter');
    await alice.keyboard.type('lines');
    assert.equal(await alice.inputValue('#composer-input'), 'two\nlines');
    await alice.keyboard.press('Enter');
    await waitMessage(bob, 'two\nlines');
    await waitMessage(alice, 'two\nlines');

    // Own messages are shown once, confirmed, and marked as own.
    const aliceTexts = await messageTexts(alice);
    assert.deepEqual(aliceTexts, ['hello alice, this is bob on node 2', 'two\nlines']);
    assert.equal(await alice.locator('#messages .group.own .msg').count(), 1);
    assert.deepEqual(await messageTexts(bob), aliceTexts);

    // DM: alice opens a conversation with bob from the online list.
    await alice.locator('#people-list [data-user="bob"]').click();
    await alice.waitForFunction(() => document.querySelector('#chat-title').textContent === 'bob');
    await send(alice, 'psst, a private hello');
    await waitMessage(alice, 'psst, a private hello');
    // bob is still in #team: the new conversation shows up with an unread badge.
    const bobDm = bob.locator('#dm-list [data-key="dm:alice"]');
    await bobDm.locator('.badge', { hasText: '1' }).waitFor();
    await bobDm.click();
    await waitMessage(bob, 'psst, a private hello');
    assert.equal(await bobDm.locator('.badge').count(), 0, 'opening the DM clears its badge');
    await send(bob, 'private reply');
    await waitMessage(alice, 'private reply');
    assert.deepEqual(await messageTexts(alice), ['psst, a private hello', 'private reply']);
    assert.deepEqual(await messageTexts(bob), ['psst, a private hello', 'private reply']);

    // The DM has its own history: after a reload it is read back with `history with`.
    await alice.reload();
    await waitConnected(alice);
    await alice.locator('#dm-list [data-key="dm:bob"]').click();
    await waitMessage(alice, 'private reply');
    assert.deepEqual(await messageTexts(alice), ['psst, a private hello', 'private reply']);

    // Presence leave: bob leaves #team, alice's member list drops him.
    await bob.locator('#room-list [data-key="room:team"]').click();
    await bob.locator('#leave-btn').click();
    await alice.locator('#room-list [data-key="room:team"]').click();
    await alice.locator('#member-list [data-user="bob"]').waitFor({ state: 'detached' });
    assert.equal(await bob.locator('#room-list [data-key="room:team"]').count(), 0);
  });

  test('message text that looks like HTML is shown as text', async () => {
    const mallory = await open(n1, { name: 'mallory', room: 'xss' });
    const victim = await open(n2, { name: 'victim', room: 'xss' });
    await waitConnected(mallory);
    await waitConnected(victim);
    await victim.locator('#member-list [data-user="mallory"]').waitFor();
    const evil = '<img src=x onerror=alert(1)>';
    await send(mallory, evil);
    await waitMessage(victim, evil);
    await waitMessage(mallory, evil);
    // History too: a third page reads it back from the server.
    const late = await open(n1, { name: 'latecomer', room: 'xss' });
    await waitMessage(late, evil);
    for (const page of [mallory, victim, late]) {
      assert.deepEqual(await messageTexts(page), [evil]);
      assert.equal(await page.locator('#messages img').count(), 0, 'no img element was created');
      assert.equal(await page.evaluate(() => document.querySelectorAll('img').length), 0);
      assert.deepEqual(page.dialogs, [], 'no dialog fired');
    }
  });

  test('http(s) links in messages are anchors; everything else stays text', async () => {
    const linker = await open(n1, { name: 'linker', room: 'links' });
    const reader = await open(n2, { name: 'reader2', room: 'links' });
    await waitConnected(linker);
    await waitConnected(reader);
    await reader.locator('#member-list [data-user="linker"]').waitFor();
    const text = 'see https://example.com/a_(b) and javascript:alert(1) <b>x</b>.';
    const hostile = 'https://x.y/"><img src=x onerror=alert(1)>';
    await send(linker, text);
    await waitMessage(reader, text);
    await send(linker, hostile);
    await waitMessage(reader, hostile);
    // By DM too, and read back from history by a page that comes later.
    await reader.locator('#people-list [data-user="linker"]').click();
    await reader.waitForFunction(() => document.querySelector('#chat-title').textContent === 'linker');
    await send(reader, `dm ${text}`);
    await waitMessage(reader, `dm ${text}`);
    const late = await open(n1, { name: 'late-linker', room: 'links' });
    await waitMessage(late, hostile);

    /** Every element inside the message texts, as `tag href target rel text`. */
    const elements = (page) =>
      page.$$eval('#messages .msg .text', (texts) =>
        texts.map((t) =>
          [...t.querySelectorAll('*')].map((e) =>
            [e.tagName, e.getAttribute('href'), e.getAttribute('target'), e.getAttribute('rel'), e.textContent].join(' '),
          ),
        ),
      );
    const wiki = 'A https://example.com/a_(b) _blank noopener noreferrer https://example.com/a_(b)';
    const xy = 'A https://x.y/ _blank noopener noreferrer https://x.y/';
    for (const page of [linker, reader, late]) {
      if (page !== reader) {
        assert.deepEqual(await messageTexts(page), [text, hostile], 'the text reads as it was typed');
        assert.deepEqual(await elements(page), [[wiki], [xy]], 'one anchor each; no b, no img');
      }
      assert.equal(await page.evaluate(() => document.querySelectorAll('img, b').length), 0);
      assert.deepEqual(page.dialogs, [], 'no dialog fired');
    }
    // The DM, on both sides.
    assert.deepEqual(await messageTexts(reader), [`dm ${text}`]);
    assert.deepEqual(await elements(reader), [[wiki]]);
    await linker.locator('#dm-list [data-key="dm:reader2"]').click();
    await waitMessage(linker, `dm ${text}`);
    assert.deepEqual(await elements(linker), [[wiki]]);
    assert.equal(await linker.evaluate(() => document.querySelectorAll('img, b').length), 0);
  });

  test('unread counts on rooms not in view', async () => {
    const carol = await open(n1, { name: 'carol', room: 'u-main' });
    await waitConnected(carol);
    // Create (or join) a second room from the sidebar, then go back.
    await carol.locator('#create-room-name').fill('u-side');
    await carol.locator('#create-room-name').press('Enter');
    await carol.waitForFunction(() => document.querySelector('#chat-title').textContent === '#u-side');
    await carol.waitForFunction(() => document.querySelector('#chat-subtitle').textContent.includes('online'));
    await carol.locator('#room-list [data-key="room:u-main"]').click();
    await carol.waitForFunction(() => document.querySelector('#chat-title').textContent === '#u-main');

    const side = carol.locator('#room-list [data-key="room:u-side"]');
    await postMessage(n2, 'u-side', 'dave', 'first, in a room carol is not looking at');
    await side.locator('.badge', { hasText: '1' }).waitFor();
    await postMessage(n2, 'u-side', 'dave', 'second');
    await side.locator('.badge', { hasText: '2' }).waitFor();
    assert.match(await carol.title(), /^\(2\) /);
    // A message in the room in view does not count.
    await postMessage(n2, 'u-main', 'dave', 'in view');
    await waitMessage(carol, 'in view');
    assert.equal(await carol.locator('#room-list [data-key="room:u-main"] .badge').count(), 0);
    assert.equal(await side.locator('.badge').textContent(), '2');

    await side.click();
    await waitMessage(carol, 'second');
    assert.equal(await side.locator('.badge').count(), 0, 'opening the room clears its badge');
    assert.deepEqual(await messageTexts(carol), ['first, in a room carol is not looking at', 'second']);
    assert.doesNotMatch(await carol.title(), /^\(/);
  });

  test('a refused message is marked failed with the error, and can be retried', async () => {
    const speedy = await open(n2, { name: 'speedy', room: 'burst' });
    await waitConnected(speedy);
    await speedy.locator('#member-list [data-user="speedy"]').waitFor();
    // Record every frame the page sends, to see what a retry carries.
    await speedy.evaluate(() => {
      window.sentFrames = [];
      const send = WebSocket.prototype.send;
      WebSocket.prototype.send = function (data) {
        window.sentFrames.push(JSON.parse(data));
        return send.call(this, data);
      };
    });
    // 120 messages in one go: over the default burst of 40 refilling at 20/s,
    // the rest is rate_limited unless the node took 4 s to accept them (50
    // were once all accepted by a debug node on a loaded machine).
    const burst = 120;
    await speedy.evaluate((n) => {
      const input = document.querySelector('#composer-input');
      const form = document.querySelector('#composer');
      for (let i = 0; i < n; i += 1) {
        input.value = `burst ${i}`;
        form.requestSubmit();
      }
    }, burst);
    await speedy.waitForFunction(() => !document.querySelector('#messages .msg[data-state="pending"]'));
    const failed = speedy.locator('#messages .msg[data-state="failed"]');
    const nFailed = await failed.count();
    const nSent = await speedy.locator('#messages .msg[data-state="sent"]').count();
    assert.ok(nFailed > 0, 'some were refused');
    assert.equal(nFailed + nSent, burst, 'each message shown once');
    assert.match(await failed.first().locator('.msg-status').textContent(), /^Not sent: .+/);
    await speedy.locator('#toasts .toast[data-code="rate_limited"]').first().waitFor();
    assert.match(await speedy.locator('#toasts .toast').first().textContent(), /too fast/);
    // Retry one: it goes out again and is confirmed, still once.
    const text = await failed.first().locator('.text').textContent();
    await failed.first().getByRole('button', { name: 'Retry' }).click();
    await waitMessage(speedy, text);
    const texts = await messageTexts(speedy);
    assert.equal(texts.filter((t) => t === text).length, 1);
    // The retry reuses the message's idempotency key (so a retry of a send
    // that was stored after all is not stored twice), under a new ref.
    const sends = await speedy.evaluate((t) => window.sentFrames.filter((f) => f.content === t), text);
    assert.equal(sends.length, 2, 'sent, then retried');
    assert.ok(sends[0].idempotency_key, 'every message carries a key');
    assert.equal(sends[1].idempotency_key, sends[0].idempotency_key, 'the retry reuses it');
    assert.notEqual(sends[1].ref, sends[0].ref);
    const keys = await speedy.evaluate(() => window.sentFrames.filter((f) => f.type === 'message').map((f) => f.idempotency_key));
    assert.equal(new Set(keys).size, burst, 'one key per message');
  });

  test('scrolling up loads older history, without duplicates', async () => {
    const total = 120;
    const label = (i) => `msg ${String(i).padStart(3, '0')}`;
    for (let i = 1; i <= total; i += 1) await postMessage(n2, 'history', i % 2 ? 'erin' : 'frank', label(i));
    const reader = await open(n1, { name: 'reader', room: 'history' });
    await waitMessage(reader, label(total));
    // The join brings the newest 50.
    const first = await messageTexts(reader);
    assert.equal(first.length, 50);
    assert.equal(first[0], label(total - 49));
    assert.equal(await reader.evaluate(() => {
      const m = document.querySelector('#messages');
      return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
    }), true, 'opens scrolled to the newest message');

    // Scroll to the top until the beginning of the room shows.
    const box = reader.locator('#messages');
    await box.hover();
    const deadline = Date.now() + T;
    let rounds = 0;
    while (!(await reader.locator('#messages .history-start').count())) {
      assert.ok(Date.now() < deadline, 'history did not reach the beginning in time');
      const before = (await messageTexts(reader)).length;
      await reader.mouse.wheel(0, -100000);
      await reader.waitForFunction(
        (n) => document.querySelectorAll('#messages .msg').length > n || document.querySelector('#messages .history-start'),
        before,
        { timeout: T },
      );
      rounds += 1;
    }
    assert.ok(rounds >= 2, `loaded in ${rounds} pages`);
    const texts = await messageTexts(reader);
    assert.deepEqual(texts, Array.from({ length: total }, (_, i) => label(i + 1)), 'every message once, in order');
    const ids = await reader.$$eval('#messages .msg', (n) => n.map((m) => m.dataset.id));
    assert.equal(new Set(ids).size, total, 'no duplicate ids');
  });
});
