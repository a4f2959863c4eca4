# Shared by the load scripts that start their own gateways (postgres.sh, reload.sh,
# issuance.sh, callgrind.sh): sourced after `cd` to the repository root, with $NEED naming the
# tools the script needs. Checks them (before any build), pins servers to CPU 0 and the load to
# CPU 1 ($SERVER, $LOAD), builds the release binary ($BIN), makes a work folder ($WORK), and
# on exit stops every process in $PIDS, runs `extra_cleanup` if the script defines one, and
# removes $WORK. Also gives `ms` and `token_request_lua` (below).

for tool in $NEED; do
  command -v "$tool" >/dev/null || { echo "$(basename "$0") needs $tool" >&2; exit 1; }
done

if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then SERVER="taskset -c 0"; LOAD="taskset -c 1"; else SERVER=""; LOAD=""; fi

cargo build --release --quiet --bin portcullis
BIN=$PWD/target/release/portcullis
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if declare -F extra_cleanup >/dev/null; then extra_cleanup; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# ms LATENCY: a wrk latency (812.00us, 1.20ms, 2.01s) in milliseconds.
ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

# token_request_lua FILE BODY BASIC: a wrk script that POSTs the form BODY to the token endpoint
# with the client's Basic credentials (BASIC, already base64).
token_request_lua() {
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = "$2"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $3"
LUA
}
