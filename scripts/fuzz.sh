#!/usr/bin/env bash
# Fuzzes ferry-core with libFuzzer (cargo-fuzz, nightly): the targets in fuzz/fuzz_targets.
#
#   bash scripts/fuzz.sh                  the long run: 10 minutes per target
#   bash scripts/fuzz.sh --ci             the short run: 20 seconds per target (test.sh: 10),
#                                         from a fixed seed (FERRY_FUZZ_SEED overrides it)
#   bash scripts/fuzz.sh --seconds N      N seconds per target (with or without --ci)
#   bash scripts/fuzz.sh --target NAME    one target only (spec_parse, pipeline, batch_decode,
#                                         batch_fields, backup_open)
#
# Prints, per target, executions, executions per second, coverage, corpus size and crashes, and
# writes them to fuzz/last-run.json (a long run) or $CARGO_TARGET_DIR/last-ci-run.json (--ci). Exits
# non-zero if any target crashed; the crashing input is kept in fuzz/artifacts/<target>/, and
# `cargo +nightly fuzz run <target> <file>` replays it (`cargo fuzz tmin` shrinks it).
#
# Corpora: the committed seeds are fuzz/corpus/<target>/ and are only read. A long run grows
# fuzz/work/<target>/ (kept between runs, not committed); a --ci run starts from the seeds in a
# temporary directory, so CI results do not depend on earlier runs.
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if it
# is missing. Built without a sanitizer: ferry-core forbids `unsafe`, so what a run can find is
# a panic, an arithmetic overflow (debug assertions are on), a hang or an allocation blow-up,
# and ASan would only halve the executions per second.

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
set -euo pipefail

# The instrumented build (nightly, its own flags) shares nothing with the workspace's, and takes
# ~5 minutes cold on 2 cores: it lives in a cache outside the clone (like ~/.cargo/registry),
# so a second run on the same machine rebuilds only what changed. FERRY_FUZZ_TARGET_DIR moves it.
export CARGO_TARGET_DIR="${FERRY_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR"

TARGETS=(spec_parse pipeline batch_decode batch_fields backup_open)
BUILD_FLAGS=(--sanitizer none --debug-assertions)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

ci=0
seconds=""
only=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ci) ci=1 ;;
    --seconds)
      seconds="${2:-}"
      shift
      ;;
    --target)
      only="${2:-}"
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "fuzz.sh: unknown argument '$1'" >&2
      usage >&2
      exit 2
      ;;
  esac
  shift
done
if [[ -z "$seconds" ]]; then
  if [[ $ci == 1 ]]; then seconds=20; else seconds=600; fi
fi
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: --seconds needs a whole number of seconds above 0, got '$seconds'" >&2
  exit 2
fi
if [[ -n "$only" ]]; then
  found=0
  for t in "${TARGETS[@]}"; do [[ "$t" == "$only" ]] && found=1; done
  if [[ $found == 0 ]]; then
    echo "fuzz.sh: unknown target '$only'; the targets are: ${TARGETS[*]}" >&2
    exit 2
  fi
  TARGETS=("$only")
fi

# Per target: the longest input, and whether the JSON dictionary helps.
max_len() {
  case "$1" in
    backup_open) echo 4096 ;;
    *) echo 16384 ;;
  esac
}
uses_dict() { [[ "$1" != backup_open ]]; }

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [[ $ci == 1 ]]; then
  # The fuzz crate's own tests: the committed seeds are current and every check holds on them.
  echo "== the fuzz crate's tests"
  (cd "$FERRY_ROOT/fuzz" && cargo test --locked --lib)
fi

echo "== building the fuzz targets (nightly, ${BUILD_FLAGS[*]})"
build_start=$(now)
cargo +nightly fuzz build "${BUILD_FLAGS[@]}" ${only:+"$only"}
build_seconds=$(($(now) - build_start))
echo "   built in ${build_seconds}s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

