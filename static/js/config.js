// Run-time configuration: where the API lives is read when the page starts, never baked
// in. Over http(s) the gateway serves /config.json; a page loaded from file:// or an app
// scheme (Electron) gets `window.electron.apiUrl` from its preload, unless the user
// entered another address on the error screen (kept on this device). Either way the API
// is then probed once, so an unreachable server ends on an error screen naming the URL.

const DEFAULTS = {
  realtimePath: '/socket.io/',
  transports: ['websocket'],
  pingIntervalMs: 25000,
  pingTimeoutMs: 60000,
  version: '',
};

const PROBE_TIMEOUT_MS = 8000;
/** The server address the user entered in the desktop app, kept on this device. */
const SERVER_KEY = 'btp.apiUrl';

export class ConfigError extends Error {
  /** `reason` is an i18n key; `url` is what was tried, shown to the user. */
  constructor(reason, url, detail) {
    super(`${reason}: ${url}${detail ? ` (${detail})` : ''}`);
    this.reason = reason;
    this.url = url;
    this.detail = detail || '';
  }
}

function trimSlash(url) {
  return String(url || '').replace(/\/+$/, '');
}

async function fetchWithTimeout(url, init = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), PROBE_TIMEOUT_MS);
  try {
    return await fetch(url, { cache: 'no-store', ...init, signal: ctl.signal });
  } finally {
    clearTimeout(timer);
  }
}

function describe(err) {
  if (err && err.name === 'AbortError') return 'timeout';
  return err && err.message ? err.message : String(err);
}

export function servedOverHttp() {
  return location.protocol === 'http:' || location.protocol === 'https:';
}

/** Resolve the configuration without touching the API. Throws ConfigError. */
export async function readConfig() {
  if (servedOverHttp()) {
    const url = new URL('/config.json', location.href).href;
    let body;
    try {
      // The default cache mode, so that the fetch the gateway's `Link` header on the page
      // started (with the page's modules) is the one used; it is marked no-cache, so
      // never stale.
      const res = await fetchWithTimeout(url, { cache: 'default' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      body = await res.json();
    } catch (err) {
      throw new ConfigError('error.config', url, describe(err));
    }
    if (!body || typeof body !== 'object') throw new ConfigError('error.config', url, 'not an object');
    return {
      ...DEFAULTS,
      ...pick(body),
      apiUrl: trimSlash(body.apiUrl) || location.origin,
      source: url,
    };
  }
  const saved = savedServer();
  const apiUrl = saved || trimSlash(globalThis.electron && globalThis.electron.apiUrl);
  if (!apiUrl) throw new ConfigError('error.noApiUrl', location.href);
  return { ...DEFAULTS, apiUrl, source: saved ? `localStorage ${SERVER_KEY}` : 'window.electron.apiUrl' };
}

/** The server address entered on this device ('' when none). */
export function savedServer() {
  try { return localStorage.getItem(SERVER_KEY) || ''; } catch { return ''; }
}

/** Keep `apiUrl` as this device's server address; '' goes back to the app's own. */
export function saveServer(apiUrl) {
  try {
    if (apiUrl) localStorage.setItem(SERVER_KEY, apiUrl);
    else localStorage.removeItem(SERVER_KEY);
  } catch { /* storage refused: the address lasts this page */ }
}

/** A typed server address as an API base URL, or null when it is not an http(s) one. */
export function parseServerUrl(text) {
  let url;
  try { url = new URL(String(text || '').trim()); } catch { return null; }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !url.host || url.username || url.password) return null;
  return trimSlash(`${url.origin}${url.pathname}`);
}

function pick(body) {
  const out = {};
  if (typeof body.realtimePath === 'string' && body.realtimePath.startsWith('/')) out.realtimePath = body.realtimePath;
  if (Array.isArray(body.transports)) out.transports = body.transports;
  if (Number.isFinite(body.pingIntervalMs)) out.pingIntervalMs = body.pingIntervalMs;
  if (Number.isFinite(body.pingTimeoutMs)) out.pingTimeoutMs = body.pingTimeoutMs;
  if (typeof body.version === 'string') out.version = body.version;
  if (typeof body.assetsVersion === 'string') out.assetsVersion = body.assetsVersion;
  return out;
}

/** Check that the API answers; throws ConfigError naming the URL tried. */
export async function probeApi(config) {
  const url = `${config.apiUrl}/api/health`;
  try {
    const res = await fetchWithTimeout(url, { headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  } catch (err) {
    throw new ConfigError('error.server', url, describe(err));
  }
}

/** ws(s):// URL of the Engine.IO WebSocket endpoint. */
export function socketUrl(config) {
  const u = new URL(config.realtimePath, `${config.apiUrl}/`);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = 'EIO=4&transport=websocket';
  return u.href;
}
