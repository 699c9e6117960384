"""How far to trust a SICON inversion: the validation metrics on held-out synthetic maps and on
real data (paper §4.1 Fig. 3 median absolute deviations, §4.4 re-synthesis; issue 5 item 5).

- :func:`validation_table`: median absolute deviation (MAD = median |d − median d|, d = inferred −
  true) of each quantity at each log τ on held-out synthetic maps, beside the paper's values
  at log τ = −1 (T 82 K, v_z 0.41 km/s, z 18 km, log P 0.02 dex, B ≈ 100 G), per region
  (:func:`region_masks`) with bootstrap intervals;
- :func:`me_baseline`: the same statistics for the quantities a Milne-Eddington least-squares
  inversion gives (v_LOS, B_Q, B_U, B_V against the targets at log τ = −1, where the Fe I pair
  is most sensitive — ME has no depth stratification);
- :func:`spinor_comparison`: T, v_z, B_z at log τ = 0, −1, −2 against the independent SPINOR
  inversion of the real sample patch (no tuning to that patch);
- :func:`resynthesis_rms`: Stokes profiles synthesised from the inferred atmosphere against the
  observed ones.

The figures and the HTML page are :mod:`helioforge.inversion.report`; the whole validation job
(``helioforge inversion validate``) is :func:`helioforge.inversion.pipeline.run_validation`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from helioforge.inversion.me import invert_me, me_field_targets
from helioforge.inversion.targets import field_vector
from helioforge.physics.sicon_targets import QUANTITIES, TARGET_LOG_TAU, UNITS

__all__ = ["PAPER_MAD", "mad", "MAGNETIC_B_G", "region_masks", "validation_table", "me_baseline", "spinor_comparison",
           "resynthesis_rms"]

log = logging.getLogger(__name__)

#: The paper's median absolute deviations at log τ = −1 (§4.1, Fig. 3; §6).
PAPER_MAD = {"T": 82.0, "vz": 0.41, "z": 18.0, "logP": 0.02, "BQ": 100.0, "BU": 100.0, "BV": 100.0}


def mad(d: np.ndarray) -> float:
    """Median absolute deviation median(|d − median(d)|) of the finite values (unscaled).

    Parameters
    ----------
    d : array_like
        Values, any shape (non-finite ones are dropped).

    Returns
    -------
    float
        The MAD in the unit of ``d``; NaN when no value is finite. Paper 003 §4.1 (Fig. 3).
    """
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    return float(np.median(np.abs(d - np.median(d)))) if d.size else float("nan")


#: |B| at log τ = −1 [G] from which a held-out pixel counts as magnetic (spot, pore, plage
#: concentration) rather than quiet Sun (the internetwork field of the training maps is < 100 G).
MAGNETIC_B_G = 200.0


def _five(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(a.shape[0], 7, 7, *a.shape[-2:]) if a.ndim == 4 else a


def region_masks(truth: np.ndarray, threshold_G: float = MAGNETIC_B_G) -> dict[str, np.ndarray]:
    """Quiet-Sun and magnetic pixels of held-out maps, from the true field at log τ = −1.

    |B|² = B⊥² + B_V² with B⊥² = (B_Q⁴ + 4 B_U⁴)^½ (inverting eq. 1 of the paper:
    B_Q² = |B_x² − B_y²|, B_U² = |B_x B_y|).

    Parameters
    ----------
    truth : (N, 49, H, W) or (N, 7, 7, H, W) targets, physical units.
    threshold_G : |B| [G] from which a pixel is magnetic.

    Returns
    -------
    ``{"all": ..., "quiet": |B| < threshold, "magnetic": |B| ≥ threshold}``, bool (N, H, W).
    """
    t = _five(truth)
    k = TARGET_LOG_TAU.index(-1.0)
    bq, bu, bv = (t[:, QUANTITIES.index(q), k].astype(np.float64) for q in ("BQ", "BU", "BV"))
    b = np.sqrt(np.sqrt(bq ** 4 + 4 * bu ** 4) + bv ** 2)
    return {"all": np.ones(b.shape, bool), "quiet": b < threshold_G, "magnetic": b >= threshold_G}


def _mad_interval(per_map: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % bootstrap interval of the MAD, resampling whole maps (the independent units)."""
    nonempty = [d for d in per_map if d.size]
    if n_boot <= 0 or len(nonempty) < 2:
        return float("nan"), float("nan")
    vals = [mad(np.concatenate([nonempty[i] for i in rng.integers(0, len(nonempty), len(nonempty))]))
            for _ in range(n_boot)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def validation_table(pred: np.ndarray, truth: np.ndarray, label: str = "network",
                     regions: dict[str, np.ndarray] | None = None, n_boot: int = 0, seed: int = 0) -> pd.DataFrame:
    """MAD, median and RMS of d = pred − truth for every quantity and log τ (paper §4.1, Fig. 3).

    Parameters
    ----------
    pred, truth : np.ndarray (N, 7, 7, H, W) or (N, 49, H, W), physical units.
    label : the ``method`` column.
    regions : named bool masks (N, H, W) of the pixels to score (e.g. :func:`region_masks`);
        default all pixels (``"all"``).
    n_boot : bootstrap resamples of the N maps for a 95 % interval of the MAD at log τ = −1
        (``mad_lo``, ``mad_hi``; NaN elsewhere and for ``n_boot`` = 0).
    seed : seed of the bootstrap.

    Returns
    -------
    DataFrame with columns method, region, quantity, log_tau, unit, n_pixels, mad, mad_lo,
    mad_hi, median, rms, paper_mad.
    """
    p, t = _five(pred), _five(truth)
    regions = regions or {"all": np.ones((t.shape[0], *t.shape[-2:]), bool)}
    rng = np.random.default_rng(seed)
    rows = []
    for region, m in regions.items():
        m = np.asarray(m, bool)
        for qi, q in enumerate(QUANTITIES):
            for ki, lt in enumerate(TARGET_LOG_TAU):
                dm = p[:, qi, ki] - t[:, qi, ki]
                d = dm[m]
                lo, hi = (_mad_interval([dm[i][m[i]] for i in range(dm.shape[0])], n_boot, rng) if lt == -1.0
                          else (float("nan"), float("nan")))
                rows.append({"method": label, "region": region, "quantity": q, "log_tau": lt, "unit": UNITS[q],
                             "n_pixels": int(d.size), "mad": mad(d), "mad_lo": lo, "mad_hi": hi,
                             "median": float(np.median(d)) if d.size else float("nan"),
                             "rms": float(np.sqrt(np.mean(d ** 2))) if d.size else float("nan"),
                             "paper_mad": PAPER_MAD[q] if lt == -1.0 else np.nan})
    return pd.DataFrame(rows)



def me_baseline(stokes: np.ndarray, truth: np.ndarray, wavelength: np.ndarray, max_pixels: int = 2000,
                seed: int = 0, n_boot: int = 0, **kw) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Milne-Eddington least-squares inversion of held-out pixels against the targets at log τ = −1.

    Parameters
    ----------
    stokes : np.ndarray (N, 4, 112, H, W), quiet-Sun continuum units.
    truth : np.ndarray (N, 49, H, W).
    max_pixels : random pixels inverted.
    seed : seed of the pixel draw and of the bootstrap.
    n_boot : bootstrap resamples of the maps for a 95 % interval of each MAD (``mad_lo``,
        ``mad_hi``; 0: none), as in :func:`validation_table`.

    Returns
    -------
    (DataFrame like :func:`validation_table` for vz, BQ, BU, BV at log τ = −1, info dict with
    pixel count, seconds and pixels/s).
    """
    N, _, nw, H, W = stokes.shape
    flat = np.moveaxis(stokes, (1, 2), (-2, -1)).reshape(-1, 4, nw)
    tflat = np.moveaxis(np.asarray(truth).reshape(N, 7, 7, H, W), (1, 2), (-2, -1)).reshape(-1, 7, 7)
    rng = np.random.default_rng(seed)
    idx = rng.choice(flat.shape[0], min(max_pixels, flat.shape[0]), replace=False)
    kw.setdefault("spectral_profile", "hinode")  # the held-out maps carry the SP profile
    res = invert_me(flat[idx], wavelength, **kw)
    est = me_field_targets(res)
    k = TARGET_LOG_TAU.index(-1.0)
    rows = []
    map_of = idx // (H * W)  # the held-out map of each inverted pixel: the bootstrap resamples maps
    for q, key in (("vz", "vlos"), ("BQ", "BQ"), ("BU", "BU"), ("BV", "BV")):
        d = np.asarray(est[key]).ravel() - tflat[idx, QUANTITIES.index(q), k]
        lo, hi = _mad_interval([d[map_of == i] for i in range(N)], n_boot, rng)
        rows.append({"method": "ME least squares", "region": "all", "quantity": q, "log_tau": -1.0, "unit": UNITS[q],
                     "n_pixels": int(d.size), "mad": mad(d), "mad_lo": lo, "mad_hi": hi,
                     "median": float(np.median(d)), "rms": float(np.sqrt(np.mean(d ** 2))), "paper_mad": PAPER_MAD[q]})
    seconds = float(res.time_s)
    return pd.DataFrame(rows), {"pixels": int(idx.size), "seconds": seconds, "pixels_per_s": idx.size / seconds}


def spinor_comparison(cube_data: np.ndarray, spinor: dict[str, np.ndarray]) -> pd.DataFrame:
    """Network − SPINOR for T, v_z and B_z at SPINOR's log τ levels (mean, RMS, per-pixel range).

    Each SPINOR level is compared with the nearest of :data:`TARGET_LOG_TAU`. Means are plain
    (not NaN-aware): a NaN pixel makes its row NaN.

    Parameters
    ----------
    cube_data : np.ndarray
        (7, 7, ny, nx) network cube (quantities × :data:`TARGET_LOG_TAU`), in :data:`UNITS`; it must
        cover the same pixels as the SPINOR maps.
    spinor : dict of np.ndarray
        ``log_tau`` (n_levels,) and maps ``T`` [K], ``vz`` [km/s], ``Bz`` [G], each (n_levels, ny, nx).

    Returns
    -------
    pd.DataFrame
        One row per (quantity, level): ``quantity``, ``log_tau``, ``unit``, ``network_mean``,
        ``spinor_mean``, ``mean_diff``, ``rms_diff``, ``min_diff``, ``max_diff``.
    """
    bz = field_vector(cube_data)[2]
    rows = []
    for ki, lt in enumerate(spinor["log_tau"]):
        k = int(np.argmin(np.abs(np.asarray(TARGET_LOG_TAU) - lt)))
        for q, ours in (("T", cube_data[0, k]), ("vz", cube_data[1, k]), ("Bz", bz[k])):
            ref = spinor[q][ki]
            d = ours - ref
            rows.append({"quantity": q, "log_tau": float(lt), "unit": UNITS[q], "network_mean": float(ours.mean()),
                         "spinor_mean": float(ref.mean()), "mean_diff": float(d.mean()),
                         "rms_diff": float(np.sqrt(np.mean(d ** 2))), "min_diff": float(d.min()), "max_diff": float(d.max())})
    return pd.DataFrame(rows)


def resynthesis_rms(observed: np.ndarray, synthetic: np.ndarray) -> dict[str, float]:
    """RMS over pixels and wavelengths of synthetic − observed per Stokes parameter.

    Parameters
    ----------
    observed, synthetic : np.ndarray
        (4, nλ, ny, nx) Stokes maps in quiet-Sun continuum (I_c) units.

    Returns
    -------
    dict of str to float
        ``{"I": rms, "Q": rms, "U": rms, "V": rms}``, I_c units (NaN if any value is NaN).
    """
    d = np.asarray(synthetic) - np.asarray(observed)
    return {s: float(np.sqrt(np.mean(d[i] ** 2))) for i, s in enumerate("IQUV")}
