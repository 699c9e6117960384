"""JSOC query strings and fetch_sharp with a fake drms client (offline)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from helioforge.data.jsoc import build_sharp_query, fetch_sharp, jsoc_time


def test_jsoc_time_formats():
    assert jsoc_time("2011-02-15T00:00:00") == "2011.02.15_00:00:00_TAI"
    assert jsoc_time("2011-02-15") == "2011.02.15_00:00:00_TAI"
    assert jsoc_time("2011.02.15_02:12:00_TAI") == "2011.02.15_02:12:00_TAI"
    assert jsoc_time(dt.datetime(2012, 3, 6, 14, 24, 0, 500)) == "2012.03.06_14:24:00_TAI"
    with pytest.raises(ValueError, match="not understood"):
        jsoc_time("yesterday")


def test_harp_query():
    q = build_sharp_query([377, 1447], start="2011-02-15T00:00:00", end="2011-02-16T00:00:00",
                          segments=("Br", "bitmap"))
    assert q == "hmi.sharp_cea_720s[377,1447][2011.02.15_00:00:00_TAI-2011.02.16_00:00:00_TAI@12m]{Br,bitmap}"


def test_noaa_query():
    q = build_sharp_query(noaa=[11158], start="2011-02-15", end="2011-02-15T12:00:00", cadence="1h")
    assert q == ('hmi.sharp_cea_720s[][2011.02.15_00:00:00_TAI-2011.02.15_12:00:00_TAI@1h]'
                 '[? NOAA_ARS ~ "11158" ?]{Br}')
    q2 = build_sharp_query(noaa=[11158, 11166], start="2011-02-15", end="2011-02-16")
    assert '[? NOAA_ARS ~ "11158|11166" ?]' in q2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(start="2011-02-15", end="2011-02-16"), "exactly one"),
        (dict(harps=[1], noaa=[11158], start="2011-02-15", end="2011-02-16"), "exactly one"),
        (dict(harps=[1], start="2011-02-16", end="2011-02-15"), "after start"),
        (dict(harps=[1], start="2011-02-15", end="2011-02-15"), "after start"),
        (dict(harps=[1], start="2011-02-15", end="2011-02-16", cadence="12 min"), "cadence"),
        (dict(harps=[1], start="2011-02-15", end="2011-02-16", cadence="m"), "cadence"),
        (dict(harps=[1], start="2011-02-15", end="2011-02-16", segments=()), "empty"),
        (dict(harps=[1], start="2011-02-15", end="2011-02-16", segments=("Bz",)), "unknown SHARP segment"),
        (dict(harps=[-3], start="2011-02-15", end="2011-02-16"), "positive"),
        (dict(harps=[], start="2011-02-15", end="2011-02-16"), "empty"),
        (dict(harps=[1], start="2011-13-45", end="2011-02-16"), "start"),
    ],
)
def test_query_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_sharp_query(**kwargs)


class FakeRequest:
    def __init__(self, files):
        self.files = files
        self.waited = False
        self.download_dir = None

    def wait(self):
        self.waited = True
        return True

    def download(self, directory):
        self.download_dir = directory
        return pd.DataFrame(
            {"record": [f"rec{i}" for i in range(len(self.files))], "url": ["u"] * len(self.files),
             "download": self.files}
        )


class FakeClient:
    def __init__(self, files):
        self.calls = []
        self.request = FakeRequest(files)

    def export(self, query, **kwargs):
        self.calls.append((query, kwargs))
        return self.request


def test_fetch_sharp_with_fake_client(tmp_path):
    out = tmp_path / "dl"
    files = [str(out / "a.Br.fits"), None, str(out / "b.Br.fits")]  # one failed download
    client = FakeClient(files)
    paths = fetch_sharp(out, "me@example.org", harps=[377], start="2011-02-15T00:00:00",
                        end="2011-02-15T01:00:00", client=client)
    assert out.is_dir()
    assert paths == [out / "a.Br.fits", out / "b.Br.fits"]
    (query, kwargs), = client.calls
    assert query == "hmi.sharp_cea_720s[377][2011.02.15_00:00:00_TAI-2011.02.15_01:00:00_TAI@12m]{Br}"
    assert kwargs == {"method": "url", "protocol": "fits", "email": "me@example.org"}
    assert client.request.waited and client.request.download_dir == str(out)


def test_fetch_sharp_needs_email(tmp_path):
    with pytest.raises(ValueError, match="registered email"):
        fetch_sharp(tmp_path, "", harps=[377], start="2011-02-15", end="2011-02-16", client=FakeClient([]))
