#!/usr/bin/env bash
# What a socket keeps after one large message: starts one `btp api` worker on a throw-away
# SQLite file (127.0.0.1, ephemeral port), runs retained.py against it, stops it.
# Usage: bench/sio/retained.sh     Env: CLIENTS=1000 SIZE=200000 BTP=target/release/btp
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLIENTS="${CLIENTS:-1000}"
SIZE="${SIZE:-200000}"
BTP="${BTP:-$ROOT/target/release/btp}"
[[ -x "$BTP" ]] || (cd "$ROOT" && cargo build --release -p btp) >&2
ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d /tmp/btp-bench-retained.XXXXXX)"
API_PID=""
cleanup() {
    [[ -n "$API_PID" ]] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
mkdir -p "$WORK/data"
cat >"$WORK/config.toml" <<TOML
[gateway]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:1"

[static]
root = "$ROOT/static"

[api]
listen = "127.0.0.1:$port"

[database]
url = "sqlite://data/bench.db"

[log]
level = "warn"
TOML
"$BTP" api --worker 0 --config "$WORK/config.toml" >"$WORK/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/api/health" 2>/dev/null && break
    sleep 0.1
done
timeout 300 python3 "$ROOT/bench/sio/retained.py" 127.0.0.1 "$port" "$API_PID" "$CLIENTS" "$SIZE"
