// Baseline for bench/sio: the npm `socket.io` 4.8 server with the product's realtime
// contract reduced to what the benchmark exercises — handshake auth {token,
// clientSessionId}, one room per user, `sync:push` acked with {acks, cursor, from}, and
// `sync:changes {from, to, changes}` fanned out to the user's other sessions, never to
// the sender's. There is no database, no validation and no token lookup (a token names
// its user), so it does strictly less work per message than the API it is compared with.
//
// Usage: node server.mjs --port 0 [--ping-interval 25000] [--ping-timeout 60000]
// Prints `listening <port>` on stdout once it accepts connections; stops on SIGTERM/SIGINT.

import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { Server } from "socket.io";

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}

const port = option("port", 0);
const pingInterval = option("ping-interval", 25000);
const pingTimeout = option("ping-timeout", 60000);

const httpServer = createServer();
const io = new Server(httpServer, {
  path: "/socket.io/",
  pingInterval,
  pingTimeout,
  connectTimeout: 45000,
  maxHttpBufferSize: 1_000_000,
  cors: { origin: ["app://btp", "null"] },
});

// Per-user change counter, standing in for the database's per-user seq.
const seqs = new Map();

io.use((socket, next) => {
  const { token, clientSessionId } = socket.handshake.auth ?? {};
  if (typeof token !== "string" || token.length === 0) {
    return next(new Error("unauthorized"));
  }
  socket.data.user = token;
  socket.data.session =
    typeof clientSessionId === "string" && clientSessionId.length > 0
      ? clientSessionId
      : `sio-${randomUUID()}`;
  next();
});

io.on("connection", (socket) => {
  const { user, session } = socket.data;
  socket.join(`user:${user}`);
  socket.join(`session:${session}`);

  socket.on("sync:push", (body, ack) => {
    const ops = Array.isArray(body?.ops) ? body.ops : [];
    const origin = typeof body?.session_id === "string" ? body.session_id : session;
    const from = seqs.get(user) ?? 0;
    let seq = from;
    const now = new Date().toISOString();
    const acks = [];
    const changes = [];
    for (const op of ops) {
      seq += 1;
      acks.push({ op_id: op?.op_id, status: "applied", seq });
      changes.push({
        id: op?.id,
        seq,
        name: op?.data?.name ?? "",
        client: "",
        city: "",
        budget_centimes: 0,
        status: op?.data?.status ?? "planned",
        start_date: null,
        end_date: null,
        progress: 0,
        notes: "",
        created_at: now,
        updated_at: now,
        deleted_at: null,
      });
    }
    seqs.set(user, seq);
    if (typeof ack === "function") {
      ack({ acks, cursor: seq, from });
    }
    if (changes.length > 0) {
      socket
        .to(`user:${user}`)
        .except(`session:${origin}`)
        .emit("sync:changes", { from, to: seq, changes });
    }
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});

function stop() {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
