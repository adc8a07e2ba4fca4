#!/usr/bin/env bash
# C ABI (libcowsnap): builds the library (release, shared with the Python package's build), checks the
# header (regenerated with cbindgen and diffed; compiles as C99 and C++17 with -pedantic), compiles the
# C tests with -Wall -Wextra -Werror linked dynamically AND statically, runs every one under valgrind
# memcheck (any error or any leak fails), installs with `make -C ffi install` into a scratch prefix and
# builds examples/c/backup.c there through pkg-config, and runs it under valgrind too.
# Installs gcc, g++, make, pkg-config, valgrind with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${COWSNAP_SHARED:-$ROOT/../shared}

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v gzip >/dev/null 2>&1 || need+=(gzip)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-ffi: installing ${need[*]} with apt-get"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" libc6-dev
fi

echo "--- cargo: header up to date, exports guarded, codes"
if ! log=$(cargo test -q -p cowsnap-ffi --test header --test exports 2>&1); then
  echo "$log" >&2; exit 1
fi
echo "$log" | grep -E "^test result" || true

echo "--- cargo build --release -p cowsnap-ffi"
cargo build -q --release -p cowsnap-ffi
LIB=$ROOT/target/release
OUT=$ROOT/target/ffi-c
rm -rf "$OUT"
mkdir -p "$OUT/lib"
# The dynamic tests find libcowsnap.so.0 (its SONAME) here through their rpath.
ln -sf "$LIB/libcowsnap.so" "$OUT/lib/libcowsnap.so.0"

CFLAGS=(-std=c99 -Wall -Wextra -Werror -g -Iffi/include -Itests/c)
STATIC_LIBS=(-lpthread -ldl -lm)
VG=(valgrind -q --leak-check=full --show-leak-kinds=all --errors-for-leak-kinds=all --error-exitcode=1)

echo "--- header alone: C99 and C++17, -pedantic"
printf '#include "cowsnap.h"\nint main(void) { return COWSNAP_OK; }\n' > "$OUT/h.c"
gcc -std=c99 -pedantic -Wall -Wextra -Werror -Iffi/include "$OUT/h.c" -fsyntax-only
cp "$OUT/h.c" "$OUT/h.cpp"
g++ -std=c++17 -pedantic -Wall -Wextra -Werror -Iffi/include "$OUT/h.cpp" -fsyntax-only

echo "--- compile (dynamic + static)"
for t in test_api test_files test_stress test_vectors; do
  gcc "${CFLAGS[@]}" "tests/c/$t.c" -L"$LIB" -lcowsnap -lpthread -Wl,-rpath,"$OUT/lib" -o "$OUT/$t-dynamic"
  gcc "${CFLAGS[@]}" "tests/c/$t.c" "$LIB/libcowsnap.a" "${STATIC_LIBS[@]}" -o "$OUT/$t-static"
done
g++ -std=c++17 -Wall -Wextra -Werror -Iffi/include tests/c/test_cpp.cpp -L"$LIB" -lcowsnap \
  -Wl,-rpath,"$OUT/lib" -o "$OUT/test_cpp"
# The dynamic tests must depend on the versioned SONAME, the static ones on no libcowsnap at all.
readelf -d "$OUT/test_api-dynamic" | grep -q 'NEEDED.*\[libcowsnap.so.0\]' || {
  echo "test-ffi: test_api-dynamic does not need libcowsnap.so.0" >&2; exit 1; }
if readelf -d "$OUT/test_api-static" | grep -q 'NEEDED.*libcowsnap'; then
  echo "test-ffi: test_api-static links libcowsnap dynamically" >&2; exit 1
fi

KERNEL_COW="$SHARED/vectors/kernel/basic-4k/s0.cow.gz"
gzip -dc "$KERNEL_COW" > "$OUT/kernel-basic-4k-s0.cow"

run() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  "${VG[@]}" "$@" > "$OUT/$name.log" 2>&1 || {
    echo "FAILED: $name ($*)" >&2; cat "$OUT/$name.log" >&2; exit 1; }
  echo "ok  $name under valgrind ($((SECONDS - t0)) s): $(tail -1 "$OUT/$name.log")"
}

echo "--- run under valgrind memcheck (errors or leaks fail)"
for kind in dynamic static; do
  mkdir -p "$OUT/scratch-$kind"
  run "test_api-$kind" "$OUT/test_api-$kind" "$OUT/scratch-$kind"
  # The file edges: wrong kinds of paths, one file twice, zeroed COWs, ENOSPC and a read-only
  # mount on small tmpfs mounts (root; skipped with a message otherwise). Prints its skips.
  run "test_files-$kind" "$OUT/test_files-$kind" "$OUT/scratch-$kind"
  grep SKIPPED "$OUT/test_files-$kind.log" || true
  run "test_stress-$kind" "$OUT/test_stress-$kind" 300
  run "test_vectors-$kind" "$OUT/test_vectors-$kind" "$OUT/kernel-basic-4k-s0.cow"
done
run test_cpp "$OUT/test_cpp"
# The stress test natively, with more writes than valgrind can afford.
"$OUT/test_stress-dynamic" 5000 | tail -1

echo "--- make -C ffi install PREFIX=...; build examples/c/backup.c with pkg-config"
PREFIX=$OUT/prefix
make -s -C ffi install PREFIX="$PREFIX" >/dev/null
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
[ "$(pkg-config --modversion cowsnap)" = "$(sed -n 's/^#define COWSNAP_VERSION_STRING "\(.*\)"/\1/p' ffi/include/cowsnap.h)" ]
# shellcheck disable=SC2046
cc -std=c99 -Wall -Wextra -Werror -o "$OUT/backup" examples/c/backup.c $(pkg-config --cflags --libs cowsnap) -lpthread
mkdir -p "$OUT/backup-run"
LD_LIBRARY_PATH=$PREFIX/lib run backup "$OUT/backup" "$OUT/backup-run"
cat "$OUT/backup.log"
# Statically, through pkg-config --static.
# shellcheck disable=SC2046
cc -std=c99 -Wall -Wextra -Werror -o "$OUT/backup-static" examples/c/backup.c \
  -I"$PREFIX/include" "$PREFIX/lib/libcowsnap.a" $(pkg-config --static --libs-only-l cowsnap | sed 's/-lcowsnap//') -lpthread
"$OUT/backup-static" "$OUT/backup-run" | tail -1

echo "test-ffi: all passed"
