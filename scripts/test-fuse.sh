#!/usr/bin/env bash
# cowsnap mount (FUSE): real file systems on the origin and snapshot files, and the seed's MariaDB
# backup for real (issue 10). Runs as root (mount, loop devices, /dev/fuse); installs what it needs.
#   1. ext4 and XFS: mkfs on MOUNTPOINT/origin, loop-mount, write, freeze + snapshot, keep writing,
#      loop-mount the snapshot read-only and find the old files; fsck of the snapshot is clean.
#      Snapshots are created, listed and removed while mounted (through the mount process).
#   2. Throughput: dd on ext4 loop-mounted over the FUSE file vs over a plain loop file.
#   3. MariaDB: datadir on ext4 on the cowsnap origin, a client inserting all along,
#      FLUSH TABLES WITH READ LOCK -> cowsnap snapshot -> row count -> UNLOCK TABLES; the snapshot's
#      datadir is copied out and a second server on it has CHECK TABLE OK and the recorded row count.
# Everything is cleaned up on exit, failure included. Usage: scripts/test-fuse.sh [ext4|xfs|fsync|bench|mariadb]...
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)

say() { printf '[fuse] %s\n' "$*"; }
fail() { printf '[fuse] FAIL: %s\n' "$*" >&2; exit 1; }

