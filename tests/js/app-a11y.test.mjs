// Accessibility and dark mode of the web app (issue 17, items 6 and 7), on the real system
// in Debian's chromium: axe-core finds no critical or serious violation on any screen, in
// French and Arabic, light and dark, at desktop and phone size; on a phone every touch
// target is at least 44 × 44 px; a keyboard focus shows a ring that stands out from the
// page; and the dark scheme really is dark (and the light one light).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { startSystem, freePort, STATIC_ROOT } from './lib/system.mjs';
import { launch, newDevice, tid, shot, waitConn, signUp, editProject, rowByName } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const INDEX_FILE_URL = pathToFileURL(path.join(STATIC_ROOT, 'index.html')).href;

const VIEWPORTS = [
  { name: 'desktop', viewport: { width: 1280, height: 800 }, phone: false },
  { name: 'phone', viewport: { width: 390, height: 844 }, phone: true },
];
const SCHEMES = ['light', 'dark'];
const LANGS = ['fr', 'ar'];
/** WCAG 2.5.5: the smallest touch target, in CSS pixels. */
const TARGET = 44;
/** WCAG 1.4.11: a focus ring's contrast with what is around it. */
const RING_CONTRAST = 3;

/** One project per status, an overdue one, and notes and dates to show. */
const SEED = [
  { name: 'Résidence Al Manar', client: 'Groupe Addoha', city: 'Casablanca', budget_centimes: 1250000000, status: 'active', progress: 45, start_date: '2025-01-15', end_date: '2030-09-30', notes: 'R+8, 120 logements.' },
  { name: 'Pont Oued Sebou', client: 'Ministère de l’Équipement', city: 'Kénitra', budget_centimes: 8400000000, status: 'planned', progress: 0, start_date: '2029-11-01', end_date: '2031-12-31' },
  { name: 'École Hay Riad', client: 'Commune de Rabat', city: 'Rabat', budget_centimes: 230000050, status: 'done', progress: 100 },
  { name: 'Entrepôt Tanger Med', city: 'Tanger', budget_centimes: 560000000, status: 'on_hold', progress: 30 },
  { name: 'مستشفى الرباط', client: 'وزارة الصحة', city: 'الرباط', budget_centimes: 990000000, status: 'active', progress: 60, start_date: '2023-02-01', end_date: '2024-03-31' },
];

/** A computed color, `rgb(…)`, `rgba(…)` or `color(srgb …)`: { rgb: [r, g, b] in 0–255, alpha }. */
function parseColor(css) {
  const srgb = /^color\(srgb ([\d.]+) ([\d.]+) ([\d.]+)(?: \/ ([\d.]+))?\)$/.exec(css);
  if (srgb) return { rgb: srgb.slice(1, 4).map((v) => Number(v) * 255), alpha: Number(srgb[4] ?? 1) };
  const rgb = /^rgba?\(([\d.]+), ([\d.]+), ([\d.]+)(?:, ([\d.]+))?\)$/.exec(css);
  if (rgb) return { rgb: rgb.slice(1, 4).map(Number), alpha: Number(rgb[4] ?? 1) };
  throw new Error(`unexpected computed color ${css}`);
}

