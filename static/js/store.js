// The device's copy of a user's data in IndexedDB: `projects` (the last state confirmed
// by the server), `outbox` (ops not yet acknowledged, in the order they were made) and
// `meta` (the sync cursor, and the conflicts waiting for the user's choice). One database per user, so switching accounts on a device
// never mixes data. If IndexedDB is unavailable (private modes, odd embedders) a memory
// store with the same interface keeps the app usable for the session.

const VERSION = 1;

function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error('transaction aborted'));
  });
}

export function dbName(userId) {
  return `btp-sync-${userId}`;
}

class IdbStore {
  constructor(db) {
    this.db = db;
  }

  async load() {
    const tx = this.db.transaction(['projects', 'outbox', 'meta'], 'readonly');
    const [projects, outbox, cursor, conflicts] = await Promise.all([
      req(tx.objectStore('projects').getAll()),
      req(tx.objectStore('outbox').getAll()),
      req(tx.objectStore('meta').get('cursor')),
      req(tx.objectStore('meta').get('conflicts')),
    ]);
    return { projects, outbox, cursor: cursor ?? 0, conflicts: conflicts ?? [] };
  }

  async loadOutbox() {
    const tx = this.db.transaction('outbox', 'readonly');
    return req(tx.objectStore('outbox').getAll());
  }

  async loadConflicts() {
    const tx = this.db.transaction('meta', 'readonly');
    return (await req(tx.objectStore('meta').get('conflicts'))) ?? [];
  }

  async saveConflicts(conflicts) {
    const tx = this.db.transaction('meta', 'readwrite');
    tx.objectStore('meta').put(conflicts, 'conflicts');
    await done(tx);
  }

  /** Apply server state in one transaction: optional full replace, upserts, deletes, cursor. */
  async commit({ replace = false, upserts = [], deletes = [], cursor }) {
    const tx = this.db.transaction(['projects', 'meta'], 'readwrite');
    const projects = tx.objectStore('projects');
    if (replace) projects.clear();
    for (const p of upserts) projects.put(p);
    for (const id of deletes) projects.delete(id);
    if (cursor !== undefined) tx.objectStore('meta').put(cursor, 'cursor');
    await done(tx);
  }

  /** Queue an op; resolves with its outbox key (insertion order). */
  async enqueue(op) {
    const tx = this.db.transaction('outbox', 'readwrite');
    const key = await req(tx.objectStore('outbox').add(op));
    await done(tx);
    return key;
  }

  async dequeue(keys) {
    if (!keys.length) return;
    const tx = this.db.transaction('outbox', 'readwrite');
    for (const k of keys) tx.objectStore('outbox').delete(k);
    await done(tx);
  }

  /** Store queued ops again (once sent, an op keeps its base); a dequeued op stays gone. */
  async update(ops) {
    const tx = this.db.transaction('outbox', 'readwrite');
    const outbox = tx.objectStore('outbox');
    for (const op of ops) {
      const r = outbox.get(op.n);
      r.onsuccess = () => { if (r.result) outbox.put(op); };
    }
    await done(tx);
  }

  close() {
    this.db.close();
  }
}

class MemoryStore {
  constructor() {
    this.projects = new Map();
    this.outbox = new Map();
    this.cursor = 0;
    this.conflicts = [];
    this.nextKey = 1;
  }

  async load() {
    return { projects: [...this.projects.values()], outbox: [...this.outbox.values()], cursor: this.cursor, conflicts: this.conflicts };
  }

  async loadOutbox() {
    return [...this.outbox.values()];
  }

  async loadConflicts() {
    return this.conflicts;
  }

  async saveConflicts(conflicts) {
    this.conflicts = conflicts;
  }

  async commit({ replace = false, upserts = [], deletes = [], cursor }) {
    if (replace) this.projects.clear();
    for (const p of upserts) this.projects.set(p.id, p);
    for (const id of deletes) this.projects.delete(id);
    if (cursor !== undefined) this.cursor = cursor;
  }

  async enqueue(op) {
    const key = this.nextKey++;
    this.outbox.set(key, { ...op, n: key });
    return key;
  }

  async dequeue(keys) {
    for (const k of keys) this.outbox.delete(k);
  }

  async update(ops) {
    for (const op of ops) if (this.outbox.has(op.n)) this.outbox.set(op.n, { ...op });
  }

  close() {}
}

export async function openStore(userId) {
  if (typeof indexedDB === 'undefined') return new MemoryStore();
  try {
    const open = indexedDB.open(dbName(userId), VERSION);
    open.onupgradeneeded = () => {
      const db = open.result;
      db.createObjectStore('projects', { keyPath: 'id' });
      db.createObjectStore('outbox', { keyPath: 'n', autoIncrement: true });
      db.createObjectStore('meta');
    };
    const db = await req(open);
    return new IdbStore(db);
  } catch {
    return new MemoryStore();
  }
}

export async function deleteStore(userId) {
  if (typeof indexedDB === 'undefined') return;
  try {
    // Another tab holding the database open would block forever; do not wait for it.
    await Promise.race([req(indexedDB.deleteDatabase(dbName(userId))), new Promise((r) => setTimeout(r, 1500))]);
  } catch { /* best effort: the data is per user and harmless to keep */ }
}
