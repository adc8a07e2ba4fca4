#!/usr/bin/env bash
# Tests of the `cowsnap` npm package (wasm/): builds it (wasm/build.sh), packs it, installs the tarball
# with publint and attw (arethetypeswrong: types for import and require), installs the tarball into a
# scratch folder (wasm/pkg/scratch/) and runs there, against the installed package:
#   node --test (API, error paths, kernel vectors, package shape and size budget)  and  tsc --noEmit
#   (ESM and CommonJS usage files).
# Installs what is missing: the wasm32 target, wasm-bindgen-cli at the crate's exact version, node/npm
# (apt-get), binaryen + publint + @arethetypeswrong/cli (npm ci in wasm/tools/, pinned by its lockfile)
# and typescript (npm). Idempotent; about a minute when everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# The tests run from a scratch copy of the package: tell them where the repository's vectors are.
export COWSNAP_VECTORS_ROOT=$ROOT/tests/shared
say() { printf '[wasm] %s\n' "$*"; }

# 1. Tools.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi
want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' wasm/Cargo.toml)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  say "cargo install wasm-bindgen-cli --version $want (found: ${have:-none})"
  cargo install --force wasm-bindgen-cli --version "$want"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing nodejs and npm with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
node -e 'if (+process.versions.node.split(".")[0] < 18) { console.error("node >= 18 needed"); process.exit(1); }'

TOOLS=$ROOT/wasm/tools/node_modules/.bin
if [ ! -x "$TOOLS/wasm-opt" ] || [ ! -x "$TOOLS/publint" ] || [ ! -x "$TOOLS/attw" ]; then
  say "npm ci in wasm/tools/ (binaryen, publint, @arethetypeswrong/cli)"
  (cd wasm/tools && npm ci --no-audit --no-fund --loglevel=error)
fi

# 2. Build and pack.
bash wasm/build.sh
TGZ=$(ls wasm/pkg/cowsnap-*.tgz)

# 3. The package's shape, as the registry's users' tools see it. Both must print no problem.
say "publint (package.json, exports, files)"
out=$("$TOOLS/publint" --strict wasm/pkg/npm 2>&1) || { echo "$out" >&2; exit 1; }
echo "$out" | tail -1
echo "$out" | grep -q 'All good!' || { echo "$out" >&2; say "publint has remarks"; exit 1; }
# attw (strict profile: node10, node16 from CJS and from ESM, bundler) on the main entry point.
# `cowsnap/web` is the browser build, an ES module by design (CommonJS reaches it with import()):
# checked under the esm-only profile. `cowsnap/web/cowsnap_bg.wasm` is an asset (for bundlers'
# URL imports), not a module with types: not an attw entry point.
say "attw --pack (arethetypeswrong)"
(cd wasm/pkg/npm && "$TOOLS/attw" --pack . --format table-flipped \
  --exclude-entrypoints ./web ./web/cowsnap_bg.wasm)
(cd wasm/pkg/npm && "$TOOLS/attw" --pack . --format table-flipped --entrypoints ./web --profile esm-only)

# The Rust replayer (`cowsnap replay`, core/src/replay.rs) for the JS-vs-Rust replay test.
say "cargo build -p cowsnap-cli (the Rust replayer the JS replay is compared with)"
cargo build -q -p cowsnap-cli
export COWSNAP_CLI=$ROOT/target/debug/cowsnap COWSNAP_ROOT=$ROOT

# 4. Install the tarball into a scratch folder, as a user would.
SCRATCH=$ROOT/wasm/pkg/scratch
mkdir -p "$SCRATCH"
cd "$SCRATCH"
if [ ! -f package.json ]; then
  printf '{ "name": "cowsnap-scratch", "private": true, "type": "module" }\n' >package.json
fi
if [ ! -x node_modules/.bin/tsc ]; then
  say "installing typescript with npm (scratch folder)"
  npm install --no-audit --no-fund --loglevel=error --save-dev typescript@5.9.3
fi
say "npm install $(basename "$TGZ") into ${SCRATCH#"$ROOT"/}"
rm -rf node_modules/cowsnap
npm install --no-audit --no-fund --loglevel=error --no-save "$ROOT/$TGZ"
test -f node_modules/cowsnap/package.json
rm -rf test
cp -r "$ROOT/wasm/test" test

# 5. The tests.
say "node --test (against the installed package)"
node --test --test-reporter=spec test/*.test.mjs
say "tsc --noEmit over a typed usage file"
node_modules/.bin/tsc -p test/tsconfig.json
say "ok"
