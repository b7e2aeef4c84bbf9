// The web app against the real system (btp gateway + API + SQLite) in Debian's chromium.
// Two browser contexts are two devices of one user; every scenario goes through the UI.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { startSystem, freePort, STATIC_ROOT } from './lib/system.mjs';
import {
  launch, newDevice, tid, shot, waitConn, signUp, signIn, createProject, editProject, deleteProject,
  rowByName, listNames, total, pendingCount, eventually,
} from './lib/browser.mjs';

const INDEX_FILE_URL = pathToFileURL(path.join(STATIC_ROOT, 'index.html')).href;
const user = { name: 'Amina Benali', email: `amina.${Date.now()}@chantier.ma`, password: 'b3ton-arme!' };
/** Chrome on Windows, as a third device announces itself. */
const WINDOWS_CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36';

/** Console errors a server-down page legitimately shows: the failed requests themselves. */
const isNetworkFailure = (e) => /Failed to load resource|net::ERR_|ERR_CONNECTION_REFUSED|Failed to fetch/.test(e);

describe('web app on the real gateway and API', () => {
  let system;
  let browser;
  let A;
  let B;

  before(async () => {
    system = await startSystem({ name: 'btp-browser' });
    browser = await launch();
    A = await newDevice(browser, { name: 'A' });
    // B records every value the total ever shows, across reloads (see the reload test).
    B = await newDevice(browser, {
      name: 'B',
      initScript: () => {
        const seen = JSON.parse(sessionStorage.getItem('totalsSeen') || '[]');
        const record = () => {
          const el = document.querySelector('[data-testid="totals-all"]');
          if (!el) return;
          const v = el.getAttribute('data-value');
          if (v !== null && seen[seen.length - 1] !== v) {
            seen.push(v);
            sessionStorage.setItem('totalsSeen', JSON.stringify(seen));
          }
        };
        new MutationObserver(record).observe(document, { subtree: true, childList: true, attributes: true });
      },
    });
  });

  after(async () => {
    await browser?.close();
    await system?.stop();
  });

  test('sign-up and sign-in screens render and a new account lands on the empty list', async () => {
    await A.page.goto(system.url);
    await A.page.waitForSelector(tid('login-email'));
    await shot(A.page, '01-sign-in.png');
    await A.page.click(tid('auth-tab-register'));
    await A.page.waitForSelector(tid('register-name'));
    await shot(A.page, '02-sign-up.png');
    await signUp(A.page, user);
    await waitConn(A.page, 'websocket');
    await A.page.waitForSelector(tid('state-empty'));
    assert.equal(await total(A.page), 0);
    await shot(A.page, '03-empty-list.png');

    await B.page.goto(system.url);
    await signIn(B.page, user);
    await waitConn(B.page, 'websocket');
  });

  test('the form shows per-field validation messages and refuses to save', async () => {
    await A.page.click(tid('new-project'));
    await A.page.fill(tid('project-start-date'), '2025-06-01');
    await A.page.fill(tid('project-end-date'), '2025-05-01');
    await A.page.fill(tid('project-progress'), '140');
    await A.page.click(tid('project-save'));
    for (const f of ['name', 'end_date', 'progress']) {
      await A.page.waitForSelector(`${tid(`error-${f}`)}:not([hidden])`);
    }
    await shot(A.page, '04-form-validation.png');
    await A.page.click(tid('project-cancel'));
    assert.equal(await total(A.page), 0);
  });

  test('a project created on device A appears on device B within one second, without reload', async (t) => {
    const seed = [
      { name: 'Résidence Al Manar', client: 'Groupe Addoha', city: 'Casablanca', budget: '12500000', status: 'active', progress: 45, start_date: '2025-01-15', end_date: '2026-09-30', notes: 'R+8, 120 logements.\nGros œuvre en cours.' },
      { name: 'Pont Oued Sebou', client: 'Ministère de l’Équipement', city: 'Kénitra', budget: '84000000', status: 'planned', progress: 0, start_date: '2025-11-01', end_date: '2027-12-31' },
      { name: 'École Hay Riad', client: 'Commune de Rabat', city: 'Rabat', budget: '2300000,50', status: 'done', progress: 100 },
    ];
    for (const p of seed) await createProject(A.page, p);

    const name = 'Entrepôt logistique Tanger Med';
    await A.page.click(tid('new-project'));
    await A.page.fill(tid('project-name'), name);
    await A.page.fill(tid('project-city'), 'Tanger');
    await A.page.selectOption(tid('project-status'), 'on_hold');
    await A.page.fill(tid('project-budget'), '5600000');
    await A.page.fill(tid('project-progress'), '30');
    const t0 = Date.now();
    await A.page.click(tid('project-save'));
    await B.page.waitForSelector(rowByName(name), { timeout: 5000 });
    const elapsed = Date.now() - t0;
    t.diagnostic(`A save → B row: ${elapsed} ms`);
    assert.ok(elapsed <= 1000, `B saw the new project after ${elapsed} ms`);
    assert.equal(B.page.url(), `${system.url}/#/`, 'B was not reloaded');
    await eventually(async () => (await total(B.page)) === 4);
    assert.equal(await total(B.page), 4);
    assert.equal(await B.page.getAttribute(tid('totals-on-hold'), 'data-value'), '1');
    await A.page.waitForSelector(tid('project-form-dialog'), { state: 'detached' });
    await shot(A.page, '05-projects-list.png');
  });

  test('an edit on device B shows on device A, and the project history names the browser that made each change', async () => {
    await editProject(B.page, 'Pont Oued Sebou', { status: 'active', progress: 12 });
    await A.page.waitForSelector(`${rowByName('Pont Oued Sebou')} ${tid('project-row-status')}[data-status="active"]`, { timeout: 3000 });
    assert.equal(await A.page.getAttribute(tid('totals-active'), 'data-value'), '2');

    const { token } = JSON.parse(await B.page.evaluate(() => localStorage.getItem('btp.session')));
    const api = async (path) => {
      const res = await fetch(`${system.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200, await res.clone().text());
      return res.json();
    };
    const { projects } = await api('/api/projects');
    const bridge = projects.find((p) => p.name === 'Pont Oued Sebou');
    const { entries } = await api(`/api/projects/${bridge.id}/history`);
    assert.deepEqual(entries.map((e) => e.kind), ['update', 'create']);
    // Headless Chromium on Linux, as the page labels itself in every push.
    assert.deepEqual(entries.map((e) => e.device), ['Chrome · Linux', 'Chrome · Linux']);
    assert.deepEqual(entries[0].fields.progress, { from: 0, to: 12 });
    assert.deepEqual(entries[0].fields.status, { from: 'planned', to: 'active' });

    // The project's page shows the same history, and the next edit joins it.
    await A.page.goto(`${system.url}/#/p/${bridge.id}`);
    await A.page.waitForSelector(`${tid('history-panel')}[data-state="ready"]`);
    const shownEntries = async () => A.page.$$eval(tid('history-entry'), (els) => els.map((e) => [e.dataset.kind, e.querySelector('[data-testid="history-device"]').textContent]));
    assert.deepEqual(await shownEntries(), [['update', 'Chrome · Linux'], ['create', 'Chrome · Linux']]);
    const change = await A.page.textContent(`${tid('history-entry')}[data-kind="update"] [data-field="progress"]`);
    assert.match(change, /0 %.*12 %/);
    await shot(A.page, '07b-project-history.png');
    await editProject(B.page, 'Pont Oued Sebou', { progress: 20 });
    await eventually(async () => (await shownEntries()).length === 3);
    await A.page.goto(`${system.url}/#/`);
    await A.page.waitForSelector(`${tid('totals')}[data-ready="true"]`);
  });

  test('a delete on device A disappears from device B, after a confirmation', async () => {
    await A.page.click(`${rowByName('École Hay Riad')} ${tid('project-delete')}`);
    await A.page.waitForSelector(tid('confirm-dialog'));
    await shot(A.page, '06-confirm-delete.png');
    await A.page.click(tid('cancel-delete'));
    assert.equal(await total(A.page), 4, 'cancel keeps the project');
    await deleteProject(A.page, 'École Hay Riad');
    await B.page.waitForSelector(rowByName('École Hay Riad'), { state: 'detached', timeout: 3000 });
    assert.equal(await total(B.page), 3);
    assert.deepEqual(await listNames(B.page), await listNames(A.page));
  });

  test('the detail view shows every field of a project', async () => {
    await A.page.click(`${rowByName('Résidence Al Manar')} ${tid('project-open')}`);
    await A.page.waitForSelector(tid('project-detail'));
    assert.equal(await A.page.textContent(tid('detail-name')), 'Résidence Al Manar');
    assert.equal(await A.page.textContent(tid('detail-city')), 'Casablanca');
    assert.match(await A.page.textContent(tid('detail-budget')), /12[\s\u202f.]?500[\s\u202f.]?000/);
    await shot(A.page, '07-project-detail.png');
    await A.page.click(tid('detail-back'));
    await A.page.waitForSelector(tid('project-list'));
  });

  test('search and status filter narrow the list and the totals stay global', async () => {
    await A.page.fill(tid('search-input'), 'tanger');
    assert.deepEqual(await listNames(A.page), ['Entrepôt logistique Tanger Med']);
    await A.page.fill(tid('search-input'), '');
    await A.page.selectOption(tid('status-filter'), 'active');
    assert.deepEqual(await listNames(A.page), ['Pont Oued Sebou', 'Résidence Al Manar']);
    assert.equal(await total(A.page), 3);
    await A.page.fill(tid('search-input'), 'zzz');
    await A.page.waitForSelector(tid('state-nomatch'));
    await A.page.click(tid('clear-filters'));
    assert.equal((await listNames(A.page)).length, 3);

    // Accents and case do not matter; an end date passed on an unfinished project shows.
    await A.page.fill(tid('search-input'), 'RESIDENCE');
    assert.deepEqual(await listNames(A.page), ['Résidence Al Manar']);
    assert.ok(await A.page.$(`${rowByName('Résidence Al Manar')} ${tid('project-row-overdue')}`), 'ended 2026-09-30, still active');
    await A.page.fill(tid('search-input'), '');
    assert.equal(await A.page.$(`${rowByName('Pont Oued Sebou')} ${tid('project-row-overdue')}`), null, 'ends in 2027');
    // The list in the order asked for (as displayed, top to bottom).
    const order = () => A.page.$$eval(tid('project-row'), (rows) => rows.map((r) => r.dataset.name));
    await A.page.selectOption(tid('sort-select'), 'name');
    assert.deepEqual(await order(), ['Entrepôt logistique Tanger Med', 'Pont Oued Sebou', 'Résidence Al Manar']);
    await A.page.selectOption(tid('sort-select'), 'budget');
    assert.deepEqual(await order(), ['Pont Oued Sebou', 'Résidence Al Manar', 'Entrepôt logistique Tanger Med']);
    await A.page.selectOption(tid('sort-select'), 'end_date');
    assert.deepEqual(await order(), ['Résidence Al Manar', 'Pont Oued Sebou', 'Entrepôt logistique Tanger Med']);
    await A.page.selectOption(tid('sort-select'), 'newest');
    // The list as shown, for a spreadsheet: French separators, MAD amounts, ISO dates.
    await A.page.selectOption(tid('status-filter'), 'active');
    const [download] = await Promise.all([A.page.waitForEvent('download'), A.page.click(tid('export-csv'))]);
    const csv = readFileSync(await download.path(), 'utf8');
    await A.page.selectOption(tid('status-filter'), '');
    assert.match(download.suggestedFilename(), /^projets-\d{4}-\d{2}-\d{2}\.csv$/);
    assert.ok(csv.startsWith('\uFEFF'), 'UTF-8 byte order mark');
    const lines = csv.slice(1).trimEnd().split('\r\n');
    assert.equal(lines[0], 'Nom;Client;Ville;Statut;Budget (MAD);Avancement (%);Début;Fin;Notes');
    assert.equal(lines.length, 1 + 2, 'the header and the two active projects (a line break inside a quoted note is not a row)');
    assert.match(csv, /\r\nRésidence Al Manar;Groupe Addoha;Casablanca;En cours;12500000,00;45;2025-01-15;2026-09-30;"R\+8, 120 logements\.\nGros œuvre en cours\."\r\n/);
    // Printing the list gives the projects without the app around them.
    await A.page.emulateMedia({ media: 'print' });
    const printed = await A.page.evaluate(() => ['topbar', 'toolbar', 'row-actions'].map((c) => getComputedStyle(document.querySelector(`.${c}`)).display));
    assert.deepEqual(printed, ['none', 'none', 'none']);
    assert.notEqual(await A.page.$eval(tid('project-row'), (el) => getComputedStyle(el).display), 'none');
    await shot(A.page, '00-list-print.png');
    await A.page.emulateMedia({ media: 'screen' });
    await A.page.waitForSelector(tid('toast'), { state: 'detached', timeout: 10000 });
    await shot(A.page, '00-overview.png'); // copied to docs/screenshot.png
  });

  test('a change from another device replaces only its own row: focus stays where it was, and a delete hands it to the next row', async () => {
    // Count the rows A's list loses from now on.
    await A.page.evaluate(() => {
      window.rowsRemoved = 0;
      const list = document.querySelector('[data-testid="project-list"]');
      new MutationObserver((records) => {
        for (const r of records) for (const n of r.removedNodes) if (n.dataset && n.dataset.testid === 'project-row') window.rowsRemoved += 1;
      }).observe(list, { childList: true });
    });
    const link = (name) => `${rowByName(name)} ${tid('project-open')}`;
    await A.page.focus(`${rowByName('Pont Oued Sebou')} ${tid('project-edit')}`);
    await A.page.evaluate((sel) => { window.keptRow = document.querySelector(sel); }, rowByName('Pont Oued Sebou'));
    await editProject(B.page, 'Résidence Al Manar', { progress: 50 });
    await A.page.waitForSelector(`${rowByName('Résidence Al Manar')} progress[value="50"]`, { timeout: 5000 });
    const focused = () => A.page.evaluate(() => {
      const el = document.activeElement;
      const row = el && el.closest('[data-testid="project-row"]');
      return `${el && el.dataset.testid}@${row ? row.dataset.name : el && el.tagName}`;
    });
    assert.equal(await focused(), 'project-edit@Pont Oued Sebou');
    assert.ok(await A.page.evaluate((sel) => window.keptRow === document.querySelector(sel), rowByName('Pont Oued Sebou')), 'the same row element');
    assert.equal(await A.page.evaluate(() => window.rowsRemoved), 1, 'only the changed row was replaced');

    // A delete (through the keyboard-reachable row button) moves focus to the next row.
    await createProject(A.page, { name: 'Abri de chantier', city: 'Salé' });
    await A.page.click(`${rowByName('Abri de chantier')} ${tid('project-delete')}`);
    await A.page.click(tid('confirm-delete'));
    await A.page.waitForSelector(rowByName('Abri de chantier'), { state: 'detached' });
    assert.equal(await focused(), 'project-open@Entrepôt logistique Tanger Med');

    // Opening a project focuses its title.
    await A.page.click(link('Pont Oued Sebou'));
    await A.page.waitForSelector(tid('project-detail'));
    assert.equal(await A.page.evaluate(() => document.activeElement.dataset.testid), 'detail-name');
    // On the project page too, another device's edits (of this project or another) fill
    // the card in place: the focused button keeps the focus.
    await A.page.focus(tid('detail-edit'));
    await A.page.evaluate(() => { window.keptCard = document.querySelector('.detail-card'); });
    await editProject(B.page, 'Pont Oued Sebou', { progress: 35, notes: 'Tablier coulé.' });
    await editProject(B.page, 'Résidence Al Manar', { progress: 55 });
    await A.page.waitForSelector(`${tid('project-detail')} progress[value="35"]`, { timeout: 5000 });
    assert.equal(await A.page.textContent(tid('detail-notes')), 'Tablier coulé.');
    assert.equal(await A.page.evaluate(() => document.activeElement.dataset.testid), 'detail-edit');
    assert.ok(await A.page.evaluate(() => window.keptCard === document.querySelector('.detail-card')), 'the same card element');
    await A.page.click(tid('detail-back'));
    await A.page.waitForSelector(`${tid('totals')}[data-ready="true"]`);
  });

  test('reloading device B twenty times never changes the total', async () => {
    const expected = await total(B.page);
    await B.page.evaluate(() => sessionStorage.setItem('totalsSeen', '[]'));
    for (let i = 0; i < 20; i += 1) {
      await B.page.reload();
      await B.page.waitForSelector(`${tid('totals')}[data-ready="true"]`);
      await waitConn(B.page, 'websocket');
      await B.page.waitForSelector(`${tid('last-sync')}[data-ts]`);
      assert.equal(await total(B.page), expected, `total after reload ${i + 1}`);
    }
    // Settle: the last reload's pull has landed.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await total(B.page), expected);
    const seen = await B.page.evaluate(() => JSON.parse(sessionStorage.getItem('totalsSeen') || '[]'));
    assert.deepEqual([...new Set(seen)], [String(expected)], `every total B displayed: ${seen.join(',')}`);
  });

  test('device A offline creates three and deletes one; back online both devices converge', async () => {
    await A.context.setOffline(true);
    try {
      await offlineScenario();
    } finally {
      await A.context.setOffline(false);
    }
  });

  async function offlineScenario() {
    await waitConn(A.page, 'offline');
    const offlineNames = ['Villa Souissi', 'Clinique Agdal', 'Lycée Al Qods'];
    for (const name of offlineNames) await createProject(A.page, { name, city: 'Rabat', budget: '1000000' });
    await deleteProject(A.page, 'Entrepôt logistique Tanger Med');
    assert.equal(await pendingCount(A.page), 4);
    assert.equal(await total(A.page), 5);
    await shot(A.page, '08-offline-pending.png');
    // Nothing reached B while A was offline.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await total(B.page), 3);

    await A.context.setOffline(false);
    await waitConn(A.page, 'websocket');
    const converged = await eventually(async () => {
      const [a, b] = [await listNames(A.page), await listNames(B.page)];
      return (await pendingCount(A.page)) === 0 && a.length === 5 && JSON.stringify(a) === JSON.stringify(b);
    }, { timeout: 15000 });
    assert.ok(converged, `A ${await listNames(A.page)} / B ${await listNames(B.page)} / pending ${await pendingCount(A.page)}`);
    assert.ok(!(await listNames(B.page)).includes('Entrepôt logistique Tanger Med'));
    // And a fresh load of B from the server agrees.
    await B.page.reload();
    await waitConn(B.page, 'websocket');
    assert.deepEqual(await listNames(B.page), await listNames(A.page));
  }

  test('an offline edit that meets a newer one from another device asks on A: "keep mine" and "keep current" each end equal everywhere, and history names both devices', async () => {
    // A third device, Chrome on Windows, so history can tell the two apart.
    const C = await newDevice(browser, { name: 'C', userAgent: WINDOWS_CHROME });
    const name = 'Clinique Agdal';
    const shownProgress = async (page) => Number(await page.getAttribute(`${rowByName(name)} progress`, 'value'));
    const { token } = JSON.parse(await A.page.evaluate(() => localStorage.getItem('btp.session')));
    const server = async () => {
      const res = await fetch(`${system.url}/api/projects`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200);
      return (await res.json()).projects.find((p) => p.name === name);
    };
    const conflictFields = () => A.page.$$eval(tid('conflict-field'), (els) => els.map((e) => [
      e.dataset.field,
      e.querySelector('[data-testid="conflict-yours"]').textContent,
      e.querySelector('[data-testid="conflict-current"]').textContent,
    ]).sort());
    // The dialog's "current" column follows the server: it may open on the version A
    // knew and then move to the newest, so the rows are waited for, then asserted.
    const dialogShows = async (want) => {
      await eventually(async () => JSON.stringify(await conflictFields()) === JSON.stringify(want), { timeout: 10000 });
      assert.deepEqual(await conflictFields(), want);
    };
    try {
      await C.page.goto(system.url);
      await signIn(C.page, user);
      await waitConn(C.page, 'websocket');
      await C.page.waitForSelector(rowByName(name));

      // 1. A, offline, sets 15 % with a note and a city; then C, online, sets 30 % and
      // another note. A comes back: its progress and note are not written over C's.
      await A.context.setOffline(true);
      await waitConn(A.page, 'offline');
      await editProject(A.page, name, { progress: 15, notes: 'Dalle du R+1 coulée', city: 'Témara' });
      await editProject(C.page, name, { progress: 30, notes: 'Coffrage R+1 en cours' });
      await A.context.setOffline(false);
      await waitConn(A.page, 'websocket');
      await A.page.waitForSelector(tid('conflict-dialog'), { timeout: 10000 });
      await dialogShows([
        ['notes', 'Dalle du R+1 coulée', 'Coffrage R+1 en cours'],
        ['progress', '15 %', '30 %'],
      ]);
      // The field C did not touch was applied by the same op, and C's values stand.
      const mid = await server();
      assert.deepEqual([mid.progress, mid.notes, mid.city], [30, 'Coffrage R+1 en cours', 'Témara']);
      assert.equal(await eventually(async () => (await shownProgress(A.page)) === 30), true, 'A shows the current value meanwhile');
      assert.equal(await pendingCount(A.page), 0);
      await shot(A.page, '08b-conflict-dialog.png');

      // The choice waits across a reload, and asks in Arabic too.
      await A.page.evaluate(() => localStorage.setItem('btp.lang', 'ar'));
      await A.page.reload();
      await A.page.waitForSelector(tid('conflict-dialog'));
      assert.equal(await A.page.getAttribute('html', 'dir'), 'rtl');
      assert.match(await A.page.textContent(tid('conflict-dialog')), /قيمتك.*القيمة الحالية/s);
      await shot(A.page, '08c-conflict-dialog-ar.png');
      await A.page.evaluate(() => localStorage.setItem('btp.lang', 'fr'));
      await A.page.reload();
      await A.page.waitForSelector(tid('conflict-dialog'));
      await waitConn(A.page, 'websocket');

      // "Keep mine": A's 15 % and note win, on both devices and on the server.
      await A.page.click(tid('conflict-keep-mine'));
      await A.page.waitForSelector(tid('conflict-dialog'), { state: 'detached' });
      const mine = await eventually(async () => (await shownProgress(A.page)) === 15 && (await shownProgress(C.page)) === 15 && (await pendingCount(A.page)) === 0, { timeout: 15000 });
      assert.ok(mine, `A ${await shownProgress(A.page)} / C ${await shownProgress(C.page)}`);
      const kept = await server();
      assert.deepEqual([kept.progress, kept.notes, kept.city], [15, 'Dalle du R+1 coulée', 'Témara']);

      // 2. Again, and "keep current": C's 55 % stays and A's edit is gone from its queue.
      await A.context.setOffline(true);
      await waitConn(A.page, 'offline');
      await editProject(A.page, name, { progress: 40 });
      assert.equal(await pendingCount(A.page), 1);
      await editProject(C.page, name, { progress: 55 });
      await A.context.setOffline(false);
      await waitConn(A.page, 'websocket');
      await A.page.waitForSelector(tid('conflict-dialog'), { timeout: 10000 });
      await dialogShows([['progress', '40 %', '55 %']]);
      await A.page.click(tid('conflict-keep-current'));
      await A.page.waitForSelector(tid('conflict-dialog'), { state: 'detached' });
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await shownProgress(A.page), 55);
      assert.equal(await shownProgress(C.page), 55);
      assert.equal(await pendingCount(A.page), 0);
      assert.equal((await server()).progress, 55);
      assert.equal(await C.page.$(tid('conflict-dialog')), null, 'the device whose edit was newer is never asked');

      // The project's history on A names both devices, newest first; the refused
      // progress of 40 % appears nowhere.
      const { id } = await server();
      await A.page.goto(`${system.url}/#/p/${id}`);
      await A.page.waitForSelector(`${tid('history-panel')}[data-state="ready"]`);
      const entries = await A.page.$$eval(tid('history-entry'), (els) => els.map((e) => [
        e.querySelector('[data-testid="history-device"]').textContent,
        [...e.querySelectorAll('[data-field]')].map((f) => f.dataset.field).sort().join(','),
      ]));
      assert.deepEqual(entries.slice(0, 4), [
        ['Chrome · Windows', 'progress'],
        ['Chrome · Linux', 'notes,progress'],
        ['Chrome · Linux', 'city'],
        ['Chrome · Windows', 'notes,progress'],
      ]);
      assert.doesNotMatch(await A.page.textContent(tid('history-panel')), /40 %/);
      await shot(A.page, '08d-history-two-devices.png');
      await A.page.goto(`${system.url}/#/`);
      await A.page.waitForSelector(`${tid('totals')}[data-ready="true"]`);

      // 3. A delete made offline meets a later change: A confirms on what it is now.
      const shed = 'Hangar Skhirat';
      await createProject(C.page, { name: shed, city: 'Skhirat' });
      await A.page.waitForSelector(rowByName(shed));
      const staleDelete = async (before, progress) => {
        await A.context.setOffline(true);
        await waitConn(A.page, 'offline');
        await deleteProject(A.page, shed);
        await editProject(C.page, shed, { progress });
        await A.context.setOffline(false);
        await waitConn(A.page, 'websocket');
        await A.page.waitForSelector(`${tid('conflict-dialog')}[data-kind="delete"]`, { timeout: 10000 });
        // It shows what changed since the delete: the progress, as A saw it and as it is.
        await dialogShows([['progress', `${before} %`, `${progress} %`]]);
        // Meanwhile the project is back in A's list, as it is on the server.
        await A.page.waitForSelector(rowByName(shed));
      };
      await staleDelete(0, 70);
      await shot(A.page, '08e-stale-delete.png');
      await A.page.click(tid('conflict-keep-current'));
      await A.page.waitForSelector(tid('conflict-dialog'), { state: 'detached' });
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(await A.page.$(rowByName(shed)), 'kept on A');
      assert.ok(await C.page.$(rowByName(shed)), 'kept on C');
      await staleDelete(70, 80);
      await A.page.click(tid('conflict-keep-mine'));
      await A.page.waitForSelector(tid('conflict-dialog'), { state: 'detached' });
      await A.page.waitForSelector(rowByName(shed), { state: 'detached', timeout: 10000 });
      await C.page.waitForSelector(rowByName(shed), { state: 'detached', timeout: 10000 });
      assert.equal(await pendingCount(A.page), 0);
      assert.deepEqual(C.errors.filter((e) => !isNetworkFailure(e)), []);
    } finally {
      await A.context.setOffline(false);
      await C.context.close();
    }
  });

  test('sync uses the WebSocket transport through the gateway, never long-polling', async (t) => {
    for (const d of [A, B]) {
      const wsUrls = d.sockets.map((s) => s.url);
      assert.ok(wsUrls.length > 0, `${d.name} opened no WebSocket`);
      for (const u of wsUrls) {
        assert.ok(u.startsWith(`ws://127.0.0.1:${system.port}/socket.io/?EIO=4&transport=websocket`), u);
      }
      assert.equal(d.requests.filter((u) => u.includes('transport=polling')).length, 0);
      assert.equal(d.requests.filter((u) => u.includes('/api/sync/')).length, 0, `${d.name} fell back to HTTP sync`);
    }
    const live = B.sockets.filter((s) => !s.closed).at(-1);
    assert.ok(live.received.some((f) => f.startsWith('0{')), 'Engine.IO open packet');
    assert.ok(live.received.some((f) => f.startsWith('40')), 'Socket.IO connect ack');
    const allB = B.sockets.flatMap((s) => s.received);
    const bPulls = B.sockets.flatMap((s) => s.sent).filter((f) => /^42\d*\["sync:pull"/.test(f)).length;
    t.diagnostic(`B: ${allB.filter((f) => f.startsWith('42["sync:changes"')).length} sync:changes received, ${bPulls} pulls sent, ${B.sockets.length} sockets`);
    assert.ok(allB.some((f) => f.startsWith('42["sync:changes"')), 'B received sync:changes pushes');
    // The client's count and checksum agreed with the server's all along: no device had
    // to ask for a divergence reset.
    for (const d of [A, B]) {
      assert.equal(await d.page.getAttribute(tid('last-sync'), 'data-divergence-resets'), '0', d.name);
    }
    // A's own ops never came back to A as sync:changes (no echo).
    const echoes = A.sockets.flatMap((s) => s.received).filter((f) => f.startsWith('42["sync:changes"'));
    for (const f of echoes) assert.ok(!f.includes('Villa Souissi'), 'A received its own op back');
  });

  test('Arabic switch renders the app right to left, and the phone layout holds', async () => {
    await A.page.click(tid('lang-toggle'));
    assert.equal(await A.page.getAttribute('html', 'dir'), 'rtl');
    assert.equal(await A.page.getAttribute('html', 'lang'), 'ar');
    await shot(A.page, '09-projects-list-ar.png');
    // A French note keeps its full stop at its end in the Arabic UI: it runs left to right.
    await A.page.click(`${rowByName('Résidence Al Manar')} ${tid('project-open')}`);
    await A.page.waitForSelector(tid('project-detail'));
    const notes = await A.page.$eval(tid('detail-notes'), (el) => [getComputedStyle(el).direction, el.textContent]);
    assert.deepEqual(notes, ['ltr', 'R+8, 120 logements.\nGros œuvre en cours.']);
    assert.equal(await A.page.$eval(tid('detail-name'), (el) => getComputedStyle(el).direction), 'ltr');
    await A.page.click(tid('detail-back'));
    // Typing in the other script: each text field takes the direction of what is typed.
    await A.page.click(tid('new-project'));
    await A.page.fill(tid('project-name'), 'Gros œuvre.');
    await A.page.fill(tid('project-notes'), 'Coulage prévu lundi.');
    const typed = await A.page.$$eval(`${tid('project-name')}, ${tid('project-notes')}`, (els) => els.map((el) => getComputedStyle(el).direction));
    assert.deepEqual(typed, ['ltr', 'ltr']);
    await A.page.click(tid('project-cancel'));
    await A.page.waitForSelector(`${tid('totals')}[data-ready="true"]`);
    await A.page.setViewportSize({ width: 390, height: 844 });
    await shot(A.page, '10-phone-ar.png');
    await A.page.click(tid('lang-toggle'));
    assert.equal(await A.page.getAttribute('html', 'dir'), 'ltr');
    await shot(A.page, '11-phone.png');
    const overflow = await A.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px on a phone`);
    await A.page.setViewportSize({ width: 1280, height: 800 });
  });

  test('the page loaded from file:// with window.electron.apiUrl signs in and syncs', async () => {
    const E = await newDevice(browser, { name: 'electron', electronApiUrl: system.url });
    try {
      await E.page.goto(INDEX_FILE_URL);
      await signIn(E.page, user);
      await waitConn(E.page, 'websocket');
      await eventually(async () => (await total(E.page)) === 5);
      assert.deepEqual(await listNames(E.page), await listNames(A.page));
      await createProject(E.page, { name: 'Barrage Electron', city: 'Ouarzazate' });
      await A.page.waitForSelector(rowByName('Barrage Electron'), { timeout: 3000 });
      assert.ok(E.sockets[0].url.startsWith(`ws://127.0.0.1:${system.port}/socket.io/`));
      await shot(E.page, '12-electron-file-page.png');
      assert.deepEqual(E.errors, []);
    } finally {
      await E.context.close();
    }
  });

  test('two tabs of one device (one clientSessionId) still see each other\'s edits', async () => {
    const tab = await A.context.newPage();
    const tabErrors = [];
    tab.on('console', (m) => { if (m.type() === 'error') tabErrors.push(m.text()); });
    try {
      await tab.goto(system.url);
      await tab.waitForSelector(`${tid('totals')}[data-ready="true"]`);
      await waitConn(tab, 'websocket');
      await createProject(A.page, { name: 'Gare routière Oujda', city: 'Oujda' });
      await tab.waitForSelector(rowByName('Gare routière Oujda'), { timeout: 3000 });
      await deleteProject(tab, 'Gare routière Oujda');
      await A.page.waitForSelector(rowByName('Gare routière Oujda'), { state: 'detached', timeout: 3000 });
      assert.deepEqual(tabErrors, []);
    } finally {
      await tab.close();
    }
  });

  test('signing out in one tab signs out the other tabs, and a device using the same token is signed out by the server', async () => {
    const S = await newDevice(browser, { name: 'signout' });
    const T = await newDevice(browser, { name: 'same-token' });
    try {
      await S.page.goto(system.url);
      await signIn(S.page, user);
      await waitConn(S.page, 'websocket');
      const tab = await S.context.newPage();
      await tab.goto(system.url);
      await tab.waitForSelector(`${tid('totals')}[data-ready="true"]`);
      await waitConn(tab, 'websocket');
      // Another browser holding the same token (its storage is its own, so only the
      // server can tell it the token is gone).
      const session = await S.page.evaluate(() => localStorage.getItem('btp.session'));
      await T.page.goto(system.url);
      await T.page.evaluate((value) => localStorage.setItem('btp.session', value), session);
      await T.page.reload();
      await T.page.waitForSelector(`${tid('totals')}[data-ready="true"]`);
      await waitConn(T.page, 'websocket');

      await S.page.click(tid('logout'));
      await S.page.waitForSelector(tid('login-form'), { timeout: 5000 });
      await tab.waitForSelector(tid('login-form'), { timeout: 3000 });
      assert.equal(await tab.evaluate(() => localStorage.getItem('btp.session')), null);
      await T.page.waitForSelector(tid('login-form'), { timeout: 5000 });
      assert.equal(await T.page.evaluate(() => localStorage.getItem('btp.session')), null);
      const revoked = T.sockets.some((s) => s.received.includes('41'));
      assert.ok(revoked, 'the server sent no DISCONNECT to the other browser');
      await shot(tab, '15-signed-out-elsewhere.png');
      assert.deepEqual(S.errors.filter((e) => !isNetworkFailure(e)), []);
    } finally {
      await S.context.close();
      await T.context.close();
    }
  });

  test('a browser that prefers Arabic opens in Arabic, and server refusals read in the app\'s words, never the server\'s English', async () => {
    const D = await newDevice(browser, { name: 'arabic', locale: 'ar-MA' });
    try {
      await D.page.goto(system.url);
      await D.page.waitForSelector(tid('login-email'));
      assert.equal(await D.page.getAttribute('html', 'lang'), 'ar');
      assert.equal(await D.page.getAttribute('html', 'dir'), 'rtl');
      // The account exists already: the server says so (409, in English); the page in Arabic.
      await D.page.click(tid('auth-tab-register'));
      await D.page.fill(tid('register-name'), 'Amina');
      await D.page.fill(tid('register-email'), user.email);
      await D.page.fill(tid('register-password'), 'another-pass-123');
      await D.page.click(tid('register-submit'));
      await D.page.waitForSelector(`${tid('error-register-email')}:not([hidden])`);
      assert.equal(await D.page.textContent(tid('error-register-email')), 'يوجد حساب بهذا البريد الإلكتروني بالفعل.');
      // A wrong password, after switching to French.
      await D.page.click(tid('lang-toggle'));
      await D.page.click(tid('auth-tab-login'));
      await D.page.fill(tid('login-email'), user.email);
      await D.page.fill(tid('login-password'), 'wrong-password');
      await D.page.click(tid('login-submit'));
      await D.page.waitForSelector(`${tid('auth-error')}:not([hidden])`);
      assert.equal(await D.page.textContent(tid('auth-error')), 'Connexion impossible. Vérifiez vos identifiants.');
      assert.doesNotMatch(await D.page.textContent('body'), /already exists|invalid email or password/i);
    } finally {
      await D.context.close();
    }
  });

  test('no console errors on any page', () => {
    assert.deepEqual(A.errors, []);
    assert.deepEqual(B.errors, []);
  });

  test('a server that cannot be reached shows the error screen naming the URL, with retry', async () => {
    const deadPort = await freePort();
    const dead = `http://127.0.0.1:${deadPort}`;
    const E = await newDevice(browser, { name: 'down', electronApiUrl: dead });
    try {
      await E.page.goto(INDEX_FILE_URL);
      await E.page.waitForSelector(tid('fatal-error'), { timeout: 20000 });
      assert.equal(await E.page.textContent(tid('fatal-url')), `${dead}/api/health`);
      await shot(E.page, '13-server-down.png');
      await E.page.click(tid('fatal-retry'));
      await E.page.waitForSelector(tid('fatal-error'), { timeout: 20000 });
      assert.deepEqual(E.errors.filter((e) => !isNetworkFailure(e)), []);
    } finally {
      await E.context.close();
    }

    // Over http, a gateway whose /config.json cannot be fetched: the error names it.
    const H = await newDevice(browser, { name: 'no-config' });
    try {
      await H.page.route('**/config.json', (route) => route.abort('connectionrefused'));
      await H.page.goto(system.url);
      await H.page.waitForSelector(tid('fatal-error'), { timeout: 20000 });
      assert.equal(await H.page.textContent(tid('fatal-url')), `${system.url}/config.json`);
      await H.page.unroute('**/config.json');
      await H.page.click(tid('fatal-retry'));
      await H.page.waitForSelector(tid('login-email'), { timeout: 20000 });
    } finally {
      await H.context.close();
    }

    // An Electron page whose preload gave no URL at all.
    const N = await newDevice(browser, { name: 'no-url' });
    try {
      await N.page.goto(INDEX_FILE_URL);
      await N.page.waitForSelector(`${tid('fatal-error')}[data-reason="error.noApiUrl"]`, { timeout: 20000 });
      assert.deepEqual(N.errors, []);
    } finally {
      await N.context.close();
    }
  });

  test('when the WebSocket cannot connect the app says "polling" and still syncs over HTTP', async () => {
    const P = await newDevice(browser, { name: 'polling' });
    try {
      await P.page.routeWebSocket(/\/socket\.io\//, (ws) => ws.close({ code: 1011, reason: 'blocked by test' }));
      await P.page.goto(system.url);
      await signIn(P.page, user);
      await waitConn(P.page, 'polling', 20000);
      const expected = await total(A.page);
      await eventually(async () => (await total(P.page)) === expected, { timeout: 15000 });
      assert.equal(await total(P.page), expected);
      await createProject(P.page, { name: 'Station de pompage', city: 'Fès' });
      await A.page.waitForSelector(rowByName('Station de pompage'), { timeout: 5000 });
      await B.page.waitForSelector(rowByName('Station de pompage'), { timeout: 5000 });
      await shot(P.page, '14-polling-indicator.png');
      assert.ok(P.requests.some((u) => u.endsWith('/api/sync/pull')));
    } finally {
      await P.context.close();
    }
  });

  test('after the whole system restarts, both devices reconnect over WebSocket and keep syncing', async (t) => {
    if (!system.restart) {
      t.skip('BTP_TEST_URL system cannot be restarted from here');
      return;
    }
    const before = await total(A.page);
    await system.restart();
    await waitConn(A.page, 'websocket', 45000);
    await waitConn(B.page, 'websocket', 45000);
    assert.equal(await total(A.page), before, 'a restart changes nothing on the devices');
    assert.equal(await total(B.page), before);
    await createProject(A.page, { name: 'Après redémarrage', city: 'Meknès' });
    await B.page.waitForSelector(rowByName('Après redémarrage'), { timeout: 3000 });
    // While the server was down the browser logged its failed connection attempts; nothing else.
    for (const d of [A, B]) {
      assert.deepEqual(d.errors.filter((e) => !/WebSocket connection to .* failed|Failed to load resource|net::ERR_/.test(e)), [], d.name);
    }
  });
});
