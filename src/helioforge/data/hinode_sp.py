"""Readers for Hinode SOT/SP level-1 Stokes maps: cubes and per-slit files, bad-pixel flags and
plausibility checks.

Two kinds of input give one :class:`SPMap` (stokes (4, nλ, ny, nx), x = slit scan direction,
y = along the slit):

**Cubes** (``read_sp_cube``), as ``stokes/hinode_sp_sample/hinode4d.20130912.sample.fits`` in the
data folder (written by globin, github dvukadinovic/globin, ``Spectrum.save(spec_type="hinode")``):
primary HDU with the numpy shape (nx, ny, 4, nλ) = (x, y, IQUV, λ) (FITS NAXIS1 = λ ... NAXIS4 = x),
counts; extension ``WAVELENGTH`` (nλ,) air wavelengths in Å; extension ``CONTINUUM_INTENSITY``
(nx, ny), same axis order as the primary (checked on the sample: it equals Stokes I at the
first wavelength within 1 %; globin computes it from a polynomial fitted to the continuum
of each pixel), card ``IC_HSRA`` (the mean continuum used by globin).

**Per-slit level-1 files** of the SP archive (``read_sp_level1``; HAO/CSAC ``SP3D`` files,
one FITS file per slit position, Lites et al. 2013, Sol. Phys. 283, 579; Lites & Ichimoto
2013, Sol. Phys. 283, 601). The primary array has the numpy shape (4, ny, 112) = (IQUV, y, λ),
16-bit integers (astropy applies BSCALE/BZERO). ``SP_PREP`` stores the calibrated spectra "back
in the same format as the unprocessed data (integers, possibly bit-shifted)", so two
corrections restore the counts, as the SolarSoft reader of the level-1 files does
(``readl1_sbsp.pro``, HAO):

1. *intensity wrap-around*: Stokes I is an unsigned 16-bit quantity in a signed field; values
   < 0 are I + 65536;
2. *on-board bit shift* ``SPBSHFT`` (0–3), undone by doubling: SPBSHFT ≥ 1 doubles I,
   ≥ 2 also V, 3 also Q and U (the IDL ``switch`` falls through from 3 to 1), applied after
   step 1.

Header keywords used: ``SLITINDX`` (slit position, 0 … NSLITPOS−1; orders the map), ``XCEN``,
``YCEN`` [arcsec, heliocentric, slit centre], ``XSCALE`` (scan step) and ``YSCALE`` (pixel along
the slit) [arcsec], ``DATE_OBS``/``DATE-OBS``, and for the wavelength axis ``CRVAL1``,
``CDELT1``, ``CRPIX1`` (1-based reference pixel; λ_i = CRVAL1 + (i + 1 − CRPIX1) CDELT1 for
0-based i; keyword meanings from the SOT data guide, sot.lmsal.com). Level-1 headers give the
nominal dispersion (≈21.55 mÅ/pixel around 6302.08 Å) while the standard 112-point grid of
SICON (:func:`helioforge.data.hinode.hinode_wavelengths`) has ≈21.4 mÅ: the reader keeps the
file's axis (``wavelength="header"``) unless told to use the standard one.

Bad pixels (:func:`flag_bad_pixels`: non-finite values, negative Stokes I counts, saturated
level-1 Stokes I) are set to NaN and counted, so that the other pixels are still inverted.

What the SICON inversion does to a map before the network (quiet-Sun normalisation, the
standard wavelength grid, the wavelength calibration on the Fe I line cores, the pixel scale)
is in :mod:`helioforge.inversion.preprocess`.

Bad input raises :class:`SPReadError` (a :class:`~helioforge.data.hinode.HinodeReadError`)
naming the file and the problem; :func:`read_sp_level1` skips bad slit files as
:class:`~helioforge.data.fits.Skipped` entries and goes on.
"""

from __future__ import annotations

import glob as _glob
import logging
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from astropy.io import fits

from helioforge.data.hinode import HINODE_N_WAVELENGTHS, HinodeReadError, hinode_wavelengths
from helioforge.data.fits import Skipped

__all__ = [
    "SPReadError",
    "SPMap",
    "SPSlit",
    "CONTINUUM_WINDOW_A",
    "read_sp_cube",
    "read_sp_slit",
    "read_sp_level1",
    "read_sp_map",
    "undo_bit_shift",
    "continuum_from_stokes",
    "continuum_window_index",
    "interp_axis",
    "heliocentric_mu",
    "plausibility_problem",
    "SATURATION_COUNTS",
    "flag_bad_pixels",
    "MAX_ABS_VALUE",
    "MIN_LINE_DEPTH",
]

logger = logging.getLogger(__name__)

#: Continuum window [Å, air]: the blue end of the SP range, 0.55–0.63 Å blue of Fe I 6301.5
#: (the first four points of the standard grid; |I/I_c − 1| < 2·10⁻³ for quiet-Sun lines).
CONTINUUM_WINDOW_A = (6300.870, 6300.960)

_FITS_SUFFIXES = (".fits", ".fts", ".fit", ".fits.gz", ".fts.gz", ".fit.gz")
_GLOB_CHARS = re.compile(r"[*?\[]")


