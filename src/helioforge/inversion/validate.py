"""How far to trust a SICON inversion: validation on held-out synthetic maps and on real data.

Paper §4.1 (Fig. 3, median absolute deviations), §4.4 (re-synthesis) and issue 5 item 5:

- ``validation_table``: median absolute deviation (MAD = median |d − median d|, d = inferred −
  true) of each quantity at each log τ on held-out synthetic maps, beside the paper's values
  at log τ = −1 (T 82 K, v_z 0.41 km/s, z 18 km, log P 0.02 dex, B ≈ 100 G);
- ``kde_figure``: Gaussian kernel density estimates of d per quantity and log τ (Fig. 3);
- ``me_baseline``: the same statistics for the quantities a Milne-Eddington least-squares
  inversion gives (v_LOS, B_Q, B_U, B_V against the targets at log τ = −1, where the Fe I pair
  is most sensitive — ME has no depth stratification);
- ``spinor_comparison``: T, v_z, B_z at log τ = 0, −1, −2 against the independent SPINOR
  inversion of the real sample patch (no tuning to that patch);
- ``resynthesis_rms``: Stokes profiles synthesised from the inferred atmosphere against the
  observed ones;
- ``write_report``: figures, CSV/JSON tables and an HTML page.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Template  # noqa: E402

from helioforge.inversion.atmos_cube import QUANTITIES, TARGET_LOG_TAU, UNITS  # noqa: E402
from helioforge.io import atomic_path, write_json, write_text  # noqa: E402

__all__ = ["PAPER_MAD", "mad", "MAGNETIC_B_G", "region_masks", "validation_table", "kde_figure", "me_baseline", "spinor_comparison",
           "resynthesis_rms", "profiles_figure", "write_report"]

log = logging.getLogger(__name__)

#: The paper's median absolute deviations at log τ = −1 (§4.1, Fig. 3; §6).
PAPER_MAD = {"T": 82.0, "vz": 0.41, "z": 18.0, "logP": 0.02, "BQ": 100.0, "BU": 100.0, "BV": 100.0}


def mad(d: np.ndarray) -> float:
    """Median absolute deviation median(|d − median(d)|) of the finite values (unscaled)."""
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


def kde_figure(pred: np.ndarray, truth: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Kernel density estimates of pred − truth per quantity, one curve per log τ (paper Fig. 3)."""
    from scipy.stats import gaussian_kde

    p = np.asarray(pred).reshape(len(pred), 7, 7, *np.shape(pred)[-2:])
    t = np.asarray(truth).reshape(len(truth), 7, 7, *np.shape(truth)[-2:])
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.5))
    rng = np.random.default_rng(0)
    colors = plt.cm.viridis(np.linspace(0, 0.9, 7))
    for qi, (q, ax) in enumerate(zip(QUANTITIES, axes.flat)):
        for ki, lt in enumerate(TARGET_LOG_TAU):
            d = (p[:, qi, ki] - t[:, qi, ki]).ravel()
            d = d[np.isfinite(d)]
            if d.size > 20000:
                d = rng.choice(d, 20000, replace=False)
            if d.size < 3 or np.std(d) == 0:
                continue
            lo, hi = np.percentile(d, [0.5, 99.5])
            x = np.linspace(lo, hi, 200)
            ax.plot(x, gaussian_kde(d)(x), color=colors[ki], lw=1.2,
                    label=f"log τ={lt:g}: MAD {mad(d):.3g}")
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel(f"Δ{q} [{UNITS[q]}]")
        ax.legend(fontsize=6)
    axes.flat[-1].axis("off")
    fig.suptitle(title or "inferred − true (held-out synthetic maps)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


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
    from helioforge.inversion.me_inversion import invert_me, me_field_targets

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

    ``cube_data`` (7, 7, ny, nx) must cover the same pixels as the SPINOR maps.
    """
    from helioforge.inversion.atmos_cube import field_vector

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
    """RMS over pixels and wavelengths of synthetic − observed per Stokes parameter (I_c units)."""
    d = np.asarray(synthetic) - np.asarray(observed)
    return {s: float(np.sqrt(np.mean(d[i] ** 2))) for i, s in enumerate("IQUV")}


def profiles_figure(wavelength, observed, synthetic, synthetic_nopsf, path, pixels=None) -> Path:
    """Observed (dots) and re-synthesised (lines, with and without the PSF) I and V of a few pixels (Figs. 12–13)."""
    H, W = observed.shape[-2:]
    pixels = pixels or [(H // 2, W // 2), (0, 0), (H - 1, W - 1)]
    fig, axes = plt.subplots(2, len(pixels), figsize=(4 * len(pixels), 5.5), squeeze=False)
    for j, (y, x) in enumerate(pixels):
        for i, (s, row) in enumerate(((0, 0), (3, 1))):
            ax = axes[row, j]
            ax.plot(wavelength, observed[s, :, y, x], ".", ms=3, color="k", label="observed")
            ax.plot(wavelength, synthetic[s, :, y, x], color="C1", label="re-synthesis + PSF")
            ax.plot(wavelength, synthetic_nopsf[s, :, y, x], color="C0", lw=0.8, label="re-synthesis (deconvolved)")
            ax.set_title(f"pixel (y={y}, x={x}) Stokes {'IQUV'[s]}", fontsize=8)
            ax.set_xlabel("air wavelength [Å]")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


_HTML = Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>helioforge SICON validation</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>
<h1>SICON inversion: validation</h1>
<p>{{ intro }}</p>
<h2>Held-out synthetic maps: median absolute deviation at log τ = −1</h2>
<p>All pixels of the held-out maps, each map inverted whole. "constant" is the trivial yardstick:
one value for every pixel (the MAD of the truth itself, since the MAD ignores a constant offset).</p>
{{ mad_table }}
<h2>By region, with 95 % intervals (bootstrap over maps)</h2>
<p>{{ region_note }}</p>
{{ region_table }}
<h2>All surfaces</h2>
{{ full_table }}
{% for img in kde %}<img src="{{ img }}">{% endfor %}
<h2>Real Hinode patch against SPINOR</h2>
{{ spinor_table }}
<h2>Re-synthesis (paper §4.4)</h2>
{{ resyn_table }}
{% for img in profiles %}<img src="{{ img }}">{% endfor %}
<h2>Timing</h2>
{{ timing }}
</body></html>""")


