// The web app with no network and across versions, in Debian's chromium against the real
// system: the service worker keeps the shell, the list opens from this device's store
// with its outbox, and a new deployment takes over at the next load with a notice.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { startSystem, freePort, STATIC_ROOT } from './lib/system.mjs';
import {
  launch, newDevice, tid, shot, waitConn, signUp, signIn, createProject, rowByName, pendingCount, eventually,
} from './lib/browser.mjs';

const user = { name: 'Karim Tazi', email: `karim.${Date.now()}@chantier.ma`, password: 'b3ton-arme!' };

/** The version of the service worker controlling `page` ('' when none). */
function controllerVersion(page) {
  return page.evaluate(() => {
    const c = navigator.serviceWorker.controller;
    return c ? new URL(c.scriptURL).searchParams.get('v') || '' : '';
  });
}

const description = (page) => page.getAttribute('meta[name="description"]', 'content');

async function assetsVersion(url) {
  const res = await fetch(`${url}/config.json`);
  return (await res.json()).assetsVersion;
}

describe('web app offline and across versions', () => {
  let system;
  let browser;
  let staticRoot;
  let A;
  let B;

  before(async () => {
    // A copy of the web app, so the test can deploy a new version of it.
    staticRoot = mkdtempSync(path.join(tmpdir(), 'btp-static-'));
    cpSync(STATIC_ROOT, staticRoot, { recursive: true });
    system = await startSystem({ name: 'btp-offline', staticRoot });
    browser = await launch();
    A = await newDevice(browser, { name: 'A' });
    B = await newDevice(browser, { name: 'B' });
  });

  after(async () => {
    if (browser) await browser.close();
    if (system) await system.stop();
    if (staticRoot) rmSync(staticRoot, { recursive: true, force: true });
  });

  test('the service worker keeps every file index.html links, under the gateway\'s version', async () => {
    await A.page.goto(system.url);
    await signUp(A.page, user);
    await createProject(A.page, { name: 'Immeuble Anfa', city: 'Casablanca' });
    await createProject(A.page, { name: 'École Hay Riad', city: 'Rabat' });
    const version = await assetsVersion(system.url);
    assert.match(version, /^[0-9a-f]{16}$/);
    await eventually(async () => (await controllerVersion(A.page)) === version, { timeout: 15000 });
    const cached = await A.page.evaluate(async (v) => {
      const cache = await caches.open(`btp-shell-${v}`);
      return (await cache.keys()).map((r) => new URL(r.url).pathname).sort();
    }, version);
    const linked = [...readFileSync(path.join(staticRoot, 'index.html'), 'utf8').matchAll(/(?:href|src)="([^"]+)"/g)]
      .map((m) => `/${m[1]}`);
    for (const file of [...linked, '/index.html']) assert.ok(cached.includes(file), `${file} not kept: ${cached}`);
    assert.ok(cached.includes('/js/app.js') && cached.includes('/js/views/list.js'), cached.join(' '));
  });

  test('a reload with no network opens the list and the outbox; edits reach another device after', async () => {
    await A.context.setOffline(true);
    await A.page.reload();
    await A.page.waitForSelector(rowByName('Immeuble Anfa'), { timeout: 15000 });
    await A.page.waitForSelector(rowByName('École Hay Riad'));
    await waitConn(A.page, 'offline');
    await A.page.waitForSelector(`${tid('toast')}[data-kind="warn"]`);

    await createProject(A.page, { name: 'Villa Souissi', city: 'Rabat' });
    assert.equal(await pendingCount(A.page), 1);
    // The outbox is the device's: a second offline reload still has the edit, queued.
    await A.page.reload();
    await A.page.waitForSelector(rowByName('Villa Souissi'), { timeout: 15000 });
    assert.equal(await pendingCount(A.page), 1);
    await shot(A.page, 'offline-reload.png');

    await B.page.goto(system.url);
    await signIn(B.page, user);
    await B.page.waitForSelector(rowByName('Immeuble Anfa'));
    assert.equal(await B.page.locator(rowByName('Villa Souissi')).count(), 0);

    await A.context.setOffline(false);
    await B.page.waitForSelector(rowByName('Villa Souissi'), { timeout: 30000 });
    await eventually(async () => (await pendingCount(A.page)) === 0, { timeout: 30000 });
    assert.deepEqual(A.errors.filter((e) => !/ERR_INTERNET_DISCONNECTED|Failed to load resource|Failed to fetch/.test(e)), []);
  });

  test('a new deployment takes over at the next load, with a notice', async () => {
    const before = await assetsVersion(system.url);
    const indexFile = path.join(staticRoot, 'index.html');
    const marker = '<meta name="description" content="BTP Projets — suivi des chantiers';
    writeFileSync(indexFile, readFileSync(indexFile, 'utf8').replace(marker, `${marker} (v2)`));
    system.reload();
    await eventually(async () => (await assetsVersion(system.url)) !== before, { timeout: 15000 });

    // This load still comes from the old version's cache; the new one installs meanwhile.
    await A.page.reload();
    assert.doesNotMatch(await description(A.page), /\(v2\)/);
    await A.page.waitForSelector(tid('update-ready'), { timeout: 20000 });
    assert.equal(await controllerVersion(A.page), await assetsVersion(system.url));
    await shot(A.page, 'update-ready.png');
    await Promise.all([A.page.waitForEvent('load'), A.page.click(tid('update-reload'))]);
    await A.page.waitForSelector(rowByName('Villa Souissi'), { timeout: 15000 });
    assert.match(await description(A.page), /\(v2\)/);
    assert.equal(await A.page.locator(tid('update-ready')).count(), 0);
    const caches = await A.page.evaluate(() => caches.keys());
    assert.deepEqual(caches.filter((c) => c.startsWith('btp-shell-')), [`btp-shell-${await assetsVersion(system.url)}`]);
  });

  test('the desktop app\'s error screen tests another server address and keeps it on this device', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const D = await newDevice(browser, { name: 'electron-moved', electronApiUrl: dead });
    try {
      await D.page.goto(pathToFileURL(path.join(staticRoot, 'index.html')).href);
      await D.page.waitForSelector(tid('fatal-error'), { timeout: 20000 });
      assert.equal(await D.page.textContent(tid('fatal-url')), `${dead}/api/health`);
      assert.equal(await D.page.inputValue(tid('fatal-server-input')), dead);
      assert.equal(await D.page.locator(tid('fatal-server-reset')).count(), 0);

      await D.page.fill(tid('fatal-server-input'), 'btp.exemple.ma');
      await D.page.click(tid('fatal-server-use'));
      await eventually(async () => (await D.page.textContent(tid('fatal-server-message'))) === 'Adresse invalide : elle doit commencer par http:// ou https://.');
      assert.equal(await D.page.getAttribute(tid('fatal-server-input'), 'aria-invalid'), 'true');

      const alsoDead = `http://127.0.0.1:${await freePort()}`;
      await D.page.fill(tid('fatal-server-input'), `${alsoDead}/`);
      await D.page.click(tid('fatal-server-use'));
      await eventually(async () => (await D.page.textContent(tid('fatal-server-message'))) === `Ce serveur ne répond pas : ${alsoDead}/api/health`, { timeout: 15000 });
      assert.equal(await D.page.evaluate(() => localStorage.getItem('btp.apiUrl')), null, 'a failed address is not kept');

      await D.page.fill(tid('fatal-server-input'), system.url);
      await D.page.click(tid('fatal-server-use'));
      await D.page.waitForSelector(tid('login-email'), { timeout: 15000 });
      assert.equal(await D.page.evaluate(() => localStorage.getItem('btp.apiUrl')), system.url);
      // Kept on this device: a restart of the app uses it, whatever the preload says.
      await D.page.reload();
      await signIn(D.page, user);
      await D.page.waitForSelector(rowByName('Villa Souissi'));
      await shot(D.page, 'electron-server-changed.png');

      // Signed in, a saved address that stops answering opens the app offline (its data
      // is here); signed out, the error screen offers to go back to the app's own.
      await D.page.evaluate(() => localStorage.setItem('btp.apiUrl', 'http://127.0.0.1:9'));
      await D.page.reload();
      await D.page.waitForSelector(rowByName('Villa Souissi'), { timeout: 15000 });
      // The notice stays, with the way to the address form; "continue offline" comes
      // back to the list, a working address restarts the app on it.
      await D.page.click(tid('offline-server'), { timeout: 20000 });
      assert.equal(await D.page.inputValue(tid('fatal-server-input')), 'http://127.0.0.1:9');
      await D.page.click(tid('fatal-offline'));
      await D.page.waitForSelector(rowByName('Villa Souissi'));
      await D.page.click(tid('offline-server'), { timeout: 20000 });
      await D.page.fill(tid('fatal-server-input'), system.url);
      await Promise.all([D.page.waitForEvent('load'), D.page.click(tid('fatal-server-use'))]);
      await D.page.waitForSelector(rowByName('Villa Souissi'), { timeout: 15000 });
      await waitConn(D.page, 'websocket');
      assert.equal(await D.page.evaluate(() => localStorage.getItem('btp.apiUrl')), system.url);

      await D.page.evaluate(() => localStorage.setItem('btp.apiUrl', 'http://127.0.0.1:9'));
      await D.page.reload();
      await D.page.waitForSelector(tid('offline-server'), { timeout: 20000 });
      await D.page.click(tid('logout'));
      await D.page.reload();
      await D.page.waitForSelector(tid('fatal-server-reset'), { timeout: 20000 });
      assert.equal(await D.page.textContent(tid('fatal-url')), 'http://127.0.0.1:9/api/health');
      await D.page.click(tid('fatal-server-reset'));
      await eventually(async () => (await D.page.textContent(tid('fatal-url'))) === `${dead}/api/health`, { timeout: 20000 });
      assert.equal(await D.page.evaluate(() => localStorage.getItem('btp.apiUrl')), null);
      assert.equal(await D.page.locator(tid('fatal-server-reset')).count(), 0);
      assert.deepEqual(D.errors.filter((e) => !/Failed to load resource|net::ERR_|Failed to fetch/.test(e)), []);
    } finally {
      await D.context.close();
    }
  });
});
