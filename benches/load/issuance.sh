#!/usr/bin/env bash
# Durable `client_credentials` issuance (one SQLite commit per token) of one build or several
# side by side, in interleaved rounds: each round starts every build on a fresh store
# (`workers: 1`, on CPU 0), warms it for 3 s, then loads it with wrk (one thread, 64
# connections, on CPU 1) and reads the CPU it used, in all and in its store's writer thread.
#
#   bash benches/load/issuance.sh [ROUNDS] [SECONDS] [BINARY…]   (defaults: 3 rounds of 10 s,
#                                                               the release build)
#
# To compare a change with the build before it, build the older commit elsewhere and name both
# binaries. Loopback only; needs wrk and curl. Prints one line per build and round.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SECONDS_PER=${2:-10}
NEED="wrk curl"
source benches/load/common.sh
BINARIES=("${@:3}")
[ ${#BINARIES[@]} -gt 0 ] || BINARIES=("$BIN")
HZ=$(getconf CLK_TCK)

ticks() { awk '{print $14 + $15}' "$1"; } # utime + stime of /proc/PID[/task/TID]/stat
writer_ticks() { # the store's writer thread (named portcullis-sqlite-writer, cut to 15 bytes)
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm")" = "portcullis-sqli" ]; then ticks "$t/stat"; return; fi
  done
  echo 0
}

per_token() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; } # TICKS TOKENS -> us

issue() { # $1 binary, $2 a name for its work folder
  local dir="$WORK/$2" pid client cid secret before wbefore out after wafter reqs
  mkdir -p "$dir"
  cat > "$dir/pc.yaml" <<CONF
listen: 127.0.0.1:18183
admin_listen: 127.0.0.1:18184
workers: 1
store: { sqlite: data/bench.db }
oauth:
  scopes: { read: Read }
  default_scopes: [read]
  rate_limits: { per_client_per_minute: 100000000, per_user_per_minute: 100000000, per_address_per_minute: 100000000 }
upstreams: { app: { url: "http://127.0.0.1:18181" } }
routes:
  - { path: /api, scopes: [read], upstream: app }
CONF
  "$1" --config "$dir/pc.yaml" migrate >/dev/null
  client=$("$1" --config "$dir/pc.yaml" clients add --name bench --grant client_credentials --scope read --json)
  cid=$(echo "$client" | sed -E 's/.*"client_id":"([^"]+)".*/\1/')
  secret=$(echo "$client" | sed -E 's/.*"client_secret":"([^"]+)".*/\1/')
  token_request_lua "$dir/cc.lua" grant_type=client_credentials "$(printf '%s:%s' "$cid" "$secret" | base64 -w0)"
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 $SERVER "$1" --config "$dir/pc.yaml" serve 2>"$dir/pc.log" & pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18184/readyz >/dev/null && break; sleep 0.1; done
  $LOAD wrk -t1 -c64 -d3s -s "$dir/cc.lua" http://127.0.0.1:18183/o/token/ >/dev/null
  before=$(ticks "/proc/$pid/stat"); wbefore=$(writer_ticks "$pid")
  out=$($LOAD wrk -t1 -c64 -d"${SECONDS_PER}s" --latency -s "$dir/cc.lua" http://127.0.0.1:18183/o/token/)
  after=$(ticks "/proc/$pid/stat"); wafter=$(writer_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  printf '  %-44s %9s tokens/s  p99 %7s ms  %6s us CPU/token (writer thread %s)  non-2xx %s\n' \
    "$1" "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
    "$(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")" \
    "$(per_token $((after - before)) "$reqs")" "$(per_token $((wafter - wbefore)) "$reqs")" \
    "$(echo "$out" | awk '/Non-2xx/ {print $4}' | grep . || echo 0)"
  rm -rf "$dir"
}

echo "client_credentials issuance: $ROUNDS x ${SECONDS_PER}s per build, 64 connections, gateway on CPU 0, wrk on CPU 1"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  for i in "${!BINARIES[@]}"; do issue "${BINARIES[$i]}" "build$i"; done
done
