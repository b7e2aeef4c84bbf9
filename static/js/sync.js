// The sync engine: the device's copy of a user's projects kept equal to the server's.
//
// State is split in two on purpose. `confirmed` is what the server said (snapshot plus
// changes, up to `cursor`); `outbox` is what this device did that the server has not
// acknowledged yet. What the user sees is confirmed with the outbox replayed on top, so a
// reset can replace `confirmed` wholesale without losing an unsynced edit, and nothing
// the server sends can make a locally made change disappear before it is acknowledged.
//
// Rules from the design brief, as they land here:
// - `sync:changes` is applied only when its `from` is our cursor; anything else pulls.
// - A pull with cursor 0 (or one answered with `reset`) replaces `confirmed`.
// - After a pull, the server's live `count`/`checksum` are compared with `confirmed`;
//   a difference asks for a reset (pull from 0) instead of trusting either copy.
// - Ops carry a client op id, so re-sending after a lost ack is harmless.
// - This client never invents a delete: only the user's delete button queues one.

import { ApiError, NetworkError } from './api.js';
import { applyOp, uuid } from './project.js';
import { checksumOf } from './checksum.js';

const PUSH_BATCH = 500;
const PULL_LIMIT = 1000;
const MAX_PAGES = 10000;
/** Do not ask for another divergence reset sooner than this after the previous one. */
const RESET_COOLDOWN_MS = 10000;

/** A server change in whichever spelling the API uses; null if it cannot be understood. */
export function parseChange(c) {
  if (!c || typeof c !== 'object') return null;
  const row = c.data ?? c.project ?? c.row ?? null;
  const id = c.id ?? (row && row.id);
  if (!id) return null;
  const kind = String(c.kind ?? c.op ?? c.type ?? c.action ?? '').toLowerCase();
  const deleted = kind === 'delete' || kind === 'deleted' || kind === 'tombstone' || Boolean(row && row.deleted_at) || Boolean(c.deleted_at);
  if (deleted) return { id, deleted: true };
  if (!row) return null;
  return { id, deleted: false, row: { ...row, id } };
}

/**
 * A refused op's error in the HTTP error shape plus a per-field map. The API puts the
 * first bad field in `field` and every "field: message" pair, joined by "; ", in `message`.
 */
export function ackError(ack, outcome) {
  if (ack.error && typeof ack.error === 'object') return ack.error;
  const message = ack.message || ack.reason || outcome;
  const fields = {};
  if (ack.reason === 'validation_failed') {
    for (const part of String(message).split('; ')) {
      const m = /^([a-z_]+): (.+)$/.exec(part);
      if (m) fields[m[1]] = m[2];
    }
  }
  if (ack.field && !fields[ack.field]) fields[ack.field] = message;
  return { code: ack.reason || outcome, message, field: ack.field || null, fields };
}

/**
 * The device a person would recognise in a project's history ("Chrome · Windows",
 * "Electron · macOS"), from the user agent; sent with every push as `client_label`.
 */
export function deviceLabel(userAgent, electron) {
  const ua = String(userAgent || '');
  const os = /Android/.test(ua) ? 'Android'
    : /iPhone|iPad|iPod/.test(ua) ? 'iOS'
    : /Windows/.test(ua) ? 'Windows'
    : /Mac OS X|Macintosh/.test(ua) ? 'macOS'
    : /CrOS/.test(ua) ? 'ChromeOS'
    : /Linux/.test(ua) ? 'Linux'
    : '';
  const app = electron || /Electron\//.test(ua) ? 'Electron'
    : /Edg\//.test(ua) ? 'Edge'
    : /OPR\//.test(ua) ? 'Opera'
    : /Firefox\//.test(ua) ? 'Firefox'
    : /Chrom(e|ium)\//.test(ua) ? 'Chrome'
    : /Safari\//.test(ua) ? 'Safari'
    : 'Web';
  return os ? `${app} · ${os}` : app;
}

function classifyAck(ack) {
  const status = String(ack.status ?? ack.result ?? (ack.ok === false ? 'rejected' : 'applied')).toLowerCase();
  if (status === 'conflict') return 'conflict';
  if (['rejected', 'error', 'invalid', 'not_found', 'forbidden'].includes(status) || (ack.error && status !== 'applied' && status !== 'duplicate')) return 'rejected';
  return 'applied';
}

