"""Concurrent use from Python threads: the GIL is released during library calls and the library
locks internally, so writers on the origin and readers of snapshots can run at the same time."""

import sys
import threading
import time

import pytest

import cowsnap

MiB = 1 << 20
CHUNK = 4096


def pattern(tag: int, block: int) -> bytes:
    return bytes([(tag * 31 + block) & 0xFF]) * CHUNK


def test_writers_and_snapshot_readers_in_parallel() -> None:
    size = 4 * MiB
    blocks = size // CHUNK
    with cowsnap.Volume.memory(size) as vol:
        for b in range(blocks):
            vol.write(b * CHUNK, pattern(0, b))
        snaps = [vol.snapshot(cow_size=size + MiB) for _ in range(2)]
        errors = []
        stop = threading.Event()
        reads = [0, 0]

        def writer(w: int) -> None:
            try:
                # each writer owns the blocks b with b % 4 == w and rewrites them several times
                for rnd in range(1, 4):
                    for b in range(w, blocks, 4):
                        vol.write(b * CHUNK, pattern(rnd * 4 + w, b))
            except BaseException as e:
                errors.append(e)

        def reader(r: int) -> None:
            try:
                snap = snaps[r]
                buf = bytearray(CHUNK)
                while not stop.is_set():
                    for b in range(r, blocks, 7):
                        snap.readinto(b * CHUNK, buf)
                        if buf != pattern(0, b):
                            raise AssertionError(f"snapshot {r} block {b} changed")
                        reads[r] += 1
            except BaseException as e:
                errors.append(e)

        ws = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        rs = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
        for t in rs + ws:
            t.start()
        for t in ws:
            t.join()
        stop.set()
        for t in rs:
            t.join()
        assert not errors, errors
        assert all(n > 0 for n in reads)
        # final origin: every block holds its owner's last round; snapshots hold round 0
        for b in range(blocks):
            assert vol.read(b * CHUNK, CHUNK) == pattern(3 * 4 + b % 4, b)
        for s in snaps:
            assert s.read(0, size) == b"".join(pattern(0, b) for b in range(blocks))
            assert s.status().exceptions == blocks


def test_gil_is_released_during_calls() -> None:
    """While this thread is inside one long library call, another thread keeps running Python code.

    A call that kept the GIL would let the ticker run only before the call starts or after it returns
    (within a switch interval, set to 1 ms here); ticks well inside the call prove the GIL was released."""
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    with cowsnap.Volume.memory(64 * MiB) as vol:
        for _ in range(3):  # every chunk written is copied into three COWs: a long call
            vol.snapshot(cow_size=80 * MiB)
        stamps = []
        done = threading.Event()

        def ticker() -> None:
            while not done.is_set():
                stamps.append(time.perf_counter())
                time.sleep(0.0005)

        t = threading.Thread(target=ticker)
        t.start()
        big = b"\x5a" * (64 * MiB)
        try:
            time.sleep(0.01)
            t0 = time.perf_counter()
            vol.write(0, big)  # one call copying 16384 chunks into the COW, then writing 64 MiB
            t1 = time.perf_counter()
        finally:
            done.set()
            t.join()
            sys.setswitchinterval(old_interval)
        margin = 0.01
        assert t1 - t0 > 3 * margin, f"call too short to tell ({(t1 - t0) * 1e3:.1f} ms)"
        inside = [s for s in stamps if t0 + margin < s < t1 - margin]
        assert inside, "the other thread never ran while the library was busy"


def test_close_waits_for_calls_in_flight() -> None:
    vol = cowsnap.Volume.memory(32 * MiB)
    started = threading.Event()
    result = []

    def slow_reader() -> None:
        started.set()
        try:
            for _ in range(20):
                vol.read(0, 32 * MiB)
            result.append("read all")
        except ValueError as e:  # closed between two calls: fine
            result.append(str(e))

    t = threading.Thread(target=slow_reader)
    t.start()
    started.wait()
    vol.close()  # must not free the handle under a running call
    t.join()
    assert result and (result[0] == "read all" or "closed" in result[0])
    with pytest.raises(ValueError):
        vol.read(0, 1)


def test_close_from_a_merge_callback_is_refused_not_a_deadlock() -> None:
    with cowsnap.Volume.memory(MiB) as vol:
        snap = vol.snapshot(cow_size=256 * 1024)
        vol.write(0, b"m" * 8192)
        with pytest.raises(RuntimeError, match="inside one of its own calls"):
            snap.merge(progress=lambda p: vol.close())
        assert not vol.closed
        # other calls from the callback are fine (the library holds no lock while calling it)
        seen = []
        snap.merge(progress=lambda p: seen.append(vol.read(0, 1)))
        assert seen and seen[-1] == bytes(1)
