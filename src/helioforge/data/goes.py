"""GOES soft X-ray flare classes and image labels (Ramunno et al. 2024, §2.2-2.4).

The NOAA flare class is the peak 1-8 Å (XRS-B) flux on a logarithmic scale:
A < 1e-7 ≤ B < 1e-6 ≤ C < 1e-5 ≤ M < 1e-4 ≤ X W/m² (NOAA SWPC, "GOES X-ray flux"; paper
§2.2), with the digits of a class string the multiplier (``M1.5`` = 1.5e-5 W/m²). Pre-2020
GOES-13/14/15 fluxes and the SWPC event lists of that time carry NOAA's operational scaling
(the classic class scale); the readers here keep the values as published.

Two ways of labelling images are offered (:func:`label_images`):

``events`` (the paper, §2.4)
    For every flare peak in an event list, the closest image at or after the peak within
    7 minutes (0 ≤ t_image − t_peak ≤ 7 min, the SDOMLv2 6-min cadence plus a margin) is
    labelled with that flare's class (:func:`link_events`). Other images stay unlabelled.
``flux``
    Every image gets the class of the GOES XRS-B flux sample nearest in time
    (:func:`flux_labels`); an image with no flux sample within the gap stays unlabelled.

Unlabelled images carry class index -1, never a guessed class.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from helioforge.data.fits import FitsReadError

__all__ = [
    "FLARE_CLASSES",
    "CLASS_EDGES_WM2",
    "CLASS_BASE_WM2",
    "LINK_TOLERANCE",
    "MAX_XRS_FLUX",
    "flux_to_class",
    "class_index",
    "goes_class_flux",
    "read_event_list",
    "read_xrs_flux",
    "link_events",
    "fill_event_flux",
    "flux_class_string",
    "CLASSLESS_MAX_DELAY",
    "flux_labels",
    "label_images",
    "class_histogram",
]

logger = logging.getLogger(__name__)

#: GOES flare classes, weakest first; a class index is a position in this tuple.
FLARE_CLASSES = ("A", "B", "C", "M", "X")
#: Lower XRS-B flux edges of B, C, M and X, W/m² (NOAA; paper §2.2).
CLASS_EDGES_WM2 = (1e-7, 1e-6, 1e-5, 1e-4)
#: Flux of multiplier 1 of each class letter, W/m² (``A1.0`` = 1e-8 W/m²).
CLASS_BASE_WM2 = {"A": 1e-8, "B": 1e-7, "C": 1e-6, "M": 1e-5, "X": 1e-4}
#: The paper's image-to-flare-peak tolerance (§2.4): the image follows the peak by ≤ 7 min.
LINK_TOLERANCE = np.timedelta64(7, "m")

_CLASS_RE = re.compile(r"^\s*([ABCMX])\s*(\d+(?:\.\d*)?|\.\d+)\s*$", re.IGNORECASE)

# --------------------------------------------------------------------------- classes


def flux_to_class(flux: Any) -> np.ndarray:
    """GOES class index (into :data:`FLARE_CLASSES`) of XRS-B fluxes.

    A < 1e-7 ≤ B < 1e-6 ≤ C < 1e-5 ≤ M < 1e-4 ≤ X: a flux exactly on an edge belongs to the
    stronger class (1e-6 W/m² is C1.0). NaN, ±inf and non-positive fluxes give -1 (unlabelled).

    Parameters
    ----------
    flux : array_like
        XRS-B (1–8 Å) flux, W/m², scalar or any shape.

    Returns
    -------
    np.ndarray
        int64 of the input's shape (0-d for a scalar), 0–4 or -1.
    """
    f = np.asarray(flux, dtype=np.float64)
    out = np.searchsorted(np.asarray(CLASS_EDGES_WM2), f, side="right").astype(np.int64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(f) | (f <= 0)
    return np.asarray(np.where(bad, -1, out), dtype=np.int64)


def class_index(letter: str) -> int:
    """Index of a class letter in :data:`FLARE_CLASSES` (``"M"`` → 3), case-insensitive.

    Parameters
    ----------
    letter : str
        ``A``, ``B``, ``C``, ``M`` or ``X`` (blanks ignored).

    Returns
    -------
    int
        0–4.

    Raises
    ------
    ValueError
        For anything but one of the letters A, B, C, M, X.
    """
    key = str(letter).strip().upper()
    if key not in FLARE_CLASSES:
        raise ValueError(f"not a GOES flare class letter: {letter!r} (expected one of {', '.join(FLARE_CLASSES)})")
    return FLARE_CLASSES.index(key)


def goes_class_flux(goes_class: str) -> float:
    """Peak XRS-B flux of a GOES class string: ``"M1.5"`` → 1.5e-5 W/m².

    The letter gives the decade (:data:`CLASS_BASE_WM2`), the number the multiplier (NOAA;
    ``X10`` = 1e-3 W/m² is allowed). Case and blanks are ignored.

    Parameters
    ----------
    goes_class : str
        Class string, e.g. ``"M1.5"``.

    Returns
    -------
    float
        Flux, W/m².

    Raises
    ------
    ValueError
        Naming the string for anything else (``""``, ``"M"``, ``"Q1.0"``, ``"M-1"``, ``None``, a
        zero multiplier).
    """
    m = _CLASS_RE.match(str(goes_class)) if goes_class is not None else None
    if not m:
        raise ValueError(f"not a GOES class string: {goes_class!r} (expected a letter A/B/C/M/X and a multiplier, e.g. 'M1.5')")
    mult = float(m.group(2))
    if not (mult > 0 and math.isfinite(mult)):
        raise ValueError(f"not a GOES class string: {goes_class!r} (multiplier must be > 0)")
    return mult * CLASS_BASE_WM2[m.group(1).upper()]


def _normalise_class(goes_class: str) -> str:
    m = _CLASS_RE.match(str(goes_class))
    assert m is not None
    return f"{m.group(1).upper()}{m.group(2)}"


# --------------------------------------------------------------------------- event lists


def _to_naive_ns(values: Any, *, fmt: str | None = None) -> pd.Series:
    s = pd.to_datetime(values, errors="coerce", utc=True, format=fmt)
    s = pd.Series(s).dt.tz_convert("UTC").dt.tz_localize(None)
    return s.astype("datetime64[ns]")


def _hhmm_times(date: pd.Series, hhmm: pd.Series) -> pd.Series:
    """``YYYYMMDD`` + ``HHMM`` strings → datetime64[ns]; blanks and ``////`` give NaT."""
    d = date.astype("string").str.strip()
    h = hhmm.astype("string").str.strip().str.replace(r"\.0$", "", regex=True)
    h = h.where(h.str.fullmatch(r"\d{1,4}").fillna(False)).str.zfill(4)
    return _to_naive_ns(d + h, fmt="%Y%m%d%H%M")


