#!/usr/bin/env bash
# The sizes of the request path's futures, in bytes, as the compiler lays them out: those of
# the async fns and blocks in src/gateway/ and src/proxy/, largest first. A request's future
# is moved whole by hyper's dispatcher (twice per request), so its size is paid in `memcpy`
# on every request; an `async fn` keeps each argument twice (rust-lang/rust#62958), and what a
# future holds across an await stays in it. The compiler's `-Zprint-type-sizes` is a nightly
# flag; RUSTC_BOOTSTRAP lets the stable compiler take it. It builds the library alone, without
# LTO (layouts do not depend on it), in a target folder of its own (a few minutes on two CPUs).
#
#   bash benches/future_sizes.sh [PATTERN]   (PATTERN: an extended regex over the type names;
#                                             default: the request path's files)
set -euo pipefail
cd "$(dirname "$0")/.."
PATTERN=${1:-'src/gateway/|src/proxy/|gateway::|proxy::'}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/type-sizes CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo rustc --release --quiet --lib -- -Zprint-type-sizes > "$OUT"
# Lines: print-type-size type: `{async block@src/gateway/mod.rs:183:9: 183:19}`: 1440 bytes, ...
grep -E '^print-type-size type: `(\{async (fn body of|block@)|gateway::Within)' "$OUT" |
  grep -E "$PATTERN" |
  sed -E 's/^print-type-size type: `(.*)`: ([0-9]+) bytes.*/\2 \1/' |
  sort -rn -k1,1 | awk '!seen[$0]++' | head -25
