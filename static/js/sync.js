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
// - An update or delete carries `base_seq`, the server version of the project its author
//   saw, so an edit made offline never overwrites a newer one from another device: the
//   server answers `conflict`/`stale` and the user chooses (see "Conflicts" below).

import { ApiError, NetworkError } from './api.js';
import { applyOp, uuid, EDITABLE_FIELDS, sameValue as same } from './project.js';
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

// ---- conflicts ----------------------------------------------------------------------
//
// Every update and delete remembers what its author saw: `seen`, the values of the fields
// it replaces (a delete: every field) as the screen showed them, and `base0`, the server
// version of the project then. When the op is first sent, its base is worked out again
// against the server's copy (`confirmed`, with the earlier ops of the batch on top):
// - where every field it replaces still has the value its author saw, nobody touched
//   them since, and the op is re-based on the version we now hold: others' changes to
//   other fields (or to these fields and back) are no reason to bother anyone;
// - otherwise the op keeps `base0` and the server reports the fields changed meanwhile.
// The version "we now hold" must be one the server sent: after our own ack a project's
// copy is our op folded onto the older one (`known_seq` keeps that older version), so a
// push touching such a project pulls first. And an op is never sent, for the first
// time, in one batch behind an op of the same project whose ack was lost: that op may
// already be applied, and this one would then be judged against it (see `nextBatch`).

/** The server version a copy of a project stands for (0: none). */
export function knownSeq(row) {
  if (!row) return 0;
  return Number.isInteger(row.known_seq) ? row.known_seq : (Number.isInteger(row.seq) ? row.seq : 0);
}

/** The values an edit replaces, as its author saw them in `row`. */
export function seenOf(kind, data, row) {
  const fields = kind === 'delete' ? EDITABLE_FIELDS : Object.keys(data || {});
  const seen = {};
  for (const f of fields) seen[f] = row ? (row[f] ?? null) : null;
  return seen;
}

/**
 * The next batch to push: a prefix of `outbox` of at most `max` ops, ended before the
 * first op never sent that follows an op of the same project already sent (whose ack
 * was lost): the server may have applied that one, and the new op's base could not
 * count it. Such an op goes in the next batch, after the ack and a pull.
 */
export function nextBatch(outbox, max) {
  const resent = new Set();
  const batch = [];
  for (const op of outbox) {
    if (batch.length >= max) break;
    if (!op.sent && resent.has(op.id)) break;
    if (op.sent) resent.add(op.id);
    batch.push(op);
  }
  return batch;
}

/**
 * Give each op of `batch` sent for the first time its `base_seq` (see above). `confirmed`
 * is the server's copy. Ops made before conflicts were reported (no `seen`) carry none.
 */
export function assignBases(batch, confirmed) {
  const work = new Map();
  const rowOf = (id) => (work.has(id) ? work.get(id) : confirmed.get(id) || null);
  for (const op of batch) {
    const row = rowOf(op.id);
    if (!op.sent && op.seen && (op.kind === 'update' || op.kind === 'delete')) {
      const untouched = Object.entries(op.seen).every(([f, v]) => same(row ? row[f] : null, v));
      const base = untouched ? knownSeq(confirmed.get(op.id)) : op.base0;
      op.base_seq = Number.isInteger(base) && base >= 0 ? base : 0;
    }
    if (op.kind === 'delete') {
      work.set(op.id, null);
    } else if (op.kind === 'create' || row) {
      // An op expected to conflict writes only the fields nobody else changed.
      const data = {};
      for (const [f, v] of Object.entries(op.data || {})) {
        if (!op.seen || !(f in op.seen) || same(row ? row[f] : null, op.seen[f]) || op.sent) data[f] = v;
      }
      work.set(op.id, { ...(row || {}), ...data });
    }
  }
  return batch;
}

function classifyAck(ack) {
  const status = String(ack.status ?? ack.result ?? (ack.ok === false ? 'rejected' : 'applied')).toLowerCase();
  if (status === 'conflict') return 'conflict';
  if (['rejected', 'error', 'invalid', 'not_found', 'forbidden'].includes(status) || (ack.error && status !== 'applied' && status !== 'duplicate')) return 'rejected';
  return 'applied';
}

