#!/usr/bin/env bash
# Gateway vs Debian nginx, side by side, on loopback.
#
# Both serve the same static/ (the gateway precompresses it in memory; nginx gets `.gz`
# copies made with `gzip -k -9` and serves them with gzip_static), and proxy /api/ to the
# same upstream (a real `btp api` worker on a throw-away SQLite file) over kept-alive
# HTTP/1.1 connections. Both listen on plain HTTP and on HTTPS (the certificate and key of
# `btp certs`, TLS 1.2/1.3, ALPN h2 and http/1.1). Scenarios:
#   static      GET /favicon.svg, Accept-Encoding: gzip (a small precompressed file);
#               HTTP/1.1 keep-alive, wrk
#   spa         GET /projects/42, Accept: text/html (index.html through the SPA fallback);
#               HTTP/1.1 keep-alive, wrk
#   api         GET /api/health, proxied; HTTP/1.1 keep-alive, wrk
#   pull        POST /api/sync/pull, body {"cursor":0}, Authorization: Bearer <token of a
#               user registered once before measuring>, proxied; HTTP/1.1 keep-alive, wrk
#               with bench/gateway/pull.lua
#   tls-static  static over HTTPS, HTTP/1.1 keep-alive, wrk
#   tls-api     api over HTTPS, HTTP/1.1 keep-alive, wrk
#   tls-new     static over HTTPS with `Connection: close`: the server closes after every
#               response and wrk opens a new TLS connection for the next request (wrk keeps
#               the session of its previous connection, so servers that allow resumption
#               get resumed handshakes; the script prints which side resumes)
#   h2-static   static over HTTP/2 (TLS, ALPN h2), h2load -c CONNECTIONS -m H2_STREAMS
#   h2-api      api over HTTP/2, h2load -c CONNECTIONS -m H2_STREAMS
# Access logs are off on both sides (they measure disk, not the proxy).
#
# Columns: requests/s (wrk's Requests/sec, h2load's req/s), p99 latency (wrk --latency;
# for h2load the 99th percentile of the per-request times of its --log-file), and CPU per
# request: utime+stime of the gateway process (nginx: master plus workers) from
# /proc/PID/stat before and after the run, divided by the requests that run completed
# (wrk's "N requests in", h2load's "N done"). The API worker is shared by both sides and
# not counted. Both sides must answer each scenario with 200, over the same HTTP version
# and with the same Content-Encoding, before it is timed; a side that then fails requests
# or answers errors during a run gets a warning and a "!" in the table.
#
# Each scenario is measured ROUNDS times, gateway and nginx alternating, and the table
# gives the median of each column: on a shared 2-core machine one run of either side can
# land on a burst of someone else's work.
#
# Usage: bench/gateway/run.sh            (from the repository root)
# Env:   DURATION=10s CONNECTIONS=64 THREADS=2 ROUNDS=3 BTP=target/release/btp
#        H2_STREAMS=10                    (h2load -m: concurrent streams per connection)
#        SCENARIOS="static spa api pull tls-static tls-api tls-new h2-static h2-api" (default: all)
#        GATEWAY_CONFIG="..."             (extra lines for the gateway's [gateway])
# Needs: nginx with http_ssl, http_v2 and gzip_static (apt-get install -y nginx-light),
#        wrk, h2load (nghttp2-client), curl, python3, pgrep (procps), timeout
#        (coreutils), a release build of btp.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/gateway"
ALL_SCENARIOS="static spa api pull tls-static tls-api tls-new h2-static h2-api"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
H2_STREAMS="${H2_STREAMS:-10}"
SCENARIOS="${SCENARIOS:-$ALL_SCENARIOS}"
for scenario in $SCENARIOS; do
    case " $ALL_SCENARIOS " in
        *" $scenario "*) ;;
        *) echo "bench: unknown scenario '$scenario' (SCENARIOS takes ${ALL_SCENARIOS// /, })" >&2; exit 2 ;;
    esac
