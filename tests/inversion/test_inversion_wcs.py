"""World coordinates of the SICON output cube (issue 14, must-deliver 6): helioprojective axes
from the SP map's pointing (XCEN, YCEN), its scan step and pixel along the slit (after the
pixel-scale check) and its date, so that ``sunpy.map.Map`` opens a surface of the cube with
correct axes. Checked on the real sample patch (which has no pointing cards: a copy with them
added gives the pointed case)."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
import sunpy.map
from astropy.io import fits

from helioforge.inversion.atmos_cube import AtmosCube, read_atmos_cube, write_atmos_cube
from helioforge.inversion.infer import load_map, sp_wcs
from helioforge.inversion.preprocess import match_pixel_scale

SAMPLE = "stokes/hinode_sp_sample/hinode4d.20130912.sample.fits"


def _cube_file(sp_map, tmp_path, pixel=(0.16, 0.16)):
    ny, nx = sp_map.stokes.shape[-2:]
    data = np.arange(7 * 7 * ny * nx, dtype=np.float64).reshape(7, 7, ny, nx)
    cube = AtmosCube(data=data, bxyz=data[:3], branch=0, wcs=sp_wcs(sp_map, pixel))
    return write_atmos_cube(tmp_path / "atmos.fits", cube, mask=np.zeros((ny, nx), bool)), cube


def test_pointed_map_gives_helioprojective_axes(data_dir, tmp_path):
    src = tmp_path / "pointed.fits"
    with fits.open(data_dir / SAMPLE) as hdul:  # the sample patch, with the cards of an SP level-1 map
        h = hdul[0].header
        h["XCEN"], h["YCEN"], h["DATE_OBS"] = -120.0, 250.0, "2013-09-12T10:00:00.000"
        h["XSCALE"], h["YSCALE"] = 0.1476, 0.16  # the usual SP scan step, resampled to the trained 0.16″
        hdul.writeto(src)
    sp = load_map(src)[0]
    sp, pix = match_pixel_scale(sp, 0.16)
    path, cube = _cube_file(sp, tmp_path)
    with fits.open(path) as hdul:
        for ext in ("PRIMARY", "BXYZ", "MASK"):
            assert hdul[ext].header["CTYPE1"] == "HPLN-TAN" and hdul[ext].header["CTYPE2"] == "HPLT-TAN"
        m = sunpy.map.Map(hdul[0].data[0, 2], hdul[0].header)  # T at log τ = −1
    assert m.data.shape == sp.stokes.shape[-2:]
    assert u.allclose(u.Quantity(m.scale), [0.16, 0.16] * u.arcsec / u.pix)
    assert m.date.isot.startswith("2013-09-12T10:00:00")
    centre = m.pixel_to_world(*(((n - 1) / 2) * u.pix for n in (m.data.shape[1], m.data.shape[0])))
    assert centre.Tx.to_value(u.arcsec) == pytest.approx(-120.0) and centre.Ty.to_value(u.arcsec) == pytest.approx(250.0)
    corner = m.pixel_to_world(0 * u.pix, 0 * u.pix)  # x = scan direction (solar E–W), y = along the slit
    assert corner.Tx.to_value(u.arcsec) == pytest.approx(-120.0 - 0.16 * (m.data.shape[1] - 1) / 2)
    assert corner.Ty.to_value(u.arcsec) == pytest.approx(250.0 - 0.16 * (m.data.shape[0] - 1) / 2)
    assert m.observer_coordinate.lat.to_value(u.deg) == pytest.approx(7.235, abs=0.01)  # B0 on 2013-09-12
    # the cube read back keeps its coordinates, and gives a map of one surface by name
    back = read_atmos_cube(path)
    assert back.wcs["CRVAL1"] == -120.0 and back.wcs["CDELT1"] == 0.16
    tm = back.to_map("T", -1.0)
    assert np.array_equal(tm.data, cube.data[0, 2]) and tm.reference_coordinate.Tx.to_value(u.arcsec) == -120.0


def test_sample_without_pointing_is_placed_at_disk_centre(data_dir, tmp_path):
    """The sample cube has no XCEN/YCEN/DATE cards: disk centre (SICON's μ = 1), the assumed pixel."""
    sp = load_map(data_dir / SAMPLE)[0]
    sp, pix = match_pixel_scale(sp, 0.16)
    assert pix["source"] == "assumed"
    path, _ = _cube_file(sp, tmp_path)
    with fits.open(path) as hdul:
        h = hdul[0].header
        assert (h["CTYPE1"], h["CRVAL1"], h["CRVAL2"], h["CDELT1"], h["CDELT2"]) == ("HPLN-TAN", 0.0, 0.0, 0.16, 0.16)
        assert "DATE-OBS" not in h
        assert (h["CRPIX1"], h["CRPIX2"]) == (3.0, 3.0)  # the centre of the 5 × 5 patch
