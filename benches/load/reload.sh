#!/usr/bin/env bash
# What a config reload costs under load: one gateway (`workers: 1`, CPU 0) with 50 routes in
# front of one nginx worker, wrk on CPU 1 (-c32, keep-alive) against a public route, in
# interleaved rounds: steady; `churn`, the reload loop's own processes (sed on a copy of the
# file, `kill -0`) every 50 ms, which cost CPU on this small machine whatever the gateway
# does; and `reloading`, a route rescoped and SIGHUP every 50 ms (about 20 swaps a second).
# Reports req/s and p99 of each, and how long each reload took (the `took_us` of its log
# line: read, validate, build, swap). The gateway's own cost is `reloading` against `churn`.
#
#   bash benches/load/reload.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
#
# Needs wrk, nginx and curl. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SECONDS_PER=${2:-10}
NEED="wrk nginx curl"
source benches/load/common.sh

UP=127.0.0.1:18290
mkdir -p "$WORK/up/logs"
cat > "$WORK/up/nginx.conf" <<NGX
worker_processes 1; daemon on; pid $WORK/up/nginx.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; server { listen $UP; location / { return 200 'hello, world\n'; } } }
NGX
$SERVER nginx -p "$WORK/up" -c "$WORK/up/nginx.conf"
PIDS+=("$(cat "$WORK/up/nginx.pid")")

ADDR=127.0.0.1:18291
ADMIN=127.0.0.1:18292
{
  echo "listen: $ADDR"
  echo "admin_listen: $ADMIN"
  echo "workers: 1"
  echo "store: { sqlite: data/bench.db }"
  echo "oauth: { scopes: { read: Read, write: Write } }"
  echo "upstreams: { app: { url: http://$UP } }"
  echo "routes:"
  echo "  - { path: /public, auth: none, upstream: app }"
  for i in $(seq 49); do echo "  - { path: /api/r$i, scopes: [read], upstream: app }"; done
} > "$WORK/portcullis.yaml"
$BIN --config "$WORK/portcullis.yaml" migrate >/dev/null
RUST_LOG=info TOKIO_WORKER_THREADS=1 $SERVER $BIN --log-format json --config "$WORK/portcullis.yaml" serve 2>"$WORK/gateway.log" &
GW=$!; PIDS+=($GW)
for _ in $(seq 50); do curl -sf "http://$ADMIN/readyz" >/dev/null && break; sleep 0.2; done

cp "$WORK/portcullis.yaml" "$WORK/copy.yaml"
reloading() { # $1 file, $2 signal: flips /api/r1 between read and write and signals, every 50 ms
  local scope=write
  while :; do
    sed -i "s#path: /api/r1, scopes: \[[a-z]*\]#path: /api/r1, scopes: [$scope]#" "$1"
    kill "$2" "$GW"
    if [ $scope = write ]; then scope=read; else scope=write; fi
    sleep 0.05
  done
}
RESULTS="$WORK/results"; : > "$RESULTS"
run() { # NAME
  local out rps p99 errors
  out=$($LOAD wrk -t1 -c32 -d"${SECONDS_PER}s" --latency "http://$ADDR/public/x")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {s = s $0 "; "} END {print s}')
  echo "$1 $rps $p99" >> "$RESULTS"
  printf '  %-16s %10s req/s  p99 %7s ms  %s\n' "$1" "$rps" "$p99" "$errors" >&2
}
for r in $(seq "$ROUNDS"); do
  echo "round $r" >&2
  run steady
  reloading "$WORK/copy.yaml" -0 & RL=$!
  run churn
  kill $RL; wait $RL 2>/dev/null || true
  reloading "$WORK/portcullis.yaml" -HUP & RL=$!
  run reloading
  kill $RL; wait $RL 2>/dev/null || true
done
applied=$(curl -s "http://$ADMIN/metrics" | awk '/^portcullis_config_reloads_total\{outcome="applied"\}/ {print $2}')
{
  echo "$(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  awk '
    { n[$1]++; rps[$1] += $2; p99[$1] += $3 }
    END {
      printf "%-10s %10s %9s\n", "rounds", "req/s", "p99 ms"
      for (k in n) printf "%-10s %10.0f %9.3f\n", k, rps[k]/n[k], p99[k]/n[k]
      printf "\nchurn / steady: req/s %.3fx, p99 %.2fx\n", rps["churn"]/rps["steady"], p99["churn"]/p99["steady"]
      printf "reloading / churn (the gateway'"'"'s own cost): req/s %.3fx, p99 %.2fx\n", rps["reloading"]/rps["churn"], p99["reloading"]/p99["churn"]
    }' "$RESULTS"
  echo "reloads applied: ${applied:-0}"
  grep '"config reloaded"' "$WORK/gateway.log" | sed -E 's/.*"took_us":([0-9]+).*/\1/' | sort -n |
    awk '{ v[NR] = $1 }
      END {
        if (NR == 0) exit
        m = int(NR * 0.5) + 1; if (m > NR) m = NR
        q = int(NR * 0.99) + 1; if (q > NR) q = NR
        printf "reload time (read, validate, build, swap): p50 %d us, p99 %d us, max %d us\n", v[m], v[q], v[NR]
      }'
  echo "reloads refused: $(grep -c '"config reload refused' "$WORK/gateway.log" || true)"
} | tee benches/load/last-run-reload.txt
