#!/usr/bin/env bash
# The one command that runs every test of cowsnap, on a fresh machine or an old one.
# It installs what the tests need when it is missing (rust targets and tools, Python and npm packages,
# Debian packages), then runs each component's suite. Usage: ./test.sh [component...]
# Components: lint, no_std, rust, package, then whatever scripts/test-*.sh exist.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
ROOT=$PWD
# The kernel vectors every suite replays are in the repository (tests/shared, a copy of the project's
# shared set): a clone alone passes, and nothing outside the repository is read.

step() { printf '\n=== %s ===\n' "$*"; }

only=("$@")
want() { [ ${#only[@]} -eq 0 ] && return 0; for o in "${only[@]}"; do [ "$o" = "$1" ] && return 0; done; return 1; }

if want lint; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy"
  cargo clippy --workspace --all-targets -- -D warnings
  step "cargo doc (every crate, warnings are errors)"
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
fi

if want no_std; then
  step "core: no_std build for wasm32-unknown-unknown"
  rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  cargo build -p cowsnap-core --no-default-features --target wasm32-unknown-unknown
fi

if want rust; then
  step "cargo test (workspace)"
  cargo test --workspace
fi

if want package; then
  step "cargo publish --dry-run (every publishable crate); the packaged core builds and passes its own tests"
  for d in core managed cli ffi bindings/python; do
    for l in LICENSE-MIT LICENSE-APACHE; do cmp -s "$l" "$d/$l" || { echo "$d/$l differs from ./$l" >&2; exit 1; }; done
  done
  # --no-verify: cargo treats the packaged cowsnap-core as an immutable registry crate and would
  # reuse a stale build of it when verifying the crates above it; the core is verified below.
  rm -rf target/package
  cargo publish --workspace --dry-run --allow-dirty --no-verify -q
  for c in core managed cli ffi; do
    files=$(tar tzf "target/package/tmp-crate/cowsnap-$c-0.1.0.crate")
    [[ $files == *LICENSE-APACHE* && $files == *LICENSE-MIT* ]] ||
      { echo "cowsnap-$c: no license files in the package" >&2; exit 1; }
  done
  # Unpacked where cargo itself verifies packages (cargo keeps target/package out of the workspace).
  tar xzmf target/package/tmp-crate/cowsnap-core-*.crate -C target/package  # m: fresh mtimes, so cargo rebuilds
  # --features testkit: the tests' shared devices (a path dev-dependency, which packaging drops).
  (cd target/package/cowsnap-core-*/ && cargo test -q --features testkit --target-dir "$ROOT/target/package-test")
fi

# Each front end owns a script: scripts/test-<name>.sh (installs its own tools, runs its suite).
for s in scripts/test-*.sh; do
  [ -e "$s" ] || continue
  name=$(basename "$s" .sh); name=${name#test-}
  if want "$name"; then
    step "$name"
    bash "$s"
  fi
done

step "all suites passed"