done
[[ -n "${SCENARIOS// /}" ]] || { echo "bench: SCENARIOS is empty" >&2; exit 2; }
# wrk and h2load both get the duration; accept what both understand: N, Ns, Nm, Nh.
if [[ ! "$DURATION" =~ ^0*([1-9][0-9]*)([smh]?)$ ]]; then
    echo "bench: DURATION '$DURATION' is not a positive whole number of seconds, minutes or hours (10s, 1m)" >&2
    exit 2
fi
case "${BASH_REMATCH[2]}" in
    m) DURATION_S=$((BASH_REMATCH[1] * 60)) ;;
    h) DURATION_S=$((BASH_REMATCH[1] * 3600)) ;;
    *) DURATION_S=$((BASH_REMATCH[1])) ;;
esac
for var in CONNECTIONS THREADS ROUNDS H2_STREAMS; do
    [[ "${!var}" =~ ^[1-9][0-9]*$ ]] || { echo "bench: $var='${!var}' is not a positive integer" >&2; exit 2; }
done
# Every load is bounded: the tool's own duration plus this much for start-up and drain.
LOAD_LIMIT_S=$((DURATION_S + 30))
BTP="${BTP:-$ROOT/target/release/btp}"
GATEWAY_CONFIG="${GATEWAY_CONFIG:-}"

for tool in nginx wrk h2load python3 curl pgrep timeout gzip getconf; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool (apt-get install -y nginx-light wrk nghttp2-client python3 curl procps coreutils gzip)" >&2
        exit 1
    }
done
NGINX_BUILD="$(nginx -V 2>&1)"
for module in http_ssl_module http_v2_module http_gzip_static_module; do
    [[ "$NGINX_BUILD" == *"--with-$module"* ]] || {
        echo "this nginx lacks $module (nginx -V); install Debian's nginx-light or nginx" >&2
        exit 1
    }
done
CLK_TCK="$(getconf CLK_TCK)"
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
GW_PORT="$(free_port)"; GW_TLS_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"; API_PORT="$(free_port)"
NGINX_PORT="$(free_port)"; NGINX_TLS_PORT="$(free_port)"

"$BTP" certs --dir "$WORK/certs" >/dev/null
chmod -R a+rX "$WORK/certs"

cp -r "$ROOT/static" "$WORK/static"
chmod -R a+rX "$WORK/static"
# nginx's copy gets the precompressed variants the gateway computes at load: gzip -9 of
# compressible types, kept only where smaller than the file itself.
cp -r "$ROOT/static" "$WORK/nginx-static"
find "$WORK/nginx-static" -type f \( -name '*.html' -o -name '*.css' -o -name '*.js' \
    -o -name '*.mjs' -o -name '*.json' -o -name '*.svg' -o -name '*.xml' -o -name '*.txt' \
    -o -name '*.ico' -o -name '*.wasm' -o -name '*.ttf' -o -name '*.otf' -o -name '*.map' \) \
    -print0 | while IFS= read -r -d '' file; do
        gzip -k -9 -n "$file"
        if (( $(stat -c %s "$file.gz") >= $(stat -c %s "$file") )); then rm -f "$file.gz"; fi
    done
chmod -R a+rX "$WORK/nginx-static"

