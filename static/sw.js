// The service worker: keeps the app shell so the app opens with no network, and from
// this device's cache on a slow one.
//
// - The shell is index.html, every file it links (stylesheet, boot script, icon, the
//   modules of the sign-in form through their `modulepreload` hints, which also flatten
//   a first load into one wave of requests) and every module those import, statically or
//   not (the signed-in workspace). It is cached whole at install, under the version the
//   page registered this worker with (`sw.js?v=` the gateway's `assetsVersion`, a digest
//   of every static file): a new deployment is a new worker with its own cache, which
//   takes over for the next load.
// - Navigations get the cached index.html; shell files come from the cache.
// - `/config.json` goes to the network first (a changed configuration, or a new version,
//   is seen at once) and falls back to the last copy seen (kept since install) when the
//   network fails or has not answered within CONFIG_GRACE_MS (a network that
//   neither answers nor fails must not hold the app's start).
// - `/api/` and `/socket.io/` are never touched: they are the server's, and the app's
//   outbox, not this cache, is what keeps edits made offline.
'use strict';

const VERSION = new URL(self.location.href).searchParams.get('v') || 'dev';
const SHELL_PREFIX = 'btp-shell-';
const SHELL = `${SHELL_PREFIX}${VERSION}`;
const CONFIG = 'btp-config';
const INDEX = 'index.html';
const CONFIG_FILE = 'config.json';
const CONFIG_GRACE_MS = 1500;

/** Same-origin files index.html links: `href` and `src` of its link and script tags. */
function shellFiles(html, base) {
  const files = new Set();
  for (const tag of html.match(/<(?:link|script)\b[^>]*>/gi) || []) {
    const attr = /\b(?:href|src)\s*=\s*"([^"]+)"/i.exec(tag);
    if (!attr) continue;
    const url = new URL(attr[1], base);
    if (url.origin === self.location.origin) files.add(url.href);
  }
  return [...files];
}

/** Relative module specifiers a module imports: `import … from`, `export … from`,
 * `import '…'` and `import('…')`. */
const IMPORTS = /\b(?:import|export)\b[^'"`;]*?\bfrom\s*['"](\.{1,2}\/[^'"]+)['"]|\bimport\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g;

/** Fetch `href` from the network into `cache`: its text when it is a page or a module
 * (to look for what it links or imports), else ''. */
async function keep(cache, href) {
  const res = await fetch(href, { cache: 'no-store' });
  if (!res.ok) throw new Error(`${href}: HTTP ${res.status}`);
  const text = /\.(?:html|js)$/.test(new URL(href).pathname) ? await res.clone().text() : '';
  await cache.put(href, res);
  return text;
}

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const scope = self.registration.scope;
    const cache = await caches.open(SHELL);
    const html = await keep(cache, new URL(INDEX, scope).href);
    // Every linked file, then the modules they import, wave by wave, each once.
    let wave = shellFiles(html, scope);
    const seen = new Set(wave);
    while (wave.length) {
      const texts = await Promise.all(wave.map((href) => keep(cache, href)));
      const next = [];
      texts.forEach((text, i) => {
        for (const m of text.matchAll(IMPORTS)) {
          const href = new URL(m[1] || m[2], wave[i]).href;
          if (!seen.has(href)) { seen.add(href); next.push(href); }
        }
      });
      wave = next;
    }
    await keep(await caches.open(CONFIG), new URL(CONFIG_FILE, scope).href);
    // A page still running the old version keeps its modules (already loaded); the next
    // load is the new version's.
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(SHELL_PREFIX) && name !== SHELL) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

async function fromShell(request) {
  const cache = await caches.open(SHELL);
  const hit = await cache.match(request, { ignoreSearch: true });
  return hit || fetch(request);
}

async function page() {
  const cache = await caches.open(SHELL);
  const hit = await cache.match(new URL(INDEX, self.registration.scope).href);
  return hit || fetch(new URL(INDEX, self.registration.scope));
}

async function networkFirst(request) {
  const cache = await caches.open(CONFIG);
  const network = fetch(request, { cache: 'no-store' }).then(async (res) => {
    if (res.ok) await cache.put(request.url, res.clone());
    return res;
  });
  const kept = () => cache.match(request.url);
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve('late'), CONFIG_GRACE_MS); });
  try {
    const first = await Promise.race([network, late]);
    if (first !== 'late') return first;
    return (await kept()) || (await network);
  } catch (err) {
    const hit = await kept();
    if (hit) return hit;
    throw err;
  } finally {
    clearTimeout(timer);
    network.catch(() => { /* answered from the cache; a late failure changes nothing */ });
  }
}

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  const scopePath = new URL(self.registration.scope).pathname;
  const path = url.pathname.startsWith(scopePath) ? url.pathname.slice(scopePath.length) : url.pathname;
  if (path.startsWith('api/') || path.startsWith('socket.io/') || path === 'sw.js') return;
  if (path === CONFIG_FILE) event.respondWith(networkFirst(request));
  else if (request.mode === 'navigate') event.respondWith(page());
  else event.respondWith(fromShell(request));
});
