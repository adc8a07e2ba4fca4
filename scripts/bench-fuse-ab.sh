#!/usr/bin/env bash
# Paired comparison of two `cowsnap` binaries' FUSE mounts (e.g. main's and a branch's), the way
# scripts/test-fuse.sh bench measures one: ext4 loop-mounted over MOUNTPOINT/origin vs over a plain
# 1 GiB image file, dd bs=1M of 512 MiB with conv=fdatasync, reads cold. Each round runs both
# binaries (order alternated), each on a fresh volume; prints each run's MB/s and then min / median /
# max of each ratio to the plain file, per binary.
#   CASE=data  (default) the region the file system writes is written once first: first writes after
#              the snapshot copy real data (as in later rounds of test-fuse.sh bench)
#   CASE=holes a new volume: the file system writes into the origin image's holes
# Usage (root): scripts/bench-fuse-ab.sh BIN_A BIN_B [ROUNDS]
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "needs root (mount, loop devices)"; exit 1; }
A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${3:-4} CASE=${CASE:-data} MB=512
W=$(mktemp -d /tmp/cowsnap-ab.XXXXXX)
BIN=$A
cleanup() {
  set +e
  umount "$W/o" "$W/p" 2>/dev/null
  "$BIN" -q umount "$W/mnt" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
mbs() { awk '/copied/ {v=$(NF-1); u=$NF; if (u ~ /^GB/) v*=1000; if (u ~ /^kB/) v/=1000; printf "%.0f", v}'; }
pair() { # DIR -> "write read"
  local w r
  drop; w=$(dd if=/dev/zero of="$1/big" bs=1M count=$MB conv=fdatasync 2>&1 | mbs)
  drop; r=$(dd if="$1/big" of=/dev/null bs=1M 2>&1 | mbs)
  rm -f "$1/big"; sync
  echo "$w $r"
}
run() { # BIN -> "plain_w plain_r fuse_w fuse_r snap_w snap_r"
  BIN=$1
  mkdir -p "$W/mnt" "$W/o" "$W/p"
  truncate -s 1G "$W/plain.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$W/plain.img"
  "$BIN" -q create "$W/vol" --size 1G
  "$BIN" -q mount --daemon "$W/vol" "$W/mnt"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$W/mnt/origin"
  mount -o loop "$W/plain.img" "$W/p"
  mount -o loop "$W/mnt/origin" "$W/o"
  if [ "$CASE" = data ]; then
    dd if=/dev/zero of="$W/o/big" bs=1M count=$MB conv=fdatasync 2>/dev/null
    rm "$W/o/big"; sync
  fi
  local p f s
  p=$(pair "$W/p")
  if [ "$CASE" = data ]; then f=$(pair "$W/o"); else f="0 0"; fi
  "$BIN" -q snapshot "$W/vol" --name s --size 768M
  s=$(pair "$W/o")
  "$BIN" -q remove "$W/vol/s"
  umount "$W/o" "$W/p"
  "$BIN" -q umount "$W/mnt"
  rm -rf "$W/vol" "$W/plain.img"
  echo "$p $f $s"
}
echo "case $CASE, $ROUNDS rounds; A=$A B=$B; $(uptime)"
out=$W/results
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="A B"; else order="B A"; fi
  for m in $order; do
    if [ "$m" = A ]; then res=$(run "$A"); else res=$(run "$B"); fi
    echo "round $r $m (MB/s plain w r, fuse w r, snap w r): $res"
    echo "$m $res" >>"$out"
  done
done
uptime
python3 - "$out" "$CASE" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def show(v): return "%.2f / %.2f / %.2f" % (min(v), st.median(v), max(v))
for m in "AB":
    R = [list(map(float, r[1:])) for r in rows if r[0] == m]
    print(f"{m}: first writes after a snapshot / plain {show([r[4] / r[0] for r in R])}; "
          f"read back {show([r[5] / r[1] for r in R])}")
    if sys.argv[2] == "data":
        print(f"{m}: FUSE write / plain {show([r[2] / r[0] for r in R])}; "
              f"FUSE read / plain {show([r[3] / r[1] for r in R])}")
PY
