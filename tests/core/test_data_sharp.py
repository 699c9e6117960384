"""SHARP reader on the real sample files (sharp/ and sharp_bad/)."""

from __future__ import annotations

import logging
import math
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits

from helioforge.data.fits import FitsReadError, Skipped
from helioforge.data.sharp import SharpPatch, SharpReadError, harp_region_mask, read_sharp, read_sharp_folder

P1447 = "hmi.sharp_cea_720s.1447.20120306_142400_TAI.Br.fits"
P377 = "hmi.sharp_cea_720s.377.20110215_020000_TAI.Br.fits"


@pytest.fixture(scope="module")
def bad_dir(data_dir):
    path = data_dir / "sharp_bad"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


def test_read_real_patch(sharp_dir):
    p = read_sharp(sharp_dir / P1447)
    assert isinstance(p, SharpPatch)
    assert p.harpnum == 1447 and p.noaa_ar == 11428
    assert p.t_rec == "2012.03.06_14:24:00_TAI"
    assert p.cdelt1_deg == pytest.approx(0.03)
    assert p.usflux == pytest.approx(1.263485e22)
    assert p.r_value == pytest.approx(3.945)
    assert p.Br.dtype == np.float64 and p.Br.shape == (375, 553)
    assert p.header["HARPNUM"] == 1447
    assert p.bitmap is not None and p.bitmap.shape == p.Br.shape
    assert p.magnetogram is not None and p.magnetogram.shape == p.Br.shape
    assert p.warnings == []
    # 0.03 deg on a 696 Mm sun
    assert p.pixel_size_mm == pytest.approx(0.03 * math.pi / 180 * 696.0, rel=1e-9)
    assert p.pixel_size_mm == pytest.approx(0.364, abs=1e-3)
    assert p.pixel_area_cm2 == pytest.approx((p.pixel_size_mm * 1e8) ** 2)
    # plausible field: strong-field AR, |B| in the kG range, no NaN in this patch
    assert np.isfinite(p.Br).all() and 1000 < np.abs(p.Br).max() < 6000


def test_without_companions_and_noaa_zero(sharp_dir):
    p = read_sharp(sharp_dir / P1447, with_companions=False)
    assert p.bitmap is None and p.magnetogram is None
    q = read_sharp(sharp_dir / "hmi.sharp_cea_720s.1441.20120306_142400_TAI.Br.fits")
    assert q.noaa_ar is None  # NOAA_AR = 0 in the header: no NOAA region
    r = read_sharp(sharp_dir / "hmi.sharp_cea_720s.1422.20120306_142400_TAI.Br.fits")
    assert np.isnan(r.Br).any()  # NaN kept (off-disk part of this patch)


def test_folder_reads_all_39(sharp_dir):
    patches, skipped = read_sharp_folder(sharp_dir)
    assert len(patches) == 39 and skipped == []
    names = [p.path.name for p in patches]
    assert names == sorted(names)
    assert {p.harpnum for p in patches} >= {377, 1447, 2007, 2491, 6060, 7115}


def test_harp377_fixed_header(sharp_dir, caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fix must be silent at the warnings level
        with caplog.at_level(logging.WARNING, logger="helioforge.data.sharp"):
            p = read_sharp(sharp_dir / P377)
    assert p.harpnum == 377 and p.noaa_ar == 11158
    assert p.r_value is None
    assert p.usflux == pytest.approx(2.71476e22, rel=1e-6)
    assert len(p.warnings) == 1
    msg = p.warnings[0]
    assert P377 in msg and "R_VALUE" in msg and "unavailable" in msg
    assert any("R_VALUE" in r.getMessage() and P377 in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "name, problem",
    [
        ("hmi.sharp_cea_720s.1446.20120306_142400_TAI.Br.fits", "empty or corrupt"),
        ("hmi.sharp_cea_720s.1447.20120307_022400_TAI.Br.fits", "truncated"),
        ("hmi.sharp_cea_720s.1449.20120307_142400_TAI.Br.fits", "truncated"),
    ],
)
def test_bad_files_raise(bad_dir, name, problem):
    with pytest.raises(SharpReadError) as info:
        read_sharp(bad_dir / name)
    err = info.value
    assert isinstance(err, FitsReadError) and isinstance(err, ValueError)
    assert err.path.name == name
    assert problem in err.problem
    assert str(err) == f"{err.path}: {err.problem}"
    assert name in str(err)


def test_bad_folder_skips_all(bad_dir):
    patches, skipped = read_sharp_folder(bad_dir)
    assert patches == []
    assert len(skipped) == 3 and all(isinstance(s, Skipped) for s in skipped)
    assert sum("truncated" in s.reason for s in skipped) == 2
    assert sum("empty" in s.reason for s in skipped) == 1


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_sharp_folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nofile"):
        read_sharp(tmp_path / "nofile.Br.fits")


def test_missing_keywords_and_no_image(tmp_path):
    f = tmp_path / "hmi.sharp_cea_720s.1.20120101_000000_TAI.Br.fits"
    hdr = fits.Header({"HARPNUM": 1, "CDELT1": 0.03})
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((8, 8)), header=hdr)]).writeto(f)
    with pytest.raises(SharpReadError, match="T_REC"):
        read_sharp(f)
    g = tmp_path / "hmi.sharp_cea_720s.2.20120101_000000_TAI.Br.fits"
    fits.PrimaryHDU().writeto(g)
    with pytest.raises(SharpReadError, match="no image data"):
        read_sharp(g)
    h = tmp_path / "junk.Br.fits"
    h.write_bytes(b"this is not a FITS file at all" * 100)
    with pytest.raises(SharpReadError, match="junk.Br.fits"):
        read_sharp(h)


def test_bad_companion_is_a_warning(sharp_dir, bad_dir, tmp_path):
    """A copy of a good Br file next to a broken bitmap: Br loads, bitmap is reported."""
    shutil.copy(sharp_dir / P1447, tmp_path / P1447)
    (tmp_path / P1447.replace(".Br.", ".bitmap.")).write_bytes(b"")
    p = read_sharp(tmp_path / P1447)
    assert p.bitmap is None and p.magnetogram is None
    assert any("bitmap" in w and "empty" in w for w in p.warnings)


def test_harp_region_mask_prefers_bitmaps(sharp_dir):
    own = read_sharp(sharp_dir / "hmi.sharp_cea_720s.1447.20120307_082400_TAI.Br.fits")
    mask, source = harp_region_mask(own)
    assert source == "bitmap" and mask.shape == own.Br.shape
    np.testing.assert_array_equal(mask, own.bitmap >= 33)
    # 1455 at 08:24 has no bitmap of its own: the nearest one of the same HARP (02:24 or 14:24) is used
    near = read_sharp(sharp_dir / "hmi.sharp_cea_720s.1455.20120307_082400_TAI.Br.fits")
    assert near.bitmap is None
    mask, source = harp_region_mask(near)
    assert source in ("bitmap of 20120307_022400", "bitmap of 20120307_142400")
    # HARP 6060 has no bitmap at all: strong-field pixels
    none = read_sharp(sharp_dir / "hmi.sharp_cea_720s.6060.20151030_000000_TAI.Br.fits")
    mask, source = harp_region_mask(none)
    assert source.startswith("strong field")
    np.testing.assert_array_equal(mask, np.abs(np.nan_to_num(none.Br)) > 150)
