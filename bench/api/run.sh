#!/usr/bin/env bash
# Sync benchmark: push throughput (batches of 100 ops) and 10k-project snapshot time, on
# SQLite and on a throw-away PostgreSQL 15 cluster started here (stopped on exit).
# Usage: bash bench/api/run.sh            (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_BIN=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/btp-bench-pg.XXXXXX)
cleanup() {
    if [ -f "$dir/data/postmaster.pid" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

cargo build --release -p btp-api --example bench_sync

if [ -x "$PG_BIN/postgres" ]; then
    chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
    # Default durable settings (fsync and synchronous_commit on): numbers a deployment gets.
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c shared_buffers=256MB" start >/dev/null
    runuser -u postgres -- "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres bench
    export BTP_BENCH_PG_URL="postgres://postgres@127.0.0.1:$port/bench"
else
    echo "PostgreSQL 15 binaries not found; SQLite only" >&2
fi

./target/release/examples/bench_sync
