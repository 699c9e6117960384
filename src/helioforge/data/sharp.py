"""Readers for SHARP CEA patches (JSOC series ``hmi.sharp_cea_720s``).

A SHARP file from JSOC is named ``hmi.sharp_cea_720s.<HARP>.<YYYYMMDD_HHMMSS>_TAI.<segment>.fits``
and holds a RICE-compressed image (``CompImageHDU``) in HDU 1 behind an empty primary HDU.
The image header carries the JSOC keywords (``T_REC``, ``HARPNUM``, ``NOAA_AR``, ``CDELT1`` in
degrees per CEA pixel, ``RSUN_REF`` in m, and the SHARP summary keywords such as ``USFLUX`` in Mx
and ``R_VALUE`` = log10 of Schrijver's R in Mx). Source: Bobra et al. (2014, Sol. Phys. 289,
3549) and the JSOC series documentation.

Every read error is a :class:`FitsReadError` (``SharpReadError`` for SHARP files) whose
message names the file and the problem; :func:`read_sharp_folder` turns them into
:class:`Skipped` entries and goes on.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from astropy.io import fits

from helioforge.data.fits import FitsReadError, Skipped, finite_or_none, read_image_hdu, safe_get
from helioforge.progress import track

__all__ = [
    "SharpReadError",
    "SharpPatch",
    "read_sharp",
    "read_sharp_folder",
    "COMPANION_SEGMENTS",
]

logger = logging.getLogger(__name__)

#: Segments loaded beside the main one by :func:`read_sharp` when present in the same folder.
COMPANION_SEGMENTS = ("bitmap", "magnetogram")

#: Solar radius used by JSOC (``RSUN_REF``), m; the default when a header lacks the card.
RSUN_REF_M = 6.96e8



#: Plausible heliographic pixel sizes, degrees (SHARP CEA 0.03°; MDI-like 0.12°): outside, a
#: header is wrong, and physical units would be nonsense (or overflow).
CDELT_RANGE_DEG = (1e-4, 1.0)


class SharpReadError(FitsReadError):
    """A SHARP file that cannot be read; see :class:`FitsReadError` (``path``, ``problem``)."""


@dataclass
class SharpPatch:
    """One SHARP CEA patch.

    Attributes
    ----------
    path : the file read.
    Br : (ny, nx) float64 radial field, G (= Mx/cm²), NaN kept where JSOC has no data.
    header : header of the image HDU (after ``verify('fix')`` where that was needed).
    harpnum : HARP number (``HARPNUM``).
    noaa_ar : NOAA active-region number (``NOAA_AR``), ``None`` when 0 or absent.
    t_rec : ``T_REC``, JSOC TAI string such as ``'2012.03.06_14:24:00_TAI'``.
    cdelt1_deg : CEA pixel size, heliographic degrees (``CDELT1``; 0.03 for SHARPs).
    usflux : total unsigned flux ``USFLUX``, Mx; ``None`` when NaN or absent.
    r_value : ``R_VALUE``, log10 of Schrijver's R in Mx; ``None`` when NaN or absent.
    bitmap : (ny, nx) companion ``bitmap`` segment (integer codes) or ``None``.
    magnetogram : (ny, nx) companion line-of-sight ``magnetogram`` segment, G, or ``None``.
    warnings : messages about problems that were worked around (fixed header cards,
        unreadable companions, ...), each naming the file.
    """

    path: Path
    Br: np.ndarray
    header: fits.Header
    harpnum: int
    noaa_ar: int | None
    t_rec: str
    cdelt1_deg: float
    usflux: float | None
    r_value: float | None
    bitmap: np.ndarray | None = None
    magnetogram: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def pixel_size_mm(self) -> float:
        """Pixel side on the solar surface, Mm: CDELT1 (deg) × π/180 × RSUN_REF (m) / 1e6.

        ``RSUN_REF`` from the header, 6.96e8 m when absent; ≈0.364 Mm for 0.03°.
        """
        rsun = finite_or_none(safe_get(self.header, "RSUN_REF")) or RSUN_REF_M
        return self.cdelt1_deg * math.pi / 180.0 * rsun / 1e6

    @property
    def pixel_area_cm2(self) -> float:
        """Pixel area on the solar surface, cm²: (pixel_size_mm × 1e8)²."""
        return (self.pixel_size_mm * 1e8) ** 2


#: Field units taken as gauss, and those converted (factor to gauss); anything else is refused.
_GAUSS_UNITS = {"", "g", "gauss", "mx/cm^2", "mx/cm2", "mx cm^-2", "mx.cm-2"}
_CONVERTED_UNITS = {"t": 1e4, "tesla": 1e4, "mt": 10.0, "kg": 1e3}
#: Smallest patch side (pixels) and largest |B| (G) accepted for a SHARP magnetogram: no
#: photospheric field exceeds ~6 kG; 10 kG leaves room and catches wrong units or corrupt data.
MIN_PATCH_PX = 16
MAX_FIELD_GAUSS = 1e4


def _plausible_field(path: Path, data: np.ndarray, header) -> tuple[np.ndarray, str | None]:
    """The field in gauss after the checks of issue 10: units from ``BUNIT`` (gauss / Mx cm⁻²
    as is, tesla, mT and kG converted, anything else refused), a patch of at least 16×16
    pixels, some finite non-zero pixels, and |B| ≤ 10 kG. Returns ``(data, note)``; raises
    :class:`SharpReadError` naming the problem."""
    unit = str(header.get("BUNIT", "") or "").strip()
    note = None
    key = unit.lower()
    if key in _CONVERTED_UNITS:
        data = data * _CONVERTED_UNITS[key]
        note = f"{path.name}: BUNIT={unit!r}: converted to gauss (×{_CONVERTED_UNITS[key]:g})"
    elif key not in _GAUSS_UNITS:
        raise SharpReadError(path, f"BUNIT={unit!r} is not a magnetic-field unit (expected gauss, Mx/cm^2 or tesla)")
    if min(data.shape) < MIN_PATCH_PX:
        raise SharpReadError(path, f"patch of {data.shape[1]}×{data.shape[0]} pixels is too small "
                                   f"(at least {MIN_PATCH_PX}×{MIN_PATCH_PX})")
    finite = np.isfinite(data)
    if not finite.any():
        raise SharpReadError(path, "no finite pixel (all NaN)")
    peak = float(np.abs(data[finite]).max())
    if peak == 0.0:
        raise SharpReadError(path, "all pixels are zero: no field to measure")
    if peak > MAX_FIELD_GAUSS:
        raise SharpReadError(path, f"|B| reaches {peak:.3g} G, beyond the {MAX_FIELD_GAUSS:.0f} G any solar field "
                                   "reaches: wrong units (BUNIT) or corrupt data")
    return data, note


def _companion_path(path: Path, segment: str, other: str) -> Path | None:
    """``<record>.<other>.fits`` beside ``<record>.<segment>.fits`` (either may end in ``.gz``);
    the plain file wins over its gzip form; ``None`` when ``path`` is not named by segment."""
    for suffix in (f".{segment}.fits", f".{segment}.fits.gz"):
        if path.name.endswith(suffix):
            stem = path.name[: -len(suffix)]
            plain = path.with_name(stem + f".{other}.fits")
            packed = path.with_name(stem + f".{other}.fits.gz")
            return packed if not plain.is_file() and packed.is_file() else plain
    return None


def _segment_files(folder: Path, pattern: str) -> list[Path]:
    """Files matching ``<pattern>.fits`` or ``<pattern>.fits.gz`` (JSOC exports may be gzipped),
    sorted by name; a record present in both forms is taken once, plain."""
    plain = {p.name: p for p in folder.glob(f"{pattern}.fits")}
    for p in folder.glob(f"{pattern}.fits.gz"):
        plain.setdefault(p.name[:-3], p)
    return [plain[k] for k in sorted(plain)]


def read_sharp(path: str | Path, segment: str = "Br", with_companions: bool = True,
               content: bytes | None = None, max_pixels: int | None = None) -> SharpPatch:
    """Read one SHARP CEA segment file (JSOC ``hmi.sharp_cea_720s``).

    Parameters
    ----------
    path : ``hmi.sharp_cea_720s.<HARP>.<YYYYMMDD_HHMMSS>_TAI.<segment>.fits`` (or ``.fits.gz``).
    segment : the segment the file holds (used to find companions by name), default ``Br``.
    with_companions : also load the ``bitmap`` and ``magnetogram`` files of the same record
        when they lie in the same folder; an unreadable companion is skipped with a warning.
    content : the file's bytes, parsed in memory (``path`` then only names it in messages;
        no companions are looked for).
    max_pixels : refuse larger declared images before reading them (uploads).

    Returns
    -------
    SharpPatch with ``Br`` (ny, nx) float64 in G (NaN kept). Non-standard header cards are fixed
    with ``verify('fix')`` and reported in ``patch.warnings`` and through the module logger.

    Raises
    ------
    FileNotFoundError : no such file.
    SharpReadError : empty or corrupt file, truncated data unit, no image data, a non-2-D
        image, or a missing required keyword (``T_REC``, ``HARPNUM``, ``CDELT1``).
    """
    path = Path(path)
    data, header, notes = read_image_hdu(
        path,
        required=("T_REC", "HARPNUM", "CDELT1"),
        watch=("NOAA_AR", "RSUN_REF", "USFLUX", "R_VALUE"),
        error=SharpReadError,
        content=content,
        max_pixels=max_pixels,
    )
    if data.ndim != 2:
        raise SharpReadError(path, f"expected a 2-D image, found shape {data.shape}")
    data, unit_note = _plausible_field(path, np.asarray(data, dtype=np.float64), header)
    if unit_note:
        notes = [*notes, unit_note]
    try:
        harpnum = int(header["HARPNUM"])
        cdelt1 = float(header["CDELT1"])
    except (TypeError, ValueError) as exc:
        raise SharpReadError(path, f"bad HARPNUM/CDELT1 value ({exc})") from None
    if not (math.isfinite(cdelt1) and CDELT_RANGE_DEG[0] <= cdelt1 <= CDELT_RANGE_DEG[1]):
        raise SharpReadError(path, f"CDELT1 must be a pixel size in degrees between {CDELT_RANGE_DEG[0]:g} and "
                                   f"{CDELT_RANGE_DEG[1]:g} (SHARP CEA: 0.03), got {cdelt1}")
    noaa = safe_get(header, "NOAA_AR")
    try:
        noaa_ar = int(noaa) if noaa is not None and int(noaa) > 0 else None
    except (TypeError, ValueError):
        noaa_ar = None
    usflux = finite_or_none(safe_get(header, "USFLUX"))
    r_value = finite_or_none(safe_get(header, "R_VALUE"))
    if notes and any("non-standard header cards" in n for n in notes) and r_value is None:
        notes = [n + "; R_VALUE unavailable" if "non-standard header cards" in n else n for n in notes]
    for note in notes:
        logger.warning(note)
    patch = SharpPatch(
        path=path,
        Br=np.asarray(data, dtype=np.float64),
        header=header,
        harpnum=harpnum,
        noaa_ar=noaa_ar,
        t_rec=str(header["T_REC"]).strip(),
        cdelt1_deg=cdelt1,
        usflux=usflux,
        r_value=r_value,
        warnings=list(notes),
    )
    if with_companions and content is None:
        for other in COMPANION_SEGMENTS:
            cpath = _companion_path(path, segment, other)
            if cpath is None or cpath == path or not cpath.is_file():
                continue
            try:
                cdata, _, cnotes = read_image_hdu(cpath, error=SharpReadError)
            except FitsReadError as exc:
                msg = f"{path.name}: companion {other} not loaded: {exc}"
                logger.warning(msg)
                patch.warnings.append(msg)
                continue
            if cdata.shape != patch.Br.shape:
                msg = f"{path.name}: companion {cpath.name} has shape {cdata.shape}, not {patch.Br.shape}; ignored"
                logger.warning(msg)
                patch.warnings.append(msg)
                continue
            setattr(patch, other, cdata)
    return patch


def read_sharp_folder(folder: str | Path, segment: str = "Br") -> tuple[list[SharpPatch], list[Skipped]]:
    """Read every ``*.<segment>.fits`` (or ``.fits.gz``) file of a folder, sorted by name, skipping bad ones.

    Returns ``(patches, skipped)``: each unreadable file becomes ``Skipped(path, problem)`` and
    a logger warning; reading goes on. Companions are loaded as in :func:`read_sharp`. A
    progress bar (tqdm) is shown for more than 50 files.

    Raises
    ------
    FileNotFoundError : ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: SHARP folder not found")
    files = _segment_files(folder, f"*.{segment}")
    patches: list[SharpPatch] = []
    skipped: list[Skipped] = []
    iterator: Iterable[Path] = files
    if len(files) > 50:
        iterator = track(files, f"SHARP {segment}", unit="file")
    for f in iterator:
        try:
            patches.append(read_sharp(f, segment=segment))
        except (FitsReadError, FileNotFoundError) as exc:
            reason = exc.problem if isinstance(exc, FitsReadError) else str(exc)
            logger.warning("skipping %s", exc)
            skipped.append(Skipped(f, reason))
    return patches, skipped


