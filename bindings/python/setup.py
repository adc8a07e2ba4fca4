"""Build hook: compile the Rust C ABI (``libcowsnap.so``) and ship it inside the ``cowsnap`` package.

The package itself is pure Python over ``ctypes``; the only native piece is the cdylib built from
the ``cowsnap-ffi`` crate of this repository, found relative to this file (``../..``) or through
``COWSNAP_SOURCE_DIR``. ``cargo build --release -p cowsnap-ffi`` is incremental, so reinstalling is
quick when nothing changed. Set ``COWSNAP_PREBUILT_LIBRARY=/path/to/libcowsnap.so`` to ship an
existing build instead of running cargo (e.g. when packaging without a Rust toolchain).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
LIB_NAME = "libcowsnap.dylib" if sys.platform == "darwin" else "libcowsnap.so"


def find_source_dir() -> Path:
    env = os.environ.get("COWSNAP_SOURCE_DIR")
    candidates = [Path(env)] if env else [HERE.parent.parent, *HERE.parents]
    for c in candidates:
        if (c / "ffi" / "Cargo.toml").is_file() and (c / "Cargo.toml").is_file():
            return c
    raise SystemExit(
        "cowsnap: cannot find the cowsnap Rust workspace (with ffi/Cargo.toml) above "
        f"{HERE}; set COWSNAP_SOURCE_DIR to the repository root, or COWSNAP_PREBUILT_LIBRARY "
        "to an existing libcowsnap.so"
    )


def cargo_build_library() -> Path:
    """Runs cargo and returns the path of the cdylib it produced (parsed from cargo's JSON messages,
    so CARGO_TARGET_DIR and friends are honoured)."""
    root = find_source_dir()
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [cargo, "build", "--release", "-p", "cowsnap-ffi", "--message-format=json-render-diagnostics"]
    print("cowsnap: running", " ".join(cmd), "in", root, file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, check=False)
    except FileNotFoundError:
        raise SystemExit(
            "cowsnap: `cargo` not found; install a Rust toolchain (https://rustup.rs) or set "
            "COWSNAP_PREBUILT_LIBRARY to an existing libcowsnap.so"
        )
    if proc.returncode != 0:
        raise SystemExit(f"cowsnap: cargo build failed with exit code {proc.returncode}")
    found = None
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact":
            continue
        if "cdylib" not in msg.get("target", {}).get("kind", []):
            continue
        for f in msg.get("filenames", []):
            if f.endswith(LIB_NAME):
                found = Path(f)
    if found is None or not found.is_file():
        raise SystemExit(f"cowsnap: cargo did not report a {LIB_NAME} for cowsnap-ffi")
    return found


class BuildPyWithLibrary(build_py):
    """Copies the freshly built libcowsnap next to the package's Python files."""

    def run(self) -> None:
        super().run()
        prebuilt = os.environ.get("COWSNAP_PREBUILT_LIBRARY")
        lib = Path(prebuilt) if prebuilt else cargo_build_library()
        if not lib.is_file():
            raise SystemExit(f"cowsnap: {lib} does not exist")
        dest = Path(self.build_lib) / "cowsnap" / LIB_NAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest)
        print(f"cowsnap: shipping {lib} as {dest}", file=sys.stderr)


class BinaryDistribution(Distribution):
    """The wheel holds a native library: make it platform specific (not ``py3-none-any``)."""

    def has_ext_modules(self) -> bool:
        return True


cmdclass = {"build_py": BuildPyWithLibrary}

try:  # setuptools >= 70.1 ships bdist_wheel itself; older ones use the wheel package's.
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover
    try:
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel
    except ImportError:
        _bdist_wheel = None

if _bdist_wheel is not None:

    class BdistWheel(_bdist_wheel):
        """Tags the wheel ``py3-none-<platform>``: it loads the library with ctypes, so it does not
        depend on the Python ABI, only on the platform."""

        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = BdistWheel

setup(cmdclass=cmdclass, distclass=BinaryDistribution)
