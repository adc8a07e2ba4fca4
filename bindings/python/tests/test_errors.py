"""Every C result code has its exception class, raised with the library's message; each reachable code
is provoked through the public API (the rest through the raw C functions)."""

import ctypes
from pathlib import Path

import pytest

import cowsnap
from cowsnap import _lib

MiB = 1 << 20

ALL_CLASSES = [
    cowsnap.OutOfRange,
    cowsnap.BadChunkSize,
    cowsnap.InvalidArgument,
    cowsnap.SnapshotInvalid,
    cowsnap.SnapshotOverflow,
    cowsnap.NoSpace,
    cowsnap.UnknownSnapshot,
    cowsnap.CorruptMetadata,
    cowsnap.IoError,
    cowsnap.Merging,
    cowsnap.Unsupported,
    cowsnap.NullPointer,
    cowsnap.Panic,
    cowsnap.BufferTooSmall,
]


def test_one_class_per_library_code() -> None:
    """The library's codes (cowsnap_error_name) and the classes match one to one."""
    lib_codes = {}
    for code in range(-1, -100, -1):
        name = _lib.LIB.cowsnap_error_name(code).decode()
        if name != "UNKNOWN":
            lib_codes[code] = name
    assert _lib.LIB.cowsnap_error_name(0) == b"OK"
    assert lib_codes, "the library reports no error codes"
    mine = {cls.code: cls.name for cls in ALL_CLASSES}
    assert mine == lib_codes
    assert len({cls.code for cls in ALL_CLASSES}) == len(ALL_CLASSES)
    for cls in ALL_CLASSES:
        assert issubclass(cls, cowsnap.CowsnapError)
        assert cowsnap.error_class(cls.code) is cls
    assert cowsnap.error_class(-999) is cowsnap.CowsnapError


def check_raised(excinfo: "pytest.ExceptionInfo[cowsnap.CowsnapError]", cls: type, *words: str) -> None:
    e = excinfo.value
    assert type(e) is cls
    assert e.code == cls.code and e.name == cls.name  # type: ignore[attr-defined]
    assert e.message and e.message == e.args[0]
    for w in words:
        assert w in e.message, (w, e.message)
    assert cls.name in str(e)  # type: ignore[attr-defined]


def test_out_of_range() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        with pytest.raises(cowsnap.OutOfRange) as ei:
            vol.read(MiB - 2, 4)
        check_raised(ei, cowsnap.OutOfRange, "out of range")
        with pytest.raises(cowsnap.OutOfRange):
            vol.write(MiB, b"x")
        snap = vol.snapshot(cow_size=256 * 1024)
        with pytest.raises(cowsnap.OutOfRange):
            snap.readinto(MiB - 1, bytearray(2))
        with pytest.raises(cowsnap.OutOfRange):
            snap.write(1 << 40, b"x")
        assert vol.read(MiB - 2, 2) == bytes(2)  # nothing was written


def test_bad_chunk_size() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        for bad in (1000, 2048, 1 << 20, 4096 + 512):
            with pytest.raises(cowsnap.BadChunkSize) as ei:
                vol.snapshot(cow_size=MiB, chunk_size=bad)
            check_raised(ei, cowsnap.BadChunkSize, str(bad))


def test_invalid_argument() -> None:
    with pytest.raises(cowsnap.InvalidArgument) as ei:
        cowsnap.Volume.memory(0)
    check_raised(ei, cowsnap.InvalidArgument, "size")
    with cowsnap.Volume.memory(MiB) as vol:
        with pytest.raises(cowsnap.InvalidArgument):
            vol.snapshot(cow_size=0)


def test_snapshot_invalid() -> None:
    with cowsnap.Volume.memory(4 * MiB) as vol:
        snap = vol.snapshot(cow_size=64 * 1024)  # header + area + 14 data chunks
        vol.write(0, b"x" * MiB)  # 256 chunks: the COW overflows, the snapshot is invalidated
        assert vol.read(0, 1) == b"x"  # the origin write went on
        with pytest.raises(cowsnap.SnapshotInvalid) as ei:
            snap.read(0, 1)
        check_raised(ei, cowsnap.SnapshotInvalid, "invalid")
        with pytest.raises(cowsnap.SnapshotInvalid):
            snap.write(0, b"y")
        with pytest.raises(cowsnap.SnapshotInvalid):
            snap.merge()
        snap.delete()  # an invalid snapshot can still be removed


