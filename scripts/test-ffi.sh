#!/usr/bin/env bash
# C ABI (libcowsnap), built and installed as a C library is: with cargo-c (`cargo cinstall`, metadata in
# ffi/Cargo.toml) into a staging folder (DESTDIR) with prefix /usr/local. Checks the installed files
# (SONAME libcowsnap.so.<major>.<minor> while 0.x, symlinks, cowsnap.pc with a ${prefix}-relative libdir
# and the Libs.private that rustc lists for a static link, the checked-in header installed as it is),
# the header itself (regenerated with cbindgen and diffed; compiles as C99 and C++17 with -pedantic),
# then compiles the C tests with -Wall -Wextra -Werror against the installed library through
# pkg-config (--define-prefix: the staged copy), dynamically AND statically (--static), runs every one
# under valgrind memcheck (any error or any leak fails), and builds and runs examples/c/backup.c the same
# way, and through the installed CMake package (find_package(cowsnap)).
# Installs gcc, g++, make, cmake, pkg-config, valgrind with apt-get and cargo-c with cargo when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=$ROOT/tests/shared

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v gzip >/dev/null 2>&1 || need+=(gzip)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-ffi: installing ${need[*]} with apt-get"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" libc6-dev
fi
# cargo-c, pinned: the newest release that builds with this toolchain (0.10.26 needs rustc 1.97).
CARGO_C_VERSION=0.10.24+cargo-0.98.0
if ! cargo cinstall --version 2>/dev/null | grep -qF "${CARGO_C_VERSION%%+*}"; then
  echo "test-ffi: cargo install cargo-c --version $CARGO_C_VERSION --locked (once per machine; several minutes)"
  cargo install -q cargo-c --version "$CARGO_C_VERSION" --locked
fi

echo "--- cargo: header up to date, exports guarded, codes"
if ! log=$(cargo test -q -p cowsnap-ffi --test header --test exports 2>&1); then
  echo "$log" >&2; exit 1
fi
echo "$log" | grep -E "^test result" || true

# The library as a distribution installs it: `cargo cinstall` (it builds too) into a staging folder.
OUT=$ROOT/target/ffi-c
rm -rf "$OUT"
mkdir -p "$OUT"
STAGE=$OUT/stage
PREFIX=/usr/local
echo "--- cargo cinstall --release -p cowsnap-ffi --prefix $PREFIX --libdir $PREFIX/lib --destdir ${STAGE#"$ROOT"/}"
cargo cinstall --release -p cowsnap-ffi --prefix "$PREFIX" --libdir "$PREFIX/lib" --destdir "$STAGE" \
  >"$OUT/cinstall.log" 2>&1 || { cat "$OUT/cinstall.log" >&2; exit 1; }
LIBDIR=$STAGE$PREFIX/lib
PC=$LIBDIR/pkgconfig/cowsnap.pc
(cd "$STAGE" && find . -type f -o -type l | sort | sed 's/^\./    /')

