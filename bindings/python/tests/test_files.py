"""The file edges (issue 13): what ``Volume.open``, ``Volume.create`` and ``Volume.snapshot(path=...)``
do with paths that are not what they should be. Each refusal is checked twice: the exception (class,
code, message) AND every file in play unchanged (type, inode, size, SHA-256, link target).
Root-only cases (tmpfs mounts, mknod) are skipped with the reason when not run as root."""

import contextlib
import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest

import cowsnap

KiB = 1 << 10
MiB = 1 << 20

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, mknod)")


def signature(p: Path) -> Optional[Tuple[object, ...]]:
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return ("link", st.st_ino, os.readlink(p))
    if stat.S_ISREG(st.st_mode):
        return ("file", st.st_ino, st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return (stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev)


@contextlib.contextmanager
def unchanged(*paths: Path) -> Iterator[None]:
    """Asserts that the body leaves every path exactly as it was."""
    before: Dict[Path, object] = {p: signature(p) for p in paths}
    yield
    for p in paths:
        assert signature(p) == before[p], f"{p} changed"


def refused(exc: type, text: str, fn, *args, **kwargs) -> cowsnap.CowsnapError:
    with pytest.raises(exc) as ei:
        fn(*args, **kwargs)
    e = ei.value
    assert type(e) is exc or isinstance(e, exc)
    assert e.code == exc.code and e.name == exc.name
    assert text in e.message, e.message
    return e


def make_volume(d: Path, name: str = "v") -> Tuple[Path, Path]:
    """An origin file of 1 MiB (first chunk zero) with a persistent COW file holding the old data of
    64 KiB that changed after the snapshot."""
    origin, cow = d / f"{name}-origin.img", d / f"{name}-s1.cow"
    with cowsnap.Volume.create(origin, MiB) as vol:
        vol.write(4096, b"A" * (MiB - 4096))
        vol.snapshot(cow_size=256 * KiB, path=cow)
        vol.write(4096, b"B" * 64 * KiB)
    return origin, cow


# --- 1. opening never formats --------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["zeroed magic", "truncated and regrown", "empty"])
def test_open_never_formats_a_cow(tmp_path: Path, damage: str) -> None:
    origin, cow = make_volume(tmp_path)
    with cowsnap.Volume.open(origin, [cow]) as vol:
        assert vol.snapshots[0].read(4096, 2) == b"AA"
    if damage == "zeroed magic":
        with open(cow, "r+b") as f:
            f.write(b"\0\0\0\0")
    else:
        os.truncate(cow, 0)
        if damage == "truncated and regrown":
            os.truncate(cow, 256 * KiB)
    with unchanged(origin, cow):
        refused(cowsnap.CorruptMetadata, str(cow), cowsnap.Volume.open, origin, [cow])


# --- 5. one file as two devices ------------------------------------------------------------------


def test_one_file_cannot_be_two_devices(tmp_path: Path) -> None:
    origin, cow = make_volume(tmp_path)
    (tmp_path / "sub").mkdir()
    hard, soft = tmp_path / "hard.cow", tmp_path / "soft.cow"
    os.link(cow, hard)
    os.symlink(cow, soft)
    origin_soft, origin_hard = tmp_path / "origin-soft.cow", tmp_path / "origin-hard.cow"
    os.symlink(origin, origin_soft)
    os.link(origin, origin_hard)
    cases = {
        "the same COW twice": [cow, cow],
        "a hard link to the COW": [cow, hard],
        "a symlink to the COW": [soft, cow],
        "a .. path to the COW": [cow, tmp_path / "sub" / ".." / cow.name],
        "the origin as a COW": [origin],
        "a symlink to the origin": [origin_soft],
        "a hard link to the origin": [origin_hard],
    }
    with unchanged(origin, cow):
        for what, cows in cases.items():
            e = refused(cowsnap.InvalidArgument, "is the same file as", cowsnap.Volume.open, origin, cows)
            assert "cow_paths[" in e.message, what
    refused(cowsnap.InvalidArgument, "origin_path", cowsnap.Volume.open, origin, [origin])
    with cowsnap.Volume.open(origin, [soft]) as vol:  # the pair itself is fine
        assert vol.snapshots[0].read(4096, 2) == b"AA"


# --- paths of the wrong kind ---------------------------------------------------------------------


def test_open_refuses_wrong_kinds(tmp_path: Path) -> None:
    origin, cow = make_volume(tmp_path)
    d = tmp_path / "dir"
    d.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    missing = tmp_path / "missing.cow"
    with unchanged(origin, cow, fifo):
        refused(cowsnap.InvalidArgument, "is a directory", cowsnap.Volume.open, d, [])
        refused(cowsnap.InvalidArgument, "is a directory", cowsnap.Volume.open, origin, [d])
        refused(cowsnap.InvalidArgument, "is a character device", cowsnap.Volume.open, "/dev/null")
        refused(cowsnap.InvalidArgument, "is a character device", cowsnap.Volume.open, origin, ["/dev/zero"])
        refused(cowsnap.InvalidArgument, "is a FIFO", cowsnap.Volume.open, origin, [fifo])
        refused(cowsnap.IoError, "No such file", cowsnap.Volume.open, origin, [missing])
        assert not missing.exists()
    os.chmod(cow, 0o444)  # refused for root too, whose open(2) would succeed
    with unchanged(origin, cow):
        refused(cowsnap.IoError, "read-only", cowsnap.Volume.open, origin, [cow])
    os.chmod(origin, 0o444)
    with unchanged(origin):
        refused(cowsnap.IoError, "read-only", cowsnap.Volume.open, origin)


def test_create_refuses_to_replace_anything(tmp_path: Path) -> None:
    origin, cow = make_volume(tmp_path)
    d = tmp_path / "dir"
    d.mkdir()
    target = tmp_path / "target.cow"
    dangling = tmp_path / "dangling.cow"
    os.symlink(target, dangling)
    empty = tmp_path / "empty.cow"
    empty.touch()
    to_empty = tmp_path / "to-empty.cow"
    os.symlink(empty, to_empty)
    ro = tmp_path / "ro.cow"
    ro.touch(0o444)
    os.chmod(ro, 0o444)
    with cowsnap.Volume.memory(MiB) as vol, unchanged(origin, cow, dangling, empty, to_empty, ro):
        snap = vol.snapshot
        refused(cowsnap.InvalidArgument, "is a directory", snap, 64 * KiB, path=d)
        refused(cowsnap.InvalidArgument, "is a character device", snap, 64 * KiB, path="/dev/null")
        refused(cowsnap.InvalidArgument, "refusing to overwrite", snap, 64 * KiB, path=cow)
        refused(cowsnap.InvalidArgument, "refusing to overwrite", snap, 64 * KiB, path=origin)
        refused(cowsnap.InvalidArgument, "symbolic link", snap, 64 * KiB, path=dangling)
        refused(cowsnap.InvalidArgument, "symbolic link", snap, 64 * KiB, path=to_empty)
        refused(cowsnap.IoError, "read-only", snap, 64 * KiB, path=ro)
        refused(cowsnap.IoError, "no-dir", snap, 64 * KiB, path=tmp_path / "no-dir" / "s.cow")
        create = cowsnap.Volume.create
        refused(cowsnap.InvalidArgument, "refusing to overwrite", create, origin, MiB)
        refused(cowsnap.InvalidArgument, "refusing to overwrite", create, cow, MiB)
        refused(cowsnap.InvalidArgument, "is a directory", create, d, MiB)
        refused(cowsnap.InvalidArgument, "is a character device", create, "/dev/null", MiB)
        refused(cowsnap.InvalidArgument, "symbolic link", create, dangling, MiB)
        refused(cowsnap.IoError, "read-only", create, ro, MiB)
        assert vol.snapshots == []
    assert not target.exists()
    # An empty regular file (mkstemp's) is accepted, and its space reserved.
    with cowsnap.Volume.memory(MiB) as vol:
        vol.snapshot(64 * KiB, path=empty)
        st = os.stat(empty)
        assert st.st_size == 64 * KiB and st.st_blocks * 512 >= 64 * KiB


@root_only
def test_block_device_node_is_never_a_new_cow(tmp_path: Path) -> None:
    node = tmp_path / "blockdev"
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 251))
    with cowsnap.Volume.memory(MiB) as vol, unchanged(node):
        refused(cowsnap.InvalidArgument, "is a block device", vol.snapshot, 64 * KiB, path=node)
        refused(cowsnap.InvalidArgument, "is a block device", cowsnap.Volume.create, node, MiB)
        refused(cowsnap.InvalidArgument, "is a block device", cowsnap.Volume.open, node)
    assert stat.S_ISBLK(os.lstat(node).st_mode)


