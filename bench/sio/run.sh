#!/usr/bin/env bash
# Realtime load benchmark: `btp up` (gateway + one API worker on SQLite) against the npm
# socket.io 4.8 server on Node 20, side by side in one run, on loopback.
#
# For each server and each N (default 1,000 and 10,000) a fresh server is started, then
# btp-bench-sio opens N Socket.IO clients over WebSocket as one user (distinct
# clientSessionIds), measures connect rate and memory per connection, and times 20
# broadcast rounds (one client pushes one op with `sync:push`, the N-1 others must each
# receive `sync:changes` once). btp is measured through its gateway (the product's
# number: RSS of gateway + API); the baseline is measured directly (it has no proxy in
# front), so a diagnostic row measures the btp API worker directly too. Same heartbeat
# everywhere: ping 25 s, timeout 60 s.
#
# The btp row is `btp up` as shipped: the gateway hands each WebSocket to its API worker
# (gateway.websocket_handoff), so the worker holds one descriptor per client and the
# gateway none. The btp-relay row turns that off and relays every frame through the
# gateway, which then holds 2 descriptors per client (client side + upstream side): with
# this machine's hard limit of 20,000 open files per process that row tops out a little
# under 10,000, so it is run with at most 9,000 clients.
#
# Usage: bench/sio/run.sh                 (from anywhere; prints a markdown table)
# Env:   CLIENTS="1000 10000" ROUNDS=20 CONCURRENCY=128 SKIP_BUILD=1
#        SERVERS="btp btp-relay btp-direct node"
#        GATEWAY_THREADS=N (gateway.threads of the btp rows; unset: the default, one per core)
#        CARGO_TARGET_DIR (where cargo builds), BTP=path/to/btp (measure that binary instead)
# Needs: cargo, node >= 20, npm, curl, python3. Writes bench/out/sio.md as well.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLIENTS="${CLIENTS:-1000 10000}"
ROUNDS="${ROUNDS:-20}"
CONCURRENCY="${CONCURRENCY:-128}"
SERVERS="${SERVERS:-btp btp-relay btp-direct node}"
GATEWAY_THREADS="${GATEWAY_THREADS:-}"   # gateway.threads if set (unset: the default, one per core)
PING_INTERVAL_MS=25000
PING_TIMEOUT_MS=60000
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BTP="${BTP:-$TARGET/release/btp}"
BENCH="${BENCH:-$TARGET/release/btp-bench-sio}"
BASELINE="$ROOT/bench/sio/node-baseline"

for tool in cargo node npm curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [[ "${SKIP_BUILD:-}" != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p btp -p btp-bench-sio) >&2
fi
if [[ ! -d "$BASELINE/node_modules/socket.io" ]]; then
    (cd "$BASELINE" && npm ci --no-audit --no-fund) >&2
fi
# Servers and the tool inherit this; the tool and btp also raise their own soft limit.
ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d /tmp/btp-bench-sio.XXXXXX)"
SERVER_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # url, what, log
    for _ in $(seq 1 300); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "$2 did not come up ($1); log:" >&2
    tail -n 30 "$3" >&2 || true
    exit 1
}