/** Relative luminance (WCAG 2) of `css` painted over the opaque `under`. */
function luminance(css, under = css) {
  const top = parseColor(css);
  const bottom = parseColor(under).rgb;
  const [r, g, b] = top.rgb.map((v, i) => {
    const c = (top.alpha * v + (1 - top.alpha) * bottom[i]) / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** The contrast ratio of `css` painted over the opaque `under`, against `under`. */
function contrast(css, under) {
  const [hi, lo] = [luminance(css, under), luminance(under)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** axe-core on the whole page: the critical and serious violations, and how many rules ran. */
async function axeScan(page) {
  // Through the DevTools protocol rather than a <script>, which the app's CSP refuses.
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(AXE_SOURCE);
  return page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return {
      rules: r.passes.length + r.violations.length + r.incomplete.length + r.inapplicable.length,
      violations: r.violations.filter((v) => v.impact === 'critical' || v.impact === 'serious').map((v) => ({
        id: v.id,
        impact: v.impact,
        nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
      })),
    };
  });
}

/** Every shown control smaller than `min` × `min`, described for the failure message. */
function smallTargets(page, min) {
  return page.evaluate((min) => {
    const controls = 'a[href], button, input:not([type="hidden"]), select, textarea, summary, [role="tab"], [tabindex]:not([tabindex="-1"])';
    return [...document.querySelectorAll(controls)].flatMap((el) => {
      const box = el.getBoundingClientRect();
      if (!box.width || !box.height || getComputedStyle(el).visibility === 'hidden') return [];
      if (box.width + 0.01 >= min && box.height + 0.01 >= min) return [];
      const name = el.dataset.testid ? `[data-testid="${el.dataset.testid}"]` : `.${[...el.classList].join('.')}`;
      return [`${el.tagName.toLowerCase()}${name} is ${box.width.toFixed(1)}×${box.height.toFixed(1)}`];
    });
  }, min);
}

/** Tab until a button has the focus; its outline as computed, and the page's background. */
async function tabToButton(page) {
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  for (let i = 0; i < 12; i += 1) {
    await page.keyboard.press('Tab');
    const ring = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el || el.tagName !== 'BUTTON') return null;
      const s = getComputedStyle(el);
      return {
        testid: el.dataset.testid || el.className,
        style: s.outlineStyle,
        width: parseFloat(s.outlineWidth),
        color: s.outlineColor,
        page: getComputedStyle(document.body).backgroundColor,
      };
    });
    if (ring) return ring;
  }
  return null;
}

async function api(system, token, method, url, body) {
  const res = await fetch(`${system.url}${url}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${url}: HTTP ${res.status} ${await res.clone().text()}`);
  return res.json();
}

