// A small Socket.IO v5 client over Engine.IO v4, WebSocket transport only.
//
// Why our own: the app ships without a bundler or third-party code, and it needs only a
// sliver of socket.io-client — one namespace, text events, acks, the heartbeat. One
// SioSocket is one connection attempt; reconnection policy lives in transport.js so the
// fallback to HTTP polling and the backoff are decided in one place.
//
// Wire format (text frames): Engine.IO type digit, then for messages ("4") a Socket.IO
// packet: type digit, optional "/nsp,", optional ack id digits, JSON payload.

const EIO = { OPEN: '0', CLOSE: '1', PING: '2', PONG: '3', MESSAGE: '4', NOOP: '6' };
const SIO = { CONNECT: '0', DISCONNECT: '1', EVENT: '2', ACK: '3', CONNECT_ERROR: '4' };

/** Parse a Socket.IO packet (the part after the Engine.IO "4"). Returns null if malformed. */
export function decodeSio(text) {
  const type = text[0];
  if (type === undefined || type < '0' || type > '6') return null;
  let i = 1;
  let nsp = '/';
  if (text[i] === '/') {
    const comma = text.indexOf(',', i);
    const end = comma === -1 ? text.length : comma;
    nsp = text.slice(i, end);
    i = comma === -1 ? text.length : comma + 1;
  }
  let id = null;
  const start = i;
  while (i < text.length && text[i] >= '0' && text[i] <= '9') i += 1;
  if (i > start) id = Number(text.slice(start, i));
  let data;
  if (i < text.length) {
    try { data = JSON.parse(text.slice(i)); } catch { return null; }
  }
  return { type, nsp, id, data };
}

export function encodeEvent(args, id) {
  return `${EIO.MESSAGE}${SIO.EVENT}${id === undefined ? '' : id}${JSON.stringify(args)}`;
}

export class SioSocket {
  /**
   * @param {string} url ws(s)://…/socket.io/?EIO=4&transport=websocket
   * @param {object} opts { auth, connectTimeoutMs, handlers: { connect, disconnect, connectError, event } }
   */
  constructor(url, opts) {
    this.url = url;
    this.auth = opts.auth;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10000;
    this.handlers = opts.handlers;
    this.connected = false;
    this.closed = false;
    this.nextAckId = 0;
    this.pendingAcks = new Map();
    this.heartbeat = null;
    this.connectTimer = null;
    this.ws = null;
  }

  open() {
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      queueMicrotask(() => this.finish('open failed'));
      return;
    }
    this.ws = ws;
    this.connectTimer = setTimeout(() => this.close('connect timeout'), this.connectTimeoutMs);
    ws.addEventListener('message', (ev) => {
      if (typeof ev.data === 'string') this.onFrame(ev.data);
    });
    ws.addEventListener('close', (ev) => this.finish(`transport close (${ev.code})`));
    // 'error' is always followed by 'close'; nothing to add there.
  }

  onFrame(frame) {
    switch (frame[0]) {
      case EIO.OPEN: {
        let hs;
        try { hs = JSON.parse(frame.slice(1)); } catch { this.close('bad handshake'); return; }
        this.pingWindowMs = (Number(hs.pingInterval) || 25000) + (Number(hs.pingTimeout) || 20000);
        this.armHeartbeat();
        this.send(`${EIO.MESSAGE}${SIO.CONNECT}${JSON.stringify(this.auth)}`);
        break;
      }
      case EIO.PING:
        this.armHeartbeat();
        this.send(EIO.PONG + frame.slice(1));
        break;
      case EIO.CLOSE:
        this.close('server close');
        break;
      case EIO.MESSAGE:
        this.onPacket(frame.slice(1));
        break;
      default:
        break;
    }
  }

  onPacket(text) {
    const p = decodeSio(text);
    if (!p || p.nsp !== '/') return;
    switch (p.type) {
      case SIO.CONNECT:
        clearTimeout(this.connectTimer);
        this.connected = true;
        this.handlers.connect?.(p.data);
        break;
      case SIO.CONNECT_ERROR:
        clearTimeout(this.connectTimer);
        this.handlers.connectError?.(p.data || {});
        this.close('connect error');
        break;
      case SIO.EVENT:
        if (Array.isArray(p.data) && typeof p.data[0] === 'string') {
          this.handlers.event?.(p.data[0], p.data.slice(1));
        }
        // The server never expects acks from us; answer anyway so it does not wait.
        if (p.id !== null) this.send(`${EIO.MESSAGE}${SIO.ACK}${p.id}[]`);
        break;
      case SIO.ACK: {
        const pending = this.pendingAcks.get(p.id);
        if (pending) {
          this.pendingAcks.delete(p.id);
          clearTimeout(pending.timer);
          pending.resolve(Array.isArray(p.data) ? p.data[0] : undefined);
        }
        break;
      }
      case SIO.DISCONNECT:
        this.close('server disconnect');
        break;
      default:
        break;
    }
  }

  armHeartbeat() {
    clearTimeout(this.heartbeat);
    // No ping within interval + timeout means the link is dead even if TCP has not noticed.
    this.heartbeat = setTimeout(() => this.close('ping timeout'), this.pingWindowMs);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
  }

  /** Emit an event and wait for its ack's first argument. Rejects on timeout or disconnect. */
  emitWithAck(event, payload, timeoutMs = 15000) {
    if (!this.connected) return Promise.reject(new Error('not connected'));
    const id = this.nextAckId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingAcks.delete(id);
        reject(new Error(`ack timeout for ${event}`));
      }, timeoutMs);
      this.pendingAcks.set(id, { resolve, reject, timer });
      this.send(encodeEvent([event, payload], id));
    });
  }

  close(reason) {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
      if (this.connected) this.send(`${EIO.MESSAGE}${SIO.DISCONNECT}`);
      this.ws.close();
    }
    this.finish(reason);
  }

  finish(reason) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.heartbeat);
    clearTimeout(this.connectTimer);
    for (const pending of this.pendingAcks.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(`disconnected: ${reason}`));
    }
    this.pendingAcks.clear();
    const wasConnected = this.connected;
    this.connected = false;
    this.handlers.disconnect?.(reason, wasConnected);
  }
}
