"""Shared fixtures: the real recordings in ../shared/data (or $NEUROFM_TEST_DATA)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import mne
import pytest

ROOT = Path(__file__).resolve().parents[1]
# braindecode beside the environment (`make peers`, benchmarks/peers_env.sh): importable, after
# every package of the environment itself
if (ROOT / ".peers").is_dir():
    sys.path.append(str(ROOT / ".peers"))


def _find_data() -> Path | None:
    env = os.environ.get("NEUROFM_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates += [ROOT.parent / "shared" / "data", ROOT / "shared" / "data"]
    return next((p for p in candidates if (p / "MANIFEST.md").exists()), None)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the real test data. Absent: the tests using it skip with a reason, except
    under CI (``CI=true``), where a missing data folder fails them."""
    found = _find_data()
    if found is None:
        reason = "real test data not found: set NEUROFM_TEST_DATA or put it in ../shared/data"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: the real-data tests must run)", pytrace=False)
        pytest.skip(reason)
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


@pytest.fixture(scope="session")
def abide(data_dir) -> Path:
    """ABIDE-I CC200 tables (``rois_cc200/``), the phenotype CSV and the CC200 atlas."""
    return data_dir / "abide"


@pytest.fixture(scope="session")
def eegmmidb(meeg) -> Path:
    """PhysioNet EEG Motor Movement/Imagery, S001-S005, EDF+."""
    return meeg / "eegmmidb"


@pytest.fixture(scope="session")
def eeglab_tutorial(meeg) -> mne.io.BaseRaw:
    """The real EEGLAB tutorial recording, preloaded, channels named (copy before changing it)."""
    from neurofm.testing import read_eeglab_tutorial

    return read_eeglab_tutorial(meeg)


def pytest_configure(config):
    mne.set_log_level("ERROR")
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in MNE.*")
    os.environ.setdefault("NEUROFM_PROGRESS", "0")


def pytest_collection_modifyitems(config, items):
    """``slow``: every test that reads the real data (the ``data_dir`` fixture, directly or
    through another) or is marked so (training runs in subprocesses). ``pytest -m "not slow"``
    is the fast tier, which needs no data folder."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
