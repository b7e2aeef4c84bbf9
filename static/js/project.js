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

/** A field's value as edits and conflicts compare it: absent and null are the same. */
export function sameValue(a, b) {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
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

/**
 * Text as search compares it: lower case, without accents (French) or harakat (Arabic),
 * with the letter variants people type interchangeably made one: alef forms → ا,
 * ta marbuta → ه, alef maqsura → ي, hamza carriers → their letter; tatweel dropped;
 * œ/æ spelled out.
 */
export function searchKey(text) {
  return String(text ?? '')
    .normalize('NFD')
    .replace(/\p{M}/gu, '') // accents, harakat, hamza above/below, madda, dagger alef
    .toLowerCase()
    .replace(/\u0640/g, '') // tatweel
    .replace(/[\u0671\u0672\u0673\u0675]/g, '\u0627') // alef wasla and other alef forms
    .replace(/\u0629/g, '\u0647') // ta marbuta → ha
    .replace(/\u0649/g, '\u064a') // alef maqsura → ya
    .replace(/œ/g, 'oe')
    .replace(/æ/g, 'ae');
}

export function matches(p, query, status) {
  if (status && p.status !== status) return false;
  const q = searchKey(query);
  if (!q) return true;
  return [p.name, p.client, p.city, p.notes].some((v) => typeof v === 'string' && searchKey(v).includes(q));
}

/** The list's orders: value of the `sort-select` option → comparison. */
export const SORTS = ['newest', 'name', 'end_date', 'budget', 'progress'];

function byName(a, b, locale) {
  return String(a.name || '').localeCompare(String(b.name || ''), locale, { sensitivity: 'base' });
}

/**
 * Compare two projects for `sort`: newest first; name A→Z; end date soonest first;
 * budget largest first; progress least advanced first (what lags shows first). Projects
 * without the value come last; ties go by name.
 */
export function compareBy(sort, locale) {
  const missingLast = (x, y) => (x === null || x === undefined || x === '' ? 1 : 0) - (y === null || y === undefined || y === '' ? 1 : 0);
  return (a, b) => {
    let d = 0;
    if (sort === 'name') d = 0;
    else if (sort === 'end_date') d = missingLast(a.end_date, b.end_date) || String(a.end_date || '').localeCompare(String(b.end_date || ''));
    else if (sort === 'budget') d = missingLast(a.budget_centimes, b.budget_centimes) || (b.budget_centimes ?? 0) - (a.budget_centimes ?? 0);
    else if (sort === 'progress') d = missingLast(a.progress, b.progress) || (a.progress ?? 0) - (b.progress ?? 0);
    else {
      const ca = a.created_at || '';
      const cb = b.created_at || '';
      d = ca === cb ? 0 : (ca < cb ? 1 : -1);
    }
    return d || byName(a, b, locale);
  };
}

/** Today as YYYY-MM-DD in the device's time zone (end dates are calendar dates). */
export function today(now = new Date()) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

/** Overdue: its end date has passed and it is not done. */
export function isOverdue(p, day = today()) {
  return Boolean(p.end_date) && p.end_date < day && p.status !== 'done';
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
