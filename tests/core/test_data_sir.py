"""SIR model-atmosphere reader/writer: real files, round trips, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helioforge.data.fits import FitsReadError
from helioforge.data.sir import (
    COLUMNS,
    SIRModel,
    SIRReadError,
    atmospheres_dir,
    model_path,
    read_sir,
    read_sir_folder,
    write_sir,
)


@pytest.fixture(scope="module")
def atm_dir(data_dir: Path) -> Path:
    path = atmospheres_dir(data_dir)
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


def test_read_hsra_values(atm_dir):
    m = read_sir(atm_dir / "hsra11.mod")
    assert (m.vmac, m.fill, m.stray) == (1.0, 1.0, 0.0)
    assert m.name == "hsra11" and m.has_geometry
    # first row of the file: deepest point
    first = [1.4, 9560.0, 6.04679e03, 6.0e04, 0.0, 0.0, 0.0, 0.0, -8.1793e01, 2.0906e05, 3.4256e-07]
    np.testing.assert_array_equal(m.as_array()[0], first)
    assert m.n_depth == 55
    assert np.all(np.diff(m.log_tau) < 0)
    assert all(getattr(m, c).dtype == np.float64 for c in COLUMNS)


@pytest.mark.parametrize("name", ["hsra11", "FALC11", "emaltby11", "penumjti11", "mmaltby11", "solanpl11"])
def test_round_trip_real_files_exact(atm_dir, tmp_path, name):
    m = read_sir(atm_dir / f"{name}.mod")
    out = write_sir(tmp_path / "sub" / f"{name}.mod", m)
    back = read_sir(out)
    np.testing.assert_array_equal(back.as_array(), m.as_array())
    assert (back.vmac, back.fill, back.stray) == (m.vmac, m.fill, m.stray)
    # writing the re-read model gives the same bytes (fixed point of the printed precision)
    out2 = write_sir(tmp_path / f"{name}_2.mod", back)
    assert out2.read_text() == out.read_text()
    assert not list((tmp_path / "sub").glob(".*"))  # no temporary file left behind


def test_writer_reproduces_sir_layout(atm_dir, tmp_path):
    src = atm_dir / "hsra11.mod"
    out = write_sir(tmp_path / "h.mod", read_sir(src))
    assert out.read_text().splitlines()[1:] == src.read_text().splitlines()[1:]


def test_tmp_copy_and_folder(atm_dir, tmp_path):
    for name in ("FALC11", "emaltby11"):
        shutil.copy(atm_dir / f"{name}.mod", tmp_path)
    (tmp_path / "broken.mod").write_text("1 1 0\n1.0 5000 1e3\n")
    models, skipped = read_sir_folder(tmp_path)
    assert [m.name for m in models] == ["FALC11", "emaltby11"]
    assert len(skipped) == 1 and skipped[0].path.name == "broken.mod"
    assert "line 2" in skipped[0].reason
    with pytest.raises(FileNotFoundError):
        read_sir_folder(tmp_path / "nope")


def test_eight_column_model(tmp_path):
    p = tmp_path / "eight.mod"
    p.write_text("  0.5  1.0  0.0\n 1.0 6000.0 1.0E+02 0.0 100.0 1.0E+05 45.0 30.0\n 0.0 5000.0 1.0E+01 0.0 50.0 0.0 45.0 30.0\n")
    m = read_sir(p)
    assert not m.has_geometry and np.isnan(m.z).all() and np.isnan(m.Pg).all() and np.isnan(m.rho).all()
    assert m.vlos[0] == 1.0e5 and m.inclination[1] == 45.0
    out = write_sir(tmp_path / "eight_out.mod", m)
    assert len(out.read_text().splitlines()[1].split()) == 8
    np.testing.assert_array_equal(read_sir(out).as_array()[:, :8], m.as_array()[:, :8])


def test_model_path_names_and_aliases(atm_dir):
    root = atm_dir.parents[1]
    assert model_path("FALC11", root).name == "FALC11.mod"
    assert model_path("falc11.mod", root).name == "FALC11.mod"
    assert model_path("umbra", root).name == "emaltby11.mod"
    assert model_path("penumbra", root).name == "penumjti11.mod"
    assert model_path("plage", root).name == "solanpl11.mod"
    with pytest.raises(FileNotFoundError, match="available: .*hsra11"):
        model_path("nosuchmodel", root)


GOOD_ROW = " 1.0 6000.0 1.0E+02 1.0E+05 0.0 0.0 0.0 0.0 0.0 1.0E+05 1.0E-07"
GOOD_ROW2 = " 0.0 5000.0 1.0E+01 1.0E+05 0.0 0.0 0.0 0.0 100.0 1.0E+04 1.0E-08"


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty file"),
        ("   \n\n", "empty file"),
        ("1 1\n" + GOOD_ROW + "\n" + GOOD_ROW2 + "\n", "line 1: header"),
        ("1 1 0\n" + GOOD_ROW + " 7.0\n" + GOOD_ROW2 + "\n", "line 2: expected 8 or 11 columns"),
        ("1 1 0\n" + GOOD_ROW + "\n" + " ".join(GOOD_ROW2.split()[:8]) + "\n", "line 3: 8 columns"),
        ("1 1 0\n" + GOOD_ROW + "\n" + GOOD_ROW2.replace("5000.0", "abc") + "\n", "line 3: non-numeric"),
        ("1 1 0\n" + GOOD_ROW + "\n" + GOOD_ROW2.replace("5000.0", "-5000.0") + "\n", "line 3: T must be > 0"),
        ("1 1 0\n" + GOOD_ROW.replace("1.0E+02", "0.0") + "\n" + GOOD_ROW2 + "\n", "line 2: Pe must be > 0"),
        ("1 1 0\n" + GOOD_ROW + "\n" + GOOD_ROW2.replace("5000.0", "nan") + "\n", "line 3: T is not finite"),
        ("1 1 0\n" + GOOD_ROW2 + "\n" + GOOD_ROW + "\n", "line 3: log_tau must decrease"),
        ("1 1 0\n" + GOOD_ROW + "\n", "at least 2"),
    ],
)
def test_bad_files_raise_naming_file(tmp_path, text, match):
    p = tmp_path / "bad.mod"
    p.write_text(text)
    with pytest.raises(SIRReadError, match=match) as err:
        read_sir(p)
    assert str(p) in str(err.value) and err.value.path == p
    assert isinstance(err.value, FitsReadError) and isinstance(err.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mod"):
        read_sir(tmp_path / "missing.mod")


def test_model_validation_in_constructor():
    base = dict(
        log_tau=[1.0, 0.0], T=[6000.0, 5000.0], Pe=[10.0, 1.0], vmic=[0, 0], B=[0, 0],
        vlos=[0, 0], inclination=[0, 0], azimuth=[0, 0],
    )
    m = SIRModel(**base)
    assert not m.has_geometry and m.fill == 1.0 and m.T.dtype == np.float64
    with pytest.raises(ValueError, match="column T has 3 points"):
        SIRModel(**{**base, "T": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="row 1 .*T must be > 0"):
        SIRModel(**{**base, "T": [6000.0, 0.0]})
    with pytest.raises(ValueError, match="z is not finite"):
        SIRModel(**base, z=[0.0, np.nan], Pg=[1.0, 1.0], rho=[1.0, 1.0])
    with pytest.raises(ValueError, match="log_tau must decrease"):
        SIRModel(**{**base, "log_tau": [0.0, 1.0]})