def test_refused_snapshot_leaves_no_file(tmp_path: Path) -> None:
    """A snapshot the volume refuses after its COW file was made (here: during a merge) removes it."""
    cow = tmp_path / "new.cow"
    with cowsnap.Volume.memory(MiB) as vol:
        s = vol.snapshot(64 * KiB)
        vol.write(0, b"x" * 4096)
        vol.write(8192, b"y" * 4096)

        class Stop(Exception):
            pass

        def stop(_p: cowsnap.MergeProgress) -> None:
            raise Stop

        with pytest.raises(Stop):
            s.merge(progress=stop)
        refused(cowsnap.Merging, "merg", vol.snapshot, 64 * KiB, path=cow)
        assert not cow.exists()
        s.merge()


# --- 12. sizes, closed handles -------------------------------------------------------------------


def test_cow_needs_three_chunks_and_extend_bounds(tmp_path: Path) -> None:
    cow = tmp_path / "s.cow"
    with cowsnap.Volume.memory(MiB) as vol:
        refused(cowsnap.NoSpace, "needs 3 chunks", vol.snapshot, 2 * 4096)
        refused(cowsnap.NoSpace, "needs 3 chunks", vol.snapshot, 2 * 4096, path=cow)
        assert not cow.exists()
        refused(cowsnap.NoSpace, "196608 bytes", vol.snapshot, 3 * 65536 - 512, chunk_size=65536)
        s = vol.snapshot(3 * 4096, path=cow)
        vol.write(0, b"\1" * 8)
        assert s.read(0, 8) == b"\0" * 8
        with unchanged(cow):
            e = refused(cowsnap.InvalidArgument, "out of range", s.extend, 2**64 - 1)
            assert "too small" not in e.message
            refused(cowsnap.InvalidArgument, "out of range", s.extend, 2**63)
        m = vol.snapshot(64 * KiB)
        refused(cowsnap.NoSpace, "out of memory", m.extend, 1 << 62)
        assert s.read(0, 8) == b"\0" * 8 and m.read(0, 8) == b"\1" * 8