describe('accessibility and dark mode of the web app', () => {
  let system;
  let browser;

  before(async () => {
    system = await startSystem({ name: 'btp-a11y' });
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await system?.stop();
  });

  for (const vp of VIEWPORTS) {
    test(`${vp.name} (${vp.viewport.width}×${vp.viewport.height}): every screen, French and Arabic, light and dark`, async (t) => {
      const started = Date.now();
      const user = { name: 'Salma Idrissi', email: `salma.${vp.name}.${Date.now()}@chantier.ma`, password: 'b3ton-arme!' };
      const D = await newDevice(browser, { name: vp.name, viewport: vp.viewport });
      const { page } = D;
      // Everything the checks found, one line each, so one run lists every problem.
      const findings = [];
      let scans = 0;

      /**
       * axe and the body's background in both schemes (light, then dark: the page is left
       * dark); on a phone, the touch targets too. `on`: the page to audit.
       */
      async function check(screen, on = page) {
        const lang = await on.getAttribute('html', 'lang');
        for (const scheme of SCHEMES) {
          await on.emulateMedia({ colorScheme: scheme });
          const where = `${vp.name} · ${screen} · ${lang} · ${scheme}`;
          const bg = luminance(await on.evaluate(() => getComputedStyle(document.body).backgroundColor));
          if (scheme === 'dark' ? bg > 0.05 : bg < 0.8) findings.push(`${where}: body background luminance ${bg.toFixed(3)} is not ${scheme}`);
          const { rules, violations } = await axeScan(on);
          assert.ok(rules > 20, `${where}: axe ran only ${rules} rules`);
          scans += 1;
          for (const v of violations) {
            for (const n of v.nodes) findings.push(`${where}: [${v.impact}] ${v.id} at ${n.target}\n    ${n.summary.replaceAll('\n', '\n    ')}`);
          }
        }
        if (vp.phone) {
          for (const small of await smallTargets(on, TARGET)) findings.push(`${vp.name} · ${screen} · ${lang}: touch target ${small} (< ${TARGET}×${TARGET})`);
        }
      }

      async function useLang(lang) {
        if ((await page.getAttribute('html', 'lang')) === lang) return;
        await page.click(tid('lang-toggle'));
        await page.waitForSelector(`html[lang="${lang}"]`);
      }

      try {
        // Transitions and entry animations off: axe reads colors mid-fade otherwise.
        await page.emulateMedia({ reducedMotion: 'reduce' });

        // ---- signed out: sign-in and sign-up, and sign-up's field messages
        await page.goto(system.url);
        await page.waitForSelector(tid('login-email'));
        for (const lang of LANGS) {
          await useLang(lang);
          await check('sign-in');
          await page.click(tid('auth-tab-register'));
          await page.waitForSelector(tid('register-name'));
          await page.click(tid('register-submit'));
          await page.waitForSelector(`${tid('error-register-email')}:not([hidden])`);
          await check('sign-up with field errors');
          await page.click(tid('auth-tab-login'));
          await page.waitForSelector(tid('login-email'));
        }

        // ---- the empty list
        await useLang('fr');
        await signUp(page, user);
        await waitConn(page, 'websocket');
        await page.waitForSelector(tid('state-empty'));
        for (const lang of LANGS) {
          await useLang(lang);
          await page.waitForSelector(tid('state-empty'));
          await check('empty list');
        }

        // ---- the list with a project of every status and an overdue one
        const { token } = JSON.parse(await page.evaluate(() => localStorage.getItem('btp.session')));
        const ids = {};
        for (const p of SEED) ids[p.name] = (await api(system, token, 'POST', '/api/projects', p)).id;
        // One edit, so the project's history shows a change from one value to another.
        const subject = 'Résidence Al Manar';
        await api(system, token, 'PATCH', `/api/projects/${ids[subject]}`, { progress: 50, notes: 'R+8, 120 logements.\nGros œuvre en cours.' });
        await page.waitForSelector(`${tid('totals-all')}[data-value="${SEED.length}"]`);
        await page.waitForSelector(tid('project-row-overdue'));
        for (const lang of LANGS) {
          await useLang(lang);
          await page.waitForSelector(`${tid('totals-all')}[data-value="${SEED.length}"]`);
          await check('list');

          // A keyboard focus shows a solid ring that stands out from the page.
          for (const scheme of SCHEMES) {
            await page.emulateMedia({ colorScheme: scheme });
            const ring = await tabToButton(page);
            const where = `${vp.name} · focus ring · ${lang} · ${scheme}`;
            assert.ok(ring, `${where}: Tab never reached a button`);
            if (ring.style === 'none' || ring.width < 2) findings.push(`${where}: ${ring.testid} shows outline ${ring.style} ${ring.width}px`);
            const c = contrast(ring.color, ring.page);
            if (c < RING_CONTRAST) findings.push(`${where}: ${ring.testid}'s ring ${ring.color} on ${ring.page} is ${c.toFixed(2)}:1`);
          }
        }
        await page.emulateMedia({ colorScheme: vp.phone ? 'light' : 'dark' });
        await shot(page, vp.phone ? 'a11y-light-list-phone.png' : 'a11y-dark-list.png');
        // Paper stays light whatever the screen's scheme: white under dark text.
        await page.emulateMedia({ media: 'print', colorScheme: 'dark' });
        const paper = await page.evaluate(() => ['body', '.project-row', '.row-meta'].map((sel) => {
          const s = getComputedStyle(document.querySelector(sel));
          return [sel, s.backgroundColor === 'rgba(0, 0, 0, 0)' ? null : s.backgroundColor, s.color];
        }));
        await page.emulateMedia({ media: 'screen' });
        for (const [sel, bg, ink] of paper) {
          if (bg && luminance(bg) < 0.95) findings.push(`${vp.name} · print in the dark scheme: ${sel}'s background ${bg} is not white`);
          if (luminance(ink) > 0.2) findings.push(`${vp.name} · print in the dark scheme: ${sel}'s text ${ink} is not dark`);
        }

        // ---- the project form (new, with its field messages; and edit) and the delete confirmation
        for (const lang of LANGS) {
          await useLang(lang);
          await page.click(tid('new-project'));
          await page.waitForSelector(tid('project-form'));
          await page.click(tid('project-save'));
          await page.waitForSelector(`${tid('error-name')}:not([hidden])`);
          await check('new project form with field errors');
          if (!vp.phone && lang === 'fr') await shot(page, 'a11y-dark-form.png');
          await page.click(tid('project-cancel'));
          await page.waitForSelector(tid('project-form-dialog'), { state: 'detached' });

          await page.click(`${rowByName(subject)} ${tid('project-edit')}`);
          await page.waitForSelector(tid('project-form'));
          await check('edit project form');
          await page.click(tid('project-cancel'));
          await page.waitForSelector(tid('project-form-dialog'), { state: 'detached' });

          await page.click(`${rowByName(subject)} ${tid('project-delete')}`);
          await page.waitForSelector(tid('confirm-dialog'));
          await check('delete confirmation');
          await page.click(tid('cancel-delete'));
          await page.waitForSelector(tid('confirm-dialog'), { state: 'detached' });
        }

        // ---- a project's page and its history
        await page.goto(`${system.url}/#/p/${ids[subject]}`);
        for (const lang of LANGS) {
          await useLang(lang);
          await page.waitForSelector(`${tid('history-panel')}[data-state="ready"] ${tid('history-entry')}[data-kind="update"]`);
          await check('project page with history');
        }
        if (vp.phone) {
          await page.emulateMedia({ colorScheme: 'dark' });
          await shot(page, 'a11y-dark-detail-phone-ar.png');
        }

        // ---- offline with an unsynced edit, then the conflict it meets on the way back
        await page.goto(`${system.url}/#/`);
        await page.waitForSelector(rowByName(subject));
        await D.context.setOffline(true);
        await waitConn(page, 'offline');
        await editProject(page, subject, { progress: 15 });
        await page.waitForSelector(`${tid('pending-count')}:not([hidden])`);
        await check('offline list with an unsynced edit');
        await api(system, token, 'PATCH', `/api/projects/${ids[subject]}`, { progress: 30 });
        await D.context.setOffline(false);
        await page.waitForSelector(tid('conflict-dialog'), { timeout: 15000 });
        await check('conflict dialog');
        // The choice waits across a reload: the other language asks the same.
        const other = (await page.getAttribute('html', 'lang')) === 'fr' ? 'ar' : 'fr';
        await page.evaluate((lang) => localStorage.setItem('btp.lang', lang), other);
        await page.reload();
        await page.waitForSelector(tid('conflict-dialog'));
        await check('conflict dialog');
        await page.click(tid('conflict-keep-current'));
        await page.waitForSelector(tid('conflict-dialog'), { state: 'detached' });

        // ---- the error screen: a desktop app whose server cannot be reached
        const E = await newDevice(browser, { name: `${vp.name}-down`, viewport: vp.viewport, electronApiUrl: `http://127.0.0.1:${await freePort()}` });
        try {
          await E.page.emulateMedia({ reducedMotion: 'reduce' });
          for (const lang of LANGS) {
            await E.page.goto(INDEX_FILE_URL);
            await E.page.evaluate((lang) => localStorage.setItem('btp.lang', lang), lang);
            await E.page.reload();
            await E.page.waitForSelector(`html[lang="${lang}"] ${tid('fatal-error')}`, { timeout: 20000 });
            await check('error screen', E.page);
          }
          if (vp.phone) await shot(E.page, 'a11y-dark-error-phone-ar.png');
        } finally {
          await E.context.close();
        }
      } finally {
        await D.context.close();
      }

      t.diagnostic(`${scans} axe scans in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      assert.ok(scans >= 40, `only ${scans} axe scans ran`);
      assert.equal(findings.length, 0, `${findings.length} accessibility problem(s):\n${findings.join('\n')}`);
    });
  }
});
