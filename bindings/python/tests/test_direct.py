"""``direct=True`` (``O_DIRECT``): the same bytes as a buffered volume, misaligned offsets and lengths
refused with the rule (nothing written), sizes and file systems that cannot do direct I/O refused
before anything is left behind.

The files live under ``/var/tmp`` (a disk file system on most machines, where ``/tmp`` may be a
tmpfs) or ``COWSNAP_DIRECT_DIR``."""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

import cowsnap

KiB = 1 << 10
MiB = 1 << 20


@pytest.fixture
def disk_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="cowsnap-py-direct-", dir=os.environ.get("COWSNAP_DIRECT_DIR", "/var/tmp")))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def refused(exc: type, text: str, fn, *args, **kwargs) -> None:
    with pytest.raises(exc) as ei:
        fn(*args, **kwargs)
    assert text in ei.value.message, ei.value.message


def workload(vol: cowsnap.Volume, cow: Path) -> bytes:
    vol.write(0, bytes(range(256)) * (MiB // 256))
    snap = vol.snapshot(cow_size=256 * KiB, path=cow)
    # Aligned writes from memory Python places where it likes (a bytearray slice, a memoryview).
    data = bytearray(b"\x01" + b"B" * 64 * KiB)
    vol.write(8192, memoryview(data)[1:])
    vol.write(MiB - 4096, b"C" * 4096)
    vol.flush()
    return snap.read(0, MiB)


def test_direct_volume_writes_what_a_buffered_one_writes(disk_dir: Path) -> None:
    with cowsnap.Volume.create(disk_dir / "d.img", MiB, direct=True) as d:
        seen_d = workload(d, disk_dir / "d.cow")
    with cowsnap.Volume.create(disk_dir / "b.img", MiB) as b:
        seen_b = workload(b, disk_dir / "b.cow")
    assert seen_d == seen_b == bytes(range(256)) * (MiB // 256)
    assert digest(disk_dir / "d.img") == digest(disk_dir / "b.img")
    assert digest(disk_dir / "d.cow") == digest(disk_dir / "b.cow")
    # Reopened direct: the same contents; the merge (area rewrites) works on direct files.
    with cowsnap.Volume.open(disk_dir / "d.img", [disk_dir / "d.cow"], direct=True) as d:
        assert d.snapshots[0].read(8192, 4096) == bytes(range(256)) * 16
        assert d.read(8192, 4096) == b"B" * 4096
        d.snapshots[0].merge()
        assert d.read(8192, 4096) == bytes(range(256)) * 16


@pytest.mark.parametrize(
    "call",
    [
        lambda v, s: v.write(512, b"x" * 4096),  # misaligned offset
        lambda v, s: v.write(4096, b"x" * 4000),  # misaligned length
        lambda v, s: v.write(1, b"x"),
        lambda v, s: v.read(100, 4096),
        lambda v, s: v.read(0, 100),
        lambda v, s: v.readinto(2048, bytearray(4096)),
        lambda v, s: s.read(4095, 4096),
        lambda v, s: s.write(0, b"y" * 512),
    ],
    ids=["write-offset", "write-length", "write-byte", "read-offset", "read-length", "readinto", "snap-read", "snap-write"],
)
def test_misaligned_io_is_refused_and_writes_nothing(disk_dir: Path, call) -> None:
    origin, cow = disk_dir / "o.img", disk_dir / "s.cow"
    with cowsnap.Volume.create(origin, MiB, direct=True) as vol:
        snap = vol.snapshot(cow_size=256 * KiB, path=cow)
        vol.write(0, b"A" * 8192)
        vol.flush()
        before = (digest(origin), digest(cow))
        refused(cowsnap.InvalidArgument, "multiples of 4096", call, vol, snap)
        vol.flush()
        assert (digest(origin), digest(cow)) == before
        assert vol.read(0, 4096) == b"A" * 4096


def test_sizes_and_flags_direct_io_cannot_serve(disk_dir: Path) -> None:
    p = disk_dir / "n.img"
    refused(cowsnap.InvalidArgument, "multiple of 4096", cowsnap.Volume.create, p, MiB + 512, direct=True)
    assert not p.exists()
    with pytest.raises(TypeError):
        cowsnap.Volume.create(p, MiB, direct="yes")
    assert not p.exists()
    with cowsnap.Volume.create(p, MiB, direct=True) as vol:
        cow = disk_dir / "n.cow"
        refused(cowsnap.InvalidArgument, "multiple of 4096", vol.snapshot, cow_size=256 * KiB + 100, path=cow)
        assert not cow.exists()
    odd = disk_dir / "odd.img"
    odd.write_bytes(b"z" * 5000)
    refused(cowsnap.InvalidArgument, "multiple of 4096", cowsnap.Volume.open, odd, direct=True)
    assert odd.read_bytes() == b"z" * 5000
    ro = disk_dir / "ro.img"
    ro.write_bytes(b"r" * 8192)
    ro.chmod(0o444)
    refused(cowsnap.IoError, "read-only", cowsnap.Volume.open, ro, direct=True)
    assert ro.read_bytes() == b"r" * 8192


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a ramfs (no direct I/O)")
def test_a_file_system_without_direct_io(disk_dir: Path) -> None:
    fs = disk_dir / "ramfs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(fs)], check=True)
    try:
        (fs / "o.img").write_bytes(bytes(8192))
        refused(cowsnap.Unsupported, "does not support direct I/O", cowsnap.Volume.open, fs / "o.img", direct=True)
        refused(cowsnap.Unsupported, "does not support direct I/O", cowsnap.Volume.create, fs / "n.img", MiB, direct=True)
        assert sorted(os.listdir(fs)) == ["o.img"]
        with cowsnap.Volume.create(disk_dir / "o.img", MiB, direct=True) as vol:
            refused(cowsnap.Unsupported, "does not support direct I/O", vol.snapshot, cow_size=256 * KiB, path=fs / "s.cow")
        assert sorted(os.listdir(fs)) == ["o.img"]
        # Without direct=True the same file opens.
        with cowsnap.Volume.open(fs / "o.img") as vol:
            assert vol.read(1, 3) == b"\0\0\0"
    finally:
        subprocess.run(["umount", str(fs)], check=False)
