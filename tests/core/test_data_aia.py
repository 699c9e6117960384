"""AIA readers (FITS, browse JPEG, SDOML zarr) and the [-1, 1] scaling, on real and hand-made files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from helioforge.data.aia import (
    BROWSE_FILL_VALUE,
    AIAImage,
    browse_colour_table,
    parse_browse_name,
    read_aia,
    read_aia_browse,
    read_aia_fits,
    read_aia_folder,
    read_sdoml_zarr,
    timestamp_mask,
)
from helioforge.data.aia_preprocess import DEFAULT_SCALINGS, AIAScaling, preprocess_aia, scale_aia, to_intensity
from helioforge.data.fits import FitsReadError

SDOML_FILE = "aia.0131A.20140104_190200.256px.fits"
BROWSE_193 = "20100914_123342_SDO_AIA_193_512.jpg"
BROWSE_304 = "20100901_000020_SDO_AIA_304_512.jpg"


@pytest.fixture(scope="module")
def aia_dir(data_dir: Path) -> Path:
    path = data_dir / "aia"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


# --------------------------------------------------------------------------- real files


def test_sdoml_binned_fits(aia_dir: Path) -> None:
    im = read_aia(aia_dir / "sdoml_binned" / SDOML_FILE)
    assert im.kind == "fits" and im.units == "DN/s"
    assert im.wavelength == 131
    assert im.time == np.datetime64("2014-01-04T19:02:00", "s")
    assert im.data.shape == (256, 256) and im.data.dtype == np.float32
    assert np.isfinite(im.data).all() and im.mask is None
    assert im.header["CDELT1"] == pytest.approx(9.6)
    # BUNIT is already DN/s: no exposure division (values as in the file)
    raw = fits.getdata(aia_dir / "sdoml_binned" / SDOML_FILE).astype(np.float32)
    np.testing.assert_array_equal(im.data, raw)
    assert "EXPOSURE_NORMALISED" not in im.header


def test_browse_jpeg_inversion_and_timestamp_mask(aia_dir: Path) -> None:
    from PIL import Image

    path = aia_dir / "browse" / BROWSE_193
    im = read_aia_browse(path)
    assert (im.kind, im.units, im.wavelength) == ("browse", "display", 193)
    assert im.time == np.datetime64("2010-09-14T12:33:42", "s")
    assert im.data.shape == (512, 512) and im.data.dtype == np.float32
    assert im.data.min() >= 0.0 and im.data.max() <= 1.0
    # the burned-in time stamp (white text, bottom left) is masked and filled with 0
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    box = timestamp_mask(im.data.shape)  # in JPEG rows (top = north)
    assert rgb[box].sum(axis=-1).max() > 700  # white text is there in the JPEG
    assert box[500, 20] and box[490, 270] and not box[470, 20] and not box[500, 300]
    # data come in the FITS orientation (row 0 = south): the JPEG rows reversed
    rgb, box = rgb[::-1], box[::-1]
    assert not im.mask[box].any()
    assert np.all(im.data[~im.mask] == BROWSE_FILL_VALUE)
    # re-colouring the recovered index reproduces the RGB within JPEG error:
    # measured mean |ΔRGB| = 1.00 (0-255 units) on the valid pixels of this image
    recoloured = browse_colour_table(193)[np.rint(im.data * 255).astype(int)]
    mae = np.abs(recoloured - rgb)[im.mask].mean()
    assert mae < 2.0
    assert 0.02 < 1 - im.mask.mean() < 0.05  # the time stamp box is ~3.4 % of the image


def test_browse_304_uses_its_own_table(aia_dir: Path) -> None:
    from PIL import Image

    im = read_aia(aia_dir / "browse" / BROWSE_304)
    assert im.wavelength == 304 and im.time == np.datetime64("2010-09-01T00:00:20", "s")
    rgb = np.asarray(Image.open(im.path).convert("RGB"), dtype=np.float64)[::-1]  # FITS row order
    recoloured = browse_colour_table(304)[np.rint(im.data * 255).astype(int)]
    assert np.abs(recoloured - rgb)[im.mask].mean() < 3.0  # measured 1.48


def test_parse_browse_names() -> None:
    t, w = parse_browse_name("20110215_015200_SDO_AIA_171_1024.jpg")
    assert (t, w) == (np.datetime64("2011-02-15T01:52:00", "s"), 171)
    t, w = parse_browse_name("20110215_015200_512_0094.jpg")  # sdo.gsfc.nasa.gov browse naming
    assert (t, w) == (np.datetime64("2011-02-15T01:52:00", "s"), 94)
    with pytest.raises(FitsReadError, match="sun_picture.jpg"):
        parse_browse_name("sun_picture.jpg")


# --------------------------------------------------------------------------- hand-made FITS


def _write_level1(path: Path, data: np.ndarray, **cards) -> Path:
    hdr = fits.Header()
    for k, v in cards.items():
        hdr[k] = v
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=hdr, compression_type="RICE_1")]).writeto(path)
    return path


def test_level1_counts_are_divided_by_exposure(tmp_path: Path) -> None:
    counts = np.arange(64, dtype=np.int32).reshape(8, 8) * 10
    path = _write_level1(
        tmp_path / "aia.lev1.171A.fits", counts, WAVELNTH=171, BUNIT="DN", EXPTIME=2.0, T_OBS="2014-01-01T00:00:01.57Z", QUALITY=0
    )
    im = read_aia_fits(path)
    assert im.units == "DN/s" and im.header["EXPOSURE_NORMALISED"] is True
    np.testing.assert_allclose(im.data, counts / 2.0)
    assert im.time == np.datetime64("2014-01-01T00:00:02", "s")  # T_OBS with 'Z', rounded
    assert im.header["QUALITY"] == 0 and im.header["EXPTIME"] == 2.0


def test_level1_pixlunit_and_jsoc_tai_time(tmp_path: Path) -> None:
    counts = np.full((4, 4), 300, dtype=np.int32)
    # no BUNIT: PIXLUNIT says counts; a JSOC TAI string (TAI − UTC = 35 s in 2014)
    path = _write_level1(tmp_path / "a.fits", counts, WAVELNTH=94, PIXLUNIT="DN", EXPTIME=3.0, T_OBS="2014.01.01_00:00:35_TAI")
    im = read_aia_fits(path)
    np.testing.assert_allclose(im.data, 100.0)
    assert im.time == np.datetime64("2014-01-01T00:00:00", "s")


def test_per_second_data_are_not_divided(tmp_path: Path) -> None:
    data = np.full((4, 4), 50.0, dtype=np.float32)
    path = tmp_path / "b.fits"
    fits.PrimaryHDU(data, header=fits.Header([("WAVELNTH", 193), ("BUNIT", "DN/s"), ("EXPTIME", 2.0), ("DATE-OBS", "2014-05-01T10:00:00")])).writeto(path)
    im = read_aia_fits(path)
    np.testing.assert_allclose(im.data, 50.0)
    assert "EXPOSURE_NORMALISED" not in im.header


def test_counts_without_exposure_time_fail(tmp_path: Path) -> None:
    path = _write_level1(tmp_path / "dark.fits", np.ones((4, 4), np.int32), WAVELNTH=171, BUNIT="DN", EXPTIME=0.0, T_OBS="2014-01-01T00:00:00Z")
    with pytest.raises(FitsReadError, match=r"dark\.fits.*EXPTIME"):
        read_aia_fits(path)


@pytest.mark.parametrize(
    "name, make, match",
    [
        ("empty.fits", lambda p: p.write_bytes(b""), "empty"),
        ("nowave.fits", lambda p: fits.PrimaryHDU(np.ones((4, 4), np.float32), header=fits.Header([("DATE-OBS", "2014-01-01T00:00:00")])).writeto(p), "WAVELNTH"),
        ("notime.fits", lambda p: fits.PrimaryHDU(np.ones((4, 4), np.float32), header=fits.Header([("WAVELNTH", 171)])).writeto(p), "DATE-OBS"),
        ("cube.fits", lambda p: fits.PrimaryHDU(np.ones((2, 4, 4), np.float32), header=fits.Header([("WAVELNTH", 171), ("DATE-OBS", "2014-01-01")])).writeto(p), "2-D"),
        ("nan.fits", lambda p: fits.PrimaryHDU(np.full((4, 4), np.nan, np.float32), header=fits.Header([("WAVELNTH", 171), ("DATE-OBS", "2014-01-01")])).writeto(p), "finite"),
    ],
)
def test_bad_fits_name_the_file(tmp_path: Path, name, make, match) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(FitsReadError, match=match) as err:
        read_aia(path)
    assert err.value.path == path and name in str(err.value)


def test_truncated_fits_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trunc.fits"
    fits.PrimaryHDU(np.ones((64, 64), np.float32), header=fits.Header([("WAVELNTH", 171), ("DATE-OBS", "2014-01-01")])).writeto(path)
    path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(FitsReadError, match="trunc.fits"):
        read_aia(path)


def test_bad_browse_files_name_the_file(aia_dir: Path, tmp_path: Path) -> None:
    good = (aia_dir / "browse" / BROWSE_193).read_bytes()
    badname = tmp_path / "sun.jpg"
    badname.write_bytes(good)
    with pytest.raises(FitsReadError, match="sun.jpg"):
        read_aia(badname)
    empty = tmp_path / "20100914_123342_SDO_AIA_193_512.jpg"
    empty.write_bytes(b"")
    with pytest.raises(FitsReadError, match="empty"):
        read_aia(empty)
    trunc = tmp_path / "20100914_123343_SDO_AIA_193_512.jpg"
    trunc.write_bytes(good[: len(good) // 3])
    with pytest.raises(FitsReadError, match="truncated|decoded") as err:
        read_aia(trunc)
    assert err.value.path == trunc
    nocmap = tmp_path / "20100914_123342_SDO_AIA_1234_512.jpg"
    nocmap.write_bytes(good)
    with pytest.raises(FitsReadError, match="colour table"):
        read_aia(nocmap)
    with pytest.raises(FitsReadError, match="unknown AIA file type"):
        (tmp_path / "x.txt").write_text("x")
        read_aia(tmp_path / "x.txt")


def test_read_aia_folder_skips_bad_files(aia_dir: Path, tmp_path: Path) -> None:
    src = aia_dir / "browse"
    for name in (BROWSE_193, "20100915_000006_SDO_AIA_193_512.jpg", BROWSE_304):
        (tmp_path / name).symlink_to(src / name)
    (tmp_path / "20100914_000000_SDO_AIA_193_512.jpg").write_bytes(b"")  # empty, earliest
    (tmp_path / SDOML_FILE).symlink_to(aia_dir / "sdoml_binned" / SDOML_FILE)
    images, skipped = read_aia_folder(tmp_path)
    assert [s.path.name for s in skipped] == ["20100914_000000_SDO_AIA_193_512.jpg"]
    assert "empty" in skipped[0].reason
    times = [im.time for im in images]
    assert times == sorted(times) and len(images) == 4
    images, skipped = read_aia_folder(tmp_path, wavelength=193)
    assert [im.wavelength for im in images] == [193, 193] and len(skipped) == 1
    with pytest.raises(FileNotFoundError):
        read_aia_folder(tmp_path / "nope")


# --------------------------------------------------------------------------- SDOML zarr


def _write_sdoml_store(root: Path) -> Path:
    import zarr

    store = root / "sdomlv2_test.zarr"
    g = zarr.open_group(str(store), mode="w", zarr_format=2)
    rng = np.random.default_rng(0)
    for year, times in (("2013", ["2013-12-31T23:54:00.84Z"]), ("2014", ["2014-01-01T00:06:00.84Z", "2014-01-01T00:00:00.84Z", "2014-01-01T00:12:00.84Z"])):
        n = len(times)
        arr = g.require_group(year).create_array("171A", shape=(n, 8, 8), chunks=(1, 8, 8), dtype="f4")
        arr[:] = rng.uniform(10, 1000, size=(n, 8, 8)).astype("f4")
        arr.attrs.update(
            {
                "T_OBS": times,
                "WAVELNTH": [171] * n,
                "EXPTIME": [2.0] * n,
                "PIXLUNIT": ["DN/s"] * (n - 1) + ["DN"],
                "DEG_COR": [0.9] * n,
                "CDELT1": [4.8] * n,
            }
        )
    return store


def test_sdoml_zarr_layout(tmp_path: Path) -> None:
    import zarr

    store = _write_sdoml_store(tmp_path)
    raw = zarr.open_group(str(store), mode="r")["2014/171A"][:]
    images = read_sdoml_zarr(store, 171, year=2014)
    assert [str(im.time) for im in images] == ["2014-01-01T00:00:01", "2014-01-01T00:06:01", "2014-01-01T00:12:01"]
    assert all(im.kind == "zarr" and im.units == "DN/s" and im.wavelength == 171 for im in images)
    by_index = {im.header["ZARR_INDEX"]: im for im in images}
    # frames 0, 1 say DN/s (SDOMLv2 already divided by EXPTIME): untouched; frame 2 says DN: /EXPTIME
    np.testing.assert_array_equal(by_index[0].data, raw[0])
    np.testing.assert_allclose(by_index[2].data, raw[2] / 2.0, rtol=1e-6)
    assert by_index[2].header["EXPOSURE_NORMALISED"] is True and by_index[0].header["CDELT1"] == 4.8
    forced = read_sdoml_zarr(store, 171, year="2014", exposure_normalise=True)
    np.testing.assert_allclose(forced[0].data, raw[1] / 2.0, rtol=1e-6)  # sorted: index 1 first
    # all years, and a time window applied before reading pixels
    assert len(read_sdoml_zarr(store, 171)) == 4
    window = read_sdoml_zarr(store, 171, start="2013-12-31T23:00", end="2014-01-01T00:05")
    assert [im.header["ZARR_ARRAY"] for im in window] == ["2013/171A", "2014/171A"]
    with pytest.raises(FitsReadError, match="no array 2014/193A; channels found: 171A"):
        read_sdoml_zarr(store, 193, year=2014)
    with pytest.raises(FitsReadError, match="no year group '2015'"):
        read_sdoml_zarr(store, 171, year=2015)
    with pytest.raises(FileNotFoundError):
        read_sdoml_zarr(tmp_path / "none.zarr", 171)


# --------------------------------------------------------------------------- scaling


def test_scaling_round_trip_and_range() -> None:
    s = DEFAULT_SCALINGS[171]
    intensity = np.logspace(s.log10_min, s.log10_max, 50)
    x = scale_aia(intensity, 171, "DN/s")
    assert x.min() == pytest.approx(-1.0) and x.max() == pytest.approx(1.0)
    np.testing.assert_allclose(to_intensity(x, 171, "DN/s"), intensity, rtol=1e-5)
    # outside the range: clipped to the floor / ceiling, NaN to the floor
    x = scale_aia(np.array([-3.0, 0.0, np.nan, 1e9]), 171, "DN/s")
    np.testing.assert_array_equal(x, [-1, -1, -1, 1])
    # display data: x = 2v − 1 and back
    v = np.linspace(0, 1, 11)
    np.testing.assert_allclose(to_intensity(scale_aia(v, 193, "display"), 193, "display"), v, atol=1e-7)
    custom = AIAScaling.from_dn_per_s(1.0, 100.0)
    assert scale_aia(np.array([10.0]), 999, "DN/s", custom)[0] == pytest.approx(0.0)
    with pytest.raises(KeyError, match="999"):
        scale_aia(np.array([10.0]), 999, "DN/s")
    with pytest.raises(ValueError):
        AIAScaling(2.0, 1.0)


def _image(data, units="DN/s", mask=None, wavelength=193) -> AIAImage:
    return AIAImage(np.asarray(data, np.float32), wavelength, np.datetime64("2014-01-01T00:00:00", "s"), Path("x"), "fits", units, mask)


def test_preprocess_constant_image_round_trip() -> None:
    value = 300.0
    x = preprocess_aia(_image(np.full((256, 256), value)), 64)  # block-mean path
    assert x.shape == (64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(to_intensity(x, 193), value, rtol=1e-5)
    x = preprocess_aia(_image(np.full((256, 256), value)), 100)  # anti-aliased resize path
    np.testing.assert_allclose(to_intensity(x, 193), value, rtol=1e-5)


def test_preprocess_masked_pixels_do_not_leak() -> None:
    data = np.full((128, 128), 0.5, np.float32)
    mask = np.ones_like(data, bool)
    mask[120:, :60] = False
    text = data.copy()
    text[120:, :60] = 1.0  # "white text" under the mask
    filled = data.copy()
    filled[120:, :60] = 0.0
    a = preprocess_aia(_image(text, "display", mask), 32)
    b = preprocess_aia(_image(filled, "display", mask), 32)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    with pytest.raises(ValueError, match="square"):
        preprocess_aia(_image(np.ones((64, 32))), 16)


def test_preprocess_real_images(aia_dir: Path) -> None:
    fits_im = read_aia(aia_dir / "sdoml_binned" / SDOML_FILE)
    browse = read_aia(aia_dir / "browse" / BROWSE_193)
    for im in (fits_im, browse):
        for size in (64, 96):
            x = preprocess_aia(im, size)
            assert x.shape == (size, size) and x.dtype == np.float32
            assert np.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
            assert x.max() - x.min() > 0.5  # the disk is not flattened
    x = preprocess_aia(browse, 64)
    assert np.all(x[:3, :35] == -1.0)  # the time stamp box (JPEG rows ≥ 481, cols < 287 of 512; FITS rows < 31) is dark
