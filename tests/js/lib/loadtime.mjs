// Load times as a phone on a building site sees them: Chromium's network emulation at
// 300 ms round trip, 1.6 Mbps down and 750 kbps up, and each time read in the page
// (`performance.now()`, i.e. since the navigation started) at the moment the element
// appears in the document — not when the test harness notices it, which can be later.
// Shared by tests/js/app-speed.test.mjs (asserted with headroom) and bench/web (exact
// figures).
import { newDevice, tid } from './browser.mjs';

export const PHONE = { offline: false, latency: 300, downloadThroughput: 1.6e6 / 8, uploadThroughput: 750e3 / 8 };

/** What each page records: when an element with each of these test ids first appeared. */
const WATCHED = ['login-email', 'project-row'];

function recordAppearances(watched) {
  window.__btpShown = {};
  const seen = () => {
    for (const id of watched) {
      if (!(id in window.__btpShown) && document.querySelector(`[data-testid="${id}"]`)) window.__btpShown[id] = performance.now();
    }
  };
  new MutationObserver(seen).observe(document, { childList: true, subtree: true });
}

/** Emulate the phone network for `page` (and keep it across its reloads). */
export async function throttle(context, page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', PHONE);
  return cdp;
}

/** A device whose pages record when watched elements appear. */
export function timedDevice(browser, options = {}) {
  return newDevice(browser, { ...options, initScript: [recordAppearances, WATCHED] });
}

/** Milliseconds from the navigation's start to `testid` appearing in `page`. */
export async function shownAt(page, testid, timeout = 15000) {
  await page.waitForSelector(tid(testid), { timeout });
  return page.evaluate((id) => Math.round(window.__btpShown[id]), testid);
}

/** A first visit on the phone network: ms to the sign-in form, and the requests made. */
export async function coldSignIn(browser, url) {
  const device = await timedDevice(browser, { name: 'cold' });
  try {
    await throttle(device.context, device.page);
    await device.page.goto(url, { waitUntil: 'commit' });
    const ms = await shownAt(device.page, 'login-email');
    return { ms, requests: device.requests.length };
  } finally {
    await device.context.close();
  }
}

/** A reload of a signed-in `device` (made by timedDevice) on the phone network: ms to
 * the first row of the list. */
export async function warmList(device) {
  await device.page.reload({ waitUntil: 'commit' });
  return shownAt(device.page, 'project-row');
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}
