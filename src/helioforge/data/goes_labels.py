"""GOES flare-class labels of images (Ramunno et al. 2024, §2.4), from the event lists and the
XRS-B flux read by :mod:`helioforge.data.goes`.

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
from typing import Any

import numpy as np
import pandas as pd

from helioforge.data.goes import FLARE_CLASSES, class_index, flux_class_string, flux_to_class

__all__ = [
    "LINK_TOLERANCE",
    "CLASSLESS_MAX_DELAY",
    "fill_event_flux",
    "link_events",
    "flux_labels",
    "label_images",
    "class_histogram",
]

logger = logging.getLogger(__name__)


#: The paper's image-to-flare-peak tolerance (§2.4): the image follows the peak by ≤ 7 min.
LINK_TOLERANCE = np.timedelta64(7, "m")


#: The paper's rule for an event listed without a class (§2.4): the XRS-B sample closest in time
#: after the peak, no more than 6 s after it.
CLASSLESS_MAX_DELAY = np.timedelta64(6, "s")


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
