// linkify (static/js/links.js) on its own: which runs of a message become
// links, where a link ends, and what is refused. No browser, no nodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './lib/cluster.js';

// static/ has no package.json saying "module", so Node 20 would read the file
// as CommonJS; loaded from a data: URL it is an ES module, as in the page.
const source = fs.readFileSync(path.join(ROOT, 'static/js/links.js'), 'utf8');
const { linkify } = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);

/** Checks linkify(input) against the expected runs, and that the runs give the input back. */
function check(input, expected) {
  const parts = linkify(input);
  assert.deepEqual(parts, expected, JSON.stringify(input));
  assert.equal(parts.map((p) => p.text).join(''), input, 'the runs join back to the input');
}
const link = (text, url = text) => ({ text, url });

test('plain text stays one text run', () => {
  check('hello there', [{ text: 'hello there' }]);
  check('', []);
  check('<b>x</b> & <img src=x onerror=alert(1)>', [{ text: '<b>x</b> & <img src=x onerror=alert(1)>' }]);
});

test('http and https URLs become links, wherever they are', () => {
  check('https://example.com', [link('https://example.com', 'https://example.com/')]);
  check('see http://example.com/x?y=1&z=2#top now', [
    { text: 'see ' },
    link('http://example.com/x?y=1&z=2#top'),
    { text: ' now' },
  ]);
  check('a https://a.example/1\nb https://b.example/2', [
    { text: 'a ' },
    link('https://a.example/1'),
    { text: '\nb ' },
    link('https://b.example/2'),
  ]);
  check('HTTPS://Example.COM/Path', [link('HTTPS://Example.COM/Path', 'https://example.com/Path')]);
  check('https://localhost:8080/ws', [link('https://localhost:8080/ws')]);
});

test('other schemes stay text', () => {
  for (const s of [
    'javascript:alert(1)',
    'JavaScript://%0aalert(1)',
    'data:text/html,<script>alert(1)</script>',
    'vbscript:msgbox(1)',
    'mailto:a@example.com',
    'ftp://example.com/file',
    'file:///etc/passwd',
    'www.example.com',
  ]) {
    check(s, [{ text: s }]);
  }
  // A scheme glued to a word is not the start of a link.
  check('xhttps://example.com', [{ text: 'xhttps://example.com' }]);
  check('javascript:https://example.com', [{ text: 'javascript:' }, link('https://example.com', 'https://example.com/')]);
});

test('punctuation after a URL is not part of it', () => {
  for (const tail of ['.', ',', ':', ';', '!', '?', ')', '"', "'", '’', '”', '...', '?!', ').', '",']) {
    check(`https://example.com/a${tail}`, [link('https://example.com/a'), { text: tail }]);
  }
  check('(see https://example.com/a)', [{ text: '(see ' }, link('https://example.com/a'), { text: ')' }]);
  check('[https://example.com/a]', [{ text: '[' }, link('https://example.com/a'), { text: ']' }]);
  check('“https://example.com/a”', [{ text: '“' }, link('https://example.com/a'), { text: '”' }]);
  // ...but inside it, it is.
  check('https://example.com/a.b,c;d:e!f?g=h', [link('https://example.com/a.b,c;d:e!f?g=h')]);
});

test('balanced brackets inside a URL are kept', () => {
  check('https://en.wikipedia.org/wiki/Rust_(programming_language)', [
    link('https://en.wikipedia.org/wiki/Rust_(programming_language)'),
  ]);
  check('see https://example.com/a_(b) and more.', [
    { text: 'see ' },
    link('https://example.com/a_(b)'),
    { text: ' and more.' },
  ]);
  check('(https://example.com/a_(b)).', [{ text: '(' }, link('https://example.com/a_(b)'), { text: ').' }]);
  check('https://example.com/[x]', [link('https://example.com/[x]')]);
});

test('quotes and angle brackets end a URL, so markup after one stays text', () => {
  check('https://x.y/"><img src=x onerror=alert(1)>', [
    link('https://x.y/'),
    { text: '"><img src=x onerror=alert(1)>' },
  ]);
  check('<https://example.com/a>', [{ text: '<' }, link('https://example.com/a'), { text: '>' }]);
  check('`https://example.com/a`', [{ text: '`' }, link('https://example.com/a'), { text: '`' }]);
  // A single quote inside a path is kept.
  check("https://example.com/O'Brien", [link("https://example.com/O'Brien")]);
});

test('what does not parse as a web address with a host stays text', () => {
  check('https://', [{ text: 'https://' }]);
  check('http://.', [{ text: 'http://.' }]);
  check('https:// example.com', [{ text: 'https:// example.com' }]);
  check('https://[::1', [{ text: 'https://[::1' }]);
  check('https://exa%zzmple', [{ text: 'https://exa%zzmple' }]);
  // A failed candidate does not hide a good link after it.
  check('https://[x]https://ok.example/', [{ text: 'https://[x]' }, link('https://ok.example/')]);
});

test('a user name or password in the URL keeps it text (it would disguise the host)', () => {
  check('https://bank.example@evil.example/login', [{ text: 'https://bank.example@evil.example/login' }]);
  check('https://u:p@example.com/', [{ text: 'https://u:p@example.com/' }]);
});

test('non-ASCII text around and inside links', () => {
  check('voilà: https://exemple.fr/été — merci', [
    { text: 'voilà: ' },
    link('https://exemple.fr/été', 'https://exemple.fr/%C3%A9t%C3%A9'),
    { text: ' — merci' },
  ]);
  check('éhttps://example.com', [{ text: 'éhttps://example.com' }]);
  check('🙂https://example.com/🙂', [{ text: '🙂' }, link('https://example.com/🙂', 'https://example.com/%F0%9F%99%82')]);
});
