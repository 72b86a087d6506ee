#!/usr/bin/env bash
# Build the browser migrator (crate `ferry`) to WebAssembly and generate its JS glue in pkg/.
#
# Used by demo.sh and test.sh; expects setup.sh to have run (wasm32 target, wasm-bindgen CLI).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROFILE=wasm-release
TARGET_DIR="${CARGO_TARGET_DIR:-$FERRY_ROOT/target}"
WASM="$TARGET_DIR/wasm32-unknown-unknown/$PROFILE/ferry.wasm"

echo "build-wasm: cargo build -p ferry --target wasm32-unknown-unknown --profile $PROFILE"
cargo build -p ferry --target wasm32-unknown-unknown --profile "$PROFILE" --locked

[[ -f "$WASM" ]] || { echo "build-wasm: expected $WASM after the build, found nothing" >&2; exit 1; }

echo "build-wasm: wasm-bindgen --target web --out-dir pkg"
wasm-bindgen --target web --out-dir pkg "$WASM"

echo "build-wasm: pkg/ferry_bg.wasm is $(wc -c <pkg/ferry_bg.wasm) bytes"
