#!/usr/bin/env bash
# Where Portcullis' own work per request goes, in instructions (valgrind's callgrind counts
# instructions, not seconds: the same binary and load give the same counts on a busy machine).
# The hyper floor, the lean floor and Portcullis (`workers: 1`; a route with a bearer token on a cache hit, an
# `auth: none` one, and that one with a new connection per request) each run under callgrind in front of one nginx worker, while wrk sends
# keep-alive requests (-c8) for a fixed time; each process's instructions over the load alone
# (zeroed after a warm-up, dumped at its end) are divided by the requests served, overall and
# per piece: the inclusive cost of the functions that make each piece (inlined functions count
# in their callers). Under valgrind the CPU has no SHA extensions, so the token digest runs
# sha2's portable code: `guard_digest` is larger here than on the machine itself.
# The release profile's fat LTO inlines most pieces into their callers (they then count there);
# for the table piece by piece, run with CARGO_PROFILE_RELEASE_LTO=false
# CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 (cargo rebuilds the release target).
#
#   bash benches/load/callgrind.sh [SECONDS]      (default 20 s of load per target)
#   CALLGRIND_KEEP=DIR bash benches/load/callgrind.sh    (keeps each target's profile in DIR)
#
# Needs valgrind (callgrind_annotate), wrk, nginx and curl. Loopback only. Writes the table to
# benches/load/last-run-callgrind.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER=${1:-20}
NEED="valgrind callgrind_annotate wrk nginx curl"
source benches/load/common.sh
cargo build --release --quiet --example hyper_floor
FLOOR_BIN=$PWD/target/release/examples/hyper_floor

UP=127.0.0.1:18390
mkdir -p "$WORK/up/logs"
cat > "$WORK/up/nginx.conf" <<NGX
worker_processes 1; daemon on; pid $WORK/up/nginx.pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen $UP; location / { return 200 'hello, world\n'; } } }
NGX
$SERVER nginx -p "$WORK/up" -c "$WORK/up/nginx.conf"
PIDS+=("$(cat "$WORK/up/nginx.pid")")

