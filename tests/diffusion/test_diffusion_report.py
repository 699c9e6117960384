"""Report plumbing of the diffusion job and the ecosystem at its edges: sunpy maps in, world
coordinates out."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pytest
import sunpy.map
from astropy.io import fits

from helioforge.data.aia import AIAImage, full_disk_wcs, read_aia, read_aia_fits
from helioforge.data.aia_preprocess import preprocess_aia
from helioforge.diffusion.config import DiffusionTrainConfig, UNetConfig
from helioforge.diffusion.infer import sample_to_files
from helioforge.diffusion.report import plot_class_histogram
from helioforge.diffusion.train import train_diffusion

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_class_histogram(tmp_path):
    path = plot_class_histogram({"A": 3, "B": 10, "C": 4, "M": 1, "X": 0, "unlabelled": 2}, tmp_path / "fig" / "classes.png")
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in path.parent.iterdir()] == ["classes.png"]  # no temporary left


def _open_map(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sunpy: no observer/time metadata for a generated image
        return sunpy.map.Map(path)


@pytest.mark.parametrize("size", [32, 64])
def test_full_disk_wcs_opens_in_sunpy(tmp_path, size):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, size, size), np.float32), full_disk_wcs(size, wavelength=193)).writeto(path)
    m = _open_map(path)
    scale = 0.6 * 4096 / size
    assert u.allclose(m.scale.axis1, scale * u.arcsec / u.pix) and u.allclose(m.scale.axis2, scale * u.arcsec / u.pix)
    centre = m.pixel_to_world((size - 1) / 2 * u.pix, (size - 1) / 2 * u.pix)
    assert abs(centre.Tx.to_value(u.arcsec)) < 1e-6 and abs(centre.Ty.to_value(u.arcsec)) < 1e-6
    corner = m.pixel_to_world(0 * u.pix, 0 * u.pix)  # south-east corner: negative Tx, Ty
    assert corner.Tx.to_value(u.arcsec) < -0.4 * 4096 * 0.6 and corner.Ty.to_value(u.arcsec) < -0.4 * 4096 * 0.6


def test_sampled_fits_carries_the_full_disk_wcs(tmp_path, one_torch_thread):
    """Generated images written by :func:`sample_to_files` open in sunpy with helioprojective axes."""
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 1, 16, 16)).astype(np.float32)
    unet = UNetConfig(block_out_channels=(8, 16), attention=(False, False), layers_per_block=1, norm_num_groups=4)
    train = DiffusionTrainConfig(epochs=1, batch_size=8, num_train_timesteps=20)
    stem = train_diffusion(images, np.array([0, 1] * 4), unet, train, tmp_path / "model",
                           extra_config={"class_counts": {"A": 4, "B": 4}, "data": {"wavelength": 193}},
                           accelerator="cpu", progress=False)
    fits_path, png = sample_to_files(stem, tmp_path / "out" / "b", flare_class="B", n=2, sampler="ddim", steps=2,
                                     progress=False)
    assert png.read_bytes()[:8] == PNG
    with fits.open(fits_path) as h:
        assert h[0].data.shape == (2, 16, 16)
        assert h[0].header["CTYPE1"] == "HPLN-TAN" and h[0].header["CDELT1"] == pytest.approx(0.6 * 4096 / 16)
    m = _open_map(fits_path)
    assert m.coordinate_frame.name == "helioprojective"
    assert u.allclose(m.scale.axis1, 153.6 * u.arcsec / u.pix)
    assert m.wavelength == 193 * u.AA


def _aia_fits(path, data, bunit="DN/s", exptime=None):
    h = full_disk_wcs(data.shape[0], wavelength=171)
    h["DATE-OBS"], h["BUNIT"] = "2014-01-04T19:02:00", bunit
    if exptime is not None:
        h["EXPTIME"] = exptime
    fits.PrimaryHDU(data, h).writeto(path)
    return path


@pytest.mark.parametrize("bunit, exptime", [("DN/s", None), ("DN", 2.0)])
def test_reader_accepts_a_sunpy_map(tmp_path, bunit, exptime):
    """The AIA entry point takes a FITS path or a ``sunpy.map.Map`` and gives the same image."""
    rng = np.random.default_rng(1)
    data = rng.uniform(10, 1000, (64, 64)).astype(np.float32)
    path = _aia_fits(tmp_path / "aia.fits", data, bunit, exptime)
    from_file = read_aia_fits(path)
    from_map = read_aia(_open_map(path))
    assert isinstance(from_map, AIAImage)
    assert (from_map.wavelength, from_map.time, from_map.units) == (from_file.wavelength, from_file.time, "DN/s")
    np.testing.assert_array_equal(from_map.data, from_file.data)
    assert from_map.header.get("EXPOSURE_NORMALISED", False) == (exptime is not None)
    np.testing.assert_array_equal(preprocess_aia(_open_map(path), 32), preprocess_aia(from_file, 32))
    np.testing.assert_array_equal(preprocess_aia(path, 32), preprocess_aia(from_file, 32))