def test_closed_volume_has_a_code() -> None:
    vol = cowsnap.Volume.memory(MiB)
    s = vol.snapshot(64 * KiB)
    vol.close()
    for call in (lambda: vol.read(0, 1), lambda: s.read(0, 1), lambda: vol.snapshot(64 * KiB)):
        with pytest.raises(cowsnap.VolumeClosed) as ei:
            call()
        assert isinstance(ei.value, ValueError) and isinstance(ei.value, cowsnap.InvalidArgument)
        assert ei.value.code == cowsnap.InvalidArgument.code and ei.value.name == "INVALID_ARGUMENT"
    refused(cowsnap.InvalidArgument, "volume size is 0", cowsnap.Volume.memory, 0)


# --- 2. COW reservation on a small file system (root) --------------------------------------------


@contextlib.contextmanager
def tmpfs(at: Path, size: str, *extra: str) -> Iterator[Path]:
    at.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(at)], check=True)
    try:
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], check=False)


def free_bytes(p: Path) -> int:
    s = os.statvfs(p)
    return s.f_bavail * s.f_frsize


@root_only
def test_cow_space_is_reserved_and_enospc_fails_cleanly(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "8m") as fs, cowsnap.Volume.memory(4 * MiB) as vol:
        cow = fs / "s1.cow"
        before = free_bytes(fs)
        refused(cowsnap.IoError, "No space left on device", vol.snapshot, 16 * MiB, path=cow)
        assert not cow.exists() and free_bytes(fs) == before
        empty = fs / "empty.cow"  # the caller's empty file: refused the same way, left empty
        empty.touch()
        refused(cowsnap.IoError, "No space left on device", vol.snapshot, 16 * MiB, path=empty)
        assert os.stat(empty).st_size == 0 and os.stat(empty).st_blocks == 0
        empty.unlink()
        assert free_bytes(fs) == before
        s = vol.snapshot(4 * MiB, path=cow)
        assert before - free_bytes(fs) >= 4 * MiB, "the COW's space is taken at creation"
        refused(cowsnap.IoError, "No space left on device", s.extend, 64 * MiB)
        assert os.stat(cow).st_size == 4 * MiB
        with open(fs / "filler", "wb") as f:  # fill the disk
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\x5a" * MiB)
                    f.flush()
        vol.write(0, b"\x33" * MiB)  # 256 chunks copied into the reserved space
        assert s.status().state == "active"
        assert s.read(0, MiB) == b"\0" * MiB


@root_only
def test_bind_mount_of_a_cow_is_the_same_file(tmp_path: Path) -> None:
    origin, cow = make_volume(tmp_path)
    bind = tmp_path / "bind.cow"
    bind.touch()
    subprocess.run(["mount", "--bind", str(cow), str(bind)], check=True)
    try:
        with unchanged(origin, cow):
            refused(cowsnap.InvalidArgument, "is the same file as", cowsnap.Volume.open, origin, [cow, bind])
    finally:
        subprocess.run(["umount", "-l", str(bind)], check=False)


@root_only
def test_read_only_mount(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "4m") as fs:
        origin, cow = make_volume(fs)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        with unchanged(origin, cow):
            refused(cowsnap.IoError, "Read-only file system", cowsnap.Volume.open, origin, [cow])
            with cowsnap.Volume.memory(MiB) as vol:
                refused(cowsnap.IoError, "Read-only file system", vol.snapshot, 64 * KiB, path=fs / "s2.cow")
