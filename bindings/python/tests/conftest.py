"""Shared fixtures: where the repository and the shared test vectors are."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def shared_dir() -> Path:
    """The repository's copy of the shared vector set."""
    return REPO / "tests" / "shared"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    d = shared_dir() / "vectors"
    if not (d / "scripts").is_dir():
        pytest.fail(f"shared vectors not found in {d}")
    return d


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
