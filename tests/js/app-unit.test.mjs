// The web app's pure pieces, run in Node straight from static/ (no build step): the
// Socket.IO packet codec, the reconnect backoff, the checksum the server also computes,
// how server changes and acks are read, and how a push's ops get their base.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseServerUrl } from '../../static/js/config.js';
import { decodeSio, encodeEvent } from '../../static/js/sio.js';
import { backoffDelay } from '../../static/js/transport.js';
import { checksumOf, sha256Hex } from '../../static/js/checksum.js';
import { preferredLang, errorMessage, fieldError, dictionaries } from '../../static/js/i18n.js';
import { toCsv } from '../../static/js/csv.js';
import { parseChange, ackError, deviceLabel, nextBatch, assignBases, knownSeq, seenOf } from '../../static/js/sync.js';
import { validate, validateDates, applyOp, uuid, searchKey, matches, compareBy, isOverdue, today } from '../../static/js/project.js';

test('socket.io packets decode with namespace, ack id and payload', () => {
  assert.deepEqual(decodeSio('0{"sid":"x"}'), { type: '0', nsp: '/', id: null, data: { sid: 'x' } });
  assert.deepEqual(decodeSio('312[{"acks":[]}]'), { type: '3', nsp: '/', id: 12, data: [{ acks: [] }] });
  assert.deepEqual(decodeSio('2/admin,7["a",1]'), { type: '2', nsp: '/admin', id: 7, data: ['a', 1] });
  assert.deepEqual(decodeSio('1'), { type: '1', nsp: '/', id: null, data: undefined });
  assert.equal(decodeSio('2["unterminated'), null);
  assert.equal(decodeSio('9[]'), null);
  assert.equal(decodeSio(''), null);
  assert.equal(encodeEvent(['sync:push', { ops: [] }], 3), '423["sync:push",{"ops":[]}]');
});

test('reconnect backoff grows exponentially, is capped, and is jittered to 50-100 %', () => {
  assert.equal(backoffDelay(1, () => 0), 250);
  assert.equal(backoffDelay(1, () => 1), 500);
  assert.equal(backoffDelay(4, () => 1), 4000);
  assert.equal(backoffDelay(30, () => 1), 30000);
  assert.equal(backoffDelay(30, () => 0), 15000);
  const samples = new Set(Array.from({ length: 50 }, () => backoffDelay(3)));
  assert.ok(samples.size > 10, 'jitter spreads reconnects');
});

