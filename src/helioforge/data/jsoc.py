"""SHARP downloads from JSOC (http://jsoc.stanford.edu) through the ``drms`` client.

A JSOC record-set query for SHARPs has three bracketed filters and a segment list:
``hmi.sharp_cea_720s[<HARPNUMs>][<T_REC range>@<cadence>][? <SQL on keywords> ?]{<segments>}``,
e.g. ``hmi.sharp_cea_720s[377][2011.02.15_00:00:00_TAI-2011.02.16_00:00:00_TAI@12m]{Br}``.
Times are JSOC TAI labels ``YYYY.MM.DD_HH:MM:SS_TAI``. Exports need an email address
registered at http://jsoc.stanford.edu/ajax/register_email.html. Source: the JSOC record-set
documentation and the ``drms`` documentation (Glogowski et al. 2019, JOSS 4, 1614).
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from pathlib import Path
from typing import Any, Sequence

__all__ = ["SHARP_SEGMENTS", "jsoc_time", "build_sharp_query", "fetch_sharp"]

logger = logging.getLogger(__name__)

#: Segments of ``hmi.sharp_cea_720s`` / ``hmi.sharp_720s`` that may be requested.
SHARP_SEGMENTS = frozenset(
    {
        "Br", "Bp", "Bt", "bitmap", "magnetogram", "conf_disambig", "Br_err", "Bp_err", "Bt_err",
        "field", "inclination", "azimuth", "disambig", "Dopplergram", "continuum",
    }
)  # fmt: skip

_JSOC_TIME = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})(?:_(\d{2}):(\d{2})(?::(\d{2}))?(?:\.\d*)?)?(?:_TAI)?$")
_CADENCE = re.compile(r"^\d+[smhd]$")
_SERIES = re.compile(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")


def _parse_time(value: str | _dt.datetime, what: str) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        t = value
    else:
        text = str(value).strip()
        m = _JSOC_TIME.match(text)
        if m:
            y, mo, d, hh, mm, ss = (int(g) if g else 0 for g in m.groups())
            try:
                return _dt.datetime(y, mo, d, hh, mm, ss)
            except ValueError as exc:
                raise ValueError(f"{what} time {text!r} is not a valid date: {exc}") from None
        try:
            t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{what} time {text!r} not understood; use ISO 8601 ('2011-02-15T00:00:00') "
                "or JSOC form ('2011.02.15_00:00:00_TAI')"
            ) from None
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t.replace(microsecond=0)


def jsoc_time(value: str | _dt.datetime) -> str:
    """Format a time as a JSOC TAI label ``YYYY.MM.DD_HH:MM:SS_TAI``.

    The clock reading is used as the TAI label as-is (no UTC→TAI leap second shift, 34–37 s,
    which is below the 12-min SHARP cadence); aware datetimes are first converted to UTC.
    Fractional seconds are dropped.

    Parameters
    ----------
    value : str or datetime.datetime
        ISO 8601 string (``'2011-02-15T00:00:00'``, ``'2011-02-15'``), JSOC label or ``datetime``.

    Returns
    -------
    str
        E.g. ``'2011.02.15_00:00:00_TAI'``.

    Raises
    ------
    ValueError
        For unparsable input.
    """
    return _parse_time(value, "given").strftime("%Y.%m.%d_%H:%M:%S_TAI")


def _int_list(values: Sequence[int], what: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = [values]  # type: ignore[list-item]
    out: list[int] = []
    for v in values:
        try:
            iv = int(v)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be integers, got {v!r}") from None
        if iv <= 0 or iv != v and not isinstance(v, str):
            raise ValueError(f"{what} must be positive integers, got {v!r}")
        out.append(iv)
    if not out:
        raise ValueError(f"{what} list is empty")
    return out


def build_sharp_query(
    harps: Sequence[int] | None = None,
    noaa: Sequence[int] | None = None,
    *,
    start: str | _dt.datetime,
    end: str | _dt.datetime,
    cadence: str = "12m",
    segments: Sequence[str] = ("Br",),
    series: str = "hmi.sharp_cea_720s",
) -> str:
    """Build a JSOC record-set query string for SHARP data.

    Parameters
    ----------
    harps : HARP numbers (``HARPNUM``), or
    noaa : NOAA active-region numbers, matched with ``NOAA_ARS ~ "<n1>|<n2>"`` (a HARP may
        hold several NOAA regions). Exactly one of ``harps`` / ``noaa`` is required.
    start, end : time range (ISO 8601, JSOC label or datetime; see :func:`jsoc_time`).
    cadence : JSOC step such as ``'12m'``, ``'1h'``, ``'1d'`` (``^\\d+[smhd]$``).
    segments : non-empty, from :data:`SHARP_SEGMENTS`.
    series : JSOC series name.

    Returns
    -------
    e.g. ``hmi.sharp_cea_720s[377,1447][2011.02.15_00:00:00_TAI-2011.02.16_00:00:00_TAI@12m]{Br,bitmap}``
    or ``hmi.sharp_cea_720s[][<range>@12m][? NOAA_ARS ~ "11158|11166" ?]{Br}``.

    Raises
    ------
    ValueError : both or neither of harps/noaa, non-positive numbers, unparsable times,
        ``end`` not after ``start``, a bad cadence, an empty or unknown segment, a bad series.
    """
    if (harps is None) == (noaa is None):
        raise ValueError("give exactly one of harps= or noaa=")
    if not _SERIES.match(str(series)):
        raise ValueError(f"series {series!r} is not a JSOC series name like 'hmi.sharp_cea_720s'")
    t0 = _parse_time(start, "start")
    t1 = _parse_time(end, "end")
    if t1 <= t0:
        raise ValueError(f"end {jsoc_time(t1)} must be after start {jsoc_time(t0)}")
    cadence = str(cadence).strip()
    if not _CADENCE.match(cadence):
        raise ValueError(f"cadence {cadence!r} must look like '12m', '720s', '1h' or '1d'")
    if isinstance(segments, str):
        segments = [segments]
    segments = list(segments)
    if not segments:
        raise ValueError("segments must not be empty")
    unknown = [s for s in segments if s not in SHARP_SEGMENTS]
    if unknown:
        raise ValueError(f"unknown SHARP segment(s) {unknown}; choose from {sorted(SHARP_SEGMENTS)}")
    trange = f"[{jsoc_time(t0)}-{jsoc_time(t1)}@{cadence}]"
    segs = "{" + ",".join(segments) + "}"
    if harps is not None:
        ids = _int_list(harps, "HARP numbers")
        return f"{series}[{','.join(map(str, ids))}]{trange}{segs}"
    ars = _int_list(noaa, "NOAA numbers")  # type: ignore[arg-type]
    regex = "|".join(map(str, ars))
    return f'{series}[]{trange}[? NOAA_ARS ~ "{regex}" ?]{segs}'


def fetch_sharp(
    out_dir: str | Path,
    email: str,
    *,
    harps: Sequence[int] | None = None,
    noaa: Sequence[int] | None = None,
    start: str | _dt.datetime,
    end: str | _dt.datetime,
    cadence: str = "12m",
    segments: Sequence[str] = ("Br",),
    client: Any = None,
) -> list[Path]:
    """Export SHARP files from JSOC as FITS and download them into ``out_dir``.

    Runs ``client.export(query, method="url", protocol="fits", email=email)``, waits for the
    export and calls ``request.download(out_dir)``; the query is :func:`build_sharp_query`.

    Parameters
    ----------
    out_dir : destination folder (created if needed).
    email : address registered with JSOC.
    harps, noaa, start, end, cadence, segments : as :func:`build_sharp_query`.
    client : a ``drms.Client`` (default: ``drms.Client(email=email)``); tests pass a fake.

    Returns
    -------
    Paths of the downloaded files (failed downloads are left out and logged).

    Raises
    ------
    ValueError : empty email, or invalid query arguments.
    RuntimeError : the export did not finish or failed on the server.
    """
    if not email or not str(email).strip() or "@" not in str(email):
        raise ValueError(
            "JSOC exports need a registered email (register at http://jsoc.stanford.edu/ajax/register_email.html)"
        )
    email = str(email).strip()
    query = build_sharp_query(
        harps=harps, noaa=noaa, start=start, end=end, cadence=cadence, segments=segments
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if client is None:
        import drms

        client = drms.Client(email=email)
    logger.info("JSOC export: %s", query)
    request = client.export(query, method="url", protocol="fits", email=email)
    finished = request.wait()
    if finished is False:
        raise RuntimeError(f"JSOC export of {query} did not finish")
    table = request.download(str(out))
    paths: list[Path] = []
    for rec, loc in zip(table.get("record", [None] * len(table)), table["download"]):
        if isinstance(loc, (str, Path)) and str(loc):
            paths.append(Path(loc))
        else:
            logger.warning("JSOC download failed for record %s", rec)
    return paths
