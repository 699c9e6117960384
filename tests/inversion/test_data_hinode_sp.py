"""Hinode SP level-1 readers: the real sample cube, synthetic per-slit files, normalisation, resampling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from helioforge.data.hinode import HinodeReadError, hinode_wavelengths
from helioforge.data.hinode_sp import (
    SPMap,
    SPReadError,
    continuum_from_stokes,
    heliocentric_mu,
    read_sp_cube,
    read_sp_level1,
    read_sp_map,
    read_sp_slit,
    undo_bit_shift,
)
from helioforge.inversion.preprocess import normalise_quiet_sun, quiet_sun_mask, to_standard_grid
from helioforge.data.fits import Skipped

SAMPLE = Path("stokes") / "hinode_sp_sample" / "hinode4d.20130912.sample.fits"


@pytest.fixture(scope="module")
def sample_path(data_dir: Path) -> Path:
    p = data_dir / SAMPLE
    if not p.is_file():
        pytest.skip(f"{p} missing")
    return p


# --------------------------------------------------------------------------- real cube


def test_sample_cube_shape_axis_order_and_continuum(sample_path):
    m = read_sp_cube(sample_path)
    assert m.stokes.shape == (4, 112, 5, 5) and m.stokes.dtype == np.float32
    assert m.continuum.shape == (5, 5)
    with fits.open(sample_path) as h:
        raw = np.array(h[0].data)
        wav = np.array(h["WAVELENGTH"].data)
        cont = np.array(h["CONTINUUM_INTENSITY"].data)
    # numpy (x, y, IQUV, λ) -> (IQUV, λ, y, x): element (x=3, y=1) lands at [:, :, 1, 3]
    np.testing.assert_array_equal(m.stokes[:, :, 1, 3], raw[3, 1].astype(np.float32))
    np.testing.assert_array_equal(m.stokes[2, 17, 4, 0], np.float32(raw[0, 4, 2, 17]))
    np.testing.assert_allclose(m.wavelength, wav)
    assert m.wavelength[0] == pytest.approx(6300.8826, abs=1e-4) and m.wavelength[-1] == pytest.approx(6303.2615, abs=1e-4)
    np.testing.assert_array_equal(m.continuum, cont.T)
    # the continuum extension agrees with Stokes I at the continuum point (first wavelength) within 1 %
    # in this axis order, and not when transposed (which proves the order)
    i0 = m.stokes[0, 0]
    assert np.abs(m.continuum / i0 - 1).max() < 0.01
    assert np.abs(m.continuum.T / i0 - 1).max() > 0.05
    # Stokes I has its minima at the two Fe I lines (the axis really is wavelength)
    mean_i = m.stokes[0].mean(axis=(1, 2))
    assert abs(m.wavelength[np.argmin(mean_i[:60])] - 6301.50) < 0.03
    assert abs(m.wavelength[60 + np.argmin(mean_i[60:])] - 6302.49) < 0.03
    assert m.header["source"] == "cube" and m.header["ic_hsra"] == pytest.approx(31207.4)
    assert m.pixels().shape == (25, 4, 112)
    np.testing.assert_array_equal(m.pixels()[1 * 5 + 3], m.stokes[:, :, 1, 3])


def test_sample_normalisation_gives_unit_quiet_sun(sample_path):
    m = read_sp_cube(sample_path)
    n, ic = normalise_quiet_sun(m)
    assert 30000 < ic < 32500
    assert n.header["units"] == "I_c (quiet Sun)" and n.header["normalisation"]["ic_quiet"] == ic
    # quiet-Sun patch: every pixel is quiet, the median continuum is 1
    assert n.quiet_mask.all()
    ic_norm = continuum_from_stokes(n.stokes, n.wavelength)
    assert np.median(ic_norm[n.quiet_mask]) == pytest.approx(1.0, abs=1e-6)
    assert np.median(n.continuum) == pytest.approx(1.0, abs=0.015)  # the file's own continuum agrees
    assert 0.85 < ic_norm.min() and ic_norm.max() < 1.1
    # polarisation is at the noise level of Hinode (≈1e-3 I_c)
    assert 5e-4 < n.header["normalisation"]["noise_sigma"] < 3e-3
    np.testing.assert_allclose(n.stokes * ic, m.stokes, rtol=1e-6)


def test_sample_to_standard_grid_records_shift(sample_path):
    m = read_sp_cube(sample_path)
    s = to_standard_grid(m)
    np.testing.assert_array_equal(s.wavelength, hinode_wavelengths())
    info = s.header["wavelength_resampling"]
    assert info["mean_shift_mA"] == pytest.approx(float(np.mean(hinode_wavelengths() - m.wavelength)) * 1e3)
    assert 5.0 < info["mean_shift_mA"] < 10.0  # the sample's axis is ≈10 mÅ bluer
    assert info["n_extrapolated"] == 1
    # already on the grid: unchanged
    s2 = to_standard_grid(s)
    np.testing.assert_array_equal(s2.stokes, s.stokes)
    assert s2.header["wavelength_resampling"] is None


# --------------------------------------------------------------------------- resampling


def _gauss_map(wav: np.ndarray, centre: float = 6301.5012, width: float = 0.04) -> SPMap:
    prof = 1.0 - 0.6 * np.exp(-(((wav - centre) / width) ** 2))
    stokes = np.zeros((4, wav.size, 2, 3), dtype=np.float32)
    stokes[0] = prof[:, None, None]
    return SPMap(stokes=stokes, wavelength=wav, continuum=np.ones((2, 3), np.float32), header={"files": ["synthetic"]})


def _line_centre(wav, prof, centre=6301.5012, half=0.12):
    sel = np.abs(wav - centre) <= half
    d = 1.0 - prof[sel]
    return float((d * wav[sel]).sum() / d.sum())


def test_resampling_moves_line_by_the_grid_offset():
    std = hinode_wavelengths()
    bluer = std - 0.0095  # a file axis 9.5 mÅ bluer than the standard grid (as the sample)
    m = _gauss_map(bluer)
    s = to_standard_grid(m)
    truth = 1.0 - 0.6 * np.exp(-(((std - 6301.5012) / 0.04) ** 2))
    # the resampled line sits where it should on the standard grid ...
    c_resampled = _line_centre(std, s.stokes[0, :, 0, 0])
    assert abs(c_resampled - _line_centre(std, truth)) < 0.5e-3
    # ... while relabelling the file's samples with the standard wavelengths would put it 9.5 mÅ red
    c_relabelled = _line_centre(std, m.stokes[0, :, 0, 0])
    assert c_relabelled - _line_centre(std, truth) == pytest.approx(9.5e-3, abs=1e-3)
    # linear interpolation error stays below h²/8 max|f''|
    assert np.abs(s.stokes[0, :, 1, 2] - truth).max() < 0.0214**2 / 8 * 0.6 * 2 / 0.04**2 + 1e-6
    assert s.header["wavelength_resampling"]["mean_shift_mA"] == pytest.approx(9.5, abs=1e-6)
    assert s.header["wavelength_resampling"]["mean_shift_kms"] == pytest.approx(9.5e-3 / 6302 * 299792.458, rel=1e-6)


def test_resampling_refuses_a_grid_that_does_not_cover():
    m = _gauss_map(hinode_wavelengths()[:100])
    with pytest.raises(SPReadError, match="does not cover"):
        to_standard_grid(m)


# --------------------------------------------------------------------------- level-1 slit files

NY = 6


def _truth_slit(i: int) -> np.ndarray:
    """Even integer counts (exact under halving): I 36000–62000, Q/U/V ±600."""
    rng = np.random.default_rng(i)
    s = np.empty((4, NY, 112), dtype=np.int64)
    s[0] = 2 * rng.integers(18000, 31000, size=(NY, 112))
    s[1:] = 2 * rng.integers(-300, 300, size=(3, NY, 112))
    return s


def _encode(truth: np.ndarray, shift: int) -> np.ndarray:
    """Inverse of the level-1 reader: bit shift then 16-bit wrap-around of Stokes I."""
    s = truth.copy()
    if shift >= 1:
        s[0] //= 2
    if shift >= 2:
        s[3] //= 2
    if shift >= 3:
        s[1:3] //= 2
    s[0] = np.where(s[0] > 32767, s[0] - 65536, s[0])
    assert s.min() >= -32768 and s.max() <= 32767
    return s.astype(np.int16)


def _write_slit(path: Path, slit: int, shift: int = 0, scaled: bool = False, **cards) -> np.ndarray:
    truth = _truth_slit(slit)
    if scaled:  # BSCALE/BZERO-scaled integers (no wrap-around needed)
        hdu = fits.PrimaryHDU(truth.astype(np.float64))
        hdu.scale("int16", bscale=2.0, bzero=100.0)
        shift = 0
    else:
        hdu = fits.PrimaryHDU(_encode(truth, shift))
    h = hdu.header
    h["SPBSHFT"] = shift
    h["SLITINDX"] = slit
    h["NSLITPOS"] = 8
    h["XCEN"] = 0.15 * slit - 0.3
    h["YCEN"] = 0.0
    h["XSCALE"] = 0.1476
    h["YSCALE"] = 0.1585
    h["DATE_OBS"] = f"2013-09-12T10:{slit:02d}:00.000"
    h["CRVAL1"] = 6302.08
    h["CDELT1"] = 0.021549
    h["CRPIX1"] = 56.5
    for k, v in cards.items():
        h[k] = v
    hdu.writeto(path)
    return truth


def test_undo_bit_shift_round_trip():
    truth = _truth_slit(0)
    for shift in range(4):
        back, n_wrapped = undo_bit_shift(_encode(truth, shift).astype(np.float64), shift)
        np.testing.assert_array_equal(back, truth)
        if shift == 0:
            assert n_wrapped > 0  # I > 32767 had wrapped
    with pytest.raises(ValueError, match="SPBSHFT"):
        undo_bit_shift(truth, 5)


def test_read_one_slit_and_wavelength_axis(tmp_path):
    truth = _write_slit(tmp_path / "s.fits", 3, shift=0)
    s = read_sp_slit(tmp_path / "s.fits")
    np.testing.assert_array_equal(s.stokes, truth)
    assert s.slit_index == 3 and any("wrapped" in n for n in s.notes)
    assert s.wavelength[0] == pytest.approx(6302.08 - 55.5 * 0.021549)
    assert s.wavelength[-1] == pytest.approx(6302.08 + 55.5 * 0.021549)
    s_std = read_sp_slit(tmp_path / "s.fits", wavelength="standard")
    np.testing.assert_array_equal(s_std.wavelength, hinode_wavelengths())


def test_level1_folder_assembled_in_slit_order(tmp_path):
    shifts = {0: 0, 1: 1, 2: 2, 3: 3, 4: 0, 5: 1}
    truths = {}
    # file names deliberately not in slit order
    for name, slit in zip("fbdaec", range(6)):
        truths[slit] = _write_slit(tmp_path / f"SP3D_{name}.fits", slit, shift=shifts[slit], scaled=(slit == 4))
    m, skipped = read_sp_level1(tmp_path)
    assert skipped == []
    assert m.stokes.shape == (4, 112, NY, 6)
    for slit in range(6):
        np.testing.assert_array_equal(m.stokes[:, :, :, slit], truths[slit].transpose(0, 2, 1).astype(np.float32))
    assert m.header["slit_index"] == list(range(6))
    assert m.header["spbshft"] == [0, 1, 2, 3]
    assert m.header["pixel_scale_arcsec"] == {"x": 0.1476, "y": 0.1585}
    assert m.header["date_obs"] == "2013-09-12T10:00:00.000"
    assert m.header["mu"] == pytest.approx(1.0, abs=1e-6)  # XCEN ≈ 0, YCEN = 0: disk centre
    np.testing.assert_allclose(m.continuum, m.stokes[0, :4].mean(axis=0), rtol=1e-6)
    # a glob and a list give the same map; read_sp_map dispatches
    m2, _ = read_sp_level1(str(tmp_path / "SP3D_*.fits"))
    np.testing.assert_array_equal(m2.stokes, m.stokes)
    m3, _ = read_sp_map(tmp_path)
    np.testing.assert_array_equal(m3.stokes, m.stokes)


def test_level1_skips_bad_slits_and_interpolates_gap(tmp_path):
    truths = {i: _write_slit(tmp_path / f"slit{i}.fits", i, shift=1) for i in (0, 1, 3, 4)}
    (tmp_path / "slit2.fits").write_bytes(b"")  # empty file: slit 2 is lost
    bad = fits.PrimaryHDU(np.zeros((3, NY, 112), np.int16))  # wrong number of Stokes parameters
    bad.header["SLITINDX"] = 5
    bad.writeto(tmp_path / "slit5.fits")
    _write_slit(tmp_path / "slit1_again.fits", 1, shift=1)  # duplicate slit index
    m, skipped = read_sp_level1(tmp_path)
    reasons = {s.path.name: s.reason for s in skipped}
    assert all(isinstance(s, Skipped) for s in skipped)
    assert "empty" in reasons["slit2.fits"]
    assert "4 Stokes" in reasons["slit5.fits"]
    assert "duplicate SLITINDX 1" in reasons["slit1_again.fits"]
    assert "slit position 2 missing" in reasons["SLITINDX=2"]
    assert m.stokes.shape[-1] == 5 and m.header["interpolated_slits"] == [2]
    np.testing.assert_array_equal(m.stokes[..., 3], truths[3].transpose(0, 2, 1).astype(np.float32))
    np.testing.assert_allclose(m.stokes[..., 2], 0.5 * (m.stokes[..., 1] + m.stokes[..., 3]), rtol=1e-6)
    m_nan, _ = read_sp_level1(tmp_path, gaps="nan")
    assert np.isnan(m_nan.stokes[..., 2]).all()
    m_drop, _ = read_sp_level1(tmp_path, gaps="drop")
    assert m_drop.header["slit_index"] == [0, 1, 3, 4]


def test_level1_mu_off_centre(tmp_path):
    _write_slit(tmp_path / "a.fits", 0, XCEN=600.0, YCEN=300.0)
    m, _ = read_sp_level1(tmp_path)
    from astropy.time import Time
    from sunpy.coordinates import sun

    r = sun.angular_radius(Time("2013-09-12T10:00:00")).to_value("arcsec")
    assert m.header["mu"] == pytest.approx(math.sqrt(1 - (600.0**2 + 300.0**2) / r**2), rel=1e-6)
    assert heliocentric_mu(2000.0, 0.0, "2013-09-12T10:00:00") is None  # off the disk


# --------------------------------------------------------------------------- errors


def _write_cube(path: Path, data: np.ndarray, wav: np.ndarray | None = None) -> Path:
    hdus = [fits.PrimaryHDU(data)]
    if wav is not None:
        hdus.append(fits.ImageHDU(wav, name="WAVELENGTH"))
    fits.HDUList(hdus).writeto(path)
    return path


def test_cube_errors_name_file_and_problem(tmp_path):
    with pytest.raises(SPReadError, match=r"expected 4 Stokes parameters .* got 3") as e:
        read_sp_cube(_write_cube(tmp_path / "stokes3.fits", np.ones((2, 2, 3, 112))))
    assert isinstance(e.value, HinodeReadError) and e.value.path.name == "stokes3.fits"
    with pytest.raises(SPReadError, match=r"expected 112 wavelengths .* got 100") as e:
        read_sp_cube(_write_cube(tmp_path / "wav100.fits", np.ones((2, 2, 4, 100))))
    assert "wav100.fits" in str(e.value)
    # 100 wavelengths with an axis is fine (resample later)
    m = read_sp_cube(_write_cube(tmp_path / "wav100ok.fits", np.ones((2, 2, 4, 100)),
                                 np.linspace(6300.9, 6303.2, 100)))
    assert m.n_wavelengths == 100
    with pytest.raises(SPReadError, match="4-D"):
        read_sp_cube(_write_cube(tmp_path / "dim3.fits", np.ones((2, 4, 112))))
    with pytest.raises(SPReadError, match="has 50 wavelengths"):
        read_sp_cube(_write_cube(tmp_path / "wavlen.fits", np.ones((2, 2, 4, 112)), np.linspace(6300, 6303, 50)))
    with pytest.raises(SPReadError, match="all NaN"):
        read_sp_cube(_write_cube(tmp_path / "nan.fits", np.full((2, 2, 4, 112), np.nan)))
    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.raises(SPReadError, match="empty"):
        read_sp_cube(tmp_path / "empty.fits")
    with pytest.raises(FileNotFoundError):
        read_sp_cube(tmp_path / "absent.fits")


def test_slit_errors(tmp_path):
    p = tmp_path / "w90.fits"
    fits.PrimaryHDU(np.zeros((4, NY, 90), np.int16)).writeto(p)
    with pytest.raises(SPReadError, match="expected 112 wavelengths or CRVAL1"):
        read_sp_slit(p)
    p2 = tmp_path / "d4.fits"
    fits.PrimaryHDU(np.zeros((1, 4, NY, 112), np.int16)).writeto(p2)
    with pytest.raises(SPReadError, match="3-D slit"):
        read_sp_slit(p2)
    with pytest.raises(SPReadError, match="no readable slit file"):
        read_sp_level1([p, p2])
    with pytest.raises(SPReadError, match="no slit FITS files"):
        read_sp_level1(tmp_path / "nothing_*.fits")


# --------------------------------------------------------------------------- quiet-Sun mask


def test_quiet_sun_mask_excludes_a_spot():
    rng = np.random.default_rng(1)
    ny, nx = 8, 10
    wav = hinode_wavelengths()
    prof = 1.0 - 0.5 * np.exp(-(((wav - 6301.5) / 0.05) ** 2))
    ic_map = 20000.0 * (1 + 0.05 * rng.standard_normal((ny, nx)))
    stokes = np.zeros((4, 112, ny, nx), np.float32)
    stokes[0] = prof[:, None, None] * ic_map
    stokes[1:] = 1e-3 * 20000.0 * rng.standard_normal((3, 112, ny, nx))
    # a dark, strongly polarised spot (umbra-like) and a bright polarised network pixel
    stokes[0, :, 2:4, 2:4] *= 0.3
    stokes[3, :, 2:4, 2:4] += 0.1 * 6000.0 * np.sin(np.linspace(0, 6, 112))[:, None, None]
    stokes[3, :, 6, 7] += 0.05 * 20000.0
    m = SPMap(stokes=stokes, wavelength=wav, continuum=np.ones((ny, nx), np.float32), header={})
    mask, info = quiet_sun_mask(m)
    assert not mask[2:4, 2:4].any() and not mask[6, 7]
    assert mask.sum() == ny * nx - 5 and info["fallback"] is None
    n, ic = normalise_quiet_sun(m)
    assert ic == pytest.approx(np.median(continuum_from_stokes(stokes, wav)[mask]))
    assert ic == pytest.approx(20000.0, rel=0.03)
    with pytest.raises(ValueError, match="shape"):
        normalise_quiet_sun(m, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="no pixel"):
        normalise_quiet_sun(m, mask=np.zeros((ny, nx), bool))
