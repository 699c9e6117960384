"""Hinode SOT/SP instrument data: wavelength grid, spectral transmission profile, spatial PSF.

Files (``data_root()/stokes``; see the data README):

``instrument/wavelength_Hinode.txt``
    The standard 112-point SP wavelength grid around Fe I 6301.5/6302.5 Å, one air wavelength
    [Å] per line, 6300.8921–6303.2671 Å, spacing 20.9–21.5 mÅ (≈21.4 mÅ: the printed values
    are rounded to 0.1 mÅ). Source: github aasensio/sicon (MIT). Note: the level-1 sample
    ``hinode_sp_sample/hinode4d.20130912.sample.fits`` carries its own calibrated axis
    (6300.8826–6303.2615 Å), ≈10 mÅ bluer; this module always returns the standard grid.

``hinode_sp_sample/hinode_instr_prof.dat``  (**the one used**)
    SP spectral transmission profile: two columns, Δλ [Å] (−0.06997…+0.06997, 105 points,
    1.3456 mÅ step) and transmission (peak 0.1988 at Δλ = 0, FWHM ≈ 24 mÅ). Source: github
    dvukadinovic/globin (MIT).

``instrument/HINODE_SP_ins_prof.psf``  (same profile, coarser)
    Two columns Δλ [mÅ] and transmission, 25 points at 5.3825 mÅ (pyMilne format). Every 4th
    point of the ``.dat`` file equals a ``.psf`` point exactly; the ``.dat`` file is the
    ``.psf`` table refined 4× by a cubic interpolation (within 9e-4 of ``scipy`` cubic) and
    continued to a symmetric ±69.97 mÅ range. The ``.dat`` file is used by default because its
    1.35 mÅ sampling resolves the ≈24 mÅ-wide core on any synthesis grid without further
    interpolation choices; :func:`read_instrument_profile` reads both (``.psf`` in mÅ).

``instrument/hinode_psf_{0.08,0.11,0.16}.fits``
    Hinode SOT spatial PSF (Danilovic et al. 2010, A&A 513, A1, as shipped with SICON) sampled
    at 0.08, 0.11 and 0.16 arcsec pixels: primary HDU of (81, 81), (61, 61), (41, 41) float64,
    peak on the central pixel, unit sum, no WCS keywords (pixel size only in the file name).
    The three files are independent computations, not rebinnings of one another (binning the
    0.08″ PSF 2×2 gives a 0.176 peak where the 0.16″ file has 0.197).
    ``hinode_psf_size_256_def_-0.32.fits`` (257², defocus −0.32, pixel size undocumented) is
    not used.

Every unreadable file raises :class:`HinodeReadError` (a
:class:`~helioforge.data.fits.FitsReadError`) naming the file and the problem.

References: Lites et al. (2013, Sol. Phys. 283, 579) for the SP; Asensio Ramos & Díaz Baso
(2019, A&A 626, A102) §2 for the degradation chain that uses these files.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from astropy.io import fits

from helioforge.config import data_root
from helioforge.data.fits import FitsReadError

__all__ = [
    "HinodeReadError",
    "HINODE_N_WAVELENGTHS",
    "HINODE_PIXEL_ARCSEC",
    "instrument_dir",
    "hinode_wavelengths",
    "read_instrument_profile",
    "read_psf",
    "available_psf_scales",
    "psf_for_pixel",
]

logger = logging.getLogger(__name__)

#: Number of points of the standard SP wavelength grid.
HINODE_N_WAVELENGTHS = 112
#: Hinode SP pixel, arcsec: 0.16″ along the slit (the normal-map scan step is 0.148″; Lites et al.
#: 2013); the size SICON rebins to (Asensio Ramos & Díaz Baso 2019 §2 step 2).
HINODE_PIXEL_ARCSEC = 0.16

_PSF_NAME = re.compile(r"^hinode_psf_(\d+\.\d+)\.fits$")


class HinodeReadError(FitsReadError):
    """A Hinode instrument file that cannot be used; ``str(err)`` is ``"<path>: <problem>"``."""


def instrument_dir(root: str | Path | None = None) -> Path:
    """The folder of the Hinode instrument files.

    Parameters
    ----------
    root : str or Path, optional
        Data root; default :func:`helioforge.config.data_root`.

    Returns
    -------
    Path
        ``<root>/stokes/instrument`` (not checked to exist).
    """
    return Path(root if root is not None else data_root()) / "stokes" / "instrument"


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    return path


def _load_table(path: Path, ncol: int) -> np.ndarray:
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise HinodeReadError(path, f"not a numeric table: {exc}") from None
    if data.size == 0:
        raise HinodeReadError(path, "empty file")
    if data.shape[1] != ncol:
        raise HinodeReadError(path, f"expected {ncol} column(s), got {data.shape[1]}")
    if not np.isfinite(data).all():
        raise HinodeReadError(path, "contains non-finite values")
    return data


def hinode_wavelengths(path: str | Path | None = None, expected_n: int | None = HINODE_N_WAVELENGTHS) -> np.ndarray:
    """The standard Hinode SP wavelength grid, air wavelengths in Å.

    Parameters
    ----------
    path : text file with one wavelength per line; default
        ``instrument_dir()/wavelength_Hinode.txt``.
    expected_n : required number of points (112); ``None`` accepts any count ≥ 2.

    Returns
    -------
    float64 array (112,), strictly increasing, 6300.8921 … 6303.2671 Å.

    Raises
    ------
    FileNotFoundError : the file is missing.
    HinodeReadError : not one numeric column, wrong count, not strictly increasing.

    Source: SICON (Asensio Ramos & Díaz Baso 2019, §2); SP instrument: Lites et al. (2013).
    """
    path = _need_file(Path(path) if path is not None else instrument_dir() / "wavelength_Hinode.txt",
                      "Hinode wavelength grid")
    wav = _load_table(path, 1)[:, 0]
    if expected_n is not None and wav.size != expected_n:
        raise HinodeReadError(path, f"expected {expected_n} wavelengths, got {wav.size}")
    if wav.size < 2 or not np.all(np.diff(wav) > 0):
        raise HinodeReadError(path, "wavelengths must be strictly increasing (at least 2 points)")
    return wav


def read_instrument_profile(path: str | Path | None = None, normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The SP spectral transmission profile (spectral PSF).

    Parameters
    ----------
    path : two-column table; default ``<data_root>/stokes/hinode_sp_sample/hinode_instr_prof.dat``
        (Δλ in Å). A ``.psf`` file (pyMilne format, Δλ in mÅ, e.g.
        ``instrument/HINODE_SP_ins_prof.psf``) is converted to Å.
    normalise : divide the transmission by its trapezoidal integral so that
        ∫ T(Δλ) dΔλ = 1 (units Å⁻¹); ``False`` returns the tabulated values.

    Returns
    -------
    dlambda_A : float64 (n,), wavelength offsets from the line centre, Å, strictly increasing.
    transmission : float64 (n,), ≥ 0.

    Raises
    ------
    FileNotFoundError : missing file.
    HinodeReadError : not two numeric columns, offsets not increasing, negative or all-zero
        transmission.

    Source: Lites et al. (2013); used in Asensio Ramos & Díaz Baso (2019) §2 step 3.
    """
    if path is None:
        path = Path(data_root()) / "stokes" / "hinode_sp_sample" / "hinode_instr_prof.dat"
    path = _need_file(Path(path), "Hinode SP spectral profile")
    data = _load_table(path, 2)
    dl, tr = data[:, 0].copy(), data[:, 1].copy()
    if path.suffix.lower() == ".psf":
        dl /= 1000.0  # mÅ → Å
    if dl.size < 3 or not np.all(np.diff(dl) > 0):
        raise HinodeReadError(path, "wavelength offsets must be strictly increasing (at least 3 points)")
    if np.any(tr < 0):
        raise HinodeReadError(path, f"negative transmission ({tr.min():g})")
    area = float(np.trapezoid(tr, dl))
    if area <= 0:
        raise HinodeReadError(path, "transmission integrates to zero")
    if not dl[0] < 0 < dl[-1]:
        raise HinodeReadError(path, f"offsets {dl[0]:g}..{dl[-1]:g} Å do not bracket 0")
    if normalise:
        tr /= area
    return dl, tr


