#!/usr/bin/env bash
# Gateway vs Debian nginx, side by side, on loopback.
#
# Both serve the same copy of static/ with gzip, and proxy /api/ to the same upstream
# (a real `btp api` worker on a throw-away SQLite file). wrk measures, per scenario,
# requests/s and p99 latency for:
#   static  - a small static file (favicon.svg, Accept-Encoding: gzip)
#   spa     - index.html through the SPA fallback (GET /projects/42, Accept: text/html)
#   api     - a proxied GET /api/health
# Access logs are off on both sides (they measure disk, not the proxy).
#
# Each scenario is measured ROUNDS times, gateway and nginx alternating, and the table
# gives the median of each column: on a shared 2-core machine one run of either side can
# land on a burst of someone else's work.
#
# Usage: bench/gateway/run.sh            (from the repository root)
# Env:   DURATION=10s CONNECTIONS=64 THREADS=2 ROUNDS=3 BTP=target/release/btp
#        SCENARIOS="static spa api"
#        GATEWAY_CONFIG="api_fast_path = false"   (extra lines for the gateway's [gateway])
# Needs: nginx (apt-get install -y nginx-light), wrk, python3, a release build of btp.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
SCENARIOS="${SCENARIOS:-static spa api}"   # any of: static spa api
for scenario in $SCENARIOS; do
    case "$scenario" in
        static | spa | api) ;;
        *) echo "bench: unknown scenario '$scenario' (SCENARIOS takes static, spa, api)" >&2; exit 2 ;;
    esac
done
BTP="${BTP:-$ROOT/target/release/btp}"
GATEWAY_CONFIG="${GATEWAY_CONFIG:-}"

for tool in nginx wrk python3 curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx-light wrk python3 curl)" >&2; exit 1; }
done
if [[ ! -x "$BTP" ]]; then
    echo "building btp (release)..." >&2
    (cd "$ROOT" && cargo build --release -p btp) >&2
fi

WORK="$(mktemp -d /tmp/btp-bench-gateway.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
GW_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"; API_PORT="$(free_port)"; NGINX_PORT="$(free_port)"

cp -r "$ROOT/static" "$WORK/static"
chmod -R a+rX "$WORK/static"

cat >"$WORK/config.toml" <<EOF
[gateway]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
$GATEWAY_CONFIG

[static]
root = "static"

[api]
listen = "127.0.0.1:$API_PORT"
workers = 1

[database]
url = "sqlite://data/bench.db"

[log]
level = "warn"
EOF
mkdir -p "$WORK/data"

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    gzip on;
    gzip_types text/css application/javascript text/javascript application/json image/svg+xml;
    gzip_min_length 0;
    gzip_vary on;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    upstream api { server 127.0.0.1:$API_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/static;
        location / {
            try_files \$uri \$uri/ /index.html;
            add_header X-Content-Type-Options nosniff;
        }
        location = /index.html { add_header Cache-Control no-cache; }
        location /api/ {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF

"$BTP" api --worker 0 --config "$WORK/config.toml" >"$WORK/api.log" 2>&1 &
PIDS+=($!)
"$BTP" gateway --config "$WORK/config.toml" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
PIDS+=($!)

wait_for() { # url, what
    for _ in $(seq 1 200); do
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$2 did not come up ($1); logs:" >&2
    tail -n 20 "$WORK"/*.log "$WORK/nginx/logs/error.log" >&2 || true
    exit 1
}
wait_for "http://127.0.0.1:$API_PORT/api/health" "btp api"
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz" "btp gateway"
wait_for "http://127.0.0.1:$NGINX_PORT/index.html" "nginx"

# Both sides must answer each scenario the same way before they are timed.
check() { # port path accept-header expected-status
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $3" -H 'Accept-Encoding: gzip' "http://127.0.0.1:$1$2")"
    [[ "$code" == "$4" ]] || { echo "port $1 $2 answered $code, expected $4" >&2; exit 1; }
}

declare -A PATHS=([static]="/favicon.svg" [spa]="/projects/42" [api]="/api/health")
declare -A ACCEPT=([static]="*/*" [spa]="text/html" [api]="application/json")

# wrk --latency output -> "requests/s p99_ms"
measure() { # port scenario
    local out rps p99
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -H "Accept: ${ACCEPT[$2]}" -H 'Accept-Encoding: gzip' \
        "http://127.0.0.1:$1${PATHS[$2]}")"
    rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    echo "$rps $(to_ms "$p99")"
}
to_ms() { # wrk prints 1.23ms / 850.00us / 1.02s
    python3 -c 'import sys,re
v=sys.argv[1]; m=re.match(r"([0-9.]+)(us|ms|s)$", v)
n=float(m.group(1)) if m else float("nan"); u=m.group(2) if m else "ms"
print("%.2f" % (n/1000 if u=="us" else n*1000 if u=="s" else n))' "$1"
}

median() { # numbers... -> their median
    python3 -c 'import sys,statistics; print("%.2f" % statistics.median(map(float, sys.argv[1:])))' "$@"
}

printf '\nwrk -t%s -c%s -d%s, loopback, %s cores (wrk shares them), median of %s rounds\n\n' \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$(nproc)" "$ROUNDS"
printf '| %-8s | %14s | %14s | %7s | %13s | %13s |\n' scenario "gateway req/s" "nginx req/s" ratio "gateway p99" "nginx p99"
printf '|%s|%s|%s|%s|%s|%s|\n' ---------- ---------------- ---------------- --------- --------------- ---------------
for scenario in $SCENARIOS; do
    expected=200
    check "$GW_PORT" "${PATHS[$scenario]}" "${ACCEPT[$scenario]}" "$expected"
    check "$NGINX_PORT" "${PATHS[$scenario]}" "${ACCEPT[$scenario]}" "$expected"
    g_rps=(); g_p99=(); n_rps=(); n_p99=()
    for _ in $(seq 1 "$ROUNDS"); do
        read -r rps p99 <<<"$(measure "$GW_PORT" "$scenario")"
        g_rps+=("$rps"); g_p99+=("$p99")
        read -r rps p99 <<<"$(measure "$NGINX_PORT" "$scenario")"
        n_rps+=("$rps"); n_p99+=("$p99")
    done
    echo "  $scenario rounds: gateway ${g_rps[*]} req/s, p99 ${g_p99[*]} ms; nginx ${n_rps[*]} req/s, p99 ${n_p99[*]} ms" >&2
    g="$(median "${g_rps[@]}")"; n="$(median "${n_rps[@]}")"
    ratio="$(python3 -c "print('%.2f' % (float('$g')/float('$n')))")"
    printf '| %-8s | %14s | %14s | %6sx | %10s ms | %10s ms |\n' \
        "$scenario" "$g" "$n" "$ratio" "$(median "${g_p99[@]}")" "$(median "${n_p99[@]}")"
done
echo
