"""GOES flare classes, event lists, XRS flux files and image labelling (paper §2.2-2.4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helioforge.data.goes import (
    CLASS_EDGES_WM2,
    FLARE_CLASSES,
    class_index,
    flux_class_string,
    flux_to_class,
    goes_class_flux,
    read_event_list,
    read_xrs_flux,
)
from helioforge.data.goes_labels import class_histogram, fill_event_flux, flux_labels, label_images, link_events
from helioforge.data.fits import FitsReadError

T0 = np.datetime64("2014-01-01T00:00:00", "ns")


def minutes(m: float) -> np.timedelta64:
    return np.timedelta64(int(round(m * 60e9)), "ns")


def events_table(rows: list[tuple[np.datetime64, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "peak_time": [t for t, _ in rows],
            "goes_class": [c for _, c in rows],
            "flare_class": [c[0] for _, c in rows],
            "peak_flux": [goes_class_flux(c) for _, c in rows],
        }
    )


@pytest.fixture(scope="module")
def goes_dir(data_dir: Path) -> Path:
    path = data_dir / "goes"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


# --------------------------------------------------------------------------- classes


def test_class_edges() -> None:
    below = [np.nextafter(e, 0) for e in CLASS_EDGES_WM2]
    assert flux_to_class(below).tolist() == [0, 1, 2, 3]  # just under each edge: the weaker class
    assert flux_to_class(list(CLASS_EDGES_WM2)).tolist() == [1, 2, 3, 4]  # 1e-7 is B, 1e-6 is C ...
    assert flux_to_class([1e-9, 5e-4, 1e-3]).tolist() == [0, 4, 4]
    assert flux_to_class([0.0, -1e-6, np.nan, np.inf]).tolist() == [-1, -1, -1, -1]
    assert int(flux_to_class(1e-6)) == FLARE_CLASSES.index("C")


def test_goes_class_flux() -> None:
    assert goes_class_flux("M1.5") == pytest.approx(1.5e-5)
    assert goes_class_flux(" x10 ") == pytest.approx(1e-3)
    assert goes_class_flux("C1") == pytest.approx(1e-6)
    assert goes_class_flux("A3.2") == pytest.approx(3.2e-8)
    for c in ("A1.0", "B9.9", "C1.0", "M9.9", "X1.0", "X28"):
        assert FLARE_CLASSES[int(flux_to_class(goes_class_flux(c)))] == c[0]
    for bad in ("", "M", "Q1.0", "M-1", "A0.0", "1.5M", "M1.5.2", None):
        with pytest.raises(ValueError, match="not a GOES class string") as err:
            goes_class_flux(bad)
        assert repr(bad) in str(err.value)
    assert class_index("m") == 3 and class_index("A") == 0
    with pytest.raises(ValueError, match="'Z'"):
        class_index("Z")


# --------------------------------------------------------------------------- linking (paper §2.4)


def test_link_events_tolerance_and_strongest() -> None:
    images = np.array(
        [
            T0,  # 0: 6.9 min after E0 → linked
            T0 + minutes(60),  # 1: 1 min before E1's peak → never linked
            T0 + minutes(68.1),  # 2: 7.1 min after E1 → not linked
            T0 + minutes(120),  # 3: after E2 (C) and E3 (M) → keeps M
            T0 + minutes(180),  # 4: exactly 7.0 min after E4 → linked (inclusive)
            T0 + minutes(242),  # 5: 2 min after E5 → linked
            T0 + minutes(245),  # 6: 5 min after E5 → the closer image 5 took it
        ]
    )
    events = events_table(
        [
            (T0 - minutes(6.9), "B2.0"),
            (T0 + minutes(61), "C3.0"),
            (T0 + minutes(115), "C9.0"),
            (T0 + minutes(118), "M1.0"),
            (T0 + minutes(173), "B1.0"),
            (T0 + minutes(240), "X2.0"),
        ]
    )
    out = link_events(images, events)
    assert out["event_index"].tolist() == [0, -1, -1, 3, 4, 5, -1]
    assert out["flare_class"].tolist() == ["B", "", "", "M", "B", "X", ""]
    assert out["class_index"].tolist() == [1, -1, -1, 3, 1, 4, -1]
    np.testing.assert_allclose(out["delay_min"].to_numpy(), [6.9, np.nan, np.nan, 2.0, 7.0, 2.0, np.nan])
    assert out["n_linked"].tolist() == [1, 0, 0, 2, 1, 1, 0]
    assert out["goes_class"][3] == "M1.0" and out["peak_flux"][3] == pytest.approx(1e-5)
    # image order does not matter
    shuffled = link_events(images[::-1], events)
    assert shuffled["event_index"].tolist() == out["event_index"].tolist()[::-1]
    with pytest.raises(ValueError, match="peak_flux"):
        link_events(images, events.drop(columns="peak_flux"))


# --------------------------------------------------------------------------- flux labels


def test_flux_labels_gap_rule() -> None:
    t = T0 + np.arange(10) * minutes(1)
    flux = pd.Series([5e-8, 2e-7, 3e-6, 4e-5, 2e-4, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6], index=pd.DatetimeIndex(t))
    flux = flux.drop(flux.index[6:8])  # a 3-minute gap 00:05 → 00:08
    images = [T0 + minutes(0.4), T0 + minutes(1), T0 + minutes(2.3), T0 + minutes(3), T0 + minutes(4), T0 + minutes(6.5), T0 - minutes(2)]
    log10, cls = flux_labels(images, flux)
    assert cls.tolist() == [0, 1, 2, 3, 4, -1, -1]  # in the gap and before the series: unlabelled
    np.testing.assert_allclose(log10[:5], np.log10([5e-8, 2e-7, 3e-6, 4e-5, 2e-4]))
    assert np.isnan(log10[5:]).all()
    # explicit max_gap widens it
    _, cls = flux_labels(images, flux, max_gap=np.timedelta64(2, "m"))
    assert cls[5] == 2 and cls[6] == 0
    with pytest.raises(ValueError, match="max_gap"):
        flux_labels(images, flux.iloc[:1])


def test_hourly_means_label_their_hour() -> None:
    hours = pd.date_range("2014-01-01T00:30:30", periods=6, freq="h")
    flux = pd.Series([1e-7, np.nan, 2e-6, 3e-5, 3e-5, np.nan], index=hours)  # hours 01, 05 missing (NaN fill)
    images = ["2014-01-01T00:00:10", "2014-01-01T00:59:00", "2014-01-01T01:20:00", "2014-01-01T02:05:00", "2014-01-01T03:58:00", "2014-01-01T05:10:00"]
    _, cls = flux_labels(images, flux)  # default gap: 30 min + 3 min
    assert cls.tolist() == [1, 1, -1, 2, 3, -1]


def test_label_images_sources_and_histogram() -> None:
    images = [T0, T0 + minutes(6), T0 + minutes(12), T0 + minutes(18)]
    events = events_table([(T0 + minutes(10), "M2.0")])
    flux = pd.Series([3e-8, 4e-7, 2e-5, 5e-6], index=pd.DatetimeIndex([T0 + minutes(6 * i) for i in range(4)]))
    flux = flux.drop(flux.index[3])  # last image left without flux within the gap
    ev = label_images(images, events=events, flux=flux, source="events")
    assert ev["class_index"].tolist() == [-1, -1, 3, -1]
    assert ev["label_source"].tolist() == ["", "", "events", ""]
    assert ev["event_delay_min"][2] == pytest.approx(2.0) and ev["goes_class"][2] == "M2.0"
    # the continuous label of an event-linked image is the flare's peak flux; unlabelled: none
    assert ev["log10_flux"][2] == pytest.approx(np.log10(2e-5)) and np.isnan(ev["log10_flux"][[0, 1, 3]]).all()
    np.testing.assert_allclose(ev["xrs_log10_flux"][:3], np.log10([3e-8, 4e-7, 2e-5]))  # the series, for reference
    assert ev["unlabelled_reason"].tolist() == ["no flare peak in the 7 min before the image"] * 2 + [
        "", "no flare peak in the 7 min before the image"]
    fx = label_images(images, flux=flux, source="flux")
    assert fx["flare_class"].tolist() == ["A", "B", "M", ""] and fx["class_index"].tolist() == [0, 1, 3, -1]
    assert fx["unlabelled_reason"][3].startswith("outside the flux series")
    both = label_images(images, events=events_table([(T0 + minutes(3), "C5.0")]), flux=flux, source="events+flux")
    assert both["flare_class"].tolist() == ["A", "C", "M", ""]
    assert both["label_source"].tolist() == ["flux", "events", "flux", ""]
    # each image's continuous label is the flux that gave its class
    np.testing.assert_allclose(both["log10_flux"][:3], np.log10([3e-8, 5e-6, 2e-5]))
    no_flux = label_images(images, events=events, source="events")
    assert no_flux["log10_flux"][2] == pytest.approx(np.log10(2e-5)) and np.isnan(no_flux["log10_flux"][0])
    assert class_histogram(ev["class_index"]) == {"A": 0, "B": 0, "C": 0, "M": 1, "X": 0, "unlabelled": 3}
    assert class_histogram(fx["class_index"]) == {"A": 1, "B": 1, "C": 0, "M": 1, "X": 0, "unlabelled": 1}
    with pytest.raises(ValueError, match="events table"):
        label_images(images, flux=flux, source="events")
    with pytest.raises(ValueError, match="flux series"):
        label_images(images, events=events, source="events+flux")
    with pytest.raises(ValueError, match="source"):
        label_images(images, flux=flux, source="hek")
    with pytest.raises(ValueError, match="-1..4"):
        class_histogram([0, 5])


def test_event_peak_flux_differs_from_the_flux_at_the_image() -> None:
    """Defect: the continuous label came from the flux series (an hourly mean) even for an
    event-linked image, so it disagreed with the image's class."""
    images = [T0 + minutes(4)]
    hourly = pd.Series([4e-6], index=pd.DatetimeIndex([T0]))  # C4 hourly mean
    lab = label_images(images, events=events_table([(T0, "X2.2")]), flux=hourly, source="events",
                       max_gap=np.timedelta64(30, "m"))
    assert lab["flare_class"][0] == "X" and lab["log10_flux"][0] == pytest.approx(np.log10(2.2e-4))
    assert lab["xrs_log10_flux"][0] == pytest.approx(np.log10(4e-6))
    assert flux_to_class(10.0 ** lab["log10_flux"][0]) == lab["class_index"][0]


