#!/usr/bin/env bash
# cowsnap against the first-write floor, raw pwrite, qemu qcow2 and dd, measured through the interfaces
# users call: the C ABI (libcowsnap.a, benches/c/bench.c) and the CLI (`cowsnap merge`, `cowsnap lvs`).
#
# Usage: benches/compare.sh [--smoke] [--rounds N] [--only CASE,...]
#   (BENCH_DIR=DIR to choose the disk; never tmpfs)
#   Every case runs once per round with its engines in an order rotated each round; a round's figures
#   give that round's ratios (cowsnap/floor, ...); the table shows min/median/max of each ratio over the
#   rounds. Times include everything the caller waits for (the final flush, qemu-io's start-up); nothing
#   is subtracted or clamped. The issue-14 target of each ratio is checked against its minimum ("every
#   round") and its median. Full run: 5 rounds, 2 to 8 minutes
#   (depending on the load of the machine). --smoke: tiny sizes, 2 rounds, seconds;
#   its figures mean nothing (it checks that every case runs). --only: just these cases (the keys of
#   the figures below, e.g. --only activation,lvs), with only their fixtures; the other rows are left
#   out of the report.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

ROUNDS=5
SMOKE=0
ONLY=
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) SMOKE=1; ROUNDS=2 ;;
    --rounds) ROUNDS=$2; shift ;;
    --only) ONLY=",$2,"; shift ;;
    *) echo "usage: benches/compare.sh [--smoke] [--rounds N] [--only CASE,...]" >&2; exit 2 ;;
  esac
  shift
done
# True when case $1 (or, for fixtures, any of the cases given) is to run.
want() {
  local c
  [ -z "$ONLY" ] && return 0
  for c in "$@"; do [[ $ONLY == *",$c,"* ]] && return 0; done
  return 1
}

if [ $SMOKE = 1 ]; then
  ORIGIN_MIB=16; NF_OPS=256; DUR_OPS=16; DUR_SLICES=2; SEQ_NF_OPS=32; SEQ_DUR_OPS=8; MERGE_CHUNKS=256
  ACT_EXC=4096; ACT_ORIGIN_CHUNKS=16384; LVS_EXC=10000; LVS_ORIGIN_CHUNKS=16384
else
  ORIGIN_MIB=256       # origin of the write cases (4 KiB chunks)
  # Requests per run; the no-flush cases run twice per round, the durable ones DUR_SLICES times,
  # interleaved with the other engines (flush latency here swings 30x within seconds).
  NF_OPS=4096          # random 4 KiB first writes without per-request flush (16 MiB)
  DUR_OPS=64           # random 4 KiB durable first writes (256 KiB; each costs >= 2 flushes)
  DUR_SLICES=4
  SEQ_NF_OPS=256       # sequential 64 KiB without per-request flush (16 MiB)
  SEQ_DUR_OPS=16       # sequential 64 KiB durable (1 MiB)
  MERGE_CHUNKS=8192    # exceptions merged back (32 MiB; a multiple of 256)
  ACT_EXC=1048576; ACT_ORIGIN_CHUNKS=4194304      # activation: 1 M random exceptions, 16 GiB origin
  LVS_EXC=10000000; LVS_ORIGIN_CHUNKS=16777216    # `cowsnap lvs`: 10 M random exceptions, 64 GiB origin
fi
[ "$ROUNDS" -ge 1 ] 2>/dev/null || { echo "--rounds takes a positive number" >&2; exit 2; }

DIR=${BENCH_DIR:-/var/tmp/cowsnap-bench}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
FSTYPE=$(df --output=fstype "$DIR" | tail -1)
case $FSTYPE in
  tmpfs | ramfs) echo "compare.sh: $DIR is on $FSTYPE; flushes must cost something (BENCH_DIR=...)" >&2; exit 1 ;;
esac
WORK=$DIR/run.$$
mkdir "$WORK"
trap 'rm -rf "$WORK"' EXIT
for tool in gcc qemu-img qemu-io dd; do
  command -v $tool >/dev/null || { echo "compare.sh: $tool not found (apt-get install gcc qemu-utils)" >&2; exit 1; }
done

cargo build -q --release -p cowsnap-ffi -p cowsnap-cli
BENCH=$WORK/bench
CLI=$REPO/target/release/cowsnap
gcc -O2 -Wall -Wextra -Werror -I"$REPO/ffi/include" "$REPO/benches/c/bench.c" \
  "$REPO/target/release/libcowsnap.a" -lpthread -ldl -lm -o "$BENCH"

