"""The SICON validation report (paper §4.1 Fig. 3, §4.4 Figs. 12–13): figures, CSV tables,
``metrics.json`` and an HTML page (``templates/inversion_validation.html.j2``) through the
report toolkit :mod:`helioforge.reporting`. The numbers come from
:mod:`helioforge.inversion.evaluate`; :func:`helioforge.inversion.pipeline.run_validation` makes
them and calls :func:`write_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import gaussian_kde

from helioforge.inversion.evaluate import PAPER_MAD, mad
from helioforge.io import atomic_path, write_json
from helioforge.physics.sicon_targets import QUANTITIES, TARGET_LOG_TAU, UNITS
from helioforge.reporting import save_figure, write_html

import matplotlib.pyplot as plt  # noqa: E402,I001  (helioforge.reporting has chosen the Agg backend)

__all__ = ["kde_figure", "profiles_figure", "write_report"]


def kde_figure(pred: np.ndarray, truth: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Kernel density estimates of pred − truth per quantity, one curve per log τ (paper 003 Fig. 3, §4.1).

    One panel per quantity of :data:`QUANTITIES` (2 × 4 grid, the last empty); each curve is labelled
    with its MAD (:func:`~helioforge.inversion.evaluate.mad`). Non-finite differences are dropped, at
    most 20 000 are drawn (fixed seed), and levels with fewer than 3 values or no spread are skipped.

    Parameters
    ----------
    pred, truth : np.ndarray
        (n, 49, ny, nx) or (n, 7, 7, ny, nx) predicted and true targets, quantity-major, in :data:`UNITS`.
    path : str or Path
        Image file to write (format from the suffix).
    title : str, optional
        Figure title; default "inferred − true (held-out synthetic maps)".

    Returns
    -------
    Path
        The written image.
    """
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
    return save_figure(fig, path, dpi=110)



def profiles_figure(wavelength, observed, synthetic, synthetic_nopsf, path, pixels=None) -> Path:
    """Observed (dots) and re-synthesised (lines, with and without the PSF) I and V of a few pixels.

    Paper 003 Figs. 12–13 (§4.4).

    Parameters
    ----------
    wavelength : np.ndarray
        (nλ,) air wavelengths, Å.
    observed, synthetic, synthetic_nopsf : np.ndarray
        (4, nλ, H, W) Stokes maps in quiet-Sun continuum units: observed, re-synthesised with the PSF,
        re-synthesised without it.
    path : str or Path
        Image file to write.
    pixels : list of (int, int), optional
        ``(y, x)`` pixels, one column each; default the centre and the two opposite corners.

    Returns
    -------
    Path
        The written image.
    """
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
    return save_figure(fig, path, dpi=110)


def write_report(out_dir: str | Path, *, tables: dict[str, pd.DataFrame], figures: dict[str, list[str]],
                 metrics: dict[str, Any], intro: str = "") -> Path:
    """Write the validation report: a CSV per table, ``metrics.json`` and ``index.html`` in ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Report folder (created).
    tables : dict of str to pd.DataFrame
        Tables by name. ``validation`` (columns ``region``, ``log_tau``, ``quantity``, ``method``,
        ``mad`` and optionally ``mad_lo``/``mad_hi``) gives the MAD tables at log τ = −1 compared with
        :data:`PAPER_MAD`; ``spinor`` and ``resynthesis`` are shown when present.
    figures : dict of str to list of str
        Image files under ``kde`` and ``profiles``.
    metrics : dict
        Written to ``metrics.json``; ``region_note`` and ``timing`` are shown.
    intro : str, optional
        Introductory HTML.

    Returns
    -------
    Path
        The path of ``index.html``.
    """
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
    return write_html(
        out / "index.html", "inversion_validation.html.j2",
        intro=intro, mad_table=mad_html, full_table=full, region_table=region_html,
        region_note=metrics.get("region_note", ""), kde=figures.get("kde", []),
        spinor_table=tables["spinor"].to_html(index=False, float_format="%.3g") if "spinor" in tables else "–",
        resyn_table=tables["resynthesis"].to_html(index=False, float_format="%.4g") if "resynthesis" in tables else "–",
        profiles=figures.get("profiles", []),
        timing=pd.DataFrame([metrics.get("timing", {})]).to_html(index=False) if metrics.get("timing") else "–")
