#!/usr/bin/env python3
"""A live, consistent backup of a real SQLite database through a cowsnap snapshot.

The seed's MySQL-style backup (FLUSH TABLES WITH READ LOCK; lvcreate -s; UNLOCK TABLES; copy; lvremove),
done with SQLite on a cowsnap volume:

1. a writer thread inserts rows continuously (each row carries a sequence number 1, 2, 3...);
2. the backup takes the database write lock (``BEGIN IMMEDIATE``), takes a snapshot, records the row
   count and releases the lock: the lock is held for milliseconds, whatever the database size;
3. it copies the database file out of the snapshot to a plain file while the writer keeps writing,
   then deletes the snapshot;
4. the copy opens with Python's own ``sqlite3``, passes ``PRAGMA integrity_check`` and holds exactly
   the rows counted under the lock.

Run:  pip install ./bindings/python apsw && python3 examples/python/sqlite_backup.py [--db-mib 16]

How the database lives on the volume
------------------------------------
SQLite reaches files through a VFS; ``apsw`` lets Python implement one. :class:`CowsnapVFS` maps the
*main database file* of a path to a cowsnap origin volume (a fixed-size block device), and leaves
every other file (the rollback journal, temp files) to SQLite's default VFS as plain files.

A block device has no file length, so the volume starts with a 4 KiB header (:data:`HEADER`):
magic ``b"COWSNAP-SQLITE\\0\\0"`` then the database file's logical size (u64 little-endian). The
database bytes follow at offset :data:`DATA_OFFSET` (4096, so SQLite's 4 KiB pages line up with 4 KiB
snapshot chunks). The size is updated by the same connection, under the same lock, as the pages it
describes, so a snapshot taken while no write transaction is active has a header that matches its
pages; the copy reads the size from the snapshot's own header.

Locking is not reimplemented: the database path also exists as an empty placeholder file on disk, and
the main-database file object *inherits* from the default (unix) VFS file for it. SQLite's lock
calls (xLock/xUnlock/xCheckReservedLock) therefore go to the unix VFS's POSIX locks on the
placeholder, which coordinate connections in this process and in other processes exactly as for a
normal database; only the data calls (xRead/xWrite/xTruncate/xFileSize/xSync) are redirected to the
volume. Memory-mapped I/O is switched off (``PRAGMA mmap_size=0``) since the placeholder holds no data.

Why the snapshot is consistent
------------------------------
The database uses a rollback journal (``journal_mode=DELETE``, SQLite's default; the journal is a
plain file next to the placeholder). In rollback mode SQLite changes the main database file only
while a connection holds the EXCLUSIVE lock, during a commit (or a cache spill of a transaction that
holds RESERVED); the commit completes (journal deleted) before the lock is released. A connection
needs the RESERVED lock before it can get EXCLUSIVE, and only one connection holds RESERVED at a time.
``BEGIN IMMEDIATE`` takes RESERVED: once it returns, every earlier write transaction has committed
completely and no other can start, so the main file on the volume is a complete, consistent database
by itself (no journal needed). The snapshot taken at that moment freezes exactly that file; readers
are not blocked, and writers wait (busy timeout) only until ``COMMIT`` of the backup's empty
transaction, a few milliseconds later (see :func:`busy_handler` for how they wait). WAL mode would not do: committed data would sit in the -wal
file, outside the volume.

The row count recorded under the lock is ``max(seq)``, an O(log n) lookup on the INTEGER PRIMARY KEY,
so the lock time does not grow with the table; since the writer numbers rows 1, 2, 3... without gaps,
it equals ``count(*)``, which the verification checks on the copy (count, min and max).
"""

import argparse
import os
import sqlite3
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import apsw

import cowsnap

MAGIC = b"COWSNAP-SQLITE\0\0"
HEADER = struct.Struct("<16sQ")  # magic, logical size of the database file in bytes
DATA_OFFSET = 4096
COPY_BLOCK = 256 << 10

