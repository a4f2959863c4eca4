#!/usr/bin/env bash
# End-to-end load harness: the same fast upstream served directly, through nginx as a plain
# reverse proxy, through a minimal hyper proxy (the "hyper floor"), through the same with
# Portcullis' own upstream client (the "lean floor") and through Portcullis
# (auth: none, and with a bearer token on a cache hit),
# measured in interleaved rounds on this machine, plus token issuance, the guard on a cache
# miss, proxied latency under password-hashing load, and memory per cached token.
#
#   bash benches/load/run.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 10 s per target)
#   FLOOD_ROUNDS=N bash benches/load/run.sh …         (N idle/flood rounds; default ROUNDS)
#
# Installs nginx and wrk with apt when missing. Loopback only. Prints a table and writes it to
# benches/load/last-run.txt. See benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SECONDS_PER=${2:-10}
# The p99 under a password flood against idle is one ratio per round, and one round's tail can
# be the machine's rather than the flood's: a longer series of rounds tells them apart.
FLOOD_ROUNDS=${FLOOD_ROUNDS:-$ROUNDS}
CONNS=64

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need strace; then
  echo "installing nginx, wrk and strace (apt)" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk strace >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk strace >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# Servers on CPU 0, the load generator on CPU 1 (when the machine has two or more CPUs).
CPUS=$(nproc)
if [ "$CPUS" -ge 2 ] && need taskset; then SERVER="taskset -c 0"; LOAD="taskset -c 1"; else SERVER=""; LOAD=""; fi

cargo build --release --quiet --bin portcullis --example hyper_floor
BIN=target/release/portcullis
FLOOR_BIN=target/release/examples/hyper_floor
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" -s stop 2>/dev/null || true
  "$NGINX" -p "$WORK/px" -c "$WORK/px/nginx.conf" -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

UP=127.0.0.1:18081; NGX=127.0.0.1:18082; PC=127.0.0.1:18083; PC_ADMIN=127.0.0.1:18084; PC_MISS=127.0.0.1:18085
FLOOR=127.0.0.1:18089; LEAN=127.0.0.1:18090

nginx_conf() { # $1 dir, $2 server block
  mkdir -p "$1/logs"
  cat > "$1/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
  keepalive_requests 1000000;
  $2
}
CONF
}
# The upstream: a fixed 13-byte answer, as fast as nginx serves anything.
nginx_conf "$WORK/up" "server { listen $UP; location / { return 200 'hello, world\n'; } }"
# nginx as a plain reverse proxy with a keep-alive pool, as a careful operator configures it.
nginx_conf "$WORK/px" "upstream app { server $UP; keepalive 256; }
  server { listen $NGX; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ''; } }"
$SERVER "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf"
$SERVER "$NGINX" -p "$WORK/px" -c "$WORK/px/nginx.conf"

