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
CHUNK_KIB=256

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
secs() { python3 -c "import time; print(time.monotonic())"; }

echo "== machine: $(nproc) cores, $(uname -r); volume ${SIZE_MIB} MiB, chunk ${CHUNK_KIB} KiB =="
head -c $((SIZE_MIB << 20)) /dev/urandom > data
$B -q create v -L ${SIZE_MIB}M -c ${CHUNK_KIB}K
$B -q write v --offset 0 --from data
$B -q snapshot v --name s1 -L $((SIZE_MIB / 8 + 16))M
sync

# 1. full, then 1 % rewritten, incremental.
$B backup v/s1 --to $URL --json > full.json
CHUNKS=$((SIZE_MIB * 1024 / CHUNK_KIB))
N=$(( (CHUNKS + 99) / 100 ))
head -c $((CHUNK_KIB << 10)) /dev/urandom > one
for c in $(shuf -i 0-$((CHUNKS - 1)) -n $N --random-source=<(yes)); do
  head -c $((CHUNK_KIB << 10)) /dev/urandom > one
  $B -q write v --offset $((c * CHUNK_KIB))K --from one
done
$B -q snapshot v --name s2 -L 64M
$B backup v/s2 --to $URL --base "$(jget id < full.json)" --json > inc.json
python3 - full.json inc.json "$N" "$CHUNKS" <<'EOF'
import json, sys
f, i = (json.load(open(p)) for p in sys.argv[1:3])
n, chunks = int(sys.argv[3]), int(sys.argv[4])
print(f"rewritten: {n} of {chunks} chunks ({100*n/chunks:.2f} %)")
print(f"{'backup':<12} {'read MiB':>9} {'uploaded MiB':>13} {'objects':>8} {'seconds':>8}")
for name, j in (("full", f), ("incremental", i)):
    print(f"{name:<12} {j['bytes_read']/2**20:>9.1f} {j['bytes_uploaded']/2**20:>13.1f} {j['chunks_uploaded']:>8} {j['seconds']:>8.3f}")
print(f"incremental/full: uploaded {100*i['bytes_uploaded']/f['bytes_uploaded']:.2f} % (target <= 2 %), "
      f"read {100*i['bytes_read']/f['bytes_read']:.2f} %, time {100*i['seconds']/f['seconds']:.2f} % (target <= 5 %)")
EOF

# 2. throughput against one object through the same client.
$B -q read v/s1 --offset 0 --len ${SIZE_MIB}M --out s1.img
sync
CEIL_PUT=$($C put s3://bench/ceiling/one s1.img)
FULL_S=$(jget seconds < full.json)
T0=$(secs); $B -q restore $URL --id "$(jget id < full.json)" --out r.img; T1=$(secs)
cmp r.img s1.img
CEIL_GET=$($C get s3://bench/ceiling/one g.img)
cmp g.img s1.img
rm -f r.img g.img
python3 - "$SIZE_MIB" "$FULL_S" "$T0" "$T1" "$CEIL_PUT" "$CEIL_GET" <<'EOF'
import sys
mib, full_s, t0, t1 = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
put_s, put_r = map(float, sys.argv[5].split())
get_s, get_r = map(float, sys.argv[6].split())
rest_s = t1 - t0
print(f"{'':<10} {'cowsnap MiB/s':>14} {'one object MiB/s':>17} {'ratio':>6}")
print(f"{'backup':<10} {mib/full_s:>14.1f} {put_r:>17.1f} {mib/full_s/put_r:>6.2f}")
print(f"{'restore':<10} {mib/rest_s:>14.1f} {get_r:>17.1f} {mib/rest_s/get_r:>6.2f}   (target >= 0.7)")
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
for i in $(seq 0 15); do $B -q write big --offset $((i * 61))G --from one; done
$B -q snapshot big --name s1 -L 64M
/usr/bin/time -f "%M %e" -o t1 $B backup big/s1 --to s3://bench/big --json > b1.json
for i in $(seq 0 3); do $B -q write big --offset $((i * 200 + 7))G --from one; done
$B -q snapshot big --name s2 -L 64M
/usr/bin/time -f "%M %e" -o t2 $B backup big/s2 --to s3://bench/big --base "$(jget id < b1.json)" --json > b2.json
/usr/bin/time -f "%M %e" -o t3 $B -q restore s3://bench/big --id "$(jget id < b2.json)" --out big.img
python3 - b1.json b2.json t1 t2 t3 <<'EOF'
import json, sys
b1, b2 = (json.load(open(p)) for p in sys.argv[1:3])
t = [open(p).read().split() for p in sys.argv[3:6]]
print("1 TiB sparse volume, 256 KiB chunks:")
print(f"  full backup:        read {b1['bytes_read']/2**20:.1f} MiB, {b1['chunks']} objects, peak RSS {int(t[0][0])/1024:.1f} MiB, {t[0][1]} s")
print(f"  incremental backup: read {b2['bytes_read']/2**20:.1f} MiB, {b2['chunks_uploaded']} new objects, peak RSS {int(t[1][0])/1024:.1f} MiB, {t[1][1]} s")
print(f"  restore to a sparse file: peak RSS {int(t[2][0])/1024:.1f} MiB, {t[2][1]} s")
EOF
