"""The ctypes declarations match ``ffi/include/cowsnap.h`` (the source of truth): every function of the
header is declared with the same parameter and return types, struct fields match in name, order and
type, and the enums' numbers match the constants the bindings use."""

import ctypes
import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import cowsnap
from cowsnap import _lib

HEADER = Path(__file__).resolve().parents[3] / "ffi" / "include" / "cowsnap.h"

C_TYPES = {
    "uint8_t": ctypes.c_uint8,
    "uint32_t": ctypes.c_uint32,
    "int32_t": ctypes.c_int32,
    "uint64_t": ctypes.c_uint64,
    "size_t": ctypes.c_size_t,
    "double": ctypes.c_double,
    "bool": ctypes.c_bool,
    "cowsnap_result": ctypes.c_int32,
}


@pytest.fixture(scope="module")
def header() -> str:
    if not HEADER.exists():
        pytest.skip(f"{HEADER} not found (not running from the repository)")
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments
    return re.sub(r"//[^\n]*", "", text)


def functions(text: str) -> Dict[str, Tuple[str, List[str]]]:
    out = {}
    for m in re.finditer(r"^([A-Za-z_][\w \*]*?)\s*\b(cowsnap_\w+)\(([^)]*)\);", text, flags=re.M):
        ret, name, args = m.group(1).strip(), m.group(2), m.group(3)
        params = [] if args.strip() in ("", "void") else [" ".join(a.split()) for a in args.split(",")]
        out[name] = (ret, params)
    return out


def ctype_of(decl: str):
    """The ctypes type a C declaration (type and name) must be declared with."""
    t = re.sub(r"\b(const|struct)\b", "", decl)
    t = re.sub(r"\b\w+$", "", t.strip()).replace(" ", "")  # drop the parameter name
    if t == "void":
        return None
    if t in ("char*",):
        return ctypes.c_char_p
    if t in ("uint8_t*", "void*", "cowsnap_volume*"):
        return ctypes.c_void_p
    if t == "cowsnap_volume**":
        return ctypes.POINTER(ctypes.c_void_p)
    if t == "char**":  # const char *const *
        return ctypes.POINTER(ctypes.c_char_p)
    if t == "cowsnap_merge_progress_cb":
        return _lib.PROGRESS_CB
    if t == "cowsnap_snapshot_create_options*":
        return ctypes.POINTER(_lib.SnapshotCreateOptions)
    if t == "cowsnap_snapshot_info*":
        return ctypes.POINTER(_lib.SnapshotInfoC)
    if t == "cowsnap_range*":
        return ctypes.POINTER(_lib.RangeC)
    if t.endswith("*"):
        return ctypes.POINTER(C_TYPES[t[:-1]])
    return C_TYPES[t]


# The header's functions the bindings leave out: each has a replacement they use (an _ex function
# with flags, or the sized structs' functions), and the frozen structs they take are not mirrored.
NOT_BOUND = {
    "cowsnap_volume_create_file": "cowsnap_volume_create_file_ex",
    "cowsnap_volume_open_file": "cowsnap_volume_open_file_ex",
    "cowsnap_snapshot_options_init": "cowsnap_snapshot_create_options_init",
    "cowsnap_snapshot_create": "cowsnap_snapshot_create_with",
    "cowsnap_snapshot_status": "cowsnap_snapshot_get_info",
}


def test_every_function_declared_with_header_types(header: str) -> None:
    fns = functions(header)
    assert len(fns) >= 20, fns.keys()
    assert sorted(fns) == sorted(set(_lib._SIGNATURES) | set(NOT_BOUND)), "functions in the header vs. declared in _lib"
    assert set(NOT_BOUND.values()) <= set(_lib._SIGNATURES), "a left-out function's replacement is declared"
    assert not set(NOT_BOUND) & set(_lib._SIGNATURES)
    for name, (ret, params) in fns.items():
        if name in NOT_BOUND:
            continue
        restype, argtypes = _lib._SIGNATURES[name]
        want_ret = ctype_of(ret + " x")
        assert restype == want_ret, (name, ret, restype)
        assert len(argtypes) == len(params), (name, params)
        for p, a in zip(params, argtypes):
            assert a == ctype_of(p), (name, p, a)
        fn = getattr(_lib.LIB, name)
        assert fn.argtypes == argtypes and fn.restype == restype


def struct_fields(text: str, name: str) -> List[Tuple[str, str]]:
    m = re.search(r"struct " + name + r" \{(.*?)\};", text, flags=re.S)
    assert m, name
    out = []
    for line in m.group(1).split(";"):
        line = " ".join(line.split())
        if line:
            decl, fname = line.rsplit(" ", 1)
            while fname.startswith("*"):
                decl, fname = decl + " *", fname[1:]
            out.append((fname, decl))
    return out


@pytest.mark.parametrize(
    "cname,cls",
    [
        ("cowsnap_snapshot_create_options", _lib.SnapshotCreateOptions),
        ("cowsnap_snapshot_info", _lib.SnapshotInfoC),
        ("cowsnap_range", _lib.RangeC),
    ],
)
def test_structs_match(header: str, cname: str, cls: type) -> None:
    fields = struct_fields(header, cname)
    mine = cls._fields_  # type: ignore[attr-defined]
    assert [re.sub(r"\[.*", "", f) for f, _ in fields] == [f for f, _ in mine]
    for (fname, decl), (pname, ptype) in zip(fields, mine):
        arr = re.match(r"(\w+)\[(\d+)\]$", fname)
        if arr:
            assert pname == arr.group(1)
            assert ptype == ctypes.c_char * int(arr.group(2))
            continue
        assert pname == fname
        t = decl.replace("const ", "")
        assert ptype == (ctypes.c_char_p if t == "char *" else C_TYPES[t]), (fname, decl)


def enum_values(text: str, name: str) -> Dict[str, int]:
    m = re.search(r"enum " + name + r"\b[^{]*\{(.*?)\};", text, flags=re.S)
    assert m, name
    return {k: int(v) for k, v in re.findall(r"(\w+) = (-?\d+)", m.group(1))}


def test_enums_match(header: str) -> None:
    results = enum_values(header, "cowsnap_result")
    assert results.pop("COWSNAP_OK") == 0
    assert {f"COWSNAP_ERR_{cowsnap.error_class(v).name}": v for v in results.values()} == results
    assert enum_values(header, "cowsnap_store_kind") == {
        "COWSNAP_STORE_PERSISTENT": _lib.STORE_PERSISTENT,
        "COWSNAP_STORE_TRANSIENT": _lib.STORE_TRANSIENT,
    }
    assert enum_values(header, "cowsnap_overflow_mode") == {
        "COWSNAP_OVERFLOW_INVALIDATE": _lib.OVERFLOW_INVALIDATE,
        "COWSNAP_OVERFLOW_REPORT": _lib.OVERFLOW_REPORT,
    }
    states = enum_values(header, "cowsnap_snapshot_state")
    assert {v: k.split("_")[-1].lower() for k, v in states.items()} == _lib.STATES


def test_version_macros_match_the_library(header: str) -> None:
    major = int(re.search(r"#define COWSNAP_VERSION_MAJOR (\d+)", header).group(1))  # type: ignore[union-attr]
    minor = int(re.search(r"#define COWSNAP_VERSION_MINOR (\d+)", header).group(1))  # type: ignore[union-attr]
    string = re.search(r'#define COWSNAP_VERSION_STRING "([^"]+)"', header).group(1)  # type: ignore[union-attr]
    assert (major, minor) == _lib.ABI_VERSION
    assert cowsnap.library_version() == string
