"""Preparing a Hinode SP map for the SICON networks (Asensio Ramos & Díaz Baso 2019, §4):
the quiet-Sun normalisation, the standard wavelength grid, the wavelength calibration on the
quiet-Sun Fe I line cores and the pixel scale. Reading the maps (and flagging bad pixels) is
:mod:`helioforge.data.hinode_sp`; :func:`helioforge.inversion.infer.load_map` chains the two.

Normalisation (:func:`normalise_quiet_sun`) divides the map by the median continuum of the
quiet Sun in the field of view (§4: "normalized to the local average quiet Sun intensity"),
with an automatic quiet-Sun mask (:func:`quiet_sun_mask`). :func:`to_standard_grid` resamples
the wavelength axis to the 112-point SICON grid when the file's differs.

Pixel scale (:func:`match_pixel_scale`): XSCALE/YSCALE are checked against the pixel the SICON
networks were trained at (0.16″); an axis more than 2 % off is resampled to it with a warning
naming the file (resampling, not refusal: the usual SP scan step is 0.1476″), a map without the
cards gets a warning naming the file and the missing card.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy.constants import c as speed_of_light

from helioforge.data.hinode import hinode_wavelengths
from helioforge.data.hinode_sp import SPMap, SPReadError, continuum_from_stokes, continuum_window_index, interp_axis
from helioforge.physics.atomic import fe_lines

__all__ = [
    "quiet_sun_mask",
    "normalise_quiet_sun",
    "to_standard_grid",
    "line_core_positions",
    "line_core_velocities",
    "calibrate_wavelength",
    "PIXEL_SCALE_RTOL",
    "match_pixel_scale",
]

logger = logging.getLogger(__name__)

_C_KMS = float(speed_of_light.to_value("km/s"))


def _noise_sigma(sp_map: SPMap, ic_pix: np.ndarray) -> float:
    """Median over pixels of the rms of Q, U, V / I_c in the continuum window (≥ 3 points)."""
    idx = continuum_window_index(sp_map.wavelength)
    if idx.size < 3:
        idx = np.arange(min(4, sp_map.n_wavelengths))
    pol = sp_map.stokes[1:4, idx] / ic_pix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rms = np.sqrt(np.nanmean((pol - np.nanmean(pol, axis=1, keepdims=True)) ** 2, axis=(0, 1)))
        return float(np.nanmedian(rms)) * math.sqrt(idx.size / max(idx.size - 1, 1))


def quiet_sun_mask(sp_map: SPMap, pol_threshold: float | None = None, continuum_band: float = 0.15,
                   ic_pixel: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Automatic quiet-Sun mask: weak polarisation and a continuum near the quiet-Sun median.

    1. p = mean over λ of √(Q² + U² + V²) / I_c(pixel); quiet if p ≤ ``pol_threshold``
       (default max(0.005, 3.2 σ̂), σ̂ the noise of Q, U, V / I_c in the continuum window;
       pure noise gives p ≈ 1.6 σ).
    2. Among those, I_c within ±``continuum_band`` (relative) of their median.

    Parameters
    ----------
    sp_map : the map.
    pol_threshold : see above (I_c units).
    continuum_band : relative half-width of the accepted continuum band (0.15 keeps the
        granulation, drops pores, umbrae and penumbrae).
    ic_pixel : (ny, nx) continuum per pixel; default :func:`~helioforge.data.hinode_sp.continuum_from_stokes`.

    Returns
    -------
    (mask bool (ny, nx), info dict: ``pol_threshold``, ``noise_sigma``, ``n_quiet``,
    ``fallback`` (``None``, ``"polarisation only"`` or ``"all pixels"`` when the stricter mask
    is empty)).
    """
    ic = continuum_from_stokes(sp_map.stokes, sp_map.wavelength) if ic_pixel is None else np.asarray(ic_pixel)
    finite = np.isfinite(ic) & (ic > 0) & np.isfinite(sp_map.stokes).all(axis=(0, 1))
    safe_ic = np.where(finite, ic, 1.0)
    sigma = _noise_sigma(sp_map, safe_ic)
    thr = max(0.005, 3.2 * sigma) if pol_threshold is None else float(pol_threshold)
    acc = np.zeros(ic.shape, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k in range(sp_map.n_wavelengths):  # one wavelength at a time: no (3, nλ, ny, nx) temporary
            q, u, v = (sp_map.stokes[j, k].astype(np.float64) for j in (1, 2, 3))
            acc += np.sqrt(q * q + u * u + v * v)
        p = acc / sp_map.n_wavelengths / safe_ic
    pol_ok = finite & (p <= thr)
    fallback = None
    if pol_ok.any():
        med = float(np.median(ic[pol_ok]))
        mask = pol_ok & (np.abs(ic / med - 1.0) <= continuum_band)
        if not mask.any():
            mask, fallback = pol_ok, "polarisation only"
    else:
        mask, fallback = finite.copy(), "all pixels"
    if fallback:
        logger.warning("quiet-Sun mask: no pixel passes both tests; using %s", fallback)
    return mask, {"pol_threshold": thr, "noise_sigma": sigma, "n_quiet": int(mask.sum()), "fallback": fallback}


def normalise_quiet_sun(sp_map: SPMap, mask: np.ndarray | None = None, method: str = "median",
                        source: str = "stokes", **mask_kwargs) -> tuple[SPMap, float]:
    """Divide a map by the average continuum of the quiet Sun in its field of view.

    Parameters
    ----------
    sp_map : map in counts.
    mask : bool (ny, nx) quiet-Sun pixels; default :func:`quiet_sun_mask` (``mask_kwargs``
        are passed to it).
    method : ``"median"`` (SICON, §2 step 3 and §4) or ``"mean"`` of the quiet-Sun continuum.
    source : per-pixel continuum used: ``"stokes"`` (:func:`~helioforge.data.hinode_sp.continuum_from_stokes`, the point
        the synthetic training maps are normalised at) or ``"continuum"`` (``sp_map.continuum``,
        e.g. a cube's continuum extension).

    Returns
    -------
    (normalised SPMap, I_c used [counts])
        stokes and continuum divided by I_c; ``quiet_mask`` set; ``header["normalisation"]``
        records I_c, the method, the mask statistics; ``header["units"]`` becomes
        ``"I_c (quiet Sun)"``.

    Raises
    ------
    ValueError : bad ``method``/``source``, mask of the wrong shape or empty, I_c not
        positive and finite.

    Source: Asensio Ramos & Díaz Baso (2019) §4 (normalisation of the Hinode maps to the local
    average quiet Sun) and §2 step 3.
    """
    if method not in ("median", "mean"):
        raise ValueError(f"method must be 'median' or 'mean', got {method!r}")
    if source not in ("stokes", "continuum"):
        raise ValueError(f"source must be 'stokes' or 'continuum', got {source!r}")
    ic_pix = continuum_from_stokes(sp_map.stokes, sp_map.wavelength) if source == "stokes" else sp_map.continuum
    info: dict[str, Any] = {}
    if mask is None:
        mask, info = quiet_sun_mask(sp_map, ic_pixel=ic_pix, **mask_kwargs)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (sp_map.ny, sp_map.nx):
            raise ValueError(f"mask has shape {mask.shape}, the map is {(sp_map.ny, sp_map.nx)}")
        info = {"n_quiet": int(mask.sum()), "fallback": None, "user_mask": True}
    vals = np.asarray(ic_pix, dtype=np.float64)[mask]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        raise ValueError("the quiet-Sun mask selects no pixel with a finite continuum")
    ic = float(np.median(vals) if method == "median" else np.mean(vals))
    if not (math.isfinite(ic) and ic > 0):
        raise ValueError(f"quiet-Sun continuum must be positive and finite, got {ic}")
    header = dict(sp_map.header)
    header["normalisation"] = {
        "ic_quiet": ic,
        "method": method,
        "continuum": source,
        "quiet_fraction": float(mask.mean()),
        **info,
        "reference": "Asensio Ramos & Diaz Baso (2019) sec. 4",
    }
    header["units"] = "I_c (quiet Sun)"
    out = replace(sp_map, stokes=(sp_map.stokes / np.float32(ic)).astype(np.float32),
                  continuum=(np.asarray(sp_map.continuum, dtype=np.float32) / np.float32(ic)),
                  header=header, quiet_mask=mask)
    return out, ic


# --------------------------------------------------------------------------- wavelength grid


def to_standard_grid(sp_map: SPMap, grid: Sequence[float] | np.ndarray | None = None, atol_A: float = 1e-4,
                     max_extrapolation_A: float = 0.0215) -> SPMap:
    """Resample a map onto the standard SP wavelength grid by linear interpolation.

    Parameters
    ----------
    sp_map : map with its own wavelength axis.
    grid : target wavelengths [Å]; default :func:`~helioforge.data.hinode.hinode_wavelengths`.
    atol_A : grids that agree within this everywhere are left alone (the map is returned as
        is, with ``header["wavelength_resampling"] = None``).
    max_extrapolation_A : how far a target point may lie outside the map's axis; such points
        take the edge value (continuum at both ends of the SP range). Default one pixel.

    Returns
    -------
    SPMap on ``grid`` (stokes float32); ``header["wavelength_resampling"]`` records the mean
    and largest shift of the grid [mÅ] (the velocity equivalent at 6302 Å, km/s), the number of
    extrapolated points and the method. The continuum map is left as it is.

    Raises
    ------
    SPReadError : the map's axis does not cover ``grid`` to within ``max_extrapolation_A``
        (names the map's file).

    Notes
    -----
    The level-1 sample cube's axis is ≈9.5 mÅ (0.45 km/s) bluer than the standard grid, which
    the SICON networks were trained on: a line observed at index k lands at index k − 0.44 on
    the standard grid.
    """
    target = hinode_wavelengths() if grid is None else np.asarray(grid, dtype=np.float64)
    wav = np.asarray(sp_map.wavelength, dtype=np.float64)
    if wav.size == target.size and np.max(np.abs(wav - target)) <= atol_A:
        header = dict(sp_map.header)
        header["wavelength_resampling"] = None
        return replace(sp_map, header=header)
    path = Path((sp_map.header.get("files") or ["<map>"])[0] or "<map>")
    below, above = wav[0] - target[0], target[-1] - wav[-1]
    if max(below, above) > max_extrapolation_A:
        raise SPReadError(path, f"wavelength axis {wav[0]:.4f}-{wav[-1]:.4f} A does not cover the target grid "
                                f"{target[0]:.4f}-{target[-1]:.4f} A (more than {max_extrapolation_A * 1e3:.1f} mA short)")
    stokes, n_out = interp_axis(np.asarray(sp_map.stokes, dtype=np.float32), wav, target, axis=1)
    # shift of the sampling points (target − map, point by point) when both have the same length
    diff = (target - wav) * 1e3 if wav.size == target.size else None
    header = dict(sp_map.header)
    header["wavelength_resampling"] = {
        "method": "linear interpolation (edge value held outside)",
        "from": [float(wav[0]), float(wav[-1]), int(wav.size)],
        "to": [float(target[0]), float(target[-1]), int(target.size)],
        "mean_shift_mA": float(diff.mean()) if diff is not None else None,
        "max_abs_shift_mA": float(np.abs(diff).max()) if diff is not None else None,
        "mean_shift_kms": float(diff.mean() * 1e-3 / 6302.0 * _C_KMS) if diff is not None else None,
        "n_extrapolated": n_out,
    }
    header["wavelength_source"] = f"resampled to the standard grid from ({sp_map.header.get('wavelength_source')})"
    return replace(sp_map, stokes=stokes.astype(np.float32), wavelength=target.copy(), header=header)


# --------------------------------------------------------------------------- wavelength calibration


def _lab_wavelengths(lines: Sequence[float] | None) -> np.ndarray:
    """``lines`` as an array, or the laboratory air wavelengths of the Fe I pair from the SIR line
    list (:func:`helioforge.physics.atomic.fe_lines`, entries 200/201)."""
    if lines is None:
        lines = [line.wavelength_air for line in fe_lines()]
    return np.asarray(lines, dtype=np.float64)


def line_core_positions(wavelength: np.ndarray, intensity: np.ndarray, lines: Sequence[float] | None = None,
                        search_A: float = 0.15, n_fit: int = 3) -> np.ndarray:
    """Line-core positions of absorption lines in a Stokes I profile: parabola through the minimum.

    For each line, the lowest point of ``intensity`` within ±``search_A`` of its nominal
    wavelength is found and a parabola is fitted (least squares) to the ``n_fit`` points
    centred on it; the core is the parabola's vertex. With the SP sampling (21.5 mÅ) three
    points span the inner ±21.5 mÅ of the core (FWHM ≈ 0.1 Å): on Gaussian lines of the SP
    width the vertex is within 0.011 km/s of the true centre at any sampling phase (five
    points: 0.040, seven: 0.090).

    Parameters
    ----------
    wavelength : (nλ,) Å, strictly increasing.
    intensity : (nλ,) Stokes I (any units).
    lines : nominal line positions, Å; default the Fe I 6301.5/6302.5 laboratory wavelengths of
        the SIR line list.
    search_A : half-width of the window searched for each minimum, Å.
    n_fit : odd number of points fitted (≥ 3).

    Returns
    -------
    float64 (len(lines),) core wavelengths [Å]; NaN where the window holds no interior
    minimum (line outside the axis, minimum at the window edge, non-finite values, or a
    parabola that does not open upwards).

    Source: the usual line-core (parabola-vertex) position of wavelength calibrations, e.g.
    Martínez Pillet et al. (1997, ApJ 474, 810) for the quiet-Sun reference of Fe I 6302 Å.
    """
    w = np.asarray(wavelength, dtype=np.float64)
    y = np.asarray(intensity, dtype=np.float64)
    half = max(int(n_fit) // 2, 1)
    lines = _lab_wavelengths(lines)
    out = np.full(len(lines), np.nan)
    for k, lam in enumerate(lines):
        idx = np.flatnonzero(np.abs(w - lam) <= search_A)
        if idx.size < 2 * half + 1 or not np.isfinite(y[idx]).all():
            continue
        j = int(idx[np.argmin(y[idx])])
        if j - half < idx[0] or j + half > idx[-1]:
            continue  # minimum at the edge of the window: no line core there
        sl = slice(j - half, j + half + 1)
        a, b, _ = np.polyfit(w[sl] - w[j], y[sl], 2)
        if not a > 0:
            continue
        vertex = -b / (2 * a)
        if abs(vertex) <= (w[j + 1] - w[j - 1]):
            out[k] = w[j] + vertex
    return out


def line_core_velocities(wavelength: np.ndarray, intensity: np.ndarray,
                         lines: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Doppler velocities of the line cores of a Stokes I profile against the lines' wavelengths.

    Parameters
    ----------
    wavelength, intensity : (nλ,) Å and Stokes I, as for :func:`line_core_positions`.
    lines : laboratory wavelengths, Å; default the Fe I pair of the SIR line list.

    Returns
    -------
    (cores [Å], velocities [km s⁻¹, + = redshift]), float64 (len(lines),) each; NaN where no
    core is found.
    """
    lab = _lab_wavelengths(lines)
    cores = line_core_positions(wavelength, intensity, lab)
    return cores, (cores / lab - 1.0) * _C_KMS


def calibrate_wavelength(sp_map: SPMap, mask: np.ndarray | None = None, qs_velocity_kms: float = 0.0,
                         lines: Sequence[float] | None = None, max_shift_A: float = 0.06,
                         max_line_disagreement_kms: float = 0.5) -> tuple[SPMap, dict[str, Any]]:
    """Calibrate a map's wavelength axis on the quiet-Sun Fe I line cores.

    The Stokes I profiles of the quiet-Sun pixels are averaged, the cores of Fe I 6301.5 and
    6302.5 Å are located (:func:`line_core_positions`), and the axis is rescaled so that their
    mean Doppler velocity is ``qs_velocity_kms``: λ' = λ (1 + v_ref/c) / (1 + v̄/c), where v̄ is
    the mean over the lines of (λ_core / λ_lab − 1) c. Velocities inverted from the calibrated
    map are then relative to the average quiet Sun taken at ``qs_velocity_kms`` (0: the quiet
    Sun at rest).

    Hinode observes from orbit, so its spectra have no telluric lines to calibrate on (the
    ground-based method); the SP level-1 header axis is nominal, not calibrated (the sample
    cube's axis is ≈ 9.5 mÅ bluer than the standard grid). The average quiet-Sun line core is
    the reference that remains (Martínez Pillet et al. 1997; the convention of most SP
    studies), and it is available in every map that has some quiet Sun.

    Parameters
    ----------
    sp_map : map in counts or normalised units, on its own axis (before
        :func:`to_standard_grid`).
    mask : (ny, nx) bool quiet-Sun pixels; default :func:`quiet_sun_mask`.
    qs_velocity_kms : Doppler velocity the quiet-Sun line cores are given, km s⁻¹, + = redshift
        (e.g. the convective blueshift of the line cores, or the value the training spectra show).
    lines : laboratory air wavelengths of the lines, Å; default the Fe I pair of the SIR line list.
    max_shift_A : largest correction accepted, Å (0.06 Å = 2.9 km s⁻¹; the nominal SP axis is
        within ≈ 0.01 Å, and the quiet-Sun cores within ≈ 0.5 km s⁻¹ of rest).
    max_line_disagreement_kms : a warning is logged when the two lines' velocities differ by
        more (a distorted axis, or a map without enough quiet Sun).

    Returns
    -------
    (calibrated SPMap, info)
        Only ``wavelength`` changes (the samples are not touched; resample with
        :func:`to_standard_grid` afterwards). ``info`` (also ``header["wavelength_calibration"]``):
        ``cores_A``, ``line_velocities_kms`` (before), ``velocity_kms`` (mean), ``shift_mA``
        (correction at 6302 Å, new − old), ``qs_velocity_kms``, ``n_quiet`` and the method.

    Raises
    ------
    SPReadError : no line core found near a line, or a correction larger than ``max_shift_A``
        (a wrong wavelength axis); the message names the map's file.
    ValueError : ``mask`` of the wrong shape or selecting no pixel with finite profiles.
    """
    path = Path((sp_map.header.get("files") or ["<map>"])[0] or "<map>")
    if mask is None:
        mask, _ = quiet_sun_mask(sp_map)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (sp_map.ny, sp_map.nx):
        raise ValueError(f"mask has shape {mask.shape}, the map is {(sp_map.ny, sp_map.nx)}")
    use = mask & np.isfinite(sp_map.stokes[0]).all(axis=0)
    if not use.any():
        raise ValueError(f"{path}: the quiet-Sun mask selects no pixel with a finite Stokes I profile")
    mean_i = np.asarray(sp_map.stokes[0][:, use], dtype=np.float64).mean(axis=1)
    wav = np.asarray(sp_map.wavelength, dtype=np.float64)
    lab = _lab_wavelengths(lines)
    cores, v_lines = line_core_velocities(wav, mean_i, lab)
    if not np.isfinite(cores).all():
        missing = ", ".join(f"{lam:.4f}" for lam, c in zip(lab, cores) if not np.isfinite(c))
        raise SPReadError(path, f"no Fe I line core found within 0.15 A of {missing} A in the quiet-Sun mean profile: "
                                f"the wavelength axis ({wav[0]:.4f}-{wav[-1]:.4f} A) is wrong or the map is not an SP "
                                "map of the photosphere")
    v_mean = float(v_lines.mean())
    factor = (1.0 + qs_velocity_kms / _C_KMS) / (1.0 + v_mean / _C_KMS)
    shift_mA = float(6302.0 * (factor - 1.0) * 1e3)
    if abs(shift_mA) > max_shift_A * 1e3:
        raise SPReadError(path, f"the quiet-Sun Fe I line cores lie {v_mean:+.2f} km/s ({-shift_mA:+.1f} mA) from their "
                                f"laboratory wavelengths, more than {max_shift_A * 1e3:.0f} mA: the wavelength axis is "
                                "wrong (check CRVAL1/CDELT1 or the WAVELENGTH extension)")
    if abs(v_lines[0] - v_lines[-1]) > max_line_disagreement_kms:
        logger.warning("%s: the two Fe I lines give quiet-Sun velocities %+.2f and %+.2f km/s (more than %.1f km/s "
                       "apart): the wavelength calibration is uncertain", path, v_lines[0], v_lines[-1],
                       max_line_disagreement_kms)
    info = {
        "method": "quiet-Sun mean Stokes I, parabola through the Fe I 6301.5/6302.5 line cores",
        "lines_A": [float(x) for x in lab],
        "cores_A": [float(x) for x in cores],
        "line_velocities_kms": [float(x) for x in v_lines],
        "velocity_kms": v_mean,
        "qs_velocity_kms": float(qs_velocity_kms),
        "shift_mA": shift_mA,
        "n_quiet": int(use.sum()),
    }
    header = dict(sp_map.header)
    header["wavelength_calibration"] = info
    header["wavelength_source"] = f"calibrated on the quiet-Sun Fe I line cores ({sp_map.header.get('wavelength_source')})"
    return replace(sp_map, wavelength=wav * factor, header=header), info


# --------------------------------------------------------------------------- pixel scale

#: Relative difference between a map's pixel and the networks' (per axis) below which the map
#: is used as it is: 2 % keeps the SP pixel along the slit (YSCALE 0.1585″ against 0.16″,
#: 0.9 %) and resamples the 0.1476″ normal-map scan step (7.8 %) and 0.30″ fast maps.
PIXEL_SCALE_RTOL = 0.02


def _resample_pixels(a: np.ndarray, axis: int, n_out: int, ratio: float, nearest: bool = False) -> np.ndarray:
    """Resample ``a`` along ``axis`` to ``n_out`` pixels, ``ratio`` = new pixel / old pixel:
    output pixel j is centred at input pixel coordinate (j + ½)·ratio − ½ (pixel edges aligned
    at the map's first edge), linear interpolation (``nearest``: nearest pixel), edge values
    held beyond the map."""
    n = a.shape[axis]
    u = np.clip((np.arange(n_out) + 0.5) * ratio - 0.5, 0.0, n - 1.0)
    if nearest or n == 1:
        return np.take(a, np.clip(np.rint(u).astype(int), 0, n - 1), axis=axis)
    out, _ = interp_axis(a, np.arange(n, dtype=np.float64), u, axis=axis)
    return out


def match_pixel_scale(sp_map: SPMap, target_arcsec: float | tuple[float, float], *,
                      pixel_scale: tuple[float, float] | None = None,
                      rtol: float = PIXEL_SCALE_RTOL) -> tuple[SPMap, dict[str, Any]]:
    """Bring a map to the pixel of the networks' training maps: **resample with a warning**.

    The SICON networks learn spatial structure at the pixel they were trained at (0.16″ in the
    paper, §2 step 2; :attr:`helioforge.inversion.infer.SiconInverter.pixel_arcsec`). A map
    whose scan step (``XSCALE``) or pixel along the slit (``YSCALE``) differs from it by more
    than ``rtol`` is resampled along that axis by linear interpolation onto pixels of the
    trained size (pixel edges aligned at the map's first edge; ``n_out = round(n · s / s₀)``,
    at least 1), and a warning naming the file gives both scales. Resampling was chosen over
    refusing because most real SP normal maps have a 0.1476″ scan step against 0.16″: a
    refusal would make the networks unusable on them, while an 8 % resampling keeps the
    structure sizes the networks expect. It does not restore resolution: a coarser map (a
    0.30″ fast map) reaches the networks smoother than their training maps, which the warning
    says. NaN pixels spread to the resampled pixels they touch (they are masked downstream);
    the quiet-Sun mask is resampled by nearest pixel. A one-pixel axis (a single slit) is left
    as it is.

    Parameters
    ----------
    sp_map : the map (any units), ``header["pixel_scale_arcsec"] = {"x": XSCALE, "y": YSCALE}``
        from the readers.
    target_arcsec : the networks' pixel [arcsec], one number or (x, y).
    pixel_scale : (x, y) [arcsec] to use instead of the header's (a file without the cards).
    rtol : relative tolerance per axis.

    Returns
    -------
    (map at the target pixel (the same object when nothing changed), info) with info
    ``{"scale_arcsec": (x, y) of the input, "source": "header" / "given" / "assumed",
    "target_arcsec": (x, y), "resampled": [axes], "shape_from": (ny, nx), "shape_to": (ny, nx),
    "warnings": [messages]}``; the new map's ``header["pixel_resampling"]`` holds the same and
    ``header["pixel_scale_arcsec"]`` the new scale.

    A map without ``XSCALE``/``YSCALE`` (the globin sample cube has none) is **not** refused:
    a warning naming the file and the missing card(s) says the trained pixel is assumed, and
    ``info["source"]`` is ``"assumed"``; pass ``pixel_scale`` to give the scale.

    Raises
    ------
    SPReadError : a pixel scale that is not positive and finite (names the file).
    ValueError : ``target_arcsec`` or ``rtol`` not positive.

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 2 (training maps rebinned to the 0.16″
    Hinode pixel); XSCALE/YSCALE of the SP level-1 headers (Lites et al. 2013).
    """
    tx, ty = (float(target_arcsec),) * 2 if np.isscalar(target_arcsec) else (float(target_arcsec[0]),
                                                                              float(target_arcsec[1]))
    if not (tx > 0 and ty > 0 and rtol >= 0):
        raise ValueError(f"target_arcsec must be positive and rtol ≥ 0, got {target_arcsec}, {rtol}")
    path = Path((sp_map.header.get("files") or ["<map>"])[0] or "<map>")
    messages: list[str] = []
    if pixel_scale is not None:
        sx, sy = float(pixel_scale[0]), float(pixel_scale[1])
        source = "given"
    elif sp_map.header.get("pixel_scale_arcsec"):
        sx, sy = float(sp_map.header["pixel_scale_arcsec"]["x"]), float(sp_map.header["pixel_scale_arcsec"]["y"])
        source = "header"
    else:
        missing = sp_map.header.get("pixel_scale_missing") or ["XSCALE", "YSCALE"]
        msg = (f"{path}: no {' and no '.join(missing)} card: the pixel scale is unknown; assumed to be the networks' "
               f"{tx:g} x {ty:g} arcsec (give the map's scale with pixel_scale= / --pixel-scale X,Y)")
        logger.warning("%s", msg)
        info = {"scale_arcsec": None, "source": "assumed", "target_arcsec": (tx, ty), "resampled": [],
                "shape_from": (sp_map.ny, sp_map.nx), "shape_to": (sp_map.ny, sp_map.nx), "warnings": [msg]}
        header = dict(sp_map.header)
        header["pixel_resampling"] = {**info, "note": "pixel scale assumed"}
        return replace(sp_map, header=header), info
    for name, v in (("XSCALE", sx), ("YSCALE", sy)):
        if not (math.isfinite(v) and v > 0):
            raise SPReadError(path, f"pixel scale {name} = {v} arcsec is not positive")
    stokes, cont, mask = sp_map.stokes, sp_map.continuum, sp_map.quiet_mask
    resampled = []
    for axis_name, s_in, t, ax in (("x", sx, tx, -1), ("y", sy, ty, -2)):
        rel = s_in / t - 1.0
        if abs(rel) <= rtol:
            continue
        n = stokes.shape[ax]
        n_out = max(1, int(round(n * s_in / t)))
        card = "XSCALE (scan step)" if axis_name == "x" else "YSCALE (along the slit)"
        msg = (f"{path}: {card} is {s_in:g} arcsec, the networks were trained at {t:g} arcsec ({rel:+.1%}): ")
        if n == 1:
            msg += "a single pixel along this axis, left as it is"
        else:
            msg += f"resampled along {axis_name} from {n} to {n_out} pixels (linear interpolation)"
            if s_in > t * 1.25:
                msg += ("; the map is coarser than the training maps, so the networks see smoother maps than they "
                        "learnt from: treat the result with care")
            ratio = t / s_in
            stokes = _resample_pixels(stokes, stokes.ndim + ax, n_out, ratio)
            cont = _resample_pixels(np.asarray(cont), np.asarray(cont).ndim + ax, n_out, ratio)
            if mask is not None:
                mask = _resample_pixels(np.asarray(mask), 2 + ax, n_out, ratio, nearest=True)
            resampled.append(axis_name)
        logger.warning("%s", msg)
        messages.append(msg)
    info = {"scale_arcsec": (sx, sy), "source": source, "target_arcsec": (tx, ty), "resampled": resampled,
            "shape_from": (sp_map.ny, sp_map.nx), "shape_to": tuple(int(v) for v in stokes.shape[-2:]),
            "warnings": messages}
    header = dict(sp_map.header)
    header["pixel_resampling"] = {**info, "method": "linear interpolation, pixel edges aligned at the first edge"}
    header["pixel_scale_arcsec"] = {"x": tx if "x" in resampled else sx, "y": ty if "y" in resampled else sy}
    if not resampled and source == "header":
        return replace(sp_map, header=header), info
    return replace(sp_map, stokes=np.ascontiguousarray(stokes, dtype=np.float32),
                   continuum=np.ascontiguousarray(cont, dtype=np.float32), quiet_mask=mask, header=header), info