def test_classless_events_take_the_flux_just_after_the_peak() -> None:
    """Defect: HEK/SWPC events without a class were dropped; the paper gives them the XRS-B
    flux ≤ 6 s after the peak (§2.4)."""
    events = pd.DataFrame({"peak_time": [T0, T0 + minutes(30), T0 + minutes(60)],
                           "goes_class": ["", "", "M1.0"], "flare_class": ["", "", "M"],
                           "peak_flux": [np.nan, np.nan, 1e-5]})
    # a 3-s series (GOES-15 XRS cadence): the first sample at or after the first peak is 1 s after
    # it; around the second peak a gap leaves the first sample 9 s after it
    t = pd.date_range(pd.Timestamp(T0) - pd.Timedelta(seconds=2), periods=700, freq="3s")
    flux = pd.Series(2e-6, index=t)
    flux[pd.Timestamp(T0) + pd.Timedelta(seconds=1)] = 3.3e-5
    flux[pd.Timestamp(T0) - pd.Timedelta(seconds=2)] = 9e-5  # before the peak: never used
    late = pd.Timestamp(T0) + pd.Timedelta(minutes=30)
    flux = flux[(flux.index < late - pd.Timedelta(seconds=2)) | (flux.index > late + pd.Timedelta(seconds=8))]
    flux[late + pd.Timedelta(seconds=9)] = 2e-6
    flux = flux.sort_index()
    filled = fill_event_flux(events, flux)
    # the first: the sample 1 s after the peak (not the one 2 s before); the second: 9 s > 6 s, dropped
    assert filled["goes_class"].tolist() == ["M3.3", "M1.0"] and filled["class_source"].tolist() == ["xrs", "list"]
    assert filled["peak_flux"].tolist() == [3.3e-5, 1e-5]
    assert filled.attrs["classless"] == 2 and filled.attrs["classless_filled"] == 1
    assert filled.attrs["skipped"] == {"no class and no XRS-B sample ≤ 6 s after the peak": 1}
    images = [T0 + minutes(5), T0 + minutes(31)]
    lab = label_images(images, events=events, flux=flux, source="events", max_gap=np.timedelta64(1, "h"))
    assert lab["flare_class"].tolist() == ["M", ""] and lab["log10_flux"][0] == pytest.approx(np.log10(3.3e-5))
    assert lab.attrs["events"]["classless_filled"] == 1
    # without a flux series they cannot be labelled, and say so
    assert fill_event_flux(events, None).attrs["skipped"] == {"no class and no flux series": 2}
    assert flux_class_string(2.2e-4) == "X2.2" and flux_class_string(9.5e-7) == "B9.5"
    assert flux_class_string(9.96e-6) == "M1.0"
    # an hourly series cannot give the flux ≤ 6 s after a peak, even when a sample falls there
    hourly = pd.Series([1e-6, 3e-5], index=pd.DatetimeIndex([T0 + np.timedelta64(3, "s"), T0 + minutes(60)]))
    h = fill_event_flux(events, hourly)
    assert h.attrs["classless_filled"] == 0 and list(h.attrs["skipped"]) == [
        "no class, and the flux series' cadence (3597 s) is coarser than 6 s"]
    with pytest.raises(ValueError, match="flux"):
        flux_class_string(0.0)


