"""Shared fixtures: the real recordings in ../shared/data (or $NEUROFM_TEST_DATA)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mne
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _find_data() -> Path | None:
    env = os.environ.get("NEUROFM_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates += [ROOT.parent / "shared" / "data", ROOT / "shared" / "data"]
    return next((p for p in candidates if (p / "MANIFEST.md").exists()), None)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the real test data; tests using it skip with a reason when it is absent."""
    found = _find_data()
    if found is None:
        pytest.skip("real test data not found: set NEUROFM_TEST_DATA or put it in ../shared/data")
    return found


@pytest.fixture(scope="session")
def meeg(data_dir) -> Path:
    return data_dir / "meeg"


@pytest.fixture(scope="session")
def fmri(data_dir) -> Path:
    return data_dir / "fmri"


@pytest.fixture(scope="session")
def atlases(data_dir) -> Path:
    return data_dir / "atlases"


def pytest_configure(config):
    mne.set_log_level("ERROR")
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in MNE.*")
    os.environ.setdefault("NEUROFM_PROGRESS", "0")
