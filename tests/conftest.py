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


def _tiny_interrogator_profile(data_dir: Path):
    """The ``tiny`` interrogator profile on the full sample's SHARP folders (sharp + sharp_bad)."""
    from helioforge.interrogate.config import get_profile

    p = get_profile("tiny")
    p.data.sharp_dirs = (str(data_dir / "sharp"), str(data_dir / "sharp_bad"))
    return p


@pytest.fixture
def tiny_profile(data_dir):
    """A fresh ``tiny`` interrogator profile on the full sample's SHARP folders."""
    return _tiny_interrogator_profile(data_dir)


@pytest.fixture(scope="session")
def tiny_interrogator(tmp_path_factory, data_dir):
    """A work folder made by the whole interrogator pipeline with the tiny profile on the real
    sample, one torch thread (the known numbers of ``test_pipeline_smoke`` were made so):
    ``(work folder, metrics, seconds)``. Shared by the pipeline, calibration and studio tests;
    they must not change its products."""
    import time

    from helioforge.interrogate.pipeline import interrogate

    work = tmp_path_factory.mktemp("tiny")
    t = time.perf_counter()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = interrogate(_tiny_interrogator_profile(data_dir), work, progress=False)
    finally:
        torch.set_num_threads(n)
    return work, metrics, time.perf_counter() - t