class SPReadError(HinodeReadError):
    """A Hinode SP map file that cannot be used; ``str(err)`` is ``"<path>: <problem>"``."""


# --------------------------------------------------------------------------- containers


@dataclass
class SPMap:
    """A Hinode SP Stokes map.

    Attributes
    ----------
    stokes : float32 (4, nλ, ny, nx)
        I, Q, U, V; counts as read, quiet-Sun continuum units after
        :func:`~helioforge.inversion.preprocess.normalise_quiet_sun`. x is the slit-scan direction (slit index), y along the slit;
        +Q along x (solar E–W in level-1 data, Lites & Ichimoto 2013).
    wavelength : float64 (nλ,)
        Air wavelengths [Å], strictly increasing (112 points on the standard grid).
    continuum : float32 (ny, nx)
        Continuum intensity per pixel, same units as ``stokes`` (the file's continuum extension
        for cubes, else :func:`continuum_from_stokes`).
    header : dict
        Provenance (JSON-able): ``source`` (``"cube"`` / ``"level1"``), ``files``, ``date_obs``,
        ``xcen``/``ycen`` [arcsec], ``mu`` (heliocentric cosine at the map centre or ``None``),
        ``pixel_scale_arcsec`` ``{"x": .., "y": ..}`` (or ``None``), ``units``,
        ``wavelength_source`` and the notes of later steps (``normalisation``,
        ``wavelength_resampling``).
    quiet_mask : bool (ny, nx) or None
        Quiet-Sun pixels used by :func:`~helioforge.inversion.preprocess.normalise_quiet_sun`.
    """

    stokes: np.ndarray
    wavelength: np.ndarray
    continuum: np.ndarray
    header: dict[str, Any] = field(default_factory=dict)
    quiet_mask: np.ndarray | None = None

    @property
    def ny(self) -> int:
        """Pixels along the slit."""
        return int(self.stokes.shape[2])

    @property
    def nx(self) -> int:
        """Slit positions."""
        return int(self.stokes.shape[3])

    @property
    def n_wavelengths(self) -> int:
        """Number of wavelength points."""
        return int(self.stokes.shape[1])

    def pixels(self) -> np.ndarray:
        """Profiles as (ny·nx, 4, nλ), row-major over (y, x): pixel k is (k // nx, k % nx)."""
        return np.ascontiguousarray(self.stokes.transpose(2, 3, 0, 1).reshape(-1, 4, self.n_wavelengths))


@dataclass
class SPSlit:
    """One level-1 slit position.

    Attributes
    ----------
    path : the file.
    stokes : float64 (4, ny, nλ), counts, wrap-around and bit shift undone.
    wavelength : float64 (nλ,), Å.
    slit_index : ``SLITINDX`` or ``None``.
    header : the primary header (copy).
    notes : problems worked around (missing keywords, wrap-around count, ...).
    """

    path: Path
    stokes: np.ndarray
    wavelength: np.ndarray
    slit_index: int | None
    header: fits.Header
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- FITS helpers


