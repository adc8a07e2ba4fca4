"""Build of the ``cowsnap`` Python package with setuptools-rust (no-binding mode).

The package is pure Python over ``ctypes``; its one native file is ``cowsnap/libcowsnap.so``, the
cdylib of the ``cowsnap-ffi`` crate, which setuptools-rust builds with cargo and ships inside the
package (``Binding.NoBinding``: a plain C library, no Python extension module).

Where the Rust sources are:
- in the repository: the workspace two folders up (``../../ffi/Cargo.toml``);
- in the sdist: ``rust/`` inside it (``rust/Cargo.toml``, ``rust/Cargo.lock``, ``rust/core``,
  ``rust/managed``, ``rust/ffi``), copied there by the ``sdist`` command below, so the sdist builds on its own.

The version has one source, the workspace's ``Cargo.toml`` (``[workspace.package] version``), read
here for the package metadata; ``cowsnap.__version__`` reads the installed metadata.

``COWSNAP_WHEEL_PLAT`` (e.g. ``manylinux_2_17_x86_64.manylinux2014_x86_64``) sets the wheel's
platform tag, for a library built against that glibc (scripts/test-python.sh builds it with
cargo-zigbuild for glibc 2.17 and checks the result with ``auditwheel show``).
"""

import os
import re
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.sdist import sdist
from setuptools_rust import Binding, RustExtension, Strip
from setuptools_rust.build import build_rust

HERE = Path(__file__).resolve().parent
LIB_NAME = "libcowsnap.dylib" if sys.platform == "darwin" else "libcowsnap.so"
# The crates libcowsnap is built from; the sdist carries them (and the workspace's manifest and lock).
CRATES = ("core", "managed", "ffi")


def rust_root() -> Path:
    """The Cargo workspace: ``rust/`` in an sdist, else the repository root."""
    for root in (HERE / "rust", HERE.parent.parent):
        if (root / "Cargo.toml").is_file() and (root / "ffi" / "Cargo.toml").is_file():
            return root
    raise SystemExit(f"cowsnap: no Rust sources (rust/ or ../../) next to {HERE}")


def workspace_version(root: Path) -> str:
    text = (root / "Cargo.toml").read_text(encoding="utf-8")
    section = re.search(r"^\[workspace\.package\]$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = section and re.search(r'^version\s*=\s*"([^"]+)"', section.group(1), re.M)
    if not found:
        raise SystemExit(f"cowsnap: no [workspace.package] version in {root / 'Cargo.toml'}")
    return found.group(1)


class BuildRust(build_rust):
    """Ships the cdylib as ``cowsnap/libcowsnap.so``: a ctypes library, not an extension module, so
    without the CPython ABI suffix setuptools would give it."""

    def get_dylib_ext_path(self, ext, target_fname):
        path = super().get_dylib_ext_path(ext, target_fname)
        return os.path.join(os.path.dirname(path), LIB_NAME)


class SdistWithRust(sdist):
    """Puts the Rust sources the library needs into the sdist's ``rust/`` folder: the crates, the
    workspace lock file, and a workspace manifest listing only them."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        root = rust_root()
        dest = Path(base_dir) / "rust"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        for crate in CRATES:
            shutil.copytree(root / crate, dest / crate, ignore=shutil.ignore_patterns("target", "*.orig"))
        shutil.copyfile(root / "Cargo.lock", dest / "Cargo.lock")
        manifest = (root / "Cargo.toml").read_text(encoding="utf-8")
        manifest, n = re.subn(r"^members\s*=\s*\[[^\]]*\]", "members = [%s]" % ", ".join(f'"{c}"' for c in CRATES), manifest, flags=re.M)
        if n != 1:
            raise SystemExit("cowsnap: cannot find `members = [...]` in the workspace Cargo.toml")
        manifest = re.sub(r"^exclude\s*=\s*\[[^\]]*\]\n", "", manifest, flags=re.M)
        (dest / "Cargo.toml").write_text(manifest, encoding="utf-8")


cmdclass = {"build_rust": BuildRust, "sdist": SdistWithRust}

try:  # setuptools >= 70.1 ships bdist_wheel itself; older ones use the wheel package's.
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel


class BdistWheel(_bdist_wheel):
    """Tags the wheel ``py3-none-<platform>``: the library is loaded with ctypes, so the wheel does
    not depend on the Python version or ABI, only on the platform (``COWSNAP_WHEEL_PLAT`` names it
    when the library was built for an older glibc than this machine's)."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", os.environ.get("COWSNAP_WHEEL_PLAT") or plat


cmdclass["bdist_wheel"] = BdistWheel

ROOT = rust_root()
setup(
    version=workspace_version(ROOT),
    cmdclass=cmdclass,
    rust_extensions=[
        RustExtension(
            "cowsnap.libcowsnap",
            path=str(ROOT / "ffi" / "Cargo.toml"),
            binding=Binding.NoBinding,
            # Symbols stripped by cargo itself (also when cross-building: no host `strip` involved);
            # LTO and one codegen unit for a smaller library (this build only: the workspace's
            # release profile stays as it is).
            args=[
                "--config",
                'profile.release.strip="symbols"',
                "--config",
                "profile.release.lto=true",
                "--config",
                "profile.release.codegen-units=1",
            ],
            strip=Strip.No,
            py_limited_api=False,
        )
    ],
)
