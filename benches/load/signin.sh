#!/usr/bin/env bash
# Sign-in latency at POST /o/login/ (issue 11): 40 browser-style sign-ins (get the form and its
# CSRF cookie, post the password) with the gateway idle, then 40 more while wrk floods
# /o/token/ with password grants, which hash on the same Argon2 pool.
#
#   bash benches/load/signin.sh        (needs curl and wrk; release build; loopback only)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "signin.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin portcullis
BIN=$PWD/target/release/portcullis
W=$(mktemp -d)
cat > $W/pc.yaml <<CONF
listen: 127.0.0.1:18190
store: { sqlite: data/p.db }
oauth:
  scopes: { read: Read }
  default_scopes: [read]
  rate_limits: { per_user_per_minute: 1000000, per_client_per_minute: 1000000, per_address_per_minute: 1000000, failures_before_backoff: 1000000, identity_failures_before_backoff: 1000000 }
upstreams: { legacy: { url: "http://127.0.0.1:18191" } }
routes:
  - { path: /api, upstream: legacy }
CONF
$BIN --config $W/pc.yaml migrate >/dev/null
echo pw | $BIN --config $W/pc.yaml users add alice --password-stdin >/dev/null
echo pw | $BIN --config $W/pc.yaml users add flood --password-stdin >/dev/null
CLIENT=$($BIN --config $W/pc.yaml clients add --name c --grant password --json)
CID=$(echo "$CLIENT" | sed -E 's/.*"client_id":"([^"]+)".*/\1/')
CSECRET=$(echo "$CLIENT" | sed -E 's/.*"client_secret":"([^"]+)".*/\1/')
BASIC=$(printf '%s:%s' "$CID" "$CSECRET" | base64 -w0)
RUST_LOG=warn $BIN --config $W/pc.yaml serve 2>$W/log & PID=$!
trap 'kill $PID 2>/dev/null; rm -rf $W' EXIT
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18190/o/login/ && break; sleep 0.1; done
signin() {
  J=$W/jar; rm -f $J
  PAGE=$(curl -s -c $J http://127.0.0.1:18190/o/login/)
  CSRF=$(echo "$PAGE" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
  curl -s -o /dev/null -b $J -w '%{http_code} %{time_total}\n' --data-urlencode "csrf=$CSRF" \
    -d next=/o/applications/ -d username=alice -d password=pw http://127.0.0.1:18190/o/login/
}
stats() { sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99)+1; if (i>NR) i=NR; printf "n=%d p50=%.3fs p99=%.3fs max=%.3fs\n", NR, a[int(NR*0.5)+1], a[i], a[NR]}'; }
echo "idle:"; for i in $(seq 40); do signin; done > $W/idle; grep -v '^303' $W/idle || true; awk '{print $2}' $W/idle | stats
cat > $W/flood.lua <<LUA
wrk.method = "POST"
wrk.body = "grant_type=password&username=flood&password=pw"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $BASIC"
LUA
wrk -t2 -c32 -d45s -s $W/flood.lua http://127.0.0.1:18190/o/token/ > $W/wrk.txt & WRK=$!
sleep 3
echo "under a password-grant flood (wrk -c32):"; for i in $(seq 40); do signin; done > $W/flood; grep -v '^303' $W/flood || true; awk '{print $2}' $W/flood | stats
wait $WRK; grep -E "Requests/sec|Non-2xx" $W/wrk.txt || true