VERSION=$(sed -n 's/^#define COWSNAP_VERSION_STRING "\(.*\)"/\1/p' ffi/include/cowsnap.h)
IFS=. read -r MAJOR MINOR PATCH <<<"$VERSION"
# SONAME policy (ffi/README.md): libcowsnap.so.0.<minor> while the major is 0 (0.0.<patch> for 0.0.x),
# libcowsnap.so.<major> from 1.0 on.
if [ "$MAJOR" != 0 ]; then SOVER=$MAJOR; elif [ "$MINOR" != 0 ]; then SOVER=0.$MINOR; else SOVER=0.0.$PATCH; fi
SONAME=libcowsnap.so.$SOVER
echo "--- installed files: SONAME $SONAME, pkg-config, header"
soname=$(readelf -d "$LIBDIR/libcowsnap.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "$SONAME" ] || { echo "test-ffi: SONAME is '$soname', expected $SONAME" >&2; exit 1; }
[ -L "$LIBDIR/libcowsnap.so" ] && [ -e "$LIBDIR/$SONAME" ] || {
  echo "test-ffi: the libcowsnap.so -> $SONAME links are missing" >&2; exit 1; }
echo "SONAME: $soname ($(cd "$LIBDIR" && ls libcowsnap.so* | tr '\n' ' '))"
cmp ffi/include/cowsnap.h "$STAGE$PREFIX/include/cowsnap.h" || {
  echo "test-ffi: the installed header is not the checked-in one" >&2; exit 1; }
grep -Eq '^libdir=\$\{(exec_)?prefix\}/lib$' "$PC" || {
  echo "test-ffi: cowsnap.pc's libdir is not relative to \${prefix}:" >&2; cat "$PC" >&2; exit 1; }
# Libs.private must name every library rustc says a static link of Rust's std needs.
echo '' >"$OUT/empty.rs"
native=$(rustc --crate-type staticlib --crate-name empty --print native-static-libs -o "$OUT/libempty.a" "$OUT/empty.rs" 2>&1 |
  sed -n 's/.*native-static-libs: //p')
private=$(sed -n 's/^Libs.private: //p' "$PC")
for l in $native; do
  grep -qw -- "$l" <<<"$private" || {
    echo "test-ffi: cowsnap.pc's Libs.private ($private) lacks $l (rustc: $native)" >&2; exit 1; }
done
[ "$(PKG_CONFIG_PATH=$LIBDIR/pkgconfig pkg-config --modversion cowsnap)" = "$VERSION" ]
echo "cowsnap.pc: $(grep -E '^(libdir|Libs.private)' "$PC" | tr '\n' ' ')"
# pkg-config of the staged copy: --define-prefix makes ${prefix} the folder above lib/pkgconfig.
PKGC=(env PKG_CONFIG_PATH="$LIBDIR/pkgconfig" pkg-config --define-prefix)
read -ra CFLAGS_PC <<<"$("${PKGC[@]}" --cflags cowsnap)"
read -ra LIBS_PC <<<"$("${PKGC[@]}" --libs cowsnap)"
# Static: the archive itself (the .so beside it would win over -lcowsnap), then Libs.private.
read -ra STATIC_LIBS <<<"$("${PKGC[@]}" --static --libs-only-l cowsnap | sed 's/-lcowsnap//')"
LIB=$LIBDIR

echo "--- header alone: C99 and C++17, -pedantic"
printf '#include "cowsnap.h"\nint main(void) { return COWSNAP_OK; }\n' > "$OUT/h.c"
gcc -std=c99 -pedantic -Wall -Wextra -Werror -Iffi/include "$OUT/h.c" -fsyntax-only
cp "$OUT/h.c" "$OUT/h.cpp"
g++ -std=c++17 -pedantic -Wall -Wextra -Werror -Iffi/include "$OUT/h.cpp" -fsyntax-only

echo "--- compile against the installed library (dynamic + static), through pkg-config"
CFLAGS=(-std=c99 -Wall -Wextra -Werror -g "${CFLAGS_PC[@]}" -Itests/c)
# The conformance table as a C header for tests/c/test_conformance.c (the C runner reads no JSON).
python3 tests/conformance/to_c.py "$OUT/conformance_cases.h"
CFLAGS+=(-I"$OUT")
for t in test_api test_files test_stress test_vectors test_conformance test_open_dir; do
  gcc "${CFLAGS[@]}" "tests/c/$t.c" "${LIBS_PC[@]}" -lpthread -Wl,-rpath,"$LIB" -o "$OUT/$t-dynamic"
  gcc "${CFLAGS[@]}" "tests/c/$t.c" "$LIB/libcowsnap.a" "${STATIC_LIBS[@]}" -o "$OUT/$t-static"
done
g++ -std=c++17 -Wall -Wextra -Werror "${CFLAGS_PC[@]}" tests/c/test_cpp.cpp "${LIBS_PC[@]}" \
  -Wl,-rpath,"$LIB" -o "$OUT/test_cpp"
# A program built against the first header (frozen in tests/c/compat; the library's header must not
# be on the include path), linked against today's library: the old structs keep working.
gcc -std=c99 -Wall -Wextra -Werror -g -Itests/c/compat tests/c/compat/test_v0.c -L"$LIB" -lcowsnap \
  -Wl,-rpath,"$LIB" -o "$OUT/test_v0"
# The dynamic tests must depend on the versioned SONAME, the static ones on no libcowsnap at all.
readelf -d "$OUT/test_api-dynamic" | grep -q "NEEDED.*\[$SONAME\]" || {
  echo "test-ffi: test_api-dynamic does not need $SONAME" >&2; exit 1; }
if readelf -d "$OUT/test_api-static" | grep -q 'NEEDED.*libcowsnap'; then
  echo "test-ffi: test_api-static links libcowsnap dynamically" >&2; exit 1
fi

KERNEL_COW="$SHARED/vectors/kernel/basic-4k/s0.cow.gz"
gzip -dc "$KERNEL_COW" > "$OUT/kernel-basic-4k-s0.cow"

# (Lost in db5464d, which left every "under valgrind" run without valgrind.)
VG=(valgrind -q --leak-check=full --show-leak-kinds=all --errors-for-leak-kinds=all --error-exitcode=1)
run() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  "${VG[@]}" "$@" > "$OUT/$name.log" 2>&1 || {
    echo "FAILED: $name ($*)" >&2; cat "$OUT/$name.log" >&2; exit 1; }
  echo "ok  $name under valgrind ($((SECONDS - t0)) s): $(tail -1 "$OUT/$name.log")"
}