export class SyncEngine extends EventTarget {
  /**
   * Events: 'change' (state changed; read `view()`), 'ack' (detail: { op, outcome, error }),
   * 'unauthorized'.
   */
  constructor({ store, transport, clientSessionId, userId }) {
    super();
    this.store = store;
    this.transport = transport;
    this.clientSessionId = clientSessionId;
    this.clientLabel = deviceLabel(globalThis.navigator && globalThis.navigator.userAgent, Boolean(globalThis.electron));
    this.userId = userId;
    this.channel = null;
    this.lastSyncKey = `btp.lastSync.${userId}`;
    this.confirmed = new Map();
    this.outbox = [];
    this.cursor = 0;
    this.loaded = false;
    this.synced = false;
    this.lastSyncAt = Number(localStorage.getItem(this.lastSyncKey)) || null;
    this.pulling = null;
    this.pullAgain = false;
    this.pullAgainReset = false;
    this.flushing = null;
    this.flushAgain = false;
    this.waiters = new Map();
    this.lastResetAt = 0;
    this.viewCache = null;
    /** Resets asked for because count/checksum differed (should stay 0). */
    this.divergenceResets = 0;
    /** Bumped whenever an ack folds an op into `confirmed` outside a pull. */
    this.epoch = 0;
  }

  async init() {
    const { projects, outbox, cursor } = await this.store.load();
    this.confirmed = new Map(projects.map((p) => [p.id, p]));
    this.outbox = outbox.sort((a, b) => a.n - b.n);
    this.cursor = cursor;
    this.loaded = true;
    this.changed();
    this.transport.addEventListener('connected', () => this.resync());
    this.transport.addEventListener('poll', () => this.resync());
    this.transport.addEventListener('changes', (ev) => this.onChanges(ev.detail));
    this.transport.addEventListener('mode', () => this.changed());
    this.transport.addEventListener('unauthorized', () => this.dispatchEvent(new Event('unauthorized')));
    // Tabs of one browser share the device's clientSessionId, so the server rightly does
    // not send one tab's changes to another; they tell each other instead.
    if (typeof BroadcastChannel !== 'undefined') {
      this.channel = new BroadcastChannel(`btp-sync-${this.userId}`);
      this.channel.onmessage = () => this.siblingChanged();
    }
  }

  stop() {
    if (this.channel) this.channel.close();
    this.channel = null;
  }

  notifySiblings() {
    if (this.channel) this.channel.postMessage('changed');
  }

  async siblingChanged() {
    const outbox = await this.store.loadOutbox();
    this.outbox = outbox.sort((a, b) => a.n - b.n);
    this.changed();
    this.pull().catch(() => {});
  }

  changed() {
    this.viewCache = null;
    this.dispatchEvent(new Event('change'));
  }

  /** Projects as the user should see them: confirmed state with pending ops replayed. */
  view() {
    if (!this.viewCache) {
      const map = new Map(this.confirmed);
      for (const op of this.outbox) applyOp(map, op);
      this.viewCache = map;
    }
    return this.viewCache;
  }

  /**
   * Whether the list can be shown as the user's data: something is stored locally, or
   * the first pull finished, or there is no way to get one (offline). Until then the
   * UI shows a loading state rather than a misleading "no projects".
   */
  ready() {
    if (!this.loaded) return false;
    return this.cursor !== 0 || this.confirmed.size > 0 || this.outbox.length > 0 || this.synced || this.transport.mode === 'offline';
  }

  isPending(id) {
    return this.outbox.some((op) => op.id === id);
  }

  markSynced() {
    this.synced = true;
    this.lastSyncAt = Date.now();
    try { localStorage.setItem(this.lastSyncKey, String(this.lastSyncAt)); } catch { /* display only */ }
  }

  // ---- local edits -------------------------------------------------------------------

  /**
   * Queue an op (persisted before anything else) and try to send it. With `waitMs`,
   * also returns `verdict`: a promise of { outcome, error } once the server answered,
   * or null if it did not within `waitMs` (the op stays queued either way). Whoever
   * waits owns the verdict; unclaimed refusals are announced through the 'ack' event.
   */
  async mutate(kind, id, data, { waitMs = 0 } = {}) {
    const op = { op_id: uuid(), kind, id, data: data ?? null, at: Date.now() };
    op.n = await this.store.enqueue(op);
    this.outbox.push(op);
    this.changed();
    this.notifySiblings();
    let verdict = null;
    if (waitMs > 0) {
      verdict = new Promise((resolve) => {
        const timer = setTimeout(() => {
          this.waiters.delete(op.op_id);
          resolve(null);
        }, waitMs);
        this.waiters.set(op.op_id, (detail) => {
          clearTimeout(timer);
          resolve(detail);
        });
      });
    }
    this.flush();
    return { op, verdict };
  }

