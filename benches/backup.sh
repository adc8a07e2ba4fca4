#!/usr/bin/env bash
# Backups to object storage, measured against a local S3 server (moto, on 127.0.0.1), in one run:
#  1. a 1 GiB volume of random data (256 KiB chunks): full backup, then 1 % of its chunks rewritten
#     and an incremental backup: bytes and time of each;
#  2. full-backup and restore throughput against the ceiling: the same bytes as one object, one PUT /
#     one GET through the same client (object_store, cli/examples/store_ceiling.rs);
#  3. dedup: two volumes with 50 % identical chunks backed up into one fresh prefix;
#  4. memory: full and incremental backup (and a restore) of a 1 TiB sparse volume with a few chunks
#     written: peak RSS from /usr/bin/time.
# Not part of ./test.sh (a benchmark, not a timed test). SIZE_MIB=256 for a quicker run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE_MIB=${SIZE_MIB:-1024}
CHUNK_KIB=${CHUNK_KIB:-256}

cargo build -q --release -p cowsnap-cli --bin cowsnap --example store_ceiling
B=$ROOT/target/release/cowsnap
C=$ROOT/target/release/examples/store_ceiling

VENV=$ROOT/target/moto-venv
if ! "$VENV/bin/python" -c 'import moto.server' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q 'moto[server]'
fi