_OPEN_MAIN_DB = apsw.mapping_open_flags["SQLITE_OPEN_MAIN_DB"]


def format_volume(vol: cowsnap.Volume) -> None:
    """Writes an empty-file header to a fresh volume."""
    vol.write(0, HEADER.pack(MAGIC, 0))


def logical_size(dev: Union[cowsnap.Volume, cowsnap.Snapshot]) -> int:
    """The database file size recorded in the header of a volume or of a snapshot."""
    magic, size = HEADER.unpack(dev.read(0, HEADER.size))
    if magic != MAGIC:
        raise ValueError("not a cowsnap-sqlite volume (bad header magic)")
    return size


class CowsnapDBFile(apsw.VFSFile):
    """The main database file: data on the volume after the header, locks on the placeholder file."""

    def __init__(self, basevfs: str, name: "apsw.URIFilename", flags: list, vol: cowsnap.Volume) -> None:
        super().__init__(basevfs, name, flags)  # opens (creates) the placeholder used for locking
        self.vol = vol
        self.capacity = vol.size - DATA_OFFSET

    def _set_size(self, size: int) -> None:
        self.vol.write(0, HEADER.pack(MAGIC, size))

    def xRead(self, amount: int, offset: int) -> bytes:
        size = logical_size(self.vol)
        n = max(0, min(amount, size - offset))
        # A short read makes apsw zero-fill the rest and report SQLITE_IOERR_SHORT_READ, as SQLite wants.
        return self.vol.read(DATA_OFFSET + offset, n) if n else b""

    def xWrite(self, data, offset: int) -> None:  # data: any buffer
        n = memoryview(data).nbytes
        if offset + n > self.capacity:
            raise apsw.FullError(f"cowsnap volume full: {offset + n} > {self.capacity} bytes")
        self.vol.write(DATA_OFFSET + offset, data)
        if offset + n > logical_size(self.vol):
            self._set_size(offset + n)

    def xTruncate(self, newsize: int) -> None:
        if newsize > self.capacity:
            raise apsw.FullError("cowsnap volume full")
        self._set_size(newsize)

    def xFileSize(self) -> int:
        return logical_size(self.vol)

    def xSync(self, flags: int) -> None:
        self.vol.flush()


class CowsnapVFS(apsw.VFS):
    """A VFS that puts registered database paths on cowsnap volumes (see the module docstring)."""

    def __init__(self, name: str = "cowsnap", base: str = "") -> None:
        self.name = name
        self.base = base
        self.volumes: Dict[str, cowsnap.Volume] = {}
        super().__init__(name, base)

    def register(self, db_path: str, vol: cowsnap.Volume) -> None:
        """Database files opened at ``db_path`` through this VFS live on ``vol``."""
        self.volumes[os.path.realpath(db_path)] = vol

    def xOpen(self, name, flags):
        if name is not None and flags[0] & _OPEN_MAIN_DB:
            fname = name.filename() if isinstance(name, apsw.URIFilename) else name
            vol = self.volumes.get(os.path.realpath(fname))
            if vol is not None:
                return CowsnapDBFile(self.base, name, flags, vol)
        return apsw.VFSFile(self.base, name, flags)


def busy_handler(timeout_s: float = 30.0):
    """Retries every 0.5 ms for up to ``timeout_s``. SQLite's own busy timeout backs off to sleeps of
    up to 100 ms, so a connection competing with a writer that commits in a tight loop can starve
    (the lock is free only for microseconds between two transactions): in testing, ``BEGIN
    IMMEDIATE`` with ``setbusytimeout`` sometimes timed out, even on SQLite's default VFS. Polling
    often, with ``time.sleep`` (which releases the GIL), gets the lock within a transaction or two."""
    state = {"deadline": 0.0}

    def handler(attempt: int) -> bool:
        now = time.monotonic()
        if attempt == 0:
            state["deadline"] = now + timeout_s
        if now > state["deadline"]:
            return False  # give up: SQLITE_BUSY
        time.sleep(0.0005)
        return True

    return handler


