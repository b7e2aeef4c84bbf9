// Load times on a phone network (300 ms round trip, 1.6 Mbps down, 750 kbps up, Chromium's
// emulation), over HTTPS with HTTP/2 as deployed: the sign-in form on a first visit, the
// list on a reload. Asserted with headroom over the targets (1.2 s and 0.6 s) since this
// machine is shared and noisy; bench/web reports the exact figures.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from './lib/system.mjs';
import { launch, signUp, createProject, eventually } from './lib/browser.mjs';
import { coldSignIn, warmList, throttle, timedDevice, median } from './lib/loadtime.mjs';

const HEADROOM = 1.5;
const COLD_TARGET_MS = 1200;
const WARM_TARGET_MS = 600;
const ROUNDS = 3;

describe('load times on a phone network', () => {
  let system;
  let browser;

  before(async () => {
    system = await startSystem({ name: 'btp-speed', tls: true });
    browser = await launch({ trustSpki: system.spki });
  });

  after(async () => {
    if (browser) await browser.close();
    if (system) await system.stop();
  });

  test('a first visit shows the sign-in form within the target, in one wave of requests', async () => {
    const runs = [];
    for (let i = 0; i < ROUNDS; i += 1) runs.push(await coldSignIn(browser, system.tlsUrl));
    const ms = median(runs.map((r) => r.ms));
    console.log(`cold sign-in form: ${runs.map((r) => r.ms).join(', ')} ms (median ${ms}); requests ${runs.map((r) => r.requests).join(', ')}`);
    assert.ok(ms <= COLD_TARGET_MS * HEADROOM, `cold sign-in ${ms} ms > ${COLD_TARGET_MS} ms × ${HEADROOM}`);
  });

  test('a reload of a signed-in device shows the list within the target, from the device', async () => {
    const A = await timedDevice(browser, { name: 'A' });
    try {
      await A.page.goto(system.tlsUrl);
      await signUp(A.page, { name: 'Salma Idrissi', email: `salma.${Date.now()}@chantier.ma`, password: 'b3ton-arme!' });
      for (const name of ['Tour Marina', 'Lycée Agdal', 'Pont Bouregreg']) await createProject(A.page, { name, city: 'Rabat' });
      await eventually(() => A.page.evaluate(() => !!navigator.serviceWorker.controller), { timeout: 15000 });
      await throttle(A.context, A.page);
      const runs = [];
      for (let i = 0; i < ROUNDS; i += 1) runs.push(await warmList(A));
      const ms = median(runs);
      console.log(`warm list: ${runs.join(', ')} ms (median ${ms})`);
      assert.ok(ms <= WARM_TARGET_MS * HEADROOM, `warm list ${ms} ms > ${WARM_TARGET_MS} ms × ${HEADROOM}`);
      assert.deepEqual(A.errors, []);
    } finally {
      await A.context.close();
    }
  });
});
