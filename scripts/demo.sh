#!/usr/bin/env bash
# Set up, build the wasm bundle into pkg/, and start the ingest server for the demo.
#
#   bash scripts/demo.sh [extra arguments for `ferry-server serve`]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STEP="setup"
trap 'rc=$?; if [[ $rc -ne 0 && "$STEP" != "server" ]]; then echo "demo.sh: FAILED at step \"$STEP\" (exit $rc)" >&2; fi' EXIT

echo "demo: [1/3] setup (no browser needed)"
bash scripts/setup.sh

STEP="wasm bundle"
echo "demo: [2/3] building the wasm bundle into pkg/"
bash scripts/build-wasm.sh

PG_BIN="$(pg_bindir)"
if [[ -n "$PG_BIN" ]]; then export PATH="$PATH:$PG_BIN"; fi

STEP="server"
# The demo is an app like any other: its tables come from its own schema migrations folder.
DEMO_ARGS=(--project-dir "$FERRY_ROOT" --app-migrations "$FERRY_ROOT/examples/taskboard/migrations")
echo "demo: [3/3] starting the ingest server: cargo run --release -p ferry-server -- serve ${DEMO_ARGS[*]} $*"
status=0
cargo run --release --locked -p ferry-server -- serve "${DEMO_ARGS[@]}" "$@" || status=$?
echo "demo: ferry-server exited with status $status"
exit "$status"
