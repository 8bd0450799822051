// Attachments: the queue of files being uploaded for the next message (one
// chip each, with a progress bar), and how a message's attachments show.
// Every name is set with textContent or an attribute, never as markup.

import { el } from './dom.js';

/** Types shown as pictures: the raster formats the server serves inline. */
const INLINE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif']);

/** "1.2 MB", "340 KB", "12 B". */
export function humanSize(n) {
  if (n < 1000) return `${n} B`;
  const units = ['KB', 'MB', 'GB'];
  let v = n;
  let u = -1;
  do {
    v /= 1000;
    u += 1;
  } while (v >= 1000 && u < units.length - 1);
  return `${v >= 10 ? Math.round(v) : v.toFixed(1)} ${units[u]}`;
}

/**
 * Files chosen for the next message. `onChange` runs whenever a chip
 * changes, so the caller can redraw and enable Send.
 */
export class UploadQueue {
  constructor(api, box, onChange) {
    this.api = api;
    this.box = box;
    this.onChange = onChange;
    this.items = [];
  }

  /** Queues and starts uploading each of `files` (a FileList or array). */
  add(files) {
    for (const file of Array.from(files || [])) {
      const item = { file, id: null, state: 'uploading', loaded: 0, error: '', xhr: null };
      this.items.push(item);
      this.upload(item);
    }
    this.render();
  }

  async upload(item) {
    try {
      const created = await this.api.request('POST', '/api/uploads', {
        name: item.file.name || 'pasted file',
        type: item.file.type || 'application/octet-stream',
        size: item.file.size,
        // The uploader in anonymous mode; with a token the server ignores it.
        user: this.api.user || undefined,
      });
      await this.put(item, created);
      item.id = created.id;
      item.state = 'done';
    } catch (err) {
      if (item.state === 'removed') return;
      item.state = 'failed';
      item.error = err.message || 'upload failed';
    }
    this.render();
  }

  /** PUTs the bytes with XMLHttpRequest: fetch reports no upload progress. */
  put(item, created) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      item.xhr = xhr;
      xhr.open(created.method || 'PUT', created.upload_url);
      for (const [name, value] of Object.entries(created.headers || {})) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (e) => {
        item.loaded = e.loaded;
        this.render();
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          item.loaded = item.file.size;
          resolve();
          return;
        }
        let message = `upload failed (${xhr.status})`;
        try {
          message = JSON.parse(xhr.responseText).error.message || message;
        } catch {
          // Not our JSON (an S3 error is XML): keep the status.
        }
        reject(new Error(message));
      };
      xhr.onerror = () => reject(new Error('upload failed: network error'));
      xhr.onabort = () => reject(new Error('removed'));
      xhr.send(item.file);
    });
  }

  remove(item) {
    item.state = 'removed';
    if (item.xhr) item.xhr.abort();
    this.items = this.items.filter((i) => i !== item);
    this.render();
  }

  /** True while a file is still uploading. */
  get busy() {
    return this.items.some((i) => i.state === 'uploading');
  }

  /** The ids of the finished uploads, in the order chosen. */
  get ids() {
    return this.items.filter((i) => i.state === 'done').map((i) => i.id);
  }

  clear() {
    this.items = [];
    this.render();
  }

  render() {
    this.box.replaceChildren(
      ...this.items.map((item) => {
        const percent = item.file.size ? Math.round((100 * item.loaded) / item.file.size) : 100;
        const bar = el('progress', { class: 'chip-progress', max: '100', value: String(percent), 'aria-label': `Uploading ${item.file.name}` });
        const remove = el('button', { type: 'button', class: 'chip-remove', 'aria-label': `Remove ${item.file.name}` }, '×');
        remove.addEventListener('click', () => this.remove(item));
        const chip = el(
          'div',
          { class: `chip chip-${item.state}`, dataset: { state: item.state } },
          el('span', { class: 'chip-name', text: item.file.name || 'pasted file' }),
          el('span', { class: 'chip-size muted', text: humanSize(item.file.size) }),
          item.state === 'uploading' ? bar : null,
          item.state === 'failed' ? el('span', { class: 'chip-error', role: 'alert', text: item.error }) : null,
          remove,
        );
        return chip;
      }),
    );
    this.box.hidden = this.items.length === 0;
    this.onChange();
  }
}

/** Blob URLs of pictures fetched with the token, by upload id, for the page's life. */
const blobs = new Map();

/**
 * Shows `img` the picture at `url`. Without a token the browser fetches it;
 * with one, an <img> cannot send it, so the page fetches it with the token
 * and shows a blob: URL.
 */
function loadPicture(img, url, id, token) {
  if (!token) {
    img.src = url;
    return;
  }
  if (!blobs.has(id)) {
    blobs.set(
      id,
      fetch(url, { headers: { Authorization: `Bearer ${token}` } }).then((res) => {
        if (!res.ok) throw new Error(String(res.status));
        return res.blob().then((b) => URL.createObjectURL(b));
      }),
    );
  }
  blobs.get(id).then(
    (src) => {
      img.src = src;
    },
    () => {
      img.replaceWith(el('span', { class: 'attachment-missing muted', text: `${img.alt} · file unavailable` }));
    },
  );
}

/** The nodes showing a message's attachments: pictures inline, other files as links. */
export function attachmentNodes(attachments, token) {
  if (!Array.isArray(attachments) || attachments.length === 0) return null;
  const list = el('div', { class: 'attachments' });
  for (const a of attachments) {
    if (!a || typeof a.url !== 'string' || !a.url.startsWith('/api/uploads/')) continue;
    const name = String(a.name || 'file');
    if (INLINE_TYPES.has(a.type)) {
      const img = el('img', { class: 'attachment-image', loading: 'lazy', alt: name, title: name });
      loadPicture(img, a.url, a.id, token);
      list.append(el('a', { class: 'attachment', href: a.url, target: '_blank', rel: 'noopener' }, img));
    } else {
      const link = el('a', { class: 'attachment attachment-file', href: a.url, download: name });
      link.textContent = `${name} · ${humanSize(Number(a.size) || 0)}`;
      if (token) {
        // A plain link cannot carry the token: fetch it, then save the blob.
        link.addEventListener('click', (e) => {
          e.preventDefault();
          fetch(a.url, { headers: { Authorization: `Bearer ${token}` } })
            .then((res) => (res.ok ? res.blob() : Promise.reject(new Error(String(res.status)))))
            .then((blob) => {
              const save = el('a', { href: URL.createObjectURL(blob), download: name });
              save.click();
              setTimeout(() => URL.revokeObjectURL(save.href), 60000);
            })
            .catch(() => link.classList.add('attachment-missing'));
        });
      }
      list.append(link);
    }
  }
  return list;
}
