"""SHARP downloads from JSOC (http://jsoc.stanford.edu) through the ``drms`` client.

A JSOC record-set query for SHARPs has three bracketed filters and a segment list:
``hmi.sharp_cea_720s[<HARPNUMs>][<T_REC range>@<cadence>][? <SQL on keywords> ?]{<segments>}``,
e.g. ``hmi.sharp_cea_720s[377][2011.02.15_00:00:00_TAI-2011.02.16_00:00:00_TAI@12m]{Br}``.
Times are JSOC TAI labels ``YYYY.MM.DD_HH:MM:SS_TAI``. Exports need an email address
registered at http://jsoc.stanford.edu/ajax/register_email.html. Source: the JSOC record-set
documentation and the ``drms`` documentation (Glogowski et al. 2019, JOSS 4, 1614).

Two ways in:

* :func:`fetch_sharp`: one export of given HARPs (or NOAA regions) over a time range;
* :func:`fetch_sharp_archive`: a whole time range of *all* HARPs (or a HARP list), for a corpus
  of the archive (HARP numbers passed 14,000 in 2025; a region is recorded every 12 min for up
  to two weeks: millions of records). The range is cut into chunks (``start/duration@cadence``
  record sets, a day by default), each chunk listed with a keyword query and exported (one
  export at a time, at most ``max_records`` records each), with a polite pause between JSOC
  requests and retries with exponential backoff on HTTP and JSOC errors. Every file is
  downloaded under a temporary folder, checked (a whole, readable FITS file of the record asked
  for) and only then renamed into place; a manifest (SQLite, :class:`IngestManifest`) records
  the files, chunks and export requests done, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from helioforge.errors import HelioforgeError

__all__ = [
    "SHARP_SEGMENTS",
    "jsoc_time",
    "build_sharp_query",
    "fetch_sharp",
    "JsocError",
    "ArchiveChunk",
    "ArchiveFile",
    "IngestReport",
    "IngestManifest",
    "MANIFEST_NAME",
    "plan_sharp_archive",
    "parse_sharp_record",
    "sharp_filename",
    "fetch_sharp_archive",
]

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


# ============================================================================ bulk archive ingest
#: File name of the ingest manifest (SQLite) in the download folder.
MANIFEST_NAME = "sharp_manifest.sqlite"
#: Folder (inside the download folder) where files are downloaded before they are checked.
_STAGING = ".partial"
#: JSOC keeps finished exports for 7 days; an older request id is not reused on resume.
_EXPORT_REUSE_S = 6 * 86400.0
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RECORD = re.compile(r"^\s*(?P<series>[\w.]+)\[(?P<harp>\d+)\]\[(?P<trec>[^\]]+)\]")
_FILE_SEGMENT = re.compile(r"\.(?P<seg>[A-Za-z_]+)\.fits(?:\.gz)?$")
_QUERY_HARPS = re.compile(r"^[\w.]+\[([\d,]*)\]")
_SAFE_NAME = re.compile(r"^[\w][\w.+-]*$")
#: FITS files are whole multiples of this many bytes (FITS standard 4.0, §3.1).
FITS_BLOCK = 2880


class JsocError(HelioforgeError, RuntimeError):
    """A JSOC request (keyword query, export, download) that still failed after its retries.

    The message names the request (query string or record) and the last error.
    """


class _ResponseProblem(RuntimeError):
    """An odd JSOC answer (missing columns, unparsable JSON fields); retried like an HTTP error."""


class _FileProblem(RuntimeError):
    """A downloaded file that is missing, empty, truncated or of another record; retried."""


def _retryable() -> tuple[type[BaseException], ...]:
    """Errors worth another try: JSOC status errors (drms), HTTP/network errors (urllib,
    sockets), undecodable or malformed answers, bad downloads."""
    import drms

    return (drms.DrmsError, OSError, json.JSONDecodeError, KeyError, TypeError, _ResponseProblem, _FileProblem)


def _duration(value: str, what: str) -> _dt.timedelta:
    text = str(value).strip()
    m = _DURATION.match(text)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"{what} {value!r} must look like '12m', '96m', '6h' or '1d' (a positive whole number and s/m/h/d)")
    return _dt.timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])


def _duration_label(td: _dt.timedelta) -> str:
    s = int(td.total_seconds())
    for unit in ("d", "h", "m"):
        if s % _UNIT_S[unit] == 0:
            return f"{s // _UNIT_S[unit]}{unit}"
    return f"{s}s"


def _check_segments(segments: Sequence[str] | str) -> list[str]:
    segs = [segments] if isinstance(segments, str) else list(segments)
    if not segs:
        raise ValueError("segments must not be empty")
    unknown = [s for s in segs if s not in SHARP_SEGMENTS]
    if unknown:
        raise ValueError(f"unknown SHARP segment(s) {unknown}; choose from {sorted(SHARP_SEGMENTS)}")
    if len(set(segs)) != len(segs):
        raise ValueError(f"segments repeated: {segs}")
    return segs


@dataclass(frozen=True)
class ArchiveChunk:
    """One piece of an archive ingest: the record set ``[<start>/<span>@<cadence>]``.

    Attributes
    ----------
    start : datetime.datetime
        First T_REC of the chunk (TAI label, naive).
    span : datetime.timedelta
        Length; the chunk holds T_REC in [start, start + span) (a JSOC ``start/duration`` range).
    cadence : str
        JSOC step (``'12m'``, ``'96m'``, ``'1d'``); the grid runs from the ingest's start.
    """

    start: _dt.datetime
    span: _dt.timedelta
    cadence: str

    @property
    def key(self) -> str:
        """The chunk's name in the manifest and in messages, e.g. ``'2012.03.06_00:00:00_TAI/1d@12m'``."""
        return f"{jsoc_time(self.start)}/{_duration_label(self.span)}@{self.cadence}"

    @property
    def end(self) -> _dt.datetime:
        """``start + span`` (not included)."""
        return self.start + self.span

    def query(self, harps: Sequence[int] | None = None, segments: Sequence[str] | None = None,
              series: str = "hmi.sharp_cea_720s") -> str:
        """The JSOC record-set query of the chunk.

        Parameters
        ----------
        harps : sequence of int, optional
            HARP numbers; ``None`` or empty: every HARP (``[]``).
        segments : sequence of str, optional
            Segments to export (``{Br,bitmap}``); ``None`` for a keyword query (no segment list).
        series : str
            JSOC series name.

        Returns
        -------
        str
            E.g. ``hmi.sharp_cea_720s[][2012.03.06_00:00:00_TAI/1d@12m]{Br}``.

        Raises
        ------
        ValueError
            An unknown or repeated segment.
        """
        ids = ",".join(str(int(h)) for h in sorted(harps)) if harps else ""
        segs = "{" + ",".join(_check_segments(segments)) + "}" if segments else ""
        return f"{series}[{ids}][{self.key}]{segs}"