PC=127.0.0.1:18391; PC_ADMIN=127.0.0.1:18392; FLOOR=127.0.0.1:18393
cat > "$WORK/pc.yaml" <<CONF
listen: $PC
admin_listen: $PC_ADMIN
workers: 1
store: { sqlite: data/bench.db }
oauth: { scopes: { read: Read }, default_scopes: [read] }
upstreams: { app: { url: http://$UP } }
routes:
  - { path: /public, auth: none, upstream: app }
  - { path: /api, scopes: [read], upstream: app }
CONF
$BIN --config "$WORK/pc.yaml" migrate >/dev/null
CLIENT=$($BIN --config "$WORK/pc.yaml" clients add --name bench --grant client_credentials --scope read --json)
CID=$(echo "$CLIENT" | sed -E 's/.*"client_id":"([^"]+)".*/\1/')
CSECRET=$(echo "$CLIENT" | sed -E 's/.*"client_secret":"([^"]+)".*/\1/')

VG="valgrind --tool=callgrind --quiet"

# measure NAME URL HEADER COMMAND…: starts the server under callgrind, waits until URL
# answers, warms it, zeroes the counts (callgrind_control -z), runs the load, dumps the counts
# (-d), stops the server.
RESULTS="$WORK/results"; : > "$RESULTS"
measure() {
  local name=$1 url=$2 header=$3; shift 3
  local out="$WORK/callgrind.$name"
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 $SERVER $VG --callgrind-out-file="$out.%p" "$@" 2>"$WORK/$name.log" &
  local pid=$!
  for _ in $(seq 300); do curl -s -o /dev/null ${header:+-H "$header"} "$url" && break; sleep 0.2; done
  # Warm (connections, caches), then count only the load.
  $LOAD wrk -t1 -c8 -d2s ${header:+-H "$header"} "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  local wrk_out
  wrk_out=$($LOAD wrk -t1 -c8 -d"${SECONDS_PER}s" ${header:+-H "$header"} "$url")
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local reqs
  reqs=$(echo "$wrk_out" | awk '/requests in/ {print $1}')
  # The dump asked for after the load (callgrind names it OUT.PID.1; OUT.PID is the exit's).
  local dump="$out.$pid.1"
  callgrind_annotate --inclusive=yes --threshold=100 "$dump" > "$WORK/$name.annotate"
  # To look further (callgrind_annotate --tree=caller, kcachegrind): CALLGRIND_KEEP=DIR.
  if [ -n "${CALLGRIND_KEEP:-}" ]; then mkdir -p "$CALLGRIND_KEEP"; cp "$dump" "$CALLGRIND_KEEP/callgrind.$name"; fi
  echo "$name $reqs $dump" >> "$RESULTS"
  echo "  $name: $reqs requests" >&2
}

TOKEN=""
$BIN --config "$WORK/pc.yaml" serve 2>/dev/null & TMP=$!
for _ in $(seq 50); do curl -sf "http://$PC_ADMIN/readyz" >/dev/null && break; sleep 0.2; done
TOKEN=$(curl -s -u "$CID:$CSECRET" -d grant_type=client_credentials "http://$PC/o/token/" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
kill $TMP; wait $TMP 2>/dev/null || true

echo "callgrind, ${SECONDS_PER} s of wrk -c8 per target (slow: valgrind runs the server ~50x slower)" >&2
measure hyper_floor "http://$FLOOR/public/x" "" "$FLOOR_BIN" "$FLOOR" "$UP"
# The lean floor (hyper's server and Portcullis' upstream client, nothing between them), on
# the floor's address: the two run one after the other.
measure lean_floor "http://$FLOOR/public/x" "" "$FLOOR_BIN" "$FLOOR" "$UP" lean
measure portcullis_token "http://$PC/api/x" "Authorization: Bearer $TOKEN" "$BIN" --config "$WORK/pc.yaml" serve
measure portcullis_none "http://$PC/public/x" "" "$BIN" --config "$WORK/pc.yaml" serve
# A new connection per request: what a connection costs besides its request.
measure portcullis_close "http://$PC/public/x" "Connection: close" "$BIN" --config "$WORK/pc.yaml" serve

# Pieces: NAME and a regex over callgrind_annotate's function names; a piece's cost is the sum
# of the inclusive costs of the functions it matches (the patterns name entry points that do
# not call one another, so nothing is counted twice). Functions inlined into their callers have
# no name of their own: their cost is in the caller's.
PIECES="$WORK/pieces"
cat > "$PIECES" <<'P'
total|PROGRAM TOTALS
hyper_server_read|^hyper::proto::h1::conn::Conn<I,B,T>::(poll_read_head|poll_read_keep_alive)$
hyper_server_write|^hyper::proto::h1::conn::Conn<I,B,T>::(write_head|write_body_and_end)$
request_checks|^portcullis::request::validate$
routing|^portcullis::routes::resolve::resolve$
request_id|^portcullis::request_id::of$
guard_bearer|^portcullis::guard::bearer_token$
guard_digest|^portcullis::crypto::Digest::of$
guard_cache|^moka::sync::base_cache::BaseCache<K,V,S>::get_with_hash$
header_rewriting|^portcullis::proxy::headers::strip_request_headers$
response_headers|^portcullis::proxy::headers::(hop_by_hop::strip_hop_by_hop|vary_on_authorization)$
upstream_request|^portcullis::proxy::h1::Outgoing<B>::new$
upstream_exchange|^portcullis::proxy::h1::send::[{][{]closure[}][}]$
upstream_body|^<portcullis::proxy::h1::ResponseBody as http_body::Body>::poll_frame$
hyper_client|^hyper::client::conn::http1::SendRequest<B>::send_request$|^<hyper::proto::h1::dispatch::Client<B> as hyper::proto::h1::dispatch::Dispatch>::poll_msg$|^<hyper::proto::h1::role::Client as hyper::proto::h1::Http1Transaction>::parse$
metrics|^portcullis::metrics::Metrics::(count_decision|observe_upstream)$
timers|^<tokio::time::sleep::Sleep as core::future::future::Future>::poll$|^tokio::runtime::time::Driver::park_internal$|TimerEntry>::drop$|^tokio::time::sleep::Sleep::new_timeout$
allocator|^(_rjem_malloc|_rjem_sdallocx|_rjem_realloc|_rjem_calloc|_rjem_free|malloc|free|realloc|calloc|cfree)$
memcpy|^__memcpy_avx_unaligned_erms$|^__memmove_avx_unaligned_erms$
P

table() {
  while read -r name reqs dump; do
    local f="$WORK/$name.annotate"
    while IFS='|' read -r piece regex; do
      local ir
      if [ "$piece" = total ]; then
        ir=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' "$f")
      else
        ir=$(awk -v re="$regex" '
          # lines: "   1,234,567 (12.3%)  file:function [object]"
          $1 ~ /^[0-9,]+$/ && /%\) / {
            cost = $1; gsub(",", "", cost)
            fn = $0; sub(/^ *[0-9,]+ +\([ 0-9.]+%\) +/, "", fn); sub(/^[^:]*:/, "", fn); sub(/ \[[^]]*\]$/, "", fn)
            if (fn ~ re && !(fn in seen)) { seen[fn] = 1; sum += cost }
          }
          END { print sum + 0 }' "$f")
      fi
      awk -v n="$name" -v p="$piece" -v ir="$ir" -v r="$reqs" 'BEGIN { if (ir > 0) printf "%-18s %-20s %10.0f\n", n, p, ir / r }'
    done < "$PIECES"
  done < "$RESULTS"
}
{
  echo "$(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); instructions per request (callgrind, inclusive), ${SECONDS_PER} s of wrk -c8 keep-alive"
  printf '%-18s %-20s %10s\n' target piece "Ir/request"
  table
} | tee benches/load/last-run-callgrind.txt
