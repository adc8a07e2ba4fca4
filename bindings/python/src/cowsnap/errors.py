"""Exceptions: one class per ``cowsnap_result`` code of the C ABI, all deriving from :class:`CowsnapError`.

The classes are built at import from the library's own table (``cowsnap_error_codes``,
``cowsnap_error_name``, ``cowsnap_error_description``), which is the core's one declaration of the
stable codes: nothing here restates a number or a name. Only the Python shape is chosen here: the
class name is the CamelCase of the stable name (``BUFFER_TOO_SMALL`` -> ``BufferTooSmall``; ``IO``
-> ``IoError``, as Python's ``IOError`` is ``OSError``), and the errors about a caller's argument are
also ``ValueError``\\ s, as Python's conventions (and earlier versions of this package) have them.
"""

import ctypes
from typing import Dict, List, Optional, Tuple, Type

from ._lib import LIB

__all__ = ["CowsnapError", "VolumeClosed", "error_class"]


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


# Python-shaped class names that are not the plain CamelCase of the stable name.
_PY_NAMES = {"IO": "IoError"}
# Codes about a caller's argument: also ValueErrors (Python's convention for a bad value).
_VALUE_ERRORS = {"INVALID_ARGUMENT", "BAD_CHUNK_SIZE"}


def _library_codes() -> List[int]:
    count = ctypes.c_size_t(0)
    if LIB.cowsnap_error_codes(None, 0, ctypes.byref(count)) != 0:
        raise ImportError("cowsnap: cowsnap_error_codes failed")
    codes = (ctypes.c_int32 * count.value)()
    if LIB.cowsnap_error_codes(codes, count.value, ctypes.byref(count)) != 0:
        raise ImportError("cowsnap: cowsnap_error_codes failed")
    return list(codes)


def _class_name(name: str) -> str:
    return _PY_NAMES.get(name) or "".join(w.capitalize() for w in name.split("_"))


_BY_CODE: Dict[int, Type[CowsnapError]] = {}
_BY_NAME: Dict[str, Type[CowsnapError]] = {}

for _code in _library_codes():
    if _code == 0:
        continue
    _name = LIB.cowsnap_error_name(_code).decode("ascii")
    _bases: Tuple[type, ...] = (CowsnapError, ValueError) if _name in _VALUE_ERRORS else (CowsnapError,)
    _cls = type(
        _class_name(_name),
        _bases,
        {
            "code": _code,
            "name": _name,
            "__doc__": LIB.cowsnap_error_description(_code).decode("utf-8", "replace"),
            "__module__": __name__,
        },
    )
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
    _BY_CODE[_code] = _cls
    _BY_NAME[_name] = _cls


class VolumeClosed(_BY_NAME["INVALID_ARGUMENT"], ValueError):  # type: ignore[misc]
    """A call on a closed :class:`~cowsnap.Volume` (or a snapshot of one).

    Code ``INVALID_ARGUMENT``, as JavaScript reports a handle used after ``free()``; also a
    ``ValueError``, as Python's own closed files raise."""

    def __init__(self, message: str = "I/O operation on a closed cowsnap volume") -> None:
        super().__init__(message)


def error_class(code: int) -> Type[CowsnapError]:
    """The exception class for a ``cowsnap_result`` code (``CowsnapError`` for unknown codes)."""
    return _BY_CODE.get(code, CowsnapError)


def error_by_name(name: str) -> Type[CowsnapError]:
    """The exception class for a stable code name such as ``"NO_SPACE"``."""
    return _BY_NAME[name]


def __getattr__(attr: str) -> Type[CowsnapError]:
    # Lets type checkers know that unknown attributes are exception classes (the real ones are in
    # globals(), set above from the library's table).
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
