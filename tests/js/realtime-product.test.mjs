// The product's realtime contract with the real npm socket.io-client 4.8 against the real
// `btp up` (gateway + API worker(s)): every device of a user sees every change exactly
// once, never its own echo, never another user's; over WebSocket, polling and the upgrade;
// across two API processes sharing PostgreSQL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { io } from 'socket.io-client';
import { startSystem } from './lib/system.mjs';
import { startPostgres } from './lib/pg.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const HEARTBEAT = { ping_interval_ms: 1000, ping_timeout_ms: 1000 };

async function register(base, tag) {
  const email = `${tag}-${randomUUID().slice(0, 8)}@btp.test`;
  const res = await fetch(`${base}/api/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: 'correct horse battery', name: tag }),
  });
  assert.equal(res.status, 201, await res.clone().text());
  return res.json();
}

/** A connected socket that records every `sync:changes` it receives. */
async function device(base, token, clientSessionId, opts = {}) {
  const socket = io(base, { auth: { token, clientSessionId }, reconnectionDelay: 100, reconnectionDelayMax: 500, ...opts });
  socket.received = [];
  socket.on('sync:changes', (payload) => socket.received.push({ at: Date.now(), payload }));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
}

function createOp(name) {
  return { op_id: randomUUID(), kind: 'create', id: randomUUID(), data: { name, status: 'planned' } };
}

async function push(socket, sessionId, ops) {
  return socket.timeout(5000).emitWithAck('sync:push', { client_id: 'interop', session_id: sessionId, ops });
}

async function eventually(check, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function changedIds(socket) {
  return socket.received.flatMap((r) => r.payload.changes.map((c) => c.id ?? c.project?.id));
}

let sys;
before(async () => { sys = await startSystem({ name: 'realtime-product', realtime: HEARTBEAT }); });
after(async () => { await sys?.stop(); });

test('a push from one device reaches the other devices of its user, never its own session, never another user', async () => {
  const u = await register(sys.url, 'u');
  const v = await register(sys.url, 'v');
  const a = await device(sys.url, u.token, 'device-a', { transports: ['websocket'] });
  const aTwin = await device(sys.url, u.token, 'device-a', { transports: ['websocket'] });
  const b = await device(sys.url, u.token, 'device-b', { transports: ['websocket'] });
  const bPolling = await device(sys.url, u.token, 'device-b-polling', { transports: ['polling'] });
  const other = await device(sys.url, v.token, 'device-v', { transports: ['websocket'] });
  try {
    const op = createOp('Chantier Casablanca');
    const sent = Date.now();
    const ack = await push(a, 'device-a', [op]);
    assert.equal(ack.acks.length, 1);
    assert.equal(ack.acks[0].status, 'applied', JSON.stringify(ack));
    await eventually(() => b.received.length === 1 && bPolling.received.length === 1, 'B devices to receive the change');
    const latency = b.received[0].at - sent;
    assert.ok(latency < 1000, `delivery took ${latency} ms`);
    assert.deepEqual(changedIds(b), [op.id]);
    assert.equal(b.received[0].payload.to, ack.cursor);
    // Give an echo every chance to arrive before asserting it never does.
    await sleep(500);
    assert.equal(a.received.length, 0, 'the sending session got its own echo');
    assert.equal(aTwin.received.length, 0, 'another socket of the sending session got the echo');
    assert.equal(other.received.length, 0, 'another user received the change');
    assert.equal(b.received.length, 1, 'a device received the change twice');
  } finally {
    for (const s of [a, aTwin, b, bPolling, other]) s.close();
  }
});

test('REST writes are broadcast like socket pushes, excluding the session named in X-Client-Session-Id', async () => {
  const u = await register(sys.url, 'rest');
  const a = await device(sys.url, u.token, 'rest-a', { transports: ['websocket'] });
  const b = await device(sys.url, u.token, 'rest-b', { transports: ['websocket'] });
  try {
    const id = randomUUID();
    const res = await fetch(`${sys.url}/api/projects`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${u.token}`, 'x-client-session-id': 'rest-a' },
      body: JSON.stringify({ id, name: 'Villa Rabat', status: 'active' }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    await eventually(() => b.received.length === 1, 'B to receive the REST create');
    assert.deepEqual(changedIds(b), [id]);
    await sleep(300);
    assert.equal(a.received.length, 0, 'the REST caller session got an echo');
  } finally {
    a.close();
    b.close();
  }
});

