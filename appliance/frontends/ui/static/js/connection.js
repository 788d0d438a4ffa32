/**
 * The WebSocket client of the box (docs/protocol.md): one connection at a
 * time, reconnected by itself with backoff, requests matched to their answers
 * by `reply_to`.
 *
 * States (the `state` event's `detail.state`):
 *
 *   connecting ──open──▶ syncing ──markLive()──▶ live
 *        ▲                  │                     │
 *        └──timer── waiting ◀──────close/dead─────┘
 *   any ──close 1008 "unauthorized" / UNAUTHORIZED──▶ unauthorized (stays; restart() leaves it)
 *
 * Events: `state`, `open` (a new connection: resync now), `message` (every
 * message from the box, `detail` is the parsed object), `refused` (an ERROR
 * answering a fire-and-forget `send` that was not marked quiet).
 */

/** Delays before each reconnection attempt, then the last one again. */
const BACKOFF_MS = [300, 1000, 2000, 3000, 5000];
/** How often a live connection is checked with a PING. */
const HEARTBEAT_MS = 4000;
/** A PING unanswered this long (and nothing else heard) means the connection is dead. */
const HEARTBEAT_TIMEOUT_MS = 7000;
/** How long a request may wait for its answer (a plugin or pedalboard load included). */
export const REQUEST_TIMEOUT_MS = 30000;

/** An ERROR answer from the box, as an exception. */
export class BoxError extends Error {
  constructor(data) {
    super(data && data.error ? data.error : "the box refused the request");
    this.code = data && data.code;
    this.details = (data && data.details) || {};
  }
}

export class Connection extends EventTarget {
  /**
   * @param {() => string} url makes the WebSocket URL for each attempt (the token may change).
   */
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.state = "idle";
    this.attempt = 0;
    this.retryAt = 0;
    this.retryTimer = 0;
    this.heartbeatTimer = 0;
    this.pingId = null;
    this.pingAt = 0;
    this.lastHeard = 0;
    this.unauthorized = false;
    this.seq = 0;
    this.prefix = `ui${Math.random().toString(36).slice(2, 8)}_`;
    /** @type {Map<string, {resolve: Function, reject: Function, expect: string|null, timer: number}>} */
    this.pending = new Map();
    /** Ids of sends whose ERROR nobody needs to hear about. */
    this.quiet = new Set();
  }

  /** Connect now, and again whenever the network or the page comes back. */
  start() {
    window.addEventListener("online", () => this.retryNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.retryNow();
    });
    this._open();
  }

  /** Leave the unauthorized (or waiting) state and connect again at once. */
  restart() {
    this.unauthorized = false;
    this._drop();
    this._open();
  }

  /** Skip the rest of the backoff wait. */
  retryNow() {
    if (this.state === "waiting") this._open();
  }

  /** The board has been resynchronised: the connection is live. */
  markLive() {
    if (this.state === "syncing") this._setState("live");
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Send a request without waiting for its answer.
   *
   * @param {string} type the request type.
   * @param {object} [data] its data.
   * @param {{quiet?: boolean}} [options] quiet: an ERROR answer is not reported.
   * @returns {string|null} the request id, or null when there is no connection.
   */
  send(type, data, options = {}) {
    if (!this.isOpen) return null;
    const id = `${this.prefix}${++this.seq}`;
    const message = { id, type };
    if (data !== undefined) message.data = data;
    if (options.quiet) {
      this.quiet.add(id);
      if (this.quiet.size > 500) this.quiet.delete(this.quiet.values().next().value);
    }
    this.ws.send(JSON.stringify(message));
    return id;
  }

  /**
   * Send a request and wait for its answer.
   *
   * @param {string} type the request type.
   * @param {object} [data] its data.
   * @param {{expect?: string, timeout?: number}} [options] expect: the message type
   *   that completes it (default: the first message answering it).
   * @returns {Promise<object>} the answering message; rejects with a BoxError on ERROR,
   *   or an Error when the connection is lost or the answer takes too long.
   */
  request(type, data, options = {}) {
    return new Promise((resolve, reject) => {
      const id = this.send(type, data);
      if (id === null) {
        reject(new Error("not connected to the box"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error("the box did not answer in time"));
      }, options.timeout || REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, expect: options.expect || null, timer });
    });
  }

  // -- internals ----------------------------------------------------------------

  _setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, retryAt: this.retryAt } }));
  }

  _open() {
    clearTimeout(this.retryTimer);
    if (this.unauthorized) return;
    this._setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this._scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.lastHeard = performance.now();
      this.pingId = null;
      this._setState("syncing");
      this.dispatchEvent(new Event("open"));
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = setInterval(() => this._heartbeat(), HEARTBEAT_MS);
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastHeard = performance.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message === "object") this._receive(message);
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      // 1008 is also "rate limit exceeded": only "unauthorized" means pair again
      if (event.code === 1008 && event.reason === "unauthorized") this.unauthorized = true;
      this._lost();
    };
  }

  /** Forget the current socket (without waiting for its close handshake). */
  _drop() {
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.heartbeatTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new Error("the connection to the box was lost"));
      this.pending.delete(id);
    }
  }

  _lost() {
    this._drop();
    if (this.unauthorized) this._setState("unauthorized");
    else this._scheduleRetry();
  }

  _scheduleRetry() {
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const jitter = Math.round(delay * 0.2 * Math.random());
    this.attempt += 1;
    this.retryAt = Date.now() + delay + jitter;
    this.retryTimer = setTimeout(() => this._open(), delay + jitter);
    this._setState("waiting");
  }

  _heartbeat() {
    if (!this.isOpen) return;
    const now = performance.now();
    if (this.pingId !== null) {
      if (now - this.pingAt > HEARTBEAT_TIMEOUT_MS && now - this.lastHeard > HEARTBEAT_TIMEOUT_MS) {
        this._lost(); // a half-open connection: the close handshake would never finish
      }
      return;
    }
    this.pingAt = now;
    this.pingId = this.send("PING", undefined, { quiet: true });
  }

  _receive(message) {
    const replyTo = message.reply_to;
    if (message.type === "PONG" && replyTo === this.pingId) {
      this.pingId = null;
      return;
    }
    if (message.type === "ERROR" && message.data && message.data.code === "UNAUTHORIZED") {
      this.unauthorized = true;
    }
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
    if (replyTo === undefined) return;
    const pending = this.pending.get(replyTo);
    if (pending) {
      if (message.type === "ERROR") {
        this._settle(replyTo, pending);
        pending.reject(new BoxError(message.data));
      } else if (pending.expect === null || pending.expect === message.type) {
        this._settle(replyTo, pending);
        pending.resolve(message);
      }
    } else if (message.type === "ERROR") {
      if (this.quiet.delete(replyTo)) return;
      this.dispatchEvent(new CustomEvent("refused", { detail: new BoxError(message.data) }));
    }
  }

  _settle(id, pending) {
    clearTimeout(pending.timer);
    this.pending.delete(id);
  }
}
