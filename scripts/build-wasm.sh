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
rm -rf pkg/snippets # snippets of an older build would otherwise ship too
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir pkg "$WASM"

# wasm-opt from npm's binaryen (Debian's older binaryen produces a module that fails to load).
WASM_OPT="$FERRY_ROOT/tools/node_modules/.bin/wasm-opt"
if [[ "${FERRY_SKIP_WASM_OPT:-}" != 1 ]]; then
  [[ -x "$WASM_OPT" ]] || { echo "build-wasm: $WASM_OPT is missing: run scripts/setup.sh" >&2; exit 1; }
  echo "build-wasm: wasm-opt -Oz"
  "$WASM_OPT" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals pkg/ferry_bg.wasm -o pkg/ferry_bg.wasm
fi

# The one-call auto-run and the <ferry-migrate> component (plain JavaScript, no build step) ship
# next to the glue.
cp src/js/auto.js src/js/auto.d.ts src/js/stamp.js src/js/ferry-migrate.js src/js/ferry-migrate.d.ts pkg/

# pkg/ is an npm package: the version is the crate's; tests/package.test.mjs checks that every
# path named here exists after a build.
VERSION="$(awk '/^\[package\]/ { p = 1 } p && /^version *=/ { gsub(/version *= *|"/, ""); print; exit }' Cargo.toml)"
[[ -n "$VERSION" ]] || { echo "build-wasm: no [package] version in Cargo.toml" >&2; exit 1; }
cat >pkg/package.json <<EOF
{
  "name": "@ferry/migrator",
  "version": "$VERSION",
  "description": "Ferry's browser migrator: moves a web app's localStorage into PostgreSQL, backed up first.",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "./ferry.js",
  "types": "./ferry.d.ts",
  "exports": {
    ".": { "types": "./ferry.d.ts", "default": "./ferry.js" },
    "./auto": { "types": "./auto.d.ts", "default": "./auto.js" },
    "./ferry-migrate": { "types": "./ferry-migrate.d.ts", "default": "./ferry-migrate.js" },
    "./ferry_bg.wasm": "./ferry_bg.wasm",
    "./package.json": "./package.json"
  },
  "files": ["ferry.js", "ferry.d.ts", "ferry_bg.wasm", "ferry_bg.wasm.d.ts", "auto.js", "auto.d.ts", "stamp.js", "ferry-migrate.js", "ferry-migrate.d.ts", "snippets/"],
  "sideEffects": ["./ferry-migrate.js"]
}
EOF

echo "build-wasm: pkg/ferry_bg.wasm is $(wc -c <pkg/ferry_bg.wasm) bytes, $(gzip -9 -c pkg/ferry_bg.wasm | wc -c) gzipped"