test('sync:pull over the socket answers exactly what POST /api/sync/pull answers', async () => {
  const u = await register(sys.url, 'pull');
  const a = await device(sys.url, u.token, 'pull-a', { transports: ['websocket'] });
  try {
    await push(a, 'pull-a', [createOp('Un'), createOp('Deux')]);
    const overSocket = await a.timeout(5000).emitWithAck('sync:pull', { cursor: 0 });
    const res = await fetch(`${sys.url}/api/sync/pull`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${u.token}` },
      body: JSON.stringify({ cursor: 0 }),
    });
    assert.deepEqual(overSocket, await res.json());
    assert.equal(overSocket.count, 2);
    const bad = await a.timeout(5000).emitWithAck('sync:push', { ops: 'nope' });
    assert.equal(typeof bad.error?.code, 'string', JSON.stringify(bad));
  } finally {
    a.close();
  }
});

test('sync:push carries base_seq: a stale field comes back as a conflict with both values, the other fields apply and reach the other device', async () => {
  const u = await register(sys.url, 'stale');
  const a = await device(sys.url, u.token, 'stale-a', { transports: ['websocket'] });
  const b = await device(sys.url, u.token, 'stale-b', { transports: ['websocket'] });
  try {
    const create = createOp('École Meknès');
    const created = await push(a, 'stale-a', [create]);
    const base = created.acks[0].seq;
    const edit = (data, baseSeq) => ({ op_id: randomUUID(), kind: 'update', id: create.id, base_seq: baseSeq, data });
    const fromB = await push(b, 'stale-b', [edit({ progress: 30 }, base)]);
    assert.equal(fromB.acks[0].status, 'applied', JSON.stringify(fromB));
    const fromA = await push(a, 'stale-a', [edit({ progress: 15, city: 'Meknès' }, base)]);
    const ack = fromA.acks[0];
    assert.equal(ack.status, 'conflict', JSON.stringify(fromA));
    assert.equal(ack.reason, 'stale');
    assert.deepEqual(ack.fields, { progress: { current: 30, yours: 15 } });
    assert.ok(ack.seq > fromB.acks[0].seq, JSON.stringify(ack));
    // B sees A's city, never a progress of 15.
    await eventually(() => b.received.some((r) => r.payload.to === ack.seq), 'B to receive the city');
    const last = b.received.at(-1).payload.changes.find((c) => c.id === create.id);
    assert.equal(last.project.city, 'Meknès');
    assert.equal(last.project.progress, 30);
    const stale = await push(a, 'stale-a', [{ op_id: randomUUID(), kind: 'delete', id: create.id, base_seq: base }]);
    assert.equal(stale.acks[0].reason, 'stale', JSON.stringify(stale));
    assert.equal(stale.acks[0].project.progress, 30);
  } finally {
    a.close();
    b.close();
  }
});

test('a bad or missing token is refused with CONNECT_ERROR unauthorized', async () => {
  for (const auth of [{ token: 'btp_forged', clientSessionId: 'x' }, {}]) {
    const socket = io(sys.url, { auth, transports: ['websocket'], reconnection: false });
    const err = await new Promise((resolve) => socket.once('connect_error', resolve));
    assert.equal(err.message, 'unauthorized');
    socket.close();
  }
});

test('the default transport upgrades from polling to WebSocket through the gateway', async () => {
  const u = await register(sys.url, 'upgrade');
  const a = await device(sys.url, u.token, 'upgrade-a');
  const b = await device(sys.url, u.token, 'upgrade-b', { transports: ['websocket'] });
  try {
    await eventually(() => a.io.engine.transport.name === 'websocket', 'the upgrade to websocket');
    await push(b, 'upgrade-b', [createOp('Après upgrade')]);
    await eventually(() => a.received.length === 1, 'the upgraded socket to receive the change');
  } finally {
    a.close();
    b.close();
  }
});

test('a device reconnecting with the same clientSessionId keeps receiving others changes and never its own', async () => {
  const u = await register(sys.url, 'reconnect');
  const a = await device(sys.url, u.token, 'reco-a', { transports: ['websocket'] });
  const b = await device(sys.url, u.token, 'reco-b', { transports: ['websocket'] });
  try {
    const reconnected = new Promise((resolve) => a.io.once('reconnect', resolve));
    a.io.engine.close(); // the network drops: the client reconnects by itself
    await reconnected;
    await push(b, 'reco-b', [createOp('Vu après reconnexion')]);
    await eventually(() => a.received.length === 1, 'the reconnected device to receive the change');
    await push(a, 'reco-a', [createOp('Envoyé après reconnexion')]);
    await eventually(() => b.received.length === 1, 'B to receive the reconnected device change');
    await sleep(300);
    assert.equal(a.received.length, 1, 'the reconnected device got its own echo');
  } finally {
    a.close();
    b.close();
  }
});

// One PostgreSQL cluster and one two-worker system for the multi-process tests.
let multiStarted = null;
function multiSystem() {
  multiStarted ??= (async () => {
    const pg = await startPostgres();
    try {
      const db = pg.createDatabase(`btp_js_${process.pid}`);
      const system = await startSystem({ name: 'realtime-two-workers', realtime: HEARTBEAT, workers: 2, databaseUrl: db });
      return { pg, system };
    } catch (err) {
      await pg.stop();
      throw err;
    }
  })();
  return multiStarted;
}
after(async () => {
  if (!multiStarted) return;
  const { pg, system } = await multiStarted;
  await system.stop();
  await pg.stop();
});

test('two API processes on PostgreSQL: a push on one reaches a socket on the other; polling stays on its process', async () => {
  const { system: multi } = await multiSystem();
  const u = await register(multi.url, 'multi');
  const worker0 = `http://127.0.0.1:${multi.apiPort}`;
  const worker1 = `http://127.0.0.1:${multi.apiPort + 1}`;
  const a = await device(worker0, u.token, 'multi-a', { transports: ['websocket'] });
  const b = await device(worker1, u.token, 'multi-b', { transports: ['websocket'] });
  // Polling sessions through the gateway: every request must reach the process that
  // owns the sid, or the session would fail with "Session ID unknown".
  const polling = await Promise.all([0, 1, 2, 3].map((i) => device(multi.url, u.token, `multi-poll-${i}`, { transports: ['polling'] })));
  try {
    const op = createOp('Entre processus');
    await push(a, 'multi-a', [op]);
    await eventually(() => b.received.length === 1, 'the socket on the other process to receive the change');
    assert.deepEqual(changedIds(b), [op.id]);
    await eventually(() => polling.every((p) => p.received.length === 1), 'every polling session behind the gateway to receive it');
    await sleep(300);
    assert.equal(a.received.length, 0, 'echo to the origin across processes');
    assert.ok(polling.every((p) => p.connected), 'a polling session was dropped');
  } finally {
    for (const s of [a, b, ...polling]) s.close();
  }
});

/** Resolves with (reason, ms after `since()`) when the socket is disconnected. */
function disconnection(socket, since) {
  return new Promise((resolve) => socket.once('disconnect', (reason) => resolve({ reason, after: Date.now() - since() })));
}

test('two API processes on PostgreSQL: logout and logout-all close the token\'s sockets on both within a second, and a push sent after is never applied', async () => {
  const { system: multi } = await multiSystem();
  const u = await register(multi.url, 'revoked');
  const stranger = await register(multi.url, 'stranger');
  const login = await fetch(`${multi.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: u.user.email, password: 'correct horse battery' }),
  });
  assert.equal(login.status, 200);
  const second = (await login.json()).token;
  const worker = (i) => `http://127.0.0.1:${multi.apiPort + i}`;
  const ws = { transports: ['websocket'] };
  const first0 = await device(worker(0), u.token, 'first-0', ws);
  const first1 = await device(worker(1), u.token, 'first-1', ws);
  const second0 = await device(worker(0), second, 'second-0', ws);
  const second1 = await device(worker(1), second, 'second-1', ws);
  const other = await device(worker(1), stranger.token, 'other', ws);
  const all = [first0, first1, second0, second1, other];
  try {
    let at = 0;
    const firstGone = [first0, first1].map((s) => disconnection(s, () => at));
    at = Date.now();
    const out = await fetch(`${multi.url}/api/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${u.token}` } });
    assert.equal(out.status, 204);
    at = Date.now();
    // Straight onto the wire of a revoked socket, past the client's own checks.
    const late = createOp('after logout');
    if (first1.io.engine) first1.io.engine.write(`21${JSON.stringify(['sync:push', { client_id: 'late', session_id: 'first-1', ops: [late] }])}`);
    for (const gone of await Promise.all(firstGone)) {
      assert.equal(gone.reason, 'io server disconnect');
      assert.ok(gone.after < 1000, `closed ${gone.after} ms after the logout`);
    }
    assert.ok(second0.connected && second1.connected && other.connected, 'another token\'s socket was closed');
    const pulled = await second1.timeout(5000).emitWithAck('sync:pull', { cursor: 0 });
    assert.ok(!pulled.changes.some((c) => c.id === late.id), 'a push sent after the logout was applied');

    const secondGone = [second0, second1].map((s) => disconnection(s, () => at));
    at = Date.now();
    const outAll = await fetch(`${multi.url}/api/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${second}` } });
    assert.equal(outAll.status, 204);
    at = Date.now();
    for (const gone of await Promise.all(secondGone)) {
      assert.equal(gone.reason, 'io server disconnect');
      assert.ok(gone.after < 1000, `closed ${gone.after} ms after logout-all`);
    }
    await sleep(200);
    assert.ok(other.connected, 'the other user\'s socket was closed');
    const mine = await fetch(`${multi.url}/api/projects`, { headers: { authorization: `Bearer ${second}` } });
    assert.equal(mine.status, 401);
  } finally {
    for (const s of all) s.close();
  }
});