def available_psf_scales(root: str | Path | None = None) -> dict[float, Path]:
    """The ``hinode_psf_<scale>.fits`` files present, by pixel scale.

    Parameters
    ----------
    root : str or Path, optional
        Data root; default :func:`helioforge.config.data_root`.

    Returns
    -------
    dict of float to Path
        Pixel scale [arcsec] → file, sorted by scale; empty when the folder is missing.
    """
    folder = instrument_dir(root)
    found: dict[float, Path] = {}
    if folder.is_dir():
        for f in folder.iterdir():
            m = _PSF_NAME.match(f.name)
            if m:
                found[float(m.group(1))] = f
    return dict(sorted(found.items()))


def read_psf(path: str | Path | None = None, pixel_arcsec: float = HINODE_PIXEL_ARCSEC) -> np.ndarray:
    """Hinode SOT spatial PSF sampled on ``pixel_arcsec`` pixels, normalised to unit sum.

    Parameters
    ----------
    path : FITS file with the PSF in the primary (or first image) HDU; default
        ``instrument_dir()/hinode_psf_<pixel_arcsec:.2f>.fits``.
    pixel_arcsec : pixel scale used to pick the default file (0.08, 0.11 or 0.16 available);
        ignored when ``path`` is given. Use :func:`psf_for_pixel` for other scales.

    Returns
    -------
    float64 (ny, nx) with odd ny, nx, centre on (ny // 2, nx // 2), sum 1.

    Raises
    ------
    FileNotFoundError : missing file (the message lists the available scales).
    HinodeReadError : unreadable FITS, no 2-D image, even size, non-finite or negative
        values, zero sum.

    Source: Danilovic et al. (2010) PSF as used by Asensio Ramos & Díaz Baso (2019) §2 step 2.
    """
    if path is None:
        path = instrument_dir() / f"hinode_psf_{pixel_arcsec:.2f}.fits"
        if not path.is_file():
            scales = ", ".join(f"{s:g}" for s in available_psf_scales())
            raise FileNotFoundError(
                f"{path}: no Hinode PSF file for {pixel_arcsec:g} arcsec pixels (available: {scales or 'none'}; "
                "psf_for_pixel() resamples one)"
            )
    path = _need_file(Path(path), "Hinode PSF")
    try:
        with fits.open(path, memmap=False) as hdul:
            data = next((h.data for h in hdul if getattr(h, "data", None) is not None and h.data.ndim >= 2), None)
            data = None if data is None else np.array(data, dtype=np.float64)
    except (OSError, ValueError, TypeError) as exc:
        raise HinodeReadError(path, f"unreadable FITS: {exc}") from None
    if data is None:
        raise HinodeReadError(path, "no image HDU")
    data = np.squeeze(data)
    if data.ndim != 2:
        raise HinodeReadError(path, f"PSF must be 2-D, got shape {data.shape}")
    if data.shape[0] % 2 == 0 or data.shape[1] % 2 == 0:
        raise HinodeReadError(path, f"PSF sides must be odd (centre pixel), got {data.shape}")
    if not np.isfinite(data).all():
        raise HinodeReadError(path, "PSF has non-finite values")
    if data.min() < -1e-12 * abs(data).max():
        raise HinodeReadError(path, f"PSF has negative values ({data.min():g})")
    total = data.sum()
    if total <= 0:
        raise HinodeReadError(path, "PSF sums to zero")
    return np.clip(data, 0.0, None) / total


