#!/usr/bin/env bash
# Install what Ferry needs to build, demo and test; skip whatever is already there.
#
#   bash scripts/setup.sh            # toolchain, wasm-bindgen CLI, PostgreSQL, npm packages
#   bash scripts/setup.sh --browser  # the same, plus Chromium and ChromeDriver (browser tests)
#
# FERRY_SETUP_BROWSER=1 is the same as --browser. A second run takes a few seconds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BROWSER="${FERRY_SETUP_BROWSER:-0}"
for arg in "$@"; do
  case "$arg" in
    --browser) BROWSER=1 ;;
    --no-browser) BROWSER=0 ;;
    -h | --help)
      sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup.sh: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

STEP="start"
trap 'rc=$?; if [[ $rc -ne 0 ]]; then echo "setup.sh: FAILED at step \"$STEP\" (exit $rc)" >&2; fi' EXIT

step() {
  STEP="$1"
  printf 'setup: %-24s %s\n' "$1" "$2"
}

fail() {
  echo "setup.sh: step \"$STEP\": $*" >&2
  exit 1
}

# Root runs apt directly (CI, these machines); anyone else goes through sudo.
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || fail "not root and no sudo: cannot install system packages"
  SUDO=(sudo)
fi

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || fail "apt-get not found; install these by hand: $*"
  if [[ "$APT_UPDATED" -eq 0 ]]; then
    "${SUDO[@]}" apt-get update -qq || fail "apt-get update failed"
    APT_UPDATED=1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null \
    || fail "apt-get install $* failed"
}

# 1. Rust: the wasm target and the fmt/clippy components of the installed toolchain. No other
#    toolchain is fetched: these machines reach only package registries.
step "rust toolchain" "$(rustc --version 2>/dev/null || echo 'rustc not found')"
command -v rustup >/dev/null 2>&1 || fail "rustup not found; Ferry expects Rust installed by rustup"
if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "wasm32 target" "present"
else
  step "wasm32 target" "installing (rustup target add wasm32-unknown-unknown)"
  rustup target add wasm32-unknown-unknown || fail "rustup target add failed"
