"""Loading libcowsnap and declaring its C ABI (``ffi/include/cowsnap.h``) for ctypes.

Every function used is declared here with ``argtypes``/``restype``; nothing else in the package
touches raw symbols. The library is found through ``COWSNAP_LIBRARY``, then next to this file (where
``pip install`` puts it), then the system's library path. Its version is checked at import.
"""

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Tuple


# The C ABI version these bindings are written for: the library must report the same major.minor.
ABI_VERSION = (0, 1)

# ``flags`` of ``cowsnap_volume_create_file_ex`` / ``cowsnap_volume_open_file_ex``.
OPEN_DIRECT = 1

_LIB_FILE = "libcowsnap.dylib" if sys.platform == "darwin" else "libcowsnap.so"

# --- C types (mirrors of cowsnap.h) ---------------------------------------------------------------

c_result = ctypes.c_int32
c_volume_p = ctypes.c_void_p  # cowsnap_volume * (opaque)
c_buf = ctypes.c_void_p  # uint8_t * / const uint8_t *: accepts bytes, ctypes arrays, None

STORE_PERSISTENT = 0
STORE_TRANSIENT = 1
OVERFLOW_INVALIDATE = 0
OVERFLOW_REPORT = 1


class SnapshotCreateOptions(ctypes.Structure):
    """``cowsnap_snapshot_create_options`` (sized: ``struct_size`` is set by ``__init__``)."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("chunk_size", ctypes.c_uint32),
        ("store", ctypes.c_int32),
        ("overflow", ctypes.c_int32),
        ("autoextend_threshold", ctypes.c_uint32),
        ("autoextend_percent", ctypes.c_uint32),
        ("cow_size", ctypes.c_uint64),
        ("cow_path", ctypes.c_char_p),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.struct_size = ctypes.sizeof(self)


class RangeC(ctypes.Structure):
    """``cowsnap_range``."""

    _fields_ = [("offset", ctypes.c_uint64), ("length", ctypes.c_uint64)]


class SnapshotInfoC(ctypes.Structure):
    """``cowsnap_snapshot_info`` (sized: ``struct_size`` is set by ``__init__``)."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("state", ctypes.c_int32),
        ("store", ctypes.c_int32),
        ("overflow", ctypes.c_int32),
        ("merging", ctypes.c_bool),
        ("chunk_size", ctypes.c_uint64),
        ("sectors_allocated", ctypes.c_uint64),
        ("total_sectors", ctypes.c_uint64),
        ("metadata_sectors", ctypes.c_uint64),
        ("exceptions", ctypes.c_uint64),
        ("merge_merged", ctypes.c_uint64),
        ("merge_total", ctypes.c_uint64),
        ("data_percent", ctypes.c_double),
        ("dm_status", ctypes.c_char * 64),
        ("lvs_attr", ctypes.c_char * 16),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.struct_size = ctypes.sizeof(self)


# cowsnap_merge_progress_cb: int32_t (*)(void *user_data, uint64_t merged, uint64_t total, bool done);
# non-zero stops the merge (cowsnap_snapshot_merge then returns COWSNAP_ERR_MERGING).
PROGRESS_CB = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_bool)

STATES = {0: "active", 1: "overflow", 2: "invalid", 3: "merging"}