def _open_hdus(path: Path) -> list[tuple[str, np.ndarray | None, fits.Header]]:
    """(EXTNAME, data copy or None, header copy) for every HDU; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SPReadError(path, "empty or corrupt FITS file (0 bytes)")
    out = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                for i, h in enumerate(hdul):
                    name = str(h.header.get("EXTNAME", "PRIMARY" if i == 0 else f"HDU{i}")).upper()
                    try:
                        data = None if h.data is None else np.array(h.data)
                    except (TypeError, ValueError, OSError, EOFError) as exc:
                        trunc = any("truncated" in str(w.message) for w in caught)
                        problem = "truncated FITS file" if trunc else "data unreadable"
                        raise SPReadError(path, f"{problem} in HDU {i} ({type(exc).__name__}: {exc})") from None
                    out.append((name, data, h.header.copy()))
        except SPReadError:
            raise
        except (OSError, ValueError, TypeError, IndexError) as exc:
            msg = str(exc)
            if "Empty or corrupt FITS file" in msg:
                raise SPReadError(path, "empty or corrupt FITS file") from None
            raise SPReadError(path, f"not a readable FITS file ({type(exc).__name__}: {msg})") from None
    if not out:
        raise SPReadError(path, "no HDU in file")
    return out


def _card(header: fits.Header, *keys: str, kind=float):
    """First finite value of ``keys`` converted with ``kind``; ``None`` when absent or unparsable."""
    for key in keys:
        try:
            value = header.get(key)
        except (ValueError, fits.VerifyError):
            continue
        if value is None or isinstance(value, bool):
            continue
        try:
            v = kind(value)
        except (TypeError, ValueError):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        return v
    return None


def _date(header: fits.Header) -> str | None:
    for key in ("DATE_OBS", "DATE-OBS", "DATE_BEG"):
        try:
            v = header.get(key)
        except (ValueError, fits.VerifyError):
            v = None
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def heliocentric_mu(xcen_arcsec: float, ycen_arcsec: float, date_obs: str) -> float | None:
    """Cosine of the heliocentric angle, μ = √(1 − ρ²), ρ = √(x² + y²) / R_☉(t).

    Parameters
    ----------
    xcen_arcsec, ycen_arcsec : helioprojective position [arcsec] (XCEN, YCEN).
    date_obs : ISO time; the apparent solar radius R_☉ is taken from
        ``sunpy.coordinates.sun.angular_radius`` at that time (as seen from Earth; Hinode's
        orbit changes it by < 10⁻⁴).

    Returns
    -------
    μ in [0, 1], or ``None`` when the point is off the disk or the time cannot be parsed.
    """
    try:
        from astropy.time import Time
        from sunpy.coordinates import sun

        radius = float(sun.angular_radius(Time(date_obs.replace("_", " ").rstrip("Z"))).to_value("arcsec"))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "unknown"
        logger.debug("mu not computed for %r: %s", date_obs, exc)
        return None
    rho = math.hypot(float(xcen_arcsec), float(ycen_arcsec)) / radius
    if rho >= 1.0:
        return None
    return math.sqrt(1.0 - rho * rho)


# --------------------------------------------------------------------------- continuum


def continuum_window_index(wavelength: np.ndarray, window: tuple[float, float] = CONTINUUM_WINDOW_A) -> np.ndarray:
    """Indices of the wavelengths inside the continuum ``window`` (the bluest point when none is).

    Parameters
    ----------
    wavelength : np.ndarray
        (nλ,) air wavelengths, Å.
    window : tuple of float, optional
        ``(λ_min, λ_max)``, Å; default :data:`CONTINUUM_WINDOW_A`.

    Returns
    -------
    np.ndarray
        int indices into ``wavelength`` (at least one).
    """
    idx = np.flatnonzero((wavelength >= window[0]) & (wavelength <= window[1]))
    if idx.size == 0:  # grid without the blue end: its bluest point
        idx = np.array([int(np.argmin(wavelength))])
    return idx


def continuum_from_stokes(stokes: np.ndarray, wavelength: np.ndarray,
                          window: tuple[float, float] = CONTINUUM_WINDOW_A) -> np.ndarray:
    """Continuum intensity per pixel: mean of Stokes I over ``window``.

    Parameters
    ----------
    stokes : (4, nλ, ny, nx) array.
    wavelength : (nλ,) Å.
    window : (λ_min, λ_max) Å; default :data:`CONTINUUM_WINDOW_A` (the first 4 points of the
        standard grid). When no point falls inside, the bluest point is used.

    Returns
    -------
    float32 (ny, nx).

    Source: the continuum point of the SICON normalisation is the first wavelength of the grid
    (:func:`helioforge.inversion.instrument.quiet_sun_continuum`); averaging four points of the
    same window halves the noise.
    """
    idx = continuum_window_index(np.asarray(wavelength, dtype=np.float64), window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(stokes)[0, idx], axis=0).astype(np.float32)


# --------------------------------------------------------------------------- cubes


def _check_finite(path: Path, stokes: np.ndarray) -> int:
    finite = np.isfinite(stokes).all(axis=(0, 1))
    if not finite.any():
        raise SPReadError(path, "no finite Stokes profile (all NaN/inf)")
    n_bad = int((~finite).sum())
    if n_bad:
        logger.warning("%s: %d pixel(s) with non-finite values kept as NaN (masked: an inversion writes NaN there)",
                       path, n_bad)
    return n_bad


def read_sp_cube(path: str | Path, wavelength_ext: str = "WAVELENGTH",
                 continuum_ext: str = "CONTINUUM_INTENSITY") -> SPMap:
    """Read a Stokes cube with the numpy shape (nx, ny, 4, nλ) = (x, y, IQUV, λ).

    Parameters
    ----------
    path : FITS file; primary HDU (x, y, IQUV, λ) [counts], optional extensions
        ``wavelength_ext`` (nλ,) [Å] and ``continuum_ext`` (nx, ny) (the layout of globin's
        Hinode files, e.g. ``hinode_sp_sample/hinode4d.20130912.sample.fits``).
    wavelength_ext, continuum_ext : extension names (case-insensitive).

    Returns
    -------
    SPMap with stokes (4, nλ, ny, nx) float32, the file's wavelengths (the standard grid when
    the file has none and nλ = 112), the continuum extension transposed to (ny, nx) (or
    :func:`continuum_from_stokes` when absent or of the wrong shape).

    Raises
    ------
    FileNotFoundError : no such file.
    SPReadError : unreadable FITS; primary not 4-D; axis 2 not 4 Stokes parameters; no
        wavelength extension and nλ ≠ 112; wavelength extension of the wrong length or not
        increasing; no finite profile.
    """
    path = Path(path)
    hdus = _open_hdus(path)
    _, data, header = hdus[0]
    if data is None:
        raise SPReadError(path, "primary HDU has no data (expected (x, y, IQUV, wavelength))")
    if data.ndim != 4:
        raise SPReadError(path, f"expected a 4-D primary array (x, y, IQUV, wavelength), got shape {data.shape}")
    nx, ny, ns, nw = data.shape
    if ns != 4:
        raise SPReadError(path, f"expected 4 Stokes parameters (I, Q, U, V) on axis 2 of (x, y, IQUV, wavelength), "
                                f"got {ns} (shape {data.shape})")
    ext = {name: (d, h) for name, d, h in hdus[1:]}
    notes: list[str] = []
    if wavelength_ext.upper() in ext and ext[wavelength_ext.upper()][0] is not None:
        wav = np.asarray(ext[wavelength_ext.upper()][0], dtype=np.float64).ravel()
        if wav.size != nw:
            raise SPReadError(path, f"{wavelength_ext} extension has {wav.size} wavelengths, the data {nw}")
        if not (np.isfinite(wav).all() and np.all(np.diff(wav) > 0)):
            raise SPReadError(path, f"{wavelength_ext} extension is not a strictly increasing finite axis")
        wsource = f"file extension {wavelength_ext}"
    else:
        if nw != HINODE_N_WAVELENGTHS:
            raise SPReadError(path, f"expected {HINODE_N_WAVELENGTHS} wavelengths (standard SP grid) or a "
                                    f"{wavelength_ext} extension to resample from, got {nw} and no such extension")
        wav = hinode_wavelengths()
        wsource = "standard grid (file has no wavelength axis)"
        notes.append(wsource)
    stokes = np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 3, 1, 0))  # (4, nλ, ny, nx)
    n_bad = _check_finite(path, stokes)
    csource = f"file extension {continuum_ext}"
    cont = None
    if continuum_ext.upper() in ext and ext[continuum_ext.upper()][0] is not None:
        c = np.asarray(ext[continuum_ext.upper()][0], dtype=np.float32)
        if c.shape == (nx, ny):
            cont = np.ascontiguousarray(c.T)
        else:
            notes.append(f"{continuum_ext} has shape {c.shape}, expected {(nx, ny)}: recomputed from Stokes I")
            logger.warning("%s: %s", path, notes[-1])
    if cont is None:
        cont = continuum_from_stokes(stokes, wav)
        csource = f"mean Stokes I over {CONTINUUM_WINDOW_A[0]:.3f}-{CONTINUUM_WINDOW_A[1]:.3f} A"
    ext_header = ext.get(continuum_ext.upper(), (None, fits.Header()))[1]
    date = _date(header)
    xcen, ycen = _card(header, "XCEN"), _card(header, "YCEN")
    meta = {
        "source": "cube",
        "files": [str(path)],
        "layout": "numpy (x, y, IQUV, wavelength) -> SPMap (IQUV, wavelength, y, x)",
        "date_obs": date,
        "xcen": xcen,
        "ycen": ycen,
        "mu": heliocentric_mu(xcen, ycen, date) if (xcen is not None and ycen is not None and date) else None,
        "pixel_scale_arcsec": None,
        "units": "counts",
        "wavelength_source": wsource,
        "continuum_source": csource,
        "ic_hsra": _card(ext_header, "IC_HSRA"),
        "noise": _card(header, "NOISE"),
        "n_nonfinite_pixels": n_bad,
        "notes": notes,
    }
    xs, ys = _card(header, "XSCALE"), _card(header, "YSCALE")
    meta["pixel_scale_missing"] = [k for k, v in (("XSCALE", xs), ("YSCALE", ys)) if v is None]
    if xs is not None and ys is not None:
        meta["pixel_scale_arcsec"] = {"x": xs, "y": ys}
    return SPMap(stokes=stokes, wavelength=wav, continuum=cont.astype(np.float32), header=meta)


# --------------------------------------------------------------------------- level-1 slits


def undo_bit_shift(stokes: np.ndarray, spbshft: int | None) -> tuple[np.ndarray, int]:
    """Restore level-1 counts: Stokes I wrap-around, then the on-board bit shift.

    Parameters
    ----------
    stokes : (4, ...) array (I, Q, U, V first), values as stored (after BSCALE/BZERO).
    spbshft : ``SPBSHFT`` keyword, 0–3 (``None`` = 0).

    Returns
    -------
    (float64 array of the same shape, number of wrapped I values fixed).

    Raises
    ------
    ValueError : ``spbshft`` outside 0–3.

    Source: HAO's level-1 reader ``readl1_sbsp.pro`` (SolarSoft): I < 0 → I + 65536; then
    SPBSHFT 3: Q, U ×2; ≥ 2: V ×2; ≥ 1: I ×2 (IDL ``switch`` fall-through). Lites & Ichimoto
    (2013, §3.1) for the wrap-around and bit shifting.
    """
    s = np.array(stokes, dtype=np.float64, copy=True)
    shift = 0 if spbshft is None else int(spbshft)
    if not 0 <= shift <= 3:
        raise ValueError(f"SPBSHFT must be 0-3, got {spbshft}")
    wrapped = s[0] < 0
    n_wrapped = int(wrapped.sum())
    s[0][wrapped] += 65536.0
    if shift >= 3:
        s[1:3] *= 2.0
    if shift >= 2:
        s[3] *= 2.0
    if shift >= 1:
        s[0] *= 2.0
    return s, n_wrapped


def _header_wavelengths(header: fits.Header, n: int) -> np.ndarray | None:
    crval, cdelt = _card(header, "CRVAL1"), _card(header, "CDELT1")
    if crval is None or cdelt is None or cdelt <= 0 or not 5000.0 < crval < 8000.0:
        return None
    crpix = _card(header, "CRPIX1")
    crpix = (n + 1) / 2.0 if crpix is None else crpix
    return crval + (np.arange(n) + 1.0 - crpix) * cdelt


def read_sp_slit(path: str | Path, wavelength: str = "header") -> SPSlit:
    """Read one level-1 slit file (HAO ``SP3D`` format).

    Parameters
    ----------
    path : FITS file; primary array (4, ny, nλ) = (IQUV, y, λ), 16-bit integers with
        BSCALE/BZERO (or floats), keyword ``SPBSHFT``.
    wavelength : ``"header"`` (CRVAL1/CDELT1/CRPIX1 when present and sensible, else the
        standard grid) or ``"standard"`` (:func:`~helioforge.data.hinode.hinode_wavelengths`).

    Returns
    -------
    SPSlit with stokes float64 (4, ny, nλ) in counts (wrap-around and bit shift undone,
    :func:`undo_bit_shift`).

    Raises
    ------
    FileNotFoundError : no such file.
    SPReadError : unreadable FITS, not 3-D, not 4 Stokes parameters, fewer than 10 wavelengths,
        nλ ≠ 112 without a wavelength axis in the header, SPBSHFT outside 0–3, no finite value.
    ValueError : ``wavelength`` not ``"header"``/``"standard"``.
    """
    if wavelength not in ("header", "standard"):
        raise ValueError(f"wavelength must be 'header' or 'standard', got {wavelength!r}")
    path = Path(path)
    _, data, header = _open_hdus(path)[0]
    if data is None:
        raise SPReadError(path, "primary HDU has no data (expected (IQUV, y, wavelength))")
    if data.ndim != 3:
        raise SPReadError(path, f"expected a 3-D slit array (IQUV, y, wavelength), got shape {data.shape}")
    if data.shape[0] != 4:
        raise SPReadError(path, f"expected 4 Stokes parameters (I, Q, U, V) on axis 0, got {data.shape[0]} "
                                f"(shape {data.shape})")
    nw = data.shape[2]
    if nw < 10:
        raise SPReadError(path, f"only {nw} wavelength points (expected {HINODE_N_WAVELENGTHS})")
    notes: list[str] = []
    wav = _header_wavelengths(header, nw) if wavelength == "header" else None
    if wav is None:
        if nw != HINODE_N_WAVELENGTHS:
            raise SPReadError(path, f"expected {HINODE_N_WAVELENGTHS} wavelengths or CRVAL1/CDELT1 keywords, got {nw} "
                                    "and no wavelength axis in the header")
        wav = hinode_wavelengths()
        if wavelength == "header":
            notes.append("no CRVAL1/CDELT1: standard wavelength grid assumed")
    shift = _card(header, "SPBSHFT", kind=int)
    if shift is None:
        notes.append("no SPBSHFT keyword: no bit shift assumed")
    try:
        stokes, n_wrapped = undo_bit_shift(data, shift)
    except ValueError as exc:
        raise SPReadError(path, str(exc)) from None
    if n_wrapped:
        notes.append(f"{n_wrapped} wrapped Stokes I value(s) restored (+65536)")
    if not np.isfinite(stokes).any():
        raise SPReadError(path, "no finite value (all NaN/inf)")
    return SPSlit(path=path, stokes=stokes, wavelength=np.asarray(wav, dtype=np.float64),
                  slit_index=_card(header, "SLITINDX", kind=int), header=header, notes=notes)


def _expand_sources(source: str | Path | Iterable[str | Path]) -> tuple[list[Path], Path]:
    if isinstance(source, (str, Path)):
        s = str(source)
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(_FITS_SUFFIXES))
            return files, p
        if _GLOB_CHARS.search(s):
            return sorted(Path(f) for f in _glob.glob(s)), p.parent
        return [p], p.parent
    files = [Path(f) for f in source]
    return files, (files[0].parent if files else Path("."))


def interp_axis(y: np.ndarray, x: np.ndarray, x_new: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """Linear interpolation of ``y`` along ``axis`` from ``x`` to ``x_new`` (edge values held outside).

    Parameters
    ----------
    y : np.ndarray
        Values; ``y.shape[axis] == x.size``.
    x : np.ndarray
        (n,) increasing coordinates, n ≥ 2.
    x_new : np.ndarray
        (m,) new coordinates.
    axis : int
        Axis of ``y`` to interpolate.

    Returns
    -------
    tuple
        ``(out, n_outside)``: ``out`` like ``y`` with m points on ``axis`` (float ``y`` keeps its dtype),
        and the number of ``x_new`` outside [x[0], x[-1]].
    """
    k = np.clip(np.searchsorted(x, x_new) - 1, 0, x.size - 2)
    t = (x_new - x[k]) / (x[k + 1] - x[k])
    outside = (x_new < x[0]) | (x_new > x[-1])
    t = np.clip(t, 0.0, 1.0)
    y = np.moveaxis(y, axis, 0)
    shape = (-1,) + (1,) * (y.ndim - 1)
    t = t.astype(y.dtype) if np.issubdtype(y.dtype, np.floating) else t
    out = y[k] * (1 - t).reshape(shape) + y[k + 1] * t.reshape(shape)
    return np.moveaxis(out, 0, axis), int(outside.sum())


def read_sp_level1(source: str | Path | Iterable[str | Path], wavelength: str = "header",
                   gaps: str = "interpolate") -> tuple[SPMap, list[Skipped]]:
    """Assemble a map from per-slit level-1 files, ordered by ``SLITINDX``.

    Parameters
    ----------
    source : a folder (its ``*.fits``/``*.fits.gz`` files), a glob pattern, or a list of files.
    wavelength : see :func:`read_sp_slit`; the map takes the axis of the first good slit and
        other slits whose axis differs by > 0.1 mÅ are resampled onto it (linear).
    gaps : what to do with slit indices missing between the first and last good slit (files
        absent or skipped): ``"interpolate"`` (linear between the neighbouring slits, listed in
        ``header["interpolated_slits"]``), ``"nan"`` (NaN columns) or ``"drop"`` (columns
        omitted; the map is then narrower than the scan).

    Returns
    -------
    (SPMap, skipped)
        stokes (4, nλ, ny, nx) float32 [counts], nx = number of slit positions from the first
        to the last good one; ``header`` with ``slit_index`` (per column), ``files``,
        ``date_obs``/``date_end``, ``xcen``/``ycen`` (mean over slits), ``mu``,
        ``pixel_scale_arcsec`` (XSCALE, YSCALE), ``spbshft`` (values seen). ``skipped`` lists
        :class:`~helioforge.data.fits.Skipped` entries: unreadable files, duplicate slit
        indices, slits of another length, and missing slit positions.

    Raises
    ------
    SPReadError : no file found, or no readable slit file (the message lists the reasons).
    ValueError : bad ``gaps`` or ``wavelength``.

    Source: level-1 format of Lites et al. (2013) / Lites & Ichimoto (2013); HAO/CSAC archive.
    """
    if gaps not in ("interpolate", "nan", "drop"):
        raise ValueError(f"gaps must be 'interpolate', 'nan' or 'drop', got {gaps!r}")
    files, where = _expand_sources(source)
    if not files:
        raise SPReadError(where, "no slit FITS files found")
    skipped: list[Skipped] = []
    slits: list[SPSlit] = []
    for f in files:
        try:
            slits.append(read_sp_slit(f, wavelength=wavelength))
        except (SPReadError, FileNotFoundError) as exc:
            reason = exc.problem if isinstance(exc, SPReadError) else "file not found"
            skipped.append(Skipped(Path(f), reason))
            logger.warning("skipping %s: %s", f, reason)
    if not slits:
        reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in skipped[:5])
        raise SPReadError(where, f"no readable slit file among {len(files)} ({reasons})")
    # slit length: the most common one wins
    lengths = [s.stokes.shape[1] for s in slits]
    ny = max(set(lengths), key=lengths.count)
    kept = []
    for s in slits:
        if s.stokes.shape[1] != ny:
            skipped.append(Skipped(s.path, f"slit has {s.stokes.shape[1]} pixels, the map {ny}"))
        else:
            kept.append(s)
    slits = kept
    # order by slit index (files without SLITINDX: by DATE_OBS, then name, after indexed ones)
    have_index = all(s.slit_index is not None for s in slits)
    if not have_index:
        logger.warning("%s: SLITINDX missing in some files; ordering those by observation time", where)
        base = 0
        for s in sorted(slits, key=lambda s: (_date(s.header) or "", s.path.name)):
            if s.slit_index is None:
                while any(o.slit_index == base for o in slits):
                    base += 1
                s.slit_index = base
                s.notes.append("no SLITINDX: position from the observation order")
    by_index: dict[int, SPSlit] = {}
    for s in sorted(slits, key=lambda s: (s.slit_index, s.path.name)):
        if s.slit_index in by_index:
            skipped.append(Skipped(s.path, f"duplicate SLITINDX {s.slit_index} (kept {by_index[s.slit_index].path.name})"))
        else:
            by_index[s.slit_index] = s
    indices = sorted(by_index)
    wav = by_index[indices[0]].wavelength
    nw = wav.size
    columns = list(range(indices[0], indices[-1] + 1)) if gaps != "drop" else indices
    stokes = np.full((4, nw, ny, len(columns)), np.nan, dtype=np.float32)  # counts < 2^24: exact
    notes: list[str] = []
    for j, idx in enumerate(columns):
        s = by_index.get(idx)
        if s is None:
            continue
        sw = s.stokes.transpose(0, 2, 1)  # (4, nλ, ny)
        if s.wavelength.size != nw or np.max(np.abs(s.wavelength - wav)) > 1e-4:
            sw, _ = interp_axis(sw, s.wavelength, wav, axis=1)
            notes.append(f"{s.path.name}: wavelength axis differs from the map's, resampled")
        stokes[:, :, :, j] = sw
    missing = [i for i in columns if i not in by_index]
    interpolated: list[int] = []
    for i in missing:
        skipped.append(Skipped(where / f"SLITINDX={i}", f"slit position {i} missing ({gaps})"))
    if gaps == "interpolate" and missing:
        present = np.array([j for j, i in enumerate(columns) if i in by_index])
        for j, i in enumerate(columns):
            if i in by_index:
                continue
            lo, hi = present[present < j].max(), present[present > j].min()
            t = (j - lo) / (hi - lo)
            stokes[..., j] = (1 - t) * stokes[..., lo] + t * stokes[..., hi]
            interpolated.append(i)
    good = [by_index[i] for i in indices]
    dates = [d for d in (_date(s.header) for s in good) if d]
    xcens = [v for v in (_card(s.header, "XCEN") for s in good) if v is not None]
    ycens = [v for v in (_card(s.header, "YCEN") for s in good) if v is not None]
    xcen = float(np.mean(xcens)) if xcens else None
    ycen = float(np.mean(ycens)) if ycens else None
    date = min(dates) if dates else None
    xs = _card(good[0].header, "XSCALE")
    ys = _card(good[0].header, "YSCALE", "CDELT2")
    shifts = sorted({_card(s.header, "SPBSHFT", kind=int) for s in good} - {None})
    for s in good:
        notes.extend(f"{s.path.name}: {n}" for n in s.notes)
    meta = {
        "source": "level1",
        "files": [str(by_index[i].path) if i in by_index else None for i in columns],
        "slit_index": columns,
        "interpolated_slits": interpolated,
        "nslitpos": _card(good[0].header, "NSLITPOS", kind=int),
        "date_obs": date,
        "date_end": max(dates) if dates else None,
        "xcen": xcen,
        "ycen": ycen,
        "mu": heliocentric_mu(xcen, ycen, date) if (xcen is not None and ycen is not None and date) else None,
        "pixel_scale_arcsec": {"x": xs, "y": ys} if (xs is not None and ys is not None) else None,
        "pixel_scale_missing": [k for k, v in (("XSCALE", xs), ("YSCALE", ys)) if v is None],
        "units": "counts",
        "wavelength_source": "header CRVAL1/CDELT1/CRPIX1" if _header_wavelengths(good[0].header, nw) is not None
        and wavelength == "header" else "standard grid",
        "spbshft": shifts,
        "continuum_source": f"mean Stokes I over {CONTINUUM_WINDOW_A[0]:.3f}-{CONTINUUM_WINDOW_A[1]:.3f} A",
        "n_nonfinite_pixels": int((~np.isfinite(stokes).all(axis=(0, 1))).sum()),
        "notes": notes,
    }
    return SPMap(stokes=stokes, wavelength=wav.copy(), continuum=continuum_from_stokes(stokes, wav),
                 header=meta), skipped


def read_sp_map(source: str | Path | Iterable[str | Path], **kwargs) -> tuple[SPMap, list[Skipped]]:
    """Read any Hinode SP map: a cube file (4-D primary) or level-1 slit files.

    Parameters
    ----------
    source : a FITS file with a 4-D primary array (:func:`read_sp_cube`), or a folder, glob
        or list of level-1 slit files (:func:`read_sp_level1`; a single 3-D file gives a
        one-column map).
    **kwargs : passed to the reader.

    Returns
    -------
    (SPMap, skipped) (``skipped`` is empty for cubes).

    Raises
    ------
    FileNotFoundError, SPReadError : see the readers.
    """
    if isinstance(source, (str, Path)) and Path(source).is_file():
        path = Path(source)
        _, data, _ = _open_hdus(path)[0]
        if data is not None and data.ndim == 4:
            return read_sp_cube(path, **kwargs), []
        if data is not None and data.ndim != 3:
            raise SPReadError(path, f"expected a 4-D cube (x, y, IQUV, wavelength) or a 3-D slit (IQUV, y, "
                                    f"wavelength), got shape {data.shape}")
    elif isinstance(source, (str, Path)) and not Path(source).exists() and not _GLOB_CHARS.search(str(source)):
        raise FileNotFoundError(f"{source}: no such file or folder")
    return read_sp_level1(source, **kwargs)


# --------------------------------------------------------------------------- plausibility

#: Largest |value| accepted in a map. Level-1 SP counts are 16-bit values doubled at most once
#: by the on-board bit shift (< 1.4·10⁵, :func:`undo_bit_shift`); maps already divided by a
#: continuum are of order 1. Anything beyond 10⁷ is not Hinode SP data in any of its units.
MAX_ABS_VALUE = 1e7
#: Smallest median depth of the deepest line in Stokes I, relative to the continuum. The
#: Fe I 6301.5/6302.5 Å lines are 60–70 % deep in quiet-Sun SP maps, still ≳ 30 % in umbrae
#: (split by the field); a flat profile (a constant map, a wrong wavelength range) has none.
MIN_LINE_DEPTH = 0.1


def plausibility_problem(sp_map: SPMap) -> str | None:
    """Why a map cannot be Hinode SP Stokes data.

    Looks at the finite pixels only (non-finite ones are masked downstream):

    1. the largest |value| must be at most :data:`MAX_ABS_VALUE` (the instrument's range);
    2. the median continuum (Stokes I over :data:`CONTINUUM_WINDOW_A`) must be positive;
    3. the median depth of the deepest absorption in Stokes I, 1 − min_λ I / I_c, must be at
       least :data:`MIN_LINE_DEPTH` (the Fe I lines are there).

    Parameters
    ----------
    sp_map : SPMap
        The map read (``stokes`` (4, nλ, ny, nx), ``wavelength`` (nλ,) Å).

    Returns
    -------
    str or None
        The problem in words (the caller adds the file name), also for a map without any finite
        profile; ``None`` when the map is plausible.
    """
    stokes = np.asarray(sp_map.stokes)
    good = np.isfinite(stokes).all(axis=(0, 1))
    if not good.any():
        return "no finite Stokes profile (all NaN/inf)"
    vals = stokes[:, :, good]  # (4, nλ, n)
    peak = float(np.abs(vals).max())
    if peak > MAX_ABS_VALUE:
        return (f"values up to {peak:.3g} are beyond the range of Hinode SP data (level-1 counts stay below 1.4e5, "
                f"continuum-normalised maps near 1; at most {MAX_ABS_VALUE:.0e} is accepted)")
    ic = continuum_from_stokes(stokes, sp_map.wavelength)[good].astype(np.float64)
    med = float(np.median(ic))
    lo, hi = CONTINUUM_WINDOW_A
    if not med > 0:
        return (f"the continuum (Stokes I over {lo:.2f}-{hi:.2f} A) is {'zero' if med == 0 else 'negative'} (median "
                f"{med:.3g}): not Stokes I of a Hinode SP map")
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = 1.0 - np.nanmedian(np.where(ic > 0, vals[0].min(axis=0) / ic, np.nan))
    if not depth >= MIN_LINE_DEPTH:
        return (f"no Fe I 6301.5/6302.5 absorption lines in Stokes I (median line depth {depth:.1%}, quiet Sun about "
                "65 %): not a Hinode SP map of the photosphere, or its wavelength axis is wrong")
    return None


# --------------------------------------------------------------------------- bad pixels

#: Largest Stokes I a level-1 pixel can hold [counts]: the 16-bit unsigned range (after the
#: wrap-around correction), doubled by an on-board bit shift SPBSHFT ≥ 1 (:func:`undo_bit_shift`).
#: A value at the ceiling is saturated (or a fill value), not a measurement.
SATURATION_COUNTS = 65535.0


def flag_bad_pixels(sp_map: SPMap) -> tuple[SPMap, np.ndarray, dict[str, int]]:
    """Find the pixels of a map in counts that cannot be inverted, and set them to NaN.

    A pixel is bad when any value of its profiles is

    * non-finite (NaN, inf: missing data, fill);
    * a negative Stokes I (negative counts: not a measured intensity);
    * for level-1 maps (``header["source"] == "level1"``), a Stokes I at or above the 16-bit
      ceiling :data:`SATURATION_COUNTS` × 2 (SPBSHFT ≥ 1, the largest shift of the map) or
      × 1 (SPBSHFT = 0): saturated. Cubes carry no bit-shift record and get no saturation
      test.

    Parameters
    ----------
    sp_map : a map in counts (before :func:`~helioforge.inversion.preprocess.normalise_quiet_sun`).

    Returns
    -------
    (map with NaN in every Stokes parameter and wavelength of the bad pixels (the same object
    when there is none), bad (ny, nx) bool, counts ``{"nonfinite": n, "negative": n,
    "saturated": n}`` (a pixel can count under several)). ``header["bad_pixels"]`` holds the
    counts and the saturation level used.

    Raises
    ------
    SPReadError : every pixel is bad (names the file and the counts).
    """
    stokes = np.asarray(sp_map.stokes)
    with np.errstate(invalid="ignore"):
        nonfinite = ~np.isfinite(stokes).all(axis=(0, 1))
        negative = (stokes[0] < 0).any(axis=0)
        saturated = np.zeros_like(negative)
        level = None
        if sp_map.header.get("source") == "level1":
            shifts = [int(v) for v in (sp_map.header.get("spbshft") or [0])]
            level = SATURATION_COUNTS * (2.0 if max(shifts) >= 1 else 1.0)
            saturated = (stokes[0] >= level).any(axis=0)
    bad = nonfinite | negative | saturated
    counts = {"nonfinite": int(nonfinite.sum()), "negative": int(negative.sum()), "saturated": int(saturated.sum())}
    path = Path((sp_map.header.get("files") or ["<map>"])[0] or "<map>")
    if bad.all():
        raise SPReadError(path, f"no valid pixel: {counts['nonfinite']} non-finite, {counts['negative']} with negative "
                                f"Stokes I counts, {counts['saturated']} saturated (of {bad.size})")
    header = dict(sp_map.header)
    header["bad_pixels"] = {**counts, "n_bad": int(bad.sum()), "saturation_counts": level}
    if not bad.any():
        return replace(sp_map, header=header), bad, counts
    out = np.array(stokes, dtype=np.float32, copy=True)
    out[:, :, bad] = np.nan
    cont = np.array(sp_map.continuum, dtype=np.float32, copy=True)
    cont[bad] = np.nan
    return replace(sp_map, stokes=out, continuum=cont, header=header), bad, counts