only=("$@")
want() { [ ${#only[@]} -eq 0 ] && return 0; for o in "${only[@]}"; do [ "$o" = "$1" ] && return 0; done; return 1; }

# --- preconditions: these are machine limits, reported, never hidden ---------------------------------
if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED fuse: needs root (mount(2), loop devices, FUSE mount as root); run: sudo scripts/test-fuse.sh"
  exit 0
fi
if [ ! -c /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  if [ ! -c /dev/fuse ]; then
    echo "SKIPPED fuse: /dev/fuse does not exist on this machine (no FUSE in the kernel)"
    exit 0
  fi
fi

# --- tools --------------------------------------------------------------------------------------------
pkgs=()
command -v mkfs.ext4 >/dev/null || pkgs+=(e2fsprogs)
command -v e2fsck >/dev/null || pkgs+=(e2fsprogs)
command -v mkfs.xfs >/dev/null || pkgs+=(xfsprogs)
command -v losetup >/dev/null || pkgs+=(mount)
command -v fsfreeze >/dev/null || pkgs+=(util-linux)
if want mariadb; then
  command -v mariadbd >/dev/null || command -v mysqld >/dev/null || pkgs+=(mariadb-server)
  command -v mariadb >/dev/null || pkgs+=(mariadb-client)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  say "installing ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d (if present) keeps the packaged mariadb service from starting; ours run by hand.
  apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

say "building cowsnap (release)"
cargo build --release -q -p cowsnap-cli
B=$ROOT/target/release/cowsnap
cow() { "$B" "$@"; }

WORK=$(mktemp -d /tmp/cowsnap-fuse.XXXXXX)
MOUNTS=()      # file system mount points to unmount at exit (loop mounts), in order of mounting
FUSES=()       # cowsnap mount points
PIDS=()        # background processes (insert loop, servers) to stop
DBSOCKS=()     # mariadb sockets to shut down

cleanup() {
  local rc=$?
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for s in "${DBSOCKS[@]}"; do
    [ -S "$s" ] && mariadb-admin --no-defaults --socket="$s" -u root shutdown 2>/dev/null
  done
  for f in "$WORK"/*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  sleep 0.2
  for f in "$WORK"/*.pid; do
    [ -f "$f" ] || continue
    for _ in $(seq 50); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$(cat "$f")" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${MOUNTS[$i]}
    mountpoint -q "$m" || continue
    fsfreeze -u "$m" 2>/dev/null
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  # Loop devices whose backing file is ours (mount -o loop detaches on umount; this is the safety net).
  losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v w="$WORK" 'index($2, w) == 1 {print $1}' |
    xargs -r -n1 losetup -d 2>/dev/null
  for ((i = ${#FUSES[@]} - 1; i >= 0; i--)); do
    m=${FUSES[$i]}
    if mountpoint -q "$m" 2>/dev/null || grep -q " $m " /proc/self/mountinfo; then
      "$B" -q umount "$m" 2>/dev/null || umount -l "$m"
    fi
  done
  rm -rf "$WORK"
  if [ $rc -ne 0 ]; then echo "[fuse] FAILED (exit $rc)" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Mounts a cowsnap volume with --daemon and registers it for cleanup.
fuse_mount() { mkdir -p "$2"; FUSES+=("$2"); cow -q mount --daemon "$1" "$2" "${@:3}"; }
loop_mount() { mkdir -p "${@: -1}"; MOUNTS+=("${@: -1}"); mount "$@"; }
now_ms() { date +%s%3N; }

# Writes N files of 1 MiB of random data (name prefix $2) into $1 and records their sums in $3.
write_files() {
  local dir=$1 prefix=$2 sums=$3 n=$4
  for i in $(seq "$n"); do head -c 1M /dev/urandom >"$dir/$prefix$i"; done
  (cd "$dir" && sha256sum "$prefix"* >"$sums")
}

# --- 1. ext4 / XFS ------------------------------------------------------------------------------------
fs_scenario() {
  local fs=$1
  local V=$WORK/vol-$fs M=$WORK/mnt-$fs O=$WORK/o-$fs S=$WORK/s-$fs
  say "$fs: volume, mount, mkfs on the FUSE origin"
  cow -q create "$V" --size 512M
  fuse_mount "$V" "$M"
  [ "$(stat -c %s "$M/origin")" = $((512 << 20)) ] || fail "$fs: origin file size"
  if [ "$fs" = ext4 ]; then mkfs.ext4 -q -F "$M/origin"; else mkfs.xfs -q -f "$M/origin"; fi
  loop_mount -o loop "$M/origin" "$O"
  write_files "$O" old "$WORK/old-$fs.sha" 16
  mkdir "$O/dir" && echo before >"$O/dir/note"
  sync

  if [ "$fs" = ext4 ]; then
    # What lvcreate -s does (dm suspend freezes the file system): ext4's journal is clean when frozen.
    say "$fs: fsfreeze, snapshot while mounted, thaw"
    fsfreeze -f "$O"
    cow -q snapshot "$V" --name s1 --size 256M || { fsfreeze -u "$O"; fail "$fs: snapshot while mounted"; }
    fsfreeze -u "$O"
  else
    # A frozen XFS keeps a covered but dirty log: its snapshot needs log recovery, which a read-only
    # loop device cannot do (tested below with s3). remount,ro writes the unmount record: clean log.
    say "$fs: remount read-only, snapshot while mounted, remount read-write"
    mount -o remount,ro "$O"
    cow -q snapshot "$V" --name s1 --size 256M || { mount -o remount,rw "$O"; fail "$fs: snapshot while mounted"; }
    mount -o remount,rw "$O"
  fi
  [ -f "$M/s1" ] || fail "$fs: $M/s1 did not appear"
  [ "$(stat -c %A "$M/s1")" = "-r--r--r--" ] || fail "$fs: snapshot file should be read-only"
  if echo x 2>/dev/null >"$M/s1"; then fail "$fs: snapshot file accepted a write"; fi

  say "$fs: keep writing on the origin"
  head -c 1M /dev/urandom >"$O/old1"      # overwrite
  rm "$O/old2"                              # delete
  write_files "$O" new "$WORK/new-$fs.sha" 8
  echo after >"$O/dir/note"
  sync
  cow lvs "$V" | tee "$WORK/lvs-$fs.txt"
  grep -qE '^ +s1 +swi-a-s---' "$WORK/lvs-$fs.txt" || fail "$fs: lvs does not list s1 active"
  data=$(cow lvs "$V" --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["report"][0]["lv"]; print([x for x in r if x["lv_name"]=="s1"][0]["data_percent"])')
  python3 -c "import sys; sys.exit(0 if float('$data') > 1 else 1)" || fail "$fs: Data% of s1 should have risen ($data)"

  say "$fs: check the unmounted snapshot of the frozen file system"
  if [ "$fs" = ext4 ]; then
    e2fsck -fn "$M/s1" >"$WORK/fsck-$fs.txt" 2>&1 || { cat "$WORK/fsck-$fs.txt"; fail "e2fsck -fn on the snapshot"; }
  else
    xfs_repair -n "$M/s1" >"$WORK/fsck-$fs.txt" 2>&1 || { cat "$WORK/fsck-$fs.txt"; fail "xfs_repair -n on the snapshot"; }
  fi
  say "$fs: fsck of the snapshot is clean"

  say "$fs: loop-mount the snapshot read-only; the old files are there"
  if [ "$fs" = ext4 ]; then loop_mount -o loop,ro "$M/s1" "$S"; else loop_mount -o loop,nouuid,ro "$M/s1" "$S"; fi
  (cd "$S" && sha256sum -c --quiet "$WORK/old-$fs.sha") || fail "$fs: snapshot files differ from the originals"
  [ "$(cat "$S/dir/note")" = before ] || fail "$fs: snapshot note"
  [ ! -e "$S/new1" ] || fail "$fs: a file written after the snapshot is in it"
  (cd "$O" && sha256sum -c --quiet "$WORK/new-$fs.sha") || fail "$fs: origin lost new files"
  [ ! -e "$O/old2" ] && [ "$(cat "$O/dir/note")" = after ] || fail "$fs: origin state"
  cmp -s "$O/old1" "$S/old1" && fail "$fs: overwritten file is the same in origin and snapshot"

  say "$fs: remove is refused while the snapshot is loop-mounted, merge while mounted"
  if out=$(cow remove "$V/s1" 2>&1); then fail "$fs: remove of a loop-mounted snapshot succeeded"; fi
  grep -q "in use" <<<"$out" || fail "$fs: unexpected refusal: $out"
  if out=$(cow merge "$V/s1" 2>&1); then fail "$fs: merge while mounted succeeded"; fi
  grep -q "mounted" <<<"$out" || fail "$fs: unexpected merge refusal: $out"
  umount "$S"
  if [ "$fs" = xfs ]; then
    say "$fs: a snapshot of the frozen XFS mounts with nouuid,ro,norecovery (its log is dirty)"
    fsfreeze -f "$O"
    cow -q snapshot "$V" --name s3 --size 64M || { fsfreeze -u "$O"; fail "$fs: snapshot s3"; }
    fsfreeze -u "$O"
    echo later >"$O/dir/note"; sync
    if mount -o loop,nouuid,ro "$M/s3" "$S" 2>/dev/null; then umount "$S"; say "$fs: (mounted without norecovery)"; fi
    loop_mount -o loop,nouuid,ro,norecovery "$M/s3" "$S"
    (cd "$O" && sha256sum -c --quiet "$WORK/new-$fs.sha") || fail "$fs: origin new files"
    (cd "$S" && sha256sum -c --quiet "$WORK/new-$fs.sha") || fail "$fs: s3 lacks the files frozen in it"
    [ "$(cat "$S/dir/note")" = after ] || fail "$fs: s3 note"
    umount "$S"
    cow -q remove "$V/s3"
  fi
  cow -q snapshot "$V" --name s2 --size 64M
  [ "$(cow lvs "$V" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["report"][0]["lv"]))')" = 3 ] || fail "$fs: lvs rows"
  cow -q remove "$V/s1"
  cow -q remove "$V/s2"
  [ ! -e "$M/s1" ] || fail "$fs: $M/s1 still there after remove"
  [ ! -e "$V/s1.cow" ] || fail "$fs: s1.cow still there after remove"
  umount "$O"
  cow -q umount "$M"
  [ ! -S "$V/.cowsnap.sock" ] || fail "$fs: control socket left after umount"
  # The manifest is intact and the volume opens without the mount process.
  [ "$(cow lvs "$V" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["report"][0]["lv"]))')" = 1 ] || fail "$fs: manifest after umount"
  rm -rf "$V"
}

if want ext4; then fs_scenario ext4; fi
if want xfs; then fs_scenario xfs; fi

if want ext4; then
  say "foreground mount: SIGTERM unmounts, flushes and exits 0"
  V=$WORK/vol-fg M=$WORK/mnt-fg
  cow -q create "$V" --size 16M
  mkdir -p "$M"; FUSES+=("$M")
  "$B" -q mount "$V" "$M" & fg=$!
  for _ in $(seq 100); do [ -e "$M/origin" ] && break; sleep 0.05; done
  [ -e "$M/origin" ] || fail "foreground mount did not come up"
  printf 'ABCD' | dd of="$M/origin" bs=4 seek=1024 conv=notrunc,fsync status=none
  # Commands reach the foreground mount process too.
  [ "$(cow read "$V" --offset 4096 --len 4)" = ABCD ] || fail "read through the mount process"
  # --writable-snapshots: the snapshot file takes writes (the origin keeps its data).
  kill -TERM $fg; wait $fg || fail "foreground mount exited non-zero"
  cow -q snapshot "$V" --name w --size 4M
  "$B" -q mount --writable-snapshots "$V" "$M" & fg=$!
  for _ in $(seq 100); do [ -e "$M/w" ] && break; sleep 0.05; done
  [ "$(stat -c %A "$M/w")" = "-rw-r--r--" ] || fail "writable snapshot file mode"
  printf 'WXYZ' | dd of="$M/w" bs=4 seek=1024 conv=notrunc,fsync status=none
  [ "$(head -c 4100 "$M/w" | tail -c 4)" = WXYZ ] || fail "snapshot write through FUSE"
  [ "$(cow read "$V/w" --offset 4096 --len 4)" = WXYZ ] || fail "snapshot write seen by cowsnap read"
  [ "$(cow read "$V" --offset 4096 --len 4)" = ABCD ] || fail "origin changed by a snapshot write"
  # A write through the control socket is seen through the (invalidated) page cache.
  cow -q write "$V" --offset 4096 --fill 0x45 --len 4
  [ "$(dd if="$M/origin" bs=4 skip=1024 count=1 status=none)" = EEEE ] || fail "stale page cache after cowsnap write"
  cow -q write "$V" --offset 4096 --len 4 --from <(printf ABCD)
  kill -TERM $fg
  wait $fg || fail "foreground mount exited non-zero"
  ! grep -q " $M " /proc/self/mountinfo || fail "still mounted after SIGTERM"
  [ "$(cow read "$V" --offset 4096 --len 4)" = ABCD ] || fail "data after unmount"
  rm -rf "$V"
fi

if want ext4 || want fsync; then
  # fsync must make the data durable through the engine's commit, with and without the kernel's
  # write-back cache (--writeback-cache). A snapshot makes every origin write wait in memory for its
  # exceptions' commit (group commit); the mount process is killed (SIGKILL: no unmount, no flush)
  # right after fsync returns, so only what fsync made durable survives.
  for mode in --writeback-cache ""; do
    say "fsync is durable (mount ${mode:-write-through}): SIGKILL after fsync, data and snapshot intact"
    V=$WORK/vol-sync M=$WORK/mnt-sync
    cow -q create "$V" --size 64M
    cow -q write "$V" --offset 0 --fill 0x11 --len 16M
    cow -q snapshot "$V" --name s --size 32M
    fuse_mount "$V" "$M" $mode
    pid=$(sed -n 's/^cowsnap mount: pid \([0-9]*\) serving.*/\1/p' "$V/.cowsnap-mount.log" | tail -1)
    [ -n "$pid" ] && kill -0 "$pid" || fail "fsync: no mount process pid in the log"
    head -c 6M /dev/urandom >"$WORK/sync.dat"
    for round in 1 2 3; do
      off=$((round * 5))   # MiB: every round overwrites chunks the snapshot still shares
      dd if="$WORK/sync.dat" of="$M/origin" bs=1M seek=$off conv=notrunc,fsync status=none || fail "fsync: dd"
      if [ $round -lt 3 ]; then
        [ "$(cow read "$V" --offset $((off << 20)) --len $((6 << 20)) | sha256sum)" = "$(sha256sum <"$WORK/sync.dat")" ] ||
          fail "fsync: cowsnap read through the mount process does not see the written data"
      fi
    done
    kill -9 "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    umount -l "$M" 2>/dev/null || true
    [ "$(cow read "$V" --offset $((15 << 20)) --len $((6 << 20)) | sha256sum)" = "$(sha256sum <"$WORK/sync.dat")" ] ||
      fail "fsync: data fsynced through the mount lost when the mount process was killed"
    [ "$(cow read "$V/s" --offset $((5 << 20)) --len $((11 << 20)) | tr -d '\021' | wc -c)" = 0 ] ||
      fail "fsync: the snapshot lost its old data"
    rm -rf "$V"
  done
  V=$WORK/vol-sync M=$WORK/mnt-sync
  cow -q create "$V" --size 64M
  # A write-back error is reported by fsync: a write past the end of the origin is accepted by the
  # page cache, refused (ENOSPC) when written back, and that fails the fsync.
  fuse_mount "$V" "$M" --writeback-cache
  if dd if=/dev/zero of="$M/origin" bs=4k seek=$((64 << 8)) count=1 conv=notrunc,fsync status=none 2>/dev/null; then
    fail "fsync: a write past the end of the origin was reported durable"
  fi
  cow -q umount "$M"
  # Write-through (the default): the same write fails at write() already.
  fuse_mount "$V" "$M"
  if dd if=/dev/zero of="$M/origin" bs=4k seek=$((64 << 8)) count=1 conv=notrunc status=none 2>/dev/null; then
    fail "fsync: a write-through mount accepted a write past the end"
  fi
  cow -q umount "$M"
  rm -rf "$V"
fi

# --- 2. throughput ------------------------------------------------------------------------------------
if want bench; then
  # As benches/compare.sh measures: interleaved rounds, the order of the engines rotated every round
  # (so that the machine's drift hits each alike), each round's figures divided, then min / median /
  # max of the ratios over the rounds. FUSE_BENCH_ROUNDS (default 5), FUSE_BENCH_MIB (512), and
  # FUSE_BENCH_MOUNT_OPTS (extra `cowsnap mount` flags, e.g. "--writeback-cache --threads 1").
  ROUNDS=${FUSE_BENCH_ROUNDS:-5} MB=${FUSE_BENCH_MIB:-512}
  say "throughput: ext4 on a plain loop file vs ext4 on the cowsnap FUSE origin (dd bs=1M, $MB MiB, $ROUNDS interleaved rounds)"
  drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
  mbs() { awk '/copied/ {v=$(NF-1); u=$NF; if (u ~ /^GB/) v*=1000; if (u ~ /^kB/) v/=1000; printf "%.0f", v}'; }
  # dd_pair DIR -> "write read" in MB/s: write with fdatasync, read cold (page caches dropped).
  dd_pair() {
    local d=$1 w r
    drop
    w=$(dd if=/dev/zero of="$d/big" bs=1M count=$MB conv=fdatasync 2>&1 | mbs)
    drop
    r=$(dd if="$d/big" of=/dev/null bs=1M 2>&1 | mbs)
    rm -f "$d/big"; sync
    echo "$w $r"
  }
  P=$WORK/plain.img PM=$WORK/plain
  truncate -s 1G "$P"; mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$P"
  V=$WORK/vol-bench M=$WORK/mnt-bench O=$WORK/o-bench
  cow -q create "$V" --size 1G
  # shellcheck disable=SC2086   # the options are words
  fuse_mount "$V" "$M" ${FUSE_BENCH_MOUNT_OPTS:-}
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$M/origin"
  loop_mount -o loop "$P" "$PM"
  loop_mount -o loop "$M/origin" "$O"
  # run ENGINE ROUND -> "write read": plain (loop file), fuse (FUSE origin, no snapshot), snap (FUSE
  # origin with a fresh snapshot, so that every write is a first write: chunk copied into the COW).
  run() {
    case $1 in
      plain) dd_pair "$PM" ;;
      fuse) dd_pair "$O" ;;
      snap)
        cow -q snapshot "$V" --name "b$2" --size 768M
        dd_pair "$O"
        cow -q remove "$V/b$2" ;;
    esac
  }
  engines=(plain fuse snap)
  declare -A RES
  for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < 3; i++)); do
      e=${engines[$(((i + r) % 3))]}
      RES[$r:$e]=$(run "$e" "$r")
    done
    say "round $((r + 1))/$ROUNDS (MB/s write read): plain ${RES[$r:plain]}, fuse ${RES[$r:fuse]}, snap ${RES[$r:snap]}"
  done
  umount "$O" "$PM"
  # The snapshot file itself, read sequentially (512 MiB: copied chunks + origin).
  cow -q snapshot "$V" --name whole --size 64M
  drop
  sn=$(dd if="$M/whole" of=/dev/null bs=1M count=512 2>&1 | mbs)
  say "dd of MOUNTPOINT/<snapshot> itself (cold): $sn MB/s"
  cow -q remove "$V/whole"
  cow -q umount "$M"
  for ((r = 0; r < ROUNDS; r++)); do echo "${RES[$r:plain]} ${RES[$r:fuse]} ${RES[$r:snap]}"; done |
    python3 -c '
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
def show(name, target, vals):
    lo, med, hi = min(vals), statistics.median(vals), max(vals)
    verdict = "met, every round" if lo >= target else ("median only" if med >= target else "not met")
    print(f"[fuse] {name:<44} {lo:5.2f} {med:5.2f} {hi:5.2f}   target >= {target}: {verdict}")
    return min(vals)
