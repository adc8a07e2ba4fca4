"""cowsnap: copy-on-write snapshots with the semantics of Linux LVM / dm-snapshot, for Python.

A thin, typed layer over libcowsnap's C ABI (through ``ctypes``; the library ships inside this
package, or ``COWSNAP_LIBRARY`` names another build)::

    import cowsnap

    with cowsnap.Volume.memory(64 << 20) as vol:
        vol.write(0, b"before")
        snap = vol.snapshot(cow_size=8 << 20)      # lvcreate -s -L 8M
        vol.write(0, b"after!")
        assert snap.read(0, 6) == b"before"
        print(snap.status().data_percent)          # lvs Data%
        snap.merge()                               # lvconvert --merge

Errors are :class:`CowsnapError` subclasses, one per C result code.
"""

from ._lib import library_path, library_version
from ._volume import MergeProgress, Snapshot, SnapshotStatus, Volume
from .errors import (
    BadChunkSize,
    BufferTooSmall,
    CorruptMetadata,
    CowsnapError,
    InvalidArgument,
    IoError,
    Merging,
    NoSpace,
    NullPointer,
    OutOfRange,
    Panic,
    SnapshotInvalid,
    SnapshotOverflow,
    UnknownSnapshot,
    Unsupported,
    VolumeClosed,
    error_class,
)

def _package_version() -> str:
    # One version source: the Cargo workspace's, which the build writes into the package metadata
    # (and into the library: a source tree used without installing reports the library's).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(__name__)
    except PackageNotFoundError:
        return library_version()


__version__ = _package_version()

__all__ = [
    "Volume",
    "Snapshot",
    "SnapshotStatus",
    "MergeProgress",
    "library_path",
    "library_version",
    "CowsnapError",
    "OutOfRange",
    "BadChunkSize",
    "InvalidArgument",
    "SnapshotInvalid",
    "SnapshotOverflow",
    "NoSpace",
    "UnknownSnapshot",
    "CorruptMetadata",
    "IoError",
    "Merging",
    "Unsupported",
    "NullPointer",
    "Panic",
    "BufferTooSmall",
    "VolumeClosed",
    "error_class",
]