  // ---- pushing -----------------------------------------------------------------------

  flush() {
    if (this.flushing) {
      this.flushAgain = true;
      return this.flushing;
    }
    this.flushing = (async () => {
      let acked = false;
      try {
        do {
          this.flushAgain = false;
          acked = (await this.pushAll()) || acked;
        } while (this.flushAgain);
      } finally {
        this.flushing = null;
      }
      // Our own changes are not echoed to us, so pull to move the cursor past them.
      if (acked) await this.pull().catch(() => {});
    })();
    return this.flushing;
  }

  async pushAll() {
    let acked = false;
    while (this.outbox.length) {
      const batch = this.outbox.slice(0, PUSH_BATCH);
      let res;
      try {
        res = await this.sendOps(batch);
      } catch (err) {
        if (err instanceof ApiError && err.status !== 401 && err.status < 500) {
          // The batch was refused whole; find the op at fault by sending them one by one.
          if (batch.length > 1) {
            for (const op of batch) {
              try {
                const one = await this.sendOps([op]);
                await this.handleAcks([op], one);
              } catch (e) {
                if (e instanceof ApiError && e.status !== 401 && e.status < 500) await this.settle([op], 'rejected', e);
                else return acked;
              }
            }
            acked = true;
            continue;
          }
          await this.settle(batch, 'rejected', err);
          acked = true;
          continue;
        }
        return acked; // network trouble or server error: keep everything queued
      }
      const progressed = await this.handleAcks(batch, res);
      acked = acked || progressed;
      if (!progressed) return acked;
    }
    return acked;
  }

  sendOps(ops) {
    return this.transport.push({
      client_id: `web-${this.clientSessionId}`,
      session_id: this.clientSessionId,
      client_label: this.clientLabel,
      ops: ops.map(({ op_id, kind, id, data }) => (kind === 'delete' ? { op_id, kind, id } : { op_id, kind, id, data })),
    });
  }

  /** Returns whether any op of the batch was settled. */
  async handleAcks(batch, res) {
    const acks = Array.isArray(res && res.acks) ? res.acks : [];
    const byId = new Map(acks.filter((a) => a && a.op_id).map((a) => [a.op_id, a]));
    let progressed = false;
    for (const op of batch) {
      const ack = byId.get(op.op_id);
      if (!ack) continue;
      const outcome = classifyAck(ack);
      const error = outcome === 'applied' ? null : ackError(ack, outcome);
      await this.settle([op], outcome, error, ack);
      progressed = true;
    }
    return progressed;
  }

  async settle(ops, outcome, error, ack) {
    this.epoch += 1;
    const upserts = [];
    const deletes = [];
    for (const op of ops) {
      if (outcome === 'applied') {
        // What the server applied is what we sent; fold it into the confirmed copy now
        // so the display does not flicker until the next pull brings the row.
        const row = ack && (ack.project || ack.data);
        if (row && row.id === op.id && !row.deleted_at) this.confirmed.set(op.id, row);
        else applyOp(this.confirmed, op);
        // The row's version moves to the ack's seq, as the server's checksum expects.
        const now = this.confirmed.get(op.id);
        if (now && ack && Number.isInteger(ack.seq)) this.confirmed.set(op.id, { ...now, seq: ack.seq });
        if (this.confirmed.has(op.id)) upserts.push(this.confirmed.get(op.id));
        else deletes.push(op.id);
      }
    }
    await this.store.commit({ upserts, deletes });
    await this.store.dequeue(ops.map((op) => op.n));
    const gone = new Set(ops.map((op) => op.op_id));
    this.outbox = this.outbox.filter((op) => !gone.has(op.op_id));
    this.markSynced();
    this.changed();
    this.notifySiblings();
    for (const op of ops) {
      const detail = { op, outcome, error: error instanceof ApiError ? { code: error.code, message: error.message, field: error.field, fields: error.fields } : error };
      const w = this.waiters.get(op.op_id);
      this.waiters.delete(op.op_id);
      if (w) w(detail);
      else this.dispatchEvent(new CustomEvent('ack', { detail }));
    }
  }

  // ---- pulling -----------------------------------------------------------------------

