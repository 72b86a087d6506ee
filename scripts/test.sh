#!/usr/bin/env bash
# Set up, then run every check and test Ferry has; stop at the first failure.
#
#   bash scripts/test.sh
#
# This is the command README.md gives and .ci/run calls. Setup and fmt run first; then two
# tracks run side by side, each one stage after the other, so that one track's waiting (on
# PostgreSQL, on Chromium, on the fuzzer's clock) overlaps the other's compiling:
#
#   track 1: clippy + build native → clippy + build wasm32 → tests native → tests browser
#            → bench quick
#   track 2: wasm bundle → fuzz short → (once track 1 has built the server) tests e2e
#
# Every cargo command of track 1 uses target/debug (cargo lets one build at a time there);
# track 2 never does: the bundle has its own profile directories, the e2e tests run the binary
# track 1 built, and the fuzzer has its own cache. Each parallel stage writes its output to
# target/test-logs/<stage>.log, printed whole when the stage ends. The first failure stops
# everything and names its stage. The summary gives each stage's wall-clock and CPU time.
#
# To add a check, add a `stage` line to a track.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

START=$(now)
LOGS="${CARGO_TARGET_DIR:-$FERRY_ROOT/target}/test-logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"

# list A B C: "A, B, C".
list() {
  local out
  out="$(printf '%s, ' "$@")"
  echo "${out%, }"
}

# cpu_now VAR: sets VAR to the CPU seconds (user + system) of this shell's finished children so
# far. `times` must run in this shell itself (a subshell's children are its own), hence no $( ).
cpu_now() {
  local file="$LOGS/.times.$BASHPID"
  times >"$file"
  printf -v "$1" '%s' "$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, /m|s/); t += p[1] * 60 + p[2] } printf "%.0f", t }' "$file")"
}

slug() { echo "${1// /-}" | tr -cd 'A-Za-z0-9_-'; }

# Prints, whole and in one piece, what a stage wrote (tracks finish stages concurrently).
say() { flock "$LOGS/.print" cat; }

# stage NAME COMMAND...: runs COMMAND with its output in NAME's log, prints the log when it
# ends, and records "NAME WALLs/CPUs" (or the failure) for the summary. Returns COMMAND's status.
stage() {
  local name="$1"
  shift
  local log
  log="$LOGS/$(slug "$name").log"
  echo "==> [$name] started: $*" | say
  local t0 cpu0 cpu1 rc=0
  t0=$(now)
  cpu_now cpu0
  ("$@") >"$log" 2>&1 </dev/null || rc=$?
  cpu_now cpu1
  local took=$(($(now) - t0)) cpu=$((cpu1 - cpu0))
  if [[ $rc -eq 0 ]]; then
    echo "$name ${took}s/${cpu}s" >>"$LOGS/.passed"
    { echo; echo "==> [$name] passed in ${took}s (CPU ${cpu}s)"; cat "$log"; } | say
  else
    echo "$name" >"$LOGS/.failed"
    { echo; echo "==> [$name] FAILED (exit $rc) after ${took}s; its output:"; cat "$log"; } | say
  fi
  return "$rc"
}

# Foreground stages (before the tracks start) print as they go.
stage_live() {
  local name="$1"
  shift
  echo
  echo "==> [$name] $*"
  local t0 cpu0 cpu1
  t0=$(now)
  cpu_now cpu0
  CURRENT="$name"
  ("$@")
  cpu_now cpu1
  echo "$name $(($(now) - t0))s/$((cpu1 - cpu0))s" >>"$LOGS/.passed"
}