W=$(mktemp -d /var/tmp/cowsnap-bench-backup.XXXXXX)
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$W/moto.log" 2>&1 &
MOTO=$!
cleanup() { kill "$MOTO" 2>/dev/null || true; wait "$MOTO" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
curl -sf -X PUT -o /dev/null "http://127.0.0.1:$PORT/bench"
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
URL=s3://bench/b
cd "$W"
jget() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
secs() { date +%s.%N; }  # not python: a pyenv shim takes ~0.3 s to start

echo "== machine: $(nproc) cores, $(uname -r); volume ${SIZE_MIB} MiB, chunk ${CHUNK_KIB} KiB =="
head -c $((SIZE_MIB << 20)) /dev/urandom > data
$B -q create v -L ${SIZE_MIB}M -c ${CHUNK_KIB}K
$B -q write v --offset 0 --from data
$B -q snapshot v --name s1 -L $((SIZE_MIB / 8 + 16))M
sync

# 1. full, then 1 % rewritten, incremental.
T0=$(secs); /usr/bin/time -f "%U %S %M" -o full.cpu $B backup v/s1 --to $URL --json > full.json; T1=$(secs)
echo "$T0 $T1" > full.wall
CHUNKS=$((SIZE_MIB * 1024 / CHUNK_KIB))
N=$(( (CHUNKS + 99) / 100 ))
head -c $((CHUNK_KIB << 10)) /dev/urandom > one
for c in $(shuf -i 0-$((CHUNKS - 1)) -n $N --random-source=<(yes)); do
  head -c $((CHUNK_KIB << 10)) /dev/urandom > one
  $B -q write v --offset $((c * CHUNK_KIB))K --from one
done
$B -q snapshot v --name s2 -L 64M
FULL_ID=$(jget id < full.json)
T0=$(secs); $B backup v/s2 --to $URL --base "$FULL_ID" --json > inc.json; T1=$(secs)
echo "$T0 $T1" > inc.wall
python3 - full.json inc.json "$N" "$CHUNKS" <<'EOF'
import json, sys
f, i = (json.load(open(p)) for p in sys.argv[1:3])
n, chunks = int(sys.argv[3]), int(sys.argv[4])
wall = {}
for k in ("full", "inc"):
    a, b = map(float, open(k + ".wall").read().split())
    wall[k] = b - a
print(f"rewritten: {n} of {chunks} chunks ({100*n/chunks:.2f} %)")
print(f"{'backup':<12} {'read MiB':>9} {'uploaded MiB':>13} {'objects':>8} {'seconds':>8} {'wall s':>7}")
for name, j, w in (("full", f, wall["full"]), ("incremental", i, wall["inc"])):
    print(f"{name:<12} {j['bytes_read']/2**20:>9.1f} {j['bytes_uploaded']/2**20:>13.1f} {j['chunks_uploaded']:>8} {j['seconds']:>8.3f} {w:>7.3f}")
u, sy, rss = open("full.cpu").read().split()
print(f"full backup CPU: user {u} s, sys {sy} s, peak RSS {int(rss)/1024:.1f} MiB (moto, a Python server, shares the 2 cores)")
print(f"incremental/full: uploaded {100*i['bytes_uploaded']/f['bytes_uploaded']:.2f} % (target <= 2 %), "
      f"read {100*i['bytes_read']/f['bytes_read']:.2f} %, time {100*i['seconds']/f['seconds']:.2f} % "
      f"(wall, with process start: {100*wall['inc']/wall['full']:.2f} %) (target <= 5 %)")
EOF

# 2. throughput against one object through the same client: interleaved, best of 3 (the machine
#    is shared: single runs swing by 2x). Each full backup goes to a fresh prefix.
$B -q read v/s1 --offset 0 --len ${SIZE_MIB}M --out s1.img
sync
: > tp.txt
for r in 1 2 3; do
  T0=$(secs); $B -q backup v/s1 --to s3://bench/t$r > id$r; T1=$(secs)
  echo "backup $T0 $T1" >> tp.txt
  echo "put $($C put s3://bench/ceiling/one$r s1.img | cut -f1)" >> tp.txt
  T0=$(secs); $B -q restore s3://bench/t$r --id "$(cat id$r)" --out r.img; T1=$(secs)
  echo "restore $T0 $T1" >> tp.txt
  cmp r.img s1.img; rm -f r.img
  echo "get $($C get s3://bench/ceiling/one$r g.img | cut -f1)" >> tp.txt
  cmp g.img s1.img; rm -f g.img
done
python3 - "$SIZE_MIB" tp.txt <<'EOF'
import sys
mib = float(sys.argv[1])
t = {}
for line in open(sys.argv[2]):
    k, *v = line.split()
    t.setdefault(k, []).append(float(v[0]) if len(v) == 1 else float(v[1]) - float(v[0]))
rate = {k: mib / min(v) for k, v in t.items()}
print("wall seconds per run: " + ", ".join(f"{k} {' '.join(f'{x:.2f}' for x in v)}" for k, v in t.items()))
print(f"{'best of 3':<10} {'cowsnap MiB/s':>14} {'one object MiB/s':>17} {'ratio':>6}")
print(f"{'backup':<10} {rate['backup']:>14.1f} {rate['put']:>17.1f} {rate['backup']/rate['put']:>6.2f}   (target >= 0.7)")
print(f"{'restore':<10} {rate['restore']:>14.1f} {rate['get']:>17.1f} {rate['restore']/rate['get']:>6.2f}   (target >= 0.7)")
EOF

# 3. dedup: b = a's first half + new random second half; both into a fresh prefix.
$B -q create w -L ${SIZE_MIB}M -c ${CHUNK_KIB}K
head -c $((SIZE_MIB << 19)) data > half
$B -q write w --offset 0 --from half
head -c $((SIZE_MIB << 19)) /dev/urandom > half
$B -q write w --offset $((SIZE_MIB / 2))M --from half
$B -q snapshot w --name s1 -L 16M
rm -f half
$B backup v/s1 --to s3://bench/dedup --json > da.json
$B backup w/s1 --to s3://bench/dedup --json > db.json
python3 - da.json db.json <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
one = a['bytes_uploaded']; both = one + b['bytes_uploaded']
print(f"dedup: one volume {one/2**20:.1f} MiB stored, both {both/2**20:.1f} MiB: {both/one:.3f}x (target <= 1.55x)")
EOF

# 4. memory on a 1 TiB sparse volume with 16 chunks written.
rm -f data s1.img
$B -q create big -L 1T -c ${CHUNK_KIB}K
for i in $(seq 0 15); do
  head -c $((CHUNK_KIB << 10)) /dev/urandom > one
  $B -q write big --offset $((i * 61))G --from one
done
$B -q snapshot big --name s1 -L 64M
/usr/bin/time -f "%M %e" -o t1 $B backup big/s1 --to s3://bench/big --json > b1.json
for i in $(seq 0 3); do
  head -c $((CHUNK_KIB << 10)) /dev/urandom > one
  $B -q write big --offset $((i * 200 + 7))G --from one
done
$B -q snapshot big --name s2 -L 64M
/usr/bin/time -f "%M %e" -o t2 $B backup big/s2 --to s3://bench/big --base "$(jget id < b1.json)" --json > b2.json
/usr/bin/time -f "%M %e" -o t3 $B -q restore s3://bench/big --id "$(jget id < b2.json)" --out big.img
python3 - b1.json b2.json t1 t2 t3 <<'EOF'
import json, sys
b1, b2 = (json.load(open(p)) for p in sys.argv[1:3])
t = [open(p).read().split() for p in sys.argv[3:6]]
print("1 TiB sparse volume:")
print(f"  full backup:        read {b1['bytes_read']/2**20:.1f} MiB, {b1['chunks']} objects, peak RSS {int(t[0][0])/1024:.1f} MiB, {t[0][1]} s")
print(f"  incremental backup: read {b2['bytes_read']/2**20:.1f} MiB, {b2['chunks_uploaded']} new objects, peak RSS {int(t[1][0])/1024:.1f} MiB, {t[1][1]} s")
print(f"  restore to a sparse file: peak RSS {int(t[2][0])/1024:.1f} MiB, {t[2][1]} s")
EOF
