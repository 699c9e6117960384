"""Tiles from HMI full-disk line-of-sight magnetograms (JSOC series ``hmi.m_720s``).

A JSOC ``hmi.m_720s`` file holds a 4096×4096 RICE-compressed image in HDU 1: line-of-sight
field in G, NaN off the disk, header ``CRPIX1/2`` (1-based disk-centre pixel), ``CDELT1``
(arcsec/px), ``CROTA2`` (≈180°: the image is stored upside down), ``RSUN_OBS`` (arcsec),
``DSUN_OBS`` (m) and ``T_REC``. Source: the HMI/JSOC keyword documentation (Schou et al.
2012, Sol. Phys. 275, 229).

Tiles are cut on a regular grid of the stored array; each kept tile is rotated to north up /
east left and, optionally, divided by mu = cos(heliocentric angle) to approximate the radial
field (B_r ≈ B_los / mu, valid for nearly radial fields away from the limb).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from helioforge.data.fits import FitsReadError, read_image_hdu

__all__ = ["FullDiskTile", "read_fulldisk", "tiles_from_fulldisk", "MIN_MU"]

#: Smallest mu used in the radial correction (caps the 1/mu gain at 10; off-limb pixels).
MIN_MU = 0.1

_REQUIRED = ("CRPIX1", "CRPIX2", "CDELT1", "RSUN_OBS", "T_REC")


@dataclass
class FullDiskTile:
    """A square tile of a full-disk magnetogram.

    Attributes
    ----------
    path : source file.
    t_rec : ``T_REC`` of the source (JSOC TAI string).
    crop : (x0, x1, y0, y1), 0-based pixel bounds in the source file's array, so that
        ``data[y0:y1, x0:x1]`` is the tile before rotation and radial correction.
    Br : (tile_px, tile_px) float64, G; north up / east left (rotated 180° when
        |CROTA2 − 180°| < 45°); B_los / mu when the radial correction is on, else B_los.
    mu : cos of the heliocentric angle at the tile centre (dimensionless).
    angle_deg : heliocentric angle of the tile centre, degrees.
    pixel_size_mm : native pixel size at disk centre, Mm:
        CDELT1 (arcsec) × DSUN_OBS (m) × π/(180×3600) / 1e6 (≈0.36 Mm for HMI).
    """

    path: Path
    t_rec: str
    crop: tuple[int, int, int, int]
    Br: np.ndarray
    mu: float
    angle_deg: float
    pixel_size_mm: float


def read_fulldisk(path: str | Path) -> tuple[np.ndarray, fits.Header]:
    """Read a full-disk magnetogram: the last image HDU with data, and its header.

    Returns
    -------
    data : (ny, nx) float64 line-of-sight field, G, NaN off disk, in the file's orientation.
    header : copy of the image header (``CRPIX1/2``, ``CDELT1``, ``RSUN_OBS``, ``T_REC`` ...).

    Raises
    ------
    FileNotFoundError : no such file.
    FitsReadError : empty/corrupt/truncated file, no image, a non-2-D image, a missing required
        keyword (``CRPIX1``, ``CRPIX2``, ``CDELT1``, ``RSUN_OBS``, ``T_REC``), or a
        non-positive ``CDELT1`` / ``RSUN_OBS``.
    """
    path = Path(path)
    data, header, _notes = read_image_hdu(path, required=_REQUIRED, watch=("CROTA2", "DSUN_OBS"))
    if data.ndim != 2:
        raise FitsReadError(path, f"expected a 2-D image, found shape {data.shape}")
    for key in ("CDELT1", "RSUN_OBS"):
        try:
            value = float(header[key])
        except (TypeError, ValueError):
            raise FitsReadError(path, f"header keyword {key} is not a number: {header[key]!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise FitsReadError(path, f"header keyword {key} must be positive, got {value}")
    return np.asarray(data, dtype=np.float64), header


def _pixel_size_mm(header: fits.Header) -> float:
    """CDELT1 (arcsec) × DSUN_OBS (m) × π/(180×3600) / 1e6; DSUN_OBS defaults to 1 au."""
    dsun = header.get("DSUN_OBS")
    try:
        dsun = float(dsun)
    except (TypeError, ValueError):
        dsun = float("nan")
    if not (math.isfinite(dsun) and dsun > 0):
        dsun = 1.495978707e11
    return float(header["CDELT1"]) * dsun * math.pi / (180.0 * 3600.0) / 1e6


def tiles_from_fulldisk(
    path: str | Path,
    tile_px: int = 256,
    stride_px: int = 192,
    max_angle_deg: float = 60.0,
    radial_correction: bool = True,
    max_nan_fraction: float = 0.0,
) -> list[FullDiskTile]:
    """Cut a full-disk magnetogram into square tiles near disk centre.

    Tiles start at pixel 0 and step by ``stride_px`` in x and y over the stored array. A tile is
    kept when its centre lies within ``max_angle_deg`` of disk centre (r/R ≤ sin(max_angle),
    r measured from ``CRPIX`` and R = RSUN_OBS/CDELT1 pixels) and its NaN fraction is at most
    ``max_nan_fraction`` (default 0: no NaN at all; NaN that is allowed is kept in ``Br``).

    The radial correction divides each pixel by its own mu = sqrt(1 − (r/R)²) (clipped below at
    :data:`MIN_MU`): B_r ≈ B_los/mu, the standard approximation for a nearly radial photospheric
    field (e.g. Leka et al. 2017, Sol. Phys. 292, 36); it is poor in penumbrae and near the limb.

    Parameters
    ----------
    path : ``hmi.m_720s`` FITS file.
    tile_px : tile side, native pixels (0.5"); stride_px : grid step, pixels (both ≥ 1).
    max_angle_deg : in (0, 90]. radial_correction : apply the 1/mu correction.
    max_nan_fraction : in [0, 1).

    Returns
    -------
    list of :class:`FullDiskTile`, in row-major order of the stored array.

    Raises
    ------
    ValueError : bad tile parameters. FileNotFoundError, FitsReadError : as :func:`read_fulldisk`.
    """
    tile_px, stride_px = int(tile_px), int(stride_px)
    if tile_px < 1 or stride_px < 1:
        raise ValueError(f"tile_px and stride_px must be ≥ 1, got {tile_px}, {stride_px}")
    if not 0 < max_angle_deg <= 90:
        raise ValueError(f"max_angle_deg must be in (0, 90], got {max_angle_deg}")
    if not 0 <= max_nan_fraction < 1:
        raise ValueError(f"max_nan_fraction must be in [0, 1), got {max_nan_fraction}")
    path = Path(path)
    data, header = read_fulldisk(path)
    ny, nx = data.shape
    if tile_px > min(ny, nx):
        raise ValueError(f"{path}: tile_px={tile_px} larger than the image {data.shape}")
    xc = float(header["CRPIX1"]) - 1.0  # 0-based disk centre
    yc = float(header["CRPIX2"]) - 1.0
    r_sun_px = float(header["RSUN_OBS"]) / float(header["CDELT1"])
    crota = header.get("CROTA2", 0.0)
    try:
        crota = float(crota)
    except (TypeError, ValueError):
        crota = 0.0
    flip = abs((crota % 360.0) - 180.0) < 45.0  # distance of CROTA2 from 180°
    pixel_mm = _pixel_size_mm(header)
    t_rec = str(header["T_REC"]).strip()
    rmax = math.sin(math.radians(max_angle_deg))
    min_rho2 = 1.0 - MIN_MU**2

    tiles: list[FullDiskTile] = []
    offsets = np.arange(tile_px, dtype=np.float64)
    for y0 in range(0, ny - tile_px + 1, stride_px):
        for x0 in range(0, nx - tile_px + 1, stride_px):
            cx = x0 + (tile_px - 1) / 2.0
            cy = y0 + (tile_px - 1) / 2.0
            rho = math.hypot(cx - xc, cy - yc) / r_sun_px
            if rho > rmax:
                continue
            tile = data[y0 : y0 + tile_px, x0 : x0 + tile_px]
            nan_frac = float(np.isnan(tile).mean())
            if nan_frac > max_nan_fraction:
                continue
            tile = tile.copy()
            if radial_correction:
                dx = (x0 + offsets - xc)[None, :]
                dy = (y0 + offsets - yc)[:, None]
                rho2 = np.minimum((dx * dx + dy * dy) / r_sun_px**2, min_rho2)
                tile /= np.sqrt(1.0 - rho2)
            if flip:
                tile = tile[::-1, ::-1].copy()
            tiles.append(
                FullDiskTile(
                    path=path,
                    t_rec=t_rec,
                    crop=(x0, x0 + tile_px, y0, y0 + tile_px),
                    Br=tile,
                    mu=math.sqrt(max(0.0, 1.0 - rho * rho)),
                    angle_deg=math.degrees(math.asin(min(1.0, rho))),
                    pixel_size_mm=pixel_mm,
                )
            )
    return tiles
