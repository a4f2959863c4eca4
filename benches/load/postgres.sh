#!/usr/bin/env bash
# The store's share of the work, SQLite beside PostgreSQL in the same run: token issuance
# (`client_credentials`, one store write per token) and the guard on a cache miss (a one-entry
# cache and 200 tokens in rotation: a store read per request), each backend behind its own
# gateway (`workers: 1`), in interleaved rounds.
#
#   PORTCULLIS_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
#     bash benches/load/postgres.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s)
#
# Then revocation fan-out: two more replicas on the same database (log poll 60 s, so only the
# LISTEN/NOTIFY feed counts), 300 tokens issued on the first and revoked there one after another,
# and the p50/p99 of `portcullis_revocation_propagation_seconds` (notify to invalidation) from
# the other two replicas' /metrics.
#
# The URL names a server where a database may be created (a fresh portcullis_bench_… one is
# made and dropped). Needs wrk and psql. Loopback only; the gateways run on CPU 0 and wrk on
# CPU 1; the PostgreSQL server runs wherever the system puts it (its CPU is not counted).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SECONDS_PER=${2:-10}
SERVER_URL=${PORTCULLIS_BENCH_DATABASE_URL:?set PORTCULLIS_BENCH_DATABASE_URL to a PostgreSQL server URL}
NEED="wrk psql curl"
source benches/load/common.sh
DB=portcullis_bench_$(date +%s)
PG_URL="${SERVER_URL%/*}/$DB"
extra_cleanup() { psql "$SERVER_URL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true; }
psql "$SERVER_URL" -qc "CREATE DATABASE $DB" >/dev/null

UP=127.0.0.1:18190
conf() { # $1 file, $2 listen, $3 admin, $4 store, $5 extra
  cat > "$1" <<CONF
listen: $2
admin_listen: $3
workers: 1
store: $4
oauth:
  scopes: { read: Read }
  default_scopes: [read]
  rate_limits: { per_client_per_minute: 100000000, per_user_per_minute: 100000000, per_address_per_minute: 100000000 }
upstreams: { app: { url: http://$UP } }
routes:
  - { path: /api, scopes: [read], upstream: app }
$5
CONF
}
# The upstream of the guard rows: one nginx worker with a fixed answer, as in run.sh (python3's
# http.server where nginx is missing; the rows compare backends, not upstreams).
if command -v nginx >/dev/null; then
  mkdir -p "$WORK/up/logs"
  cat > "$WORK/up/nginx.conf" <<NGX
worker_processes 1; daemon on; pid $WORK/up/nginx.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; server { listen $UP; location / { return 200 'hello, world\n'; } } }
NGX
  nginx -p "$WORK/up" -c "$WORK/up/nginx.conf"
  PIDS+=("$(cat "$WORK/up/nginx.pid")")
else
  python3 -m http.server --bind 127.0.0.1 18190 --directory "$WORK" >/dev/null 2>&1 & PIDS+=($!)
fi

declare -A ADDR=([sqlite]=127.0.0.1:18191 [postgres]=127.0.0.1:18193)
declare -A MISS=([sqlite]=127.0.0.1:18195 [postgres]=127.0.0.1:18197)
declare -A STORE=([sqlite]="{ sqlite: data/bench.db }" [postgres]="{ postgres: $PG_URL }")
declare -A PID
for b in sqlite postgres; do
  conf "$WORK/$b.yaml" "${ADDR[$b]}" "127.0.0.1:$(( ${ADDR[$b]##*:} + 1 ))" "${STORE[$b]}" ""
  conf "$WORK/$b-miss.yaml" "${MISS[$b]}" "127.0.0.1:$(( ${MISS[$b]##*:} + 1 ))" "${STORE[$b]}" "cache: { max_entries: 1 }"
  $BIN --config "$WORK/$b.yaml" migrate >/dev/null
  CLIENT=$($BIN --config "$WORK/$b.yaml" clients add --name bench --grant client_credentials --scope read --json)
  declare "CID_$b=$(echo "$CLIENT" | sed -E 's/.*"client_id":"([^"]+)".*/\1/')"
  declare "CSECRET_$b=$(echo "$CLIENT" | sed -E 's/.*"client_secret":"([^"]+)".*/\1/')"
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 $SERVER $BIN --config "$WORK/$b.yaml" serve 2>"$WORK/$b.log" & PID[$b]=$!; PIDS+=($!)
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 $SERVER $BIN --config "$WORK/$b-miss.yaml" serve 2>"$WORK/$b-miss.log" & PID[$b-miss]=$!; PIDS+=($!)
done
for b in sqlite postgres; do
  for a in "${ADDR[$b]}" "${MISS[$b]}"; do
    admin="127.0.0.1:$(( ${a##*:} + 1 ))"
    for _ in $(seq 50); do curl -sf "http://$admin/readyz" >/dev/null && break; sleep 0.2; done
  done
done

basic() { local id="CID_$1" secret="CSECRET_$1"; printf '%s:%s' "${!id}" "${!secret}" | base64 -w0; }
for b in sqlite postgres; do
  token_request_lua "$WORK/cc-$b.lua" grant_type=client_credentials "$(basic "$b")"
  {
    echo "tokens = {"
    for _ in $(seq 200); do
      curl -s -H "Authorization: Basic $(basic $b)" -d grant_type=client_credentials "http://${MISS[$b]}/o/token/" |
        sed -E 's/.*"access_token":"([^"]+)".*/"\1",/'
    done
    echo "}"
    cat <<'LUA'
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/x", { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA
  } > "$WORK/miss-$b.lua"
done

# Two more replicas of the PostgreSQL gateway for the fan-out measurement.
REPLICAS=(127.0.0.1:18201 127.0.0.1:18203)
for a in "${REPLICAS[@]}"; do
  conf "$WORK/replica-${a##*:}.yaml" "$a" "127.0.0.1:$(( ${a##*:} + 1 ))" "${STORE[postgres]}" "cache: { revocation_poll_ms: 60000 }"
  RUST_LOG=warn $BIN --config "$WORK/replica-${a##*:}.yaml" serve 2>"$WORK/replica-${a##*:}.log" & PIDS+=($!)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$(( ${a##*:} + 1 ))/readyz" >/dev/null && break; sleep 0.2; done
done

RESULTS="$WORK/results"; : > "$RESULTS"
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # NAME URL PID SCRIPT
  local before after out
  before=$(cpu_ticks "$3")
  out=$($LOAD wrk -t1 -c64 -d"${SECONDS_PER}s" --latency -s "$4" "$2")
  after=$(cpu_ticks "$3")
  local rps reqs p50 p99 non2xx cpu
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
  cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  echo "$1 $rps $p50 $p99 $cpu ${non2xx:-0}" >> "$RESULTS"
  printf '  %-26s %10s req/s  p50 %7s ms  p99 %7s ms  %6s us gateway CPU/req  non-2xx %s\n' "$1" "$rps" "$p50" "$p99" "$cpu" "${non2xx:-0}" >&2
}
for r in $(seq "$ROUNDS"); do
  echo "round $r" >&2
  for b in sqlite postgres; do
    run "issue_$b" "http://${ADDR[$b]}/o/token/" "${PID[$b]}" "$WORK/cc-$b.lua"
    run "guard_miss_$b" "http://${MISS[$b]}/api/x" "${PID[$b-miss]}" "$WORK/miss-$b.lua"
  done
done
echo "revocation fan-out: 300 tokens revoked on one replica" >&2
for _ in $(seq 300); do
  t=$(curl -s -H "Authorization: Basic $(basic postgres)" -d grant_type=client_credentials "http://${ADDR[postgres]}/o/token/" |
    sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  for a in "${REPLICAS[@]}"; do curl -s -o /dev/null -H "Authorization: Bearer $t" "http://$a/api/x"; done
  curl -s -o /dev/null -H "Authorization: Basic $(basic postgres)" -d "token=$t" "http://${ADDR[postgres]}/o/revoke_token/"
done
sleep 1 # the last notices' delivery; what is measured is in the histogram, not this wait
quantiles() { # the histogram's p50 and p99 (linear within a bucket, as histogram_quantile)
  awk '
    /^portcullis_revocation_propagation_seconds_bucket/ {
      match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      n++; bound[n] = (le == "+Inf") ? -1 : le + 0; cum[n] = $NF + 0
    }
    function q(p,   i, want, lo, prev) {
      want = p * cum[n]; prev = 0; lo = 0
      for (i = 1; i <= n; i++) {
        if (cum[i] >= want) {
          if (bound[i] < 0) return lo
          return lo + (bound[i] - lo) * (want - prev) / (cum[i] - prev > 0 ? cum[i] - prev : 1)
        }
        prev = cum[i]; lo = bound[i]
      }
    }
    END { printf "%d notices, p50 %.2f ms, p99 %.2f ms", cum[n], q(0.5) * 1000, q(0.99) * 1000 }'
}
FANOUT=""
for a in "${REPLICAS[@]}"; do
  FANOUT+="  replica ${a##*:}: $(curl -s "http://127.0.0.1:$(( ${a##*:} + 1 ))/metrics" | quantiles)"$'\n'
done

{
  echo "$(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); PostgreSQL $(psql "$SERVER_URL" -qAtc 'SHOW server_version')"
  awk '
    { n[$1]++; rps[$1] += $2; p50[$1] += $3; p99[$1] += $4; cpu[$1] += $5; bad[$1] += $6 }
    END {
      printf "%-22s %10s %9s %9s %16s %8s\n", "target", "req/s", "p50 ms", "p99 ms", "gateway us/req", "non-2xx"
      split("issue_sqlite issue_postgres guard_miss_sqlite guard_miss_postgres", names, " ")
      for (i = 1; i <= 4; i++) { k = names[i]; if (n[k]) printf "%-22s %10.0f %9.3f %9.3f %16.1f %8d\n", k, rps[k]/n[k], p50[k]/n[k], p99[k]/n[k], cpu[k]/n[k], bad[k] }
      printf "\nPostgreSQL / SQLite: issuance req/s %.2fx, cache-miss guard req/s %.2fx\n",
        rps["issue_postgres"]/rps["issue_sqlite"], rps["guard_miss_postgres"]/rps["guard_miss_sqlite"]
    }' "$RESULTS"
  echo
  echo "revocation propagation (notify to invalidation, portcullis_revocation_propagation_seconds):"
  printf '%s' "$FANOUT"
} | tee benches/load/last-run-postgres.txt