now() { date +%s.%N; }
# Dirty data of the previous run must not land in the next one's timed span.
settle() { sync -f "$WORK"; }
span() { awk -v t0="$1" -v t1="$2" -v b="$3" 'BEGIN { printf "%.6f %d\n", t1 - t0, b }'; }   # T0 T1 BYTES

# ---- fixtures (untimed) --------------------------------------------------------------------------
WRITES="nf-rand4k-1 nf-rand4k-2 nf-rand4k-4 dur-rand4k-1 dur-rand4k-2 dur-rand4k-4 nf-seq64k-1 dur-seq64k-1 snaps-nf snaps-dur"
# shellcheck disable=SC2086   # the list of cases is split on purpose
want $WRITES && "$BENCH" prefill "$WORK/origin.img" "$ORIGIN_MIB"
DD_MIB=$((MERGE_CHUNKS * 4096 / 1048576))   # the same bytes as a merge copies back
if want merge-scattered merge-sequential; then
  "$BENCH" prefill "$WORK/merge.img" "$ORIGIN_MIB"
  "$BENCH" prefill "$WORK/dd-dst.img" "$ORIGIN_MIB"
  "$BENCH" prefill "$WORK/dd-src.img" "$DD_MIB"
fi

QCOW=$WORK/q.qcow2
# shellcheck disable=SC2086
if want $WRITES; then
  qemu-img create -q -f qcow2 -o cluster_size=4096 "$QCOW" "${ORIGIN_MIB}M"
  qemu-io -f qcow2 -t unsafe -c "write -P 0x5a 0 ${ORIGIN_MIB}M" "$QCOW" >/dev/null
  for spec in "rand4k $NF_OPS" "rand4k $DUR_OPS" "seq64k $SEQ_NF_OPS" "seq64k $SEQ_DUR_OPS"; do
    read -r pat ops <<<"$spec"
    "$BENCH" qemu-cmds "$pat" "$ops" "$ORIGIN_MIB" >"$WORK/qemu-$pat-$ops.cmds"
  done
fi

truncate -s 1G "$WORK/create-1g.img"
truncate -s 1T "$WORK/create-1t.img"
if want activation; then
  truncate -s $((ACT_ORIGIN_CHUNKS * 4096)) "$WORK/act.img"
  "$BENCH" craft-cow "$WORK/act.cow" "$ACT_EXC" "$ACT_ORIGIN_CHUNKS"
fi
LVS=$WORK/lvs
if want lvs; then
  "$CLI" -q create "$LVS" --size $((LVS_ORIGIN_CHUNKS * 4096))
  "$CLI" -q snapshot "$LVS" --name s --size 1M
  "$BENCH" craft-cow "$LVS/s.cow" "$LVS_EXC" "$LVS_ORIGIN_CHUNKS"
  "$CLI" -q lvs "$LVS" >/dev/null   # warm, and a check that the crafted COW activates
fi

# ---- one measured run per call; each prints MiB/s (or seconds) ------------------------------------
declare -A V   # V[round:case:engine]
LOG=$DIR/compare-last.tsv   # every timed run: round, slice, case, engine, seconds, bytes
printf 'round\tslice\tcase\tengine\tseconds\tbytes\n' >"$LOG"

write_run() { # ENGINE MODE PATTERN THREADS OPS SNAPS
  settle
  "$BENCH" write "$1" "$WORK" "$WORK/origin.img" "$2" "$3" "$4" "$5" "$6" | awk '{ print $2, $3 }'
}

qemu_run() { # MODE PATTERN OPS: a new internal snapshot, then the same requests through qemu-io
  local cache=unsafe len=4096 t0 t1 out
  if [ "$1" = dur ]; then cache=writethrough; fi
  if [ "$2" = seq64k ]; then len=65536; fi
  qemu-img snapshot -c "s$(date +%s%N)" "$QCOW"   # every cluster shared again
  settle
  out=$WORK/qemu.out
  t0=$(now)
  qemu-io -f qcow2 -t "$cache" "$QCOW" <"$WORK/qemu-$2-$3.cmds" >"$out" 2>&1
  t1=$(now)
  if grep -qiE 'error|fail|invalid' "$out"; then echo "compare.sh: qemu-io: $(grep -iE 'error|fail|invalid' "$out" | head -1)" >&2; exit 1; fi
  span "$t0" "$t1" $(($3 * len))
}

