"""Issue 13, must-deliver 4: bad pixels of a Hinode SP map (non-finite, negative counts,
saturated level-1 Stokes I) are found, named with the file, and set to NaN; the other pixels
stay (helioforge.data.hinode_sp.flag_bad_pixels)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from helioforge.data.hinode_sp import SATURATION_COUNTS, SPReadError, flag_bad_pixels, read_sp_map

SLIT = "stokes/hinode_sp_level1_slit/SP4D20070227_002010.0C.fits"


def test_saturated_level1_pixel_is_flagged(data_dir, tmp_path):
    """Raw I = −1 in a per-slit file is 65535 after the wrap-around, 131070 after SPBSHFT = 1:
    the 16-bit ceiling, a saturated pixel."""
    with fits.open(data_dir / SLIT) as hdul:
        header = hdul[0].header.copy()
        data = np.array(hdul[0].data[:, :40])
    assert header["SPBSHFT"] == 1
    data[0, 7, 30] = -1  # Stokes I of pixel y = 7 at one wavelength
    path = tmp_path / "saturated.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    sp, _ = read_sp_map(path)
    assert sp.stokes[0, 30, 7, 0] == 2 * SATURATION_COUNTS
    out, bad, counts = flag_bad_pixels(sp)
    assert counts == {"nonfinite": 0, "negative": 0, "saturated": 1}
    assert bad[7, 0] and bad.sum() == 1
    assert np.isnan(out.stokes[:, :, 7, 0]).all() and np.isfinite(np.delete(out.stokes, 7, axis=2)).all()
    assert out.header["bad_pixels"]["saturation_counts"] == 2 * SATURATION_COUNTS
    # the untouched real slit has none
    _, bad0, counts0 = flag_bad_pixels(read_sp_map(data_dir / SLIT)[0])
    assert not bad0.any() and counts0["saturated"] == 0


def test_nan_and_negative_counts_in_a_cube(data_dir, tmp_path):
    sample = data_dir / "stokes" / "hinode_sp_sample" / "hinode4d.20130912.sample.fits"
    path = tmp_path / "bad.fits"
    with fits.open(sample, memmap=False) as hdul:
        hdul[0].data[1, 2, :, 10] = np.nan  # (x, y, IQUV, λ): pixel x = 1, y = 2
        hdul[0].data[3, 0, 0, :] = -5.0  # negative Stokes I at x = 3, y = 0
        hdul.writeto(path)
    sp = read_sp_map(path)[0]
    out, bad, counts = flag_bad_pixels(sp)
    assert counts == {"nonfinite": 1, "negative": 1, "saturated": 0}
    assert bad[2, 1] and bad[0, 3] and bad.sum() == 2
    assert np.isnan(out.stokes[..., 0, 3]).all() and np.isfinite(out.stokes[..., ~bad]).all()
    # all pixels bad: refused, naming the file
    sp.stokes[0] = -1.0
    with pytest.raises(SPReadError, match="bad.fits: no valid pixel"):
        flag_bad_pixels(sp)