export class SyncEngine extends EventTarget {
  /**
   * Events: 'change' (state changed; read `view()` and `conflicts`), 'ack' (detail:
   * { op, outcome, error }), 'conflict-gone' (detail: { id, kind }: a conflict whose
   * project was deleted meanwhile), 'unauthorized'.
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
    /**
     * Edits the server did not apply because another device changed the same fields
     * first, by project id, until the user chooses: { id, kind: 'update', fields:
     * { field: { current, yours } } } or { id, kind: 'delete', project, seen } (the
     * project now, and as it was when deleted). Stored with
     * the outbox, so a reload does not lose them.
     */
    this.conflicts = new Map();
  }

  async init() {
    const { projects, outbox, cursor, conflicts } = await this.store.load();
    this.confirmed = new Map(projects.map((p) => [p.id, p]));
    this.outbox = outbox.sort((a, b) => a.n - b.n);
    this.cursor = cursor;
    this.conflicts = new Map((conflicts || []).filter((c) => c && c.id).map((c) => [c.id, c]));
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
    const [outbox, conflicts] = await Promise.all([this.store.loadOutbox(), this.store.loadConflicts()]);
    this.outbox = outbox.sort((a, b) => a.n - b.n);
    this.conflicts = new Map((conflicts || []).filter((c) => c && c.id).map((c) => [c.id, c]));
    this.changed();
    this.pull().catch(() => {});
  }

  changed() {
    this.viewCache = null;
    this.followConflicts();
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
   * `seen`: the values the edit replaces as its author saw them, when that is not what
   * the screen shows now (a conflict's "current" values); see "Conflicts" above.
   */
  async mutate(kind, id, data, { waitMs = 0, seen = null } = {}) {
    const op = { op_id: uuid(), kind, id, data: data ?? null, at: Date.now() };
    if (kind === 'update' || kind === 'delete') {
      op.seen = seen || seenOf(kind, data, this.view().get(id));
      op.base0 = knownSeq(this.confirmed.get(id));
    }
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
    let pulled = false;
    while (this.outbox.length) {
      let batch = nextBatch(this.outbox, PUSH_BATCH);
      // A base is only as good as the copy it is read from: a project whose copy is our
      // own op folded onto an older version is pulled first (once per push).
      if (!pulled && batch.some((op) => !op.sent && op.seen && this.confirmed.has(op.id) && Number.isInteger(this.confirmed.get(op.id).known_seq))) {
        pulled = true;
        try {
          await this.pull();
        } catch {
          return acked;
        }
        batch = nextBatch(this.outbox, PUSH_BATCH);
        if (!batch.length) return acked;
      }
      const fresh = batch.filter((op) => !op.sent);
      assignBases(batch, this.confirmed);
      // Once sent, an op keeps its base: if it was applied and the ack lost, sending it
      // again must ask the same question.
      for (const op of fresh) op.sent = true;
      if (fresh.length) await this.store.update(fresh);
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
      ops: ops.map(({ op_id, kind, id, data, base_seq }) => {
        const op = kind === 'delete' ? { op_id, kind, id } : { op_id, kind, id, data };
        if (kind !== 'create' && Number.isInteger(base_seq)) op.base_seq = base_seq;
        return op;
      }),
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
    const stale = outcome === 'conflict' && ack && ack.reason === 'stale';
    for (const op of ops) {
      if (outcome === 'applied') this.fold(op, ack, upserts, deletes);
      if (!stale) continue;
      if (ack.project && typeof ack.project === 'object' && ack.project.id === op.id) {
        // A stale delete answers with the project as it is: the server's own copy.
        const mine = this.confirmed.get(op.id);
        if (!mine || Number.isInteger(mine.known_seq) || !(mine.seq > ack.project.seq)) {
          this.confirmed.set(op.id, ack.project);
          upserts.push(ack.project);
        }
      } else if (Number.isInteger(ack.seq)) {
        // The fields nobody else changed were applied.
        const data = { ...(op.data || {}) };
        for (const f of Object.keys(ack.fields || {})) delete data[f];
        this.fold({ ...op, data }, ack, upserts, deletes);
      }
      this.addConflict(op, ack);
    }
    await this.store.commit({ upserts, deletes });
    await this.store.dequeue(ops.map((op) => op.n));
    if (stale) await this.saveConflicts();
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

  /**
   * Fold an applied op into `confirmed` now, so the display does not flicker until the
   * next pull brings the row. The copy is marked with the version it was folded onto
   * (`known_seq`) until the server sends the project itself.
   */
  fold(op, ack, upserts, deletes) {
    const before = this.confirmed.get(op.id);
    const seq = ack && Number.isInteger(ack.seq) ? ack.seq : null;
    // A pull that already brought this version (or a later one) says it all.
    if (before && !Number.isInteger(before.known_seq) && seq !== null && before.seq >= seq) return;
    const row = ack && (ack.project || ack.data);
    if (row && row.id === op.id && !row.deleted_at) this.confirmed.set(op.id, row);
    else applyOp(this.confirmed, op);
    const now = this.confirmed.get(op.id);
    // The row's version moves to the ack's seq, as the server's checksum expects.
    if (now && now !== row && seq !== null) this.confirmed.set(op.id, { ...now, seq, known_seq: knownSeq(before) });
    if (this.confirmed.has(op.id)) upserts.push(this.confirmed.get(op.id));
    else deletes.push(op.id);
  }

  // ---- conflicts ---------------------------------------------------------------------

  /** Record a stale ack for the user to decide; later ones on a project add to it. */
  addConflict(op, ack) {
    const prev = this.conflicts.get(op.id);
    if (op.kind === 'delete') {
      this.conflicts.set(op.id, { id: op.id, kind: 'delete', project: ack.project || null, seen: op.seen || null, at: Date.now() });
      return;
    }
    const fields = prev && prev.kind === 'update' ? { ...prev.fields } : {};
    for (const [f, v] of Object.entries(ack.fields || {})) {
      if (v && typeof v === 'object') fields[f] = { current: v.current ?? null, yours: v.yours ?? null };
    }
    if (!Object.keys(fields).length) return;
    // A delete still waiting for the user's answer outranks an edit made before it.
    if (prev && prev.kind === 'delete') return;
    this.conflicts.set(op.id, { id: op.id, kind: 'update', fields, at: Date.now() });
  }

  saveConflicts() {
    return this.store.saveConflicts([...this.conflicts.values()]).catch(() => {});
  }

  /**
   * Keep each conflict's "current" side equal to the server's copy as it moves; a
   * conflict whose project was deleted meanwhile is closed (and announced).
   */
  followConflicts() {
    if (!this.conflicts.size) return;
    let dirty = false;
    for (const c of [...this.conflicts.values()]) {
      const row = this.confirmed.get(c.id);
      if (!row) {
        if (this.outbox.some((op) => op.id === c.id && op.kind === 'create')) continue;
        this.conflicts.delete(c.id);
        dirty = true;
        this.dispatchEvent(new CustomEvent('conflict-gone', { detail: { id: c.id, kind: c.kind } }));
        continue;
      }
      if (Number.isInteger(row.known_seq)) continue; // our own fold, not the server's word
      if (c.kind === 'delete') {
        if (!c.project || !same(c.project, row)) {
          c.project = row;
          dirty = true;
        }
        continue;
      }
      for (const [f, v] of Object.entries(c.fields)) {
        if (!same(v.current, row[f] ?? null)) {
          v.current = row[f] ?? null;
          dirty = true;
        }
      }
    }
    if (dirty) this.saveConflicts();
  }

  /** The user keeps their side: sent again, based on the values they were just shown. */
  async keepMine(id) {
    const c = this.conflicts.get(id);
    if (!c) return;
    this.conflicts.delete(id);
    await this.saveConflicts();
    if (c.kind === 'delete') {
      await this.mutate('delete', id, null, { seen: c.project ? seenOf('delete', null, c.project) : null });
    } else {
      const data = {};
      const seen = {};
      for (const [f, v] of Object.entries(c.fields)) {
        data[f] = v.yours;
        seen[f] = v.current;
      }
      await this.mutate('update', id, data, { seen });
    }
  }

  /** The user keeps the other device's version: their edit is dropped. */
  async keepCurrent(id) {
    if (!this.conflicts.delete(id)) return;
    await this.saveConflicts();
    this.changed();
    this.notifySiblings();
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
