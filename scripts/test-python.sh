#!/usr/bin/env bash
# Python bindings (bindings/python), packaged and tested the way they ship:
#   1. the sdist (`python -m build --sdist`), checked to be self-contained (the Rust crates inside);
#   2. a wheel built FROM THAT SDIST (`pip wheel`, in pip's isolated build environment with the
#      build-system requirements: setuptools + setuptools-rust), its libcowsnap.so cross-built with
#      cargo-zigbuild + zig (the `ziglang` package) for glibc 2.17 and tagged manylinux2014;
#   3. `auditwheel show` on it: the tag it reports must be that manylinux tag; the .so must be stripped;
#   4. the wheel installed into a fresh venv, and the pytest suite run against it (from a neutral
#      folder, so `import cowsnap` is the installed package);
#   5. `pip install -e bindings/python` (an editable install, built with the host's cargo) imports.
# Tools live in target/py-tools (a venv: build, setuptools-rust, cargo-zigbuild, ziglang, auditwheel),
# pinned below and installed when missing; the test venv target/py-venv is made anew each run.
# Installs python3 / python3-venv with apt-get when missing. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
say() { printf '[python] %s\n' "$*"; }

need_apt=()
command -v "$PY" >/dev/null 2>&1 || need_apt+=(python3)
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} with apt-get"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" python3-pip
  PY=python3
fi

# 0. Packaging tools, pinned (the wheel's own build requirements come from pyproject.toml instead).
TOOLS=$ROOT/target/py-tools
TOOL_PINS=(build==1.3.0 setuptools==84.2.1 setuptools-rust==1.13.0 cargo-zigbuild==0.24.0 ziglang==0.17.0
  auditwheel==6.8.2)
if [ ! -x "$TOOLS/bin/python" ]; then
  "$PY" -m venv "$TOOLS"
fi
TPY=$TOOLS/bin/python
have=$("$TPY" -m pip freeze 2>/dev/null)
missing=0
for pin in "${TOOL_PINS[@]}"; do grep -qxF "$pin" <<<"$have" || missing=1; done
if [ $missing = 1 ]; then
  say "pip install ${TOOL_PINS[*]} (into target/py-tools)"
  "$TPY" -m pip install -q --upgrade pip
  "$TPY" -m pip install -q "${TOOL_PINS[@]}"
fi

DIST=$ROOT/target/py-dist
rm -rf "$DIST"
mkdir -p "$DIST"

# 1. The sdist.
say "python -m build --sdist bindings/python"
"$TPY" -m build --sdist --no-isolation --outdir "$DIST" bindings/python >"$DIST/sdist.log" 2>&1 || {
  cat "$DIST/sdist.log" >&2; exit 1; }
rm -rf bindings/python/build bindings/python/src/*.egg-info
SDIST=$(ls "$DIST"/cowsnap-*.tar.gz)
listing=$(tar -tzf "$SDIST")
for f in rust/Cargo.toml rust/Cargo.lock rust/core/Cargo.toml rust/core/src/lib.rs rust/ffi/Cargo.toml \
  rust/ffi/build.rs rust/ffi/src/lib.rs pyproject.toml setup.py LICENSE-MIT LICENSE-APACHE src/cowsnap/_lib.py; do
  grep -q "^cowsnap-[^/]*/$f\$" <<<"$listing" || { say "the sdist lacks $f"; exit 1; }
done
if grep -q '/target/' <<<"$listing"; then say "the sdist holds a cargo target/ folder"; exit 1; fi
if grep -qE '\.(so|a|dylib)$' <<<"$listing"; then say "the sdist holds a built library"; exit 1; fi
for l in LICENSE-MIT LICENSE-APACHE; do
  cmp -s "$l" "bindings/python/$l" || { say "bindings/python/$l differs from the root $l"; exit 1; }
done
say "sdist: $(basename "$SDIST") ($(wc -c <"$SDIST") bytes, $(wc -l <<<"$listing") entries, Rust sources inside)"

# 2. The wheel, from the sdist, in an isolated build environment. setuptools-rust runs "$CARGO rustc ...":
#    this wrapper makes that `cargo-zigbuild rustc --target x86_64-unknown-linux-gnu.2.17 ...` (and
#    leaves `cargo metadata` to cargo), which
#    links against glibc 2.17's symbols with zig (manylinux2014).
ARCH=$(uname -m)
PLAT=manylinux_2_17_${ARCH}.manylinux2014_${ARCH}
CARGO_WRAPPER=$TOOLS/bin/cargo-manylinux
cat >"$CARGO_WRAPPER" <<EOF
#!/bin/sh
# Written by scripts/test-python.sh: cargo for setuptools-rust, through cargo-zigbuild for glibc 2.17.
case \$1 in
  rustc|build) sub=\$1; shift
    exec "$TOOLS/bin/cargo-zigbuild" "\$sub" --target ${ARCH}-unknown-linux-gnu.2.17 "\$@" ;;
  *) exec cargo "\$@" ;;
