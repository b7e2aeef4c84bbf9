// Debian's chromium driven by playwright-core, and the app-level steps the scenarios
// share (sign up, sign in, create / edit / delete through the UI, read the list). Every
// page records its console errors and uncaught exceptions so a test can assert none.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { OUT_DIR } from './system.mjs';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** `trustSpki`: a test certificate's key hash (`startSystem({ tls })`), trusted as valid. */
export function launch({ trustSpki } = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      ...(trustSpki ? [`--ignore-certificate-errors-spki-list=${trustSpki}`] : []),
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // What Electron grants its file:// pages: ES modules next to index.html may load.
      '--allow-file-access-from-files',
    ],
  });
}

/**
 * A browser context = one device (`userAgent`: another browser's, as history labels it).
 * Returns { context, page, errors, sockets, requests }.
 * `errors` gathers console errors and page exceptions; `sockets` every WebSocket URL
 * opened with the text frames it received; `requests` every request URL.
 */
export async function newDevice(browser, { name, viewport = { width: 1280, height: 800 }, initScript, electronApiUrl, userAgent, locale = 'fr-FR' } = {}) {
  const context = await browser.newContext({ viewport, locale, timezoneId: 'Africa/Casablanca', ...(userAgent ? { userAgent } : {}) });
  if (electronApiUrl !== undefined) {
    // What the Electron preload does: expose the API URL before any page script runs.
    await context.addInitScript((apiUrl) => { window.electron = { apiUrl }; }, electronApiUrl);
  }
  // `initScript`: a function, or [function, argument].
  if (initScript) await context.addInitScript(...(Array.isArray(initScript) ? initScript : [initScript]));
  const page = await context.newPage();
  const device = { name, context, page, errors: [], sockets: [], requests: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') device.errors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => device.errors.push(`pageerror: ${err.message}`));
  page.on('request', (req) => device.requests.push(req.url()));
  page.on('websocket', (ws) => {
    const entry = { url: ws.url(), received: [], sent: [], closed: false };
    device.sockets.push(entry);
    ws.on('framereceived', (f) => { if (typeof f.payload === 'string') entry.received.push(f.payload); });
    ws.on('framesent', (f) => { if (typeof f.payload === 'string') entry.sent.push(f.payload); });
    ws.on('close', () => { entry.closed = true; });
  });
  return device;
}

export const tid = (id) => `[data-testid="${id}"]`;

export async function shot(page, file) {
  mkdirSync(OUT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(OUT_DIR, file), fullPage: false });
}

export async function waitConn(page, state, timeout = 15000) {
  await page.waitForSelector(`${tid('conn-status')}[data-state="${state}"]`, { timeout });
}

export async function signUp(page, { name, email, password }) {
  await page.click(tid('auth-tab-register'));
  await page.fill(tid('register-name'), name);
  await page.fill(tid('register-email'), email);
  await page.fill(tid('register-password'), password);
  await page.click(tid('register-submit'));
  await page.waitForSelector(`${tid('totals')}[data-ready="true"]`, { timeout: 15000 });
}

export async function signIn(page, { email, password }) {
  await page.waitForSelector(tid('login-email'));
  await page.fill(tid('login-email'), email);
  await page.fill(tid('login-password'), password);
  await page.click(tid('login-submit'));
  await page.waitForSelector(`${tid('totals')}[data-ready="true"]`, { timeout: 15000 });
}

/** Fill and save the project form; `data` uses the form's own units (budget in MAD). */
export async function fillProjectForm(page, data) {
  const fields = { name: 'project-name', client: 'project-client', city: 'project-city', budget: 'project-budget', start_date: 'project-start-date', end_date: 'project-end-date', progress: 'project-progress', notes: 'project-notes' };
  for (const [key, testid] of Object.entries(fields)) {
    if (data[key] !== undefined) await page.fill(tid(testid), String(data[key]));
  }
  if (data.status) await page.selectOption(tid('project-status'), data.status);
}

export async function createProject(page, data) {
  await page.click(tid('new-project'));
  await page.waitForSelector(tid('project-form'));
  await fillProjectForm(page, data);
  await page.click(tid('project-save'));
  await page.waitForSelector(tid('project-form-dialog'), { state: 'detached', timeout: 15000 });
}

export function rowByName(name) {
  return `${tid('project-row')}[data-name="${name.replaceAll('"', '\\"')}"]`;
}

export async function editProject(page, name, data) {
  await page.click(`${rowByName(name)} ${tid('project-edit')}`);
  await page.waitForSelector(tid('project-form'));
  await fillProjectForm(page, data);
  await page.click(tid('project-save'));
  await page.waitForSelector(tid('project-form-dialog'), { state: 'detached', timeout: 15000 });
}

export async function deleteProject(page, name) {
  await page.click(`${rowByName(name)} ${tid('project-delete')}`);
  await page.waitForSelector(tid('confirm-dialog'));
  await page.click(tid('confirm-delete'));
  await page.waitForSelector(rowByName(name), { state: 'detached', timeout: 5000 });
}

/** The list as the user sees it: sorted project names (no filter applied). */
export async function listNames(page) {
  const names = await page.$$eval(tid('project-row'), (rows) => rows.map((r) => r.dataset.name));
  return names.sort();
}

export async function total(page) {
  return Number(await page.getAttribute(tid('totals-all'), 'data-value'));
}

export async function pendingCount(page) {
  const hidden = await page.getAttribute(tid('pending-count'), 'hidden');
  if (hidden !== null) return 0;
  return Number(await page.getAttribute(tid('pending-count'), 'data-count'));
}

/** Poll `fn` until it returns truthy or the deadline passes; returns the last value. */
export async function eventually(fn, { timeout = 10000, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last || Date.now() > deadline) return last;
    await new Promise((r) => setTimeout(r, interval));
  }
}
