#!/usr/bin/env bash
# cowsnap vs raw pwrite vs the first-write floor vs qemu qcow2 (internal snapshot, external overlay),
# in two I/O modes, on this machine. Usage: benches/compare.sh [--smoke]   (BENCH_DIR=... to choose disk)
#   cache: page cache, no flushes (cowsnap devices' flush is a no-op; qemu-io -t unsafe)
#   sync:  every write request durable on return (fdatasync per request; cowsnap's own PREFLUSH/FUA
#          flushes plus one per request; qemu-io -t writethrough)
# Prints a table with MiB/s and ratios; see BENCHMARKS.md. Takes about a minute; --smoke a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=64; RAND=4096; SMB=16; SRAND=512
if [ "${1:-}" = "--smoke" ]; then MB=4; RAND=256; SMB=2; SRAND=64; fi
DIR=${BENCH_DIR:-/var/tmp/cowsnap-bench}
rm -rf "$DIR"; mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
command -v qemu-io >/dev/null || { echo "qemu-io not found (apt-get install qemu-utils)"; exit 1; }

cargo build -q --release -p cowsnap-cli --example bench
BENCH=target/release/examples/bench
declare -A R   # R[mode:case] = MiB/s

for mode in cache sync; do
  if [ $mode = cache ]; then mb=$MB; n=$RAND; else mb=$SMB; n=$SRAND; fi
  # Best of 3 runs per case (this VM is noisy).
  for run in 1 2 3; do
    while IFS=$'\t' read -r name mibs _ops; do
      k="$mode:$name"
      if [[ $name == create_* ]]; then   # microseconds: keep the lowest
        if [ -z "${R[$k]:-}" ] || awk "BEGIN{exit !($mibs < ${R[$k]})}"; then R[$k]=$mibs; fi
      elif [ -z "${R[$k]:-}" ] || awk "BEGIN{exit !($mibs > ${R[$k]})}"; then R[$k]=$mibs; fi
    done < <("$BENCH" "$DIR" "$mb" "$mode" "$n")
  done
done