def test_snapshot_overflow() -> None:
    with cowsnap.Volume.memory(4 * MiB) as vol:
        snap = vol.snapshot(cow_size=64 * 1024, overflow="report")
        with pytest.raises(cowsnap.SnapshotOverflow) as ei:
            snap.write(0, b"y" * MiB)
        check_raised(ei, cowsnap.SnapshotOverflow, "overflow")
        assert snap.status().state == "overflow"
        with pytest.raises(cowsnap.SnapshotOverflow):
            snap.write(2 * MiB, b"z")
        assert snap.read(0, 4) == b"yyyy"  # chunks written before it filled stay


def test_no_space() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        with pytest.raises(cowsnap.NoSpace) as ei:
            vol.snapshot(cow_size=4096)  # persistent: header + one metadata area + data needed
        check_raised(ei, cowsnap.NoSpace)
        assert vol.snapshots == []


def test_unknown_snapshot() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        snap = vol.snapshot(cow_size=256 * 1024)
        snap.delete()
        for call in (lambda: snap.read(0, 1), snap.status, snap.delete, snap.export_cow, lambda: snap.write(0, b"x")):
            with pytest.raises(cowsnap.UnknownSnapshot) as ei:
                call()
            check_raised(ei, cowsnap.UnknownSnapshot, str(snap.id))


def test_corrupt_metadata(tmp_path: Path) -> None:
    origin = tmp_path / "origin.img"
    cow = tmp_path / "bad.cow"
    with cowsnap.Volume.create(origin, MiB) as vol:
        snap = vol.snapshot(cow_size=256 * 1024, path=cow)
        vol.write(0, b"data" * 1024)
        vol.flush()
    raw = bytearray(cow.read_bytes())
    assert raw[:4] == b"SnAp"
    raw[8:12] = (7).to_bytes(4, "little")  # an unknown on-disk version
    cow.write_bytes(bytes(raw))
    with pytest.raises(cowsnap.CorruptMetadata) as ei:
        cowsnap.Volume.open(origin, [cow])
    check_raised(ei, cowsnap.CorruptMetadata, str(cow))
    del snap


def test_io_error(tmp_path: Path) -> None:
    with pytest.raises(cowsnap.IoError) as ei:
        cowsnap.Volume.open(tmp_path / "does-not-exist.img", [])
    check_raised(ei, cowsnap.IoError, "does-not-exist.img")
    with pytest.raises(cowsnap.IoError):
        cowsnap.Volume.create(tmp_path / "no-such-dir" / "x.img", MiB)
    with cowsnap.Volume.memory(MiB) as vol:
        with pytest.raises(cowsnap.IoError):
            vol.snapshot(cow_size=MiB, path=tmp_path / "no-such-dir" / "x.cow")


def test_merging() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        snap = vol.snapshot(cow_size=512 * 1024)
        vol.write(0, b"n" * (64 * 1024))

        class Interrupt(Exception):
            pass

        def stop(p: cowsnap.MergeProgress) -> None:
            raise Interrupt()

        with pytest.raises(Interrupt):
            snap.merge(progress=stop)
        assert snap.status().state == "merging"
        with pytest.raises(cowsnap.Merging) as ei:
            vol.snapshot(cow_size=256 * 1024)
        check_raised(ei, cowsnap.Merging, "merg")
        with pytest.raises(cowsnap.Merging):
            snap.delete()
        assert vol.read(0, 4) == bytes(4)  # the origin already shows the merged view
        snap.merge()
        assert vol.read(0, 64 * 1024) == bytes(64 * 1024)


def test_buffer_too_small_and_null_pointer_through_the_raw_abi() -> None:
    """Codes the Python API never lets happen, checked on the raw functions with check()."""
    with cowsnap.Volume.memory(MiB) as vol:
        snap = vol.snapshot(cow_size=256 * 1024)
        ptr = vol._h.acquire()
        try:
            needed = ctypes.c_size_t()
            small = ctypes.create_string_buffer(16)
            r = _lib.LIB.cowsnap_snapshot_export_cow(ptr, snap.id, small, 16, ctypes.byref(needed))
            assert needed.value == 256 * 1024
            with pytest.raises(cowsnap.BufferTooSmall) as ei:
                _lib.check(r)
            check_raised(ei, cowsnap.BufferTooSmall, str(256 * 1024))
            r = _lib.LIB.cowsnap_volume_size(ptr, None)
            with pytest.raises(cowsnap.NullPointer) as ei2:
                _lib.check(r)
            check_raised(ei2, cowsnap.NullPointer, "out_size")
            r = _lib.LIB.cowsnap_volume_read(None, 0, None, 0)
            with pytest.raises(cowsnap.NullPointer):
                _lib.check(r)
        finally:
            vol._h.release()