cat >"$WORK/config.toml" <<EOF
[gateway]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
tls_listen = "127.0.0.1:$GW_TLS_PORT"
tls_cert = "$WORK/certs/dev.crt"
tls_key = "$WORK/certs/dev.key"
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
# The security headers the gateway puts on every response (gateway/src/respond.rs),
# HSTS over TLS only: nginx sends the same ones, static and proxied. (add_header is not
# inherited by a location that has its own, so each location includes them.)
cat >"$WORK/nginx/security.conf" <<'EOF'
add_header X-Content-Type-Options nosniff always;
add_header Referrer-Policy no-referrer always;
add_header X-Frame-Options DENY always;
add_header Content-Security-Policy "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'" always;
add_header Strict-Transport-Security $hsts always;
EOF
# What both nginx servers (plain and TLS) serve: the same as the gateway's routes.
cat >"$WORK/nginx/site.conf" <<EOF
root $WORK/nginx-static;
location / {
    try_files \$uri \$uri/ /index.html;
    include $WORK/nginx/security.conf;
}
location = /index.html {
    add_header Cache-Control no-cache;
    include $WORK/nginx/security.conf;
}
location /api/ {
    include $WORK/nginx/security.conf;
    proxy_pass http://api;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$host;
    proxy_set_header X-Forwarded-For \$remote_addr;
    proxy_set_header X-Forwarded-Proto \$scheme;
}
EOF
# nginx 1.22 takes HTTP/2 as a listen parameter (`http2 on;` came in 1.25.1).
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
    # Precompressed files only, like the gateway, which never compresses on the fly (a
    # proxied response passes as the worker sent it).
    gzip_static on;
    gzip_vary on;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    # An empty value sends no header: HSTS over HTTPS only, as the gateway.
    map \$scheme \$hsts { https "max-age=63072000; includeSubDomains"; default ""; }
    upstream api { server 127.0.0.1:$API_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        include $WORK/nginx/site.conf;
    }
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $WORK/certs/dev.crt;
        ssl_certificate_key $WORK/certs/dev.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        include $WORK/nginx/site.conf;
    }
}
EOF

"$BTP" api --worker 0 --config "$WORK/config.toml" >"$WORK/api.log" 2>&1 &
PIDS+=($!)
"$BTP" gateway --config "$WORK/config.toml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

wait_for() { # url, what
    for _ in $(seq 1 200); do
        if curl -kfsS --max-time 2 -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$2 did not come up ($1); logs:" >&2
    tail -n 20 "$WORK"/*.log "$WORK/nginx/logs/error.log" >&2 || true
    exit 1
}
wait_for "http://127.0.0.1:$API_PORT/api/health" "btp api"
wait_for "http://127.0.0.1:$ADMIN_PORT/readyz" "btp gateway"
wait_for "https://127.0.0.1:$GW_TLS_PORT/index.html" "btp gateway (TLS)"
wait_for "http://127.0.0.1:$NGINX_PORT/index.html" "nginx"
wait_for "https://127.0.0.1:$NGINX_TLS_PORT/index.html" "nginx (TLS)"

TOKEN=""
if [[ " $SCENARIOS " == *" pull "* ]]; then
    # One user for the pull scenario, registered directly at the worker.
    TOKEN="$(curl -fsS --max-time 10 -H 'Content-Type: application/json' \
        --data-binary '{"email":"bench@bench.invalid","password":"bench-password-1","name":"Bench"}' \
        "http://127.0.0.1:$API_PORT/api/auth/register" |
        python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')" || {
        echo "bench: could not register the pull scenario's user at the API worker" >&2
        exit 1
    }
fi

declare -A PATHS=([static]="/favicon.svg" [spa]="/projects/42" [api]="/api/health"
    [pull]="/api/sync/pull" [tls-static]="/favicon.svg" [tls-api]="/api/health"
    [tls-new]="/favicon.svg" [h2-static]="/favicon.svg" [h2-api]="/api/health")
declare -A ACCEPT=([static]="*/*" [spa]="text/html" [api]="application/json"
    [pull]="application/json" [tls-static]="*/*" [tls-api]="application/json"
    [tls-new]="*/*" [h2-static]="*/*" [h2-api]="application/json")

is_tls() { [[ "$1" == tls-* || "$1" == h2-* ]]; }
url() { # side scenario -> the URL the scenario loads on that side
    local port
    case "$1:$(is_tls "$2" && echo tls || echo plain)" in
        gateway:plain) port=$GW_PORT ;;
        gateway:tls) port=$GW_TLS_PORT ;;
        nginx:plain) port=$NGINX_PORT ;;
        nginx:tls) port=$NGINX_TLS_PORT ;;
    esac
    echo "$(is_tls "$2" && echo https || echo http)://127.0.0.1:$port${PATHS[$2]}"
}