test('client checksum equals the server definition: XOR of sha256("<id>:<seq>"), hex', () => {
  assert.equal(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  const rows = Array.from({ length: 25 }, (_, i) => ({ id: uuid(), seq: i * 7 + 1 }));
  const expected = Buffer.alloc(32);
  for (const r of rows) {
    const d = createHash('sha256').update(`${r.id}:${r.seq}`).digest();
    for (let i = 0; i < 32; i += 1) expected[i] ^= d[i];
  }
  assert.equal(checksumOf(rows), expected.toString('hex'));
  assert.equal(checksumOf([...rows].reverse()), expected.toString('hex'), 'order independent');
  assert.equal(checksumOf([]), '0'.repeat(64));
  assert.equal(checksumOf([{ id: 'a' }]), null, 'rows without seq cannot be checked');
});

test('server changes are read as upserts and tombstones', () => {
  const project = { id: 'p1', seq: 4, name: 'Villa' };
  assert.deepEqual(parseChange({ kind: 'upsert', seq: 4, id: 'p1', project }), { id: 'p1', deleted: false, row: project });
  assert.deepEqual(parseChange({ kind: 'delete', seq: 5, id: 'p1', deleted_at: '2025-01-01T00:00:00.000Z' }), { id: 'p1', deleted: true });
  assert.equal(parseChange({ kind: 'upsert', seq: 1 }), null);
});

test('a refused op becomes per-field messages', () => {
  const err = ackError({ op_id: 'o', status: 'rejected', reason: 'validation_failed', message: 'name: must not be empty; progress: must be between 0 and 100', field: 'name' }, 'rejected');
  assert.deepEqual(err.fields, { name: 'must not be empty', progress: 'must be between 0 and 100' });
  assert.equal(err.code, 'validation_failed');
  const conflict = ackError({ op_id: 'o', status: 'conflict', reason: 'deleted', message: 'project was deleted' }, 'conflict');
  assert.equal(conflict.code, 'deleted');
});

test('client validation mirrors the API rules', () => {
  assert.deepEqual(Object.keys(validate({ name: ' ', status: 'lost', progress: 101, budget_centimes: -1, start_date: '2024-02-30' })).sort(),
    ['budget_centimes', 'name', 'progress', 'start_date', 'status']);
  assert.deepEqual(validate({ progress: 50 }, { partial: true }), {});
  assert.deepEqual(validateDates({ start_date: '2025-05-02', end_date: '2025-05-01' }), { end_date: 'valid.endBeforeStart' });
  assert.deepEqual(validateDates({ start_date: '2025-05-01', end_date: '2025-05-01' }), {});
});

test('ops replay onto a project map: create, field update, delete', () => {
  const m = new Map();
  applyOp(m, { kind: 'create', id: 'a', data: { name: 'A', city: 'Fès' }, at: 0 });
  applyOp(m, { kind: 'update', id: 'a', data: { city: 'Rabat' }, at: 1 });
  assert.equal(m.get('a').city, 'Rabat');
  assert.equal(m.get('a').name, 'A');
  applyOp(m, { kind: 'update', id: 'missing', data: { name: 'x' }, at: 2 });
  assert.equal(m.has('missing'), false, 'an update never creates a row');
  applyOp(m, { kind: 'delete', id: 'a', at: 3 });
  assert.equal(m.size, 0);
  assert.match(uuid(), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('the device label names the browser (or Electron) and the system, as history shows it', () => {
  const cases = [
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36', false, 'Chrome · Windows'],
    ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36', false, 'Chrome · Linux'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0', false, 'Edge · Windows'],
    ['Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15', false, 'Safari · macOS'],
    ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1', false, 'Safari · iOS'],
    ['Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36', false, 'Chrome · Android'],
    ['Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0', false, 'Firefox · Linux'],
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) btp-desktop/1.0 Chrome/130.0.0.0 Electron/33.0.0 Safari/537.36', false, 'Electron · Windows'],
    ['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36', true, 'Electron · Linux'],
    ['', false, 'Web'],
    [undefined, false, 'Web'],
  ];
  for (const [ua, electron, want] of cases) assert.equal(deviceLabel(ua, electron), want, String(ua));
  // What the server accepts: 1 to 80 characters, no control characters.
  for (const [ua, electron] of cases) {
    const label = deviceLabel(ua, electron);
    assert.ok(label.length >= 1 && label.length <= 80 && !/[\u0000-\u001f]/.test(label), label);
  }
});

// An update as the engine queues it: what its author saw, and the version then.
function edit(id, data, seen, base0, extra = {}) {
  return { op_id: `${id}-${Object.keys(data).join('-')}-${base0}`, kind: 'update', id, data, seen, base0, ...extra };
}

test('an op whose fields nobody else touched is re-based on the version held now; a touched one keeps its old base', () => {
  // The author saw progress 10 and notes "a" at version 4; the server's copy is now at 9:
  // another device changed the city (not ours to judge) and the notes (ours).
  const confirmed = new Map([['p', { id: 'p', seq: 9, progress: 10, notes: 'b', city: 'Fès' }]]);
  const progress = edit('p', { progress: 15 }, { progress: 10 }, 4);
  const notes = edit('p', { notes: 'mine' }, { notes: 'a' }, 4);
  assignBases([progress, notes], confirmed);
  assert.equal(progress.base_seq, 9);
  assert.equal(notes.base_seq, 4);
  // An edit made on top of an earlier pending edit of this device saw that edit's value.
  const first = edit('p', { progress: 15 }, { progress: 10 }, 9);
  const second = edit('p', { progress: 20 }, { progress: 15 }, 9);
  assignBases([first, second], confirmed);
  assert.deepEqual([first.base_seq, second.base_seq], [9, 9]);
  // ...unless that earlier edit is itself expected to conflict: then the second too.
  const stale = edit('p', { notes: 'x' }, { notes: 'a' }, 4);
  const after = edit('p', { notes: 'y' }, { notes: 'x' }, 4);
  assignBases([stale, after], confirmed);
  assert.deepEqual([stale.base_seq, after.base_seq], [4, 4]);
  // A delete compares every field its author saw.
  const row = confirmed.get('p');
  const del = { op_id: 'd', kind: 'delete', id: 'p', data: null, seen: seenOf('delete', null, { ...row, notes: 'a' }), base0: 4 };
  assignBases([del], confirmed);
  assert.equal(del.base_seq, 4);
  const delNow = { op_id: 'd2', kind: 'delete', id: 'p', data: null, seen: seenOf('delete', null, row), base0: 4 };
  assignBases([delNow], confirmed);
  assert.equal(delNow.base_seq, 9);
});

test('a base is never worked out again once sent, nor from a copy our own ack made', () => {
  const sent = edit('p', { progress: 15 }, { progress: 10 }, 4, { sent: true, base_seq: 4 });
  assignBases([sent], new Map([['p', { id: 'p', seq: 9, progress: 10 }]]));
  assert.equal(sent.base_seq, 4);
  // Our own op folded at 12 onto version 9: the copy stands for version 9.
  const folded = { id: 'p', seq: 12, known_seq: 9, progress: 15 };
  assert.equal(knownSeq(folded), 9);
  assert.equal(knownSeq({ id: 'p', seq: 12 }), 12);
  assert.equal(knownSeq(undefined), 0);
  const next = edit('p', { progress: 20 }, { progress: 15 }, 9);
  assignBases([next], new Map([['p', folded]]));
  assert.equal(next.base_seq, 9);
  // Ops from before conflicts were reported carry no base; creates never do.
  const legacy = { op_id: 'l', kind: 'update', id: 'p', data: { progress: 1 } };
  const create = { op_id: 'c', kind: 'create', id: 'q', data: { name: 'Q' } };
  assignBases([legacy, create], new Map());
  assert.equal(legacy.base_seq, undefined);
  assert.equal(create.base_seq, undefined);
});

test('a new op does not share a batch with an earlier op of its project whose ack was lost', () => {
  const op = (id, n, sent = false) => ({ op_id: `${id}${n}`, id, n, sent });
  const outbox = [op('a', 1, true), op('b', 2, true), op('b', 3), op('a', 4), op('c', 5)];
  // b3 follows b2, which was sent and never acknowledged: the batch ends before b3.
  assert.deepEqual(nextBatch(outbox, 500).map((o) => o.op_id), ['a1', 'b2']);
  assert.deepEqual(nextBatch(outbox, 1).map((o) => o.op_id), ['a1']);
  // Ops all sent together before, or all new, travel together.
  assert.deepEqual(nextBatch([op('a', 1, true), op('a', 2, true)], 500).length, 2);
  assert.deepEqual(nextBatch([op('a', 1), op('a', 2), op('b', 3)], 500).length, 3);
  assert.deepEqual(nextBatch([], 500), []);
});

test('search ignores case and accents in French, harakat and letter variants in Arabic', () => {
  const p = { name: 'Résidence Al Manar', client: 'Groupe Addoha', city: 'Casablanca', notes: 'Cœur d’îlot', status: 'active' };
  for (const q of ['residence', 'RÉSIDENCE', 'Residénce', 'coeur d’ilot', 'CŒUR']) assert.ok(matches(p, q, ''), q);
  assert.ok(!matches(p, 'residences', ''));
  assert.ok(!matches(p, 'residence', 'done'), 'the status filter still applies');
  const ar = { name: 'مدرسة الأمل', city: 'إفران', notes: 'بِنَاءُ المُستَشفى', status: 'planned' };
  // ta marbuta / ha, alef with hamza / bare alef, harakat, alef maqsura / ya, tatweel.
  for (const q of ['مدرسه', 'الامل', 'افران', 'بناء', 'المستشفي', 'مـدرسة', 'أفران']) assert.ok(matches(ar, q, ''), q);
  assert.equal(searchKey('ٱلإِسْلَامُ'), 'الاسلام');
  assert.equal(searchKey(null), '');
});

test('the list sorts by newest, name, end date, budget and progress; missing values last', () => {
  const rows = [
    { id: 'a', name: 'Barrage', created_at: '2026-01-03', end_date: '2027-05-01', budget_centimes: 500, progress: 80 },
    { id: 'b', name: 'atelier', created_at: '2026-01-01', end_date: null, budget_centimes: 900, progress: 10 },
    { id: 'c', name: 'Clinique', created_at: '2026-01-02', end_date: '2026-02-01', budget_centimes: null, progress: null },
  ];
  const order = (sort) => [...rows].sort(compareBy(sort, 'fr')).map((r) => r.id).join('');
  assert.equal(order('newest'), 'acb');
  assert.equal(order('name'), 'bac');
  assert.equal(order('end_date'), 'cab');
  assert.equal(order('budget'), 'bac');
  assert.equal(order('progress'), 'bac');
  assert.equal(order('unknown'), 'acb', 'an unknown order is newest first');
});

test('a project is overdue when its end date has passed and it is not done', () => {
  assert.ok(isOverdue({ end_date: '2026-12-07', status: 'active' }, '2026-12-08'));
  assert.ok(!isOverdue({ end_date: '2026-12-08', status: 'active' }, '2026-12-08'), 'due today is not late');
  assert.ok(!isOverdue({ end_date: '2026-12-07', status: 'done' }, '2026-12-08'));
  assert.ok(!isOverdue({ end_date: null, status: 'planned' }, '2026-12-08'));
  assert.equal(today(new Date(2026, 0, 5, 23, 30)), '2026-01-05');
});

test('Arabic is the default when the browser prefers it before French', () => {
  assert.equal(preferredLang(['ar-MA', 'fr-FR', 'en']), 'ar');
  assert.equal(preferredLang(['ar']), 'ar');
  assert.equal(preferredLang(['en-US', 'ar-EG', 'fr']), 'ar');
  assert.equal(preferredLang(['fr-FR', 'ar-MA']), 'fr');
  assert.equal(preferredLang(['en-US', 'de']), 'fr');
  assert.equal(preferredLang([]), 'fr');
  assert.equal(preferredLang(undefined), 'fr');
});

test('server errors are shown in the app\'s words, never the server\'s English', () => {
  // Node has no saved language and no navigator.languages here: French.
  assert.equal(errorMessage('conflict', 'email'), 'Un compte existe déjà avec cette adresse e-mail.');
  assert.equal(errorMessage('rate_limited'), 'Trop de tentatives. Réessayez dans quelques minutes.');
  assert.equal(errorMessage('invalid_base_seq'), 'Modification refusée : données invalides.');
  assert.equal(errorMessage('something_new'), 'Le serveur a refusé la demande.');
  assert.equal(errorMessage(undefined), 'Le serveur a refusé la demande.');
  assert.equal(fieldError('name', 'account'), 'Le nom doit compter de 1 à 100 caractères.');
  assert.equal(fieldError('progress', 'project'), 'L’avancement doit être entre 0 et 100.');
  assert.equal(fieldError('whatever', 'project'), 'Valeur invalide.');
  for (const code of ['unauthorized', 'invalid_credentials', 'validation_failed', 'not_found', 'conflict', 'payload_too_large', 'batch_too_large', 'upstream_unavailable', 'upstream_timeout', 'request_timeout', 'internal']) {
    assert.notEqual(errorMessage(code), 'Le serveur a refusé la demande.', code);
  }
});

test('French and Arabic say the same things', () => {
  const fr = Object.keys(dictionaries.fr).sort();
  const ar = Object.keys(dictionaries.ar).sort();
  assert.deepEqual(fr.filter((k) => !ar.includes(k)), [], 'missing in Arabic');
  assert.deepEqual(ar.filter((k) => !fr.includes(k)), [], 'missing in French');
});

test('the CSV export: BOM, separators and decimal mark by language, amounts in MAD, ISO dates, cells quoted and formulas defused', () => {
  const labels = (k) => ({ 'status.active': 'En cours', 'status.done': 'Terminé' }[k] || k.replace('csv.', ''));
  const rows = [
    { name: 'Résidence; Al Manar', client: 'Groupe "Addoha"', city: 'الدار البيضاء', status: 'active', budget_centimes: 1250000050, progress: 45, start_date: '2025-01-15', end_date: '2026-09-30', notes: 'R+8\nGros œuvre' },
    { name: '=HYPERLINK("x")', client: null, city: '', status: 'done', budget_centimes: null, progress: null, start_date: null, end_date: null, notes: '' },
  ];
  const fr = toCsv(rows, 'fr', labels);
  assert.ok(fr.startsWith('\uFEFF'), 'byte order mark');
  const lines = fr.slice(1).split('\r\n');
  assert.equal(lines[0], 'name;client;city;status;budget_mad;progress;start_date;end_date;notes');
  assert.equal(lines[1], '"Résidence; Al Manar";"Groupe ""Addoha""";الدار البيضاء;En cours;12500000,50;45;2025-01-15;2026-09-30;"R+8\nGros œuvre"');
  assert.equal(lines[2], '"\'=HYPERLINK(""x"")";;;Terminé;;;;;');
  assert.equal(lines[3], '');
  const ar = toCsv(rows.slice(0, 1), 'ar', labels).slice(1).split('\r\n');
  assert.ok(ar[1].split(',').includes('12500000.50'), ar[1]);
});

test('index.html preloads the sign-in form\'s modules; every module is reachable, so the service worker keeps it', () => {
  const staticRoot = fileURLToPath(new URL('../../static/', import.meta.url));
  const source = (rel) => readFileSync(path.join(staticRoot, rel), 'utf8');
  // A module's relative imports, split into static and dynamic (`import('…')`).
  const importsOf = (rel) => {
    const text = source(rel);
    const resolve = (spec) => path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec));
    return {
      static: [...text.matchAll(/^(?:import|export)\b[^'"`;]*?\bfrom\s*'(\.{1,2}\/[^']+)'/gm)].map((m) => resolve(m[1])),
      dynamic: [...text.matchAll(/\bimport\(\s*'(\.{1,2}\/[^']+)'\s*\)/g)].map((m) => resolve(m[1])),
    };
  };
  const closure = (roots, follow) => {
    const seen = new Set(roots);
    for (const queue = [...roots]; queue.length;) {
      for (const next of follow(importsOf(queue.shift()))) if (!seen.has(next)) { seen.add(next); queue.push(next); }
    }
    return [...seen].sort();
  };
  const modules = readdirSync(path.join(staticRoot, 'js'), { recursive: true })
    .filter((f) => f.endsWith('.js'))
    .map((f) => `js/${f.split(path.sep).join('/')}`)
    .sort();
  const html = source('index.html');
  const preloaded = [...html.matchAll(/<link rel="modulepreload" href="([^"]+)">/g)].map((m) => m[1]);
  assert.equal(new Set(preloaded).size, preloaded.length);
  // Exactly what app.js needs before it can draw the sign-in form: its static imports.
  assert.deepEqual([...preloaded].sort(), closure(['js/app.js'], (i) => i.static),
    'a module app.js imports but index.html does not preload arrives a wave later on a first visit');
  assert.ok(!preloaded.includes('js/workspace.js') && !preloaded.includes('js/sync.js'), 'the signed-in workspace is not on the sign-in form\'s path');
  // Everything, through the dynamic import of the workspace too: what the worker keeps.
  assert.deepEqual(closure(preloaded, (i) => [...i.static, ...i.dynamic]), modules, 'a module nobody imports');
  for (const [, href] of html.matchAll(/(?:href|src)="([^"]+)"/g)) {
    assert.ok(existsSync(path.join(staticRoot, href)), `index.html links ${href}, which does not exist`);
  }
});

test('a server address typed in the desktop app is an http(s) base URL, or refused', () => {
  assert.equal(parseServerUrl(' https://btp.exemple.ma/ '), 'https://btp.exemple.ma');
  assert.equal(parseServerUrl('http://10.0.0.5:8080/btp/'), 'http://10.0.0.5:8080/btp');
  assert.equal(parseServerUrl('HTTPS://BTP.Exemple.MA'), 'https://btp.exemple.ma');
  for (const bad of ['', 'btp.exemple.ma', 'ftp://btp.exemple.ma', 'javascript:alert(1)', 'file:///etc/passwd', 'https://user:pw@btp.exemple.ma', 'http://']) {
    assert.equal(parseServerUrl(bad), null, bad);
  }
});