echo "--- cargo build -p cowsnap-cli (test_open_dir makes its volume directories with it)"
cargo build -q -p cowsnap-cli
CLI=$ROOT/target/debug/cowsnap

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
  run "test_conformance-$kind" "$OUT/test_conformance-$kind" "$OUT/scratch-$kind"
  # Volume directories made by the cowsnap CLI, opened from C: policies and the lock.
  run "test_open_dir-$kind" "$OUT/test_open_dir-$kind" "$CLI" "$OUT/scratch-$kind"
done
run test_cpp "$OUT/test_cpp"
run test_v0 "$OUT/test_v0" "$OUT/scratch-dynamic"
# The stress test natively, with more writes than valgrind can afford.
"$OUT/test_stress-dynamic" 5000 | tail -1

echo "--- examples/c/backup.c with pkg-config --cflags --libs cowsnap (and --static)"
cc -std=c99 -Wall -Wextra -Werror -o "$OUT/backup" examples/c/backup.c "${CFLAGS_PC[@]}" "${LIBS_PC[@]}" -lpthread
mkdir -p "$OUT/backup-run"
LD_LIBRARY_PATH=$LIB run backup "$OUT/backup" "$OUT/backup-run"
cat "$OUT/backup.log"
cc -std=c99 -Wall -Wextra -Werror -o "$OUT/backup-static" examples/c/backup.c "${CFLAGS_PC[@]}" \
  "$LIB/libcowsnap.a" "${STATIC_LIBS[@]}"
"$OUT/backup-static" "$OUT/backup-run" | tail -1

echo "--- examples/c/backup.c with CMake: find_package(cowsnap) from the staged prefix"
mkdir -p "$OUT/cmake-src"
cat >"$OUT/cmake-src/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.13)
project(backup C)
find_package(cowsnap $MAJOR.$MINOR REQUIRED CONFIG)
add_executable(backup "$ROOT/examples/c/backup.c")
target_link_libraries(backup PRIVATE cowsnap::cowsnap)
CMAKE
cmake -S "$OUT/cmake-src" -B "$OUT/cmake-build" -DCMAKE_PREFIX_PATH="$STAGE$PREFIX" >"$OUT/cmake.log" 2>&1 &&
  cmake --build "$OUT/cmake-build" >>"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log" >&2; exit 1; }
readelf -d "$OUT/cmake-build/backup" | grep -q "NEEDED.*\[$SONAME\]" || {
  echo "test-ffi: the CMake-built backup does not need $SONAME" >&2; exit 1; }
LD_LIBRARY_PATH=$LIB "$OUT/cmake-build/backup" "$OUT/backup-run" | tail -1
# The version file follows the SONAME policy: the next minor (another SONAME while 0.x) is refused.
sed -i "s/find_package(cowsnap $MAJOR.$MINOR /find_package(cowsnap $MAJOR.$((MINOR + 1)) /" "$OUT/cmake-src/CMakeLists.txt"
if cmake -S "$OUT/cmake-src" -B "$OUT/cmake-build-next" -DCMAKE_PREFIX_PATH="$STAGE$PREFIX" >"$OUT/cmake-next.log" 2>&1; then
  echo "test-ffi: find_package(cowsnap $MAJOR.$((MINOR + 1))) accepted version $VERSION" >&2; exit 1
fi
echo "CMake: find_package(cowsnap $MAJOR.$MINOR) -> cowsnap::cowsnap ok; $MAJOR.$((MINOR + 1)) refused"

echo "test-ffi: all passed"