# Both sides must answer each scenario the same way before they are timed: the status,
# the HTTP version, the Content-Encoding (so gzip_static is known to work) and the
# security headers.
check() { # url expected-status expected-http-version curl-args... -> "encoding headers..."
    local url=$1 status=$2 version=$3 out code got encoding security
    shift 3
    out="$(curl -ks --max-time 10 -o /dev/null -D "$WORK/check.headers" \
        -w '%{http_code} %{http_version}' "$@" "$url")" || true
    read -r code got <<<"$out"
    [[ "$code" == "$status" && "$got" == "$version" ]] || {
        echo "$url answered status '$code' over HTTP/'$got', expected $status over HTTP/$version" >&2
        exit 1
    }
    encoding="$(tr -d '\r' <"$WORK/check.headers" | awk 'tolower($1) == "content-encoding:" {print $2}')"
    # And the same security headers (names; HSTS over TLS only).
    security="$(tr -d '\r' <"$WORK/check.headers" | awk '{h = tolower($1)}
        h ~ /^(x-content-type-options|referrer-policy|x-frame-options|content-security-policy|strict-transport-security):$/ {print h}' \
        | sort | tr '\n' ' ')"
    echo "${encoding:-identity} $security"
}
check_scenario() { # scenario: both sides, same status, protocol and encoding
    local args=(-H "Accept: ${ACCEPT[$1]}" -H 'Accept-Encoding: gzip') version=1.1 g n
    case "$1" in
        pull) args+=(-X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json'
            --data-binary '{"cursor":0}') ;;
        tls-new) args+=(-H 'Connection: close') ;;
    esac
    case "$1" in
        h2-*) args+=(--http2); version=2 ;;
        *) args+=(--http1.1) ;;
    esac
    g="$(check "$(url gateway "$1")" 200 "$version" "${args[@]}")"
    n="$(check "$(url nginx "$1")" 200 "$version" "${args[@]}")"
    [[ "$g" == "$n" ]] || {
        echo "$1: gateway answers with Content-Encoding and security headers '$g', nginx with '$n'; not comparable" >&2
        exit 1
    }
}

