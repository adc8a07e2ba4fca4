"""The Pythonic layer: :class:`Volume`, :class:`Snapshot` and :class:`SnapshotStatus`."""

import ctypes
import json
import operator
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _lib
from ._lib import check
from .errors import BufferTooSmall, CowsnapError, VolumeClosed, error_by_name

# Python's shape for a value the library would refuse, raised before a C call when the value cannot
# even be passed (negative, beyond 64 bits, a C sentinel): a CowsnapError with its code, also a
# ValueError. The rules themselves (sizes, options, autoextend) are the library's.
_InvalidArgument = error_by_name("INVALID_ARGUMENT")
_BadChunkSize = error_by_name("BAD_CHUNK_SIZE")

__all__ = ["Volume", "Snapshot", "SnapshotStatus", "MergeProgress", "BytesLike", "PathLike"]

BytesLike = Union[bytes, bytearray, memoryview, Any]  # anything with the buffer protocol
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_OVERFLOW_MODES = ("invalidate", "report")


# --- argument checking (before anything reaches C) -------------------------------------------


def _index(value: Any, what: str) -> int:
    """A non-negative integer argument (``bool`` refused: it is almost always a mistake)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    v: int = operator.index(value)
    if v < 0:
        raise _InvalidArgument(f"{what} must be >= 0, got {v}")
    if v >= 1 << 64:
        raise _InvalidArgument(f"{what} does not fit in 64 bits: {v}")
    return v


def _path(value: Any, what: str) -> bytes:
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{what} must be a path (str, bytes or os.PathLike), not {type(value).__name__}")
    p = os.fsencode(value)
    if not p:
        raise _InvalidArgument(f"{what} must not be empty")
    if b"\0" in p:
        raise _InvalidArgument(f"{what} must not contain NUL bytes")
    return p


def _readonly_view(data: Any) -> Tuple[Any, int]:
    """Something ctypes passes as ``const uint8_t *`` without copying where possible, and its length.

    ``bytes`` go as they are; writable buffers through ``from_buffer`` (no copy); read-only
    non-``bytes`` buffers (e.g. a ``memoryview`` of ``bytes``) are copied once, since ctypes cannot
    borrow a read-only buffer."""
    if isinstance(data, bytes):
        return data, len(data)
    if isinstance(data, str):
        raise TypeError("data must be a bytes-like object, not str (encode it first)")
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}") from None
    if not mv.c_contiguous:
        raise ValueError("data must be a C-contiguous buffer")
    mv = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
    n = mv.nbytes
    if mv.readonly:
        return mv.tobytes(), n
    return (ctypes.c_uint8 * n).from_buffer(mv), n


def _writable_view(buffer: Any) -> Tuple[Any, int]:
    """A writable buffer as a ctypes array sharing its memory (no copy), and its length."""
    if isinstance(buffer, (bytes, str)):
        raise TypeError(f"buffer must be a writable bytes-like object, not {type(buffer).__name__}")
    try:
        mv = memoryview(buffer)
    except TypeError:
        raise TypeError(f"buffer must be a writable bytes-like object, not {type(buffer).__name__}") from None
    if mv.readonly:
        raise TypeError("buffer is read-only; pass a bytearray, a writable memoryview, an array...")
    if not mv.c_contiguous:
        raise ValueError("buffer must be C-contiguous")
    mv = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
    return (ctypes.c_uint8 * mv.nbytes).from_buffer(mv), mv.nbytes


def _autoextend(policy: Any) -> Tuple[int, int]:
    if not isinstance(policy, tuple) or len(policy) != 2:
        raise TypeError("autoextend must be a (threshold_percent, extend_percent) tuple or None")
    th, pct = _index(policy[0], "autoextend threshold"), _index(policy[1], "autoextend percent")
    # The C ABI reads threshold 0 as "no autoextend" and takes 32-bit numbers: refuse what it
    # cannot be told; the library checks the rest (the core's Autoextend::validate).
    if th == 0 or th > 0xFFFFFFFF or pct > 0xFFFFFFFF:
        raise _InvalidArgument(f"autoextend threshold must be 1..100 percent and percent at least 1, got {policy}")
    return th, pct


# --- status -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotStatus:
    """What ``dmsetup status`` and ``lvs`` report about a snapshot.

    Attributes:
        state: ``"active"``, ``"overflow"``, ``"invalid"`` or ``"merging"``.
        sectors_allocated: 512-byte sectors handed out on the COW (header and metadata included).
        total_sectors: COW device size in sectors.
        metadata_sectors: header plus metadata areas (0 for a transient store).
        data_percent: LVM's Data%; ``None`` for an invalid snapshot.
        persistent: True for the dm persistent store (``P``/``PO``), False for transient (``N``).
        overflow: ``"invalidate"`` (``P``) or ``"report"`` (``PO``).
        chunk_size: chunk size in bytes.
        exceptions: number of chunks copied to the COW.
        merge_merged, merge_total: merge progress in chunks while merging (else ``None``).
        dm_status: the ``dmsetup status`` parameter string (``"24/2048 16"``, ``"Invalid"``...).
        lvs_attr: the ``lvs`` attribute string (``"swi-a-s---"``...).
    """

    state: str
    sectors_allocated: int
    total_sectors: int
    metadata_sectors: int
    data_percent: Optional[float]
    persistent: bool
    overflow: str
    chunk_size: int
    exceptions: int
    merge_merged: Optional[int]
    merge_total: Optional[int]
    dm_status: str
    lvs_attr: str

    @property
    def valid(self) -> bool:
        """False once the snapshot has been invalidated."""
        return self.state != "invalid"


def _status_from_c(st: _lib.SnapshotInfoC) -> SnapshotStatus:
    state = _lib.STATES.get(st.state, f"unknown({st.state})")
    return SnapshotStatus(
        state=state,
        sectors_allocated=st.sectors_allocated,
        total_sectors=st.total_sectors,
        metadata_sectors=st.metadata_sectors,
        data_percent=None if state == "invalid" or st.data_percent < 0 else float(st.data_percent),
        persistent=st.store == _lib.STORE_PERSISTENT,
        overflow="report" if st.overflow == _lib.OVERFLOW_REPORT else "invalidate",
        chunk_size=st.chunk_size,
        exceptions=st.exceptions,
        merge_merged=st.merge_merged if st.merging else None,
        merge_total=st.merge_total if st.merging else None,
        dm_status=st.dm_status.decode("ascii", "replace"),
        lvs_attr=st.lvs_attr.decode("ascii", "replace"),
    )


@dataclass(frozen=True)
class MergeProgress:
    """Merge progress passed to ``Snapshot.merge(progress=...)``: chunks merged of ``total``."""

    merged: int
    total: int
    done: bool


# --- handles ------------------------------------------------------------------------------------


class _Handle:
    """Owns a ``cowsnap_volume *`` and makes ``close()`` safe against calls in flight in other threads:
    calls take a cheap reference; ``close()`` waits until none is left, then frees the handle."""

    __slots__ = ("_ptr", "_users", "_cond", "__weakref__")

    def __init__(self, ptr: ctypes.c_void_p) -> None:
        self._ptr: Optional[ctypes.c_void_p] = ptr
        self._users: Dict[int, int] = {}  # thread id -> calls in flight
        self._cond = threading.Condition(threading.Lock())

    def acquire(self) -> ctypes.c_void_p:
        with self._cond:
            if self._ptr is None:
                raise VolumeClosed()
            tid = threading.get_ident()
            self._users[tid] = self._users.get(tid, 0) + 1
            return self._ptr

    def release(self) -> None:
        with self._cond:
            tid = threading.get_ident()
            n = self._users[tid] - 1
            if n:
                self._users[tid] = n
            else:
                del self._users[tid]
            if not self._users:
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        with self._cond:
            if threading.get_ident() in self._users:
                raise RuntimeError(
                    "cannot close a cowsnap volume from inside one of its own calls "
                    "(e.g. a merge progress callback)"
                )
            ptr, self._ptr = self._ptr, None
            while self._users:
                self._cond.wait()
        if ptr is not None:
            _lib.LIB.cowsnap_volume_free(ptr)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible to do
            pass


class _Using:
    """``with _Using(handle) as ptr:`` — a reference to the handle for the duration of one call."""

    __slots__ = ("_h",)

    def __init__(self, h: _Handle) -> None:
        self._h = h

    def __enter__(self) -> ctypes.c_void_p:
        return self._h.acquire()

    def __exit__(self, *exc: Any) -> None:
        self._h.release()


class Volume:
    """An origin device and its snapshots (a dm ``snapshot-origin`` with its ``snapshot`` targets).

    Create one with :meth:`memory`, :meth:`create` or :meth:`open`. A volume may be used from several
    threads at once: the GIL is released during every library call and the library locks internally.
    Close it with :meth:`close` or a ``with`` block; snapshots of a closed volume are unusable.
    """

    def __init__(self, _handle: _Handle, size: int, description: str) -> None:
        # Private: use the class methods.
        self._h = _handle
        self._size = size
        self._description = description
        self._snapshots: List["Snapshot"] = []

    # constructors

    @classmethod
    def memory(cls, size: int) -> "Volume":
        """A volume whose origin is ``size`` bytes of memory, all zero."""
        size = _index(size, "size")
        out = ctypes.c_void_p()
        check(_lib.LIB.cowsnap_volume_create_mem(size, ctypes.byref(out)))
        return cls(_Handle(out), size, "memory")

    @classmethod
    def create(cls, path: PathLike, size: int) -> "Volume":
        """A volume over a new sparse file ``path`` of ``size`` bytes.

        ``path`` must not exist, or be an empty regular file: an existing non-empty file, a directory,
        a device node or a symlink is refused (:class:`InvalidArgument`) and left untouched (open an
        existing origin with :meth:`open`)."""
        p = _path(path, "path")
        size = _index(size, "size")
        out = ctypes.c_void_p()
        check(_lib.LIB.cowsnap_volume_create_file(p, size, ctypes.byref(out)))
        return cls(_Handle(out), size, f"file {os.fsdecode(p)!r}")

    @classmethod
    def open(cls, origin_path: PathLike, cow_paths: Iterable[PathLike] = ()) -> "Volume":
        """Opens an existing origin file and activates the persistent COW files ``cow_paths`` on it
        (as LVM activates a volume group); they become :attr:`snapshots`, in the order given.

        Nothing is created, truncated or formatted: a COW with a zeroed header is
        :class:`CorruptMetadata` (only :meth:`snapshot` formats a COW). Each path must be an existing,
        writable regular file (a directory or device node is :class:`InvalidArgument`, a missing or
        read-only file :class:`IoError`), and no file may be given twice, in any guise (the origin
        as a COW, a COW twice, a symlink or hard link to one): :class:`InvalidArgument`."""
        p = _path(origin_path, "origin_path")
        if isinstance(cow_paths, (str, bytes, os.PathLike)):
            raise TypeError("cow_paths must be a sequence of paths, not a single path")
        cows = [_path(c, "cow path") for c in cow_paths]
        arr = (ctypes.c_char_p * max(len(cows), 1))(*cows)
        out = ctypes.c_void_p()
        check(_lib.LIB.cowsnap_volume_open_file(p, arr, len(cows), ctypes.byref(out)))
        h = _Handle(out)
        vol = cls(h, 0, f"file {os.fsdecode(p)!r}")
        vol._size = vol._query_size()
        for i, cid in enumerate(vol._query_snapshot_ids()):
            vol._snapshots.append(Snapshot(vol, cid, os.fsdecode(cows[i]) if i < len(cows) else None))
        return vol

    @classmethod
    def open_dir(cls, path: PathLike) -> "Volume":
        """Opens a volume directory made by the ``cowsnap`` CLI (``cowsnap create DIR``) the way the
        CLI opens it: every snapshot of its manifest activated with its store (``P``/``PO``), chunk
        size and autoextend policy, an interrupted merge finished. :attr:`snapshots` are the
        manifest's, oldest first, each with its :attr:`Snapshot.name`.

        The volume's lock is held until :meth:`close`: ``cowsnap`` commands on the directory wait
        meanwhile, and if a ``cowsnap`` command or mount holds it this raises :class:`IoError` at
        once ("in use" / "mounted"). A directory that is not a volume is :class:`InvalidArgument`; a
        snapshot that cannot be activated :class:`SnapshotInvalid` (see ``cowsnap lvs``). Snapshots
        of the manifest cannot be deleted or merged here (:class:`InvalidArgument`: use
        ``cowsnap remove`` / ``cowsnap merge``)."""
        p = _path(path, "path")
        out = ctypes.c_void_p()
        check(_lib.LIB.cowsnap_volume_open_dir(p, ctypes.byref(out)))
        h = _Handle(out)
        vol = cls(h, 0, f"directory {os.fsdecode(p)!r}")
        try:
            vol._size = vol._query_size()
            # The manifest is read under the lock this handle holds: it cannot change meanwhile.
            with open(os.path.join(os.fsdecode(p), "cowsnap.json"), "rb") as f:
                entries = json.load(f).get("snapshots", [])
            for e in entries:
                sid = ctypes.c_uint32()
                with _Using(vol._h) as ptr:
                    check(_lib.LIB.cowsnap_volume_dir_snapshot_id(ptr, e["name"].encode(), ctypes.byref(sid)))
                snap = Snapshot(vol, sid.value, os.path.join(os.fsdecode(p), e["cow"]))
                snap._name = e["name"]
                vol._snapshots.append(snap)
        except BaseException:
            vol.close()
            raise
        return vol

    def _query_size(self) -> int:
        n = ctypes.c_uint64()
        with _Using(self._h) as ptr:
            check(_lib.LIB.cowsnap_volume_size(ptr, ctypes.byref(n)))
        return n.value

    def _query_snapshot_ids(self) -> List[int]:
        # Ids of activated snapshots, in activation order.
        n = ctypes.c_size_t()
        with _Using(self._h) as ptr:
            check(_lib.LIB.cowsnap_volume_snapshot_ids(ptr, None, 0, ctypes.byref(n)))
            ids = (ctypes.c_uint32 * max(n.value, 1))()
            check(_lib.LIB.cowsnap_volume_snapshot_ids(ptr, ids, n.value, ctypes.byref(n)))
        return list(ids[: n.value])

    # properties

    @property
    def size(self) -> int:
        """Size of the origin (and of every snapshot) in bytes."""
        return self._size

    def __len__(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._h.closed

    @property
    def snapshots(self) -> List["Snapshot"]:
        """The live snapshots, oldest first."""
        return [s for s in self._snapshots if s._alive]

    @property
    def lvs_attr(self) -> str:
        """The origin's ``lvs`` attribute string: ``"-wi-a-----"`` without snapshots, ``"owi-a-s---"``
        with some, ``"Owi-a-s---"`` while one is merging (the library's rule)."""
        buf = ctypes.create_string_buffer(16)
        with _Using(self._h) as ptr:
            check(_lib.LIB.cowsnap_volume_lvs_attr(ptr, buf, len(buf)))
        return buf.value.decode("ascii")

    # I/O

    def read(self, offset: int, n: int) -> bytes:
        """Reads ``n`` bytes of the origin at ``offset``."""
        offset, n = _index(offset, "offset"), _index(n, "n")
        buf = ctypes.create_string_buffer(n)
        with _Using(self._h) as ptr:
            check(_lib.LIB.cowsnap_volume_read(ptr, offset, buf, n))
        return buf.raw

    def readinto(self, offset: int, buffer: Any) -> int:
        """Reads ``len(buffer)`` bytes of the origin at ``offset`` straight into ``buffer`` (any writable
        bytes-like object: ``bytearray``, ``memoryview``, ``array``...), without an extra copy.
        Returns the number of bytes read."""
        offset = _index(offset, "offset")
        arr, n = _writable_view(buffer)
        with _Using(self._h) as ptr:
            check(_lib.LIB.cowsnap_volume_read(ptr, offset, arr, n))
        return n

    def write(self, offset: int, data: Any) -> int:
        """Writes ``data`` (any bytes-like object) to the origin at ``offset``; every snapshot first keeps
        a copy of the chunks it touches. Returns the number of bytes written."""
        offset = _index(offset, "offset")
        arr, n = _readonly_view(data)
        with _Using(self._h) as ptr:
            check(_lib.LIB.cowsnap_volume_write(ptr, offset, arr, n))
        return n

    def flush(self) -> None:
        """Makes everything written so far durable (origin and every COW)."""
        with _Using(self._h) as ptr:
            check(_lib.LIB.cowsnap_volume_flush(ptr))

    # snapshots

    def snapshot(
        self,
        cow_size: int,
        chunk_size: int = 4096,
        persistent: bool = True,
        path: Optional[PathLike] = None,
        overflow: str = "invalidate",
        autoextend: Optional[Tuple[int, int]] = None,
    ) -> "Snapshot":
        """Takes a snapshot (``lvcreate -s``): instant, whatever the volume size.

        Args:
            cow_size: size of the COW device in bytes (``-L``): at least 3 chunks for a persistent
                store (header, metadata area, one data chunk), 1 chunk for a transient one.
            chunk_size: chunk size in bytes, a power of two from 4 KiB to 512 KiB (``-c``).
            persistent: the dm persistent store (``P``, kernel-compatible COW) or transient (``N``).
            path: a file for the COW device, created with all ``cow_size`` bytes reserved on its
                file system (a disk without the room fails with :class:`IoError` and leaves no
                file); it must not exist (or be an empty regular file). ``None`` keeps it in memory.
            overflow: what a full COW does to a *snapshot write*: ``"invalidate"`` (``P``, as LVM) or
                ``"report"`` (``PO``: the snapshot refuses writes but stays readable).
            autoextend: ``(threshold_percent, extend_percent)`` like lvm.conf's
                ``snapshot_autoextend_threshold``/``_percent``; ``None`` for a fixed size.
        """
        cow_size = _index(cow_size, "cow_size")
        chunk_size = _index(chunk_size, "chunk_size")
        if not isinstance(persistent, bool):
            raise TypeError(f"persistent must be a bool, not {type(persistent).__name__}")
        if not isinstance(overflow, str):
            raise TypeError(f"overflow must be a str, not {type(overflow).__name__}")
        if overflow not in _OVERFLOW_MODES:
            raise _InvalidArgument(f"overflow must be 'invalidate' or 'report', not {overflow!r}")
        # (C reads chunk size 0 as "the default" and takes 32 bits; the library checks the rest.)
        if chunk_size == 0 or chunk_size > 0xFFFFFFFF:
            raise _BadChunkSize(f"chunk_size must be a power of two from 4096 to 524288 bytes, got {chunk_size}")
        opts = _lib.SnapshotCreateOptions()
        check(_lib.LIB.cowsnap_snapshot_create_options_init(ctypes.byref(opts), ctypes.sizeof(opts)))
        opts.chunk_size = chunk_size
        opts.cow_size = cow_size
        opts.store = _lib.STORE_PERSISTENT if persistent else _lib.STORE_TRANSIENT
        opts.overflow = _lib.OVERFLOW_REPORT if overflow == "report" else _lib.OVERFLOW_INVALIDATE
        p = None
        if path is not None:
            p = _path(path, "path")
            opts.cow_path = p
        if autoextend is not None:
            th, pct = _autoextend(autoextend)
            opts.autoextend_threshold = th
            opts.autoextend_percent = pct
        sid = ctypes.c_uint32()
        with _Using(self._h) as ptr:
            check(_lib.LIB.cowsnap_snapshot_create_with(ptr, ctypes.byref(opts), ctypes.byref(sid)))
        snap = Snapshot(self, sid.value, os.fsdecode(p) if p is not None else None)
        self._snapshots.append(snap)
        return snap

    # life cycle

    def close(self) -> None:
        """Frees the volume (waiting for calls in flight in other threads). Idempotent."""
        self._h.close()

    def __enter__(self) -> "Volume":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<cowsnap.Volume {self._description} closed>"
        return (
            f"<cowsnap.Volume {self._description} size={self._size} "
            f"snapshots={[s.id for s in self.snapshots]}>"
        )


_MergeCallback = Callable[[MergeProgress], Any]


class Snapshot:
    """A snapshot of a :class:`Volume`: reads show the origin as it was when the snapshot was taken.

    Snapshots are writable (like LVM's). They live as long as their volume, until :meth:`delete` or
    :meth:`merge`. Using a snapshot as a context manager deletes it on exit.
    """

    def __init__(self, volume: Volume, sid: int, path: Optional[str]) -> None:
        # Private: use Volume.snapshot() or Volume.snapshots.
        self._vol = volume
        self._id = sid
        self._path = path
        self._name: Optional[str] = None
        self._alive = True

    @property
    def id(self) -> int:
        """The library's id of this snapshot (never reused by its volume)."""
        return self._id

    @property
    def name(self) -> Optional[str]:
        """The snapshot's name in a volume directory's manifest (:meth:`Volume.open_dir`), else None."""
        return self._name

    @property
    def volume(self) -> Volume:
        return self._vol

    @property
    def path(self) -> Optional[str]:
        """The COW file, or ``None`` for a COW in memory."""
        return self._path

    @property
    def size(self) -> int:
        """Logical size in bytes (the origin's)."""
        return self._vol.size

    def read(self, offset: int, n: int) -> bytes:
        """Reads ``n`` bytes of the snapshot at ``offset``."""
        offset, n = _index(offset, "offset"), _index(n, "n")
        buf = ctypes.create_string_buffer(n)
        with _Using(self._vol._h) as ptr:
            check(_lib.LIB.cowsnap_snapshot_read(ptr, self._id, offset, buf, n))
        return buf.raw

    def readinto(self, offset: int, buffer: Any) -> int:
        """Reads ``len(buffer)`` bytes at ``offset`` straight into a writable buffer (no extra copy)."""
        offset = _index(offset, "offset")
        arr, n = _writable_view(buffer)
        with _Using(self._vol._h) as ptr:
            check(_lib.LIB.cowsnap_snapshot_read(ptr, self._id, offset, arr, n))
        return n

    def write(self, offset: int, data: Any) -> int:
        """Writes ``data`` to the snapshot (never to the origin)."""
        offset = _index(offset, "offset")
        arr, n = _readonly_view(data)
        with _Using(self._vol._h) as ptr:
            check(_lib.LIB.cowsnap_snapshot_write(ptr, self._id, offset, arr, n))
        return n

    def status(self) -> SnapshotStatus:
        """The snapshot's status (``dmsetup status`` / ``lvs``)."""
        st = _lib.SnapshotInfoC()
        with _Using(self._vol._h) as ptr:
            check(_lib.LIB.cowsnap_snapshot_get_info(ptr, self._id, ctypes.byref(st)))
        return _status_from_c(st)

    def changed_ranges(self, older: Optional["Snapshot"] = None) -> List[Tuple[int, int]]:
        """Byte ranges ``(offset, length)`` of the origin, sorted and merged, outside which this
        snapshot reads exactly as the current origin does; with ``older`` (an older snapshot of the
        same volume), outside which the two snapshots read the same: what an incremental backup
        from ``older``'s backup must read. Raises ``SnapshotInvalid`` for an invalid snapshot (its
        table is gone) and ``Merging`` during a merge."""
        if older is None:
            other = self._id
        elif isinstance(older, Snapshot) and older._vol is self._vol:
            other = older._id
        else:
            raise TypeError("older must be a Snapshot of the same Volume")
        n = ctypes.c_size_t()
        with _Using(self._vol._h) as ptr:
            while True:  # the list may grow between the two calls (origin writes): retry
                check(_lib.LIB.cowsnap_snapshot_changed_ranges(ptr, other, self._id, None, 0, ctypes.byref(n)))
                arr = (_lib.RangeC * max(n.value, 1))()
                r = _lib.LIB.cowsnap_snapshot_changed_ranges(ptr, other, self._id, arr, n.value, ctypes.byref(n))
                if r != BufferTooSmall.code:
                    check(r)
                    break
        return [(arr[i].offset, arr[i].length) for i in range(n.value)]

    def export_cow(self) -> bytes:
        """The COW device's bytes: for a persistent snapshot, the dm-snapshot on-disk format the Linux
        kernel reads (e.g. ``dd`` it onto an LVM ``-cow`` device)."""
        needed = ctypes.c_size_t()
        with _Using(self._vol._h) as ptr:
            while True:  # the COW may grow (autoextend) between the two calls: retry
                r = _lib.LIB.cowsnap_snapshot_export_cow(ptr, self._id, None, 0, ctypes.byref(needed))
                if r != 0 and r != BufferTooSmall.code:
                    check(r)
                buf = ctypes.create_string_buffer(needed.value)
                r = _lib.LIB.cowsnap_snapshot_export_cow(
                    ptr, self._id, buf, needed.value, ctypes.byref(needed)
                )
                if r == BufferTooSmall.code:
                    continue
                check(r)
                return buf.raw[: needed.value]

    def extend(self, new_cow_size: int) -> None:
        """Grows the COW device to ``new_cow_size`` bytes (``lvextend`` on the snapshot)."""
        new_cow_size = _index(new_cow_size, "new_cow_size")
        with _Using(self._vol._h) as ptr:
            check(_lib.LIB.cowsnap_snapshot_extend(ptr, self._id, new_cow_size))

    def set_autoextend(self, autoextend: Optional[Tuple[int, int]]) -> None:
        """Sets the autoextend policy ``(threshold_percent, extend_percent)``, or clears it (``None``)."""
        th, pct = _autoextend(autoextend) if autoextend is not None else (0, 0)
        with _Using(self._vol._h) as ptr:
            check(_lib.LIB.cowsnap_snapshot_set_autoextend(ptr, self._id, th, pct))

    def delete(self) -> None:
        """Removes the snapshot (``lvremove``); its COW is dropped (a COW file stays on disk)."""
        with _Using(self._vol._h) as ptr:
            check(_lib.LIB.cowsnap_snapshot_delete(ptr, self._id))
        self._alive = False

    def merge(self, progress: Optional[_MergeCallback] = None) -> None:
        """Merges the snapshot back into the origin (``lvconvert --merge``): the origin then holds the
        snapshot's contents and the snapshot is gone. ``progress(MergeProgress)`` is called as chunks
        are copied back; an exception raised by it stops the merge after the current step and is
        re-raised here (the merge can be resumed by calling ``merge`` again)."""
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable or None")
        failure: List[BaseException] = []

        def trampoline(_user: Any, merged: int, total: int, done: bool) -> int:
            if progress is None:
                return 0
            try:
                progress(MergeProgress(merged, total, bool(done)))
                return 0
            except BaseException as e:  # noqa: BLE001 - handed back to the caller below
                failure.append(e)
                return 1

        # PROGRESS_CB() is a NULL function pointer; `cb` stays referenced until the call returns.
        cb = _lib.PROGRESS_CB(trampoline) if progress is not None else _lib.PROGRESS_CB()
        with _Using(self._vol._h) as ptr:
            r = _lib.LIB.cowsnap_snapshot_merge(ptr, self._id, cb, None)
        if failure:
            raise failure[0]
        check(r)
        self._alive = False

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._alive and not self._vol.closed:
            try:
                self.delete()
            except CowsnapError:
                if exc[0] is None:
                    raise

    def __repr__(self) -> str:
        where = f"cow={self._path!r}" if self._path else "cow=memory"
        if not self._alive:
            return f"<cowsnap.Snapshot id={self._id} {where} deleted>"
        if self._vol.closed:
            return f"<cowsnap.Snapshot id={self._id} {where} volume closed>"
        try:
            st = self.status()
        except CowsnapError as e:
            return f"<cowsnap.Snapshot id={self._id} {where} error={e.name}>"
        pct = "-" if st.data_percent is None else f"{st.data_percent:.2f}%"
        return f"<cowsnap.Snapshot id={self._id} {where} {st.state} data={pct} dm={st.dm_status!r}>"