def _find(columns: Iterable[str], *names: str) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def read_event_list(path: str | Path) -> pd.DataFrame:
    """Read a GOES flare list (NOAA SWPC or HEK style) into one table.

    Layouts recognised by their columns:

    * SWPC with a date and HHMM times (``date``, ``start_time``, ``max_time``, ``end_time``,
      ``goes_class``, ``noaa_ar``; e.g. ``swpc_flarelist_2010-2021.csv``). A peak or end
      HHMM earlier than the start is on the next day.
    * SWPC with timestamps (``start_time``, ``peak_time``, ``end_time``, a class column
      ``label``/``goes_class``/``class``, ``noaa_ar``; e.g.
      ``swpc_ftp_flares_20100101_20251115.csv``; mixed ``2010-01-01 12:02:00`` and
      ``2025/11/15 20:20`` forms are parsed).
    * HEK (``event_peaktime``, ``event_starttime``, ``event_endtime``, ``fl_goescls``,
      ``ar_noaanum``), as returned by ``sunpy.net.hek`` and written to CSV.

    Returns
    -------
    DataFrame sorted by peak time with columns ``peak_time``, ``start_time``, ``end_time``
    (datetime64[ns], UTC, tz-naive), ``goes_class`` (as published, normalised: e.g.
    ``"M1.5"``), ``peak_flux`` (W/m², :func:`goes_class_flux`), ``flare_class`` (the letter
    of ``peak_flux`` by :func:`flux_to_class`, so that a list's non-standard strings with a
    multiplier below 1 — ``"C0.9"`` = 9e-7 W/m², 10 rows of the 2020-2025 SWPC list — get the
    class of their flux, B; ``df.attrs['nonstandard']`` counts them), ``noaa_ar`` (nullable
    Int64, NA for 0/blank). Events listed *without* a class (a blank
    ``fl_goescls``, ``-``) are kept with ``goes_class`` = ``flare_class`` = ``""`` and a NaN
    ``peak_flux`` (``df.attrs['classless']`` counts them): the paper gives them the XRS-B flux
    just after the peak (:func:`fill_event_flux`). Rows whose class string is malformed or
    whose peak time cannot be parsed are dropped; their number is logged and kept in
    ``df.attrs['dropped']``, per reason in ``df.attrs['skipped']`` (``df.attrs['layout']`` names
    the layout, ``df.attrs['path']`` the file).

    Raises
    ------
    FileNotFoundError : no such file.
    ValueError : an empty or unreadable file, or an unknown layout (the message names the
        file and the columns found).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty flare list (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: not a readable CSV flare list ({exc})") from None
    cols = list(raw.columns)
    peak_hhmm = _find(cols, "max_time", "peak_time")
    date_col = _find(cols, "date")
    class_col = _find(cols, "goes_class", "label", "class", "fl_goescls", "xray_class")
    if date_col and peak_hhmm and class_col and _find(cols, "start_time") and _looks_hhmm(raw[peak_hhmm]):
        layout = "swpc-hhmm"
        start = _hhmm_times(raw[date_col], raw[_find(cols, "start_time")])
        peak = _hhmm_times(raw[date_col], raw[peak_hhmm])
        end_col = _find(cols, "end_time")
        end = _hhmm_times(raw[date_col], raw[end_col]) if end_col else pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
        day = np.timedelta64(1, "D")
        peak = peak.where(~(peak < start), peak + day)
        end = end.where(~(end < start), end + day)
        ar_col = _find(cols, "noaa_ar", "region", "noaa")
    elif _find(cols, "event_peaktime") and _find(cols, "fl_goescls"):
        layout = "hek"
        peak = _to_naive_ns(raw[_find(cols, "event_peaktime")], fmt="mixed")
        start = _to_naive_ns(raw[_find(cols, "event_starttime")], fmt="mixed") if _find(cols, "event_starttime") else None
        end = _to_naive_ns(raw[_find(cols, "event_endtime")], fmt="mixed") if _find(cols, "event_endtime") else None
        class_col = _find(cols, "fl_goescls")
        ar_col = _find(cols, "ar_noaanum")
    elif _find(cols, "peak_time") and class_col:
        layout = "swpc-iso"
        peak = _to_naive_ns(raw[_find(cols, "peak_time")], fmt="mixed")
        start = _to_naive_ns(raw[_find(cols, "start_time")], fmt="mixed") if _find(cols, "start_time") else None
        end = _to_naive_ns(raw[_find(cols, "end_time")], fmt="mixed") if _find(cols, "end_time") else None
        ar_col = _find(cols, "noaa_ar", "region", "noaa")
    else:
        raise ValueError(
            f"{path}: unknown flare-list layout; columns found: {cols} (expected SWPC date/start_time/max_time/"
            "goes_class, SWPC start_time/peak_time/end_time/label, or HEK event_peaktime/fl_goescls)"
        )
    nat = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    start = nat if start is None else start
    end = nat if end is None else end
    classes = raw[class_col].astype(str).str.strip()
    flux = pd.Series([_flux_or_nan(c) for c in classes], index=raw.index, dtype=np.float64)
    classless = classes.str.lower().isin(_NO_CLASS)
    ok_class = flux.notna() | classless
    ok = ok_class & peak.notna()
    n_bad_class = int((~ok_class).sum())
    n_bad_time = int((ok_class & peak.isna()).sum())
    skipped: dict[str, int] = {}
    if n_bad_class or n_bad_time:
        examples = sorted(set(classes[~ok_class].tolist()))[:5]
        parts = []
        if n_bad_class:
            parts.append(f"{n_bad_class} with an unparsable GOES class (e.g. {', '.join(map(repr, examples))})")
            skipped["unparsable GOES class"] = n_bad_class
        if n_bad_time:
            parts.append(f"{n_bad_time} without a parsable peak time")
            skipped["no parsable peak time"] = n_bad_time
        logger.warning("%s: %d row(s) dropped: %s", path.name, n_bad_class + n_bad_time, "; ".join(parts))
    if ar_col:
        ar = pd.to_numeric(raw[ar_col].str.strip(), errors="coerce")
        ar = ar.where(ar > 0).astype("Int64")
    else:
        ar = pd.Series(pd.NA, index=raw.index, dtype="Int64")
    out = pd.DataFrame(
        {
            "peak_time": peak[ok].to_numpy(dtype="datetime64[ns]"),
            "start_time": start[ok].to_numpy(dtype="datetime64[ns]"),
            "end_time": end[ok].to_numpy(dtype="datetime64[ns]"),
            "goes_class": ["" if c.lower() in _NO_CLASS else _normalise_class(c) for c in classes[ok]],
            "flare_class": [FLARE_CLASSES[i] if i >= 0 else "" for i in flux_to_class(flux[ok].to_numpy())],
            "peak_flux": flux[ok].to_numpy(dtype=np.float64),
            "noaa_ar": ar[ok].to_numpy(),
        }
    )
    out["noaa_ar"] = out["noaa_ar"].astype("Int64")
    out = out.sort_values("peak_time", kind="stable").reset_index(drop=True)
    has_class = out["goes_class"] != ""
    nonstandard = int((has_class & (out["goes_class"].str[:1] != out["flare_class"])).sum())
    n_classless = int((~has_class).sum())
    if n_classless:
        logger.info("%s: %d event(s) without a GOES class (the paper's rule gives them the XRS-B flux "
                    "≤ 6 s after the peak: fill_event_flux)", path.name, n_classless)
    if nonstandard:
        logger.info(
            "%s: %d class string(s) with a multiplier below 1 (e.g. 'C0.9' = 9e-7 W/m²) take the class of their flux",
            path.name,
            nonstandard,
        )
    out.attrs.update({"path": str(path), "layout": layout, "dropped": n_bad_class + n_bad_time, "nonstandard": nonstandard,
                      "classless": n_classless, "skipped": skipped})
    return out


#: Class strings that mean "no class given" (HEK's empty ``fl_goescls``, SWPC's ``-``): such
#: events are kept with a NaN flux for :func:`fill_event_flux`, not dropped as malformed.
_NO_CLASS = frozenset({"", "-", "--", "none", "nan", "null", "na", "n/a"})


def _flux_or_nan(goes_class: str) -> float:
    try:
        return goes_class_flux(goes_class)
    except ValueError:
        return float("nan")


def _looks_hhmm(col: pd.Series) -> bool:
    sample = col.astype(str).str.strip()
    sample = sample[sample != ""].head(50)
    return len(sample) > 0 and bool(sample.str.fullmatch(r"\d{3,4}").mean() > 0.8)


# --------------------------------------------------------------------------- XRS flux

#: Quality-flag bits that make a sample unusable: GOES-R XRS L2 ``flag_masks`` bit 0 =
#: eclipse, bit 1 = bad_data (values 0 = good_data); bits ≥ 2 describe the electron-
#: contamination correction and leave the flux usable (GOES-R XRS L2 user guide, netCDF
#: ``xrsb_flag`` attributes).
XRS_BAD_QUALITY_BITS = 0b11


#: Largest GOES XRS flux taken as real, W/m²: the largest flare measured (2003-11-04, X28 on the
#: saturated GOES scale, ≈ X40 re-estimated) is 4e-3 W/m² in 1–8 Å; larger samples (1e30 fill
#: values, a wrong unit) are dropped like the fill values ≤ 0.
MAX_XRS_FLUX = 1e-2


def _clean_flux(flux: pd.Series, quality: pd.Series | None, path: Path, channel: str) -> pd.Series:
    idx = pd.DatetimeIndex(flux.index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    flux = pd.Series(pd.to_numeric(flux, errors="coerce").to_numpy(dtype=np.float64), index=idx.astype("datetime64[ns]"))
    with np.errstate(invalid="ignore"):
        good = np.isfinite(flux.to_numpy()) & (flux.to_numpy() > 0) & (flux.to_numpy() <= MAX_XRS_FLUX) & flux.index.notna()
    if np.isfinite(flux.to_numpy()).any() and not good.any():
        logger.warning("%s: no %s sample between 0 and %.0e W/m² (all fill values or another unit)", path, channel, MAX_XRS_FLUX)
    if quality is not None:
        q = pd.to_numeric(quality, errors="coerce").to_numpy()
        qbad = ~np.isfinite(q) | ((np.nan_to_num(q, nan=0).astype(np.int64) & XRS_BAD_QUALITY_BITS) != 0)
        good &= ~qbad
    out = flux[good]
    out = out[~out.index.duplicated(keep="first")].sort_index()
    out.name = channel
    out.attrs.update({"units": "W/m2", "path": str(path), "dropped": int((~good).sum())})
    return out


def read_xrs_flux(path: str | Path, channel: str = "xrsb") -> pd.Series:
    """GOES XRS flux of one channel, W/m², on a sorted tz-naive UTC DatetimeIndex.

    Parameters
    ----------
    path : a CSV with a ``time`` column and a flux column whose name starts with the channel
        (``xrsb_1_8A_Wm2`` in ``goes15_xrs_hourly_2010-2018.csv``; an optional
        ``<channel>_quality``/``<channel>_flag`` column is honoured), or any file that
        ``sunpy.timeseries.TimeSeries`` reads as GOES XRS (``go15YYYYMMDD.fits[.gz]``, GOES-R
        ``sci_xrsf-l2-*.nc``; columns ``xrsa``/``xrsb`` and, for GOES-R, ``*_quality``).
    channel : ``"xrsb"`` (1-8 Å, the flare-class channel) or ``"xrsa"`` (0.5-4 Å).

    Returns
    -------
    Series named ``channel`` (``attrs['units'] = 'W/m2'``): NaN, fill values (≤ 0 or above
    :data:`MAX_XRS_FLUX`, which no flare reaches) and samples whose quality flag has a bit of :data:`XRS_BAD_QUALITY_BITS` set are dropped
    (``attrs['dropped']`` counts them), duplicated times keep the first sample.

    Raises
    ------
    FileNotFoundError : no such file.
    ValueError : unknown channel; a CSV without a time or flux column.
    FitsReadError : a non-CSV file that sunpy cannot read as an XRS time series (empty,
        truncated, another instrument); the message names the file.
    """
    path = Path(path)
    channel = str(channel).lower()
    if channel not in ("xrsa", "xrsb"):
        raise ValueError(f"{path}: channel must be 'xrsa' or 'xrsb', got {channel!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise FitsReadError(path, "empty file (0 bytes)")
    if path.name.lower().endswith((".csv", ".csv.gz", ".txt")):
        try:
            raw = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a readable XRS CSV ({exc})") from None
        tcol = _find(raw.columns, "time", "time_tag", "datetime", "date")
        fcols = [c for c in raw.columns if c.lower().startswith(channel) and not c.lower().endswith(("quality", "flag", "flags"))]
        if tcol is None or not fcols:
            raise ValueError(f"{path}: XRS CSV needs a time column and a {channel}* flux column; columns found: {list(raw.columns)}")
        qcol = _find(raw.columns, f"{channel}_quality", f"{channel}_flag", f"{channel}_flags")
        times = _to_naive_ns(raw[tcol], fmt="mixed")
        flux = pd.Series(raw[fcols[0]].to_numpy(), index=pd.DatetimeIndex(times))
        quality = None if qcol is None else pd.Series(raw[qcol].to_numpy(), index=flux.index)
        return _clean_flux(flux, quality, path, channel)
    try:
        import sunpy.timeseries

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = sunpy.timeseries.TimeSeries(str(path))
        if isinstance(ts, list):
            raise ValueError(f"{len(ts)} time series in one file")
        df = ts.to_dataframe()
    except Exception as exc:  # noqa: BLE001 - sunpy raises many types for a bad file
        raise FitsReadError(path, f"not a GOES XRS file sunpy can read ({type(exc).__name__}: {exc})") from None
    if channel not in df.columns:
        raise FitsReadError(path, f"no {channel} column in the time series; columns found: {list(df.columns)}")
    qcol = _find(df.columns, f"{channel}_quality", f"{channel}_flag")
    return _clean_flux(df[channel], None if qcol is None else df[qcol], path, channel)


# --------------------------------------------------------------------------- linking

#: The paper's rule for an event listed without a class (§2.4): the XRS-B sample closest in time
#: after the peak, no more than 6 s after it.
CLASSLESS_MAX_DELAY = np.timedelta64(6, "s")


def flux_class_string(flux_wm2: float) -> str:
    """GOES class string of an XRS-B flux, with one decimal: 2.2e-4 W/m² → ``"X2.2"``.

    A multiplier that rounds to 10 moves to the next class (9.96e-6 → ``"M1.0"``), except for X.

    Parameters
    ----------
    flux_wm2 : float
        Flux, W/m².

    Returns
    -------
    str
        Letter and multiplier, e.g. ``"C3.4"``.

    Raises
    ------
    ValueError
        For a non-finite or non-positive flux.
    """
    f = float(flux_wm2)
    if not (math.isfinite(f) and f > 0):
        raise ValueError(f"no GOES class for a flux of {flux_wm2!r} W/m² (must be finite and > 0)")
    letter = FLARE_CLASSES[int(flux_to_class(f))]
    mult = round(f / CLASS_BASE_WM2[letter], 1)
    if mult >= 10.0 and letter != "X":  # 9.96e-6 rounds to M1.0, not C10.0
        letter = FLARE_CLASSES[FLARE_CLASSES.index(letter) + 1]
        mult = round(f / CLASS_BASE_WM2[letter], 1)
    return f"{letter}{mult:.1f}"


def fill_event_flux(
    events: pd.DataFrame,
    flux: pd.Series | None,
    max_delay: np.timedelta64 = CLASSLESS_MAX_DELAY,
) -> pd.DataFrame:
    """Give events listed without a class the XRS-B flux just after their peak (paper §2.4).

    Ramunno et al. (2024) associate each HEK flare peak that has no GOES class with "the GOES
    X-ray emission closest in time, so that the values from GOES are always recorded within a
    time range of less than 6 seconds after the flare" (about 70 % of their labelled events).
    For every row with a NaN ``peak_flux`` the first flux sample with
    ``0 ≤ t_sample − t_peak ≤ max_delay`` gives ``peak_flux``, ``goes_class``
    (:func:`flux_class_string`) and ``flare_class``; ``class_source`` is ``"xrs"`` for those and
    ``"list"`` for the rows that had a class.

    Parameters
    ----------
    events : as from :func:`read_event_list`.
    flux : XRS-B flux, W/m², on a DatetimeIndex (:func:`read_xrs_flux`), or ``None``.
    max_delay : the largest sample delay after the peak (6 s, paper).

    Returns
    -------
    DataFrame: the rows that have a class (listed or filled), in the input order, with the
    extra ``class_source`` column. ``attrs`` keeps those of ``events`` plus ``classless``
    (rows without a class in the input), ``classless_filled`` and ``skipped`` updated with
    the rows still without a class by reason (``"no class and no flux series"``, ``"no class
    and no XRS-B sample ≤ 6 s after the peak"``, or — for a series whose median cadence is
    coarser than ``max_delay``, e.g. an hourly mean, which cannot give a peak flux — every
    class-less event, with the cadence in the reason and a log line).

    Raises
    ------
    ValueError : ``events`` lacks ``peak_time``/``peak_flux``, or a negative ``max_delay``.
    """
    missing = [c for c in ("peak_time", "peak_flux") if c not in events.columns]
    if missing:
        raise ValueError(f"events table lacks column(s) {missing}; columns found: {list(events.columns)}")
    tol = np.timedelta64(max_delay).astype("timedelta64[ns]").astype(np.int64)
    if tol < 0:
        raise ValueError(f"max_delay must be >= 0, got {max_delay}")
    out = events.copy()
    out.attrs = dict(events.attrs)
    need = ~np.isfinite(pd.to_numeric(out["peak_flux"], errors="coerce").to_numpy(dtype=np.float64))
    out["class_source"] = np.where(need, "", "list")
    skipped = dict(out.attrs.get("skipped", {}))
    n_need = int(need.sum())
    filled = 0
    cadence_s = None
    if flux is not None and len(flux) > 1:
        t_all = np.sort(pd.DatetimeIndex(flux.index).to_numpy(dtype="datetime64[ns]").astype(np.int64))
        cadence_s = float(np.median(np.diff(t_all))) / 1e9
    why_none = f"no class and no XRS-B sample ≤ {tol / 1e9:g} s after the peak"
    if n_need and cadence_s is not None and cadence_s > tol / 1e9:
        # an hourly mean can sit a few seconds after a peak by chance: it is not the peak flux
        skipped[f"no class, and the flux series' cadence ({cadence_s:.0f} s) is coarser than {tol / 1e9:g} s"] = n_need
        logger.warning("%d event(s) without a class stay unlabelled: the flux series' cadence (%.0f s) is coarser "
                       "than the paper's %g s after the peak (use a full-cadence XRS file, e.g. go15YYYYMMDD.fits)",
                       n_need, cadence_s, tol / 1e9)
    elif n_need and flux is not None and len(flux):
        s = pd.Series(pd.to_numeric(flux, errors="coerce").to_numpy(dtype=np.float64), index=pd.DatetimeIndex(flux.index))
        if s.index.tz is not None:
            s.index = s.index.tz_convert("UTC").tz_localize(None)
        s = s[np.isfinite(s.to_numpy()) & (s.to_numpy() > 0) & s.index.notna()].sort_index()
        st = s.index.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        pk = _times_ns(out["peak_time"])[need]
        ok_t = ~np.isnat(pk)
        k = np.searchsorted(st, pk.astype(np.int64), side="left")
        kc = np.clip(k, 0, max(len(st) - 1, 0))
        hit = ok_t & (k < len(st)) & (len(st) > 0)
        if len(st):
            hit &= (st[kc] - pk.astype(np.int64)) <= tol
        rows = np.nonzero(need)[0][hit]
        vals = s.to_numpy()[kc[hit]]
        out.iloc[rows, out.columns.get_loc("peak_flux")] = vals
        out.iloc[rows, out.columns.get_loc("goes_class")] = [flux_class_string(v) for v in vals]
        out.iloc[rows, out.columns.get_loc("flare_class")] = [FLARE_CLASSES[i] for i in flux_to_class(vals)]
        out.iloc[rows, out.columns.get_loc("class_source")] = "xrs"
        filled = int(hit.sum())
        if filled < n_need:
            skipped[why_none] = n_need - filled
    elif n_need:
        skipped["no class and no flux series"] = n_need
    keep = out["class_source"] != ""
    result = out[keep.to_numpy()].copy()
    result.attrs = {**out.attrs, "classless": n_need, "classless_filled": filled, "skipped": skipped}
    return result




def _times_ns(image_times: Any) -> np.ndarray:
    t = pd.to_datetime(pd.Series(np.asarray(image_times).ravel()), errors="coerce")
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return t.to_numpy(dtype="datetime64[ns]")


def link_events(
    image_times: Any,
    events: pd.DataFrame,
    tolerance: np.timedelta64 = LINK_TOLERANCE,
) -> pd.DataFrame:
    """Link flare peaks to images by the paper's rule (Ramunno et al. 2024, §2.4).

    For every flare peak the closest image at or after the peak within ``tolerance`` —
    ``0 ≤ t_image − t_peak ≤ tolerance`` (7 min: the SDOMLv2 6-min cadence plus a margin) —
    gets that flare's label; an image before the peak is never linked. Events without a class
    (NaN ``peak_flux``; :func:`fill_event_flux` fills them from the flux) are ignored. When several flares
    link to the same image the strongest (highest ``peak_flux``) is kept, then the one with
    the shortest delay, then the earliest in ``events``; ``n_linked`` counts them. Images
    with equal times: the first in input order is linked.

    Parameters
    ----------
    image_times : (n,) image times, anything pandas turns into datetimes (UTC; tz-aware
        values are converted to UTC). NaT images are never linked.
    events : a table with ``peak_time``, ``goes_class``, ``flare_class`` and ``peak_flux``
        (as from :func:`read_event_list`).
    tolerance : the largest delay of the image after the peak (inclusive).

    Returns
    -------
    DataFrame with one row per image in input order: ``time``, ``event_index`` (index label
    of the linked row of ``events``, -1 none), ``goes_class`` (``""`` none), ``flare_class``
    (``""`` none), ``class_index`` (-1 none), ``peak_flux`` (W/m², NaN none),
    ``delay_min`` (t_image − t_peak in minutes, NaN none), ``n_linked``.

    Raises
    ------
    ValueError : ``events`` lacks a needed column, or a negative tolerance.
    """
    needed = ("peak_time", "goes_class", "flare_class", "peak_flux")
    missing = [c for c in needed if c not in events.columns]
    if missing:
        raise ValueError(f"events table lacks column(s) {missing}; columns found: {list(events.columns)}")
    tol = np.timedelta64(tolerance).astype("timedelta64[ns]")
    if tol < np.timedelta64(0, "ns"):
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    times = _times_ns(image_times)
    n = len(times)
    valid_img = ~np.isnat(times)
    img_pos = np.nonzero(valid_img)[0]
    order = img_pos[np.argsort(times[img_pos], kind="stable")]
    sorted_t = times[order]
    peaks = _times_ns(events["peak_time"])
    flux = pd.to_numeric(events["peak_flux"], errors="coerce").to_numpy(dtype=np.float64)
    # an event without a class (NaN flux, see fill_event_flux) labels nothing
    peaks = np.where(np.isfinite(flux), peaks, np.datetime64("NaT"))
    best_event = np.full(n, -1, dtype=np.int64)  # positional
    best_flux = np.full(n, -np.inf)
    best_delay = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    n_linked = np.zeros(n, dtype=np.int64)
    if len(sorted_t):
        for e in np.argsort(peaks, kind="stable"):
            p = peaks[e]
            if np.isnat(p):
                continue
            k = int(np.searchsorted(sorted_t, p, side="left"))
            if k >= len(sorted_t):
                continue
            delay = (sorted_t[k] - p).astype(np.int64)
            if delay > tol.astype(np.int64):
                continue
            i = order[k]
            n_linked[i] += 1
            f = flux[e] if np.isfinite(flux[e]) else -np.inf
            # strongest wins; equal flux: shortest delay; still equal: the first seen
            if best_event[i] < 0 or f > best_flux[i] or (f == best_flux[i] and delay < best_delay[i]):
                best_event[i], best_flux[i], best_delay[i] = e, f, delay
    linked = best_event >= 0
    labels = events.index.to_numpy()
    gc = events["goes_class"].astype(str).to_numpy()
    fc = events["flare_class"].astype(str).to_numpy()
    out = pd.DataFrame(
        {
            "time": times,
            "event_index": np.where(linked, labels[np.maximum(best_event, 0)] if len(labels) else -1, -1),
            "goes_class": np.where(linked, gc[np.maximum(best_event, 0)] if len(gc) else "", ""),
            "flare_class": np.where(linked, fc[np.maximum(best_event, 0)] if len(fc) else "", ""),
            "peak_flux": np.where(linked, flux[np.maximum(best_event, 0)] if len(flux) else np.nan, np.nan),
            "delay_min": np.where(linked, best_delay / 6e10, np.nan),
            "n_linked": n_linked,
        }
    )
    out.insert(4, "class_index", [class_index(c) if c else -1 for c in out["flare_class"]])
    out["class_index"] = out["class_index"].astype(np.int64)
    return out


def _default_max_gap(index: pd.DatetimeIndex) -> np.timedelta64:
    diffs = np.diff(index.to_numpy(dtype="datetime64[ns]")).astype(np.int64)
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        raise ValueError("flux series has fewer than 2 distinct times: pass max_gap")
    cadence = float(np.median(diffs))
    return np.timedelta64(int(0.5 * cadence + max(1e9, 0.05 * cadence)), "ns")


def flux_labels(
    image_times: Any,
    flux: pd.Series,
    max_gap: np.timedelta64 | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """log10 XRS-B flux and GOES class of each image from the flux sample nearest in time.

    Parameters
    ----------
    image_times : (n,) image times (UTC).
    flux : XRS-B flux in W/m² on a DatetimeIndex (as from :func:`read_xrs_flux`); NaN and
        non-positive samples are ignored.
    max_gap : largest |t_image − t_sample| accepted. Default: half the median cadence of
        the series plus a margin of max(1 s, 5 % of the cadence), so that an hourly mean
        (stamped mid-hour) labels the images inside its hour (±33 min) and a 1-min series
        only images within ~32 s of a sample; a data gap leaves its images unlabelled.

    Returns
    -------
    log10_flux : (n,) float64, log10 of W/m², NaN where unlabelled.
    class_index : (n,) int64 index into :data:`FLARE_CLASSES` (:func:`flux_to_class`), -1
        where unlabelled. Equidistant samples: the earlier one is used.

    Raises
    ------
    ValueError : a series with < 2 samples and no ``max_gap``.
    """
    times = _times_ns(image_times)
    n = len(times)
    s = pd.Series(pd.to_numeric(flux, errors="coerce").to_numpy(dtype=np.float64), index=pd.DatetimeIndex(flux.index))
    if s.index.tz is not None:
        s.index = s.index.tz_convert("UTC").tz_localize(None)
    s = s[np.isfinite(s.to_numpy()) & (s.to_numpy() > 0) & s.index.notna()].sort_index()
    log10_flux = np.full(n, np.nan)
    if len(s) == 0:
        return log10_flux, np.full(n, -1, dtype=np.int64)
    gap = _default_max_gap(s.index) if max_gap is None else np.timedelta64(max_gap)
    gap_ns = gap.astype("timedelta64[ns]").astype(np.int64)
    st = s.index.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    values = s.to_numpy()
    ok = ~np.isnat(times)
    t = times[ok].astype(np.int64)
    right = np.searchsorted(st, t, side="left")
    left = np.clip(right - 1, 0, len(st) - 1)
    right_c = np.clip(right, 0, len(st) - 1)
    d_left = np.abs(t - st[left])
    d_right = np.abs(st[right_c] - t)
    use_right = d_right < d_left
    nearest = np.where(use_right, right_c, left)
    dist = np.where(use_right, d_right, d_left)
    val = np.where(dist <= gap_ns, np.log10(values[nearest]), np.nan)
    log10_flux[ok] = val
    classes = flux_to_class(np.where(np.isfinite(log10_flux), 10.0**log10_flux, np.nan))
    return log10_flux, classes


def label_images(
    image_times: Any,
    *,
    events: pd.DataFrame | None = None,
    flux: pd.Series | None = None,
    source: str = "flux",
    tolerance: np.timedelta64 = LINK_TOLERANCE,
    max_gap: np.timedelta64 | None = None,
    classless_max_delay: np.timedelta64 = CLASSLESS_MAX_DELAY,
) -> pd.DataFrame:
    """GOES flare-class labels of images (paper §2.4, and a flux-based alternative).

    Parameters
    ----------
    image_times : (n,) image times (UTC).
    events : flare list (:func:`read_event_list`), needed for ``source`` with ``events``.
        Events without a class get the XRS-B flux ≤ ``classless_max_delay`` after their peak
        (:func:`fill_event_flux`, paper §2.4) when ``flux`` is given; the others are dropped.
    flux : XRS-B flux series (:func:`read_xrs_flux`), needed for ``source`` with ``flux``.
    source : ``"events"`` — the paper's rule: only images linked to a flare peak
        (:func:`link_events`) are labelled, with that flare's class; ``"flux"`` — every
        image by the XRS-B flux at its time (:func:`flux_labels`); ``"events+flux"`` — the
        event label where linked, else the flux label.
    tolerance : image delay after a flare peak for ``events`` (7 min, paper §2.4).
    max_gap : for the flux lookup, see :func:`flux_labels`.
    classless_max_delay : see :func:`fill_event_flux` (6 s, paper).

    Returns
    -------
    DataFrame, one row per image in input order: ``time``, ``flare_class`` (letter or
    ``""``), ``class_index`` (-1 unlabelled), ``log10_flux`` (the continuous label, log10 W/m²,
    always the flux that gave the class: the linked flare's **peak** flux for an event label
    — the paper's continuous label — and the XRS-B flux at the image time for a flux label;
    NaN unlabelled), ``xrs_log10_flux`` (the XRS-B flux at the image time whenever a series
    is given, for reference; NaN otherwise), ``label_source`` (``"events"``, ``"flux"`` or
    ``""``), ``event_delay_min`` (NaN unless linked), ``goes_class`` (the linked event's class
    string or ``""``), ``event_index`` (-1 unless linked), ``unlabelled_reason`` (``""`` for
    labelled images; otherwise why: no observation time, no flare peak in the ``tolerance``
    before the image, a closer image took the flare, the image lies in a gap of the flux
    series or outside it). ``attrs['events']`` counts the events used
    (``listed``, ``classless``, ``classless_filled``, ``skipped`` per reason) when events are
    given.

    Raises
    ------
    ValueError : an unknown ``source``, or the events/flux it needs not given.
    """
    if source not in ("events", "flux", "events+flux"):
        raise ValueError(f"source must be 'events', 'flux' or 'events+flux', got {source!r}")
    if "events" in source and events is None:
        raise ValueError(f"source={source!r} needs an events table")
    if "flux" in source and flux is None:
        raise ValueError(f"source={source!r} needs a flux series")
    times = _times_ns(image_times)
    n = len(times)
    flare_class = np.full(n, "", dtype=object)
    cls = np.full(n, -1, dtype=np.int64)
    label_source = np.full(n, "", dtype=object)
    delay = np.full(n, np.nan)
    goes_cls = np.full(n, "", dtype=object)
    event_index = np.full(n, -1, dtype=np.int64)
    log10_flux = np.full(n, np.nan)
    xrs = np.full(n, np.nan)
    reason = np.where(np.isnat(times), "no observation time", "").astype(object)
    fcls = np.full(n, -1, dtype=np.int64)
    event_stats: dict[str, Any] | None = None
    if flux is not None:
        xrs, fcls = flux_labels(times, flux, max_gap=max_gap)
    if events is not None and "events" in source:
        ev = fill_event_flux(events, flux, max_delay=classless_max_delay)
        event_stats = {"listed": int(len(events)), "used": int(len(ev)), "classless": ev.attrs.get("classless", 0),
                       "classless_filled": ev.attrs.get("classless_filled", 0),
                       "skipped": dict(ev.attrs.get("skipped", {}))}
        linked = link_events(times, ev, tolerance=tolerance)
        hit = linked["class_index"].to_numpy() >= 0
        cls[hit] = linked["class_index"].to_numpy()[hit]
        flare_class[hit] = linked["flare_class"].to_numpy()[hit]
        label_source[hit] = "events"
        delay[hit] = linked["delay_min"].to_numpy()[hit]
        goes_cls[hit] = linked["goes_class"].to_numpy()[hit]
        evi = linked["event_index"].to_numpy()
        if evi.dtype.kind not in "iu":
            event_index = event_index.astype(object)
        event_index[hit] = evi[hit]
        with np.errstate(divide="ignore", invalid="ignore"):
            log10_flux[hit] = np.log10(linked["peak_flux"].to_numpy(dtype=np.float64)[hit])
        tol_min = np.timedelta64(tolerance).astype("timedelta64[s]").astype(np.int64) / 60.0
        peaks = np.sort(_times_ns(ev["peak_time"]).astype("datetime64[ns]"))
        peaks = peaks[~np.isnat(peaks)]
        for i in np.nonzero(~hit & ~np.isnat(times))[0]:
            k = np.searchsorted(peaks, times[i], side="right") - 1
            near = k >= 0 and (times[i] - peaks[k]) <= np.timedelta64(tolerance).astype("timedelta64[ns]")
            reason[i] = ("a closer image after the same flare peak took its label" if near
                         else f"no flare peak in the {tol_min:g} min before the image")
    if "flux" in source:
        take = (cls < 0) & (fcls >= 0)
        cls[take] = fcls[take]
        flare_class[take] = [FLARE_CLASSES[i] for i in fcls[take]]
        label_source[take] = "flux"
        log10_flux[take] = xrs[take]
        reason[take] = ""
        why = _flux_gap_reasons(times, flux, max_gap)
        left = (cls < 0) & ~np.isnat(times)
        reason[left] = [(f"{r}; " if r else "") + why[i] for i, r in zip(np.nonzero(left)[0], reason[left])]
    out = pd.DataFrame(
        {
            "time": times,
            "flare_class": flare_class.astype(str),
            "class_index": cls,
            "log10_flux": log10_flux,
            "xrs_log10_flux": xrs,
            "label_source": label_source.astype(str),
            "event_delay_min": delay,
            "goes_class": goes_cls.astype(str),
            "event_index": event_index,
            "unlabelled_reason": reason.astype(str),
        }
    )
    if event_stats is not None:
        out.attrs["events"] = event_stats
    return out


def _flux_gap_reasons(times: np.ndarray, flux: pd.Series, max_gap: np.timedelta64 | None) -> list[str]:
    """Why an image has no flux label: outside the series' time range or in one of its gaps."""
    idx = pd.DatetimeIndex(flux.index)
    vals = pd.to_numeric(flux, errors="coerce").to_numpy(dtype=np.float64)
    good = np.isfinite(vals) & (vals > 0)
    st = idx.to_numpy(dtype="datetime64[ns]")[good]
    st = np.sort(st[~np.isnat(st)])
    if len(st) == 0:
        return ["the flux series has no valid sample"] * len(times)
    gap = _default_max_gap(pd.DatetimeIndex(st)) if (max_gap is None and len(st) > 1) else np.timedelta64(max_gap or 0)
    gap = np.timedelta64(gap).astype("timedelta64[ns]")
    lo, hi = st[0] - gap, st[-1] + gap
    first, last = str(st[0].astype("datetime64[s]")), str(st[-1].astype("datetime64[s]"))
    gap_min = gap.astype(np.int64) / 6e10
    return [f"outside the flux series ({first} – {last})" if (t < lo or t > hi)
            else f"in a gap of the flux series (no sample within {gap_min:.0f} min)" for t in times]


# --------------------------------------------------------------------------- histograms


def class_histogram(class_index: Any) -> dict[str, int]:
    """Counts per GOES class: ``{"A": n, "B": n, "C": n, "M": n, "X": n, "unlabelled": n}``.

    Parameters
    ----------
    class_index : array_like
        Indices into :data:`FLARE_CLASSES` and -1 for unlabelled images, any shape (integer-valued
        floats accepted).

    Returns
    -------
    dict of str to int

    Raises
    ------
    ValueError
        For a non-integer value or an index outside -1..4.
    """
    c = np.asarray(class_index).ravel()
    if c.size and (not np.issubdtype(c.dtype, np.integer)):
        if not np.all(np.equal(np.mod(c, 1), 0)):
            raise ValueError("class indices must be integers")
        c = c.astype(np.int64)
    bad = (c < -1) | (c >= len(FLARE_CLASSES))
    if bad.any():
        raise ValueError(f"class indices must lie in -1..{len(FLARE_CLASSES) - 1}; found {sorted(set(c[bad].tolist()))[:5]}")
    out = {name: int((c == i).sum()) for i, name in enumerate(FLARE_CLASSES)}
    out["unlabelled"] = int((c == -1).sum())
    return out
