# Shared helpers for Ferry's scripts. Source it; it is not meant to be run on its own.
#
# Every script cds to the repository root first, so paths below are relative to it.

FERRY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$FERRY_ROOT"

# `cargo install` puts binaries here; a shell that never sourced ~/.cargo/env (CI, sudo -i)
# would not find wasm-bindgen without it.
CARGO_BIN_DIR="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
  *":$CARGO_BIN_DIR:"*) ;;
  *) export PATH="$CARGO_BIN_DIR:$PATH" ;;
esac

# The wasm-bindgen version the crate is built with. Cargo.lock is the truth (it is what the
# build uses); Cargo.toml's `=` pin is the fallback for a checkout without a lock file.
wasm_bindgen_version() {
  local v=""
  if [[ -f Cargo.lock ]]; then
    v="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
  fi
  if [[ -z "$v" ]]; then
    v="$(sed -n 's/^wasm-bindgen *= *.*"=\([0-9][0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)"
  fi
  if [[ -z "$v" ]]; then
    echo "cannot find the wasm-bindgen version in Cargo.lock or Cargo.toml" >&2
    return 1
  fi
  echo "$v"
}

# The folder holding PostgreSQL's server binaries (initdb, pg_ctl, postgres), or nothing.
pg_bindir() {
  local d
  if command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    if [[ -n "$d" && -x "$d/initdb" ]]; then
      echo "$d"
      return 0
    fi
  fi
  # Newest major version first.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn); do
    if [[ -x "$d/initdb" ]]; then
      echo "$d"
      return 0
    fi
  done
  return 0
}

# Seconds since the epoch, for stage timings.
now() { date +%s; }