def test_hek_list_without_classes_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "hek.csv"
    path.write_text("event_peaktime,event_starttime,event_endtime,fl_goescls,ar_noaanum\n"
                    "2014-01-01T00:10:00,2014-01-01T00:00:00,2014-01-01T00:20:00,M2.0,11936\n"
                    "2014-01-01T01:10:00,2014-01-01T01:00:00,2014-01-01T01:20:00,,0\n"
                    "2014-01-01T02:10:00,2014-01-01T02:00:00,2014-01-01T02:20:00,Q7,0\n")
    ev = read_event_list(path)
    assert ev["goes_class"].tolist() == ["M2.0", ""] and ev["flare_class"].tolist() == ["M", ""]
    assert np.isnan(ev["peak_flux"][1]) and ev.attrs["classless"] == 1
    assert ev.attrs["skipped"] == {"unparsable GOES class": 1}
    # link_events ignores the class-less row until fill_event_flux has given it a flux
    lab = link_events(["2014-01-01T01:12:00"], ev)
    assert lab["class_index"].tolist() == [-1]


def test_real_x22_flare_gets_its_peak_flux(goes_dir: Path) -> None:
    """The issue's case: the X2.2 flare of 2011-02-15 (peak 01:56) and an image at 02:00 got
    an hourly mean (an M-level flux here) as its continuous label with the old code."""
    events = read_event_list(goes_dir / "swpc_ftp_flares_20100101_20251115.csv")
    hourly = read_xrs_flux(goes_dir / "goes15_xrs_hourly_2010-2018.csv")
    lab = label_images(["2011-02-15T02:00:00"], events=events, flux=hourly, source="events")
    assert lab["goes_class"][0] == "X2.2" and lab["flare_class"][0] == "X"
    assert lab["log10_flux"][0] == pytest.approx(np.log10(2.2e-4))
    assert lab["xrs_log10_flux"][0] < np.log10(1e-4)  # what the old code used: not an X-class flux


