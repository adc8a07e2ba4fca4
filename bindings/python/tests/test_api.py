"""Round trips through the Python API: volumes, snapshots, status, merge, export, files, life cycle."""

import os
import struct
from pathlib import Path

import pytest

import cowsnap

MiB = 1 << 20
SNAP_MAGIC = 0x70416E53  # dm-snapshot header magic ("SnAp" little-endian)


def test_version_and_library() -> None:
    assert isinstance(cowsnap.__version__, str) and cowsnap.__version__
    assert cowsnap.library_version() == cowsnap.__version__
    assert os.path.exists(cowsnap.library_path())


def test_memory_volume_round_trip() -> None:
    with cowsnap.Volume.memory(4 * MiB) as vol:
        assert vol.size == 4 * MiB and len(vol) == 4 * MiB
        assert vol.read(0, 16) == bytes(16)
        vol.write(12345, b"hello, world")
        assert vol.read(12345, 12) == b"hello, world"
        assert vol.read(12340, 20) == bytes(5) + b"hello, world" + bytes(3)
        vol.write(4 * MiB - 3, b"end")
        assert vol.read(4 * MiB - 3, 3) == b"end"
        vol.flush()
        assert vol.snapshots == []


def test_snapshot_keeps_old_data_and_is_writable() -> None:
    with cowsnap.Volume.memory(4 * MiB) as vol:
        vol.write(0, b"A" * 10000)
        snap = vol.snapshot(cow_size=1 * MiB)
        assert vol.snapshots == [snap]
        st = snap.status()
        assert st.state == "active" and st.valid
        assert st.sectors_allocated == st.metadata_sectors  # nothing copied yet
        assert st.data_percent == 0.0
        assert st.total_sectors == MiB // 512
        vol.write(100, b"B" * 50)
        assert vol.read(100, 50) == b"B" * 50
        assert snap.read(100, 50) == b"A" * 50
        st2 = snap.status()
        assert st2.exceptions == 1
        assert st2.sectors_allocated == st.sectors_allocated + 8  # one 4 KiB chunk
        assert st2.data_percent == pytest.approx(st2.sectors_allocated * 100 / st2.total_sectors)
        assert st2.dm_status == f"{st2.sectors_allocated}/{st2.total_sectors} {st2.metadata_sectors}"
        # snapshot writes go to the snapshot only
        snap.write(200, b"C" * 8)
        assert snap.read(200, 8) == b"C" * 8
        assert vol.read(200, 8) == b"A" * 8
        # a second snapshot sees the origin as it is now
        snap2 = vol.snapshot(cow_size=MiB, chunk_size=8192, persistent=False)
        assert snap2.read(100, 50) == b"B" * 50
        assert snap2.status().metadata_sectors == 0
        assert snap2.status().persistent is False
        assert snap2.status().chunk_size == 8192
        assert [s.id for s in vol.snapshots] == [snap.id, snap2.id]
        snap.delete()
        assert vol.snapshots == [snap2]
        with pytest.raises(cowsnap.UnknownSnapshot):
            snap.read(0, 1)


def test_export_cow_is_dm_format() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        snap = vol.snapshot(cow_size=256 * 1024)
        vol.write(0, b"x" * 4096)
        cow = snap.export_cow()
        assert len(cow) == 256 * 1024
        magic, valid, version, chunk_sectors = struct.unpack_from("<IIII", cow, 0)
        assert (magic, valid, version, chunk_sectors) == (SNAP_MAGIC, 1, 1, 8)
        # first exception record (metadata area at chunk 1): origin chunk 0 -> COW chunk 2
        assert struct.unpack_from("<QQ", cow, 4096) == (0, 2)
        assert cow[2 * 4096 : 3 * 4096] == bytes(4096)  # the old (zero) contents of chunk 0


def test_merge_with_progress() -> None:
    with cowsnap.Volume.memory(2 * MiB) as vol:
        vol.write(0, b"1" * (64 * 1024))
        snap = vol.snapshot(cow_size=MiB)
        vol.write(0, b"2" * (64 * 1024))  # 16 chunks preserved
        snap.write(4096, b"S" * 10)  # a change made on the snapshot
        seen = []
        snap.merge(progress=seen.append)
        assert seen, "progress was never called"
        assert seen[-1].done and seen[-1].merged == seen[-1].total == 16
        assert all(a.merged <= b.merged for a, b in zip(seen, seen[1:]))
        # the origin now holds the snapshot's contents
        assert vol.read(0, 4096) == b"1" * 4096
        assert vol.read(4096, 10) == b"S" * 10
        assert vol.snapshots == []
        with pytest.raises(cowsnap.UnknownSnapshot):
            snap.status()


def test_merge_without_callback_and_callback_exception() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        snap = vol.snapshot(cow_size=512 * 1024)
        vol.write(0, b"z" * 8192)
        snap.merge()
        assert vol.read(0, 8192) == bytes(8192)

        snap = vol.snapshot(cow_size=512 * 1024)
        vol.write(0, b"q" * (32 * 4096))

        class Stop(Exception):
            pass

        def boom(p: cowsnap.MergeProgress) -> None:
            raise Stop("stop here")

        with pytest.raises(Stop):
            snap.merge(progress=boom)
        # the merge can be resumed and completes
        snap.merge()
        assert vol.read(0, 32 * 4096) == bytes(32 * 4096)
        with pytest.raises(TypeError):
            vol.snapshot(cow_size=512 * 1024).merge(progress=42)  # type: ignore[arg-type]