print("[fuse] %-44s   min   med   max" % "ratio (per round, then min median max)")
show("FUSE / plain, sequential write", 0.85, [f[2] / f[0] for f in rows])
show("FUSE / plain, sequential read (cold)", 0.85, [f[3] / f[1] for f in rows])
show("FUSE with a snapshot / plain, first writes", 0.5, [f[4] / f[0] for f in rows])
show("FUSE with a snapshot / plain, read (cold)", 0.85, [f[5] / f[1] for f in rows])
for f in rows:
    if min(f) <= 5:
        sys.exit(f"implausible throughput in {f}")
'
  rm -rf "$V" "$P"
fi

# --- 3. MariaDB ---------------------------------------------------------------------------------------
if want mariadb; then
  MYSQLD=$(command -v mariadbd || command -v mysqld)
  V=$WORK/vol-db M=$WORK/mnt-db D=$WORK/dbfs SN=$WORK/dbsnap COPY=$WORK/datacopy
  say "mariadb: ext4 on the cowsnap origin, datadir there ($($MYSQLD --version | awk '{print $3}'))"
  cow -q create "$V" --size 1G
  # Writable snapshot files, as LVM snapshots are: the snapshot of a live ext4 needs its journal
  # replayed when mounted (ro,noload would show the file system as of its last checkpoint).
  fuse_mount "$V" "$M" --writable-snapshots
  mkfs.ext4 -q -F "$M/origin"
  loop_mount -o loop "$M/origin" "$D"
  mkdir "$D/mysql"
  mariadb-install-db --no-defaults --user=root --datadir="$D/mysql" --skip-test-db \
    --auth-root-authentication-method=normal >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "mariadb-install-db"; }

  # start_db NAME DATADIR PORT: a server on 127.0.0.1 only, with its own socket, pid file and log.
  start_db() {
    local n=$1 dd=$2 port=$3
    DBSOCKS+=("$WORK/$n.sock")
    "$MYSQLD" --no-defaults --user=root --datadir="$dd" --socket="$WORK/$n.sock" --port="$port" \
      --bind-address=127.0.0.1 --pid-file="$WORK/$n.pid" --log-error="$WORK/$n.err" \
      --skip-grant-tables --innodb-buffer-pool-size=64M --skip-log-bin 2>>"$WORK/$n.err" &
    for _ in $(seq 120); do
      mariadb-admin --no-defaults --socket="$WORK/$n.sock" -u root ping >/dev/null 2>&1 && return 0
      sleep 0.5
    done
    cat "$WORK/$n.err"; fail "mariadb $n did not start"
  }
  sql() { mariadb --no-defaults --socket="$WORK/$1.sock" -u root -N -B -e "$2"; }
  # Free loopback ports (another suite on this machine may hold fixed ones).
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  PORT1=$(free_port); PORT2=$(free_port)
  while [ "$PORT2" = "$PORT1" ]; do PORT2=$(free_port); done
  start_db db1 "$D/mysql" "$PORT1"
  sql db1 "CREATE DATABASE app; CREATE TABLE app.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, k INT, payload VARCHAR(200)) ENGINE=InnoDB;
           INSERT INTO app.t (k, payload) VALUES (0, REPEAT(MD5(RAND()), 6));"
  for _ in $(seq 16); do sql db1 "INSERT INTO app.t (k, payload) SELECT k + 1, REPEAT(MD5(RAND()), 6) FROM app.t;"; done
  rows0=$(sql db1 "SELECT COUNT(*) FROM app.t")
  size=$(( $(stat -c %s "$D/mysql/app/t.ibd") >> 20 ))
  say "mariadb: table filled: $rows0 rows, $size MiB"

  # A client that inserts during the whole test (one connection, autocommit).
  (while :; do echo "INSERT INTO app.t (k, payload) VALUES (-1, REPEAT(MD5(RAND()), 6));"; sleep 0.005; done |
     mariadb --no-defaults --socket="$WORK/db1.sock" -u root 2>/dev/null) &
  PIDS+=($!)
  sleep 2
  rows1=$(sql db1 "SELECT COUNT(*) FROM app.t")
  [ "$rows1" -gt "$rows0" ] || fail "the insert loop is not inserting"

  say "mariadb: FLUSH TABLES WITH READ LOCK; cowsnap snapshot; count; UNLOCK TABLES"
  coproc LOCKER { mariadb --no-defaults --socket="$WORK/db1.sock" -u root -N -B --unbuffered 2>&1; }
  PIDS+=("$LOCKER_PID")
  t_req=$(now_ms)
  echo "FLUSH TABLES WITH READ LOCK; SELECT 'LOCKED', COUNT(*) FROM app.t;" >&"${LOCKER[1]}"
  read -r -t 60 tag count <&"${LOCKER[0]}" || fail "no answer to FLUSH TABLES WITH READ LOCK"
  [ "$tag" = LOCKED ] || fail "FTWRL: $tag $count"
  t_locked=$(now_ms)
  cow -q snapshot "$V" --name backup --size 512M
  t_snap=$(now_ms)
  echo "UNLOCK TABLES; SELECT 'UNLOCKED';" >&"${LOCKER[1]}"
  read -r -t 60 tag2 <&"${LOCKER[0]}" || fail "no answer to UNLOCK TABLES"
  [ "$tag2" = UNLOCKED ] || fail "UNLOCK: $tag2"
  t_unlocked=$(now_ms)
  exec {LOCKER[1]}>&-
  say "mariadb: rows under the lock: $count; FTWRL took $((t_locked - t_req)) ms;" \
      "lock held $((t_unlocked - t_locked)) ms (snapshot $((t_snap - t_locked)) ms)"
  sleep 1
  rows_after=$(sql db1 "SELECT COUNT(*) FROM app.t")
  [ "$rows_after" -gt "$count" ] || fail "inserts did not resume after UNLOCK TABLES ($rows_after <= $count)"

  say "mariadb: mount the snapshot read-only (ext4 replays its journal into the snapshot), copy the datadir out"
  lo=$(losetup --find --show "$M/backup")
  loop_mount -o ro "$lo" "$SN"
  dmesg | tail -3 | grep -q "recovery complete" && say "mariadb: (ext4 journal recovery on the snapshot: done)"
  cp -a "$SN/mysql" "$COPY"
  umount "$SN"
  losetup -d "$lo"
  cow lvs "$V"
  cow -q remove "$V/backup"
  [ ! -e "$M/backup" ] || fail "snapshot file still there after remove"

  say "mariadb: second server on the copy (127.0.0.1:$PORT2): InnoDB recovery, CHECK TABLE, row count"
  start_db db2 "$COPY" "$PORT2"
  check=$(sql db2 "CHECK TABLE app.t" | awk '{print $3, $4}' | tail -1)
  [ "$check" = "status OK" ] || fail "CHECK TABLE on the copy: $check"
  got=$(sql db2 "SELECT COUNT(*) FROM app.t")
  [ "$got" = "$count" ] || fail "row count on the copy $got != $count recorded under the lock"
  say "mariadb: copy has $got rows = the count under the lock; CHECK TABLE: $check; origin now has $(sql db1 'SELECT COUNT(*) FROM app.t')"
  grep -qi "crash recovery\|Starting final batch to recover\|recovery" "$WORK/db2.err" && say "mariadb: (the copy went through InnoDB crash recovery, as expected)"
fi

say "all FUSE tests passed in $(( $(date +%s) - START )) s"