esac
EOF
chmod +x "$CARGO_WRAPPER"
ZIG=$("$TPY" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
rustup target list --installed | grep -qx "${ARCH}-unknown-linux-gnu" || rustup target add "${ARCH}-unknown-linux-gnu"
say "pip wheel $(basename "$SDIST") (cargo-zigbuild, glibc 2.17, tag $PLAT)"
CARGO=$CARGO_WRAPPER CARGO_ZIGBUILD_ZIG_PATH=$ZIG COWSNAP_WHEEL_PLAT=$PLAT \
  CARGO_TARGET_DIR=$ROOT/target/py-build \
  "$TPY" -m pip wheel -q --no-deps --wheel-dir "$DIST" "$SDIST" >"$DIST/wheel.log" 2>&1 || {
  cat "$DIST/wheel.log" >&2; exit 1; }
WHEEL=$(ls "$DIST"/cowsnap-*.whl)
say "wheel: $(basename "$WHEEL") ($(wc -c <"$WHEEL") bytes)"

# 3. auditwheel: the tag it accepts must be the one the wheel claims.
say "auditwheel show $(basename "$WHEEL")"
show=$("$TOOLS/bin/auditwheel" show "$WHEEL" 2>&1) || { echo "$show" >&2; exit 1; }
echo "$show" | tr -s ' \n' ' ' | fold -s -w 100 | sed 's/^/    /'
echo
tr -s ' \n' ' ' <<<"$show" | grep -q "platform tag: \"manylinux_2_17_${ARCH}\"" || {
  say "auditwheel does not accept manylinux_2_17_${ARCH} for this wheel"; exit 1; }
UNPACK=$DIST/unpacked
"$TPY" -m zipfile -e "$WHEEL" "$UNPACK"
SO=$UNPACK/cowsnap/libcowsnap.so
[ -f "$SO" ] || { say "the wheel has no cowsnap/libcowsnap.so"; exit 1; }
if readelf -S "$SO" | grep -q '\.symtab'; then say "libcowsnap.so in the wheel is not stripped"; exit 1; fi
for l in LICENSE-MIT LICENSE-APACHE; do
  ls "$UNPACK"/cowsnap-*.dist-info/licenses/$l >/dev/null || { say "the wheel lacks $l"; exit 1; }
done
say "libcowsnap.so in the wheel: $(wc -c <"$SO") bytes, stripped; needs glibc $(objdump -T "$SO" |
  grep -o 'GLIBC_[0-9.]*' | sort -t. -k2,2n -k3,3n -u | tail -1)"

# 4. A fresh venv with the wheel (and the test dependencies), the suite against it.
VENV=$ROOT/target/py-venv
rm -rf "$VENV"
"$PY" -m venv "$VENV"
VPY=$VENV/bin/python
say "pip install $(basename "$WHEEL") pytest apsw (fresh venv target/py-venv)"
"$VPY" -m pip install -q "$WHEEL" pytest apsw
cd "$ROOT/target"
installed=$("$VPY" -c 'import cowsnap; print(cowsnap.library_path(), cowsnap.__version__)')
case $installed in
  "$VENV"/*) say "import cowsnap -> $installed" ;;
  *) say "import cowsnap did not load the installed package: $installed"; exit 1 ;;
esac
# tests/test_open_dir.py makes its volume directories with the cowsnap CLI.
say "cargo build -p cowsnap-cli (for Volume.open_dir's tests)"
(cd "$ROOT" && cargo build -q -p cowsnap-cli)
export COWSNAP_CLI=$ROOT/target/debug/cowsnap
set +e
"$VPY" -m pytest -q -p no:cacheprovider "$ROOT/bindings/python/tests" "$@"
rc=$?
set -e
cd "$ROOT"
if [ $rc -eq 5 ]; then
  echo "test-python: pytest collected no tests" >&2
  exit 1
fi
[ $rc -eq 0 ] || exit $rc

# 5. Editable install (a developer's): the library is built into src/cowsnap/ with the host's cargo.
EVENV=$ROOT/target/py-venv-editable
[ -x "$EVENV/bin/python" ] || "$PY" -m venv "$EVENV"
say "pip install -e bindings/python (target/py-venv-editable)"
"$EVENV/bin/python" -m pip install -q -e bindings/python >"$DIST/editable.log" 2>&1 || {
  cat "$DIST/editable.log" >&2; exit 1; }
rm -rf bindings/python/build
got=$(cd "$ROOT/target" && "$EVENV/bin/python" -c 'import cowsnap; v = cowsnap.Volume.memory(4096); print(cowsnap.library_path())')
[ "$got" = "$ROOT/bindings/python/src/cowsnap/libcowsnap.so" ] || {
  say "the editable install loads $got, not bindings/python/src/cowsnap/libcowsnap.so"; exit 1; }
say "editable install: import cowsnap -> $got"
say "ok"