def plan_sharp_archive(
    start: str | _dt.datetime,
    end: str | _dt.datetime,
    *,
    cadence: str = "12m",
    chunk: str = "1d",
) -> list[ArchiveChunk]:
    """Cut the range [start, end) into chunks of ``chunk`` (the last one may be shorter).

    Parameters
    ----------
    start, end : str or datetime.datetime
        Time range, ISO 8601 or JSOC label (see :func:`jsoc_time`); ``end`` is not included.
    cadence : str
        JSOC step between records (``'12m'``: every SHARP record; ``'96m'``, ``'1d'`` ...).
    chunk : str
        Length of one chunk; a whole number of cadence steps, so that the cadence grid of every
        chunk continues the one before.

    Returns
    -------
    list of ArchiveChunk
        In time order.

    Raises
    ------
    ValueError
        Unparsable times, ``end`` not after ``start``, a bad cadence or chunk, or a chunk that is
        not a whole number of cadence steps.
    """
    t0, t1 = _parse_time(start, "start"), _parse_time(end, "end")
    if t1 <= t0:
        raise ValueError(f"end {jsoc_time(t1)} must be after start {jsoc_time(t0)}")
    step = _duration(cadence, "cadence")
    size = _duration(chunk, "chunk")
    if size.total_seconds() % step.total_seconds():
        raise ValueError(f"chunk {chunk} is not a whole number of cadence steps ({cadence}); "
                         f"pick a chunk such as {_duration_label(step * max(1, int(size / step)))}")
    label = _duration_label(step)
    out, t = [], t0
    while t < t1:
        out.append(ArchiveChunk(t, min(size, t1 - t), label))
        t += size
    return out


def parse_sharp_record(record: str) -> tuple[int, str]:
    """HARP number and T_REC of a JSOC record string.

    Parameters
    ----------
    record : str
        E.g. ``'hmi.sharp_cea_720s[377][2011.02.15_00:00:00_TAI]'`` (a trailing ``{segment}`` is
        allowed).

    Returns
    -------
    (int, str)
        ``(HARPNUM, T_REC)``, T_REC as a canonical JSOC label (``'2011.02.15_00:00:00_TAI'``).

    Raises
    ------
    ValueError
        Not a ``series[HARP][T_REC]`` record string, or an unparsable T_REC.
    """
    m = _RECORD.match(str(record or ""))
    if not m:
        raise ValueError(f"record {record!r} is not of the form series[HARPNUM][T_REC]")
    return int(m.group("harp")), jsoc_time(_parse_time(m.group("trec"), "record"))


def sharp_filename(harpnum: int, t_rec: str, segment: str, series: str = "hmi.sharp_cea_720s") -> str:
    """The file name JSOC gives a SHARP segment in a FITS export (drms' default name format).

    Parameters
    ----------
    harpnum : int
        HARP number.
    t_rec : str
        T_REC (JSOC label or ISO).
    segment : str
        Segment name.
    series : str
        JSOC series.

    Returns
    -------
    str
        E.g. ``'hmi.sharp_cea_720s.377.20110215_000000_TAI.Br.fits'``.
    """
    return f"{series}.{int(harpnum)}.{_parse_time(t_rec, 'T_REC').strftime('%Y%m%d_%H%M%S')}_TAI.{segment}.fits"


@dataclass(frozen=True)
class ArchiveFile:
    """A downloaded, checked SHARP segment file, handed to the ``on_file`` callback.

    Attributes
    ----------
    path : Path
        Its final place in the download folder.
    harpnum : int
        HARP number.
    t_rec : str
        T_REC, canonical JSOC label.
    segment : str
        Segment (``Br``, ``bitmap`` ...).
    record : str
        The JSOC record string (``series[HARP][T_REC]``).
    requestid : str
        The JSOC export request it came from (``""`` for a file already in place).
    """

    path: Path
    harpnum: int
    t_rec: str
    segment: str
    record: str
    requestid: str = ""


