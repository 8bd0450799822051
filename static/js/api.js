// The HTTP API of the node that served this page (same origin).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor() {
    this.token = null;
  }

  async request(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      throw new ApiError(res.status, err.code || `http_${res.status}`, err.message || res.statusText);
    }
    return data;
  }

  /** 'token' when the server answers 401 without credentials, else 'name'. */
  async detectMode() {
    try {
      const res = await fetch('/api/rooms', { cache: 'no-store' });
      return res.status === 401 ? 'token' : 'name';
    } catch {
      return 'name';
    }
  }

  rooms() {
    return this.request('GET', '/api/rooms');
  }

  createRoom(name) {
    return this.request('POST', '/api/rooms', { name });
  }

  users() {
    return this.request('GET', '/api/users');
  }
}
