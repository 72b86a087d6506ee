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

# parallel NAME1 NAME2 -- "COMMAND1" "COMMAND2": run two stages at once, each into its own log,
# print each log when both have ended, and fail (naming the stage) if either failed.
parallel() {
  local n1="$1" n2="$2" c1="$4" c2="$5" logs="$FERRY_ROOT/target/test-logs"
  mkdir -p "$logs"
  CURRENT="$n1 + $n2"
  echo
  echo "==> [$n1] $c1"
  echo "==> [$n2] $c2   (both at once; their output follows when both have ended)"
  local t0 p1 p2 r1=0 r2=0 e1 e2
  t0=$(now)
  bash -c "$c1" >"$logs/${n1// /-}.log" 2>&1 &
  p1=$!
  bash -c "$c2" >"$logs/${n2// /-}.log" 2>&1 &
  p2=$!
  wait "$p1" || r1=$?
  e1=$(now)
  wait "$p2" || r2=$?
  e2=$(now)
  echo "---- [$n1] output"; cat "$logs/${n1// /-}.log"
  echo "---- [$n2] output"; cat "$logs/${n2// /-}.log"
  if [[ $r1 -ne 0 ]]; then CURRENT="$n1"; return "$r1"; fi
  if [[ $r2 -ne 0 ]]; then CURRENT="$n2"; return "$r2"; fi
  TIMINGS+=("$n1 $(( e1 - t0 ))s" "$n2 $(( e2 - t0 ))s (in parallel)")
}

stage "setup" bash scripts/setup.sh --browser
# initdb, pg_ctl and postgres on PATH for tests that start a private cluster.
PG_BIN="$(pg_bindir)"
if [[ -n "$PG_BIN" ]]; then export PATH="$PATH:$PG_BIN"; fi

# Lint while building. `cargo clippy` is `cargo check` with clippy-driver as the wrapper of every
# workspace crate; the same wrapper on the test builds lints exactly those crates (every target,
# `-D warnings`, natively and for wasm32) while producing the binaries the tests run, so each
# target is compiled once instead of once for clippy and once for the tests. The wrapper is part
# of cargo's fingerprint, so every later cargo command of this script keeps it set.
CLIPPY_DRIVER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
[[ -x "$CLIPPY_DRIVER" ]] || { echo "test.sh: clippy-driver not found (rustup component add clippy)" >&2; exit 1; }
export RUSTC_WORKSPACE_WRAPPER="$CLIPPY_DRIVER"
# How cargo-clippy hands `-- -D warnings` to clippy-driver.
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

stage "fmt"                 cargo fmt --all --check
# Every native target of the workspace (libraries, binaries, tests, benches, examples), linted.
stage "build native + clippy" cargo test --workspace --all-targets --locked --no-run
SERVER_BIN="$FERRY_ROOT/target/debug/ferry-server"
[[ -x "$SERVER_BIN" ]] || { echo "test.sh: $SERVER_BIN was not built by the native build" >&2; exit 1; }
# The native tests (nothing left to compile) wait on PostgreSQL more than they use the cores, so
# the size-optimised wasm bundle builds beside them (without the lint wrapper: the wasm32 test
# build below lints the same code for wasm32).
parallel "tests native" "wasm bundle" -- \
  "cargo test --workspace --locked" \
  "env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS bash scripts/build-wasm.sh"
# The browser tests talk to a small scripted HTTP server (5xx, 413, lost responses). Building them
# for wasm32 with the wrapper lints the wasm crate and ferry-core (a workspace member it depends
# on) for wasm32 with -D warnings. ferry-core's own tests are native-only (proptest pulls in
# getrandom, which does not build for wasm32-unknown-unknown).
stage "tests browser + clippy wasm32" env CHROMEDRIVER=/usr/bin/chromedriver \
  node tests/support/ferry-test-server.mjs -- cargo test -p ferry --target wasm32-unknown-unknown --all-targets --locked
# The end-to-end tests drive the demo in headless Chromium against the real server binary on
# its own embedded PostgreSQL, and check every outcome by SQL as well as on the page. The binary
# is the one the native build made.
stage "tests e2e" env FERRY_SERVER_BIN="$SERVER_BIN" bash -c 'cd tests/e2e && node --test'
# Benchmarks are not timed tests: the quick mode (small sizes, writes nothing) proves each one
# still runs and still checks its counts in PostgreSQL; its server bench was built by the native
# build. `node bench/run.mjs` is the full run. Beside it, a short libFuzzer run of each target
# from its seeds (nightly, its own cached build outside the clone, so without the stable lint
# wrapper; `bash scripts/fuzz.sh` is the long run).
parallel "bench quick" "fuzz short" -- \
  "env FERRY_SERVER_BIN=$SERVER_BIN node bench/run.mjs --quick" \
  "env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS bash scripts/fuzz.sh --ci --seconds 10"

CURRENT="summary"
echo
echo "test.sh: OK, ${#TIMINGS[@]} stages passed in $(( $(now) - START ))s ($(list "${TIMINGS[@]}"))"