portcullis_conf() { # $1 file, $2 listen, $3 admin, $4 extra
  cat > "$1" <<CONF
listen: $2
admin_listen: $3
workers: 1
store: { sqlite: data/bench.db }
oauth:
  scopes: { read: Read, write: Write }
  default_scopes: [read]
  password_hash_concurrency: 1
  rate_limits: { per_client_per_minute: 100000000, per_user_per_minute: 100000000, per_address_per_minute: 100000000 }
upstreams: { app: { url: http://$UP } }
routes:
  - { path: /public, auth: none, upstream: app }
  - { path: /api, scopes: [read], upstream: app }
$4
CONF
}
portcullis_conf "$WORK/pc.yaml" "$PC" "$PC_ADMIN" ""
portcullis_conf "$WORK/pc-miss.yaml" "$PC_MISS" "127.0.0.1:18086" "cache: { max_entries: 1 }"
$BIN --config "$WORK/pc.yaml" migrate >/dev/null
echo 'bench-password' | $BIN --config "$WORK/pc.yaml" users add bench --password-stdin >/dev/null
CLIENT=$($BIN --config "$WORK/pc.yaml" clients add --name bench --grant client_credentials --grant password --scope read --json)
CID=$(echo "$CLIENT" | sed -E 's/.*"client_id":"([^"]+)".*/\1/')
CSECRET=$(echo "$CLIENT" | sed -E 's/.*"client_secret":"([^"]+)".*/\1/')
sed -i 's#data/bench.db#data/bench-miss.db#' "$WORK/pc-miss.yaml"
for f in "$WORK"/data/bench.db*; do cp "$f" "${f/bench.db/bench-miss.db}"; done

RUST_LOG=warn TOKIO_WORKER_THREADS=1 $SERVER $BIN --config "$WORK/pc.yaml" serve 2>"$WORK/pc.log" & PIDS+=($!)
RUST_LOG=warn TOKIO_WORKER_THREADS=1 $SERVER $BIN --config "$WORK/pc-miss.yaml" serve 2>"$WORK/pc-miss.log" & PIDS+=($!)
PC_PID=${PIDS[0]}
# The hyper floor: a minimal proxy on the same HTTP stack (see hyper_floor.rs).
$SERVER $FLOOR_BIN "$FLOOR" "$UP" & PIDS+=($!)
FLOOR_PID=${PIDS[2]}
# The lean floor: hyper's server and Portcullis' upstream client with nothing between them.
$SERVER $FLOOR_BIN "$LEAN" "$UP" lean & PIDS+=($!)
LEAN_PID=${PIDS[3]}
for _ in $(seq 50); do curl -sf "http://$PC_ADMIN/readyz" >/dev/null && curl -sf "http://127.0.0.1:18086/readyz" >/dev/null && break; sleep 0.2; done

token() { # $1 gateway address
  local body
  body=$(curl -s -u "$CID:$CSECRET" -d grant_type=client_credentials "http://$1/o/token/")
  case "$body" in
    *'"access_token":"'*) echo "$body" | sed -E 's/.*"access_token":"([^"]+)".*/\1/' ;;
    *) echo "token request to $1 failed: $body" >&2; exit 1 ;;
  esac
}
TOKEN=$(token "$PC")

# Tokens for the cache-miss gateway, used in rotation so that (with a one-entry cache) nearly
# every request goes to the store.
MISS_TOKENS="$WORK/miss-tokens.lua"
{ echo "tokens = {"; for _ in $(seq 200); do echo "\"$(token "$PC_MISS")\","; done; echo "}"; } > "$MISS_TOKENS"
cat >> "$MISS_TOKENS" <<'LUA'
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/x", { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA
cat > "$WORK/cc.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf '%s:%s' "$CID" "$CSECRET" | base64 -w0)"
LUA
cat > "$WORK/pw.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=password&username=bench&password=bench-password"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf '%s:%s' "$CID" "$CSECRET" | base64 -w0)"
LUA