now() { date +%s.%N; }
# qemu_run MODE KIND PATTERN -> sets QF (first writes MiB/s) and QR (rewrite MiB/s)
qemu_run() {
  local mode=$1 kind=$2 pat=$3 mb cache n base target cmds bytes t0 t1 t2 t3 idle
  if [ $mode = cache ]; then mb=$MB; n=$RAND; cache=unsafe; else mb=$SMB; n=$SRAND; cache=writethrough; fi
  base=$DIR/base.qcow2; rm -f "$DIR"/*.qcow2
  qemu-img create -q -f qcow2 "$base" "${mb}M"
  qemu-io -f qcow2 -t unsafe -c "write -P 0x5a 0 ${mb}M" "$base" >/dev/null
  if [ $kind = internal ]; then
    qemu-img snapshot -c s1 "$base"; target=$base
  else
    target=$DIR/overlay.qcow2
    qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$target"
  fi
  cmds=$DIR/cmds
  if [ $pat = seq64k ]; then
    for ((i = 0; i < mb * 16; i++)); do echo "write -P 1 $((i * 65536)) 64k"; done > "$cmds"
    bytes=$((mb * 1048576))
  else
    shuf -i 0-$((mb * 256 - 1)) -n "$n" --random-source=<(yes) | awk '{print "write -P 1 " $1 * 4096 " 4k"}' > "$cmds"
    bytes=$((n * 4096))
  fi
  # Process start-up and image open, measured with an idle session, are subtracted.
  t0=$(now); echo "read 0 512" | qemu-io -f qcow2 -t $cache "$target" >/dev/null; t1=$(now)
  idle=$(awk "BEGIN{print $t1 - $t0}")
  t0=$(now); qemu-io -f qcow2 -t $cache "$target" < "$cmds" >/dev/null; t1=$(now)
  t2=$(now); qemu-io -f qcow2 -t $cache "$target" < "$cmds" >/dev/null; t3=$(now)
  QF=$(awk "BEGIN{d=$t1-$t0-$idle; if (d<1e-6) d=1e-6; printf \"%.1f\", $bytes/d/1048576}")
  QR=$(awk "BEGIN{d=$t3-$t2-$idle; if (d<1e-6) d=1e-6; printf \"%.1f\", $bytes/d/1048576}")
}

for mode in cache sync; do
  for kind in internal overlay; do
    for pat in seq64k rand4k; do
      best_f=0; best_r=0
      for run in 1 2 3; do
        qemu_run $mode $kind $pat
        best_f=$(awk "BEGIN{print ($QF > $best_f) ? $QF : $best_f}")
        best_r=$(awk "BEGIN{print ($QR > $best_r) ? $QR : $best_r}")
      done
      R[$mode:qcow2_${kind}_first_$pat]=$best_f
      R[$mode:qcow2_${kind}_rewrite_$pat]=$best_r
    done
  done
done

ratio() { awk "BEGIN{ if ($2 > 0) printf \"%.2f\", $1 / $2; else print \"-\" }"; }
v() { echo "${R[$1]:-0}"; }
echo
echo "cowsnap benchmarks on $(uname -srm), $(nproc) CPUs, $(awk '/model name/{$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//')"
echo "files in $DIR ($(df -T "$DIR" | awk 'NR==2{print $2}')), 4 KiB chunks, qcow2 64 KiB clusters; MiB/s, best of 3"
echo "sizes: cache mode ${MB} MiB (rand4k: $RAND ops), sync mode ${SMB} MiB (rand4k: $SRAND ops)"
for mode in cache sync; do
  echo
  if [ $mode = cache ]; then echo "== mode: page cache, no flushes (qemu-io -t unsafe) =="; else echo "== mode: durable per request (fdatasync; qemu-io -t writethrough) =="; fi
  printf "%-22s %9s %9s %9s %9s %9s | %7s %7s %7s\n" pattern raw floor cowsnap qcow2-int qcow2-ovl cs/raw cs/floor cs/qcow2
  for pat in seq64k rand4k; do
    raw=$(v $mode:raw_$pat); fl=$(v $mode:floor_$pat); cs=$(v $mode:cowsnap_first_$pat)
    qi=$(v $mode:qcow2_internal_first_$pat); qo=$(v $mode:qcow2_overlay_first_$pat)
    printf "%-22s %9s %9s %9s %9s %9s | %7s %7s %7s\n" "first write $pat" "$raw" "$fl" "$cs" "$qi" "$qo" \
      "$(ratio "$cs" "$raw")" "$(ratio "$cs" "$fl")" "$(ratio "$cs" "$qi")"
  done
  for pat in seq64k rand4k; do
    raw=$(v $mode:raw_$pat); cs=$(v $mode:cowsnap_rewrite_$pat)
    qi=$(v $mode:qcow2_internal_rewrite_$pat); qo=$(v $mode:qcow2_overlay_rewrite_$pat)
    printf "%-22s %9s %9s %9s %9s %9s | %7s %7s %7s\n" "rewrite $pat" "$raw" "-" "$cs" "$qi" "$qo" \
      "$(ratio "$cs" "$raw")" "-" "$(ratio "$cs" "$qi")"
  done
  printf "%-22s %9s %9s %9s\n" "snapshot read seq64k" "-" "-" "$(v $mode:cowsnap_snapread_seq64k)"
  for s in 1 2 4; do
    printf "%-22s %9s %9s %9s | cs/cs1 %s\n" "origin write, $s snap" "-" "-" "$(v $mode:cowsnap_first_seq64k_${s}snap)" \
      "$(ratio "$(v $mode:cowsnap_first_seq64k_${s}snap)" "$(v $mode:cowsnap_first_seq64k_1snap)")"
  done
  c1=$(v $mode:create_snapshot_1g_us); ct=$(v $mode:create_snapshot_1t_us)
  echo "snapshot creation: 1 GiB origin ${c1} us, 1 TiB origin ${ct} us, ratio 1T/1G $(ratio "$ct" "$c1")"
done
echo
echo "memory bandwidth (memcpy): $(v cache:memcpy) MiB/s"
