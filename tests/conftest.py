"""Shared fixtures: the real data folder, skipped with a clear reason when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from helioforge.config import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data folder not found at {root} (set HELIOFORGE_DATA)")
    return root


@pytest.fixture(scope="session")
def sharp_dir(data_dir: Path) -> Path:
    path = data_dir / "sharp"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path
