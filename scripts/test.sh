#!/usr/bin/env bash
# Set up, then run every check and test Ferry has; stop at the first failure.
#
#   bash scripts/test.sh
#
# This is the command README.md gives and .ci/run calls. To add a check, add one `stage` line.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

START=$(now)
CURRENT="setup"
TIMINGS=()


# list A B C: "A, B, C".
list() {
  local out
  out="$(printf '%s, ' "$@")"
  echo "${out%, }"
}

trap 'rc=$?; if [[ $rc -ne 0 ]]; then echo; echo "test.sh: FAILED at stage \"$CURRENT\" (exit $rc) after $(( $(now) - START ))s; passed before it: $(list "${TIMINGS[@]}")" >&2; fi' EXIT

# stage NAME COMMAND...: print a header, run the command, record how long it took.
stage() {
  local name="$1"
  shift
  CURRENT="$name"
  echo
  echo "==> [$name] $*"
  local t0
  t0=$(now)
  "$@"
  TIMINGS+=("$name $(( $(now) - t0 ))s")
}

stage "setup" bash scripts/setup.sh --browser
# initdb, pg_ctl and postgres on PATH for tests that start a private cluster.
PG_BIN="$(pg_bindir)"
if [[ -n "$PG_BIN" ]]; then export PATH="$PATH:$PG_BIN"; fi

stage "fmt"                 cargo fmt --all --check
stage "clippy native"       cargo clippy --workspace --all-targets --locked -- -D warnings
# ferry-core's tests are native-only (its proptest dev-dependency pulls in getrandom, which
# does not build for wasm32-unknown-unknown), so only its library is linted for wasm32.
stage "clippy wasm32 ferry" cargo clippy -p ferry --target wasm32-unknown-unknown --all-targets --locked -- -D warnings
stage "clippy wasm32 core"  cargo clippy -p ferry-core --target wasm32-unknown-unknown --lib --locked -- -D warnings
stage "tests native"        cargo test --workspace --locked
stage "wasm bundle"         bash scripts/build-wasm.sh
# The browser tests talk to a small scripted HTTP server (5xx, 413, lost responses).
stage "tests browser" env CHROMEDRIVER=/usr/bin/chromedriver \
  node tests/support/ferry-test-server.mjs -- cargo test -p ferry --target wasm32-unknown-unknown --locked
# The end-to-end tests drive the demo in headless Chromium against the real server binary on
# its own embedded PostgreSQL, and check every outcome by SQL as well as on the page. The binary
# is the one `cargo test` built for the server's integration tests (a separate `cargo build`
# would compile every dependency again under other features).
SERVER_BIN="$FERRY_ROOT/target/debug/ferry-server"
[[ -x "$SERVER_BIN" ]] || { echo "test.sh: $SERVER_BIN was not built by the native tests" >&2; exit 1; }
stage "tests e2e" env FERRY_SERVER_BIN="$SERVER_BIN" bash -c 'cd tests/e2e && node --test'
# Benchmarks are not timed tests: the quick mode (small sizes, writes nothing) proves each one
# still runs and still checks its counts in PostgreSQL. `node bench/run.mjs` is the full run.
stage "bench quick" env FERRY_SERVER_BIN="$SERVER_BIN" node bench/run.mjs --quick
# A short libFuzzer run of each target from its seeds (nightly; `bash scripts/fuzz.sh` is the
# long run). The instrumented build is cached outside the clone (~5 minutes the first time).
stage "fuzz short"          bash scripts/fuzz.sh --ci --seconds 10

CURRENT="summary"
echo
echo "test.sh: OK, ${#TIMINGS[@]} stages passed in $(( $(now) - START ))s ($(list "${TIMINGS[@]}"))"
