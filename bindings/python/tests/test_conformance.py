"""The conformance table (``tests/conformance/cases.json``) through the Python package: the same
inputs must give the same answers as in Rust, C, JavaScript and the CLI (same status fields, or the
same error code name, raised as a :class:`cowsnap.CowsnapError` subclass with that ``name``)."""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import cowsnap

REPO = Path(__file__).resolve().parents[3]
TABLE = json.loads((REPO / "tests" / "conformance" / "cases.json").read_text())["cases"]


class _StopMerge(Exception):
    pass


class Run:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.vol: Optional[cowsnap.Volume] = None
        self.snaps: List[cowsnap.Snapshot] = []

    def target(self, t: Any) -> Any:
        return self.vol if t == "origin" else self.snaps[t]

    def step(self, s: Dict[str, Any], ctx: str) -> None:
        op = s["op"]
        if op == "volume":
            self.vol = cowsnap.Volume.memory(s["size"])
        elif op == "images":
            origin = self.tmp / "origin.img"
            origin.write_bytes(bytes(s["size"]))
            paths = []
            for i, c in enumerate(s["cows"]):
                img = bytearray(c["size"])
                for at, hx in c["patches"]:
                    b = bytes.fromhex(hx)
                    img[at : at + len(b)] = b
                p = self.tmp / f"cow{i}.img"
                p.write_bytes(bytes(img))
                paths.append(p)
            self.vol = cowsnap.Volume.open(origin, paths)
            self.snaps.extend(self.vol.snapshots)
        elif op == "snapshot":
            store = s.get("store", "P")
            ae = s.get("autoextend")
            snap = self.vol.snapshot(
                cow_size=s["cow"],
                chunk_size=s.get("chunk", 4096),
                persistent=store.startswith("P"),
                overflow="report" if store.endswith("O") else "invalidate",
                autoextend=tuple(ae) if ae is not None else None,
            )
            self.snaps.append(snap)
        elif op == "write":
            self.target(s["target"]).write(s["offset"], bytes([s["fill"]]) * s["len"])
        elif op == "read":
            data = self.target(s["target"]).read(s["offset"], s["len"])
            assert len(data) == s["len"], ctx
            if "fill" in s:
                assert data == bytes([s["fill"]]) * s["len"], f"{ctx}: read bytes"
        elif op == "status":
            st = self.snaps[s["snap"]].status()
            for key in ("state", "dm_status", "lvs_attr", "exceptions"):
                if key in s:
                    assert getattr(st, key) == s[key], f"{ctx}: {key} is {getattr(st, key)!r}"
            if "data_percent" in s:
                assert st.data_percent == s["data_percent"], f"{ctx}: data_percent is {st.data_percent}"
        elif op == "delete":
            self.snaps[s["snap"]].delete()
        elif op in ("merge", "merge_start"):

            def stop(p: cowsnap.MergeProgress) -> None:
                if not p.done:
                    raise _StopMerge()

            try:
                self.snaps[s["snap"]].merge(stop if op == "merge_start" else None)
            except _StopMerge:
                pass  # stopped as asked: the snapshot stays merging
        elif op == "extend":
            self.snaps[s["snap"]].extend(s["size"])
        elif op == "autoextend":
            p = s["policy"]
            self.snaps[s["snap"]].set_autoextend(tuple(p) if p is not None else None)
        elif op == "origin_attr":
            assert self.vol.lvs_attr == s["value"], f"{ctx}: origin lvs_attr {self.vol.lvs_attr!r}"
        elif op == "count":
            assert len(self.vol.snapshots) == s["count"], f"{ctx}: snapshot count"
        elif op == "close":
            self.vol.close()
        else:
            raise AssertionError(f"{ctx}: unknown op {op}")


@pytest.mark.parametrize("case", TABLE, ids=[c["name"] for c in TABLE])
def test_conformance(case: Dict[str, Any], tmp_path: Path) -> None:
    run = Run(tmp_path)
    try:
        for i, s in enumerate(case["steps"]):
            ctx = f"step {i} {s}"
            want = s.get("expect", "OK")
            try:
                run.step(s, ctx)
                got = "OK"
            except cowsnap.CowsnapError as e:
                got = e.name
                assert type(e) is cowsnap.error_by_name(e.name) or isinstance(e, cowsnap.VolumeClosed), ctx
                assert e.code == cowsnap.error_by_name(e.name).code, ctx
            assert got == want, f"{ctx}: got {got}"
    finally:
        if run.vol is not None:
            run.vol.close()


def test_the_table_is_large_enough() -> None:
    assert len(TABLE) >= 40