def write_report(out_dir: str | Path, *, tables: dict[str, pd.DataFrame], figures: dict[str, list[str]],
                 metrics: dict[str, Any], intro: str = "") -> Path:
    """CSV per table, ``metrics.json`` and ``index.html`` in ``out_dir``; returns the HTML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        with atomic_path(out / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False, float_format="%.5g")
    write_json(out / "metrics.json", metrics)
    val = tables.get("validation")
    mad_html = ""
    region_html = ""
    if val is not None:
        everywhere = val[val["region"] == "all"]
        at1 = everywhere[everywhere["log_tau"] == -1.0].pivot_table(index="quantity", columns="method", values="mad",
                                                                    sort=False)
        at1["paper"] = [PAPER_MAD[q] for q in at1.index]
        at1["unit"] = [UNITS[q] for q in at1.index]
        mad_html = at1.to_html(float_format="%.3g")
        r1 = val[(val["log_tau"] == -1.0)].copy()
        if "mad_lo" in r1:
            r1["MAD [95 % interval]"] = [f"{m:.3g} [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) else f"{m:.3g}"
                                         for m, lo, hi in zip(r1["mad"], r1["mad_lo"].fillna(np.nan),
                                                              r1["mad_hi"].fillna(np.nan))]
            region_html = r1.pivot_table(index=["method", "quantity"], columns="region", values="MAD [95 % interval]",
                                         aggfunc="first", sort=False).to_html()
    full = everywhere.pivot_table(index=["method", "quantity"], columns="log_tau", values="mad", sort=False).to_html(
        float_format="%.3g") if val is not None else ""
    html = _HTML.render(
        intro=intro, mad_table=mad_html, full_table=full, region_table=region_html,
        region_note=metrics.get("region_note", ""), kde=figures.get("kde", []),
        spinor_table=tables["spinor"].to_html(index=False, float_format="%.3g") if "spinor" in tables else "–",
        resyn_table=tables["resynthesis"].to_html(index=False, float_format="%.4g") if "resynthesis" in tables else "–",
        profiles=figures.get("profiles", []),
        timing=pd.DataFrame([metrics.get("timing", {})]).to_html(index=False) if metrics.get("timing") else "–")
    return write_text(out / "index.html", html)