# CPU time (clock ticks) a side has used so far: utime + stime (fields 14 and 15 of
# /proc/PID/stat; each counts all threads of the process) summed over its processes.
side_pids() { # side -> pids
    if [[ "$1" == gateway ]]; then
        echo "$GW_PID"
    else
        echo "$NGINX_PID"
        pgrep -P "$NGINX_PID" || true
    fi
}
cpu_ticks() { # pids... -> ticks
    local pid stat fields total=0
    for pid in "$@"; do
        stat="$(<"/proc/$pid/stat")" || { echo "bench: process $pid is gone" >&2; exit 1; }
        stat="${stat##*) }"       # the command name may hold spaces; fields 3.. follow
        read -r -a fields <<<"$stat"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# One timed run of one scenario against one side; sets M_RPS, M_P99 (ms), M_REQS,
# M_CPU (µs of server CPU per completed request) and M_ERR (1 when some requests failed
# or were answered with an error status: the tool counts them as done all the same).
measure() { # side scenario
    local side=$1 scenario=$2 target out pids before after
    target="$(url "$side" "$scenario")"
    read -r -a pids <<<"$(side_pids "$side" | tr '\n' ' ')"
    M_ERR=0
    before="$(cpu_ticks "${pids[@]}")"
    case "$scenario" in
        h2-*) measure_h2load "$scenario" "$target" ;;
        *) measure_wrk "$scenario" "$target" ;;
    esac
    after="$(cpu_ticks "${pids[@]}")"
    (( M_REQS > 0 )) || { echo "bench: $side $scenario completed no request" >&2; exit 1; }
    M_CPU="$(python3 -c 'import sys; t,hz,n=map(float,sys.argv[1:]); print("%.2f" % (t/hz*1e6/n))' \
        "$((after - before))" "$CLK_TCK" "$M_REQS")"
}
run_load() { # tool args... -> its output; fails the script when the tool fails or hangs
    local out
    if ! out="$(timeout --kill-after=5 "$LOAD_LIMIT_S" "$@" 2>&1)"; then
        echo "bench: '$*' failed or ran past ${LOAD_LIMIT_S}s:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$out"
}
measure_wrk() { # scenario url
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency
        -H "Accept: ${ACCEPT[$1]}" -H 'Accept-Encoding: gzip') out p99 errors
    case "$1" in
        pull) args+=(-s "$HERE/pull.lua") ;;
        tls-new) args+=(-H 'Connection: close') ;;
    esac
    out="$(run_load env BTP_BENCH_TOKEN="$TOKEN" wrk "${args[@]}" "$2")"
    M_RPS="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    M_REQS="$(awk '/ requests in / {print $1}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    [[ -n "$M_RPS" && -n "$M_REQS" && -n "$p99" ]] || { echo "bench: cannot read wrk's output:" >&2; echo "$out" >&2; exit 1; }
    M_P99="$(to_ms "$p99")"
    errors="$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)"
    if [[ -n "$errors" ]]; then
        echo "  warning: $1 $2: $(tr '\n' ';' <<<"$errors" | tr -s ' ')" >&2
        M_ERR=1
    fi
}
measure_h2load() { # scenario url
    local log="$WORK/h2load.log" out done_line status_line
    out="$(run_load h2load -c"$CONNECTIONS" -m"$H2_STREAMS" -t"$THREADS" -D"$DURATION_S" \
        -H "Accept: ${ACCEPT[$1]}" -H 'Accept-Encoding: gzip' --log-file="$log" "$2")"
    # (printed for the first client that connects; check_scenario has seen h2 already)
    if grep -q '^Application protocol:' <<<"$out" && ! grep -q '^Application protocol: h2$' <<<"$out"; then
        echo "bench: h2load did not negotiate h2:" >&2; echo "$out" >&2; exit 1
    fi
    # finished in 2.00s, 51234.50 req/s, 10.11MB/s
    M_RPS="$(awk '/^finished in/ {print $4}' <<<"$out")"
    # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
    # (req/s counts the done ones, whatever their status, as wrk does; so does CPU/req)
    done_line="$(grep '^requests:' <<<"$out")"
    M_REQS="$(awk '{print $6}' <<<"$done_line")"
    [[ -n "$M_RPS" && -n "$M_REQS" ]] || { echo "bench: cannot read h2load's output:" >&2; echo "$out" >&2; exit 1; }
    # Per-request log: start (µs since epoch), status (-1 = failed stream), µs to the end
    # of the response.
    M_P99="$(python3 -c 'import sys, math
t = sorted(int(f[2]) for f in (l.split("\t") for l in open(sys.argv[1])) if len(f) > 2 and f[1] != "-1")
print("%.2f" % (t[max(0, math.ceil(0.99 * len(t)) - 1)] / 1000) if t else "nan")' "$log")"
    rm -f "$log"
    status_line="$(grep '^status codes:' <<<"$out")"
    if [[ "$(awk '{print $10 + $12 + $14}' <<<"$done_line")" != 0 ]] ||
        ! awk '{exit !($5 == 0 && $7 == 0 && $9 == 0)}' <<<"$status_line"; then
        echo "  warning: $1 $2: $done_line; $status_line" >&2
        M_ERR=1
    fi
    # A client that could not connect (or was cut at once) shows as a client with 0 req/s.
    if awk '$1 == "req/s" && $3 == 0 {zero = 1} END {exit !zero}' <<<"$out"; then
        echo "  warning: $1 $2: some h2load clients completed no request (refused or cut connections)" >&2
        M_ERR=1
    fi
}
to_ms() { # wrk prints 1.23ms / 850.00us / 1.02s
    python3 -c 'import sys,re
v=sys.argv[1]; m=re.match(r"([0-9.]+)(us|ms|s|m)$", v)
n=float(m.group(1)) if m else float("nan"); u=m.group(2) if m else "ms"
print("%.2f" % (n/1000 if u=="us" else n*1000 if u=="s" else n*60000 if u=="m" else n))' "$1"
}