def connect(db_path: str, vfs: CowsnapVFS) -> apsw.Connection:
    con = apsw.Connection(db_path, vfs=vfs.name)
    con.setbusyhandler(busy_handler())
    con.execute("PRAGMA mmap_size=0")  # the placeholder file holds no data: never map it
    return con


@dataclass
class Writer:
    """Inserts rows 1, 2, 3... in small transactions until stopped; ``committed`` is the last seq."""

    con: apsw.Connection
    committed: int
    batch: int = 5
    stop: threading.Event = field(default_factory=threading.Event)
    error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            seq = self.committed
            while not self.stop.is_set():
                with self.con:  # one transaction per batch
                    for _ in range(self.batch):
                        seq += 1
                        self.con.execute(
                            "INSERT INTO rows(seq, ts, payload) VALUES(?, ?, randomblob(200))",
                            (seq, time.time()),
                        )
                self.committed = seq
        except BaseException as e:  # reported by the main thread
            self.error = e


def wait_for(cond, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the writer made no progress")
        time.sleep(0.001)


@dataclass
class BackupReport:
    db_bytes: int
    rows_at_snapshot: int
    lock_wait_ms: float
    lock_hold_ms: float
    copy_ms: float
    rows_during_copy: int
    copy_path: str
    cow_status: str
    cow_data_percent: Optional[float]


def run(
    workdir: str,
    db_mib: float = 4,
    volume_mib: int = 64,
    quiet: bool = False,
    min_rows_during_copy: int = 0,
) -> BackupReport:
    """Builds a database of about ``db_mib`` MiB on a file-backed volume in ``workdir``, backs it up
    live while a writer thread inserts rows, verifies the copy, and returns the figures.

    ``min_rows_during_copy`` makes the copy wait half way until the writer has committed that many
    rows since the copy started (a small database copies faster than the writer commits: tests use
    this to make sure the snapshot really is read while the origin changes under it)."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    origin_path = os.path.join(workdir, "origin.img")
    db_path = os.path.join(workdir, "app.db")  # placeholder (locks) + name of the database
    copy_path = os.path.join(workdir, "backup.db")

    vfs = CowsnapVFS(f"cowsnap-{id(workdir):x}")
    with cowsnap.Volume.create(origin_path, volume_mib << 20) as vol:
        format_volume(vol)
        vfs.register(db_path, vol)

        # The database, pre-filled to the requested size in one transaction.
        setup = connect(db_path, vfs)
        setup.execute("PRAGMA journal_mode=DELETE")
        setup.execute("CREATE TABLE rows(seq INTEGER PRIMARY KEY, ts REAL NOT NULL, payload BLOB NOT NULL)")
        prefill = int(db_mib * (1 << 20) / 240)  # ~240 bytes per row on disk
        with setup:
            setup.executemany(
                "INSERT INTO rows(seq, ts, payload) VALUES(?, ?, randomblob(200))",
                ((i, time.time()) for i in range(1, prefill + 1)),
            )
        setup.close()
        say(f"database: {logical_size(vol) / (1 << 20):.1f} MiB, {prefill} rows, on {origin_path}")

        writer = Writer(connect(db_path, vfs), committed=prefill)
        wt = threading.Thread(target=writer.run, name="writer")
        wt.start()
        try:
            time.sleep(0.2)  # let the writer get going

            # --- the backup ---------------------------------------------------------------------
            backup = connect(db_path, vfs)
            t0 = time.perf_counter()
            backup.execute("BEGIN IMMEDIATE")  # RESERVED: writers have committed and cannot start
            t_locked = time.perf_counter()
            # A small COW that grows on demand (like lvm.conf's snapshot_autoextend_*): creating a
            # memory COW costs time in proportion to its size (it is zero-filled), and it is created
            # under the lock.
            snap = vol.snapshot(cow_size=1 << 20, autoextend=(70, 50))
            rows_at_snapshot = int(backup.execute("SELECT max(seq) FROM rows").fetchall()[0][0])
            backup.execute("COMMIT")  # release: the writer continues
            t_released = time.perf_counter()
            backup.close()
            lock_wait_ms = (t_locked - t0) * 1e3
            lock_hold_ms = (t_released - t_locked) * 1e3
            say(f"lock held {lock_hold_ms:.2f} ms (waited {lock_wait_ms:.2f} ms to get it); "
                f"snapshot {snap.id} has {rows_at_snapshot} rows")

            # Copy the database file out of the snapshot while the writer goes on.
            rows_before_copy = writer.committed
            t_copy = time.perf_counter()
            size = logical_size(snap)
            buf = bytearray(COPY_BLOCK)
            view = memoryview(buf)
            with open(copy_path, "wb") as out:
                for off in range(0, size, COPY_BLOCK):
                    if min_rows_during_copy and off >= size // 2:
                        wait_for(lambda: writer.committed - rows_before_copy >= min_rows_during_copy
                                 or writer.error is not None)
                        min_rows_during_copy = 0
                    n = min(COPY_BLOCK, size - off)
                    snap.readinto(DATA_OFFSET + off, view[:n])
                    out.write(view[:n])
                out.flush()
                os.fsync(out.fileno())
            copy_ms = (time.perf_counter() - t_copy) * 1e3
            rows_during_copy = writer.committed - rows_before_copy
            st = snap.status()
            say(f"copied {size} bytes in {copy_ms:.1f} ms; the writer committed {rows_during_copy} "
                f"rows meanwhile; snapshot COW {st.dm_status} (Data% {st.data_percent})")
            snap.delete()
        finally:
            writer.stop.set()
            wt.join()
            writer.con.close()
        if writer.error is not None:
            raise RuntimeError(f"writer failed: {writer.error!r}") from writer.error
        say(f"writer stopped after row {writer.committed}")

    # --- verify the copy with the standard library's sqlite3 -----------------------------------------
    con = sqlite3.connect(copy_path)
    try:
        check = con.execute("PRAGMA integrity_check").fetchall()
        count, lo, hi = con.execute("SELECT count(*), min(seq), max(seq) FROM rows").fetchone()
    finally:
        con.close()
    if check != [("ok",)]:
        raise AssertionError(f"integrity_check of the copy: {check}")
    if (count, lo, hi) != (rows_at_snapshot, 1, rows_at_snapshot):
        raise AssertionError(
            f"copy holds {count} rows (seq {lo}..{hi}), expected exactly 1..{rows_at_snapshot}"
        )
    say(f"copy {copy_path}: integrity_check ok, {count} rows = rows at snapshot time")
    return BackupReport(
        db_bytes=size,
        rows_at_snapshot=rows_at_snapshot,
        lock_wait_ms=lock_wait_ms,
        lock_hold_ms=lock_hold_ms,
        copy_ms=copy_ms,
        rows_during_copy=rows_during_copy,
        copy_path=copy_path,
        cow_status=st.dm_status,
        cow_data_percent=st.data_percent,
    )


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-mib", type=float, default=16, help="database size before the backup (MiB)")
    ap.add_argument("--volume-mib", type=int, default=128, help="origin volume size (MiB)")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    args = ap.parse_args(argv)
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
        r = run(args.dir, args.db_mib, args.volume_mib)
    else:
        with tempfile.TemporaryDirectory(prefix="cowsnap-sqlite-") as d:
            r = run(d, args.db_mib, args.volume_mib)
    print(f"RESULT lock_hold_ms={r.lock_hold_ms:.2f} rows_at_snapshot={r.rows_at_snapshot} "
          f"rows_during_copy={r.rows_during_copy} db_bytes={r.db_bytes} copy_ms={r.copy_ms:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