crashed=0
rows=()
results=()
for t in "${TARGETS[@]}"; do
  if [[ $ci == 1 ]]; then
    work="$scratch/corpus-$t"
  else
    work="fuzz/work/$t"
  fi
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$work" "$artifacts"
  log="$scratch/$t.log"
  touch "$scratch/$t.start"
  args=(-max_total_time="$seconds" -print_final_stats=1 -max_len="$(max_len "$t")"
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/")
  if uses_dict "$t"; then args+=(-dict=fuzz/json.dict); fi
  # The short run is reproducible: one fixed seed walks the same mutations on every machine (a
  # slower one stops earlier on the same path), so CI never goes red on a new random path; it
  # replays the committed seeds and regressions. The long run explores with a fresh seed.
  if [[ $ci == 1 ]]; then args+=(-seed="${FERRY_FUZZ_SEED:-20261204}"); fi

  echo "== fuzzing $t for ${seconds}s"
  start=$(now)
  rc=0
  cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "$work" "fuzz/corpus/$t" -- "${args[@]}" >"$log" 2>&1 || rc=$?
  took=$(($(now) - start))

  final_stat() { sed -n "s/^stat::$1: *\([0-9]*\).*/\1/p" "$log" | tail -n 1; }
  execs="$(final_stat number_of_executed_units)"
  per_sec="$(final_stat average_exec_per_sec)"
  new_units="$(final_stat new_units_added)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)"
  corpus="$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)"
  new_artifacts=()
  while IFS= read -r f; do new_artifacts+=("$f"); done < <(find "$artifacts" -type f -newer "$scratch/$t.start" | sort)
  crashes=${#new_artifacts[@]}
  if [[ $rc != 0 && $crashes == 0 ]]; then
    # libFuzzer stopped without saving an input (e.g. it could not start): still a failure.
    crashes=1
  fi
  if [[ $crashes != 0 ]]; then
    crashed=1
    echo "!! $t failed (exit $rc); the end of its log:"
    grep -v '^#[0-9]' "$log" | tail -n 40
    for f in "${new_artifacts[@]}"; do
      echo "!! crashing input: $f (replay: cargo +nightly fuzz run ${BUILD_FLAGS[*]} $t $f)"
    done
  fi
  rows+=("$(printf '%-13s %12s %9s %7s %7s %7s %8s' "$t" "${execs:-?}" "${per_sec:-?}" "${cov:-?}" "${corpus:-?}" "${new_units:-?}" "$crashes")")
  artifact_json=""
  for f in "${new_artifacts[@]}"; do artifact_json+="${artifact_json:+, }\"$f\""; done
  results+=("$(printf '    {"target": "%s", "seconds": %s, "executions": %s, "exec_per_sec": %s, "coverage": %s, "corpus": %s, "new_units": %s, "crashes": %s, "artifacts": [%s]}' \
    "$t" "$took" "${execs:-null}" "${per_sec:-null}" "${cov:-null}" "${corpus:-null}" "${new_units:-null}" "$crashes" "$artifact_json")")
done

echo
printf '%-13s %12s %9s %7s %7s %7s %8s\n' target executions exec/s cov corpus new crashes
for r in "${rows[@]}"; do echo "$r"; done

if [[ $ci == 1 ]]; then
  out="$CARGO_TARGET_DIR/last-ci-run.json"
else
  out="fuzz/last-run.json"
fi
mkdir -p "$(dirname "$out")"
{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"mode\": \"$([[ $ci == 1 ]] && echo ci || echo long)\","
  echo "  \"seconds_per_target\": $seconds,"
  echo "  \"build_seconds\": $build_seconds,"
  echo "  \"machine\": \"$(nproc) cores, $(rustc +nightly --version)\","
  echo "  \"targets\": ["
  for i in "${!results[@]}"; do
    sep=","
    [[ $i == $((${#results[@]} - 1)) ]] && sep=""
    echo "${results[$i]}$sep"
  done
  echo "  ]"
  echo "}"
} >"$out"
echo "figures written to $out"

if [[ $crashed != 0 ]]; then
  echo "fuzz.sh: a target crashed (see above)" >&2
  exit 1
fi