merge_run() { # ENGINE PATTERN
  local t0 t1
  if [ "$1" = dd ]; then
    settle
    t0=$(now)
    dd if="$WORK/dd-src.img" of="$WORK/dd-dst.img" bs=1M count="$DD_MIB" conv=notrunc,fdatasync status=none
    t1=$(now)
    span "$t0" "$t1" $((MERGE_CHUNKS * 4096))
    return
  fi
  "$BENCH" merge-prep "$WORK/merge.img" "$WORK/merge.cow" "$2" "$MERGE_CHUNKS"
  settle
  if [ "$1" = c-merge ]; then
    "$BENCH" merge "$WORK/merge.img" "$WORK/merge.cow" | awk '{ print $2, $3 }'
  elif [ "$1" = floor ]; then
    "$BENCH" merge-floor "$WORK/merge.img" "$WORK/merge.cow" "$2" "$MERGE_CHUNKS" | awk '{ print $2, $3 }'
  else
    t0=$(now)
    "$CLI" -q merge --origin "$WORK/merge.img" --cow "$WORK/merge.cow"
    t1=$(now)
    span "$t0" "$t1" $((MERGE_CHUNKS * 4096))
  fi
  rm -f "$WORK/merge.cow"
}

act_run() { # ENGINE: seconds
  local t0 t1
  case $1 in
    activate) "$BENCH" activate "$WORK/act.img" "$WORK/act.cow" | awk '{ print $1, 0 }' ;;
    pread) "$BENCH" pread-meta "$WORK/act.cow" "$ACT_EXC" | awk '{ print $1, 0 }' ;;
    1g | 1t) "$BENCH" create "$WORK/create-$1.img" "$WORK/create.cow" | awk '{ print $1, 0 }' ;;
    lvs)
      t0=$(now); "$CLI" -q lvs "$LVS" >/dev/null; t1=$(now)
      span "$t0" "$t1" 0 ;;
  esac
}

# One case: SLICES times each of ENGINES (every runner prints "SECONDS BYTES"), in an order rotated
# by round and slice, so that every engine sees the machine's drift alike; V gets MiB/s over all
# slices (or mean seconds when the runner moves no bytes).
measure() { # ROUND CASE "ENGINE..." SLICES RUNNER ARGS... (runner called as RUNNER ENGINE ARGS...)
  local round=$1 key=$2 slices=$4 runner=$5 i n e s out secs bytes
  want "$key" || return 0
  local -a engines
  local -A tsum bsum
  read -r -a engines <<<"$3"
  shift 5
  n=${#engines[@]}
  for ((s = 0; s < slices; s++)); do
    for ((i = 0; i < n; i++)); do
      e=${engines[$(((i + round + s) % n))]}
      out=$("$runner" "$e" "$@")
      read -r secs bytes <<<"$out"
      tsum[$e]=$(awk -v a="${tsum[$e]:-0}" -v b="$secs" 'BEGIN { printf "%.6f", a + b }')
      bsum[$e]=$((${bsum[$e]:-0} + bytes))
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$s" "$key" "$e" "$secs" "$bytes" >>"$LOG"
    done
  done
  for e in "${engines[@]}"; do
    V[$round:$key:$e]=$(awk -v t="${tsum[$e]}" -v b="${bsum[$e]}" -v n="$slices" \
      'BEGIN { if (b > 0) printf "%.4f", b / t / 1048576; else printf "%.6f", t / n }')
  done
}

# Adapters: runner ENGINE ARGS...
w() { # ENGINE MODE PATTERN THREADS OPS
  case $1 in
    qcow2) qemu_run "$2" "$3" "$5" ;;
    cowsnap4) write_run cowsnap "$2" "$3" "$4" "$5" 4 ;;
    floor4) write_run floor "$2" "$3" "$4" "$5" 4 ;;
    *) write_run "$1" "$2" "$3" "$4" "$5" 1 ;;
  esac
}