# --------------------------------------------------------------------------- real files


def test_swpc_hhmm_layout(goes_dir: Path) -> None:
    ev = read_event_list(goes_dir / "swpc_flarelist_2010-2021.csv")
    assert ev.attrs["layout"] == "swpc-hhmm"
    assert len(ev) == 8826 and ev.attrs["dropped"] == 7  # 7 rows have '////' for the peak time
    assert list(ev.columns) == ["peak_time", "start_time", "end_time", "goes_class", "flare_class", "peak_flux", "noaa_ar"]
    assert ev["peak_time"].dtype == "datetime64[ns]" and ev["peak_time"].is_monotonic_increasing
    first = ev.iloc[0]
    assert first["peak_time"] == pd.Timestamp("2010-01-02 07:24") and first["start_time"] == pd.Timestamp("2010-01-02 07:09")
    assert (first["goes_class"], first["flare_class"], first["noaa_ar"]) == ("C1.0", "C", 11039)
    assert pd.isna(ev.iloc[1]["noaa_ar"])  # blank region
    # a flare starting 2021-07-23 23:54 peaks 00:33 and ends 01:02 the next day
    row = ev[ev["start_time"] == pd.Timestamp("2021-07-23 23:54")].iloc[0]
    assert row["peak_time"] == pd.Timestamp("2021-07-24 00:33") and row["end_time"] == pd.Timestamp("2021-07-24 01:02")
    assert ev.attrs["nonstandard"] == 1  # "C0.9" on 2020-11-05 is a B9 flux
    assert ev["flare_class"].value_counts().to_dict() == {"C": 8017, "M": 758, "X": 50, "B": 1}
    assert (ev["start_time"] <= ev["peak_time"]).all() and (ev["peak_time"] <= ev["end_time"]).all()