@dataclass
class IngestReport:
    """What an archive ingest did.

    Attributes
    ----------
    out_dir : Path
        The download folder.
    chunks : int
        Chunks in the range.
    chunks_done : int
        Chunks finished by this run (every file in place).
    chunks_already_done : int
        Chunks skipped because an earlier run finished them.
    chunks_partial : int
        Chunks processed with some files that could not be had (see ``problems``).
    files_downloaded : int
        Files downloaded, checked and put in place by this run.
    files_adopted : int
        Files found complete in the folder (an interrupted run) and recorded without download.
    files_skipped_done : int
        Files of the exports already recorded as done (not downloaded again).
    records : int
        Records listed by the keyword queries of the chunks processed.
    requests : list of str
        JSOC export request ids used.
    problems : list of dict
        Files given up, ``{"record", "segment", "chunk", "reason"}`` (a rerun tries them again).
    failed_chunks : list of dict
        Chunks whose query or export failed after the retries, ``{"chunk", "error"}``.
    """

    out_dir: Path
    chunks: int = 0
    chunks_done: int = 0
    chunks_already_done: int = 0
    chunks_partial: int = 0
    files_downloaded: int = 0
    files_adopted: int = 0
    files_skipped_done: int = 0
    records: int = 0
    requests: list[str] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    failed_chunks: list[dict[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every chunk of the range is done without problems."""
        return not self.problems and not self.failed_chunks and self.chunks_done + self.chunks_already_done == self.chunks


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class IngestManifest:
    """The state of an archive ingest: one SQLite file in the download folder.

    Tables: ``settings`` (series, cadence, segments, HARP selection of the folder), ``files``
    (one row per downloaded segment file: HARPNUM, T_REC, segment, file name, bytes, export
    request, time), ``chunks`` (status ``done`` / ``partial`` / ``failed`` with counts and the
    error), ``exports`` (record-set query → JSOC request id, for reuse on resume) and
    ``problems`` (files given up, with the reason; cleared when a later run gets them). Each
    change is one committed transaction, so the manifest is consistent whenever the run stops.

    Parameters
    ----------
    folder : str or Path
        The download folder (created if missing); the manifest is ``folder/sharp_manifest.sqlite``.

    Raises
    ------
    helioforge.errors.ProductError
        The manifest exists but is not a readable SQLite file of this layout.
    """

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS files (harpnum INTEGER NOT NULL, t_rec TEXT NOT NULL, segment TEXT NOT NULL,
        file TEXT NOT NULL, bytes INTEGER NOT NULL, requestid TEXT NOT NULL, done TEXT NOT NULL,
        PRIMARY KEY (harpnum, t_rec, segment));
    CREATE INDEX IF NOT EXISTS files_t_rec ON files (t_rec);
    CREATE TABLE IF NOT EXISTS chunks (chunk TEXT PRIMARY KEY, status TEXT NOT NULL, records INTEGER NOT NULL,
        files INTEGER NOT NULL, error TEXT NOT NULL, updated TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS exports (query TEXT PRIMARY KEY, requestid TEXT NOT NULL, status TEXT NOT NULL,
        submitted REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS problems (harpnum INTEGER NOT NULL, t_rec TEXT NOT NULL, segment TEXT NOT NULL,
        chunk TEXT NOT NULL, reason TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (harpnum, t_rec, segment));
    """

    def __init__(self, folder: str | Path) -> None:
        from helioforge.errors import ProductError

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / MANIFEST_NAME
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0)
            with self._db:
                self._db.executescript(self._SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ProductError(self.path, f"not a readable ingest manifest ({exc})",
                               "move it away to start the ingest of this folder afresh") from None

    def close(self) -> None:
        """Close the SQLite connection."""
        self._db.close()

    def __enter__(self) -> "IngestManifest":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the folder's settings on first use; later refuse different ones.

        Parameters
        ----------
        settings : dict
            ``series``, ``cadence``, ``segments`` and ``harps`` of the ingest (JSON-able).

        Raises
        ------
        ValueError
            The folder was filled with other settings (the message names the manifest, the
            setting and both values).
        """
        rows = dict(self._db.execute("SELECT key, value FROM settings").fetchall())
        if not rows:
            with self._db:
                self._db.executemany("INSERT INTO settings VALUES (?, ?)",
                                     [(k, json.dumps(v)) for k, v in {**settings, "created": _now()}.items()])
            return
        for k, v in settings.items():
            if k in rows and json.loads(rows[k]) != json.loads(json.dumps(v)):
                raise ValueError(f"{self.path}: this folder holds an ingest with {k}={json.loads(rows[k])!r}, not {v!r}; "
                                 "use another output folder for other settings")

    def chunk_status(self, chunk: str) -> str | None:
        """Status of a chunk (``'done'``, ``'partial'``, ``'failed'``), ``None`` if never seen.

        Parameters
        ----------
        chunk : str
            :attr:`ArchiveChunk.key`.

        Returns
        -------
        str or None
            The recorded status.
        """
        row = self._db.execute("SELECT status FROM chunks WHERE chunk = ?", (chunk,)).fetchone()
        return row[0] if row else None

    def set_chunk(self, chunk: str, status: str, records: int, files: int, error: str = "") -> None:
        """Record a chunk's outcome.

        Parameters
        ----------
        chunk : str
            :attr:`ArchiveChunk.key`.
        status : str
            ``'done'``, ``'partial'`` or ``'failed'``.
        records, files : int
            Records listed and files in place for the chunk.
        error : str
            Why it failed or is partial.
        """
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                             (chunk, status, int(records), int(files), str(error), _now()))

    def done_files(self, t0: str, t1: str) -> set[tuple[int, str, str]]:
        """(HARPNUM, T_REC, segment) of the files done with t0 ≤ T_REC < t1.

        Parameters
        ----------
        t0, t1 : str
            Canonical JSOC labels (they sort like the times they name).

        Returns
        -------
        set of tuple
            The done files.
        """
        cur = self._db.execute("SELECT harpnum, t_rec, segment FROM files WHERE t_rec >= ? AND t_rec < ?", (t0, t1))
        return {(int(h), t, s) for h, t, s in cur}

    def mark_file(self, f: ArchiveFile) -> None:
        """Record a file as done (and clear any problem recorded for it).

        Parameters
        ----------
        f : ArchiveFile
            The file, already in its final place.
        """
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (f.harpnum, f.t_rec, f.segment, f.path.name, f.path.stat().st_size, f.requestid, _now()))
            self._db.execute("DELETE FROM problems WHERE harpnum = ? AND t_rec = ? AND segment = ?",
                             (f.harpnum, f.t_rec, f.segment))

    def files(self, segment: str | None = None) -> list[str]:
        """Names of the files done, in T_REC then HARP order.

        Parameters
        ----------
        segment : str, optional
            Only this segment.

        Returns
        -------
        list of str
            File names (in the download folder).
        """
        if segment is None:
            cur = self._db.execute("SELECT file FROM files ORDER BY t_rec, harpnum, segment")
        else:
            cur = self._db.execute("SELECT file FROM files WHERE segment = ? ORDER BY t_rec, harpnum", (segment,))
        return [f for (f,) in cur]

    def add_problem(self, harpnum: int, t_rec: str, segment: str, chunk: str, reason: str) -> None:
        """Record a file given up for now.

        Parameters
        ----------
        harpnum, t_rec, segment : int, str, str
            The file's record and segment.
        chunk : str
            Its chunk.
        reason : str
            What went wrong.
        """
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO problems VALUES (?, ?, ?, ?, ?, ?)",
                             (int(harpnum), t_rec, segment, chunk, str(reason), _now()))

    def export_id(self, query: str) -> tuple[str, float] | None:
        """The JSOC request id recorded for an export query, with its submission time (Unix s).

        Parameters
        ----------
        query : str
            The record-set query.

        Returns
        -------
        (str, float) or None
            ``(requestid, submitted)``, ``None`` if none is recorded.
        """
        row = self._db.execute("SELECT requestid, submitted FROM exports WHERE query = ?", (query,)).fetchone()
        return (row[0], float(row[1])) if row else None

    def set_export(self, query: str, requestid: str, status: str, submitted: float | None = None) -> None:
        """Record an export request.

        Parameters
        ----------
        query : str
            The record-set query.
        requestid : str
            JSOC request id.
        status : str
            ``'submitted'``, ``'finished'`` or ``'failed'``.
        submitted : float, optional
            Submission time (Unix s); default now, or the one already recorded.
        """
        old = self.export_id(query)
        when = submitted if submitted is not None else (old[1] if old and old[0] == requestid else time.time())
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO exports VALUES (?, ?, ?, ?)", (query, requestid, status, when))

    def chunk_exports(self, chunk: str) -> list[str]:
        """Queries of a chunk with a recorded export request young enough to be reused.

        Parameters
        ----------
        chunk : str
            :attr:`ArchiveChunk.key`.

        Returns
        -------
        list of str
            Record-set queries, oldest first.
        """
        rows = self._db.execute("SELECT query, submitted FROM exports WHERE instr(query, ?) > 0 ORDER BY submitted",
                                (f"[{chunk}]",)).fetchall()
        return [q for q, t in rows if time.time() - float(t) < _EXPORT_REUSE_S]

    def forget_export(self, query: str) -> None:
        """Drop the request id of a query (expired or failed on the server).

        Parameters
        ----------
        query : str
            The record-set query.
        """
        with self._db:
            self._db.execute("DELETE FROM exports WHERE query = ?", (query,))

    def problems(self) -> list[dict[str, str]]:
        """Files given up and not had since, ``{"record", "segment", "chunk", "reason"}``.

        Returns
        -------
        list of dict
            One per file.
        """
        rows = self._db.execute("SELECT harpnum, t_rec, segment, chunk, reason FROM problems ORDER BY t_rec, harpnum")
        return [{"record": f"[{h}][{t}]", "segment": s, "chunk": c, "reason": r} for h, t, s, c, r in rows]

    def summary(self) -> dict[str, Any]:
        """Counts of the folder's ingest.

        Returns
        -------
        dict
            ``files`` (done), ``harps`` (distinct HARPs), ``chunks`` (status → count), ``problems``
            (files given up), ``settings``.
        """
        db = self._db
        return {
            "files": int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0]),
            "harps": int(db.execute("SELECT COUNT(DISTINCT harpnum) FROM files").fetchone()[0]),
            "chunks": dict(db.execute("SELECT status, COUNT(*) FROM chunks GROUP BY status").fetchall()),
            "problems": int(db.execute("SELECT COUNT(*) FROM problems").fetchone()[0]),
            "settings": {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM settings")},
        }


def _with_retries(fn: Callable[[], Any], what: str, *, retries: int, backoff_s: float, max_backoff_s: float,
                  sleep: Callable[[float], Any]) -> Any:
    """``fn()``, tried again after ``backoff_s · 2^k`` s (at most ``max_backoff_s``) on a retryable
    error, ``retries`` times; then :class:`JsocError` naming ``what`` and the last error."""
    errors = _retryable()
    last: BaseException | None = None
    for attempt in range(int(retries) + 1):
        try:
            return fn()
        except errors as exc:  # noqa: PERF203 - the loop is the retry
            last = exc
            if attempt == retries:
                break
            wait = min(float(backoff_s) * 2.0**attempt, float(max_backoff_s))
            logger.warning("%s: %s: %s; retry %d of %d in %.0f s", what, type(exc).__name__, exc, attempt + 1, retries, wait)
            sleep(wait)
    detail = f"{type(last).__name__}: {last}" if not isinstance(last, (_FileProblem, _ResponseProblem)) else str(last)
    raise JsocError(f"{what}: failed after {int(retries) + 1} attempt(s): {detail}") from last


def _list_records(client: Any, query: str) -> list[tuple[int, str]]:
    """(HARPNUM, T_REC) of a keyword query, sorted; an empty list for an empty record set."""
    keys = client.query(query, key="HARPNUM,T_REC")
    if keys is None or len(keys) == 0:
        return []
    missing = [k for k in ("HARPNUM", "T_REC") if k not in keys.columns]
    if missing:
        raise _ResponseProblem(f"keyword query {query}: the answer lacks column(s) {', '.join(missing)}")
    out: set[tuple[int, str]] = set()
    for h, t in zip(keys["HARPNUM"], keys["T_REC"]):
        try:
            out.add((int(h), jsoc_time(_parse_time(str(t), "T_REC"))))
        except (TypeError, ValueError):
            logger.warning("keyword query %s: record with HARPNUM=%r T_REC=%r skipped (not a HARP number and time)", query, h, t)
    return sorted(out, key=lambda r: (r[1], r[0]))


def _harp_groups(records: Sequence[tuple[int, str]], max_records: int) -> list[list[int]]:
    """HARPs of ``records`` in groups of at most ``max_records`` records (a HARP with more goes alone)."""
    counts: dict[int, int] = {}
    for h, _ in records:
        counts[h] = counts.get(h, 0) + 1
    groups: list[list[int]] = []
    size = 0
    for h in sorted(counts):
        if groups and size + counts[h] <= max_records:
            groups[-1].append(h)
            size += counts[h]
        else:
            groups.append([h])
            size = counts[h]
    return groups


def _check_fits_file(path: Path, harpnum: int, t_rec: str) -> str | None:
    """Why a downloaded file is not a complete FITS file of the record, or ``None``."""
    from helioforge.data.fits import FitsReadError, read_image_hdu, safe_get

    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    if size % FITS_BLOCK:
        return f"truncated download: {size} bytes is not a whole number of {FITS_BLOCK}-byte FITS blocks"
    try:
        _, header, notes = read_image_hdu(path)
    except FitsReadError as exc:
        return exc.problem
    if any("shorter than its header" in n for n in notes):
        return "truncated download: file shorter than its header says"
    h, t = safe_get(header, "HARPNUM"), safe_get(header, "T_REC")
    try:
        if h is not None and int(h) != int(harpnum):
            return f"file holds HARP {h}, not HARP {harpnum}"
        if t is not None and jsoc_time(_parse_time(str(t), "T_REC")) != t_rec:
            return f"file holds T_REC {t}, not {t_rec}"
    except (TypeError, ValueError):
        return f"unreadable HARPNUM/T_REC cards ({h!r}, {t!r})"
    return None


class _Ingest:
    """One run of :func:`fetch_sharp_archive` (state shared by its steps)."""

    def __init__(self, *, out: Path, email: str, client: Any, manifest: IngestManifest, series: str,
                 segments: list[str], harps: list[int] | None, max_records: int, delay_s: float, retries: int,
                 backoff_s: float, max_backoff_s: float, wait_timeout_s: float, poll_s: float,
                 on_file: Callable[[ArchiveFile], Any] | None, sleep: Callable[[float], Any], report: IngestReport):
        self.out, self.email, self.client, self.manifest, self.series = out, email, client, manifest, series
        self.segments, self.harps, self.max_records, self.delay_s = segments, harps, max_records, delay_s
        self.retry_kw = {"retries": retries, "backoff_s": backoff_s, "max_backoff_s": max_backoff_s, "sleep": sleep}
        self.wait_timeout_s, self.poll_s, self.on_file, self.sleep, self.report = wait_timeout_s, poll_s, on_file, sleep, report
        self.staging = out / _STAGING
        self._problem_keys: set[tuple[int, str, str]] = set()

    def _pause(self) -> None:
        if self.delay_s > 0:
            self.sleep(self.delay_s)

    def _record(self, f: ArchiveFile) -> None:
        if self.on_file is not None:
            self.on_file(f)
        self.manifest.mark_file(f)

    # ---------------------------------------------------------------- one chunk
    def chunk(self, c: ArchiveChunk) -> None:
        rep, man = self.report, self.manifest
        listing = c.query(self.harps, None, self.series)
        try:
            records = _with_retries(lambda: _list_records(self.client, listing), f"keyword query {listing}", **self.retry_kw)
        except JsocError as exc:
            man.set_chunk(c.key, "failed", 0, 0, str(exc))
            rep.failed_chunks.append({"chunk": c.key, "error": str(exc)})
            logger.error("%s", exc)
            return
        finally:
            self._pause()
        rep.records += len(records)
        if not records:
            logger.info("chunk %s: no SHARP records", c.key)
            man.set_chunk(c.key, "done", 0, 0)
            rep.chunks_done += 1
            return
        want = {(h, t, s) for h, t in records for s in self.segments}
        done = man.done_files(jsoc_time(c.start), jsoc_time(c.end)) & want
        for h, t, s in sorted(want - done, key=lambda k: (k[1], k[0], k[2])):  # complete files of an interrupted run
            path = self.out / sharp_filename(h, t, s, self.series)
            if path.is_file() and _check_fits_file(path, h, t) is None:
                self._record(ArchiveFile(path, h, t, s, f"{self.series}[{h}][{t}]"))
                done.add((h, t, s))
                rep.files_adopted += 1
        failures: list[str] = []
        failed_harps: set[int] = set()
        self._problem_keys: set[tuple[int, str, str]] = set()
        all_harps = sorted({h for h, _ in records})
        covered: set[int] = set()
        for query in man.chunk_exports(c.key) if want - done else []:  # resume: earlier exports, while JSOC keeps them
            try:
                self._export(c, query, want, done)
            except JsocError as exc:
                failures.append(str(exc))
                logger.error("%s", exc)
                continue
            ids = _QUERY_HARPS.match(query)
            covered.update(all_harps if ids is None or not ids.group(1) else (int(h) for h in ids.group(1).split(",")))
        missing = [(h, t) for h, t in sorted({(h, t) for h, t, s in want - done}, key=lambda r: (r[1], r[0]))
                   if h not in covered]
        for group in _harp_groups(missing, self.max_records) if missing else []:
            query = c.query(self.harps if group == all_harps else group, self.segments, self.series)
            try:
                self._export(c, query, want, done)
            except JsocError as exc:
                failures.append(str(exc))
                failed_harps.update(group)
                logger.error("%s", exc)
        left = want - done
        for h, t, s in sorted(left, key=lambda k: (k[1], k[0], k[2])):
            if (h, t, s) not in self._problem_keys and h not in failed_harps:
                self._problem(c, h, t, s, "JSOC gave no file for this record and segment")
        n_done = len(done & want)
        if failures:
            man.set_chunk(c.key, "failed", len(records), n_done, "; ".join(failures))
            rep.failed_chunks.append({"chunk": c.key, "error": "; ".join(failures)})
        elif left:
            man.set_chunk(c.key, "partial", len(records), n_done, f"{len(left)} file(s) missing")
            rep.chunks_partial += 1
        else:
            man.set_chunk(c.key, "done", len(records), n_done)
            rep.chunks_done += 1

    def _problem(self, c: ArchiveChunk, h: int, t: str, s: str, reason: str) -> None:
        self.manifest.add_problem(h, t, s, c.key, reason)
        self._problem_keys.add((h, t, s))
        self.report.problems.append({"record": f"[{h}][{t}]", "segment": s, "chunk": c.key, "reason": reason})

    # ---------------------------------------------------------------- one export
    def _request(self, query: str) -> Any:
        """A finished export request for ``query``: the one recorded for it (resume) when JSOC
        still has it, else a new one. One export at a time."""
        import drms

        man = self.manifest
        old = man.export_id(query)
        if old and time.time() - old[1] < _EXPORT_REUSE_S:
            try:
                req = self.client.export_from_id(old[0])
                self._wait(req, query)
                logger.info("reusing JSOC export %s for %s", old[0], query)
                return req
            except (drms.DrmsError, JsocError, *_retryable()) as exc:
                logger.warning("JSOC export %s of %s not reusable (%s); exporting again", old[0], query, exc)
                man.forget_export(query)
        req = self.client.export(query, method="url", protocol="fits", email=self.email)
        rid = str(getattr(req, "id", "") or "")
        if rid:
            man.set_export(query, rid, "submitted")
        self._pause()
        try:
            self._wait(req, query)
        except BaseException:
            if rid:
                man.forget_export(query)  # a failed or timed-out request is not resumed
            raise
        if rid:
            man.set_export(query, rid, "finished")
        return req

    def _wait(self, req: Any, query: str) -> None:
        if req.wait(timeout=self.wait_timeout_s, sleep=self.poll_s) is False:
            raise _ResponseProblem(f"export {getattr(req, 'id', '?')} of {query} not finished after {self.wait_timeout_s:.0f} s")
        if hasattr(req, "has_succeeded") and not req.has_succeeded():
            raise _ResponseProblem(f"export {getattr(req, 'id', '?')} of {query} did not succeed (status {getattr(req, 'status', '?')})")

    def _export(self, c: ArchiveChunk, query: str, want: set, done: set) -> None:
        req = _with_retries(lambda: self._request(query), f"JSOC export {query}", **self.retry_kw)
        rid = str(getattr(req, "id", "") or "")
        self.report.requests.append(rid)
        urls = _with_retries(lambda: req.urls, f"file list of JSOC export {rid} ({query})", **self.retry_kw)
        for i in range(len(urls)):
            rec, fname = urls["record"].iloc[i], str(urls["filename"].iloc[i])
            try:
                h, t = parse_sharp_record(rec)
            except ValueError as exc:
                logger.warning("JSOC export %s: file %s skipped: %s", rid, fname, exc)
                continue
            if not _SAFE_NAME.match(fname):
                logger.warning("JSOC export %s: record %s skipped: file name %r is not a plain file name", rid, rec, fname)
                continue
            m = _FILE_SEGMENT.search(fname)
            seg = m.group("seg") if m else None
            if seg not in self.segments:
                logger.warning("JSOC export %s: %s of record %s skipped: segment %r was not asked for", rid, fname, rec, seg)
                continue
            if (h, t, seg) in done:
                self.report.files_skipped_done += 1
                continue
            if (h, t, seg) not in want:
                logger.info("JSOC export %s: %s of record %s is outside the records listed; taken too", rid, fname, rec)
            label = f"{self.series}[{h}][{t}] {seg}"
            try:
                path = _with_retries(lambda i=i, fname=fname, h=h, t=t: self._download(req, i, fname, h, t),
                                     f"download of {label}", **self.retry_kw)
            except JsocError as exc:
                self._problem(c, h, t, seg, str(exc))  # recorded; go on with the rest
                continue
            self._record(ArchiveFile(path, h, t, seg, f"{self.series}[{h}][{t}]", rid))
            done.add((h, t, seg))
            self.report.files_downloaded += 1

    def _download(self, req: Any, index: int, fname: str, h: int, t: str) -> Path:
        """Download file ``index`` of ``req`` into the staging folder, check it, rename it into place."""
        self.staging.mkdir(parents=True, exist_ok=True)
        for stale in self.staging.glob(fname + "*"):
            stale.unlink()
        table = req.download(str(self.staging), index=index)
        loc = table["download"].iloc[0] if len(table) else None
        if not isinstance(loc, (str, Path)) or not str(loc):
            raise _FileProblem(f"{fname}: download failed (HTTP or network error; the drms log names the URL)")
        got = Path(loc)
        if not got.is_file():
            raise _FileProblem(f"{fname}: download reported {got}, which is not there")
        problem = _check_fits_file(got, h, t)
        if problem:
            got.unlink()
            raise _FileProblem(f"{fname}: {problem}")
        final = self.out / fname
        os.replace(got, final)
        return final


def _new_client(email: str, **retry_kw: Any) -> Any:
    """``drms.Client(email=email)`` (which asks JSOC whether the address is registered), retried
    on network errors; an unregistered address is a ``ValueError`` saying where to register."""
    import drms

    try:
        return _with_retries(lambda: drms.Client(email=email), "JSOC email check", **retry_kw)
    except ValueError as exc:
        raise ValueError(f"JSOC refuses the email {email!r} ({exc}); register it at "
                         "http://jsoc.stanford.edu/ajax/register_email.html") from None


def fetch_sharp_archive(
    out_dir: str | Path,
    email: str,
    *,
    start: str | _dt.datetime,
    end: str | _dt.datetime,
    cadence: str = "12m",
    segments: Sequence[str] = ("Br",),
    harps: Sequence[int] | None = None,
    chunk: str = "1d",
    max_records: int = 2000,
    delay_s: float = 2.0,
    retries: int = 4,
    backoff_s: float = 10.0,
    max_backoff_s: float = 600.0,
    wait_timeout_s: float = 3600.0,
    poll_s: float = 10.0,
    series: str = "hmi.sharp_cea_720s",
    client: Any = None,
    on_file: Callable[[ArchiveFile], Any] | None = None,
    progress: bool = True,
    sleep: Callable[[float], Any] = time.sleep,
) -> IngestReport:
    """Download SHARP segment files of every HARP (or of ``harps``) over [start, end), resumably.

    The range is cut into chunks (:func:`plan_sharp_archive`). For each chunk not yet done: a
    keyword query lists its records (``HARPNUM``, ``T_REC``); files already recorded in the
    manifest, or complete in the folder from an interrupted run, are skipped; the remaining
    records are exported as FITS (``method='url'``), at most ``max_records`` records per export,
    one export at a time (JSOC allows a user few concurrent exports); each file is downloaded by
    ``drms`` into ``out_dir/.partial/``, checked (a whole number of FITS blocks, readable data,
    the HARPNUM and T_REC asked for) and renamed into ``out_dir``; ``on_file`` is called and the
    file recorded in the manifest (:class:`IngestManifest`). A request that fails (HTTP error,
    JSOC error status, undecodable answer, bad file) is retried ``retries`` times after
    ``backoff_s · 2^k`` s; then the file or chunk is reported and the run goes on. Progress is
    shown per chunk (:func:`helioforge.progress.progress_bar`). The folder is locked against a
    second ingest (:func:`helioforge.locking.workdir_lock`).

    Parameters
    ----------
    out_dir : str or Path
        Download folder (created); holds the files, the manifest and ``.partial/``.
    email : str
        Address registered with JSOC exports.
    start, end : str or datetime.datetime
        Time range [start, end) (ISO 8601 or JSOC label, TAI).
    cadence : str
        JSOC step (``'12m'``: every record; ``'96m'``; ``'1d'``).
    segments : sequence of str
        From :data:`SHARP_SEGMENTS`; ``Br`` by default (add ``bitmap``, ``magnetogram`` ...).
    harps : sequence of int, optional
        HARP numbers; ``None``: every HARP.
    chunk : str
        Chunk length, a whole number of cadence steps (default a day).
    max_records : int
        Most records in one export request.
    delay_s : float
        Pause after each JSOC query and export request, s.
    retries : int
        Further attempts of a failed request.
    backoff_s, max_backoff_s : float
        First wait before a retry, s (doubled each time), and its cap.
    wait_timeout_s, poll_s : float
        Longest wait for an export to finish and the status polling interval, s.
    series : str
        JSOC series (``hmi.sharp_cea_720s``; ``hmi.sharp_720s`` for the CCD-frame patches).
    client : drms.Client, optional
        Default ``drms.Client(email=email)``; tests pass one whose transport replays recorded
        JSOC answers.
    on_file : callable, optional
        Called with each :class:`ArchiveFile` once it is in place (e.g. to append its patch to a
        corpus store), before it is recorded as done; it must tolerate being called again for a
        file (after an interruption between the two).
    progress : bool
        Show progress.
    sleep : callable
        ``time.sleep`` (tests pass a stand-in).

    Returns
    -------
    IngestReport
        Counts, export request ids, the files given up and the chunks that failed.

    Raises
    ------
    ValueError
        No email, invalid range, cadence, chunk, segments or HARP numbers, non-positive
        ``max_records``, or a folder holding an ingest with other settings.
    helioforge.errors.FolderInUse
        Another process is ingesting into ``out_dir``.
    OSError
        The folder cannot be written.
    """
    from helioforge.locking import workdir_lock
    from helioforge.progress import progress_bar

    if not email or "@" not in str(email):
        raise ValueError("JSOC exports need a registered email (register at http://jsoc.stanford.edu/ajax/register_email.html)")
    email = str(email).strip()
    if not _SERIES.match(str(series)):
        raise ValueError(f"series {series!r} is not a JSOC series name like 'hmi.sharp_cea_720s'")
    segs = _check_segments(segments)
    harp_list = sorted(set(_int_list(harps, "HARP numbers"))) if harps is not None else None
    if int(max_records) < 1:
        raise ValueError(f"max_records must be at least 1, got {max_records}")
    for name, v in (("delay_s", delay_s), ("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s), ("poll_s", poll_s)):
        if not (float(v) >= 0):
            raise ValueError(f"{name} must be a number ≥ 0, got {v!r}")
    if int(retries) < 0:
        raise ValueError(f"retries must be ≥ 0, got {retries}")
    chunks = plan_sharp_archive(start, end, cadence=cadence, chunk=chunk)
    out = Path(out_dir)
    report = IngestReport(out_dir=out, chunks=len(chunks))
    with workdir_lock(out), IngestManifest(out) as manifest:
        manifest.check_settings({"series": series, "cadence": chunks[0].cadence, "segments": segs, "harps": harp_list})
        shutil.rmtree(out / _STAGING, ignore_errors=True)  # leftovers of an interrupted download: never complete
        if client is None:
            client = _new_client(email, retries=int(retries), backoff_s=float(backoff_s), max_backoff_s=float(max_backoff_s),
                                 sleep=sleep)
        run = _Ingest(out=out, email=email, client=client, manifest=manifest, series=series, segments=segs,
                      harps=harp_list, max_records=int(max_records), delay_s=float(delay_s), retries=int(retries),
                      backoff_s=float(backoff_s), max_backoff_s=float(max_backoff_s), wait_timeout_s=float(wait_timeout_s),
                      poll_s=float(poll_s), on_file=on_file, sleep=sleep, report=report)
        todo = [c for c in chunks if manifest.chunk_status(c.key) != "done"]
        report.chunks_already_done = len(chunks) - len(todo)
        bar = progress_bar(len(chunks), "JSOC SHARP chunks", unit="chunk", initial=report.chunks_already_done,
                           disable=not progress)
        try:
            for c in todo:
                run.chunk(c)
                bar.set_postfix(files=report.files_downloaded + report.files_adopted, problems=len(report.problems),
                                failed=len(report.failed_chunks))
                bar.update(1)
        finally:
            bar.close()
            shutil.rmtree(out / _STAGING, ignore_errors=True)
    logger.info("SHARP archive ingest into %s: %d file(s) downloaded, %d adopted, %d chunk(s) done, %d already done, "
                "%d partial, %d failed, %d file(s) given up", out, report.files_downloaded, report.files_adopted,
                report.chunks_done, report.chunks_already_done, report.chunks_partial, len(report.failed_chunks),
                len(report.problems))
    return report
