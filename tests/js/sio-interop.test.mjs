// Interop of the btp-sio server with the real npm socket.io-client 4.8.
//
// Runs the `echo` example (the standard protocol harness built only on btp-sio) on a
// free loopback port. Path of the binary: $BTP_ECHO_BIN, default
// ../../target/debug/examples/echo (build it with `cargo build -p btp-sio --example echo`).
// Run: node --test sio-interop.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { io } from "socket.io-client";

const here = path.dirname(fileURLToPath(import.meta.url));
const ECHO_BIN =
  process.env.BTP_ECHO_BIN ?? path.resolve(here, "../../target/debug/examples/echo");
const DEADLINE_MS = 10_000;

let server;
let url;

function startEcho(port) {
  return new Promise((resolve, reject) => {
    const child = spawn(ECHO_BIN, ["--port", String(port)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    const timer = setTimeout(() => reject(new Error("echo did not start")), DEADLINE_MS);
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const match = out.match(/listening on ([\d.]+):(\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve({ child, port: Number(match[2]) });
      }
    });
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`echo exited with ${code}`)));
  });
}

function stopEcho(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGINT");
  });
}

function once(emitter, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ${event} within ${DEADLINE_MS} ms`)),
      DEADLINE_MS,
    );
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

function client(nsp, options) {
  return io(url + nsp, { forceNew: true, reconnectionDelay: 100, ...options });
}

before(async () => {
  assert.ok(existsSync(ECHO_BIN), `echo binary not found at ${ECHO_BIN}`);
  server = await startEcho(0);
  url = `http://127.0.0.1:${server.port}`;
});

after(async () => {
  if (server) await stopEcho(server.child);
});

async function roundTrips(socket, auth) {
  const [authArg] = await once(socket, "auth");
  assert.deepEqual(authArg, auth);
  socket.emit("message", 1, "2", { 3: [true] });
  const back = await once(socket, "message-back");
  assert.deepEqual(back, [1, "2", { 3: [true] }]);
  const acked = await socket.timeout(DEADLINE_MS).emitWithAck("message-with-ack", "x", { y: 1 });
  assert.equal(acked, "x");
}

for (const transports of [["websocket"], ["polling"]]) {
  test(`${transports[0]}-only client connects, emits and gets acks`, async () => {
    const auth = { token: "t", clientSessionId: `only-${transports[0]}` };
    const socket = client("/", { transports, auth });
    try {
      await roundTrips(socket, auth);
      assert.equal(socket.io.engine.transport.name, transports[0]);
    } finally {
      socket.close();
    }
  });
}

test("default client upgrades from polling to websocket", async () => {
  const auth = { clientSessionId: "upgrader" };
  const socket = client("/", { auth });
  try {
    let firstTransport;
    const upgraded = new Promise((resolve) => {
      socket.io.once("open", () => {
        firstTransport = socket.io.engine.transport.name;
        socket.io.engine.once("upgrade", resolve);
      });
    });
    assert.deepEqual((await once(socket, "auth"))[0], auth);
    await upgraded;
    assert.equal(firstTransport, "polling");
    assert.equal(socket.io.engine.transport.name, "websocket");
    socket.emit("message", "after upgrade");
    assert.deepEqual(await once(socket, "message-back"), ["after upgrade"]);
  } finally {
    socket.close();
  }
});

for (const transports of [["websocket"], ["polling"]]) {
  test(`binary arguments and binary acks over ${transports[0]}`, async () => {
    const socket = client("/", { transports });
    try {
      await once(socket, "connect");
      socket.emit("message", Buffer.from([1, 2, 3]), { nested: Buffer.from([4]) });
      const [bin, obj] = await once(socket, "message-back");
      assert.deepEqual([...bin], [1, 2, 3]);
      assert.deepEqual([...obj.nested], [4]);
      const acked = await socket
        .timeout(DEADLINE_MS)
        .emitWithAck("message-with-ack", Buffer.from([9, 8]));
      assert.deepEqual([...acked], [9, 8]);
    } finally {
      socket.close();
    }
  });
}

test("server-side emit with ack gets the client's answer", async () => {
  const socket = client("/", { transports: ["websocket"] });
  try {
    await once(socket, "connect");
    let asked = 0;
    socket.on("emit-with-ack", (...args) => {
      const callback = args.pop();
      if (typeof callback === "function") {
        asked += 1;
        callback("answer", ...args);
      }
    });
    const reply = new Promise((resolve) => {
      socket.on("emit-with-ack", (...args) => {
        if (typeof args[args.length - 1] !== "function") resolve(args);
      });
    });
    socket.emit("emit-with-ack", 7);
    assert.deepEqual(await reply, ["answer", 7]);
    assert.equal(asked, 1);
  } finally {
    socket.close();
  }
});

test("custom namespace connects and unknown namespace is refused", async () => {
  const custom = client("/custom", { transports: ["websocket"], auth: { a: 1 } });
  const random = client("/random", { transports: ["websocket"] });
  // Listen on both before awaiting either: the refusal may arrive first.
  const authed = once(custom, "auth");
  const refused = once(random, "connect_error");
  try {
    assert.deepEqual((await authed)[0], { a: 1 });
    const [error] = await refused;
    assert.equal(error.message, "Invalid namespace");
  } finally {
    custom.close();
    random.close();
  }
});

test("client reconnects with the same auth after a graceful server restart", async () => {
  const auth = { token: "t", clientSessionId: "reconnector" };
  const socket = client("/", { transports: ["websocket"], auth });
  try {
    await roundTrips(socket, auth);
    const firstId = socket.id;
    const disconnected = once(socket, "disconnect");
    await stopEcho(server.child);
    const [reason] = await disconnected;
    // An Engine.IO close (not a Socket.IO DISCONNECT) keeps auto-reconnect on.
    assert.notEqual(reason, "io server disconnect");
    const reconnected = once(socket, "auth");
    server = await startEcho(server.port);
    assert.deepEqual((await reconnected)[0], auth);
    assert.ok(socket.connected);
    assert.notEqual(socket.id, firstId);
    socket.emit("message", "again");
    assert.deepEqual(await once(socket, "message-back"), ["again"]);
  } finally {
    socket.close();
  }
});