def test_swpc_iso_layout(goes_dir: Path) -> None:
    ev = read_event_list(goes_dir / "swpc_ftp_flares_20100101_20251115.csv")
    assert ev.attrs["layout"] == "swpc-iso" and len(ev) == 30406 and ev.attrs["dropped"] == 1  # 'A0.0'
    # class letters follow the flux: 'C0.9' (6 rows) is B, 'M0.9' (3) is C, 'B0.9' (1) is A
    assert ev.attrs["nonstandard"] == 10
    assert ev["flare_class"].value_counts().to_dict() == {"C": 18442, "B": 9228, "M": 2496, "X": 142, "A": 98}
    assert ev.iloc[0]["peak_time"] == pd.Timestamp("2010-01-01 12:09") and ev.iloc[0]["peak_flux"] == pytest.approx(1.9e-7)
    last = ev.iloc[-1]  # start written '2025/11/15 23:24' in this file
    assert last["start_time"] == pd.Timestamp("2025-11-15 23:24") and last["peak_time"] == pd.Timestamp("2025-11-15 23:29")
    np.testing.assert_array_equal(flux_to_class(ev["peak_flux"]), [class_index(c) for c in ev["flare_class"]])


def test_event_list_bad_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv"):
        read_event_list(empty)
    odd = tmp_path / "odd.csv"
    odd.write_text("when,what\n2014-01-01,flare\n")
    with pytest.raises(ValueError, match=r"odd\.csv: unknown flare-list layout; columns found: \['when', 'what'\]"):
        read_event_list(odd)
    hek = tmp_path / "hek.csv"
    hek.write_text(
        "event_starttime,event_peaktime,event_endtime,fl_goescls,ar_noaanum\n"
        "2014-01-01T00:00:00,2014-01-01T00:10:00,2014-01-01T00:20:00,M1.5,11936\n"
        "2014-01-01T01:00:00,2014-01-01T01:10:00,2014-01-01T01:20:00,,0\n"
    )
    ev = read_event_list(hek)
    # the event without a class is kept for fill_event_flux (paper §2.4), not dropped
    assert ev.attrs["layout"] == "hek" and ev.attrs["dropped"] == 0 and ev.attrs["classless"] == 1
    assert ev["goes_class"].tolist() == ["M1.5", ""] and ev["noaa_ar"].tolist()[0] == 11936


def test_event_list_missing_and_malformed_columns(tmp_path: Path) -> None:
    no_class = tmp_path / "no_class.csv"
    no_class.write_text("start_time,peak_time,end_time,noaa_ar\n2014-01-01 00:00,2014-01-01 00:10,2014-01-01 00:20,1\n")
    with pytest.raises(ValueError, match=r"no_class\.csv: unknown flare-list layout"):
        read_event_list(no_class)
    bad = tmp_path / "bad_values.csv"
    bad.write_text("start_time,peak_time,end_time,goes_class\n"
                   "2014-01-01 00:00,2014-01-01 00:10,2014-01-01 00:20,M1.0\n"
                   "2014-01-01 01:00,not a time,2014-01-01 01:20,C2.0\n"
                   "2014-01-01 02:00,2014-01-01 02:10,2014-01-01 02:20,Z9\n")
    ev = read_event_list(bad)
    assert len(ev) == 1 and ev.attrs["skipped"] == {"unparsable GOES class": 1, "no parsable peak time": 1}