def _record_time(path: Path) -> str | None:
    m = re.search(r"\.(\d{8}_\d{6})_TAI\.", path.name)
    return m.group(1) if m else None


def harp_region_mask(patch: SharpPatch, threshold_gauss: float = 150.0) -> tuple[np.ndarray, str]:
    """Pixels over which SHARP sums its flux keywords (USFLUX): the HARP region.

    SHARP keywords are integrals over the pixels inside the HARP (bitmap value ≥ 33; Bobra et
    al. 2014, §3). In order of preference the mask comes from

    1. the record's own ``bitmap`` companion;
    2. the bitmap of the same HARP nearest in time with the same shape, in the same folder
       (HARP boxes keep their size over a HARP's life; unreadable ones are skipped);
    3. the strong-field pixels |Br| > ``threshold_gauss`` when no bitmap of the HARP exists.

    Parameters
    ----------
    patch : SharpPatch
        The SHARP patch (``Br`` (ny, nx), G; ``bitmap`` or ``None``).
    threshold_gauss : float, optional
        |Br| threshold of rule 3, G.

    Returns
    -------
    tuple
        ``(mask, source)``: mask (ny, nx) bool; source says which rule applied ("bitmap",
        "bitmap of <YYYYMMDD_HHMMSS>", or "strong field |Br| > <threshold> G").
    """
    if patch.bitmap is not None:
        return np.asarray(patch.bitmap) >= 33, "bitmap"
    own = _record_time(patch.path)
    best: tuple[int, np.ndarray, str] | None = None
    for cand in _segment_files(patch.path.parent, f"hmi.sharp_cea_720s.{patch.harpnum}.*.bitmap"):
        t = _record_time(cand)
        if t is None or own is None:
            continue
        try:
            data, _, _ = read_image_hdu(cand, error=SharpReadError)
        except FitsReadError:
            continue
        if data.shape != patch.Br.shape:
            continue
        dt = abs((_dt.datetime.strptime(t, "%Y%m%d_%H%M%S") - _dt.datetime.strptime(own, "%Y%m%d_%H%M%S")).total_seconds())
        if best is None or dt < best[0]:
            best = (dt, np.asarray(data) >= 33, t)
    if best is not None:
        return best[1], f"bitmap of {best[2]}"
    return np.abs(np.nan_to_num(patch.Br)) > threshold_gauss, f"strong field |Br| > {threshold_gauss:g} G"