CURRENT="setup"
TRACKS=()
summary() {
  local rc=$1 passed=() cpu
  cpu_now cpu
  [[ -f "$LOGS/.passed" ]] && mapfile -t passed <"$LOGS/.passed"
  [[ -f "$LOGS/.failed" ]] && CURRENT="$(cat "$LOGS/.failed")"
  if [[ $rc -ne 0 ]]; then
    echo
    echo "test.sh: FAILED at stage \"$CURRENT\" (exit $rc) after $(($(now) - START))s; passed before it: $(list "${passed[@]}")" >&2
  else
    echo
    echo "test.sh: OK, ${#passed[@]} stages passed in $(($(now) - START))s, CPU ${cpu}s, load average at the end $(cut -d' ' -f1-3 /proc/loadavg) (wall/CPU per stage: $(list "${passed[@]}"))"
  fi
}
# On any exit: stop what still runs (a failed stage, Ctrl-C), then say how it went.
stop_tracks() {
  local pid
  for pid in "${TRACKS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'rc=$?; trap - EXIT INT TERM; stop_tracks; summary "$rc"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stage_live "setup" bash scripts/setup.sh --browser
# initdb, pg_ctl and postgres on PATH for tests that start a private cluster.
PG_BIN="$(pg_bindir)"
if [[ -n "$PG_BIN" ]]; then export PATH="$PATH:$PG_BIN"; fi
stage_live "fmt" cargo fmt --all --check

# `cargo clippy` is `cargo check` with clippy-driver as the workspace's rustc wrapper. The same
# wrapper on the builds the tests need lints every workspace crate while compiling it for real,
# so each target is compiled once, not checked and then built again. CLIPPY_ARGS is how
# cargo-clippy hands `-- -D warnings` to clippy-driver. Every cargo command over target/debug
# runs with it, or cargo would rebuild the workspace crates without it.
LINT=(env RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
  CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")
SERVER_BIN="$FERRY_ROOT/target/debug/ferry-server"

track1() {
  # clippy --all-targets -D warnings of the whole workspace, and every native test binary.
  stage "clippy + build native" "${LINT[@]}" cargo test --workspace --all-targets --locked --no-run
  touch "$LOGS/.native-built"
  # ferry for wasm32 with its tests; ferry-core is a workspace crate, so it is linted for wasm32
  # as ferry's dependency (its own tests are native-only: proptest pulls in getrandom, which does
  # not build for wasm32-unknown-unknown).
  stage "clippy + build wasm32" "${LINT[@]}" cargo test -p ferry --target wasm32-unknown-unknown --all-targets --locked --no-run
  stage "tests native" "${LINT[@]}" cargo test --workspace --locked
  # The browser tests talk to a small scripted HTTP server (5xx, 413, lost responses).
  stage "tests browser" "${LINT[@]}" env CHROMEDRIVER=/usr/bin/chromedriver \
    node tests/support/ferry-test-server.mjs -- cargo test -p ferry --target wasm32-unknown-unknown --locked
  # Benchmarks are not timed tests: the quick mode (small sizes, writes nothing) proves each one
  # still runs and still checks its counts in PostgreSQL. It runs the server bench from the test
  # build above and the server binary the native tests use; `node bench/run.mjs` is the full run.
  stage "bench quick" "${LINT[@]}" env FERRY_SERVER_BIN="$SERVER_BIN" node bench/run.mjs --quick
}

e2e() {
  [[ -x "$SERVER_BIN" ]] || { echo "test.sh: $SERVER_BIN was not built by the native build" >&2; return 1; }
  (cd tests/e2e && FERRY_SERVER_BIN="$SERVER_BIN" node --test)
}

track2() {
  stage "wasm bundle" bash scripts/build-wasm.sh
  # A short libFuzzer run of each target from its seeds (nightly; `bash scripts/fuzz.sh` is the
  # long run), while track 1 is still building. The instrumented build is cached outside the
  # clone (~5 minutes the first time).
  stage "fuzz short" bash scripts/fuzz.sh --ci --seconds 10
  # The end-to-end tests drive the demo in headless Chromium against the real server binary on
  # its own embedded PostgreSQL, and check every outcome by SQL as well as on the page. The
  # binary is the one track 1 built for the server's integration tests (a separate build would
  # compile every dependency again).
  # The same `node --test` runs tests/e2e/cross-browser.test.mjs: the core scenarios (auto-run,
  # reload sends nothing, manual run, two tabs, restore) in Firefox ESR and WebKitGTK.
  # It also runs tests/e2e/package.test.mjs on the bundle built above: pkg/'s
  # package.json names only files that exist, and tsc --strict compiles tests/adopter/adopter.ts.
  while [[ ! -e "$LOGS/.native-built" ]]; do sleep 1; done
  stage "tests e2e" e2e
}

# Job control gives each track its own process group, so a failure can stop the other whole.
set -m
track1 &
TRACKS+=("$!")
track2 &
TRACKS+=("$!")
set +m
CURRENT="the tracks"
running=("${TRACKS[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  # The first non-zero status exits through the EXIT trap, which stops the other track.
  wait -n -p finished "${running[@]}"
  for i in "${!running[@]}"; do [[ ${running[$i]} == "$finished" ]] && unset 'running[i]'; done
done