def test_hourly_csv(goes_dir: Path) -> None:
    s = read_xrs_flux(goes_dir / "goes15_xrs_hourly_2010-2018.csv")
    assert s.name == "xrsb" and s.attrs["units"] == "W/m2"
    assert len(s) == 69628 and s.attrs["dropped"] == 1477  # NaN fills dropped
    assert s.index.dtype == "datetime64[ns]" and s.index.is_monotonic_increasing
    assert s.index[0] == pd.Timestamp("2010-09-01 00:30:30") and s.iloc[0] == pytest.approx(8.175e-8, rel=1e-3)
    assert (s > 0).all() and s.max() < 1e-3
    a = read_xrs_flux(goes_dir / "goes15_xrs_hourly_2010-2018.csv", channel="xrsa")
    assert a.median() < s.median()  # 0.5-4 Å is fainter than 1-8 Å


@pytest.mark.parametrize(
    "name, n, t0",
    [
        ("go1520110607.fits", 42177, "2011-06-06 23:59:59.96"),
        ("go1520120601.fits.gz", 42161, "2012-05-31 23:59:59.09"),
        ("sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc", 100, "2021-01-01 22:20:00"),
    ],
)
def test_xrs_files_through_sunpy(goes_dir: Path, name: str, n: int, t0: str) -> None:
    s = read_xrs_flux(goes_dir / name)
    assert len(s) == n and s.index.is_monotonic_increasing
    assert abs((s.index[0] - pd.Timestamp(t0)).total_seconds()) < 0.01
    assert (s > 1e-9).all() and (s < 1e-3).all()


def test_xrs_quality_flags_and_bad_files(tmp_path: Path, goes_dir: Path) -> None:
    csv = tmp_path / "xrs.csv"
    csv.write_text(
        "time,xrsb_flux,xrsb_quality\n"
        "2021-01-01T00:00:00,1e-6,0\n"  # good
        "2021-01-01T00:01:00,2e-6,4\n"  # electron-contamination bit only: usable
        "2021-01-01T00:02:00,3e-6,2\n"  # bad_data
        "2021-01-01T00:03:00,4e-6,1\n"  # eclipse
        "2021-01-01T00:04:00,-9999,0\n"  # fill
    )
    s = read_xrs_flux(csv)
    assert s.tolist() == [1e-6, 2e-6] and s.attrs["dropped"] == 3
    empty = tmp_path / "go1520110607.fits"
    empty.write_bytes(b"")
    with pytest.raises(FitsReadError, match="go1520110607.fits"):
        read_xrs_flux(empty)
    trunc = tmp_path / "trunc.nc"
    trunc.write_bytes((goes_dir / "sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc").read_bytes()[:5000])
    with pytest.raises(FitsReadError, match="trunc.nc"):
        read_xrs_flux(trunc)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("time,other\n2021-01-01,1\n")
    with pytest.raises(ValueError, match=r"nocol\.csv.*xrsb"):
        read_xrs_flux(nocol)
    with pytest.raises(ValueError, match="channel"):
        read_xrs_flux(csv, channel="xrsc")


def test_real_browse_193_histogram(goes_dir: Path, data_dir: Path) -> None:
    """Class counts of the sample's 193 Å browse images (times from the file names)."""
    from helioforge.data.aia import parse_browse_name

    folder = data_dir / "aia" / "browse"
    if not folder.is_dir():
        pytest.skip(f"{folder} missing")
    times = [t for t, w in map(parse_browse_name, sorted(folder.glob("*.jpg"))) if w == 193]
    assert len(times) == 425
    flux = read_xrs_flux(goes_dir / "goes15_xrs_hourly_2010-2018.csv")
    events = read_event_list(goes_dir / "swpc_ftp_flares_20100101_20251115.csv")
    by_flux = class_histogram(label_images(times, flux=flux, source="flux")["class_index"])
    assert by_flux == {"A": 63, "B": 335, "C": 26, "M": 1, "X": 0, "unlabelled": 0}
    by_events = label_images(times, events=events, flux=flux, source="events")
    assert class_histogram(by_events["class_index"]) == {"A": 0, "B": 5, "C": 3, "M": 1, "X": 0, "unlabelled": 416}
    linked = by_events[by_events["class_index"] >= 0]
    assert ((linked["event_delay_min"] >= 0) & (linked["event_delay_min"] <= 7)).all()
