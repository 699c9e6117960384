"""Readers for SDO/AIA full-disk EUV images (Ramunno et al. 2024, §2.1).

Three kinds of input give one :class:`AIAImage` each:

``fits``
    Level-1 AIA FITS from JSOC (RICE-compressed image in HDU 1, counts ``DN`` with
    ``EXPTIME`` in s) and SDOML-style FITS such as the binned sample in
    ``aia/sdoml_binned/`` (``BUNIT = 'DN/s'``, already per second). Counts are divided by
    ``EXPTIME`` so that every FITS image is in DN/s (Lemen et al. 2012; aiapy's
    ``normalize_exposure``).
``browse``
    The JPEG/PNG browse images of the SDO web site (``YYYYMMDD_HHMMSS_SDO_AIA_<wave>_512.jpg``
    or ``YYYYMMDD_HHMMSS_512_<wave>.jpg``). They carry the display scaling of the SDO browse
    pipeline through the AIA colour tables, not DN/s: the colour table is undone (nearest
    table entry of every RGB pixel) and the table index / 255 is returned as a scalar
    *display intensity* in [0, 1] (``units = "display"``). The burned-in time stamp and
    pixels whose colour lies far from every table colour (JPEG artefacts) are masked.
``zarr``
    The SDOML v2 store (Galvez et al. 2019, ApJS 242, 7; https://sdoml.github.io): one group
    per year, one ``(t, 512, 512)`` float32 array per channel (``2014/171A``) whose attributes
    hold every FITS keyword as a list with one entry per frame (``T_OBS``, ``EXPTIME``,
    ``PIXLUNIT``, ``DEG_COR`` ...). The SDOMLv2 conversion (github SDOML/SDOMLv2,
    ``aia_fits_to_zarr.py``) already divides every frame by ``EXPTIME`` × ``DEG_COR`` and
    writes ``PIXLUNIT = 'DN/s'``; frames whose ``PIXLUNIT`` says counts are divided by
    ``EXPTIME`` here.

:func:`helioforge.data.aia_preprocess.preprocess_aia` turns any of them into the network input:
a float32 (N, N) image in [-1, 1] (log scaling for DN/s, linear for display intensities) and
:func:`~helioforge.data.aia_preprocess.to_intensity` inverts the scaling for writing generated
images in physical units.

Every read error is a :class:`~helioforge.data.fits.FitsReadError` naming the file and the
problem; :func:`read_aia_folder` turns them into :class:`~helioforge.data.fits.Skipped`
entries and goes on.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from astropy.io import fits

from helioforge.data.fits import FitsReadError, Skipped, read_image_hdu
from helioforge.progress import track

__all__ = [
    "AIAImage",
    "BROWSE_TIMESTAMP_BOX",
    "BROWSE_MAX_COLOUR_DISTANCE",
    "BROWSE_FILL_VALUE",
    "FITS_SUFFIXES",
    "BROWSE_SUFFIXES",
    "read_aia_fits",
    "read_aia_map",
    "read_aia_browse",
    "read_sdoml_zarr",
    "read_aia",
    "read_aia_folder",
    "aia_image_problem",
    "is_display",
    "MIN_AIA_SIDE",
    "MAX_DN_PER_S",
    "browse_colour_table",
    "timestamp_mask",
    "parse_browse_name",
    "KEPT_KEYWORDS",
    "full_disk_wcs",
    "AIA_NATIVE_SIDE",
    "AIA_NATIVE_SCALE_ARCSEC",
]

logger = logging.getLogger(__name__)

#: Side of the AIA detector image, pixels (Lemen et al. 2012).
AIA_NATIVE_SIDE = 4096
#: AIA plate scale, arcsec per pixel at full resolution (Lemen et al. 2012: 0.6″).
AIA_NATIVE_SCALE_ARCSEC = 0.6

#: File-name endings read as FITS by :func:`read_aia` (case-insensitive).
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts", ".fits.fz")
#: File-name endings read as browse images by :func:`read_aia` (case-insensitive).
BROWSE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: Burned-in time stamp of the SDO browse images, as fractions of the image size
#: ``(y0, y1, x0, x1)`` with y counted from the top row (PIL/numpy order). Measured on the 852
#: real 512² browse images of the sample: the white text (``SDO/AIA 193 2010-09-14 12:33:42
#: UT``) covers rows 488-503 and columns 10-275, i.e. y 0.953-0.982 and x 0.020-0.537 of the
#: side; the box adds a margin of >= 7 px: rows 481-511 and columns 0-286 on a 512² image.
BROWSE_TIMESTAMP_BOX = (0.94, 1.0, 0.0, 0.56)

#: Largest Euclidean RGB distance (0-255 units) between a browse pixel and its nearest colour-
#: table entry for the pixel to count as valid. Measured on the sample outside the time stamp:
#: 99.97 % (193 Å) and 86 % (304 Å) of the pixels lie within 10, and all but 1e-6 (193 Å) and
#: 5e-4 (304 Å) within 40; text and strong JPEG ringing lie further.
BROWSE_MAX_COLOUR_DISTANCE = 40.0

#: Display intensity written into masked browse pixels: table index 0, the off-disk dark level.
BROWSE_FILL_VALUE = 0.0

#: Smallest image side (pixels) :func:`read_aia_folder` keeps: a full-disk AIA image below
#: 16×16 pixels holds no usable disk (the SDOML binning stops at 256², the browse images at 512²).
MIN_AIA_SIDE = 16

#: Largest |value| (DN/s) taken as a real AIA intensity. The detector saturates at 16,383 DN;
#: at the shortest flare exposures (≈ 0.1 s) that is 1.6e5 DN/s, so 1e7 leaves a wide margin and
#: refuses only values that cannot be DN/s (e.g. 1e30 fill values, a wrong unit or scaling).
MAX_DN_PER_S = 1e7

#: Largest share of negative finite pixels in a DN/s image. Dark-subtracted AIA images have
#: slightly negative read-noise pixels off the disk (at most 33 % of the pixels of the real
#: SDOML sample, in the faint 94/131 Å channels); an image that is mostly negative is not DN/s.
MAX_NEGATIVE_FRACTION = 0.5

_BROWSE_NAMES = (
    # YYYYMMDD_HHMMSS_SDO_AIA_<wave>_<size>.jpg (the sample's naming)
    re.compile(r"^(?P<date>\d{8})_(?P<time>\d{6})_SDO_AIA_(?P<wave>\d{2,4})_(?P<size>\d+)$", re.IGNORECASE),
    # YYYYMMDD_HHMMSS_<size>_<wave4>.jpg (sdo.gsfc.nasa.gov/assets/img/browse/...)
    re.compile(r"^(?P<date>\d{8})_(?P<time>\d{6})_(?P<size>\d+)_(?P<wave>\d{4})$", re.IGNORECASE),
)

#: FITS / zarr keywords kept in :attr:`AIAImage.header` when present.
KEPT_KEYWORDS = (
    "EXPTIME",
    "CDELT1",
    "CDELT2",
    "CRPIX1",
    "CRPIX2",
    "CROTA2",
    "R_SUN",
    "RSUN_OBS",
    "X0_MP",
    "Y0_MP",
    "QUALITY",
    "DEG_COR",
    "BUNIT",
    "PIXLUNIT",
    "T_OBS",
    "DATE-OBS",
    "WAVELNTH",
    "INSTRUME",
)

_PER_SECOND = re.compile(r"^(dn|counts?|cts?|data ?numbers?)\s*(/\s*s(ec)?|s\^?-1|per\s*s(ec(ond)?)?)\b", re.IGNORECASE)
_COUNTS = re.compile(r"^(dn|counts?|cts?|data ?numbers?)$", re.IGNORECASE)


@dataclass
class AIAImage:
    """One AIA full-disk image.

    Attributes
    ----------
    data : (ny, nx) float32 scalar intensity: DN/s for ``fits``/``zarr`` (non-finite values
        kept where the file has them), display intensity in [0, 1] for ``browse`` (masked
        pixels set to :data:`BROWSE_FILL_VALUE`).
    wavelength : channel, Å (``WAVELNTH``; from the file name for browse images).
    time : observation time, ``numpy.datetime64[s]``, UTC (``DATE-OBS``, else ``T_OBS``,
        rounded to the nearest second; from the file name for browse images).
    path : the file (for ``zarr``, the store; the frame index is ``header['ZARR_INDEX']``).
    kind : ``"fits"``, ``"browse"`` or ``"zarr"``.
    units : ``"DN/s"`` or ``"display"`` (browse images: SDO browse display scaling, not a
        physical unit).
    mask : (ny, nx) bool, True = valid pixel, or ``None`` when every pixel is valid.
    header : the few keywords kept (:data:`KEPT_KEYWORDS` that are present, plus
        ``EXPOSURE_NORMALISED`` = True when this reader divided by ``EXPTIME``).
    notes : problems worked around while reading, each starting with the file name.
    """

    data: np.ndarray
    wavelength: int
    time: np.datetime64
    path: Path
    kind: str
    units: str
    mask: np.ndarray | None = None
    header: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of :attr:`data`."""
        return tuple(self.data.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------- helpers


def _parse_time(value: Any) -> np.datetime64:
    """UTC ``datetime64[s]`` (rounded) from an ISO / JSOC time string; ValueError if unparsable.

    Accepts ISO 8601 with or without a trailing ``Z`` (``T_OBS`` of level-1 files) and JSOC
    strings such as ``2014.01.04_19:02:00_TAI`` (converted from TAI to UTC by astropy).
    """
    from sunpy.time import parse_time

    text = str(value).strip()
    if not text:
        raise ValueError("empty time string")
    if text.endswith("Z"):
        text = text[:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = parse_time(text).utc
    ns = np.datetime64(t.datetime64, "ns")
    return (ns + np.timedelta64(500, "ms")).astype("datetime64[s]")


def _kept(get, keys: Iterable[str] = KEPT_KEYWORDS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        try:
            value = get(key)
        except Exception:  # noqa: BLE001 - unparsable cards are simply not kept
            continue
        if value is None:
            continue
        if isinstance(value, (np.floating, np.integer, np.bool_)):
            value = value.item()
        if isinstance(value, str):
            value = value.strip()
        out[key] = value
    return out


def _unit_kind(unit: str | None) -> str:
    """``"per_second"``, ``"counts"`` or ``"unknown"`` for a BUNIT/PIXLUNIT string."""
    if unit is None:
        return "unknown"
    u = str(unit).strip()
    if _PER_SECOND.match(u):
        return "per_second"
    if _COUNTS.match(u):
        return "counts"
    return "unknown"


def _positive_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _finite_mask(data: np.ndarray) -> np.ndarray | None:
    finite = np.isfinite(data)
    return None if finite.all() else finite


# --------------------------------------------------------------------------- FITS


def read_aia_fits(path: str | Path) -> AIAImage:
    """Read one AIA FITS image (level 1 from JSOC or SDOML-style) in DN/s.

    Parameters
    ----------
    path : FITS file, plain, gzipped or tile-compressed (JSOC puts the RICE image in HDU 1;
        the last image HDU with data is read, see :func:`helioforge.data.fits.read_image_hdu`).

    Returns
    -------
    AIAImage with ``kind = "fits"``, ``units = "DN/s"``, ``data`` (ny, nx) float32.

    Exposure normalisation: the unit comes from ``BUNIT``, else ``PIXLUNIT``. Counts
    (``DN``, ``counts``, ``ct``) are divided by ``EXPTIME`` (s) and
    ``header['EXPOSURE_NORMALISED']`` is set; per-second units (``DN/s``, as in the SDOML
    files) are left as they are. With no unit keyword the data are taken as DN/s and a note
    says so. Time: ``DATE-OBS`` (exposure start, UTC), else ``T_OBS`` (a trailing ``Z`` and
    JSOC ``_TAI`` strings are handled), rounded to the second.

    Raises
    ------
    FileNotFoundError : no such file.
    FitsReadError : empty, truncated or corrupt file; no image; non-2-D data; missing
        ``WAVELNTH``; no ``DATE-OBS``/``T_OBS`` or an unparsable one; no finite pixel;
        counts without a positive ``EXPTIME``.
    """
    path = Path(path)
    data, header, notes = read_image_hdu(path, watch=("WAVELNTH", "DATE-OBS", "T_OBS", "EXPTIME", "BUNIT"))
    if data.ndim != 2:
        raise FitsReadError(path, f"expected a 2-D image, found shape {data.shape}")
    if "WAVELNTH" not in header:
        raise FitsReadError(path, "missing required header keyword WAVELNTH (channel, Å)")
    try:
        wavelength = int(round(float(header["WAVELNTH"])))
    except (TypeError, ValueError):
        raise FitsReadError(path, f"WAVELNTH is not a number: {header['WAVELNTH']!r}") from None
    time_key = next((k for k in ("DATE-OBS", "T_OBS") if str(header.get(k, "") or "").strip()), None)
    if time_key is None:
        raise FitsReadError(path, "no observation time: neither DATE-OBS nor T_OBS in the header")
    try:
        time = _parse_time(header[time_key])
    except (ValueError, TypeError) as exc:
        raise FitsReadError(path, f"unparsable {time_key} {header[time_key]!r} ({exc})") from None
    image = np.asarray(data, dtype=np.float32)
    if not np.isfinite(image).any():
        raise FitsReadError(path, "image has no finite pixel (all NaN/inf)")
    kept = _kept(header.get)
    unit = header.get("BUNIT") or header.get("PIXLUNIT")
    kind = _unit_kind(unit)
    if kind == "counts":
        exptime = _positive_float(header.get("EXPTIME"))
        if exptime is None:
            raise FitsReadError(
                path, f"unit {str(unit).strip()!r} is counts but EXPTIME is {header.get('EXPTIME')!r}: cannot normalise to DN/s"
            )
        image = image / np.float32(exptime)
        kept["EXPOSURE_NORMALISED"] = True
    elif kind == "unknown":
        shown = "no BUNIT/PIXLUNIT" if unit is None else f"unit {str(unit).strip()!r} not recognised"
        notes.append(f"{path.name}: {shown}; data taken as DN/s without exposure normalisation")
    for note in notes:
        logger.warning(note)
    return AIAImage(
        data=image,
        wavelength=wavelength,
        time=time,
        path=path,
        kind="fits",
        units="DN/s",
        mask=_finite_mask(image),
        header=kept,
        notes=list(notes),
    )


def read_aia_map(aia_map: Any) -> AIAImage:
    """One AIA image from a ``sunpy.map.Map`` (e.g. an ``AIAMap`` read or prepared with sunpy/aiapy), in DN/s.

    Parameters
    ----------
    aia_map : a 2-D ``sunpy.map.GenericMap``; its ``wavelength`` (any spectral unit, converted
        to Å), ``date`` (observation time) and ``unit`` are used. Counts (``ct``, ``DN``) are
        divided by ``exposure_time`` as :func:`read_aia_fits` does with ``EXPTIME``.

    Returns
    -------
    AIAImage with ``kind = "fits"``, ``units = "DN/s"``, ``path`` the map's file when sunpy
    recorded one (``Path("<sunpy.map>")`` otherwise).

    Raises
    ------
    FitsReadError : not 2-D, no wavelength or time, no finite pixel, counts without a positive
        exposure time.

    Examples
    --------
    >>> import astropy.units as u, sunpy.map
    >>> meta = {"wavelnth": 193, "waveunit": "angstrom", "date-obs": "2011-06-07T06:30:00", "bunit": "DN/s",
    ...         "ctype1": "HPLN-TAN", "ctype2": "HPLT-TAN", "cunit1": "arcsec", "cunit2": "arcsec",
    ...         "cdelt1": 76.8, "cdelt2": 76.8, "crpix1": 16.5, "crpix2": 16.5, "crval1": 0, "crval2": 0}
    >>> image = read_aia_map(sunpy.map.Map(np.ones((32, 32)), meta))
    >>> image.wavelength, str(image.time), image.units, image.shape
    (193, '2011-06-07T06:30:00', 'DN/s', (32, 32))
    """
    import astropy.units as u

    name = Path(str(aia_map.meta.get("filename") or "<sunpy.map>"))
    data = np.asarray(aia_map.data)
    if data.ndim != 2:
        raise FitsReadError(name, f"expected a 2-D map, found shape {data.shape}")
    wave = aia_map.wavelength
    if wave is None:
        raise FitsReadError(name, "the map has no wavelength (WAVELNTH)")
    try:
        time = _parse_time(aia_map.date.isot)
    except (AttributeError, ValueError, TypeError) as exc:
        raise FitsReadError(name, f"the map has no usable observation time ({exc})") from None
    image = data.astype(np.float32)
    if not np.isfinite(image).any():
        raise FitsReadError(name, "image has no finite pixel (all NaN/inf)")
    kept = _kept(lambda k: aia_map.meta.get(k.lower()))
    unit = aia_map.unit
    notes: list[str] = []
    kind = _unit_kind(None if unit is None else unit.to_string())
    if kind == "counts":
        exptime = aia_map.exposure_time
        seconds = None if exptime is None else _positive_float(exptime.to_value(u.s))
        if seconds is None:
            raise FitsReadError(name, f"unit {unit} is counts but the exposure time is {exptime!r}: cannot normalise to DN/s")
        image = image / np.float32(seconds)
        kept["EXPOSURE_NORMALISED"] = True
    elif kind == "unknown":
        notes.append(f"{name.name}: unit {unit} not recognised; data taken as DN/s without exposure normalisation")
    for note in notes:
        logger.warning(note)
    return AIAImage(data=image, wavelength=int(round(wave.to_value(u.AA, equivalencies=u.spectral()))), time=time,
                    path=name, kind="fits", units="DN/s", mask=_finite_mask(image), header=kept, notes=notes)


def full_disk_wcs(size: int, wavelength: int | None = None, *, native_side: int = AIA_NATIVE_SIDE,
                  native_scale: float = AIA_NATIVE_SCALE_ARCSEC) -> fits.Header:
    """FITS WCS keywords of a full-disk AIA image downsampled to ``size`` × ``size`` pixels.

    Helioprojective (``HPLN-TAN`` / ``HPLT-TAN``, arcsec), pixel scale
    ``native_scale × native_side / size`` (0.6″ × 4096 / N for AIA), disk centre (0″, 0″) at the
    image centre (``CRPIX = (N + 1) / 2``), solar north up. With ``wavelength`` (Å) the
    channel and instrument keywords are added, so sunpy reads the file as an ``AIAMap``. No
    observation time: a generated image has none (sunpy then assumes an Earth observer now).
    ``sunpy.map.Map`` opens a file with these keywords with its axes in arcsec.

    Raises
    ------
    ValueError : ``size`` < 1.

    Examples
    --------
    >>> h = full_disk_wcs(64, wavelength=171)
    >>> h["CTYPE1"], h["CDELT1"], h["CRPIX1"], h["WAVELNTH"]
    ('HPLN-TAN', 38.4, 32.5, 171)
    """
    if int(size) < 1:
        raise ValueError(f"image size must be >= 1, got {size}")
    scale = float(native_scale) * int(native_side) / int(size)
    h = fits.Header()
    h["WCSAXES"] = (2, "the image axes of the (n, N, N) cube")
    for axis, ctype in ((1, "HPLN-TAN"), (2, "HPLT-TAN")):
        h[f"CTYPE{axis}"] = ctype
        h[f"CUNIT{axis}"] = "arcsec"
        h[f"CDELT{axis}"] = (scale, f"arcsec/pixel: {native_scale} x {native_side}/{int(size)}")
        h[f"CRPIX{axis}"] = ((int(size) + 1) / 2, "disk centre (image centre)")
        h[f"CRVAL{axis}"] = 0.0
    if wavelength:
        h["WAVELNTH"] = (int(wavelength), "AIA channel, Angstrom")
        h["WAVEUNIT"] = ("angstrom", "unit of WAVELNTH")
        h["TELESCOP"] = "SDO/AIA"
        h["INSTRUME"] = "AIA"
    return h


# --------------------------------------------------------------------------- browse


@functools.lru_cache(maxsize=16)
def browse_colour_table(wavelength: int) -> np.ndarray:
    """The SDO colour table of an AIA channel.

    From sunpy (``sunpy.visualization.colormaps.cmlist['sdoaia<wave>']``, the AIA tables of
    SolarSoft's ``aia_lct``), sampled at its 256 entries. Cached.

    Parameters
    ----------
    wavelength : int
        AIA channel, Å.

    Returns
    -------
    np.ndarray
        (256, 3) float64 RGB in 0–255, read-only.

    Raises
    ------
    KeyError
        For a channel without a table (tables exist for 94, 131, 171, 193, 211, 304, 335, 1600,
        1700, 4500 Å).
    """
    from sunpy.visualization.colormaps import cmlist

    name = f"sdoaia{int(wavelength)}"
    if name not in cmlist:
        raise KeyError(f"no SDO colour table {name!r} in sunpy")
    cmap = cmlist[name]
    table = np.asarray(cmap(np.linspace(0.0, 1.0, 256))[:, :3], dtype=np.float64) * 255.0
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=16)
def _colour_tree(wavelength: int):
    from scipy.spatial import cKDTree

    return cKDTree(browse_colour_table(wavelength))


def parse_browse_name(path: str | Path) -> tuple[np.datetime64, int]:
    """Observation time and channel from a browse file name.

    Names ``YYYYMMDD_HHMMSS_SDO_AIA_<wave>_<size>.jpg`` (the sample) and
    ``YYYYMMDD_HHMMSS_<size>_<wave>.jpg`` (sdo.gsfc.nasa.gov browse archive) are known; the
    file is not opened.

    Parameters
    ----------
    path : str or Path
        The browse image file.

    Returns
    -------
    tuple
        ``(time, wavelength)``: ``numpy.datetime64[s]`` (UTC) and the channel (int, Å).

    Raises
    ------
    FitsReadError
        (an :class:`~helioforge.errors.InputError`, a ``ValueError``) naming the file for any other
        name or an impossible date/time.
    """
    path = Path(path)
    stem = path.name
    for suffix in BROWSE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for pattern in _BROWSE_NAMES:
        m = pattern.match(stem)
        if m:
            d, t = m.group("date"), m.group("time")
            try:
                time = np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}", "s")
            except ValueError:
                raise FitsReadError(path, f"file name has an impossible date/time {d}_{t}") from None
            return time, int(m.group("wave"))
    raise FitsReadError(
        path,
        "browse file name must be YYYYMMDD_HHMMSS_SDO_AIA_<wave>_<size>.jpg or "
        "YYYYMMDD_HHMMSS_<size>_<wave>.jpg (time and channel are read from it)",
    )


def timestamp_mask(shape: tuple[int, int], box: tuple[float, float, float, float] = BROWSE_TIMESTAMP_BOX) -> np.ndarray:
    """Mask of the burned-in time stamp of a browse image.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` image shape, pixels.
    box : tuple of float, optional
        ``(y0, y1, x0, x1)`` as fractions of the image height and width (rounded outwards);
        default :data:`BROWSE_TIMESTAMP_BOX`.

    Returns
    -------
    np.ndarray
        (ny, nx) bool, True inside the box.
    """
    ny, nx = shape
    y0, y1, x0, x1 = box
    out = np.zeros((ny, nx), dtype=bool)
    out[int(math.floor(y0 * ny)) : int(math.ceil(y1 * ny)), int(math.floor(x0 * nx)) : int(math.ceil(x1 * nx))] = True
    return out


def read_aia_browse(
    path: str | Path,
    *,
    max_colour_distance: float = BROWSE_MAX_COLOUR_DISTANCE,
    timestamp_box: tuple[float, float, float, float] | None = BROWSE_TIMESTAMP_BOX,
) -> AIAImage:
    """Read an SDO browse image and undo its colour table into a display intensity.

    Parameters
    ----------
    path : JPEG/PNG named ``YYYYMMDD_HHMMSS_SDO_AIA_<wave>_<size>.jpg`` or
        ``YYYYMMDD_HHMMSS_<size>_<wave>.jpg``; time (UTC) and channel come from the name.
    max_colour_distance : RGB distance (0-255) beyond which a pixel is masked
        (:data:`BROWSE_MAX_COLOUR_DISTANCE`).
    timestamp_box : time-stamp box as image fractions (:data:`BROWSE_TIMESTAMP_BOX`), masked;
        ``None`` for images without one.

    Returns
    -------
    AIAImage with ``kind = "browse"``, ``units = "display"``: ``data`` (ny, nx) float32 in
    [0, 1] = index of the nearest colour-table entry / 255 (scipy cKDTree over the 256
    colours of :func:`browse_colour_table`). These are the display values of the SDO browse
    pipeline (its own clipping and gamma/log per channel), not DN/s; they cannot be turned
    back into DN/s. ``mask`` is False in the time-stamp box and where the colour is further
    than ``max_colour_distance`` from every table entry; those pixels are set to
    :data:`BROWSE_FILL_VALUE` (0, the off-disk dark level) so that no text reaches the data.
    ``header['COLOUR_DISTANCE_MEAN']`` is the mean RGB distance of the valid pixels. Rows are
    flipped to the FITS orientation (row 0 = south), as the FITS readers return them; the
    time-stamp box, bottom left in the JPEG, is therefore at the *top* rows of ``data``.

    Raises
    ------
    FileNotFoundError : no such file.
    FitsReadError : bad file name, a channel without an SDO colour table, an empty,
        truncated or undecodable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    time, wavelength = parse_browse_name(path)
    try:
        tree = _colour_tree(wavelength)
    except KeyError as exc:
        raise FitsReadError(path, f"channel {wavelength} Å has no SDO colour table ({exc.args[0]})") from None
    if path.stat().st_size == 0:
        raise FitsReadError(path, "empty image file (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    except UnidentifiedImageError:
        raise FitsReadError(path, "not a readable image (PIL cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        problem = "truncated image file" if "truncated" in msg.lower() else "image cannot be decoded"
        raise FitsReadError(path, f"{problem} ({msg})") from None
    ny, nx, _ = rgb.shape
    # Query the distinct colours only (a JPEG has ~1e4 of them for 2.6e5 pixels).
    flat = rgb.reshape(-1, 3)
    codes = (flat[:, 0].astype(np.int64) << 16) | (flat[:, 1].astype(np.int64) << 8) | flat[:, 2].astype(np.int64)
    uniq, inverse = np.unique(codes, return_inverse=True)
    colours = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.float64)
    dist_u, index_u = tree.query(colours)
    index = index_u[inverse].reshape(ny, nx)
    dist = dist_u[inverse].reshape(ny, nx)
    mask = dist <= max_colour_distance
    if timestamp_box is not None:
        mask &= ~timestamp_mask((ny, nx), timestamp_box)
    data = (index.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    data[~mask] = BROWSE_FILL_VALUE
    # JPEG rows run top (north) to bottom; FITS rows run south to north. Flip so that every
    # AIAImage has the FITS orientation (row 0 = south; displayed north up with origin="lower").
    data, mask = np.ascontiguousarray(data[::-1]), np.ascontiguousarray(mask[::-1])
    header: dict[str, Any] = {
        "WAVELNTH": wavelength,
        "COLOUR_DISTANCE_MEAN": float(dist[mask].mean()) if mask.any() else float("nan"),
        "MASKED_FRACTION": float(1.0 - mask.mean()),
    }
    return AIAImage(
        data=data,
        wavelength=wavelength,
        time=time,
        path=path,
        kind="browse",
        units="display",
        mask=mask,
        header=header,
    )


# --------------------------------------------------------------------------- SDOML v2 zarr


def _as_datetime64(value: Any) -> np.datetime64 | None:
    if value is None:
        return None
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[s]")
    try:
        return _parse_time(value)
    except (ValueError, TypeError):
        return None


def read_sdoml_zarr(
    store: str | Path,
    wavelength: int,
    *,
    year: int | str | Sequence[int | str] | None = None,
    start: Any = None,
    end: Any = None,
    exposure_normalise: bool | None = None,
) -> list[AIAImage]:
    """Read the frames of one channel from an SDOML v2 zarr store.

    Parameters
    ----------
    store : the store folder (e.g. ``sdomlv2.zarr``), laid out as ``<year>/<wave>A``: a
        ``(t, ny, nx)`` float32 array per channel and year whose attributes hold each FITS
        keyword as a list of length t (Galvez et al. 2019; github SDOML/SDOMLv2). Zarr v2
        and v3 stores are read.
    wavelength : channel in Å (array name ``f"{wavelength}A"``).
    year : a year or several; ``None`` reads every year group in the store.
    start, end : keep frames with ``start <= T_OBS <= end`` (anything ``numpy.datetime64``
        accepts; ``None`` = open). Frames are selected from the attributes before any pixel
        is read.
    exposure_normalise : ``None`` (default) follows ``PIXLUNIT``: SDOMLv2 writes
        ``'DN/s'`` (frames already divided by ``EXPTIME`` and the degradation factor
        ``DEG_COR``) and such frames are left as they are, frames whose ``PIXLUNIT`` is
        counts are divided by ``EXPTIME``; frames without ``PIXLUNIT`` are taken as DN/s as
        the SDOMLv2 pipeline writes them. ``True`` always divides by ``EXPTIME``, ``False``
        never does.

    Returns
    -------
    list of AIAImage (``kind = "zarr"``, ``units = "DN/s"``, ``path`` = the store,
    ``header['ZARR_INDEX']`` = frame index, ``header['ZARR_ARRAY']`` = ``"2014/171A"``),
    sorted by time.

    Raises
    ------
    FileNotFoundError : the store does not exist.
    FitsReadError : not a zarr group, no such year/channel, no ``T_OBS``, attribute lists of
        the wrong length, an unparsable ``T_OBS``, or counts without a positive ``EXPTIME``.
    """
    import zarr

    store_path = Path(store)
    if not store_path.exists():
        raise FileNotFoundError(f"{store_path}: no such zarr store")
    try:
        root = zarr.open_group(str(store_path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a bad store
        raise FitsReadError(store_path, f"not a readable zarr group ({type(exc).__name__}: {exc})") from None
    year_names = sorted(k for k in root.group_keys() if re.fullmatch(r"\d{4}", k))
    if year is None:
        years = year_names
    else:
        years = [str(y) for y in ([year] if isinstance(year, (int, str)) else year)]
    channel = f"{int(wavelength)}A"
    t_start = None if start is None else np.datetime64(start, "s")
    t_end = None if end is None else np.datetime64(end, "s")
    images: list[AIAImage] = []
    for y in years:
        if y not in year_names:
            raise FitsReadError(store_path, f"no year group {y!r}; years found: {', '.join(year_names) or 'none'}")
        group = root[y]
        if channel not in list(group.array_keys()):
            found = ", ".join(sorted(group.array_keys())) or "none"
            raise FitsReadError(store_path, f"no array {y}/{channel}; channels found: {found}")
        arr = group[channel]
        name = f"{y}/{channel}"
        if arr.ndim != 3:
            raise FitsReadError(store_path, f"{name} has shape {arr.shape}, expected (t, ny, nx)")
        attrs = dict(arr.attrs)
        n = arr.shape[0]
        if "T_OBS" not in attrs:
            raise FitsReadError(store_path, f"{name} has no T_OBS attribute (frame times)")
        lists = {k: v for k, v in attrs.items() if isinstance(v, list)}
        for key in ("T_OBS", "EXPTIME", "PIXLUNIT", "WAVELNTH"):
            if key in lists and len(lists[key]) != n:
                raise FitsReadError(store_path, f"{name}: attribute {key} has {len(lists[key])} entries for {n} frames")
        times = []
        for i, raw in enumerate(lists["T_OBS"]):
            t = _as_datetime64(raw)
            if t is None:
                raise FitsReadError(store_path, f"{name}: unparsable T_OBS[{i}] = {raw!r}")
            times.append(t)
        keep = [
            i
            for i, t in enumerate(times)
            if (t_start is None or t >= t_start) and (t_end is None or t <= t_end)
        ]
        for i in keep:
            get = lambda k, i=i: lists[k][i] if k in lists and len(lists[k]) == n else None  # noqa: E731
            kept = _kept(get)
            unit = get("PIXLUNIT")
            divide = exposure_normalise
            if divide is None:
                divide = _unit_kind(unit) == "counts"
            frame = np.asarray(arr[i], dtype=np.float32)
            if divide:
                exptime = _positive_float(get("EXPTIME"))
                if exptime is None:
                    raise FitsReadError(store_path, f"{name}[{i}]: EXPTIME {get('EXPTIME')!r} cannot normalise to DN/s")
                frame = frame / np.float32(exptime)
                kept["EXPOSURE_NORMALISED"] = True
            kept["ZARR_INDEX"] = i
            kept["ZARR_ARRAY"] = name
            wl = get("WAVELNTH")
            images.append(
                AIAImage(
                    data=frame,
                    wavelength=int(round(float(wl))) if _positive_float(wl) else int(wavelength),
                    time=times[i],
                    path=store_path,
                    kind="zarr",
                    units="DN/s",
                    mask=_finite_mask(frame),
                    header=kept,
                )
            )
    images.sort(key=lambda im: im.time)
    return images


# --------------------------------------------------------------------------- dispatch


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if any(name.endswith(s) for s in FITS_SUFFIXES):
        return "fits"
    if any(name.endswith(s) for s in BROWSE_SUFFIXES):
        return "browse"
    return None


def read_aia(path: str | Path | Any) -> AIAImage:
    """Read one AIA image: a file, chosen by the name's ending, or a ``sunpy.map.Map``.

    ``.fits``, ``.fits.gz``, ``.fit``, ``.fts``, ``.fits.fz`` → :func:`read_aia_fits`;
    ``.jpg``, ``.jpeg``, ``.png`` → :func:`read_aia_browse`; a ``sunpy.map.GenericMap`` →
    :func:`read_aia_map`. SDOML zarr stores hold many frames: use :func:`read_sdoml_zarr`.

    Raises
    ------
    FileNotFoundError : no such file.
    FitsReadError : an unknown file type, or whatever the chosen reader raises.
    """
    if not isinstance(path, (str, Path)) and hasattr(path, "wcs") and hasattr(path, "meta"):
        return read_aia_map(path)
    path = Path(path)
    kind = _suffix_kind(path)
    if kind == "fits":
        return read_aia_fits(path)
    if kind == "browse":
        return read_aia_browse(path)
    if path.is_dir() and path.name.lower().endswith(".zarr"):
        raise FitsReadError(path, "a zarr store holds many frames: read it with read_sdoml_zarr(store, wavelength)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    raise FitsReadError(path, f"unknown AIA file type (expected one of {', '.join(FITS_SUFFIXES + BROWSE_SUFFIXES)})")


def is_display(units: str) -> bool:
    """Whether ``units`` are the display intensities of browse images (not DN/s).

    Parameters
    ----------
    units : str
        Unit label (``"display"`` in any case and spacing, or e.g. ``"DN/s"``).

    Returns
    -------
    bool
    """
    return str(units).strip().lower() == "display"


def aia_image_problem(image: AIAImage, min_size: int = MIN_AIA_SIDE) -> str | None:
    """Why an image that could be read cannot be a usable AIA full-disk image.

    Checked by :func:`read_aia_folder` before an image enters a training set:

    * not 2-D;
    * smaller than ``min_size`` × ``min_size`` pixels (at least :data:`MIN_AIA_SIDE`; the
      diffusion job passes its image size, so no image is upsampled) or not square;
    * no valid pixel (all NaN/inf or masked), or every valid pixel zero (a blank image);
    * DN/s images only: values that cannot be DN/s, i.e. |I| > :data:`MAX_DN_PER_S` anywhere,
      or more than :data:`MAX_NEGATIVE_FRACTION` of the pixels negative.

    Parameters
    ----------
    image : AIAImage
        The image read (``data`` (ny, nx), optional ``mask`` True = valid, ``units``).
    min_size : int, optional
        Least side, pixels.

    Returns
    -------
    str or None
        The problem in words; ``None`` when the image is usable.
    """
    side = max(int(min_size), MIN_AIA_SIDE)
    data = np.asarray(image.data)
    if data.ndim != 2:
        return f"not a 2-D image (shape {data.shape})"
    ny, nx = data.shape
    if ny < side or nx < side:
        return f"image too small: {ny}×{nx} pixels, need at least {side}×{side}"
    if ny != nx:
        return f"not a square full-disk image ({ny}×{nx} pixels)"
    valid = np.isfinite(data)
    if image.mask is not None:
        valid &= np.asarray(image.mask, dtype=bool)
    if not valid.any():
        return "no valid pixel (all NaN, inf or masked)"
    values = data[valid].astype(np.float64)
    if not np.any(values != 0):
        return "blank image: every valid pixel is zero"
    if not is_display(image.units):
        peak = float(np.abs(values).max())
        if peak > MAX_DN_PER_S:
            return f"values up to {peak:.3g} cannot be DN/s (|I| > {MAX_DN_PER_S:.0e}): a fill value, a wrong unit or scaling"
        negative = float((values < 0).mean())
        if negative > MAX_NEGATIVE_FRACTION:
            return f"mostly negative ({negative:.0%} of the pixels < 0): not an AIA intensity in DN/s"
    return None


def read_aia_folder(
    folder: str | Path,
    *,
    wavelength: int | None = None,
    pattern: str | None = None,
    progress: bool | None = None,
    min_size: int = MIN_AIA_SIDE,
) -> tuple[list[AIAImage], list[Skipped]]:
    """Read every AIA image of a folder, sorted by time, skipping the unreadable ones.

    Parameters
    ----------
    folder : folder of FITS and/or browse images (not recursive).
    wavelength : keep only this channel (Å). Browse files of other channels are left out by
        their name without being decoded; FITS files are read and then filtered.
    pattern : glob pattern (default: every file whose ending :func:`read_aia` knows).
    progress : show a tqdm bar; ``None`` shows one for more than 50 files.
    min_size : smallest image side kept (pixels; at least :data:`MIN_AIA_SIDE`).

    Returns
    -------
    (images, skipped): images sorted by time (then name); each unreadable file, and each image
    that :func:`aia_image_problem` refuses (too small, blank, values that cannot be DN/s),
    becomes ``Skipped(path, problem)`` with a logger warning naming the file, and reading goes on.

    Raises
    ------
    FileNotFoundError : ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: AIA folder not found")
    files = sorted(p for p in folder.glob(pattern or "*") if p.is_file() and (pattern or _suffix_kind(p)))
    if wavelength is not None:
        chosen = []
        for f in files:
            if _suffix_kind(f) == "browse":
                try:
                    _, wl = parse_browse_name(f)
                except FitsReadError:
                    chosen.append(f)  # let the reader report the bad name
                    continue
                if wl != int(wavelength):
                    continue
            chosen.append(f)
        files = chosen
    iterator: Iterable[Path] = files
    if progress or (progress is None and len(files) > 50):
        iterator = track(files, "AIA", unit="file")
    images: list[AIAImage] = []
    skipped: list[Skipped] = []
    for f in iterator:
        try:
            image = read_aia(f)
        except (FitsReadError, FileNotFoundError) as exc:
            reason = exc.problem if isinstance(exc, FitsReadError) else str(exc)
            logger.warning("skipping %s", exc)
            skipped.append(Skipped(f, reason))
            continue
        if wavelength is not None and image.wavelength != int(wavelength):
            continue
        problem = aia_image_problem(image, min_size)
        if problem is not None:
            logger.warning("skipping %s: %s", f, problem)
            skipped.append(Skipped(f, problem))
            continue
        images.append(image)
    images.sort(key=lambda im: (im.time, im.path.name))
    return images, skipped
