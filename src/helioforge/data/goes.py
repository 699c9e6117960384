"""GOES soft X-ray flare classes, event lists and X-ray flux (Ramunno et al. 2024, §2.2-2.4).

The NOAA flare class is the peak 1-8 Å (XRS-B) flux on a logarithmic scale:
A < 1e-7 ≤ B < 1e-6 ≤ C < 1e-5 ≤ M < 1e-4 ≤ X W/m² (NOAA SWPC, "GOES X-ray flux"; paper
§2.2), with the digits of a class string the multiplier (``M1.5`` = 1.5e-5 W/m²). Pre-2020
GOES-13/14/15 fluxes and the SWPC event lists of that time carry NOAA's operational scaling
(the classic class scale); the readers here keep the values as published.

Readers of the SWPC event lists (:func:`read_event_list`) and the XRS flux (:func:`read_xrs_flux`)
are here; labelling images with them is :mod:`helioforge.data.goes_labels`.
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
    "MAX_XRS_FLUX",
    "flux_to_class",
    "class_index",
    "goes_class_flux",
    "read_event_list",
    "read_xrs_flux",
    "flux_class_string",
]

logger = logging.getLogger(__name__)

#: GOES flare classes, weakest first; a class index is a position in this tuple.
FLARE_CLASSES = ("A", "B", "C", "M", "X")
#: Lower XRS-B flux edges of B, C, M and X, W/m² (NOAA; paper §2.2).
CLASS_EDGES_WM2 = (1e-7, 1e-6, 1e-5, 1e-4)
#: Flux of multiplier 1 of each class letter, W/m² (``A1.0`` = 1e-8 W/m²).
CLASS_BASE_WM2 = {"A": 1e-8, "B": 1e-7, "C": 1e-6, "M": 1e-5, "X": 1e-4}

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


# --------------------------------------------------------------------------- histograms