def _resample_psf(psf: np.ndarray, pixel_src: float, pixel_out: float) -> np.ndarray:
    """Bilinear resampling of the PSF *density* onto pixels of ``pixel_out`` arcsec, same extent."""
    from scipy.ndimage import map_coordinates

    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    ny = int(np.floor(cy * pixel_src / pixel_out))
    nx = int(np.floor(cx * pixel_src / pixel_out))
    y = np.arange(-ny, ny + 1) * (pixel_out / pixel_src) + cy
    x = np.arange(-nx, nx + 1) * (pixel_out / pixel_src) + cx
    yy, xx = np.meshgrid(y, x, indexing="ij")
    out = map_coordinates(psf, [yy, xx], order=1, mode="constant", cval=0.0)
    out = np.clip(out, 0.0, None)
    return out / out.sum()


def psf_for_pixel(pixel_arcsec: float, root: str | Path | None = None, rtol: float = 0.01) -> np.ndarray:
    """Hinode PSF on pixels of ``pixel_arcsec``, unit sum, odd square size.

    A shipped file is used as is when its scale matches within ``rtol``. Otherwise the file
    with the largest scale ≤ ``pixel_arcsec`` (the finest, 0.08″, for smaller pixels) is
    resampled: the PSF density is interpolated bilinearly at the new pixel centres over the same
    angular extent and renormalised to unit sum. This is point sampling, an approximation
    for pixels comparable to the PSF core (the 0.16″ file peaks at 0.197, the 0.08″ file
    point-resampled to 0.16″ at 0.224).

    Raises
    ------
    FileNotFoundError : no PSF file at all.
    ValueError : ``pixel_arcsec`` ≤ 0.
    """
    if not pixel_arcsec > 0:
        raise ValueError(f"pixel_arcsec must be > 0, got {pixel_arcsec}")
    scales = available_psf_scales(root)
    if not scales:
        raise FileNotFoundError(f"{instrument_dir(root)}: no hinode_psf_<scale>.fits files")
    for s, f in scales.items():
        if abs(s - pixel_arcsec) <= rtol * pixel_arcsec:
            return read_psf(f)
    finer = [s for s in scales if s <= pixel_arcsec]
    src = max(finer) if finer else min(scales)
    logger.info("resampling the %g arcsec Hinode PSF to %g arcsec pixels", src, pixel_arcsec)
    return _resample_psf(read_psf(scales[src]), src, pixel_arcsec)
