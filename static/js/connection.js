// One WebSocket to a chorus node at a time, reconnecting with exponential
// backoff and rotating through the configured node endpoints.

const BACKOFF_START_MS = 250;
const BACKOFF_CAP_MS = 5000;
const HEARTBEAT_EVERY_MS = 10000; // send a ping when nothing was heard for this long
const DEAD_AFTER_MS = 25000; // nothing heard for this long: the socket is dead

export class Connection {
  /**
   * @param {object} opts
   * @param {string[]} opts.endpoints WebSocket URLs of `/ws` on one or more nodes
   * @param {() => string} opts.query returns the query string (`username=…` or `token=…`)
   * @param {(frame: object) => void} opts.onFrame every frame, the welcome included
   * @param {(state: object) => void} opts.onState connection state changes
   * @param {(code: number) => void} opts.onFatal a close that must not be retried (1008, 4001)
   */
  constructor({ endpoints, query, onFrame, onState, onFatal }) {
    this.endpoints = endpoints;
    this.query = query;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onFatal = onFatal;
    this.index = 0;
    this.ws = null;
    this.attempt = 0; // failed attempts since the last welcome
    this.seq = 0; // connections opened so far; tags in-flight messages
    this.welcomed = false;
    this.everWelcomed = false;
    this.stopped = true;
    this.timer = null;
    this.heartbeat = null;
    this.lastHeard = 0;
    this.state = { state: 'idle' };
  }

  get endpoint() {
    return this.endpoints[this.index % this.endpoints.length];
  }

  get isOpen() {
    return !!this.ws && this.welcomed && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.teardown(1000, 'bye');
    this.setState({ state: 'idle' });
  }

  /** Skips the backoff wait, e.g. when the browser comes back online. */
  retryNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.connect();
  }

  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  setState(s) {
    this.state = s;
    this.onState(s);
  }

  connect() {
    this.timer = null;
    const base = this.endpoint;
    const url = base + (base.includes('?') ? '&' : '?') + this.query();
    this.welcomed = false;
    this.setState({
      state: this.everWelcomed ? 'reconnecting' : 'connecting',
      endpoint: base,
      attempt: this.attempt,
    });
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.scheduleReconnect(0);
      return;
    }
    this.ws = ws;
    this.lastHeard = Date.now();
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame.type === 'welcome') {
        this.welcomed = true;
        this.everWelcomed = true;
        this.attempt = 0;
        this.seq += 1;
        this.startHeartbeat();
        this.setState({ state: 'open', endpoint: base, node: frame.node, user: frame.user });
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.stopHeartbeat();
      this.welcomed = false;
      if (this.stopped) return;
      // 1008: the token is no longer good; 4001: an administrator removed
      // this connection, and a client must not come back on its own.
      if (ev.code === 1008 || ev.code === 4001) {
        this.stopped = true;
        const reason = ev.code === 4001 ? 'Removed by an administrator.' : 'Your session expired.';
        this.setState({ state: 'closed', code: ev.code, reason });
        this.onFatal(ev.code);
        return;
      }
      this.scheduleReconnect(ev.code);
    };
    // An error is always followed by a close event; nothing to do here.
    ws.onerror = () => {};
  }

  scheduleReconnect(code) {
    // Rotate: the node we were on may be gone; any node will do.
    if (this.endpoints.length > 1) this.index = (this.index + 1) % this.endpoints.length;
    let delay;
    if ((code === 1001 || code === 1013) && this.attempt === 0) {
      delay = 50 + Math.random() * 150; // draining / too slow: go again at once-ish
    } else {
      delay = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** this.attempt);
      delay = Math.min(BACKOFF_CAP_MS, delay * (1 + Math.random() * 0.25));
    }
    this.attempt += 1;
    const at = Date.now() + delay;
    this.setState({
      state: this.everWelcomed ? 'reconnecting' : 'connecting',
      waiting: true,
      at,
      code,
      attempt: this.attempt,
      endpoint: this.endpoint,
    });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      if (!this.ws) return;
      const quiet = Date.now() - this.lastHeard;
      if (quiet > DEAD_AFTER_MS) {
        // Nothing heard, pings included: drop it without waiting for a close handshake.
        const dead = this.ws;
        this.ws = null;
        this.stopHeartbeat();
        this.welcomed = false;
        try {
          dead.close();
        } catch {
          /* already closing */
        }
        if (!this.stopped) this.scheduleReconnect(1006);
      } else if (quiet > HEARTBEAT_EVERY_MS && this.isOpen) {
        this.ws.send('{"type":"ping"}');
      }
    }, HEARTBEAT_EVERY_MS / 2);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  teardown(code, reason) {
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* ignore */
      }
    }
  }
}
