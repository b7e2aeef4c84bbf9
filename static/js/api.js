// HTTP client for the JSON API. Every failure becomes either an ApiError (the server
// answered with the `{"error": {...}}` shape or an unexpected status) or a NetworkError
// (nothing came back), because the sync engine treats the two differently: a network
// error keeps ops queued, an API error is a verdict.

const TIMEOUT_MS = 15000;

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.field = error.field || null;
    this.fields = fieldMap(error);
  }
}

export class NetworkError extends Error {}

/** Per-field messages: a `fields`/`details` map when present, else the single `field`. */
export function fieldMap(error) {
  const out = {};
  for (const key of ['fields', 'details', 'errors']) {
    const m = error && error[key];
    if (m && typeof m === 'object' && !Array.isArray(m)) {
      for (const [f, v] of Object.entries(m)) out[f] = typeof v === 'string' ? v : (v && v.message) || String(v);
    } else if (Array.isArray(m)) {
      for (const item of m) if (item && item.field) out[item.field] = item.message || error.message;
    }
  }
  if (error && error.field && !out[error.field]) out[error.field] = error.message || '';
  return out;
}

export class Api {
  constructor(baseUrl) {
    this.baseUrl = baseUrl;
    this.token = null;
    this.sessionId = null;
  }

  async request(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    // Names this device as the origin of a write, so the server does not echo it back here.
    if (this.sessionId) headers['X-Client-Session-Id'] = this.sessionId;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    let res;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl.signal,
        cache: 'no-store',
      });
    } catch (err) {
      throw new NetworkError(err && err.name === 'AbortError' ? 'timeout' : String(err && err.message || err));
    } finally {
      clearTimeout(timer);
    }
    if (res.status === 204) return null;
    let json = null;
    const text = await res.text().catch(() => '');
    if (text) {
      try { json = JSON.parse(text); } catch { json = null; }
    }
    if (!res.ok) {
      const error = json && json.error && typeof json.error === 'object' ? json.error : { message: text.slice(0, 200) };
      throw new ApiError(res.status, error);
    }
    return json;
  }

  register(email, password, name) {
    return this.request('POST', '/api/auth/register', { email, password, name });
  }

  login(email, password) {
    return this.request('POST', '/api/auth/login', { email, password });
  }

  logout() {
    return this.request('POST', '/api/auth/logout', {});
  }

  pull(body) {
    return this.request('POST', '/api/sync/pull', body);
  }

  push(body) {
    return this.request('POST', '/api/sync/push', body);
  }

  history(id, limit) {
    return this.request('GET', `/api/projects/${encodeURIComponent(id)}/history?limit=${limit}`);
  }
}