def test_file_volume_persists_and_reactivates(tmp_path: Path) -> None:
    origin = tmp_path / "origin.img"
    cow = tmp_path / "snap.cow"
    with cowsnap.Volume.create(origin, 2 * MiB) as vol:
        vol.write(0, b"old!" * 1024)
        snap = vol.snapshot(cow_size=MiB, path=cow)
        assert snap.path == str(cow)
        vol.write(0, b"new!" * 1024)
        vol.flush()
        exported = snap.export_cow()
    assert origin.stat().st_size == 2 * MiB
    assert cow.read_bytes() == exported
    with cowsnap.Volume.open(str(origin), [cow]) as vol:
        assert vol.size == 2 * MiB
        assert vol.read(0, 4) == b"new!"
        (snap,) = vol.snapshots
        assert snap.read(0, 4096) == b"old!" * 1024
        assert snap.status().exceptions == 1
    # an origin with no snapshots, path as bytes
    with cowsnap.Volume.open(os.fsencode(origin)) as vol:
        assert vol.snapshots == [] and vol.read(0, 4) == b"new!"


def test_context_managers_and_close() -> None:
    vol = cowsnap.Volume.memory(MiB)
    with vol.snapshot(cow_size=256 * 1024) as snap:
        assert vol.snapshots == [snap]
    assert vol.snapshots == []  # the with block deleted it
    vol.close()
    vol.close()  # idempotent
    assert vol.closed
    with pytest.raises(ValueError, match="closed"):
        vol.read(0, 1)
    with pytest.raises(ValueError, match="closed"):
        snap.status()


def test_reprs() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        assert repr(vol) == f"<cowsnap.Volume memory size={MiB} snapshots=[]>"
        snap = vol.snapshot(cow_size=256 * 1024)
        r = repr(snap)
        assert r.startswith(f"<cowsnap.Snapshot id={snap.id} cow=memory active data=0.00%")
        assert "snapshots=[0]" in repr(vol)
        st = snap.status()
        assert "state='active'" in repr(st)
        snap.delete()
        assert repr(snap).endswith("deleted>")
    assert repr(vol).endswith("closed>")
    e = cowsnap.OutOfRange("too far", )
    assert "OUT_OF_RANGE" in str(e)


def test_autoextend_grows_the_cow() -> None:
    with cowsnap.Volume.memory(4 * MiB) as vol:
        snap = vol.snapshot(cow_size=64 * 1024, autoextend=(70, 50))
        vol.write(0, b"x" * (2 * MiB))  # 512 chunks: far more than the COW held at first
        st = snap.status()
        assert st.state == "active", st
        assert st.total_sectors > 128
        assert st.exceptions == 512
        assert snap.read(0, 4096) == bytes(4096)


def test_overflow_modes() -> None:
    with cowsnap.Volume.memory(4 * MiB) as vol:
        p = vol.snapshot(cow_size=64 * 1024)  # P: origin overflow invalidates
        vol.write(0, b"x" * MiB)
        st = p.status()
        assert st.state == "invalid" and st.data_percent is None and st.dm_status == "Invalid"
        assert st.lvs_attr == "swi-I-s---"
        po = vol.snapshot(cow_size=64 * 1024, overflow="report")  # PO: snapshot write overflow reports
        with pytest.raises(cowsnap.SnapshotOverflow):
            po.write(0, b"y" * MiB)
        st = po.status()
        assert st.state == "overflow" and st.data_percent == 100.0 and st.overflow == "report"
        assert po.read(0, 4096)  # still readable


def test_cowsnap_library_env_overrides_the_packaged_library(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    code = "import cowsnap; print(cowsnap.library_path())"
    env = dict(os.environ)
    copy = tmp_path / "libcowsnap-other.so"
    shutil.copyfile(cowsnap.library_path(), copy)
    env["COWSNAP_LIBRARY"] = str(copy)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(copy)
    env["COWSNAP_LIBRARY"] = str(tmp_path / "missing.so")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "COWSNAP_LIBRARY" in out.stderr and "missing.so" in out.stderr


def test_changed_ranges_name_every_difference() -> None:
    with cowsnap.Volume.memory(4 * MiB) as vol:
        vol.write(0, b"\x11" * (4 * MiB))
        old = vol.snapshot(cow_size=2 * MiB, chunk_size=4096)
        assert old.changed_ranges() == []
        vol.write(10 * 4096 + 5, b"x")  # chunk 10
        vol.write(255 * 4096, b"y" * (2 * 4096))  # chunks 255..256, across a table window
        new = vol.snapshot(cow_size=2 * MiB, chunk_size=65536)
        new.write(3 * 65536, b"z")  # a write to the newer snapshot itself: chunk 3 of 64 KiB
        assert old.changed_ranges() == [(10 * 4096, 4096), (255 * 4096, 2 * 4096)]
        between = new.changed_ranges(old)
        assert between == [(10 * 4096, 4096), (3 * 65536, 65536), (255 * 4096, 2 * 4096)]
        # Outside the ranges the two snapshots read the same.
        a, b = old.read(0, 4 * MiB), new.read(0, 4 * MiB)
        inside = bytearray(4 * MiB)
        for off, n in between:
            inside[off : off + n] = b"\x01" * n
        assert all(a[i] == b[i] for i in range(0, 4 * MiB, 512) if not inside[i])
        assert a != b
        with pytest.raises(TypeError):
            new.changed_ranges(42)  # type: ignore[arg-type]
