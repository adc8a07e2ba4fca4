#!/usr/bin/env bash
# Builds the `cowsnap` npm package from this crate:
#   wasm/pkg/node/            wasm-bindgen --target nodejs (CommonJS) + wasm-opt -Oz
#   wasm/pkg/web/             wasm-bindgen --target web (ES module, `await init()`) + wasm-opt -Oz
#                             (the browser playground serves this folder: import init from '.../cowsnap.js')
#   wasm/pkg/npm/             the package as published: package.json, index.d.mts (types for `import`),
#                             index.d.cts (for `require`), node/ (glue only), web/ (glue + the one
#                             cowsnap_bg.wasm, which node/ loads too), README.md, LICENSE-MIT, LICENSE-APACHE
#   wasm/pkg/cowsnap-X.tgz    `npm pack` of wasm/pkg/npm/
# Everything under wasm/pkg/ is build output (git-ignored).
#
# Needs: cargo with the wasm32-unknown-unknown target, wasm-bindgen-cli at exactly the version of the
# wasm-bindgen crate (scripts/test-wasm.sh installs both when missing), node + npm (wasm-opt comes from
# the `binaryen` npm package installed into wasm/tools/). Usage: bash wasm/build.sh [--no-pack]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PKG=$HERE/pkg
say() { printf '[wasm build] %s\n' "$*"; }

pack=1
[ "${1:-}" = "--no-pack" ] && pack=0

want_bindgen=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' "$HERE/Cargo.toml")
have_bindgen=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have_bindgen" != "$want_bindgen" ]; then
  echo "[wasm build] wasm-bindgen-cli $want_bindgen is needed (found: ${have_bindgen:-none});" \
    "run: cargo install wasm-bindgen-cli --version $want_bindgen" >&2
  exit 1
fi

# 1. The wasm module. Size matters more than the last percent of speed here, but LTO and one codegen
#    unit help both; the workspace's release profile is shared, so they are set for this build only.
# The core is built at full speed (opt-level 3): 141 KiB, under the 150 KiB budget now that float
# formatting is left to JavaScript (wasm/src: ~20 KiB less); "s" saved 8 KiB but cost a fifth of the
# first-write speed (`node wasm/bench.mjs`: wasm/native 0.34-0.35 with "s", 0.42-0.44 with 3).
say "cargo build (wasm32-unknown-unknown, release, no_std core)"
(cd "$ROOT" && cargo build -p cowsnap-wasm --lib --target wasm32-unknown-unknown --release \
  --config 'profile.release.lto=true' --config 'profile.release.codegen-units=1' \
  --config 'profile.release.panic="abort"' -q)
WASM=$ROOT/target/wasm32-unknown-unknown/release/cowsnap_wasm.wasm

# 2. wasm-opt from npm (binaryen.js: no binary download).
#    The same folder holds publint and attw (scripts/test-wasm.sh): one `npm ci` installs them all.
if [ ! -x "$HERE/tools/node_modules/.bin/wasm-opt" ]; then
  say "installing binaryen (wasm-opt), publint, attw with npm into wasm/tools/"
  (cd "$HERE/tools" && npm ci --no-audit --no-fund --loglevel=error)
fi
WASM_OPT=$HERE/tools/node_modules/.bin/wasm-opt
# Features rustc enables by default for wasm32-unknown-unknown; wasm-opt must accept and keep them.
FEATURES=(--enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
  --enable-mutable-globals --enable-reference-types --enable-multivalue)

# 3. JS glue for node and for the web, each optimised.
for target in nodejs web; do
  case $target in nodejs) dir=$PKG/node ;; *) dir=$PKG/web ;; esac
  rm -rf "$dir"
  say "wasm-bindgen --target $target -> ${dir#"$ROOT"/}"
  wasm-bindgen --target "$target" --out-name cowsnap --out-dir "$dir" "$WASM"
  # Freed handles throw with a `code` (wasm-bindgen's own check has none).
  cat "$HERE/js/freed-handles.js" >>"$dir/cowsnap.js"
  "$WASM_OPT" -Oz "${FEATURES[@]}" "$dir/cowsnap_bg.wasm" -o "$dir/cowsnap_bg.wasm.opt"
  mv "$dir/cowsnap_bg.wasm.opt" "$dir/cowsnap_bg.wasm"
done
say "cowsnap_bg.wasm: $(wc -c <"$PKG/web/cowsnap_bg.wasm") bytes after wasm-opt -Oz (before: $(wc -c <"$WASM"))"

# 4. The npm package: our package.json (version from Cargo.toml), the hand-written types, both glues.
#    The two builds' .wasm files are the same bytes (checked here), so the package ships one, in web/
#    (where the browser glue fetches it by default), and the Node.js glue reads it from there.
cmp -s "$PKG/node/cowsnap_bg.wasm" "$PKG/web/cowsnap_bg.wasm" || {
  echo "[wasm build] the nodejs and web builds' .wasm differ: the package cannot ship one" >&2; exit 1; }
version=$(cd "$ROOT" && cargo pkgid -p cowsnap-wasm | sed 's/.*[#@]//')
NPM=$PKG/npm
rm -rf "$NPM"
mkdir -p "$NPM/node" "$NPM/web"
cp "$PKG/web/cowsnap.js" "$PKG/web/cowsnap_bg.wasm" "$NPM/web/"
sed 's|`${__dirname}/cowsnap_bg.wasm`|`${__dirname}/../web/cowsnap_bg.wasm`|' "$PKG/node/cowsnap.js" >"$NPM/node/cowsnap.js"
grep -q '/../web/cowsnap_bg.wasm' "$NPM/node/cowsnap.js" || {
  echo "[wasm build] wasm-bindgen's nodejs glue no longer loads \${__dirname}/cowsnap_bg.wasm: update build.sh" >&2; exit 1; }
cat "$HERE/js/node-init.cjs" >>"$NPM/node/cowsnap.js"
cp "$HERE/js/node.mjs" "$NPM/node/index.mjs"
# Types: one source (js/index.d.ts) plus the loader functions of each kind of module.
cat "$HERE/js/index.d.ts" "$HERE/js/loader-esm.d.ts" >"$NPM/index.d.mts"
cat "$HERE/js/index.d.ts" "$HERE/js/loader-cjs.d.ts" >"$NPM/index.d.cts"
cp "$HERE/README.md" "$ROOT/LICENSE-MIT" "$ROOT/LICENSE-APACHE" "$NPM/"
sed "s/\"version\": \"0.0.0\"/\"version\": \"$version\"/" "$HERE/js/package.json" >"$NPM/package.json"
# The package is "type": "module"; node/ holds CommonJS (wasm-bindgen's nodejs glue). web/'s own
# package.json serves resolvers that ignore `exports` (TypeScript's node10): `cowsnap/web` -> its types.
printf '{ "type": "commonjs" }\n' >"$NPM/node/package.json"
printf '{ "type": "module", "main": "cowsnap.js", "types": "../index.d.mts" }\n' >"$NPM/web/package.json"

if [ "$pack" = 1 ]; then
  rm -f "$PKG"/cowsnap-*.tgz
  (cd "$NPM" && npm pack --pack-destination "$PKG" --loglevel=error >/dev/null)
  say "packed: $(ls "$PKG"/cowsnap-*.tgz)"
fi