# Starts `btp up` on fresh ports and a fresh SQLite file; sets SERVER_PID, ADDR (the
# gateway), API_ADDR and API_PID (the API worker, a child of `btp up`).
start_btp() { # run-name [extra [gateway] line]
    local dir="$WORK/$1" gw admin api
    mkdir -p "$dir/data"
    gw="$(free_port)"; admin="$(free_port)"; api="$(free_port)"
    cat >"$dir/config.toml" <<EOF
[gateway]
listen = "127.0.0.1:$gw"
admin_listen = "127.0.0.1:$admin"
pid_file = "data/btp.pid"
${GATEWAY_THREADS:+threads = $GATEWAY_THREADS}
${2:-}

[static]
root = "$ROOT/static"

[api]
listen = "127.0.0.1:$api"
workers = 1

[database]
url = "sqlite://data/bench.db"

[realtime]
ping_interval_ms = $PING_INTERVAL_MS
ping_timeout_ms = $PING_TIMEOUT_MS

[log]
level = "warn"
EOF
    "$BTP" up --config "$dir/config.toml" >"$dir/btp.log" 2>&1 &
    SERVER_PID=$!
    ADDR="127.0.0.1:$gw"
    wait_for "http://127.0.0.1:$admin/readyz" "btp gateway" "$dir/btp.log"
    wait_for "http://$ADDR/api/health" "btp api (through the gateway)" "$dir/btp.log"
    API_ADDR="127.0.0.1:$api"
    API_PID="$(cat /proc/"$SERVER_PID"/task/*/children | awk '{ if (!p && NF) p = $1 } END { print p }')"
    [[ -n "$API_PID" ]] || { echo "btp up has no API worker process" >&2; exit 1; }
}

# Starts the Node baseline on a fresh port; sets SERVER_PID and ADDR.
start_node() { # run-name
    local dir="$WORK/$1" port
    mkdir -p "$dir"
    port="$(free_port)"
    node "$BASELINE/server.mjs" --port "$port" \
        --ping-interval "$PING_INTERVAL_MS" --ping-timeout "$PING_TIMEOUT_MS" >"$dir/node.log" 2>&1 &
    SERVER_PID=$!
    ADDR="127.0.0.1:$port"
    # Wait for its `listening` line rather than probing, which would open a session.
    for _ in $(seq 1 300); do
        grep -q '^listening' "$dir/node.log" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "node baseline did not come up; log:" >&2
    tail -n 30 "$dir/node.log" >&2 || true
    exit 1
}

ROWS=()
for server in $SERVERS; do
    for n in $CLIENTS; do
        run="$server-$n"
        case "$server" in
            btp)
                start_btp "$run"
                label="btp (gateway + API)"
                auth=(--register-url "http://$ADDR")
                measured="$SERVER_PID"
                ;;
            btp-relay)
                # The same, with every frame relayed through the gateway.
                (( n > 9000 )) && n=9000
                start_btp "$run" "websocket_handoff = false"
                label="btp, relayed (gateway.websocket_handoff = false)"
                auth=(--register-url "http://$ADDR")
                measured="$SERVER_PID"
                ;;
            btp-direct)
                # Diagnostic: the API's Socket.IO server without the gateway in front,
                # like for like with the baseline (which has no proxy either).
                start_btp "$run"
                label="btp API only (no gateway)"
                ADDR="$API_ADDR"
                auth=(--register-url "http://$ADDR")
                measured="$API_PID"
                ;;
            node)
                start_node "$run"
                label="socket.io 4.8 (Node $(node --version))"
                auth=(--token "bench-user")
                measured="$SERVER_PID"
                ;;
            *) echo "unknown server $server" >&2; exit 1 ;;
        esac
        echo "== $label, N = $n" >&2
        # Bounded: connects time out per client, rounds per round; this caps the whole run.
        if row="$(timeout 900 "$BENCH" --addr "$ADDR" "${auth[@]}" --clients "$n" --rounds "$ROUNDS" \
            --concurrency "$CONCURRENCY" --server-pid "$measured" --label "$label")"; then
            ROWS+=("$row")
        else
            ROWS+=("| $label | $n | run failed (see stderr) | | | | | | |")
        fi
        stop_server
    done
done

{
    echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r), Node $(node --version), $ROUNDS rounds, heartbeat ${PING_INTERVAL_MS}/${PING_TIMEOUT_MS} ms"
    echo
    echo "| server | N | connect rate | RSS/conn | p50 | p99 | max | delivered | CPU per round, server + tool |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${ROWS[@]}"
} | tee "$WORK/table.md"
mkdir -p "$ROOT/bench/out"
cp "$WORK/table.md" "$ROOT/bench/out/sio.md"
