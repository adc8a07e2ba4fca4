"""Every kind of bytes-like object in and out, and wrong Python types refused before reaching C."""

import array
import ctypes
import mmap

import pytest

import cowsnap

MiB = 1 << 20
PAYLOAD = bytes(range(256)) * 16  # 4096 bytes


@pytest.fixture()
def vol():
    with cowsnap.Volume.memory(MiB) as v:
        yield v


@pytest.fixture()
def snap(vol):
    return vol.snapshot(cow_size=256 * 1024)


def writers():
    m = mmap.mmap(-1, len(PAYLOAD))
    m.write(PAYLOAD)
    return {
        "bytes": PAYLOAD,
        "bytearray": bytearray(PAYLOAD),
        "memoryview": memoryview(bytearray(PAYLOAD)),
        "readonly memoryview": memoryview(PAYLOAD),
        "memoryview slice": memoryview(b"xx" + PAYLOAD + b"yy")[2:-2],
        "array B": array.array("B", PAYLOAD),
        "array I": array.array("I", PAYLOAD),  # 4-byte items: written as their raw bytes
        "ctypes array": (ctypes.c_uint8 * len(PAYLOAD)).from_buffer_copy(PAYLOAD),
        "mmap": m,
    }


@pytest.mark.parametrize("kind", list(writers()))
@pytest.mark.parametrize("target", ["origin", "snapshot"])
def test_write_accepts_any_bytes_like(kind, target, vol, snap) -> None:
    data = writers()[kind]
    dev = vol if target == "origin" else snap
    assert dev.write(8192 + 3, data) == len(PAYLOAD)
    assert dev.read(8192 + 3, len(PAYLOAD)) == PAYLOAD


@pytest.mark.parametrize("target", ["origin", "snapshot"])
def test_readinto_fills_caller_buffers_in_place(target, vol, snap) -> None:
    dev = vol if target == "origin" else snap
    dev.write(100, PAYLOAD)
    ba = bytearray(len(PAYLOAD))
    assert dev.readinto(100, ba) == len(PAYLOAD) and ba == PAYLOAD
    # a slice of a bigger buffer: only the slice changes
    big = bytearray(b"#" * (len(PAYLOAD) + 20))
    mv = memoryview(big)
    dev.readinto(100, mv[10:-10])
    assert big[:10] == b"#" * 10 and big[-10:] == b"#" * 10 and big[10:-10] == PAYLOAD
    arr = array.array("B", bytes(64))
    dev.readinto(100, arr)
    assert arr.tobytes() == PAYLOAD[:64]
    arr32 = array.array("I", [0] * 16)  # 64 bytes
    dev.readinto(100, arr32)
    assert arr32.tobytes() == PAYLOAD[:64]
    c = (ctypes.c_char * 32)()
    dev.readinto(100, c)
    assert c.raw == PAYLOAD[:32]
    m = mmap.mmap(-1, 4096)
    dev.readinto(100, m)
    assert m[:] == PAYLOAD
    assert dev.readinto(100, bytearray()) == 0


def test_readinto_refuses_read_only_and_non_buffers(vol) -> None:
    for bad in (b"immutable", memoryview(b"ro"), "text", 42, None, [1, 2]):
        with pytest.raises(TypeError):
            vol.readinto(0, bad)


def test_write_refuses_non_bytes(vol, snap) -> None:
    for dev in (vol, snap):
        for bad in ("text", 42, None, [1, 2, 3], 3.5):
            with pytest.raises(TypeError):
                dev.write(0, bad)


def test_non_contiguous_buffers_are_value_errors(vol) -> None:
    strided = memoryview(bytearray(64))[::2]
    with pytest.raises(ValueError):
        vol.write(0, strided)
    with pytest.raises(ValueError):
        vol.readinto(0, strided)


@pytest.mark.parametrize("bad", ["0", 1.0, None, b"1", True])
def test_offsets_and_sizes_must_be_ints(vol, snap, bad) -> None:
    with pytest.raises(TypeError):
        vol.read(bad, 1)
    with pytest.raises(TypeError):
        vol.read(0, bad)
    with pytest.raises(TypeError):
        vol.write(bad, b"x")
    with pytest.raises(TypeError):
        snap.read(bad, 1)
    with pytest.raises(TypeError):
        snap.readinto(bad, bytearray(1))
    with pytest.raises(TypeError):
        cowsnap.Volume.memory(bad)
    with pytest.raises(TypeError):
        vol.snapshot(cow_size=bad)


def test_negative_and_huge_numbers_are_value_errors(vol) -> None:
    with pytest.raises(ValueError):
        vol.read(-1, 1)
    with pytest.raises(ValueError):
        vol.read(0, -1)
    with pytest.raises(ValueError):
        vol.write(1 << 64, b"x")
    with pytest.raises(ValueError):
        cowsnap.Volume.memory(-5)


def test_snapshot_argument_checks(vol) -> None:
    with pytest.raises(TypeError):
        vol.snapshot(cow_size=MiB, persistent=1)
    with pytest.raises(ValueError):
        vol.snapshot(cow_size=MiB, overflow="explode")
    with pytest.raises(TypeError):
        vol.snapshot(cow_size=MiB, overflow=None)
    with pytest.raises(ValueError):
        vol.snapshot(cow_size=MiB, persistent=False, overflow="report")
    with pytest.raises(TypeError):
        vol.snapshot(cow_size=MiB, autoextend=70)
    with pytest.raises(ValueError):
        vol.snapshot(cow_size=MiB, autoextend=(0, 20))
    with pytest.raises(ValueError):
        vol.snapshot(cow_size=MiB, autoextend=(70, 0))
    with pytest.raises(TypeError):
        vol.snapshot(cow_size=MiB, path=123)
    with pytest.raises(ValueError):
        vol.snapshot(cow_size=MiB, path="")
    with pytest.raises(ValueError):
        vol.snapshot(cow_size=MiB, path="a\0b")
    assert vol.snapshots == []  # nothing reached the library


def test_path_argument_checks(tmp_path) -> None:
    with pytest.raises(TypeError):
        cowsnap.Volume.create(None, MiB)
    with pytest.raises(TypeError):
        cowsnap.Volume.open(tmp_path / "x", str(tmp_path / "cow"))  # a single path, not a list
    with pytest.raises(TypeError):
        cowsnap.Volume.open(tmp_path / "x", [1])
