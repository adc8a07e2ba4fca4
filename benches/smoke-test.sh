#!/usr/bin/env bash
# Smoke test of benches/compare.sh: runs it with --smoke (tiny sizes, 2 rounds, some seconds) in a
# scratch directory on a real file system and checks that every case ran and every ratio is a finite
# positive number. It says nothing about speed. Not part of ./test.sh (wire it in where wanted).
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH=$(mktemp -d "${BENCH_SMOKE_DIR:-/var/tmp}/cowsnap-bench-smoke.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
OUT=$SCRATCH/out.txt

BENCH_DIR=$SCRATCH benches/compare.sh --smoke >"$OUT" 2>"$SCRATCH/err.txt" || {
  cat "$SCRATCH/err.txt" >&2
  echo "smoke-test: compare.sh --smoke failed" >&2
  exit 1
}

fail() { echo "smoke-test: $*" >&2; cat "$OUT" >&2; exit 1; }

# Every table row: | label | min | median | max | target | verdict |
rows=$(grep -cE '^\| [a-z0-9]' "$OUT" || true)
[ "$rows" -ge 24 ] || fail "expected 23 ratio rows and a header, found $((rows))"
bad=$(awk -F'|' '/^\| [a-z0-9]/ && $2 !~ /^ ratio/ {
  for (i = 3; i <= 5; i++) { v = $i; gsub(/ /, "", v); if (v !~ /^[0-9.e+-]+$/ || v + 0 <= 0) print $2 ":" v } }' "$OUT")
[ -z "$bad" ] || fail "non-numeric or non-positive figures: $bad"

# Every engine of every case ran in every round: 2 rounds of the runs listed in compare.sh.
log=$SCRATCH/compare-last.tsv
[ -f "$log" ] || fail "no per-run log"
for key in nf-rand4k-1 nf-rand4k-2 nf-rand4k-4 dur-rand4k-1 dur-rand4k-2 dur-rand4k-4 nf-seq64k-1 \
  dur-seq64k-1 snaps-nf snaps-dur merge-scattered merge-sequential activation lvs creation; do
  for r in 0 1; do
    grep -qP "^$r\t\d+\t$key\t" "$log" || fail "case $key did not run in round $r"
  done
done
# The engine order rotates: round 0 and round 1 start a case with different engines.
first0=$(awk -F'\t' '$1 == 0 && $3 == "nf-rand4k-1" { print $4; exit }' "$log")
first1=$(awk -F'\t' '$1 == 1 && $3 == "nf-rand4k-1" { print $4; exit }' "$log")
[ "$first0" != "$first1" ] || fail "engine order not rotated between rounds ($first0)"
grep -q 'SMOKE RUN' "$OUT" || fail "smoke output not marked as such"
echo "smoke-test: compare.sh --smoke ran every case ($rows table rows)"