@pytest.mark.parametrize("cls", [cowsnap.Panic, cowsnap.Unsupported])
def test_codes_not_reachable_from_python_still_map(cls: type) -> None:
    """PANIC (an internal bug) and UNSUPPORTED (resizing a device that cannot grow; both built-in
    devices can) cannot be provoked from outside: check the mapping of the numbers."""
    with pytest.raises(cls) as ei:
        _lib.check(cls.code)  # type: ignore[attr-defined]
    assert type(ei.value) is cls and ei.value.code == cls.code  # type: ignore[attr-defined]
    assert _lib.LIB.cowsnap_error_name(cls.code).decode() == cls.name  # type: ignore[attr-defined]


def test_message_is_per_thread() -> None:
    import threading

    with cowsnap.Volume.memory(MiB) as vol:
        with pytest.raises(cowsnap.OutOfRange):
            vol.read(MiB, 1)
        main_msg = _lib.last_error()
        other = []

        def t() -> None:
            try:
                cowsnap.Volume.memory(0)
            except cowsnap.InvalidArgument as e:
                other.append(e.message)

        th = threading.Thread(target=t)
        th.start()
        th.join()
        assert other and "size" in other[0]
        assert _lib.last_error() == main_msg  # untouched by the other thread's failure


def test_classes_are_built_from_the_library_table() -> None:
    """errors.py restates no code: its classes are the library's cowsnap_error_codes, named after the
    library's names, documented with the library's descriptions; the old class names all import."""
    count = ctypes.c_size_t()
    assert _lib.LIB.cowsnap_error_codes(None, 0, ctypes.byref(count)) == 0
    codes = (ctypes.c_int32 * count.value)()
    assert _lib.LIB.cowsnap_error_codes(codes, count.value, ctypes.byref(count)) == 0
    assert list(codes)[0] == 0
    for code in list(codes)[1:]:
        cls = cowsnap.error_class(code)
        assert cls is not cowsnap.CowsnapError
        assert cls.name == _lib.LIB.cowsnap_error_name(code).decode()
        assert cls.__doc__ == _lib.LIB.cowsnap_error_description(code).decode()
        assert cowsnap.error_by_name(cls.name) is cls
        assert getattr(cowsnap, cls.__name__) is cls and cls.__name__ in cowsnap.__all__
    assert {c.__name__ for c in ALL_CLASSES} <= set(cowsnap.__all__)
    from cowsnap import BufferTooSmall, IoError, VolumeClosed  # noqa: F401  (names kept)


@pytest.mark.parametrize(
    "call",
    [
        lambda v: v.snapshot(cow_size=MiB, persistent=False, overflow="report"),
        lambda v: v.snapshot(cow_size=MiB, autoextend=(0, 5)),
        lambda v: v.snapshot(cow_size=MiB, autoextend=(101, 5)),
        lambda v: v.snapshot(cow_size=MiB, autoextend=(50, 0)),
        lambda v: v.read(-1, 1),
        lambda v: cowsnap.Volume.memory(0),
    ],
    ids=["transient-report", "autoextend-0-5", "autoextend-101", "autoextend-percent-0", "negative", "memory-0"],
)
def test_refused_values_are_cowsnap_errors_with_a_code(call) -> None:  # type: ignore[no-untyped-def]
    """The issue's divergences: a refused value is an InvalidArgument (code -3, name
    INVALID_ARGUMENT), a CowsnapError, and still a ValueError for older callers."""
    with cowsnap.Volume.memory(MiB) as vol:
        with pytest.raises(cowsnap.InvalidArgument) as ei:
            call(vol)
        e = ei.value
        assert isinstance(e, cowsnap.CowsnapError) and isinstance(e, ValueError)
        assert (e.code, e.name) == (-3, "INVALID_ARGUMENT")
        assert vol.snapshots == []


def test_closed_volume_is_invalid_argument() -> None:
    vol = cowsnap.Volume.memory(MiB)
    vol.close()
    with pytest.raises(cowsnap.VolumeClosed) as ei:
        vol.read(0, 1)
    assert isinstance(ei.value, cowsnap.InvalidArgument) and ei.value.code == -3
