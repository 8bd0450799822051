// Finds the web links in a message's text. Pure: no DOM, so it runs under
// `node --test` as it does in the page. The page turns each link part into an
// anchor with createElement and textContent; the text never becomes HTML.

/** Where a link may start: `http://` or `https://`, not glued to a word before it (`xhttps://`). */
const SCHEME_RE = /(?<![\p{L}\p{N}_])https?:\/\//giu;

/** What ends a link: white space, control characters, and what cannot be in a URL as typed (`<>"` and the backtick). */
const STOP_RE = /[\s\p{Cc}<>"`]/u;

/** Punctuation that ends a sentence or a quote rather than a URL, when it comes last. */
const TRAILING = new Set(['.', ',', ':', ';', '!', '?', "'", '’', '”', '»', '›', '*']);

/** Closing brackets are dropped from the end only when the URL did not open them (`https://w.org/A_(b)` keeps its `)`). */
const PAIRS = new Map([
  [')', '('],
  [']', '['],
  ['}', '{'],
]);

function count(s, ch) {
  let n = 0;
  for (const c of s) if (c === ch) n += 1;
  return n;
}

/** Drops what ends a sentence, a quote or a bracket around the URL from its end. */
function trimEnd(candidate) {
  let s = candidate;
  for (;;) {
    const last = s[s.length - 1];
    if (TRAILING.has(last)) s = s.slice(0, -1);
    else if (PAIRS.has(last) && count(s, PAIRS.get(last)) < count(s, last)) s = s.slice(0, -1);
    else return s;
  }
}

/**
 * The href for a candidate, or null when it is not a web link to show as one:
 * it must parse, be http(s) once parsed, name a host, and carry no user name
 * or password (`https://bank.example@evil.example` reads as the bank's).
 */
export function safeHref(candidate) {
  let url;
  try {
    url = new URL(candidate);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  if (!url.hostname || url.username || url.password) return null;
  return url.href;
}

/**
 * Splits text into runs: `{ text }` for plain text and `{ text, url }` for a
 * link, where `text` is the link as written and `url` the parsed href to
 * point at. Joining every `text` gives the input back unchanged.
 *
 *   linkify('see https://example.com/a_(b).')
 *   // [{ text: 'see ' }, { text: 'https://example.com/a_(b)', url: 'https://example.com/a_(b)' }, { text: '.' }]
 */
export function linkify(text) {
  const parts = [];
  const pushText = (s) => {
    if (!s) return;
    const prev = parts[parts.length - 1];
    if (prev && prev.url === undefined) prev.text += s;
    else parts.push({ text: s });
  };
  let done = 0; // text before this index is in `parts`
  SCHEME_RE.lastIndex = 0;
  for (let m = SCHEME_RE.exec(text); m; m = SCHEME_RE.exec(text)) {
    const start = m.index;
    let end = start + m[0].length;
    while (end < text.length && !STOP_RE.test(text[end])) end += 1;
    const candidate = trimEnd(text.slice(start, end));
    const href = safeHref(candidate);
    if (href === null) {
      // Not a link; a later scheme inside it (`https://]https://ok.example`) may still be one.
      SCHEME_RE.lastIndex = start + m[0].length;
      continue;
    }
    pushText(text.slice(done, start));
    parts.push({ text: candidate, url: href });
    done = start + candidate.length;
    SCHEME_RE.lastIndex = done;
  }
  pushText(text.slice(done));
  return parts;
}
