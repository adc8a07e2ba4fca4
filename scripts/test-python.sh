#!/usr/bin/env bash
# Python bindings: installs the package the way a user would (`pip install ./bindings/python`, which
# builds libcowsnap with cargo and ships it inside the package) into a private venv, with pytest and
# apsw, then runs the pytest suite (API, errors, bytes-like, threads, the SQLite live-backup example,
# and the cross-language replay of the shared vectors against the kernel's images).
# The venv lives in target/py-venv (git-ignored, reused: re-runs only reinstall the package, and
# cargo's incremental build makes that quick). Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=$ROOT/target/py-venv

need_apt=()
command -v "$PY" >/dev/null 2>&1 || need_apt+=(python3)
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} with apt-get"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_apt[@]}" python3-pip
  PY=python3
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python
if ! "$VPY" -c 'import pytest, apsw' >/dev/null 2>&1; then
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -m pip install -q pytest apsw
fi

# The package as a user installs it: builds the Rust cdylib (cargo build --release -p cowsnap-ffi).
"$VPY" -m pip install -q --force-reinstall --no-deps ./bindings/python
rm -rf bindings/python/build  # setuptools' in-tree scratch space

# Run from a neutral directory so that `import cowsnap` is the installed package, not the source tree.
cd "$ROOT/target"
set +e
"$VPY" -m pytest -q -p no:cacheprovider "$ROOT/bindings/python/tests" "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "test-python: pytest collected no tests" >&2
  exit 1
fi
exit $rc