median() { # numbers... -> their median
    python3 -c 'import sys,statistics; print("%.2f" % statistics.median(map(float, sys.argv[1:])))' "$@"
}

# Whether a side resumes TLS sessions matters for tls-new: wrk offers the session of its
# previous connection. Probe: two connections, like wrk's (the second offers the session
# the first received, after reading a whole response so TLS 1.3 tickets have arrived).
resumes() { # port -> "yes TLSv1.3" / "no TLSv1.3"
    python3 - "$1" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
session = None
for _ in range(2):
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET /favicon.svg HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            reused, version, session = s.session_reused, s.version(), s.session
print("yes" if reused else "no", version)
PY
}
TLS_NOTE=""
if [[ " $SCENARIOS " == *" tls-new "* ]]; then
    TLS_NOTE="; tls-new session resumption: gateway $(resumes "$GW_TLS_PORT"), nginx $(resumes "$NGINX_TLS_PORT")"
fi

printf '\nwrk -t%s -c%s -d%s / h2load -t%s -c%s -m%s -D%s, loopback, %s cores (the load tools share them), median of %s rounds\n' \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$THREADS" "$CONNECTIONS" "$H2_STREAMS" "$DURATION_S" "$(nproc)" "$ROUNDS"
printf '%s; %s; %s\n' "$(nginx -v 2>&1)" "$(wrk --version 2>&1 | head -n 1 | awk '{print "wrk " $2}')" "$(h2load --version)"
printf 'p99 of h2-* from h2load --log-file; CPU µs/req = server utime+stime per completed request (nginx: master + workers; API worker not counted)%s\n\n' "$TLS_NOTE"
# (printf pads by bytes and µ takes two: those two headings get one more)
printf '| %-10s | %14s | %14s | %7s | %13s | %13s | %15s | %15s |\n' scenario "gateway req/s" "nginx req/s" ratio \
    "gateway p99" "nginx p99" "gateway µs/req" "nginx µs/req"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------ ---------------- ---------------- --------- --------------- \
    --------------- ---------------- ----------------
ERRORS_SEEN=0
for scenario in $SCENARIOS; do
    check_scenario "$scenario"
    g_rps=(); g_p99=(); g_cpu=(); n_rps=(); n_p99=(); n_cpu=(); g_mark=""; n_mark=""
    for _ in $(seq 1 "$ROUNDS"); do
        measure gateway "$scenario"
        g_rps+=("$M_RPS"); g_p99+=("$M_P99"); g_cpu+=("$M_CPU")
        (( M_ERR == 0 )) || g_mark=" !"
        measure nginx "$scenario"
        n_rps+=("$M_RPS"); n_p99+=("$M_P99"); n_cpu+=("$M_CPU")
        (( M_ERR == 0 )) || n_mark=" !"
    done
    [[ -z "$g_mark$n_mark" ]] || ERRORS_SEEN=1
    echo "  $scenario rounds: gateway ${g_rps[*]} req/s, p99 ${g_p99[*]} ms, ${g_cpu[*]} µs/req;" \
        "nginx ${n_rps[*]} req/s, p99 ${n_p99[*]} ms, ${n_cpu[*]} µs/req" >&2
    g="$(median "${g_rps[@]}")"; n="$(median "${n_rps[@]}")"
    ratio="$(python3 -c "print('%.2f' % (float('$g')/float('$n')))")"
    printf '| %-10s | %14s | %14s | %6sx | %10s ms | %10s ms | %14s | %14s |\n' \
        "$scenario" "$g$g_mark" "$n$n_mark" "$ratio" "$(median "${g_p99[@]}")" "$(median "${n_p99[@]}")" \
        "$(median "${g_cpu[@]}")" "$(median "${n_cpu[@]}")"
done
if (( ERRORS_SEEN )); then
    printf '\n! = in at least one round some requests or connections failed, or got an error status (see the warnings);\n'
    printf '    req/s, p99 and CPU/req of that side count them as requests all the same.\n'
fi
echo
