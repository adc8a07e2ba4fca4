"""Volume.open_dir on volume directories made by the cowsnap CLI: the manifest's autoextend policy
(and its absence) is honoured, the volume's lock is respected both ways, the manifest's snapshots
cannot be deleted behind its back."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import cowsnap
from cowsnap.errors import Busy, InvalidArgument

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def cli() -> str:
    """The cowsnap CLI: $COWSNAP_CLI, else the repository's debug build (built if missing)."""
    path = os.environ.get("COWSNAP_CLI")
    if path:
        return path
    subprocess.run(["cargo", "build", "-q", "-p", "cowsnap-cli"], cwd=REPO, check=True)
    return str(REPO / "target" / "debug" / "cowsnap")


def make_volume(cli: str, d: Path, autoextend=None) -> None:
    subprocess.run([cli, "-q", "create", str(d), "--size", "4M"], check=True)
    subprocess.run([cli, "-q", "write", str(d), "--offset", "0", "--fill", "0x11", "--len", "4M"], check=True)
    args = [cli, "-q", "snapshot", str(d), "--name", "s", "--size", "64K"]
    if autoextend:
        args += ["--autoextend", autoextend]
    subprocess.run(args, check=True)


def lvs(cli: str, d: Path) -> dict:
    out = subprocess.run([cli, "lvs", str(d), "--json"], check=True, capture_output=True).stdout
    return {r["lv_name"]: r for r in json.loads(out)["report"][0]["lv"]}


def test_autoextend_policy_of_the_manifest_is_honoured(cli, tmp_path):
    d = tmp_path / "vol"
    make_volume(cli, d, autoextend="60:100")
    with cowsnap.Volume.open_dir(d) as v:
        assert v.size == 4 << 20
        [s] = v.snapshots
        assert s.name == "s" and s.path == str(d / "s.cow")
        v.write(0, b"\x22" * (256 << 10))  # 64 first-written chunks: only fits if the COW grows
        v.flush()
        assert s.status().state == "active"
        assert s.read(0, 256 << 10) == b"\x11" * (256 << 10)
    assert (d / "s.cow").stat().st_size > 64 << 10
    row = lvs(cli, d)["s"]
    assert row["state"] == "active" and row["lv_size_bytes"] > 64 << 10
    out = subprocess.run([cli, "read", str(d / "s"), "--offset", "0", "--len", "8"], check=True, capture_output=True)
    assert out.stdout == b"\x11" * 8


def test_no_autoextend_in_the_manifest_overflows(cli, tmp_path):
    d = tmp_path / "vol"
    make_volume(cli, d)
    with cowsnap.Volume.open_dir(d) as v:
        v.write(0, b"\x22" * (256 << 10))
        assert v.snapshots[0].status().state == "invalid"


def test_a_cli_writer_waits_for_an_open_handle(cli, tmp_path):
    d = tmp_path / "vol"
    make_volume(cli, d)
    v = cowsnap.Volume.open_dir(d)
    with pytest.raises(Busy, match="in use"):
        cowsnap.Volume.open_dir(d)
    with pytest.raises(InvalidArgument, match="manifest"):
        v.snapshots[0].delete()
    with pytest.raises(InvalidArgument, match="manifest"):
        v.snapshots[0].merge()
    assert v.snapshots[0].read(0, 1) == b"\x11"  # still there, still the manifest's
    w = [cli, "-q", "write", str(d), "--offset", "0", "--fill", "0x33", "--len", "4096"]
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(w, timeout=2)
    assert v.read(0, 1) == b"\x11"
    v.close()
    subprocess.run(w, check=True, timeout=30)
    with cowsnap.Volume.open_dir(d) as v:
        assert v.read(0, 1) == b"\x33"
        assert v.snapshots[0].read(0, 1) == b"\x11"


def test_open_dir_fails_while_a_cli_command_holds_the_volume(cli, tmp_path):
    d = tmp_path / "vol"
    make_volume(cli, d)
    # A CLI write that holds the lock while it waits for its data.
    p = subprocess.Popen(
        [cli, "-q", "write", str(d), "--offset", "8192", "--from", "/dev/stdin", "--len", "4096"],
        stdin=subprocess.PIPE,
    )
    try:
        refused = None
        deadline = time.monotonic() + 10
        while refused is None and time.monotonic() < deadline:
            try:
                cowsnap.Volume.open_dir(d).close()
            except Busy as e:
                refused = e
            time.sleep(0.05)
        assert refused is not None and "in use" in str(refused)
        p.stdin.write(b"\x44" * 4096)
        p.stdin.close()
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
    with cowsnap.Volume.open_dir(d) as v:
        assert v.read(8192, 4096) == b"\x44" * 4096


def test_not_a_volume(tmp_path):
    with pytest.raises(InvalidArgument, match="not a cowsnap volume"):
        cowsnap.Volume.open_dir(tmp_path)


def test_every_kind_of_path(cli, tmp_path):
    """open_dir on what a user may pass: a missing path, a file, a device node, a symlink to a volume,
    a volume whose manifest was zeroed. Refusals leave every file as it was."""
    plain = tmp_path / "file"
    plain.write_bytes(b"x")
    for p in [tmp_path / "missing", plain, Path("/dev/null")]:
        with pytest.raises(InvalidArgument, match="volume directory"):
            cowsnap.Volume.open_dir(p)
    assert plain.read_bytes() == b"x"

    subprocess.run([cli, "-q", "create", str(tmp_path / "v"), "--size", "1M"], check=True)
    os.symlink(tmp_path / "v", tmp_path / "link")
    with cowsnap.Volume.open_dir(tmp_path / "link") as v:
        assert v.size == 1 << 20

    z = tmp_path / "z"
    subprocess.run([cli, "-q", "create", str(z), "--size", "1M"], check=True)
    (z / "cowsnap.json").write_bytes(b"\0" * 100)
    before = {f.name: f.read_bytes() for f in z.iterdir() if f.is_file()}
    with pytest.raises(cowsnap.CorruptMetadata, match="corrupt manifest"):
        cowsnap.Volume.open_dir(z)
    assert {f.name: f.read_bytes() for f in z.iterdir() if f.is_file()} == before