# Every function the bindings call. Not here: the header's functions that an _ex or sized version
# replaces (cowsnap_volume_create_file, cowsnap_volume_open_file, cowsnap_snapshot_options_init,
# cowsnap_snapshot_create, cowsnap_snapshot_status); tests/test_header.py checks both lists.
_SIGNATURES = {
    # name: (restype, argtypes)
    "cowsnap_version": (ctypes.c_char_p, []),
    "cowsnap_error_name": (ctypes.c_char_p, [ctypes.c_int32]),
    "cowsnap_error_description": (ctypes.c_char_p, [ctypes.c_int32]),
    "cowsnap_error_codes": (c_result, [ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]),
    "cowsnap_last_error": (ctypes.c_size_t, [ctypes.c_char_p, ctypes.c_size_t]),
    "cowsnap_volume_create_mem": (c_result, [ctypes.c_uint64, ctypes.POINTER(c_volume_p)]),
    "cowsnap_volume_open_dir": (c_result, [ctypes.c_char_p, ctypes.POINTER(c_volume_p)]),
    "cowsnap_volume_dir_snapshot_id": (c_result, [c_volume_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32)]),
    "cowsnap_volume_create_file_ex": (
        c_result,
        [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.POINTER(c_volume_p)],
    ),
    "cowsnap_volume_open_file_ex": (
        c_result,
        [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, ctypes.c_uint32, ctypes.POINTER(c_volume_p)],
    ),
    "cowsnap_volume_free": (None, [c_volume_p]),
    "cowsnap_volume_size": (c_result, [c_volume_p, ctypes.POINTER(ctypes.c_uint64)]),
    "cowsnap_volume_lvs_attr": (c_result, [c_volume_p, ctypes.c_char_p, ctypes.c_size_t]),
    "cowsnap_volume_snapshot_ids": (
        c_result,
        [c_volume_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)],
    ),
    "cowsnap_volume_read": (c_result, [c_volume_p, ctypes.c_uint64, c_buf, ctypes.c_size_t]),
    "cowsnap_volume_write": (c_result, [c_volume_p, ctypes.c_uint64, c_buf, ctypes.c_size_t]),
    "cowsnap_volume_flush": (c_result, [c_volume_p]),
    "cowsnap_snapshot_create_options_init": (c_result, [ctypes.POINTER(SnapshotCreateOptions), ctypes.c_size_t]),
    "cowsnap_snapshot_create_with": (
        c_result,
        [c_volume_p, ctypes.POINTER(SnapshotCreateOptions), ctypes.POINTER(ctypes.c_uint32)],
    ),
    "cowsnap_snapshot_get_info": (c_result, [c_volume_p, ctypes.c_uint32, ctypes.POINTER(SnapshotInfoC)]),
    "cowsnap_snapshot_read": (c_result, [c_volume_p, ctypes.c_uint32, ctypes.c_uint64, c_buf, ctypes.c_size_t]),
    "cowsnap_snapshot_write": (c_result, [c_volume_p, ctypes.c_uint32, ctypes.c_uint64, c_buf, ctypes.c_size_t]),
    "cowsnap_snapshot_delete": (c_result, [c_volume_p, ctypes.c_uint32]),
    "cowsnap_snapshot_extend": (c_result, [c_volume_p, ctypes.c_uint32, ctypes.c_uint64]),
    "cowsnap_snapshot_set_autoextend": (
        c_result,
        [c_volume_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32],
    ),
    "cowsnap_snapshot_merge": (c_result, [c_volume_p, ctypes.c_uint32, PROGRESS_CB, ctypes.c_void_p]),
    "cowsnap_snapshot_export_cow": (
        c_result,
        [c_volume_p, ctypes.c_uint32, c_buf, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)],
    ),
    "cowsnap_snapshot_changed_ranges": (
        c_result,
        [
            c_volume_p,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.POINTER(RangeC),
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
        ],
    ),
}


def _candidates() -> List[str]:
    env = os.environ.get("COWSNAP_LIBRARY")
    if env:
        return [env]  # an explicit choice is not second-guessed
    here = Path(__file__).resolve().parent / _LIB_FILE
    found = ctypes.util.find_library("cowsnap")
    return [str(here)] + ([found] if found else [])


def _load() -> Tuple[ctypes.CDLL, str]:
    errors = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append(f"{path}: {e}")
    raise ImportError(
        "cowsnap: cannot load libcowsnap (reinstall the package with `pip install ./bindings/python`, "
        "or set COWSNAP_LIBRARY to a libcowsnap.so): " + "; ".join(errors or ["not found"])
    )


def _declare(lib: ctypes.CDLL) -> None:
    missing = []
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ImportError(f"cowsnap: {_PATH} lacks {', '.join(missing)} (a different libcowsnap version?)")


LIB, _PATH = _load()
_declare(LIB)
_VERSION = (LIB.cowsnap_version() or b"").decode("ascii", "replace")
try:
    _got = tuple(int(x) for x in _VERSION.split(".")[:2])
except ValueError:
    _got = ()
if _got != ABI_VERSION:
    raise ImportError(
        f"cowsnap: {_PATH} is version {_VERSION!r}; these bindings need {ABI_VERSION[0]}.{ABI_VERSION[1]}.x"
    )

def library_path() -> str:
    """The path of the libcowsnap loaded."""
    return _PATH


def library_version() -> str:
    """``cowsnap_version()`` of the loaded library."""
    return _VERSION


def last_error() -> str:
    """This thread's last error message from the library."""
    buf = ctypes.create_string_buffer(1024)
    LIB.cowsnap_last_error(buf, len(buf))
    return buf.value.decode("utf-8", "replace")


def check(result: int) -> None:
    """Raises the exception for a non-zero ``cowsnap_result`` (with the library's message)."""
    if result != 0:
        from .errors import CowsnapError, error_class  # built from this module's LIB

        cls = error_class(result)
        msg = last_error() or f"cowsnap error {result}"
        raise cls(msg, code=result) if cls is CowsnapError else cls(msg)


def fetch(call: Callable[..., int], ctype: Any) -> Tuple[Any, int]:
    """Runs a C function of the "count, then copy" convention, ``call(buf, capacity, out_count)``:
    first for the count, then with an array that long; again if the count grew in between
    (``BUFFER_TOO_SMALL``). Returns the ctypes array and the count."""
    n = ctypes.c_size_t()
    while True:
        check(call(None, 0, ctypes.byref(n)))
        arr = (ctype * max(n.value, 1))()
        r = call(arr, n.value, ctypes.byref(n))
        if r == 0 or LIB.cowsnap_error_name(r) != b"BUFFER_TOO_SMALL":
            check(r)
            return arr, n.value
