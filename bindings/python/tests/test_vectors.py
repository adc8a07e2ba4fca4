"""Cross-language check: every operation script of the shared vectors (``shared/vectors/``) and of the
repository's own (``tests/vectors/``), replayed through the Python API, yields the same COW bytes,
origin and snapshot images, statuses and refused writes as the real Linux kernel produced for it
(``kernel/<name>/``) — the same check the Rust core passes (``core/tests/vectors.rs``)."""

import gzip
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import cowsnap

SECTOR = 512
REPO = Path(__file__).resolve().parents[3]
SHARED = REPO / "tests" / "shared"
KERNEL_SETS = [SHARED / "vectors" / "kernel", REPO / "tests" / "vectors" / "kernel"]


def kernel_dirs() -> List[Path]:
    return sorted((p for d in KERNEL_SETS if d.is_dir() for p in d.iterdir() if p.is_dir()), key=str)


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


def replay(script: dict, workdir: str) -> Replayed:
    """Replays a script with the Python API only: memory origin; memory COWs, except for snapshots
    that get merged, whose COW is a file (a merged snapshot is gone, its COW file stays readable)."""
    out = Replayed()
    decl = {s["name"]: s for s in script["snapshots"]}
    merged = {op["name"] for op in script["ops"] if op["op"] == "merge"}
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
                    path=os.path.join(workdir, op["name"] + ".cow") if op["name"] in merged else None,
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

                def progress(p: cowsnap.MergeProgress, s: cowsnap.Snapshot = s, name: str = op["name"]) -> None:
                    seen.append(p)
                    if p.done:  # the status when the merge completed (the snapshot is removed next)
                        out.status[name] = s.status().dm_status

                s.merge(progress=progress)
                assert seen and seen[-1].done and seen[-1].merged == seen[-1].total
                assert s.path is not None
                out.cow[op["name"]] = Path(s.path).read_bytes()
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


def gunzip(p: Path) -> bytes:
    with gzip.open(p, "rb") as f:
        return f.read()


def test_vectors_present() -> None:
    shared = sorted(p.stem for p in (SHARED / "vectors" / "scripts").glob("*.json"))
    assert len(shared) >= 6, f"expected the shared scripts in {SHARED / 'vectors' / 'scripts'}"
    kernel = {p.name for p in kernel_dirs()}
    missing = [n for n in shared if n not in kernel]
    assert not missing, f"scripts without kernel images: {missing}"


@pytest.mark.parametrize("kdir", kernel_dirs(), ids=lambda p: p.name)
def test_replay_matches_kernel(kdir: Path, tmp_path: Path) -> None:
    script = json.loads((kdir / "script.json").read_text())
    shared_copy = SHARED / "vectors" / "scripts" / f"{kdir.name}.json"
    if shared_copy.exists():
        assert script == json.loads(shared_copy.read_text()), "script and kernel copy differ"
    status = json.loads((kdir / "status.json").read_text())
    out = replay(script, str(tmp_path))

    assert first_diff(out.origin, gunzip(kdir / "origin.img.gz")) is None, "origin differs"
    names = [d["name"] for d in script["snapshots"]]
    assert sorted(out.cow) == sorted(names)
    for n in names:
        kcow = gunzip(kdir / f"{n}.cow.gz")
        assert len(out.cow[n]) == len(kcow), f"COW of {n}: size"
        diff = first_diff(out.cow[n], kcow)
        assert diff is None, f"COW of {n} differs from the kernel's at byte {diff}"
        if n in status["status"]:  # the kernel lists live and merged snapshots, not deleted ones
            assert out.status[n] == status["status"][n], f"status of {n}"
        img = kdir / f"{n}.img.gz"
        mine = out.image.get(n)
        if img.exists():
            assert mine is not None, f"{n}: the kernel could read it, we could not"
            assert first_diff(mine, gunzip(img)) is None, f"image of {n} differs"
        else:
            assert mine is None, f"{n}: readable here, not in the kernel"
    kerr = [e for e in status["errors"] if not e.startswith("WRITE-FAILED")]
    assert out.errors == kerr, "refused operations differ"


@pytest.mark.parametrize("kdir", kernel_dirs(), ids=lambda p: p.name)
def test_kernel_cow_files_activate_and_read_back(kdir: Path, tmp_path: Path) -> None:
    """The kernel's origin + COW images, opened as files with Volume.open, read back the kernel's
    snapshot images."""
    script = json.loads((kdir / "script.json").read_text())
    origin = tmp_path / "origin.img"
    origin.write_bytes(gunzip(kdir / "origin.img.gz"))
    merged = {op["name"] for op in script["ops"] if op["op"] == "merge"}
    deleted = {op["name"] for op in script["ops"] if op["op"] == "delete"}
    for d in script["snapshots"]:
        if d["store"].upper() == "N":
            continue  # transient stores do not survive deactivation
        cow = tmp_path / f"{d['name']}.cow"
        cow.write_bytes(gunzip(kdir / f"{d['name']}.cow.gz"))
        img = kdir / f"{d['name']}.img.gz"
        with cowsnap.Volume.open(origin, [cow]) as vol:
            (snap,) = vol.snapshots
            if img.exists():
                assert snap.read(0, vol.size) == gunzip(img), d["name"]
            elif d["name"] in merged:
                assert snap.status().exceptions == 0  # a merged COW has no records left
                assert snap.read(0, vol.size) == vol.read(0, vol.size)
            elif d["name"] in deleted:
                snap.status()  # the COW as it was at deletion: activates
            else:
                with pytest.raises(cowsnap.SnapshotInvalid):
                    snap.read(0, vol.size)
