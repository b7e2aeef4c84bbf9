// Which road sync traffic takes, and telling the user which one: the Socket.IO
// WebSocket when it connects ("websocket"), otherwise HTTP pull/push on a timer
// ("polling"), or nothing when neither answers ("offline"). The fallback is never
// silent — the mode drives the connection indicator — and the WebSocket keeps being
// retried with jittered exponential backoff while polling carries the load.

import { SioSocket } from './sio.js';
import { socketUrl } from './config.js';
import { ApiError, NetworkError } from './api.js';

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30000;
/** Failed WebSocket attempts in a row before HTTP polling takes over. */
const FAILURES_BEFORE_POLLING = 2;
const POLL_INTERVAL_MS = 4000;

/** Delay before reconnect attempt `n` (1-based): exponential, capped, jittered to 50–100 %. */
export function backoffDelay(n, random = Math.random) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, n - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export class Transport extends EventTarget {
  /**
   * @param {object} o { config, api, clientSessionId, getToken }
   * Events: 'mode' (detail: mode), 'connected', 'poll', 'changes' (detail: payload),
   * 'unauthorized'.
   */
  constructor({ config, api, clientSessionId, getToken }) {
    super();
    this.config = config;
    this.api = api;
    this.clientSessionId = clientSessionId;
    this.getToken = getToken;
    this.mode = 'connecting';
    this.socket = null;
    this.failures = 0;
    this.reconnectTimer = null;
    this.pollTimer = null;
    this.running = false;
    this.onOnline = () => this.wake();
    this.onOffline = () => this.goOffline();
  }

  start() {
    this.running = true;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    if (navigator.onLine === false) this.goOffline();
    else if (!this.config.transports.includes('websocket')) this.startPolling();
    else this.connect();
  }

  stop() {
    this.running = false;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    clearTimeout(this.reconnectTimer);
    this.stopPolling();
    if (this.socket) this.socket.close('stopped');
    this.socket = null;
  }

  setMode(mode) {
    if (this.mode === mode) return;
    this.mode = mode;
    this.dispatchEvent(new CustomEvent('mode', { detail: mode }));
  }

  connect() {
    if (!this.running || this.socket) return;
    clearTimeout(this.reconnectTimer);
    const socket = new SioSocket(socketUrl(this.config), {
      auth: { token: this.getToken(), clientSessionId: this.clientSessionId },
      connectTimeoutMs: 10000,
      handlers: {
        connect: () => {
          this.failures = 0;
          this.stopPolling();
          this.setMode('websocket');
          this.dispatchEvent(new Event('connected'));
        },
        connectError: (data) => {
          if (data && data.message === 'unauthorized') this.dispatchEvent(new Event('unauthorized'));
        },
        event: (name, args) => {
          if (name === 'sync:changes' && args[0] && typeof args[0] === 'object') {
            this.dispatchEvent(new CustomEvent('changes', { detail: args[0] }));
          }
        },
        disconnect: (reason, wasConnected) => {
          if (this.socket === socket) this.socket = null;
          if (!this.running || navigator.onLine === false) return;
          this.failures = wasConnected ? 1 : this.failures + 1;
          if (this.failures >= FAILURES_BEFORE_POLLING) this.startPolling();
          else if (this.mode !== 'polling') this.setMode('connecting');
          // The server ends a socket on purpose only when its token is revoked or has
          // expired: ask again at once, and its refusal ('unauthorized') signs out.
          const delay = reason === 'server disconnect' ? 0 : backoffDelay(this.failures);
          this.reconnectTimer = setTimeout(() => this.connect(), delay);
        },
      },
    });
    this.socket = socket;
    socket.open();
  }

  startPolling() {
    if (this.pollTimer) return;
    const tick = () => this.dispatchEvent(new Event('poll'));
    this.pollTimer = setInterval(tick, POLL_INTERVAL_MS);
    tick();
  }

  stopPolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  goOffline() {
    clearTimeout(this.reconnectTimer);
    this.stopPolling();
    if (this.socket) {
      const s = this.socket;
      this.socket = null;
      s.close('offline');
    }
    this.setMode('offline');
  }

  /** Network is back (or the user asked): retry the WebSocket now, backoff reset. */
  wake() {
    if (!this.running) return;
    this.failures = 0;
    clearTimeout(this.reconnectTimer);
    if (!this.config.transports.includes('websocket')) {
      this.startPolling();
      return;
    }
    if (!this.socket) {
      this.setMode('connecting');
      this.connect();
    }
  }

  get socketConnected() {
    return Boolean(this.socket && this.socket.connected);
  }

  /** Record the outcome of an HTTP sync call made while polling. */
  noteHttp(ok) {
    if (this.socketConnected || !this.pollTimer) return;
    this.setMode(ok ? 'polling' : 'offline');
  }

  async pull(body) {
    return this.call('sync:pull', body, () => this.api.pull(body));
  }

  async push(body) {
    return this.call('sync:push', body, () => this.api.push(body));
  }

  async call(event, body, overHttp) {
    if (navigator.onLine === false) throw new NetworkError('offline');
    if (this.socketConnected) {
      let res;
      try {
        res = await this.socket.emitWithAck(event, body);
      } catch (err) {
        throw new NetworkError(err.message);
      }
      if (res && res.error) {
        const status = res.error.code === 'unauthorized' ? 401 : 400;
        throw new ApiError(status, res.error);
      }
      return res;
    }
    try {
      const res = await overHttp();
      this.noteHttp(true);
      return res;
    } catch (err) {
      if (err instanceof NetworkError || (err instanceof ApiError && err.status >= 502)) this.noteHttp(false);
      else this.noteHttp(true);
      if (err instanceof ApiError && err.status === 401) this.dispatchEvent(new Event('unauthorized'));
      throw err;
    }
  }
}