fi
missing_components=()
cargo fmt --version >/dev/null 2>&1 || missing_components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || missing_components+=(clippy)
if [[ ${#missing_components[@]} -eq 0 ]]; then
  step "rustfmt, clippy" "present"
else
  step "rustfmt, clippy" "installing (rustup component add ${missing_components[*]})"
  rustup component add "${missing_components[@]}" || fail "rustup component add failed"
fi

# 2. wasm-bindgen CLI (and its test runner): must equal the crate's version exactly, or
#    wasm-bindgen refuses the .wasm with a schema-version error.
STEP="wasm-bindgen-cli"
WB_VERSION="$(wasm_bindgen_version)" || fail "cannot read the pinned wasm-bindgen version"
have_wb() {
  [[ "$(wasm-bindgen --version 2>/dev/null)" == "wasm-bindgen $WB_VERSION" ]] \
    && command -v wasm-bindgen-test-runner >/dev/null 2>&1
}
if have_wb; then
  step "wasm-bindgen-cli" "$WB_VERSION present"
else
  step "wasm-bindgen-cli" "installing $WB_VERSION (cargo install, about 2 minutes; found: $(wasm-bindgen --version 2>/dev/null || echo none))"
  # --locked is preferred; the unlocked retry covers a registry that lacks a locked dependency.
  cargo install wasm-bindgen-cli --version "$WB_VERSION" --locked --force \
    || cargo install wasm-bindgen-cli --version "$WB_VERSION" --force \
    || fail "cargo install wasm-bindgen-cli $WB_VERSION failed"
  have_wb || fail "installed, but 'wasm-bindgen --version' says: $(wasm-bindgen --version 2>&1 || true)"
fi

# 3. PostgreSQL server binaries: the ingest server's tests start a private cluster.
if [[ -n "$(pg_bindir)" ]]; then
  step "postgresql" "present ($(pg_bindir))"
else
  step "postgresql" "installing (apt-get install postgresql)"
  apt_install postgresql
  [[ -n "$(pg_bindir)" ]] || fail "postgresql installed, but no initdb found"
  step "postgresql" "installed ($(pg_bindir))"
fi

# 3b. PgBouncer: a server test runs Ferry through it in transaction pooling mode.
if [[ -x /usr/sbin/pgbouncer ]]; then
  step "pgbouncer" "present"
else
  step "pgbouncer" "installing (apt-get install pgbouncer)"
  apt_install pgbouncer
  [[ -x /usr/sbin/pgbouncer ]] || fail "pgbouncer installed, but /usr/sbin/pgbouncer is missing"
  step "pgbouncer" "installed"
fi

# 3c. nginx: a server test and the ingest bench run three server processes behind it.
if [[ -x /usr/sbin/nginx ]]; then
  step "nginx" "present"
else
  step "nginx" "installing (apt-get install nginx-light)"
  apt_install nginx-light
  [[ -x /usr/sbin/nginx ]] || fail "nginx-light installed, but /usr/sbin/nginx is missing"
  step "nginx" "installed"
fi

# 4. Chromium and ChromeDriver: browser tests only, so the demo does not pay for them.
if [[ "$BROWSER" == "1" ]]; then
  if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    step "chromium, chromedriver" "present"
  else
    step "chromium, chromedriver" "installing (apt-get install chromium chromium-driver)"
    apt_install chromium chromium-driver
    [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] \
      || fail "installed, but /usr/bin/chromium or /usr/bin/chromedriver is missing"
  fi
  # Firefox ESR and WebKitGTK (Safari's engine) for tests/e2e/cross-browser.test.mjs; WebKit's
  # MiniBrowser runs under xvfb-run, which the test starts itself.
  MINIBROWSER=/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser
  if [[ -x /usr/bin/firefox-esr && -x /usr/bin/WebKitWebDriver && -x $MINIBROWSER && -x /usr/bin/xvfb-run ]]; then
    step "firefox-esr, webkit2gtk-driver, xvfb" "present"
  else
    step "firefox-esr, webkit2gtk-driver, xvfb" "installing (apt-get install firefox-esr webkit2gtk-driver xvfb)"
    apt_install firefox-esr webkit2gtk-driver xvfb
    [[ -x /usr/bin/firefox-esr && -x /usr/bin/WebKitWebDriver && -x $MINIBROWSER && -x /usr/bin/xvfb-run ]] \
      || fail "installed, but firefox-esr, WebKitWebDriver, $MINIBROWSER or xvfb-run is missing"
  fi
else
  step "chromium, chromedriver, firefox-esr, webkit2gtk-driver" "skipped (pass --browser for browser tests)"
fi

# 5. npm packages, for every folder below that has a package.json. `npm ci` wipes and
#    reinstalls node_modules, so skip it when node_modules is newer than the lock file.
NPM_DIRS=(tools tests/e2e tests/bundlers bench)
for dir in "${NPM_DIRS[@]}"; do
  STEP="npm ci ($dir)"
  if [[ ! -f "$dir/package.json" ]]; then
    step "npm ($dir)" "skipped (no package.json yet)"
    continue
  fi
  [[ -f "$dir/package-lock.json" ]] || fail "$dir/package.json has no package-lock.json; run npm install there and commit the lock file"
  stamp="$dir/node_modules/.package-lock.json"
  if [[ -f "$stamp" && ! "$dir/package-lock.json" -nt "$stamp" && ! "$dir/package.json" -nt "$stamp" ]]; then
    step "npm ($dir)" "up to date"
  else
    command -v npm >/dev/null 2>&1 || fail "npm not found (Node.js 20 with npm is expected)"
    step "npm ($dir)" "installing (npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund </dev/null) || fail "npm ci in $dir failed"
  fi
done

STEP="done"
echo "setup: ready"
