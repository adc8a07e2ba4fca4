"""Shared fixtures: where the repository and the shared test vectors are."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def shared_dir() -> Path:
    env = os.environ.get("COWSNAP_SHARED")
    return Path(env) if env else REPO / "tests" / "shared"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    d = shared_dir() / "vectors"
    if not (d / "scripts").is_dir():
        pytest.fail(f"shared vectors not found in {d} (set COWSNAP_SHARED)")
    return d


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
