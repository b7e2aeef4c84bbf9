// Starts the real system for browser tests: the `btp` binary (`btp up`) with a fresh
// config.toml on free loopback ports, a temporary SQLite database and `static.root`
// pointing at the repository's web app; waits until the API answers through the gateway;
// stops the whole process group at the end.
import { spawn, execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { createWriteStream, mkdtempSync, writeFileSync, existsSync, mkdirSync, rmSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..', '..');
export const STATIC_ROOT = path.join(REPO, 'static');
export const OUT_DIR = path.join(REPO, 'tests', 'js', 'out');
export const BTP_BIN = process.env.BTP_BIN || path.join(REPO, 'target', 'debug', 'btp');

/** A loopback port that was free a moment ago (the OS picks it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** `n` consecutive free loopback ports (API worker i listens on the first + i), avoiding `taken`. */
async function freePortRun(n, taken) {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const first = await freePort();
    if (first + n > 65535) continue;
    let ok = true;
    for (let i = 0; i < n && ok; i += 1) {
      ok = !taken.includes(first + i) && (i === 0 || (await portIsFree(first + i)));
    }
    if (ok) return first;
  }
  throw new Error(`no run of ${n} free ports found`);
}

function portIsFree(port) {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

async function distinctPorts(n) {
  const ports = new Set();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * @param {object} o { name, realtime: { ping_interval_ms, ping_timeout_ms }, readyTimeoutMs,
 *   workers, databaseUrl, staticRoot (the web app served; the repository's by default),
 *   tls (also an HTTPS listener, HTTP/2 by ALPN, with a certificate from `btp certs`) }
 * @returns {Promise<{ url, port, adminPort, dir, logFile, stop, restart, reload, tlsUrl, spki }>}
 *   `spki`: base64 SHA-256 of the certificate's public key, what Chromium's
 *   `--ignore-certificate-errors-spki-list` trusts.
 */
export async function startSystem({ name = 'btp', realtime = {}, readyTimeoutMs = 90000, workers = 1, databaseUrl = null, staticRoot = STATIC_ROOT, tls = false } = {}) {
  // BTP_TEST_URL points the tests at a system someone already runs (e.g. a staging box).
  if (process.env.BTP_TEST_URL) {
    const url = process.env.BTP_TEST_URL.replace(/\/+$/, '');
    return { url, port: Number(new URL(url).port || 80), adminPort: null, dir: null, logFile: null, stop: async () => {}, exited: null };
  }
  if (!existsSync(BTP_BIN)) throw new Error(`btp binary not found at ${BTP_BIN} (build it with \`cargo build -p btp\` or set BTP_BIN)`);
  mkdirSync(OUT_DIR, { recursive: true });
  const dir = mkdtempSync(path.join(tmpdir(), `${name}-`));
  const [port, adminPort, tlsPort] = await distinctPorts(3);
  const apiPort = await freePortRun(workers, [port, adminPort, tlsPort]);
  let tlsLines = '';
  let spki = null;
  if (tls) {
    const certs = path.join(dir, 'certs');
    execFileSync(BTP_BIN, ['certs', '--dir', certs], { stdio: 'ignore' });
    tlsLines = `tls_listen = "127.0.0.1:${tlsPort}"\ntls_cert = "${path.join(certs, 'dev.crt')}"\ntls_key = "${path.join(certs, 'dev.key')}"\n`;
    const cert = new X509Certificate(readFileSync(path.join(certs, 'dev.crt')));
    spki = createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  }
  const pingInterval = realtime.ping_interval_ms ?? 25000;
  const pingTimeout = realtime.ping_timeout_ms ?? 60000;
  const configPath = path.join(dir, 'config.toml');
  writeFileSync(configPath, `# written by tests/js/lib/system.mjs
[gateway]
listen = "127.0.0.1:${port}"
admin_listen = "127.0.0.1:${adminPort}"
pid_file = "${path.join(dir, 'btp.pid')}"
${tlsLines}
[static]
root = "${staticRoot}"

[api]
listen = "127.0.0.1:${apiPort}"
workers = ${workers}

[database]
url = "${databaseUrl ?? `sqlite://${path.join(dir, 'btp.db')}`}"

[realtime]
ping_interval_ms = ${pingInterval}
ping_timeout_ms = ${pingTimeout}

[auth]
# Every test registers its users from 127.0.0.1.
register_max_per_ip = 100000

[log]
level = "info"
`);
  const logFile = path.join(OUT_DIR, `${name}.log`);
  const log = createWriteStream(logFile);
  const url = `http://127.0.0.1:${port}`;
  let child = null;
  let exited = null;

  async function spawnAndWait() {
    exited = null;
    const proc = spawn(BTP_BIN, ['up', '--config', configPath], {
      cwd: dir,
      detached: true, // own process group, so stopping reaches the supervised API workers too
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    proc.stdout.pipe(log, { end: false });
    proc.stderr.pipe(log, { end: false });
    proc.on('exit', (code, signal) => { if (child === proc) exited = { code, signal }; });
    const deadline = Date.now() + readyTimeoutMs;
    let last = 'no answer';
    for (;;) {
      if (exited) throw new Error(`btp up exited early (${JSON.stringify(exited)}); see ${logFile}`);
      try {
        const res = await fetch(`${url}/api/health`);
        if (res.ok) return;
        last = `HTTP ${res.status}`;
      } catch (err) {
        last = String(err.cause?.code || err.message);
      }
      if (Date.now() > deadline) {
        killGroup(proc.pid, 'SIGKILL');
        throw new Error(`btp not ready after ${readyTimeoutMs} ms (${last}); see ${logFile}`);
      }
      await sleep(200);
    }
  }

  async function kill() {
    if (!child) return;
    if (!exited) {
      killGroup(child.pid, 'SIGTERM');
      for (let i = 0; i < 50 && !exited; i += 1) await sleep(100);
      if (!exited) killGroup(child.pid, 'SIGKILL');
      for (let i = 0; i < 20 && !exited; i += 1) await sleep(100);
    }
    child = null;
  }

  await spawnAndWait();

  return {
    url,
    port,
    adminPort,
    apiPort,
    dir,
    logFile,
    tlsUrl: tls ? `https://127.0.0.1:${tlsPort}` : null,
    spki,
    /** What `btp reload` does: SIGHUP, so the gateway re-reads config.toml and the web app. */
    reload() {
      const pid = Number(readFileSync(path.join(dir, 'btp.pid'), 'utf8').trim());
      process.kill(pid, 'SIGHUP');
    },
    /** Stop the whole system, then start it again on the same ports and database. */
    async restart() {
      await kill();
      await spawnAndWait();
    },
    async stop() {
      await kill();
      log.end();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function killGroup(pid, signal) {
  try { process.kill(-pid, signal); } catch { /* already gone */ }
}
