"""Hinode SP instrument files: wavelength grid, spectral profile, spatial PSF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from helioforge.data.hinode import (
    HinodeReadError,
    available_psf_scales,
    hinode_wavelengths,
    psf_for_pixel,
    read_instrument_profile,
    read_psf,
)
from helioforge.data.fits import FitsReadError


@pytest.fixture(scope="module")
def stokes_dir(data_dir: Path) -> Path:
    path = data_dir / "stokes"
    if not (path / "instrument").is_dir():
        pytest.skip(f"{path}/instrument missing")
    return path


def test_wavelength_grid(stokes_dir):
    wav = hinode_wavelengths(stokes_dir / "instrument" / "wavelength_Hinode.txt")
    assert wav.shape == (112,) and wav.dtype == np.float64
    assert wav[0] == pytest.approx(6300.89, abs=0.01) and wav[-1] == pytest.approx(6303.26, abs=0.01)
    step = np.diff(wav)
    assert np.all(step > 0) and step.min() > 0.0205 and step.max() < 0.0216
    # both Fe I lines inside the grid
    assert wav[0] < 6301.5012 < wav[-1] and wav[0] < 6302.4936 < wav[-1]


def test_default_paths_match(stokes_dir, monkeypatch):
    monkeypatch.setenv("HELIOFORGE_DATA", str(stokes_dir.parent))
    np.testing.assert_array_equal(hinode_wavelengths(), hinode_wavelengths(stokes_dir / "instrument" / "wavelength_Hinode.txt"))
    assert read_psf().shape == (41, 41)
    assert set(available_psf_scales()) >= {0.08, 0.11, 0.16}


def test_instrument_profile_unit_area_and_psf_file_agree(stokes_dir):
    dl, tr = read_instrument_profile(stokes_dir / "hinode_sp_sample" / "hinode_instr_prof.dat")
    assert dl.shape == tr.shape == (105,)
    assert np.trapezoid(tr, dl) == pytest.approx(1.0, rel=1e-12)
    assert dl[0] == pytest.approx(-0.0699725) and dl[-1] == pytest.approx(0.0699725)
    assert abs(dl[np.argmax(tr)]) < 1e-12  # peak at Δλ = 0
    half = dl[tr >= tr.max() / 2]
    assert 0.020 < half[-1] - half[0] < 0.030  # FWHM ≈ 24 mÅ
    # the .psf file (mÅ) is the same table, 4x coarser
    dl2, tr2 = read_instrument_profile(stokes_dir / "instrument" / "HINODE_SP_ins_prof.psf", normalise=False)
    raw_dl, raw_tr = read_instrument_profile(stokes_dir / "hinode_sp_sample" / "hinode_instr_prof.dat", normalise=False)
    idx = np.searchsorted(raw_dl, dl2 - 1e-9)
    np.testing.assert_allclose(raw_dl[idx], dl2, atol=1e-12)
    np.testing.assert_allclose(raw_tr[idx], tr2, atol=1e-12)


@pytest.mark.parametrize("scale, shape", [(0.16, (41, 41)), (0.11, (61, 61)), (0.08, (81, 81))])
def test_psf_files_unit_sum_centred(stokes_dir, scale, shape):
    psf = read_psf(stokes_dir / "instrument" / f"hinode_psf_{scale:.2f}.fits")
    assert psf.shape == shape and psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.unravel_index(np.argmax(psf), psf.shape) == (shape[0] // 2, shape[1] // 2)
    assert psf.min() >= 0


def test_psf_for_pixel(stokes_dir):
    root = stokes_dir.parent
    np.testing.assert_array_equal(psf_for_pixel(0.16, root), read_psf(stokes_dir / "instrument" / "hinode_psf_0.16.fits"))
    p = psf_for_pixel(0.066, root)  # MHD-like pixel, resampled from the 0.08" file
    assert p.shape[0] % 2 == 1 and p.shape[0] == p.shape[1]
    assert p.sum() == pytest.approx(1.0) and np.argmax(p) == p.size // 2
    # same angular extent as the 0.08" file: 40 * 0.08 / 0.066 -> 48 pixels each side
    assert p.shape == (97, 97)
    with pytest.raises(ValueError):
        psf_for_pixel(0.0, root)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        hinode_wavelengths(tmp_path / "nope.txt")
    bad = tmp_path / "w.txt"
    bad.write_text("6300.0\n6299.0\n")
    with pytest.raises(HinodeReadError, match="expected 112"):
        hinode_wavelengths(bad)
    with pytest.raises(HinodeReadError, match="strictly increasing") as err:
        hinode_wavelengths(bad, expected_n=None)
    assert str(bad) in str(err.value) and isinstance(err.value, FitsReadError)
    bad.write_text("6300.0\nabc\n")
    with pytest.raises(HinodeReadError, match="not a numeric table"):
        hinode_wavelengths(bad, expected_n=None)
    prof = tmp_path / "p.dat"
    prof.write_text("-0.1 0.0\n0.0 -1.0\n0.1 0.0\n")
    with pytest.raises(HinodeReadError, match="negative transmission"):
        read_instrument_profile(prof)
    prof.write_text("-0.1 0.0 1\n0.0 1.0 1\n0.1 0.0 1\n")
    with pytest.raises(HinodeReadError, match="expected 2 column"):
        read_instrument_profile(prof)
    even = tmp_path / "even.fits"
    fits.PrimaryHDU(np.ones((4, 4))).writeto(even)
    with pytest.raises(HinodeReadError, match="odd"):
        read_psf(even)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file at all" * 10)
    with pytest.raises(HinodeReadError, match="junk.fits"):
        read_psf(junk)
    with pytest.raises(FileNotFoundError, match="available"):
        read_psf(pixel_arcsec=0.5)
