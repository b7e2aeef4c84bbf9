// A throw-away PostgreSQL 15 cluster for tests that need several API processes on one
// database: initdb + postgres as the `postgres` system user (initdb refuses root) on a
// free loopback port, data in a temp dir; `stop()` ends it and removes the data. Honours
// BTP_TEST_PG_URL to use a cluster someone already runs.
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './system.mjs';

const PG_BIN = process.env.PG_BIN || '/usr/lib/postgresql/15/bin';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function postgresUser() {
  const id = (flag) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
  const uid = id('-u');
  const gid = id('-g');
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('no `postgres` system user (apt-get install postgresql)');
  return { uid, gid };
}

/** Start a cluster; resolves to { url(db), createDatabase(name), stop() }. */
export async function startPostgres() {
  if (process.env.BTP_TEST_PG_URL) {
    const base = process.env.BTP_TEST_PG_URL.replace(/\/+$/, '');
    return { base, createDatabase: (name) => createDatabase(base, name), stop: async () => {} };
  }
  if (!existsSync(path.join(PG_BIN, 'postgres'))) throw new Error(`PostgreSQL binaries missing in ${PG_BIN} (apt-get install postgresql)`);
  const { uid, gid } = postgresUser();
  const dir = mkdtempSync(path.join(tmpdir(), 'btp-js-pg-'));
  chownSync(dir, uid, gid);
  const data = path.join(dir, 'data');
  const init = spawnSync(path.join(PG_BIN, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { uid, gid, cwd: dir, encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const port = await freePort();
  const pg = spawn(path.join(PG_BIN, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'max_connections=200'], { uid, gid, cwd: dir, stdio: 'ignore' });
  let exited = false;
  pg.on('exit', () => { exited = true; });
  const killOnExit = () => { try { pg.kill('SIGQUIT'); } catch { /* gone */ } };
  process.on('exit', killOnExit);
  const base = `postgres://postgres@127.0.0.1:${port}`;
  for (let i = 0; ; i += 1) {
    const ready = spawnSync(path.join(PG_BIN, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres']);
    if (ready.status === 0) break;
    if (exited || i > 300) throw new Error('postgres did not start');
    await sleep(100);
  }
  async function stop() {
    process.off('exit', killOnExit);
    if (!exited) {
      pg.kill('SIGQUIT');
      for (let i = 0; i < 100 && !exited; i += 1) await sleep(50);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return { base, createDatabase: (name) => createDatabase(base, name), stop };
}

function createDatabase(base, name) {
  const url = new URL(base);
  const res = spawnSync(path.join(PG_BIN, 'psql'), ['-h', url.hostname, '-p', url.port, '-U', url.username || 'postgres', '-d', 'postgres', '-c', `CREATE DATABASE "${name}"`], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`CREATE DATABASE failed: ${res.stderr}`);
  return `${base}/${name}`;
}
