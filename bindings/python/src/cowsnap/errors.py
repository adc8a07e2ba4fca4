"""Exceptions: one class per ``cowsnap_result`` code of the C ABI, all deriving from :class:`CowsnapError`.

The numbers and names are the stable codes shared by every front end (``COWSNAP_<NAME>`` in
``cowsnap.h``, ``error.code`` in JavaScript); the message is the library's own (``cowsnap_last_error``).
"""

from typing import Dict, Optional, Type

__all__ = [
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


class CowsnapError(Exception):
    """Base class of every error reported by libcowsnap.

    Attributes:
        code: the negative ``cowsnap_result`` number (e.g. ``-4``).
        name: the stable code name (e.g. ``"SNAPSHOT_INVALID"``).
        message: the library's explanation (``cowsnap_last_error``).
    """

    code: int = 0
    name: str = "UNKNOWN"

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} [{self.name}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code})"


class OutOfRange(CowsnapError):
    """I/O outside the volume (or snapshot) bounds; nothing was read or written."""

    code, name = -1, "OUT_OF_RANGE"


class BadChunkSize(CowsnapError):
    """The chunk size is not a power of two between 4 KiB and 512 KiB."""

    code, name = -2, "BAD_CHUNK_SIZE"


class InvalidArgument(CowsnapError):
    """An argument the library refused (a zero-size COW, a bad autoextend policy...)."""

    code, name = -3, "INVALID_ARGUMENT"


class SnapshotInvalid(CowsnapError):
    """The snapshot was invalidated (its COW overflowed or failed); its data is gone: delete it."""

    code, name = -4, "SNAPSHOT_INVALID"


class SnapshotOverflow(CowsnapError):
    """The snapshot (``overflow="report"``) is full: writes are refused, reads still work."""

    code, name = -5, "SNAPSHOT_OVERFLOW"


class NoSpace(CowsnapError):
    """The COW device is too small for what was asked."""

    code, name = -6, "NO_SPACE"


class UnknownSnapshot(CowsnapError):
    """No such snapshot (never created, deleted or merged)."""

    code, name = -7, "UNKNOWN_SNAPSHOT"


class CorruptMetadata(CowsnapError):
    """The COW device does not hold dm-snapshot metadata that can be trusted."""

    code, name = -8, "CORRUPT_METADATA"


class IoError(CowsnapError):
    """A device (file) reported an I/O error. (Not Python's ``IOError``/``OSError``.)"""

    code, name = -9, "IO"


class Merging(CowsnapError):
    """The operation is not allowed while a snapshot is being merged."""

    code, name = -10, "MERGING"


class Unsupported(CowsnapError):
    """The operation is not supported for this snapshot or device."""

    code, name = -11, "UNSUPPORTED"


class NullPointer(CowsnapError):
    """A NULL pointer reached the C ABI (a bug in these bindings if it ever happens)."""

    code, name = -12, "NULL_POINTER"


class Panic(CowsnapError):
    """The library caught an internal panic (a bug in libcowsnap); the call had no effect."""

    code, name = -13, "PANIC"


class BufferTooSmall(CowsnapError):
    """A caller's buffer was too small for the result."""

    code, name = -14, "BUFFER_TOO_SMALL"


class VolumeClosed(InvalidArgument, ValueError):
    """A call on a closed :class:`~cowsnap.Volume` (or a snapshot of one).

    Code ``INVALID_ARGUMENT``, as JavaScript reports a handle used after ``free()``; also a
    ``ValueError``, as Python's own closed files raise."""

    def __init__(self, message: str = "I/O operation on a closed cowsnap volume") -> None:
        super().__init__(message)


_BY_CODE: Dict[int, Type[CowsnapError]] = {
    cls.code: cls
    for cls in (
        OutOfRange,
        BadChunkSize,
        InvalidArgument,
        SnapshotInvalid,
        SnapshotOverflow,
        NoSpace,
        UnknownSnapshot,
        CorruptMetadata,
        IoError,
        Merging,
        Unsupported,
        NullPointer,
        Panic,
        BufferTooSmall,
    )
}


def error_class(code: int) -> Type[CowsnapError]:
    """The exception class for a ``cowsnap_result`` code (``CowsnapError`` for unknown codes)."""
    return _BY_CODE.get(code, CowsnapError)