START=$(date +%s)
for ((r = 0; r < ROUNDS; r++)); do
  echo "round $((r + 1))/$ROUNDS ($(($(date +%s) - START)) s)" >&2
  measure $r nf-rand4k-1 "raw floor cowsnap qcow2" 2 w nf rand4k 1 "$NF_OPS"
  measure $r nf-rand4k-2 "raw floor cowsnap" 2 w nf rand4k 2 "$NF_OPS"
  measure $r nf-rand4k-4 "raw floor cowsnap" 2 w nf rand4k 4 "$NF_OPS"
  measure $r dur-rand4k-1 "raw floor floor-dm cowsnap qcow2" "$DUR_SLICES" w dur rand4k 1 "$DUR_OPS"
  measure $r dur-rand4k-2 "raw floor cowsnap" "$DUR_SLICES" w dur rand4k 2 "$DUR_OPS"
  measure $r dur-rand4k-4 "raw floor floor-dm cowsnap" "$DUR_SLICES" w dur rand4k 4 "$DUR_OPS"
  measure $r nf-seq64k-1 "raw floor cowsnap qcow2" 2 w nf seq64k 1 "$SEQ_NF_OPS"
  measure $r dur-seq64k-1 "raw floor cowsnap qcow2" "$DUR_SLICES" w dur seq64k 1 "$SEQ_DUR_OPS"
  measure $r snaps-nf "cowsnap cowsnap4 floor floor4" 2 w nf rand4k 1 "$NF_OPS"
  measure $r snaps-dur "cowsnap cowsnap4" $((DUR_SLICES / 2)) w dur rand4k 1 "$DUR_OPS"
  measure $r merge-scattered "c-merge cli-merge floor dd" 1 merge_run scattered
  measure $r merge-sequential "c-merge cli-merge floor dd" 1 merge_run sequential
  measure $r activation "activate pread" 3 act_run
  measure $r lvs "lvs" 1 act_run
  measure $r creation "1g 1t" 15 act_run   # each call is 0.4-20 ms of fallocate and journal latency
done
ELAPSED=$(($(date +%s) - START))

# ---- report --------------------------------------------------------------------------------------
# stats VALUE... -> "min median max" (median of an even count: mean of the middle two)
stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.4g %.4g %.4g", v[1], m, v[NR] }'
}
values() { # CASE ENGINE
  local r
  for ((r = 0; r < ROUNDS; r++)); do echo "${V[$r:$1:$2]}"; done
}
ratios() { # CASE A B [CASE_B]: per-round A/B
  local r
  for ((r = 0; r < ROUNDS; r++)); do
    awk -v a="${V[$r:$1:$2]}" -v b="${V[$r:${4:-$1}:$3]}" 'BEGIN { printf "%.4f\n", a / b }'
  done
}
verdict() { # MIN MEDIAN MAX TARGET ("ge X" or "le X")
  local op=${4%% *} t=${4##* }
  awk -v lo="$1" -v med="$2" -v hi="$3" -v op="$op" -v t="$t" 'BEGIN {
    if (op == "ge") { all = lo >= t; mid = med >= t } else { all = hi <= t; mid = med <= t }
    print all ? "met, every round" : (mid ? "median only" : "not met") }'
}
row() { # LABEL TARGET VALUES...
  local label=$1 target=$2 s
  shift 2
  s=$(stats "$@")
  read -r lo med hi <<<"$s"
  if [ "$target" = - ]; then
    printf '| %-52s | %7s | %7s | %7s | %-6s | %-16s |\n' "$label" "$lo" "$med" "$hi" - -
  else
    printf '| %-52s | %7s | %7s | %7s | %-6s | %-16s |\n' "$label" "$lo" "$med" "$hi" \
      "$(sed 's/ge /≥ /; s/le /≤ /' <<<"$target")" "$(verdict "$lo" "$med" "$hi" "$target")"
  fi
}
# Rows of cases left out by --only are left out of the report.
# shellcheck disable=SC2046   # word splitting of the per-round values is wanted
ratio_row() { { want "$3" && want "${6:-$3}"; } || return 0; row "$1" "$2" $(ratios "${@:3}"); }
# shellcheck disable=SC2046
value_row() { want "$3" || return 0; row "$1" "$2" $(values "$3" "$4"); }