cpu_ticks() { # total utime+stime of a process and its threads (or of PID/task/TID alone), in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
nginx_worker() { pgrep -P "$(cat "$1/nginx.pid")" | head -1; }
UP_W=$(nginx_worker "$WORK/up"); PX_W=$(nginx_worker "$WORK/px")
HZ=$(getconf CLK_TCK)

context_switches() { # voluntary + involuntary, over every thread of a process
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'
}

# run NAME URL PID [wrk args…] -> appends "NAME rps p50_ms p99_ms cpu_us_per_req non2xx
# context_switches_per_req round" to results (round: $ROUND in the interleaved proxy rounds,
# else 0)
RESULTS="$WORK/results"
: > "$RESULTS"
ms() { # wrk latency value (e.g. 812.00us, 1.20ms, 2.01s) -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
run() {
  local name=$1 url=$2 pid=$3; shift 3
  local before after out rps p50 p99 reqs cs_before cs_after
  before=$(cpu_ticks "$pid"); cs_before=$(context_switches "$pid")
  out=$($LOAD wrk -t1 -c"$CONNS" -d"${SECONDS_PER}s" --latency "$@" "$url")
  after=$(cpu_ticks "$pid"); cs_after=$(context_switches "$pid")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  local cpu_us
  cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  local non2xx
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
  local cs
  cs=$(awk -v d=$((cs_after - cs_before)) -v n="$reqs" 'BEGIN { printf "%.3f", d / n }')
  echo "$name $rps $p50 $p99 $cpu_us ${non2xx:-0} $cs ${ROUND:-0}" >> "$RESULTS"
  printf '  %-28s %10s req/s  p50 %7s ms  p99 %7s ms  %6s us CPU/req  %s cs/req  non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" "$cs" "${non2xx:-0}" >&2
}

# syscalls NAME URL PID [wrk args…] -> system calls per request of PID's threads under
# `strace -f -c` over 3 s of wrk (strace slows the process: only the counts mean anything),
# with the commonest calls named.
SYSCALLS="$WORK/syscalls"
: > "$SYSCALLS"
syscalls() {
  local name=$1 url=$2 pid=$3; shift 3
  local trace="$WORK/strace-$name.txt" tracer out reqs
  strace -f -c -q -p "$pid" -o "$trace" & tracer=$!
  sleep 0.5
  out=$($LOAD wrk -t1 -c32 -d3s "$@" "$url")
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  awk -v name="$name" -v n="$reqs" '
    # % time, seconds, usecs/call, calls, [errors,] syscall
    $1 ~ /^[0-9.]+$/ && NF >= 5 { if ($NF == "total") total = $4; else per[$NF] = $4 / n }
    END {
      line = sprintf("%-18s %6.2f syscalls/req:", name, total / n)
      for (k in per) if (per[k] >= 0.01) line = line sprintf(" %s %.2f", k, per[k])
      print line
    }' "$trace" >> "$SYSCALLS"
  tail -1 "$SYSCALLS" >&2
}

echo "proxy rounds: $ROUNDS x ${SECONDS_PER}s per target, $CONNS connections, servers on CPU 0, wrk on CPU 1" >&2
for r in $(seq "$ROUNDS"); do
  echo "round $r" >&2
  ROUND=$r
  run direct "http://$UP/public/x" "$UP_W"
  run nginx "http://$NGX/public/x" "$PX_W"
  run hyper_floor "http://$FLOOR/public/x" "$FLOOR_PID"
  run lean_floor "http://$LEAN/public/x" "$LEAN_PID"
  run portcullis_none "http://$PC/public/x" "$PC_PID"
  run portcullis_token "http://$PC/api/x" "$PC_PID" -H "Authorization: Bearer $TOKEN"
done
# The upstream shares CPU 0 with the proxy above, as one machine running both would: each
# request wakes it there, and how often that preempts the proxy depends on the order of the
# proxy's own writes. The same rounds with the upstream's worker moved beside wrk show each
# proxy's own cost without that interplay (CPU 1 then bounds them all: see `direct`).
echo "the same, the upstream moved to CPU 1 (beside wrk)" >&2
if [ -n "$LOAD" ]; then
  taskset -pc 1 "$UP_W" >/dev/null
  for r in $(seq "$ROUNDS"); do
    ROUND=$r
    run direct_up1 "http://$UP/public/x" "$UP_W"
    run nginx_up1 "http://$NGX/public/x" "$PX_W"
    run hyper_floor_up1 "http://$FLOOR/public/x" "$FLOOR_PID"
    run lean_floor_up1 "http://$LEAN/public/x" "$LEAN_PID"
    run portcullis_none_up1 "http://$PC/public/x" "$PC_PID"
    run portcullis_token_up1 "http://$PC/api/x" "$PC_PID" -H "Authorization: Bearer $TOKEN"
  done
  taskset -pc 0 "$UP_W" >/dev/null
fi
ROUND=0
echo "token endpoint and guard" >&2
run issue_client_credentials "http://$PC/o/token/" "$PC_PID" -s "$WORK/cc.lua"
run issue_password "http://$PC/o/token/" "$PC_PID" -s "$WORK/pw.lua"
run guard_cache_miss "http://$PC_MISS/api/x" "${PIDS[1]}" -s "$MISS_TOKENS"
# CPU time of the gateway's password-hashing threads, in clock ticks. The CPU per request of
# `run` is the whole process's, so under the flood it includes the hashing the proxied load
# left room for; this tells that share apart from the proxy's own work.
hashing_ticks() {
  local t n=0
  for t in /proc/"$1"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in portcullis-hash*) n=$((n + $(cpu_ticks "$1/task/${t##*/}"))) ;; esac
  done
  echo "$n"
}
echo "proxied latency, idle and while password grants saturate the hashing pool (interleaved)" >&2
HASHING_TICKS=0
for r in $(seq "$FLOOD_ROUNDS"); do
  ROUND=$r
  CONNS=8 run proxied_idle "http://$PC/api/x" "$PC_PID" -H "Authorization: Bearer $TOKEN"
  ( $LOAD wrk -t1 -c64 -d"$((SECONDS_PER + 4))s" -s "$WORK/pw.lua" "http://$PC/o/token/" >/dev/null ) &
  HASHING=$!
  sleep 2
  hashed=$(hashing_ticks "$PC_PID")
  CONNS=8 run proxied_under_hashing "http://$PC/api/x" "$PC_PID" -H "Authorization: Bearer $TOKEN"
  HASHING_TICKS=$((HASHING_TICKS + $(hashing_ticks "$PC_PID") - hashed))
  wait "$HASHING"
done
ROUND=0
HASHING_SHARE=$(awk -v t="$HASHING_TICKS" -v hz="$HZ" -v s="$((FLOOD_ROUNDS * SECONDS_PER))" 'BEGIN { printf "%.1f", t / hz / s * 100 }')

echo "system calls per keep-alive request (strace -f -c, 3 s of wrk -c32 each)" >&2
syscalls nginx "http://$NGX/public/x" "$PX_W"
syscalls hyper_floor "http://$FLOOR/public/x" "$FLOOR_PID"
syscalls lean_floor "http://$LEAN/public/x" "$LEAN_PID"
syscalls portcullis_none "http://$PC/public/x" "$PC_PID"
syscalls portcullis_token "http://$PC/api/x" "$PC_PID" -H "Authorization: Bearer $TOKEN"

# Last: the sockets these leave in TIME_WAIT would slow the loopback measurements after them.
echo "a new connection per request (Connection: close)" >&2
run nginx_close "http://$NGX/public/x" "$PX_W" -H "Connection: close"
run portcullis_close "http://$PC/public/x" "$PC_PID" -H "Connection: close"
syscalls nginx_close "http://$NGX/public/x" "$PX_W" -H "Connection: close"
syscalls portcullis_close "http://$PC/public/x" "$PC_PID" -H "Connection: close"
summary=$(awk '
  function median(a, n,   i, j, v) { # sorts a[1..n] in place
    for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { n[$1]++; rps[$1] += $2; p50[$1] += $3; p99[$1] += $4; cpu[$1] += $5; cs[$1] += $7
    if ($8 > 0) { r_rps[$1, $8] = $2; r_p99[$1, $8] = $4; r_cpu[$1, $8] = $5 } }
  END {
    printf "%-28s %12s %9s %9s %12s %10s\n", "target", "req/s", "p50 ms", "p99 ms", "CPU us/req", "cs/req"
    order = "direct nginx hyper_floor lean_floor portcullis_none portcullis_token direct_up1 nginx_up1 hyper_floor_up1 lean_floor_up1 portcullis_none_up1 portcullis_token_up1 nginx_close portcullis_close issue_client_credentials issue_password guard_cache_miss proxied_idle proxied_under_hashing"
    n_names = split(order, names, " ")
    for (i = 1; i <= n_names; i++) { k = names[i]; if (n[k]) printf "%-28s %12.0f %9.3f %9.3f %12.1f %10.3f\n", k, rps[k]/n[k], p50[k]/n[k], p99[k]/n[k], cpu[k]/n[k], cs[k]/n[k] }
    g = rps["nginx"] / n["nginx"]
    printf "\nratios to nginx (same run): portcullis_none req/s %.2fx, portcullis_token req/s %.2fx, p99 %.2fx; direct upstream %.2fx\n",
      rps["portcullis_none"]/n["portcullis_none"]/g, rps["portcullis_token"]/n["portcullis_token"]/g,
      (p99["portcullis_token"]/n["portcullis_token"])/(p99["nginx"]/n["nginx"]), rps["direct"]/n["direct"]/g
    printf "hyper floor: req/s %.2fx nginx; portcullis_none %.2fx and portcullis_token %.2fx the hyper floor\n",
      rps["hyper_floor"]/n["hyper_floor"]/g, rps["portcullis_none"]/n["portcullis_none"]/(rps["hyper_floor"]/n["hyper_floor"]),
      rps["portcullis_token"]/n["portcullis_token"]/(rps["hyper_floor"]/n["hyper_floor"])
    printf "lean floor: req/s %.2fx nginx; portcullis_token %.2fx the lean floor\n",
      rps["lean_floor"]/n["lean_floor"]/g, rps["portcullis_token"]/n["portcullis_token"]/(rps["lean_floor"]/n["lean_floor"])
    if (n["nginx_up1"]) {
      u = rps["nginx_up1"] / n["nginx_up1"]; uc = cpu["nginx_up1"] / n["nginx_up1"]
      printf "upstream on CPU 1: portcullis_none req/s %.2fx, portcullis_token req/s %.2fx, p99 %.2fx nginx; CPU us/req portcullis_token %.2fx nginx, %.2fx the hyper floor\n",
        rps["portcullis_none_up1"]/n["portcullis_none_up1"]/u, rps["portcullis_token_up1"]/n["portcullis_token_up1"]/u,
        (p99["portcullis_token_up1"]/n["portcullis_token_up1"])/(p99["nginx_up1"]/n["nginx_up1"]),
        cpu["portcullis_token_up1"]/n["portcullis_token_up1"]/uc, cpu["portcullis_token_up1"]/cpu["hyper_floor_up1"]
    }
    printf "a new connection per request: portcullis %.2fx nginx\n", rps["portcullis_close"]/rps["nginx_close"]
    printf "proxied p99 under password hashing / idle: %.2fx\n", p99["proxied_under_hashing"]/p99["proxied_idle"]
    printf "  the hashing threads ran %s%% of a CPU during the flood rounds, beside the proxied load (counted in its CPU us/req)\n", hashing_share
    # Round by round (each flood round right after its idle one), with how many are within
    # 2x and the median: the mean of a few ratios is that of the slowest round.
    # Where the p99 of the idle rounds itself varies several-fold from round to round (a shared
    # machine), the median flood p99 against the median idle p99 is the steadier figure.
    nf = 0; within = 0; rounds = ""
    for (r = 1; (("proxied_idle", r) in r_p99); r++) {
      q = r_p99["proxied_under_hashing", r] / r_p99["proxied_idle", r]
      ratio[++nf] = q; if (q <= 2) within++
      idle[nf] = r_p99["proxied_idle", r]; flood[nf] = r_p99["proxied_under_hashing", r]
      rounds = rounds sprintf(" %.3f/%.3f", r_p99["proxied_under_hashing", r], r_p99["proxied_idle", r])
    }
    if (nf) printf "  round by round, p99 ms under hashing/idle:%s; within 2x in %d of %d rounds; median %.2fx; median p99 %.3f ms under hashing against %.3f idle (%.2fx)\n",
      rounds, within, nf, median(ratio, nf), median(flood, nf), median(idle, nf), median(flood, nf) / median(idle, nf)
    # Round by round: on a shared machine a whole round of one target, or of all, can be
    # slowed by something else (its p99 jumps from a few ms to tens), which skews the means
    # above. A round of a target whose p99 is over 4x the lowest of any proxy target in any
    # round (of the same placement) is named as suspect.
    printf "\nround by round (proxy targets interleaved; suspect: p99 over 4x the lowest of the rounds):\n"
    np = split("nginx hyper_floor lean_floor portcullis_none portcullis_token", proxies, " ")
    for (s = 1; s <= 2; s++) {
      suf = s == 1 ? "" : "_up1"
      lo = 0
      for (r = 1; (("nginx" suf, r) in r_rps); r++)
        for (i = 1; i <= np; i++) { v = r_p99[proxies[i] suf, r]; if (lo == 0 || v < lo) lo = v }
      for (r = 1; (("nginx" suf, r) in r_rps); r++) {
        suspect = ""
        for (i = 1; i <= np; i++) { k = proxies[i] suf; if (r_p99[k, r] > 4 * lo) suspect = suspect sprintf(" %s (%.1f ms)", k, r_p99[k, r]) }
        t = "portcullis_token" suf; g = "nginx" suf; f = "hyper_floor" suf; l = "lean_floor" suf
        printf "round %d%s: portcullis_token %.2fx nginx, %.2fx the hyper floor (CPU/req %.2fx), %.2fx the lean floor (CPU/req %.2fx); hyper floor %.2fx, lean floor %.2fx nginx; p99 portcullis_token %.2fx nginx; suspect:%s\n",
          r, suf == "" ? "" : " (upstream on CPU 1)", r_rps[t, r] / r_rps[g, r], r_rps[t, r] / r_rps[f, r], r_cpu[t, r] / r_cpu[f, r],
          r_rps[t, r] / r_rps[l, r], r_cpu[t, r] / r_cpu[l, r], r_rps[f, r] / r_rps[g, r], r_rps[l, r] / r_rps[g, r],
          r_p99[t, r] / r_p99[g, r], suspect == "" ? " none" : suspect
      }
    }
  }' hashing_share="$HASHING_SHARE" "$RESULTS")
{
  echo "$(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "$summary"
  echo
  echo "system calls per request, keep-alive and (_close) a new connection per request (strace -f -c over 3 s of wrk -c32; cs/req above: context switches of all threads, from /proc, unperturbed):"
  cat "$SYSCALLS"
} | tee benches/load/last-run.txt