  /** Bring `confirmed` up to the server's state. Concurrent calls coalesce. */
  pull(reset = false) {
    if (this.pulling) {
      this.pullAgain = true;
      this.pullAgainReset = this.pullAgainReset || reset;
      return this.pulling;
    }
    this.pulling = (async () => {
      try {
        let wantReset = reset;
        for (;;) {
          this.pullAgain = false;
          this.pullAgainReset = false;
          await this.pullOnce(wantReset);
          if (!this.pullAgain) break;
          wantReset = this.pullAgainReset;
        }
      } finally {
        this.pulling = null;
      }
    })();
    return this.pulling;
  }

  async pullOnce(reset) {
    const epoch = this.epoch;
    let cursor = reset ? 0 : this.cursor;
    let replacing = cursor === 0 ? new Map() : null;
    let last = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const res = await this.transport.pull({ cursor, limit: PULL_LIMIT });
      if (!res || typeof res !== 'object') throw new ApiError(500, { message: 'empty pull response' });
      if (res.reset && page === 0) replacing = new Map();
      else if (res.reset) replacing = new Map();
      const changes = (Array.isArray(res.changes) ? res.changes : []).map(parseChange).filter(Boolean);
      if (replacing) {
        for (const c of changes) {
          if (c.deleted) replacing.delete(c.id);
          else replacing.set(c.id, c.row);
        }
      } else {
        const upserts = [];
        const deletes = [];
        for (const c of changes) {
          if (c.deleted) {
            this.confirmed.delete(c.id);
            deletes.push(c.id);
          } else {
            this.confirmed.set(c.id, c.row);
            upserts.push(c.row);
          }
        }
        if (Number.isInteger(res.cursor)) {
          await this.store.commit({ upserts, deletes, cursor: res.cursor });
          this.cursor = res.cursor;
        } else {
          await this.store.commit({ upserts, deletes });
        }
        if (changes.length) this.changed();
      }
      // A long snapshot continues with an opaque (string) cursor; only the final,
      // numeric one is a position in the change feed worth keeping.
      if (res.cursor !== undefined && res.cursor !== null) cursor = res.cursor;
      last = res;
      if (!res.has_more) break;
    }
    if (replacing) {
      if (!Number.isInteger(cursor)) throw new ApiError(500, { message: `pull ended on a non-numeric cursor ${cursor}` });
      await this.store.commit({ replace: true, upserts: [...replacing.values()], cursor });
      this.confirmed = replacing;
      this.cursor = cursor;
      this.lastResetAt = Date.now();
    }
    this.markSynced();
    this.changed();
    if (!last) return;
    // An ack folded into `confirmed` while this pull was in flight makes the comparison
    // meaningless (the server's count predates it): check again on a fresh pull instead.
    if (this.epoch !== epoch) {
      this.pullAgain = true;
      return;
    }
    this.verify(last, reset);
  }

  /** Compare the server's view of the live set with ours; diverged → ask for a reset. */
  verify(res, justReset) {
    const countDiffers = Number.isInteger(res.count) && res.count !== this.confirmed.size;
    let checksumDiffers = false;
    if (!countDiffers && typeof res.checksum === 'string' && res.checksum) {
      const ours = checksumOf(this.confirmed.values());
      checksumDiffers = ours !== null && ours !== res.checksum;
    }
    if (!(countDiffers || checksumDiffers) || justReset) return;
    if (Date.now() - this.lastResetAt < RESET_COOLDOWN_MS) return;
    this.lastResetAt = Date.now();
    this.divergenceResets += 1;
    this.pullAgain = true;
    this.pullAgainReset = true;
  }

  // ---- realtime ----------------------------------------------------------------------

  onChanges(msg) {
    if (!this.loaded) return;
    if (this.pulling || msg.from !== this.cursor || !Number.isFinite(msg.to)) {
      this.pull().catch(() => {});
      return;
    }
    const changes = (Array.isArray(msg.changes) ? msg.changes : []).map(parseChange).filter(Boolean);
    const upserts = [];
    const deletes = [];
    for (const c of changes) {
      if (c.deleted) {
        this.confirmed.delete(c.id);
        deletes.push(c.id);
      } else {
        this.confirmed.set(c.id, c.row);
        upserts.push(c.row);
      }
    }
    this.cursor = msg.to;
    this.markSynced();
    this.changed();
    this.store.commit({ upserts, deletes, cursor: msg.to }).catch(() => {});
  }

  /** After (re)connecting or on each polling tick: send what is queued, then catch up. */
  async resync() {
    try {
      await this.flush();
      await this.pull();
    } catch (err) {
      if (!(err instanceof NetworkError) && !(err instanceof ApiError)) throw err;
    }
  }
}
