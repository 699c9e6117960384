"""Full-disk tiling and preprocessing on analytic arrays and the real HMI magnetograms."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from helioforge.data.fulldisk import FullDiskTile, read_fulldisk, tiles_from_fulldisk
from helioforge.data.preprocess import preprocess_br, preprocess_stack
from helioforge.data.fits import FitsReadError


# ---------------------------------------------------------------- preprocess (analytic)


def test_preprocess_nan_clip_range_shape():
    a = np.zeros((40, 60))
    a[:, :20] = 5000.0  # clipped to +1
    a[:, 20:40] = np.nan  # -> 0
    a[:, 40:] = -250.0  # -> -0.25
    out = preprocess_br(a, 40)
    assert out.shape == (40, 40) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= -1 and out.max() <= 1
    assert out[20, 2] == pytest.approx(1.0)
    assert out[20, 20] == pytest.approx(0.0, abs=1e-6)
    assert out[20, 37] == pytest.approx(-0.25, abs=1e-6)
    # unchanged size: exact scaling, no smoothing
    same = preprocess_br(a[:, :40], 40)
    assert same[0, 0] == 1.0 and same[0, 30] == 0.0


def test_preprocess_constant_stays_constant():
    for shape, size in [((300, 500), 64), ((17, 23), 128)]:
        out = preprocess_br(np.full(shape, 300.0), size, clip_gauss=1000.0)
        assert out.shape == (size, size)
        np.testing.assert_allclose(out, 0.3, atol=1e-6)


def test_preprocess_errors_and_stack():
    with pytest.raises(ValueError, match="2-D"):
        preprocess_br(np.zeros((4, 4, 4)), 32)
    with pytest.raises(ValueError, match="at least 8"):
        preprocess_br(np.zeros((32, 32)), 4)
    with pytest.raises(ValueError, match="clip_gauss"):
        preprocess_br(np.zeros((32, 32)), 32, clip_gauss=0)
    st = preprocess_stack([np.zeros((10, 20)), np.full((30, 30), -2000.0)], 16)
    assert st.shape == (2, 1, 16, 16) and st.dtype == np.float32
    assert st[1].min() == -1.0
    with pytest.raises(ValueError, match="array 1"):
        preprocess_stack([np.zeros((10, 10)), np.zeros(5)], 16)


# ---------------------------------------------------------------- full disk (synthetic file)


def _synthetic_disk(path, n=512, crota=180.0):
    """A small disk: B_los = 100 G everywhere on disk, NaN off disk, known geometry."""
    yy, xx = np.indices((n, n))
    c = (n - 1) / 2
    r_px = 200.0
    data = np.where(np.hypot(xx - c, yy - c) <= r_px, 100.0, np.nan)
    data[int(c) + 50, int(c)] = 999.0  # marker to check orientation
    hdr = fits.Header()
    hdr.update(CRPIX1=c + 1, CRPIX2=c + 1, CDELT1=0.5, CDELT2=0.5, RSUN_OBS=r_px * 0.5,
               DSUN_OBS=1.496e11, CROTA2=crota, T_REC="2020.01.01_00:00:00_TAI")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=hdr)]).writeto(path)  # lossless
    return data


def test_synthetic_tiles_geometry(tmp_path):
    f = tmp_path / "disk.fits"
    data = _synthetic_disk(f)
    tiles = tiles_from_fulldisk(f, tile_px=64, stride_px=32, max_angle_deg=60, radial_correction=False)
    assert tiles
    for t in tiles:
        x0, x1, y0, y1 = t.crop
        raw = data[y0:y1, x0:x1]
        assert np.isfinite(raw).all() and t.angle_deg <= 60
        np.testing.assert_array_equal(t.Br, raw[::-1, ::-1])  # CROTA2=180: rotated by 180°
    corr = tiles_from_fulldisk(f, tile_px=64, stride_px=32, max_angle_deg=60, radial_correction=True)
    assert len(corr) == len(tiles)
    for t in corr:
        assert (t.Br >= 100.0 - 1e-9).all()  # dividing by mu ≤ 1 only raises |B|
        assert 0.5 - 1e-9 <= t.mu <= 1.0
    upright = tiles_from_fulldisk(_write(tmp_path / "up.fits", crota=0.0), tile_px=64, stride_px=32,
                                  radial_correction=False)
    x0, x1, y0, y1 = upright[0].crop
    np.testing.assert_array_equal(upright[0].Br, data[y0:y1, x0:x1])


def _write(path, crota):
    _synthetic_disk(path, crota=crota)
    return path


def test_fulldisk_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_fulldisk(tmp_path / "none.fits")
    f = tmp_path / "nohdr.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((64, 64)))]).writeto(f)
    with pytest.raises(FitsReadError, match="nohdr.fits.*CRPIX1"):
        read_fulldisk(f)
    g = tmp_path / "g.fits"
    _synthetic_disk(g)
    with pytest.raises(ValueError, match="max_angle"):
        tiles_from_fulldisk(g, max_angle_deg=0)
    with pytest.raises(ValueError, match="larger than the image"):
        tiles_from_fulldisk(g, tile_px=1024)


# ---------------------------------------------------------------- full disk (real files)


@pytest.fixture(scope="module")
def fulldisk_files(data_dir):
    files = sorted((data_dir / "hmi_fulldisk").glob("*.fits"))
    if len(files) < 3:
        pytest.skip("hmi_fulldisk sample files missing")
    return files


@pytest.fixture(scope="module")
def real_tiles(fulldisk_files):
    return {f.name: tiles_from_fulldisk(f) for f in fulldisk_files}


def test_real_tiles(real_tiles):
    total = 0
    for name, tiles in real_tiles.items():
        assert 100 <= len(tiles) <= 300, (name, len(tiles))
        total += len(tiles)
        for t in tiles:
            assert isinstance(t, FullDiskTile)
            assert t.Br.shape == (256, 256) and np.isfinite(t.Br).all()
            assert t.angle_deg <= 60.0 and t.mu >= 0.5 - 1e-9
            assert t.pixel_size_mm == pytest.approx(0.365, abs=0.01)
            assert t.t_rec.endswith("_TAI")
    assert total >= 300


def test_real_crop_reproduces_tile(fulldisk_files, real_tiles):
    f = fulldisk_files[0]
    data, hdr = read_fulldisk(f)
    assert data.shape == (4096, 4096) and hdr["BUNIT"].lower().startswith("gauss")
    nocorr = tiles_from_fulldisk(f, radial_correction=False)
    t = nocorr[len(nocorr) // 3]
    x0, x1, y0, y1 = t.crop
    raw = data[y0:y1, x0:x1]
    np.testing.assert_array_equal(t.Br, np.rot90(raw, 2))  # CROTA2 ≈ 180°
    # radial correction: same box, each pixel divided by its own mu ≤ 1
    tc = {c.crop: c for c in real_tiles[f.name]}[t.crop]
    ratio = tc.Br[np.abs(t.Br) > 50] / t.Br[np.abs(t.Br) > 50]
    assert ratio.min() >= 1.0 - 1e-9 and ratio.max() < 1 / 0.2
