#!/usr/bin/env python3
"""Writes cowsnap's own operation scripts (format: shared/vectors/README.md) into scripts/.
Deterministic; rerun after editing. Kernel images for them live in kernel/ (made with
shared/tools/kernel-vectors/make_vector.py, see README.md here)."""
import json
from pathlib import Path

OUT = Path(__file__).parent / "scripts"
KIB, MIB = 1024, 1024 * 1024


def w(target, offset, length, fill):
    return {"op": "write", "target": target, "offset": offset, "len": length, "fill": fill % 256}


def save(name, origin_size, snapshots, ops):
    OUT.mkdir(exist_ok=True)
    body = {"origin_size": origin_size, "origin_init": "sector-index", "snapshots": snapshots, "ops": ops}
    (OUT / f"{name}.json").write_text(json.dumps(body, indent=1) + "\n")


# Two metadata areas with 8 KiB chunks (512 records each): big sequential writes, scattered
# single-sector writes, partial and whole-chunk snapshot writes.
ops = [{"op": "snapshot", "name": "s0"}, w("origin", 0, 2 * MIB, 1)]
ops += [w("origin", 2 * MIB + k * 3 * 8 * KIB + 512, 512, 2 + k) for k in range(200)]
ops += [w("s0", 5 * MIB + 4096, 1024, 3), w("s0", 5 * MIB + 64 * KIB, 64 * KIB, 4)]
ops += [w("origin", 4 * MIB, 1 * MIB, 5), w("s0", 0, 8 * KIB, 6)]
save("multi-area-8k", 6 * MIB,
     [{"name": "s0", "cow_size": 9 * MIB, "chunk_sectors": 16, "store": "P"}], ops)

# Three snapshots with three chunk sizes and stores, created at different times; unaligned
# (512-multiple) writes spanning chunk boundaries; one deleted half way.
ops = [{"op": "snapshot", "name": "a"}, w("origin", 3584, 1024, 1), w("origin", 100 * KIB, 40 * KIB, 2),
       {"op": "snapshot", "name": "b"}, w("origin", 60 * KIB + 512, 70 * KIB, 3), w("b", 200 * KIB, 512, 4),
       {"op": "snapshot", "name": "c"}, w("origin", 0, 300 * KIB, 5), w("a", 1 * MIB + 512, 8 * KIB, 6),
       w("c", 2 * MIB, 64 * KIB, 7), w("c", 2 * MIB + 64 * KIB + 1024, 512, 8),
       {"op": "delete", "name": "b"}, w("origin", 1 * MIB, 256 * KIB, 9), w("origin", 3 * MIB + 7 * 512, 512, 10)]
save("three-snaps-mixed", 4 * MIB,
     [{"name": "a", "cow_size": 2 * MIB, "chunk_sectors": 8, "store": "P"},
      {"name": "b", "cow_size": 1 * MIB, "chunk_sectors": 32, "store": "PO"},
      {"name": "c", "cow_size": 1 * MIB, "chunk_sectors": 128, "store": "N"}], ops)

# Merge of a snapshot whose records span two areas, while another snapshot exists (it must get
# its own copies before the origin changes), then writes after the merge.
ops = [{"op": "snapshot", "name": "m"}]
ops += [w("origin", k * 8 * KIB, 4096, 10 + k) for k in range(300)]  # 300 scattered chunks
ops += [w("m", 3 * MIB, 20 * KIB, 1), {"op": "snapshot", "name": "o"}, w("origin", 1 * MIB, 64 * KIB, 2),
        {"op": "merge", "name": "m"}, w("origin", 0, 16 * KIB, 3), w("origin", 3 * MIB, 4096, 4)]
save("merge-two-areas-with-other-4k", 4 * MIB,
     [{"name": "m", "cow_size": 3 * MIB, "chunk_sectors": 8, "store": "P"},
      {"name": "o", "cow_size": 3 * MIB, "chunk_sectors": 16, "store": "P"}], ops)

# The area-boundary edge: a COW of exactly 258 chunks of 4 KiB. The 256th exception fills area 0,
# and zeroing area 1 (chunk 258) falls past the end: the snapshot is invalidated. A second snapshot
# with one spare chunk (LVM's sizing) survives the same writes.
ops = [{"op": "snapshot", "name": "edge"}, {"op": "snapshot", "name": "spare"}]
ops += [w("origin", k * 4096, 4096, k) for k in range(256)]
ops += [w("origin", 300 * 4096, 512, 77)]
save("area-edge-4k", 2 * MIB,
     [{"name": "edge", "cow_size": 258 * 4096, "chunk_sectors": 8, "store": "P"},
      {"name": "spare", "cow_size": 260 * 4096, "chunk_sectors": 8, "store": "P"}], ops)