echo
echo "cowsnap benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "$(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $FSTYPE in $DIR"
echo "$(qemu-img --version | head -1); $ROUNDS interleaved rounds in ${ELAPSED} s; 4 KiB chunks and qcow2 clusters"
echo "requests per run (runs per engine and round): random 4 KiB $NF_OPS (2) without flush, $DUR_OPS ($DUR_SLICES) durable;" \
  "sequential 64 KiB $SEQ_NF_OPS (2) / $SEQ_DUR_OPS ($DUR_SLICES); origin ${ORIGIN_MIB} MiB; merge $MERGE_CHUNKS chunks (1);" \
  "activation $ACT_EXC exceptions (3); lvs $LVS_EXC exceptions (1); creation (15); per-run log: $LOG"
[ $SMOKE = 1 ] && echo "SMOKE RUN: tiny sizes, the figures mean nothing"
echo
echo "Ratios (each round's figures divided, then min/median/max over the rounds):"
printf '| %-52s | %7s | %7s | %7s | %-6s | %-16s |\n' ratio min median max target verdict
echo "|---|---|---|---|---|---|"
ratio_row "no flush, rand 4K, 1 thread: cowsnap / floor" "ge 0.5" nf-rand4k-1 cowsnap floor
ratio_row "no flush, rand 4K, 1 thread: cowsnap / qcow2 unsafe" "ge 2" nf-rand4k-1 cowsnap qcow2
ratio_row "no flush, rand 4K, 2 threads: cowsnap / floor" "ge 0.5" nf-rand4k-2 cowsnap floor
ratio_row "no flush, rand 4K, 4 threads: cowsnap / floor" "ge 0.5" nf-rand4k-4 cowsnap floor
ratio_row "durable, rand 4K, 1 thread: cowsnap / floor" "ge 0.9" dur-rand4k-1 cowsnap floor
ratio_row "durable, rand 4K, 2 threads: cowsnap / floor" - dur-rand4k-2 cowsnap floor
ratio_row "durable, rand 4K, 4 threads: cowsnap / floor" "ge 0.8" dur-rand4k-4 cowsnap floor
ratio_row "durable, rand 4K, 1 thread: cowsnap / qcow2 wt" - dur-rand4k-1 cowsnap qcow2
ratio_row "durable, rand 4K, 1 thread: floor-dm / floor (bound)" - dur-rand4k-1 floor-dm floor
ratio_row "durable, rand 4K, 1 thread: cowsnap / floor-dm" - dur-rand4k-1 cowsnap floor-dm
ratio_row "durable, rand 4K, 4 threads: floor-dm / floor (bound)" - dur-rand4k-4 floor-dm floor
ratio_row "durable, rand 4K, 4 threads: cowsnap / floor-dm" - dur-rand4k-4 cowsnap floor-dm
ratio_row "durable, rand 4K: cowsnap 4 threads / 1 thread" - dur-rand4k-4 cowsnap cowsnap dur-rand4k-1
ratio_row "durable, rand 4K: floor 4 threads / 1 thread" - dur-rand4k-4 floor floor dur-rand4k-1
ratio_row "no flush, seq 64K: cowsnap / floor" - nf-seq64k-1 cowsnap floor
ratio_row "no flush, seq 64K: cowsnap / qcow2 unsafe" - nf-seq64k-1 cowsnap qcow2
ratio_row "durable, seq 64K: cowsnap / floor" - dur-seq64k-1 cowsnap floor
ratio_row "durable, seq 64K: cowsnap / qcow2 wt" - dur-seq64k-1 cowsnap qcow2
ratio_row "4 snapshots / 1, no flush, rand 4K" "ge 0.6" snaps-nf cowsnap4 cowsnap
ratio_row "4 copies / 1, no flush, rand 4K: floor (bound)" - snaps-nf floor4 floor
ratio_row "4 snapshots / 1, durable, rand 4K" "ge 0.6" snaps-dur cowsnap4 cowsnap
ratio_row "scattered merge, C ABI / dd" "ge 0.3" merge-scattered c-merge dd
ratio_row "scattered merge, cowsnap merge (CLI) / dd" "ge 0.3" merge-scattered cli-merge dd
ratio_row "scattered merge: merge floor / dd (bound)" - merge-scattered floor dd
ratio_row "scattered merge, C ABI / merge floor" - merge-scattered c-merge floor
ratio_row "sequential merge, C ABI / dd" "ge 0.8" merge-sequential c-merge dd
ratio_row "sequential merge, cowsnap merge (CLI) / dd" "ge 0.8" merge-sequential cli-merge dd
ratio_row "sequential merge: merge floor / dd (bound)" - merge-sequential floor dd
ratio_row "sequential merge, C ABI / merge floor" - merge-sequential c-merge floor
ratio_row "activation of $ACT_EXC exceptions / pread metadata" "le 5" activation activate pread
value_row "cowsnap lvs, $LVS_EXC exceptions (seconds, not a ratio)" "le 0.5" lvs lvs
ratio_row "snapshot creation, sparse 1 TiB / 1 GiB origin" "le 1.2" creation 1t 1g

echo
echo "Figures (MiB/s; activation, pread, lvs and creation in seconds): min / median / max"
for key in nf-rand4k-1 nf-rand4k-2 nf-rand4k-4 dur-rand4k-1 dur-rand4k-2 dur-rand4k-4 nf-seq64k-1 dur-seq64k-1 \
  snaps-nf snaps-dur merge-scattered merge-sequential activation lvs creation; do
  line="$key:"
  for e in raw floor floor-dm cowsnap cowsnap4 floor4 qcow2 c-merge cli-merge dd activate pread lvs 1g 1t; do
    [ -n "${V[0:$key:$e]:-}" ] || continue
    # shellcheck disable=SC2046
    line+=" $e $(stats $(values "$key" "$e") | sed 's# # / #g');"
  done
  [ "$line" = "$key:" ] || echo "  $line"
done
