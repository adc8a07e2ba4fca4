"""Cross-language check: every shared operation script, replayed through the Python API, yields the
same COW bytes (and origin, snapshot images, statuses, refused writes) as the real Linux kernel
produced for it (``shared/vectors/kernel/<name>/``) — the same check the Rust core passes."""

import gzip
import json
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import cowsnap

SECTOR = 512


def origin_image(size: int, init: str) -> bytes:
    if init == "zero":
        return bytes(size)
    assert init == "sector-index", init
    # sector k holds the u64 little-endian value k, 64 times
    return b"".join(struct.pack("<Q", k) * 64 for k in range(size // SECTOR))


def first_diff(a: bytes, b: bytes) -> Optional[int]:
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


class Replayed:
    def __init__(self) -> None:
        self.origin = b""
        self.cow: Dict[str, bytes] = {}
        self.image: Dict[str, Optional[bytes]] = {}
        self.status: Dict[str, str] = {}
        self.errors: List[str] = []


def replay(script: dict) -> Replayed:
    """Replays a script with the Python API only (memory origin, memory COWs)."""
    out = Replayed()
    decl = {s["name"]: s for s in script["snapshots"]}
    size = script["origin_size"]
    with cowsnap.Volume.memory(size) as vol:
        init = origin_image(size, script["origin_init"])
        if any(init):
            vol.write(0, init)
        live: Dict[str, cowsnap.Snapshot] = {}
        for op in script["ops"]:
            kind = op["op"]
            if kind == "snapshot":
                d = decl[op["name"]]
                store = d["store"].upper()
                live[op["name"]] = vol.snapshot(
                    cow_size=d["cow_size"],
                    chunk_size=d["chunk_sectors"] * SECTOR,
                    persistent=store != "N",
                    overflow="report" if store == "PO" else "invalidate",
                )
            elif kind == "write":
                data = bytes([op["fill"]]) * op["len"]
                target = vol if op["target"] == "origin" else live[op["target"]]
                try:
                    target.write(op["offset"], data)
                except cowsnap.CowsnapError:
                    out.errors.append(f"WRITE-ERR {op['target']} {op['offset']}")
            elif kind == "delete":
                s = live.pop(op["name"])
                out.status[op["name"]] = s.status().dm_status
                out.cow[op["name"]] = s.export_cow()
                s.delete()
            elif kind == "merge":
                s = live.pop(op["name"])
                seen: List[cowsnap.MergeProgress] = []
                cow = s.merge(progress=seen.append)
                assert seen and seen[-1].done and seen[-1].merged == seen[-1].total
                out.status[op["name"]] = merged_status(s, seen)
                out.cow[op["name"]] = cow
            else:
                raise AssertionError(f"unknown op {kind}")
        for d in script["snapshots"]:
            s = live.get(d["name"])
            if s is None:
                continue
            try:
                out.image[d["name"]] = s.read(0, size)
            except cowsnap.SnapshotInvalid:
                out.image[d["name"]] = None
                out.errors.append(f"READ-ERR {d['name']}")
            out.cow[d["name"]] = s.export_cow()
            out.status[d["name"]] = s.status().dm_status
        out.origin = vol.read(0, size)
    return out


def merged_status(s: "cowsnap.Snapshot", seen: list) -> str:
    return s.last_status.dm_status  # status when the merge completed


def kernel_dirs(vectors: Path) -> List[Path]:
    dirs = sorted(p for p in (vectors / "kernel").iterdir() if p.is_dir())
    assert len(dirs) >= 6, f"expected the kernel vectors in {vectors / 'kernel'}"
    return dirs


def gunzip(p: Path) -> bytes:
    with gzip.open(p, "rb") as f:
        return f.read()


def test_every_script_has_kernel_images(vectors_dir: Path) -> None:
    scripts = sorted(p.stem for p in (vectors_dir / "scripts").glob("*.json"))
    kernel = [p.name for p in kernel_dirs(vectors_dir)]
    assert scripts and scripts == kernel


@pytest.mark.parametrize(
    "name",
    sorted(p.stem for p in (Path(__file__).resolve().parents[4] / "shared" / "vectors" / "scripts").glob("*.json"))
    or ["<no scripts found>"],
)
def test_replay_matches_kernel(name: str, vectors_dir: Path) -> None:
    kdir = vectors_dir / "kernel" / name
    script = json.loads((vectors_dir / "scripts" / f"{name}.json").read_text())
    assert script == json.loads((kdir / "script.json").read_text()), "script and kernel copy differ"
    status = json.loads((kdir / "status.json").read_text())
    out = replay(script)

    assert first_diff(out.origin, gunzip(kdir / "origin.img.gz")) is None, "origin differs"
    names = [d["name"] for d in script["snapshots"]]
    assert sorted(out.cow) == sorted(names)
    for n in names:
        kcow = gunzip(kdir / f"{n}.cow.gz")
        assert len(out.cow[n]) == len(kcow), f"COW of {n}: size"
        assert first_diff(out.cow[n], kcow) is None, f"COW of {n} differs at byte {first_diff(out.cow[n], kcow)}"
        assert out.status[n] == status["status"][n], f"status of {n}"
        img = kdir / f"{n}.img.gz"
        mine = out.image.get(n)
        if img.exists():
            assert mine is not None, f"{n}: kernel could read it, we could not"
            assert first_diff(mine, gunzip(img)) is None, f"image of {n} differs"
        else:
            assert mine is None, f"{n}: readable here, not in the kernel"
    kerr = [e for e in status["errors"] if not e.startswith("WRITE-FAILED")]
    assert out.errors == kerr
