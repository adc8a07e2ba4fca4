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
from . import errors as _errors
from .errors import *  # noqa: F401,F403  (CowsnapError, VolumeClosed, one class per code: built from the library)
from .errors import CowsnapError, VolumeClosed, error_by_name, error_class  # noqa: F401

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
    "error_by_name",
    *_errors.__all__,
]
