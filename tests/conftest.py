"""Shared fixtures: the real data folder, skipped with a clear reason when absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helioforge.config import SAMPLE_DIR, data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The full real data folder (the one rule of :func:`helioforge.config.data_root`). Tests that
    need it skip when only the embedded sample is there (a fresh clone); the embedded sample has
    tests of its own (``tests/core/test_data_resolution.py``)."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data folder not found at {root} (set HELIOFORGE_DATA)")
    if root.resolve() == SAMPLE_DIR:
        pytest.skip("needs the full real sample (only the embedded one is here: `helioforge data fetch`)")
    return root


@pytest.fixture(scope="session")
def sharp_dir(data_dir: Path) -> Path:
    path = data_dir / "sharp"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def atmos_dir(data_dir: Path) -> Path:
    """The model atmospheres and the SIR line list of the real data folder."""
    return data_dir / "stokes" / "atmospheres"


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: tiny CPU trainings slow down many-fold when OpenMP threads compete
    with other processes on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
