#!/usr/bin/env bash
# End-to-end test of the browser playground (examples/playground/) in Debian's headless Chromium.
# Installs what is missing (chromium via apt-get, playwright-core via npm; never a browser download),
# builds the wasm package's browser build when it is not built yet, then runs `node --test`.
# Screenshots of each step land in artifacts/playground/ (git-ignored).
#
#   bash scripts/test-playground.sh        (COWSNAP_REBUILD_WASM=1 forces a rebuild of the package)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG=$ROOT/examples/playground
PKG=${COWSNAP_WEB_PKG:-$ROOT/wasm/pkg/web}

say() { printf '[playground] %s\n' "$*"; }

# 1. Chromium from Debian (playwright-core drives it; its own browser download is never used).
if [ ! -x /usr/bin/chromium ]; then
  say "installing chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

# 2. Node.js and playwright-core.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing nodejs and npm with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "[playground] playwright-core needs Node.js >= 20 (found $(node --version))" >&2
  exit 1
fi
if [ ! -f "$PG/node_modules/playwright-core/package.json" ]; then
  say "installing playwright-core with npm"
  (cd "$PG" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error)
fi

# 3. The npm package's browser build (the wasm engineer's build script makes it).
built() { compgen -G "$PKG/*.js" >/dev/null && compgen -G "$PKG/*.wasm" >/dev/null; }
# A build older than any engine or binding source is stale: rebuild it.
stale() {
  local w
  w=$(compgen -G "$PKG/*.wasm" | head -1)
  [ -n "$(find core/src wasm/src wasm/js wasm/Cargo.toml core/Cargo.toml -newer "$w" -print -quit 2>/dev/null)" ]
}
if [ "${COWSNAP_REBUILD_WASM:-0}" = 1 ] || ! built || stale; then
  build=""
  for b in wasm/build.sh scripts/build-wasm.sh; do
    [ -f "$b" ] && { build=$b; break; }
  done
  if [ -z "$build" ]; then
    echo "[playground] the wasm package is not built at $PKG and no build script (wasm/build.sh) exists" >&2
    exit 1
  fi
  # The build needs the wasm target and wasm-bindgen-cli at the crate's exact version.
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' wasm/Cargo.toml)
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [ -n "$want" ] && [ "$have" != "$want" ]; then
    say "installing wasm-bindgen-cli $want (found: ${have:-none})"
    cargo install --force wasm-bindgen-cli --version "$want"
  fi
  say "building the wasm package with $build"
  bash "$build" --no-pack
fi
built || { echo "[playground] no browser build at $PKG after building" >&2; exit 1; }

# 4. The test (serves on 127.0.0.1 with a random port, drives Chromium, saves screenshots).
rm -rf "$ROOT/artifacts/playground"
mkdir -p "$ROOT/artifacts/playground"
say "running the end-to-end test (screenshots: artifacts/playground/)"
cd "$PG"
COWSNAP_WEB_PKG=$PKG node --test --test-reporter=spec test/
