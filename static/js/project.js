// The project domain on the client: statuses, the validation rules the API enforces
// (checked here first so an offline edit is not queued only to be rejected later), and
// how an op changes a project map — used both for optimistic display and for replaying
// unsynced ops on top of a fresh server copy.

export const STATUSES = ['planned', 'active', 'on_hold', 'done'];
export const EDITABLE_FIELDS = ['name', 'client', 'city', 'budget_centimes', 'status', 'start_date', 'end_date', 'progress', 'notes'];

const ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;

function validDate(s) {
  if (!ISO_DATE.test(s)) return false;
  const d = new Date(`${s}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().startsWith(s);
}

/** Field → i18n key of the problem, for a full project (create) or a partial one (update). */
export function validate(data, { partial = false } = {}) {
  const errors = {};
  if (!partial || 'name' in data) {
    const name = (data.name ?? '').trim();
    if (!name) errors.name = 'valid.nameRequired';
    else if ([...name].length > 200) errors.name = 'valid.nameTooLong';
  }
  if ('status' in data && !STATUSES.includes(data.status)) errors.status = 'valid.status';
  if ('budget_centimes' in data && data.budget_centimes !== null) {
    if (!Number.isSafeInteger(data.budget_centimes) || data.budget_centimes < 0) errors.budget_centimes = 'valid.budget';
  }
  if ('progress' in data && data.progress !== null) {
    if (!Number.isInteger(data.progress) || data.progress < 0 || data.progress > 100) errors.progress = 'valid.progress';
  }
  for (const f of ['start_date', 'end_date']) {
    if (data[f] && !validDate(data[f])) errors[f] = 'valid.date';
  }
  return errors;
}

/** The end ≥ start rule needs both dates, which an update may take from the stored row. */
export function validateDates(merged) {
  if (merged.start_date && merged.end_date && merged.end_date < merged.start_date) {
    return { end_date: 'valid.endBeforeStart' };
  }
  return {};
}

/** Apply one op to a Map of projects (mutates the map, never the stored objects). */
export function applyOp(map, op) {
  if (op.kind === 'delete') {
    map.delete(op.id);
    return;
  }
  const existing = map.get(op.id);
  if (op.kind === 'create') {
    map.set(op.id, { ...(existing || {}), ...op.data, id: op.id, created_at: existing?.created_at ?? new Date(op.at).toISOString(), updated_at: new Date(op.at).toISOString() });
  } else if (op.kind === 'update' && existing) {
    map.set(op.id, { ...existing, ...op.data, updated_at: new Date(op.at).toISOString() });
  }
}

/** RFC 4122 v4 UUID; crypto.randomUUID exists only in secure contexts. */
export function uuid() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function matches(p, query, status) {
  if (status && p.status !== status) return false;
  if (!query) return true;
  const q = query.toLocaleLowerCase();
  return [p.name, p.client, p.city, p.notes].some((v) => typeof v === 'string' && v.toLocaleLowerCase().includes(q));
}

export function totals(projects) {
  const out = { all: 0, budget: 0 };
  for (const s of STATUSES) out[s] = 0;
  for (const p of projects) {
    out.all += 1;
    if (p.status in out) out[p.status] += 1;
    if (Number.isFinite(p.budget_centimes)) out.budget += p.budget_centimes;
  }
  return out;
}
