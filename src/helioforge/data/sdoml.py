"""SDOMLv2 zarr stores opened lazily: one AIA channel as an xarray ``DataArray`` over dask.

The SDO machine-learning data set, version 2 (SDOMLv2; Galvez et al. 2019, ApJS 242, 7, for
version 1; https://sdoml.github.io, "Releases": version 2.0 is the same curated data "converted
to cloud friendly Zarr format" with the "FITS header/keyword information (such as observation
time, and exposure time)") keeps one zarr group per year and one ``(t, ny, nx)`` float32 array
per AIA channel (``2010/171A``: tens of thousands of 512² frames at the 6-min cadence). Each array's
attributes hold every FITS keyword as a list with one entry per frame (``T_OBS``, ``EXPTIME``,
``WAVELNTH`` ...), and the frames are not necessarily in time order (helionb-sdoml notebook
``01_sdoml_dataset_2018``: "the data is not currently ordered by observation time").

Exposure and degradation (what SDOMLv2 documents, and what is done here)
-----------------------------------------------------------------------
The SDOMLv2 conversion script (github SDOML/SDOMLv2, ``aia_fits_to_zarr.py``: "Applying the
degradation constant and accounting for exposure time") writes every frame as

    X_stored = X_level1 / (max(EXPTIME, 0.01 s) · DEG_COR)      [DN/s]

(after the rescaling to a fixed solar radius and the binning by mean), where ``DEG_COR`` is the
day's AIA degradation factor of the channel (one value per day from the per-channel table
``degrad/degrad_<λ>.csv``, made with SSW's AIA response; the per-frame value is kept in the
attribute ``DEG_COR``) and ``PIXLUNIT = 'DN/s'`` is written for every frame. So the pixels of
an SDOMLv2 store are already exposure-normalised **and** degradation-corrected: a reader must
not divide again. :func:`sdoml_correction_factor` implements exactly that rule per frame:

* ``PIXLUNIT`` says DN/s (as every SDOMLv2 frame does), or there is no ``PIXLUNIT``: factor 1,
  the pixels are used as stored;
* ``PIXLUNIT`` says counts (``DN``; a store written without the correction): the factor is
  ``max(EXPTIME, 0.01) · DEG_COR``, the script's own formula, so such frames end up in the
  same units as the SDOMLv2 ones; ``EXPTIME`` and ``DEG_COR`` must then be finite and positive;
* any other ``PIXLUNIT`` is refused.

(:func:`helioforge.data.aia.read_sdoml_zarr`, the older eager reader, divides counts frames by
``EXPTIME`` only; it is left as it is.)

:func:`open_sdoml` opens the store (a local folder, or an ``s3://``, ``gs://``, ``file://`` or
``memory://`` URL through fsspec; anonymous access to the public buckets) without reading a
pixel: the frame times come from the ``T_OBS`` attribute, the time range is applied to them,
and the result is a dask-backed ``DataArray`` ``(time, y, x)`` whose values are the corrected
DN/s frames, read chunk by chunk when asked for. :func:`write_sdoml_zarr` writes AIA images in
the same layout (used to make local stores from the FITS sample).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from helioforge.data.aia import AIAImage, _as_datetime64, _unit_kind, is_display
from helioforge.data.fits import finite_or_none
from helioforge.errors import InputError

__all__ = [
    "SDOMLError",
    "SDOML_EXPTIME_FLOOR",
    "SDOML_CHUNK_FRAMES",
    "store_url",
    "default_storage_options",
    "sdoml_correction_factor",
    "open_sdoml",
    "sdoml_blocks",
    "write_sdoml_zarr",
]

logger = logging.getLogger(__name__)

#: Shortest exposure the SDOMLv2 conversion divides by, s (``max(EXPTIME, 1e-2)`` in
#: ``aia_fits_to_zarr.py``).
SDOML_EXPTIME_FLOOR = 1e-2

#: Frames per zarr chunk written by :func:`write_sdoml_zarr` (the SDOMLv2 conversion script uses
#: 15; the public store was seen with 120).
SDOML_CHUNK_FRAMES = 15

_YEAR = re.compile(r"^\d{4}$")


class SDOMLError(InputError):
    """An SDOML store that cannot be used: not a zarr group, no such channel or year, no frame
    in the time range, per-frame attributes missing or inconsistent.

    Parameters
    ----------
    store : str
        The store as given (local path or URL).
    problem : str
        What is wrong with it.

    ``str(err)`` is ``"<store>: <problem>"``; the error is a ``ValueError``.
    """

    def __init__(self, store: str | os.PathLike, problem: str) -> None:
        self.store = str(store)
        self.problem = str(problem)
        super().__init__(f"{self.store}: {self.problem}")

    def __reduce__(self):  # picklable (DataLoader workers) despite the 2-argument init
        return (type(self), (self.store, self.problem))


def store_url(store: str | os.PathLike) -> str:
    """The store as a string fsspec and zarr accept.

    Parameters
    ----------
    store : str or os.PathLike
        A local folder (``~`` expanded) or a URL with a protocol (``s3://``, ``gs://``,
        ``file://``, ``memory://`` ...).

    Returns
    -------
    str
        URLs unchanged; local paths absolute.
    """
    text = os.fspath(store)
    if "://" in text:
        return text
    return str(Path(text).expanduser().resolve())


def default_storage_options(url: str, anonymous: bool = True) -> dict[str, Any]:
    """fsspec options for reading ``url``: anonymous access to the public cloud buckets.

    Parameters
    ----------
    url : str
        The store URL (:func:`store_url`).
    anonymous : bool
        ``True``: ``{"anon": True}`` for ``s3://`` (s3fs) and ``{"token": "anon"}`` for
        ``gs://``/``gcs://`` (gcsfs), as SDOMLv2's public buckets are read; ``False``: the
        file system's own credentials (environment, config files).

    Returns
    -------
    dict
        Empty for local paths, ``file://`` and ``memory://``.
    """
    proto = url.split("://", 1)[0].lower() if "://" in url else "file"
    if not anonymous:
        return {}
    if proto in ("s3", "s3a"):
        return {"anon": True}
    if proto in ("gs", "gcs"):
        return {"token": "anon"}
    return {}


def sdoml_correction_factor(
    pixlunit: Sequence[Any] | None,
    exptime: Sequence[Any] | None,
    deg_cor: Sequence[Any] | None,
    n: int,
    *,
    store: str = "",
    name: str = "",
) -> np.ndarray:
    """Per-frame divisor that brings SDOML frames to exposure- and degradation-corrected DN/s.

    The SDOMLv2 rule (module docstring; github SDOML/SDOMLv2 ``aia_fits_to_zarr.py``):
    frames stored in DN/s (``PIXLUNIT = 'DN/s'``, or no ``PIXLUNIT``) already are
    ``X / (max(EXPTIME, 0.01) · DEG_COR)`` and get factor 1; frames in counts (``PIXLUNIT =
    'DN'``) get ``max(EXPTIME, 0.01) · DEG_COR``.

    Parameters
    ----------
    pixlunit : sequence of str or None, length n, or None
        ``PIXLUNIT`` per frame (``None`` entries and a missing list mean DN/s).
    exptime : sequence of float or None
        ``EXPTIME`` per frame, s (needed by counts frames only).
    deg_cor : sequence of float or None
        ``DEG_COR`` per frame, dimensionless degradation factor (counts frames only).
    n : int
        Number of frames.
    store, name : str
        The store and array (``"2014/171A"``) for error messages.

    Returns
    -------
    numpy.ndarray
        (n,) float32 divisors, > 0.

    Raises
    ------
    SDOMLError
        A ``PIXLUNIT`` that is neither DN/s nor counts, or a counts frame without a finite
        positive ``EXPTIME`` or ``DEG_COR`` (naming the frame).
    """
    factor = np.ones(n, dtype=np.float64)
    if pixlunit is None:
        return factor.astype(np.float32)
    for i, unit in enumerate(pixlunit):
        if unit is None:
            continue
        kind = _unit_kind(unit)
        if kind == "per_second":
            continue
        if kind != "counts":
            raise SDOMLError(store, f"{name}[{i}]: PIXLUNIT {unit!r} is neither DN/s nor DN (counts)")
        exp = finite_or_none(exptime[i] if exptime is not None else None)
        deg = finite_or_none(deg_cor[i] if deg_cor is not None else None)
        if exp is None or exp < 0:
            raise SDOMLError(store, f"{name}[{i}]: PIXLUNIT {unit!r} (counts) but EXPTIME "
                             f"{None if exptime is None else exptime[i]!r} cannot normalise to DN/s")
        if deg is None or deg <= 0:
            raise SDOMLError(store, f"{name}[{i}]: PIXLUNIT {unit!r} (counts) but DEG_COR "
                             f"{None if deg_cor is None else deg_cor[i]!r} is not a positive degradation factor")
        factor[i] = max(exp, SDOML_EXPTIME_FLOOR) * deg
    return factor.astype(np.float32)


def _parse_times(values: Sequence[Any], store: str, name: str) -> np.ndarray:
    """``T_OBS`` strings → datetime64[ns] rounded to whole seconds (as :func:`read_sdoml_zarr`)."""
    text = pd.Series([str(v).strip() if v is not None else "" for v in values], dtype=object)
    text = text.str.replace(r"Z$", "", regex=True)
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    out = parsed.to_numpy(dtype="datetime64[ns]")
    for i in np.flatnonzero(np.isnat(out)):  # JSOC forms (2014.01.04_19:02:00_TAI) through sunpy
        t = _as_datetime64(values[i])
        if t is None:
            raise SDOMLError(store, f"{name}: unparsable T_OBS[{i}] = {values[i]!r}")
        out[i] = np.datetime64(t, "ns")
    rounded = (out + np.timedelta64(500, "ms")).astype("datetime64[s]")
    return rounded.astype("datetime64[ns]")


def _open_root(url: str, storage_options: dict[str, Any]):
    import zarr

    if "://" not in url and not Path(url).exists():
        raise FileNotFoundError(f"{url}: no such zarr store")
    try:
        return zarr.open_group(url, mode="r", storage_options=storage_options or None)
    except ImportError as exc:
        raise SDOMLError(url, f"reading this store needs an fsspec back-end that is not installed ({exc}); "
                              "install the cloud extra: pip install 'helioforge[cloud]'") from None
    except Exception as exc:  # noqa: BLE001 - zarr/fsspec raise many kinds for a bad or unreachable store
        raise SDOMLError(url, f"not a readable zarr group ({type(exc).__name__}: {exc})") from None


#: The per-frame keyword lists :func:`open_sdoml` reads (all others are skipped).
_KEYS = ("T_OBS", "PIXLUNIT", "EXPTIME", "DEG_COR")


class _Layout:
    """How the store is read around zarr where zarr would parse every keyword list.

    An SDOMLv2 array keeps every FITS keyword of every frame in its attributes (about 180 lists
    of t entries: hundreds of MB of Python objects for a year of 6-min frames), and zarr parses
    them whenever it opens the array or lists a group's members. For zarr v2 stores (SDOMLv2's
    format) this reads the listing and the ``.zattrs`` text through fsspec, walks the text key
    by key with the standard JSON decoder (only one unwanted list exists at a time) and opens the
    pixel arrays through a view of the store in which ``.zattrs`` reads as absent, so that the
    dask graph holds no keyword lists. zarr v3 stores (attributes inside ``zarr.json``) go
    through zarr's own API and drop the parsed attributes after reading the four lists.
    """

    def __init__(self, url: str, opts: dict[str, Any], root: Any) -> None:
        import fsspec

        self.url, self.root = url, root
        self.v2 = root.metadata.zarr_format == 2
        self.fs, path = fsspec.core.url_to_fs(url, **opts)
        self.base = path.rstrip("/")
        prefix = root.store_path.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""

    def _path(self, name: str) -> str:
        return f"{self.base}/{self.prefix}{name}"

    def arrays(self, year: str) -> list[str]:
        """Names of the arrays in a year group."""
        if not self.v2:
            return sorted(self.root[year].array_keys())
        try:
            entries = self.fs.ls(self._path(year), detail=False)
        except (FileNotFoundError, OSError) as exc:
            raise SDOMLError(self.url, f"cannot list year group {year} ({type(exc).__name__}: {exc})") from None
        names = sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return [n for n in names if not n.startswith(".") and self.fs.exists(self._path(f"{year}/{n}/.zarray"))]

    def open(self, name: str) -> tuple[Any, dict[str, Any]]:
        """(pixel array without attributes, the :data:`_KEYS` lists found) of ``name``."""
        import dataclasses

        import zarr
        from zarr.storage import WrapperStore

        class _NoAttributes(WrapperStore):
            async def get(self, key, prototype, byte_range=None):  # noqa: D102 - zarr's Store.get
                if key.endswith(".zattrs"):
                    return None
                return await self._store.get(key, prototype, byte_range)

        if not self.v2:
            full = self.root[name]
            lists = {k: full.attrs[k] for k in _KEYS if k in full.attrs}
            try:
                arr = zarr.Array(zarr.AsyncArray(dataclasses.replace(full.metadata, attributes={}), full.store_path))
            except Exception:  # noqa: BLE001 - keep zarr's array, attributes and all
                arr = full
            return arr, lists
        try:
            arr = zarr.open_array(_NoAttributes(self.root.store), path=f"{self.prefix}{name}", mode="r", zarr_format=2)
        except Exception as exc:  # noqa: BLE001 - zarr raises several kinds for damaged metadata
            raise SDOMLError(self.url, f"{name} is not a readable zarr array ({type(exc).__name__}: {exc})") from None
        try:
            raw = self.fs.cat_file(self._path(f"{name}/.zattrs"))
        except FileNotFoundError:
            return arr, {}
        return arr, self._select(raw.decode("utf-8"), name)

    def _select(self, text: str, name: str) -> dict[str, Any]:
        decoder = json.JSONDecoder()
        ws = re.compile(r"[ \t\n\r]*")
        out: dict[str, Any] = {}
        pos = ws.match(text, 0).end()
        try:
            if text[pos:pos + 1] != "{":
                raise ValueError("not a JSON object")
            pos = ws.match(text, pos + 1).end()
            while text[pos:pos + 1] != "}":
                key, pos = decoder.raw_decode(text, pos)
                pos = ws.match(text, pos).end()
                if text[pos:pos + 1] != ":":
                    raise ValueError(f"':' expected at character {pos}")
                value, pos = decoder.raw_decode(text, ws.match(text, pos + 1).end())
                if key in _KEYS:
                    out[key] = value
                del value
                pos = ws.match(text, pos).end()
                if text[pos:pos + 1] == ",":
                    pos = ws.match(text, pos + 1).end()
                elif text[pos:pos + 1] != "}":
                    raise ValueError(f"',' or '}}' expected at character {pos}")
        except (ValueError, IndexError) as exc:
            raise SDOMLError(self.url, f"{name}/.zattrs is not valid JSON ({exc})") from None
        return out


def open_sdoml(
    store: str | os.PathLike,
    wavelength: int,
    *,
    start: Any = None,
    end: Any = None,
    storage_options: dict[str, Any] | None = None,
    anonymous: bool = True,
):
    """One AIA channel of an SDOMLv2 store as a lazy, corrected ``xarray.DataArray``.

    Only the group listing and the attributes are read here; pixels are read (chunk by chunk,
    through zarr/fsspec and dask) when values are asked for.

    Parameters
    ----------
    store : str or os.PathLike
        The store: a local folder (``sdomlv2.zarr``) or a URL fsspec opens (``s3://``,
        ``gs://``: needs the ``cloud`` extra, s3fs/gcsfs; ``file://``, ``memory://``). Laid out
        as ``<year>/<λ>A`` (zarr v2 or v3).
    wavelength : int
        AIA channel, Å (array name ``f"{wavelength}A"``).
    start, end : str, numpy.datetime64 or None
        Keep frames with ``start <= T_OBS <= end`` (UTC; anything ``numpy.datetime64``
        accepts; ``None`` = open). Only the year groups that overlap the range are opened.
    storage_options : dict or None
        fsspec options; ``None``: :func:`default_storage_options` (anonymous cloud access).
    anonymous : bool
        Passed to :func:`default_storage_options` when ``storage_options`` is ``None``.

    Returns
    -------
    xarray.DataArray
        (time, y, x) float32, DN/s corrected by :func:`sdoml_correction_factor`, dask-backed
        (over the zarr chunks), frames in store order (years ascending, then the
        store's order inside a year, which SDOMLv2 does not sort by time; ``.sortby("time")``
        gives time order). Coordinates along ``time``: ``time`` (datetime64[ns], UTC, whole
        seconds), ``year``, ``index`` (frame index in the year's array), ``chunk`` (a global
        zarr-chunk number: frames with equal ``chunk`` are read together), ``pixlunit``,
        ``exptime`` (s, NaN where absent), ``deg_cor`` (NaN where absent), ``factor`` (the
        divisor applied). Attributes: ``store``, ``channel`` (``"171A"``), ``wavelength``,
        ``units`` (``"DN/s"``), ``correction`` (the rule, in words).

    Raises
    ------
    FileNotFoundError
        A local store that does not exist.
    SDOMLError
        (naming the store) a start or end that is not a time, an end before the start, not a
        zarr group, a missing cloud back-end, no year group (or none
        in the time range), the channel in no year group (the channels found are listed),
        an array that is not (t, ny, nx), no ``T_OBS``, attribute lists of the wrong length, an
        unparsable ``T_OBS``, no frame in the time range (the store's span is given), or a
        frame the correction cannot apply to (:func:`sdoml_correction_factor`).
    """
    import dask.array as da
    import xarray as xr

    url = store_url(store)
    opts = default_storage_options(url, anonymous) if storage_options is None else dict(storage_options)
    bounds = []
    for what, value in (("start", start), ("end", end)):
        try:
            bounds.append(None if value is None else np.datetime64(value, "ns"))
        except (ValueError, TypeError):
            raise SDOMLError(url, f"{what} {value!r} is not a time (ISO 8601, e.g. 2010-05-13T00:00)") from None
    t_start, t_end = bounds
    if t_start is not None and t_end is not None and t_end < t_start:
        raise SDOMLError(url, f"empty time range: end {end} is before start {start}")
    root = _open_root(url, opts)
    layout = _Layout(url, opts, root)
    try:
        year_names = sorted(k for k in root.group_keys() if _YEAR.match(k))
    except Exception as exc:  # noqa: BLE001 - a damaged listing
        raise SDOMLError(url, f"cannot list the store's groups ({type(exc).__name__}: {exc})") from None
    if not year_names:
        raise SDOMLError(url, "no year group (<YYYY>/<λ>A) found: not an SDOMLv2 store")
    lo = t_start.astype("datetime64[Y]").astype(int) + 1970 if t_start is not None else -10**9
    hi = t_end.astype("datetime64[Y]").astype(int) + 1970 if t_end is not None else 10**9
    years = [y for y in year_names if lo <= int(y) <= hi]
    if not years:
        raise SDOMLError(url, f"no year group between {start} and {end}; years found: {', '.join(year_names)}")
    channel = f"{int(wavelength)}A"
    parts = []
    chunk_base = 0
    channels_seen: set[str] = set()
    span: list[np.datetime64] = []
    for y in years:
        names = layout.arrays(y)
        channels_seen.update(names)
        if channel not in names:
            logger.warning("%s: year %s has no %s array (channels: %s); skipped", url, y, channel, ", ".join(names))
            continue
        name = f"{y}/{channel}"
        arr, attrs = layout.open(name)
        if arr.ndim != 3:
            raise SDOMLError(url, f"{name} has shape {arr.shape}, expected (t, ny, nx)")
        n = int(arr.shape[0])
        if "T_OBS" not in attrs:
            raise SDOMLError(url, f"{name} has no T_OBS attribute (frame times)")
        lists: dict[str, list] = {}
        for key in _KEYS:
            value = attrs.get(key)
            if value is None:
                continue
            if not isinstance(value, list) or len(value) != n:
                got = f"{len(value)} entries" if isinstance(value, list) else f"a single {type(value).__name__}"
                raise SDOMLError(url, f"{name}: attribute {key} has {got} for {n} frames")
            lists[key] = value
        del attrs
        times = _parse_times(lists["T_OBS"], url, name)
        if n:
            span += [times.min(), times.max()]
        keep = np.ones(n, dtype=bool)
        if t_start is not None:
            keep &= times >= t_start
        if t_end is not None:
            keep &= times <= t_end
        idx = np.flatnonzero(keep)
        chunk_len = int(arr.chunks[0]) if arr.chunks and arr.chunks[0] else max(n, 1)
        n_chunks = -(-n // chunk_len)
        if idx.size:
            factor = sdoml_correction_factor(
                [lists["PIXLUNIT"][i] for i in idx] if "PIXLUNIT" in lists else None,
                [lists["EXPTIME"][i] for i in idx] if "EXPTIME" in lists else None,
                [lists["DEG_COR"][i] for i in idx] if "DEG_COR" in lists else None,
                idx.size, store=url, name=name)
            raw = da.from_zarr(arr)
            coords = {
                "time": ("time", times[idx]),
                "year": ("time", np.full(idx.size, int(y), dtype=np.int32)),
                "index": ("time", idx.astype(np.int64)),
                "chunk": ("time", (chunk_base + idx // chunk_len).astype(np.int64)),
                "pixlunit": ("time", np.array([str(lists["PIXLUNIT"][i]) if "PIXLUNIT" in lists else "DN/s"
                                               for i in idx], dtype=object)),
                "exptime": ("time", _floats(lists.get("EXPTIME"), idx)),
                "deg_cor": ("time", _floats(lists.get("DEG_COR"), idx)),
                "factor": ("time", factor),
            }
            xa = xr.DataArray(raw, dims=("time", "y", "x"), name=channel)
            contiguous = idx[-1] - idx[0] + 1 == idx.size
            xa = xa.isel(time=slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx)
            parts.append(xa.assign_coords(coords))
        chunk_base += n_chunks
        del lists
    if channel not in channels_seen:
        raise SDOMLError(url, f"no {channel} array in year(s) {', '.join(years)}; channels found: "
                              f"{', '.join(sorted(channels_seen)) or 'none'}")
    if not parts:
        where = f"{min(span)} .. {max(span)}" if span else "no frames"
        raise SDOMLError(url, f"no {channel} frame between {start or 'the start'} and {end or 'the end'}; "
                              f"the store's {channel} frames in year(s) {', '.join(years)} span {where}")
    data = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", join="override", combine_attrs="drop")
    corrected = (data / data["factor"]).astype(np.float32)
    corrected.name = channel
    corrected.attrs = {
        "store": url,
        "channel": channel,
        "wavelength": int(wavelength),
        "units": "DN/s",
        "correction": "SDOMLv2: DN/s frames as stored (already X/(max(EXPTIME,0.01)*DEG_COR)); "
                      "counts frames divided by max(EXPTIME,0.01)*DEG_COR",
    }
    return corrected


def _floats(values: list | None, idx: np.ndarray) -> np.ndarray:
    if values is None:
        return np.full(idx.size, np.nan)
    out = np.array([finite_or_none(values[i]) for i in idx], dtype=object)
    return np.array([np.nan if v is None else v for v in out], dtype=np.float64)


def sdoml_blocks(frames: Any) -> list[np.ndarray]:
    """The positions of ``frames`` grouped by the zarr chunk they are stored in.

    Reading one group reads (and decompresses) one zarr chunk once; a shuffled stream reads
    whole groups so that no chunk is fetched once per frame.

    Parameters
    ----------
    frames : xarray.DataArray or array_like
        From :func:`open_sdoml` (or a ``.isel(time=...)`` of it), with its ``chunk``
        coordinate; or that coordinate's (m,) integer values themselves.

    Returns
    -------
    list of numpy.ndarray
        Integer positions along ``time`` (ascending inside a group), groups in order of first
        appearance; together they cover every position once.
    """
    chunk = np.asarray(frames["chunk"].values if hasattr(frames, "coords") else frames).ravel()
    if chunk.size == 0:
        return []
    order = np.argsort(chunk, kind="stable")
    bounds = np.flatnonzero(np.diff(chunk[order])) + 1
    groups = np.split(order, bounds)
    groups.sort(key=lambda g: int(g[0]))
    return [np.sort(g) for g in groups]


def write_sdoml_zarr(
    store: str | os.PathLike,
    images: Iterable[AIAImage],
    *,
    time_offsets: Sequence[np.timedelta64] = (np.timedelta64(0, "s"),),
    chunk_frames: int = SDOML_CHUNK_FRAMES,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Write DN/s AIA images into a new store with the SDOMLv2 layout.

    One group per year, one ``(t, ny, nx)`` float32 array ``<λ>A`` per channel, zarr format 2
    (as SDOMLv2), chunks of ``chunk_frames`` frames, and per-frame attribute lists: ``T_OBS``
    (ISO 8601 with ``Z``), ``WAVELNTH``, ``PIXLUNIT`` (``"DN/s"``) and every kept keyword the
    images' headers carry (``EXPTIME``, ``DEG_COR``, ``CDELT1`` ..., ``None`` where an image
    lacks it). Frames are written a chunk at a time (memory: one chunk).

    Parameters
    ----------
    store : str or os.PathLike
        The new store (local folder or fsspec URL); an existing one is overwritten.
    images : iterable of AIAImage
        DN/s images (``units`` ``"DN/s"``), each (ny, nx); every channel needs one shape.
    time_offsets : sequence of numpy.timedelta64
        Every image is written once per offset with ``T_OBS`` shifted by it (copies of a
        sample along the time axis); default one copy, unshifted.
    chunk_frames : int
        Frames per zarr chunk (≥ 1).
    storage_options : dict or None
        fsspec options for a URL.

    Returns
    -------
    dict of str to int
        Frames written per array (``{"2014/131A": 126, ...}``).

    Raises
    ------
    ValueError
        A display-unit (browse) image, images of one channel with different shapes, no image,
        or ``chunk_frames`` < 1.
    """
    import zarr

    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    imgs = list(images)
    if not imgs:
        raise ValueError("no image to write")
    for im in imgs:
        if is_display(im.units):
            raise ValueError(f"{im.path}: display-scaled browse images are not DN/s and cannot go into an SDOML store")
    # (time, image) entries by (year, channel), each sorted by time
    entries: dict[tuple[str, int], list[tuple[np.datetime64, AIAImage]]] = {}
    for off in time_offsets:
        for im in imgs:
            t = (np.datetime64(im.time, "s") + np.timedelta64(off, "s")).astype("datetime64[s]")
            year = str(t.astype("datetime64[Y]"))
            entries.setdefault((year, int(im.wavelength)), []).append((t, im))
    url = store_url(store)
    root = zarr.open_group(url, mode="w", zarr_format=2,
                           storage_options=(storage_options or None) if "://" in url else None)
    written: dict[str, int] = {}
    keys = sorted({k for im in imgs for k in im.header} - {"T_OBS", "DATE-OBS", "WAVELNTH", "PIXLUNIT", "BUNIT"})
    for (year, wave), rows in sorted(entries.items()):
        rows.sort(key=lambda r: r[0])
        shapes = {r[1].data.shape for r in rows}
        if len(shapes) != 1:
            raise ValueError(f"{wave} Å images of several shapes {sorted(shapes)}: one SDOML array needs one")
        ny, nx = shapes.pop()
        n = len(rows)
        arr = root.require_group(year).create_array(f"{wave}A", shape=(n, ny, nx), chunks=(min(chunk_frames, n), ny, nx),
                                                    dtype="f4")
        for lo in range(0, n, chunk_frames):
            block = np.stack([np.asarray(r[1].data, dtype=np.float32) for r in rows[lo:lo + chunk_frames]])
            arr[lo:lo + len(block)] = block
        attrs: dict[str, Any] = {
            "T_OBS": [f"{str(t)}.00Z" for t, _ in rows],
            "WAVELNTH": [int(wave)] * n,
            "PIXLUNIT": ["DN/s"] * n,
        }
        for key in keys:
            attrs[key] = [_jsonable(r[1].header.get(key)) for r in rows]
        arr.attrs.update(attrs)
        written[f"{year}/{wave}A"] = n
    return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
