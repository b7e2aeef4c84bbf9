#!/usr/bin/env bash
# Run the Engine.IO / Socket.IO conformance suite (sio/tests/conformance.rs) through the
# real gateway: the protocol harness (`echo` example) stands where the API workers stand,
# `btp gateway` in front of it with the harness heartbeat (300 ms / 200 ms), and the
# suite speaks raw HTTP and WebSocket to the gateway's public port.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
btp="${BTP_BIN:-$target_dir/debug/btp}"
echo_bin="${BTP_ECHO_BIN:-$target_dir/debug/examples/echo}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

"$echo_bin" --port 0 --hyper-upgrades > "$work/echo.out" 2> "$work/echo.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$work/echo.out" 2>/dev/null && break; sleep 0.1; done
echo_addr="$(sed -n 's/^listening on //p' "$work/echo.out")"
[ -n "$echo_addr" ] || { echo "echo harness did not start"; cat "$work/echo.err"; exit 1; }

gw_port="$(free_port)"
admin_port="$(free_port)"
cat > "$work/config.toml" <<TOML
[gateway]
listen = "127.0.0.1:$gw_port"
admin_listen = "127.0.0.1:$admin_port"
pid_file = "$work/btp.pid"
health_check_interval_ms = 500
[static]
root = "$PWD/static"
[api]
listen = "$echo_addr"
[database]
url = "sqlite://$work/unused.db"
[realtime]
ping_interval_ms = 300
ping_timeout_ms = 200
connect_timeout_ms = 1000
TOML
"$btp" gateway --config "$work/config.toml" > "$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
  curl -sf "http://127.0.0.1:$admin_port/readyz" > /dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$admin_port/readyz" > /dev/null || { echo "gateway not ready"; cat "$work/gateway.log"; exit 1; }

echo "conformance through the gateway at 127.0.0.1:$gw_port (harness at $echo_addr)"
SIO_CONFORMANCE_URL="http://127.0.0.1:$gw_port" cargo test --locked -q -p btp-sio --test conformance
