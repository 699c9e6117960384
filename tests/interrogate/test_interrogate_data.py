"""Corpus build on the real sample data, save/load round trip, and error cases."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from helioforge.interrogate.config import DataConfig
from helioforge.interrogate.data import Corpus, build_corpus
from helioforge.data.fits import FitsReadError


@pytest.fixture(scope="module")
def corpus(data_dir, sharp_dir):
    if not (data_dir / "hmi_fulldisk").is_dir():
        pytest.skip("hmi_fulldisk missing")
    cfg = DataConfig(image_size=32, sharp_dirs=(str(sharp_dir),), fulldisk_dir=str(data_dir / "hmi_fulldisk"))
    return build_corpus(cfg)


def test_build_real(corpus):
    c, skipped = corpus
    assert skipped == []
    assert len(c) >= 300
    assert c.images.shape == (len(c), 1, 32, 32) and c.images.dtype == np.float32
    assert c.images.min() >= -1 and c.images.max() <= 1 and np.isfinite(c.images).all()
    t = c.table
    assert len(t) == len(c)
    assert set(t["source"]) == {"sharp", "fulldisk_tile"}
    sharp = t[t["source"] == "sharp"]
    tiles = t[t["source"] == "fulldisk_tile"]
    assert set(tiles["region"]) == {f"full disk {r}" for r in tiles["T_REC"]} and all(r.startswith("HARP ") for r in sharp["region"])
    assert len(sharp) == 39 and len(tiles) >= 300
    assert (tiles["HARPNUM"] == -1).all() and (tiles["NOAA_AR"] == -1).all()
    assert np.isnan(tiles["USFLUX"]).all()
    assert all(s == "" for s in sharp["crop"]) and all(":" in s and "," in s for s in tiles["crop"])
    row = sharp[sharp["file"] == "hmi.sharp_cea_720s.1447.20120306_142400_TAI.Br.fits"][0]
    assert row["HARPNUM"] == 1447 and row["NOAA_AR"] == 11428
    assert row["USFLUX"] == pytest.approx(1.263485e22)
    assert row["T_REC"] == "2012.03.06_14:24:00_TAI"
    assert row["pixel_size_mm"] == pytest.approx(0.3644, abs=1e-3)
    assert (sharp[sharp["HARPNUM"] == 1441]["NOAA_AR"] == -1).all()


def test_save_load_roundtrip(corpus, tmp_path):
    c, _ = corpus
    path = c.save(tmp_path / "corpus.fits")
    assert not list(tmp_path.glob(".corpus*"))  # atomic: no temporary left
    with fits.open(path) as hdul:
        assert hdul[0].header["HF_MODEL"] == "corpus"
        assert "LOOKUP" in hdul and hdul[0].data.shape == c.images.shape
    d = Corpus.load(path)
    np.testing.assert_array_equal(d.images, c.images)
    assert d.table.colnames == c.table.colnames
    for name in c.table.colnames:
        a, b = np.asarray(c.table[name]), np.asarray(d.table[name])
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)  # NaN compare equal here
        else:
            assert list(a) == list(b), name
    assert d.clip_gauss == c.clip_gauss and len(d) == len(c)


def test_missing_fulldisk_folder_is_skipped(sharp_dir, tmp_path):
    cfg = DataConfig(image_size=16, sharp_dirs=(str(sharp_dir),), fulldisk_dir=str(tmp_path / "absent"))
    c, skipped = build_corpus(cfg)
    assert len(c) == 39
    assert len(skipped) == 1 and "absent" in str(skipped[0].path) and "not found" in skipped[0].reason


def test_nothing_readable(tmp_path):
    cfg = DataConfig(sharp_dirs=(str(tmp_path / "a"),), fulldisk_dir=str(tmp_path / "b"))
    with pytest.raises(ValueError, match="no image could be read"):
        build_corpus(cfg)
    with pytest.raises(ValueError, match="at least one"):
        build_corpus(cfg, sharp=False, fulldisk=False)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        Corpus.load(tmp_path / "nope.fits")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"")
    with pytest.raises(FitsReadError, match="bad.fits"):
        Corpus.load(bad)
    notab = tmp_path / "notab.fits"
    fits.PrimaryHDU(np.zeros((2, 1, 8, 8), dtype=np.float32)).writeto(notab)
    with pytest.raises(FitsReadError, match="LOOKUP"):
        Corpus.load(notab)
