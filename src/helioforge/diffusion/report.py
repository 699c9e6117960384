"""Figures, report text and HTML pages of the diffusion job (Ramunno et al. 2024, Table 1, Figs. 1, 4–8).

Everything is written through the report toolkit (:mod:`helioforge.reporting`): figures with
:func:`~helioforge.reporting.save_figure` (atomic), pages from the templates
``templates/diffusion_evaluate.html.j2`` and ``templates/diffusion_augment.html.j2``.

* :func:`plot_class_histogram` — images per GOES class (Fig. 1);
* :func:`plot_std_maps`, :func:`plot_sample_grid` — per-class std maps (Fig. 4) and samples (Fig. 5);
* :func:`plot_augmentation` — the augmentation experiment (Figs. 6–8);
* :func:`save_grid` — the PNG grid beside a sampled FITS;
* :func:`conclusions` — what the sample sizes allow one to conclude (report sentences);
* :func:`write_evaluation_html`, :func:`write_augmentation_html` — the two pages;
* :func:`labels_summary_lines`, :func:`evaluation_summary_lines` — what the command line prints.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sunpy.visualization.colormaps import cmlist

from helioforge.data.goes import FLARE_CLASSES
from helioforge.diffusion.augment import METHODS, summarize_augmentation
from helioforge.diffusion.metrics import images_labels
from helioforge.reporting import save_figure, write_html

import matplotlib.pyplot as plt  # noqa: E402,I001  (helioforge.reporting has chosen the Agg backend)

__all__ = ["save_grid", "plot_class_histogram", "plot_std_maps", "plot_sample_grid", "plot_augmentation", "conclusions",
           "augmentation_pivot", "write_evaluation_html", "write_augmentation_html", "labels_summary_lines",
           "evaluation_summary_lines", "PAPER_TABLE1"]

IMAGE_CMAP = cmlist["sdoaia171"]  # sunpy's AIA 171 Å colormap
STD_CMAP = "inferno"

#: Ramunno et al. (2024) Table 1, discrete-label model (ours: class condition) and X-ray model.
PAPER_TABLE1 = {
    "cluster_error": {"gt": 0.00197, "class": 0.1294, "flux": 1.5031},
    "cluster_distance": {"gt": 1.00104, "class": 0.9212, "flux": 0.9342},
    "cluster_std": {"gt": 0.99816, "class": 1.2107, "flux": 1.0976},
    "macro_f1_ratio": {"class": 0.70, "flux": 0.34},
    "real_macro_f1": 0.55,
}


#: Ramunno et al. (2024) App. D: per-class F1 of the classifier on real data (Table D.1) and on
#: images of the discrete-label model (Table D.2).
PAPER_D1_F1 = {"A": 0.80, "B": 0.26, "C": 0.55, "M": 0.70, "X": 0.42}
PAPER_D2_F1 = {"A": 0.77, "B": 0.24, "C": 0.28, "M": 0.37, "X": 0.26}


def save_grid(images: np.ndarray, path: str | Path, *, title: str = "", cols: int | None = None) -> Path:
    """PNG grid of images on a fixed grey scale, written atomically (110 dpi).

    Parameters
    ----------
    images : numpy.ndarray
        (n, 1, N, N) in [-1, 1], n ≥ 1.
    path : str or pathlib.Path
        Output PNG.
    title : str
        Figure title (none when empty).
    cols : int or None
        Images per row; default ≈ √n, at most 8.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        From matplotlib for an empty image set (a grid of 0 rows).
    """
    n = len(images)
    cols = cols or min(8, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        ax.imshow(img[0], cmap="gray", vmin=-1, vmax=1, origin="lower")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_class_histogram(counts: dict[str, int], path: str | Path, title: str = "GOES flare classes of the images") -> Path:
    """Bar chart of images per GOES class (like Ramunno et al. 2024, Fig. 1) as a PNG.

    Parameters
    ----------
    counts : as from :func:`helioforge.data.goes_labels.class_histogram` (missing classes count 0;
        ``unlabelled`` is shown in the axis label, not as a bar).
    path : the PNG to write (atomically, :func:`helioforge.reporting.save_figure`, 120 dpi).
    title : figure title.

    Returns
    -------
    Path : the path written.
    """
    values = [int(counts.get(c, 0)) for c in FLARE_CLASSES]
    fig = Figure(figsize=(5.0, 3.6), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(FLARE_CLASSES, values, color=["#4c72b0", "#55a868", "#c4a000", "#dd8452", "#c44e52"])
    for bar, v in zip(bars, values):
        ax.annotate(str(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=9)
    unl = int(counts.get("unlabelled", 0))
    ax.set_xlabel("GOES flare class" + (f"   ({unl} unlabelled images not shown)" if unl else ""))
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.set_ylim(0, max(values + [1]) * 1.15)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def _blank(ax: plt.Axes, text: str | None = None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4")


def plot_std_maps(real_maps: np.ndarray, gen_maps: np.ndarray, class_names: Sequence[str],
                  path: str | os.PathLike) -> Path:
    """Figure like Ramunno et al. (2024) Fig. 4: per-class std maps, real left, generated right.

    One row per class; both panels of a row share one colour scale (0 to the larger maximum)
    with a colour bar; a panel whose map is all NaN (fewer than two images) says "no images".
    Written atomically as PNG.

    Parameters
    ----------
    real_maps, gen_maps : (n_classes, N, N) maps from :func:`std_maps`.
    class_names : n_classes labels (e.g. "A", "B", "C", "M", "X").
    path : output PNG.

    Returns the path. Raises ``ValueError`` for mismatched shapes or names.
    """
    real, gen = np.asarray(real_maps, dtype=float), np.asarray(gen_maps, dtype=float)
    if real.ndim != 3 or real.shape != gen.shape:
        raise ValueError(f"real_maps and gen_maps must both be (n_classes, N, N), got {real.shape} and {gen.shape}")
    if len(class_names) != len(real):
        raise ValueError(f"{len(class_names)} class names for {len(real)} classes")
    n = len(real)
    fig, axes = plt.subplots(n, 2, figsize=(4.6, 2.2 * n), squeeze=False)
    for c in range(n):
        finite = [m for m in (real[c], gen[c]) if np.isfinite(m).any()]
        vmax = max(float(np.nanmax(m)) for m in finite) if finite else 1.0
        vmax = vmax if vmax > 0 else 1.0
        im = None
        for j, (m, title) in enumerate(((real[c], "real"), (gen[c], "generated"))):
            ax = axes[c, j]
            if np.isfinite(m).any():
                im = ax.imshow(m, cmap=STD_CMAP, vmin=0.0, vmax=vmax, origin="lower", interpolation="nearest")
                _blank(ax)
            else:
                _blank(ax, "no images")
            ax.set_title(f"{class_names[c]} — {title}", fontsize=8)
        if im is not None:
            fig.colorbar(im, ax=list(axes[c]), fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    return save_figure(fig, path, dpi=110)


def plot_sample_grid(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                     per_class: int = 5, wavelength: int | None = None) -> Path:
    """Figure like Ramunno et al. (2024) Fig. 5: one column per flare class, ``per_class`` rows.

    ``wavelength`` (Å) picks sunpy's AIA colormap of that channel (default: 171 Å, the paper's).

    The first ``per_class`` images of each class (in input order) are shown with the AIA 171 Å
    colormap on the fixed [-1, 1] scale; a column with no image says "no images", missing
    cells stay blank. Written atomically as PNG.

    Parameters
    ----------
    images : (n, 1, N, N) images in [-1, 1].
    labels : (n,) integer classes in [0, len(class_names)).
    class_names : column titles.
    path : output PNG.
    per_class : rows.

    Returns the path. Raises ``ValueError`` for bad shapes or labels.
    """
    cmap = cmlist.get(f"sdoaia{int(wavelength)}", IMAGE_CMAP) if wavelength else IMAGE_CMAP
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    n_classes = len(class_names)
    x, y = images_labels(images, labels, n_classes)
    fig, axes = plt.subplots(per_class, n_classes, figsize=(1.3 * n_classes, 1.3 * per_class), squeeze=False)
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)[:per_class]
        for r in range(per_class):
            ax = axes[r, c]
            if r < len(idx):
                ax.imshow(x[idx[r], 0], cmap=cmap, vmin=-1, vmax=1, origin="lower", interpolation="nearest")
                _blank(ax)
            else:
                _blank(ax, "no images" if r == 0 and len(idx) == 0 else None)
            ax.axis("on")
        axes[0, c].set_title(class_names[c], fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return save_figure(fig, path, dpi=110)


def _curve_figure(summary: pd.DataFrame, method: str, classes: Sequence[str], title: str) -> Any:
    fig = Figure(figsize=(4 * len(classes), 3.4))
    axes = fig.subplots(1, len(classes), squeeze=False)[0]
    base = summary[summary["method"] == "none"]
    cur = summary[summary["method"] == method]
    for panel, (ax, cls) in enumerate(zip(axes, classes)):
        pts = pd.concat([base[base["class"] == cls], cur[cur["class"] == cls]]).sort_values("n_added")
        x = pts["n_added"].to_numpy(float)
        m = pts["accuracy_mean"].to_numpy(float)
        s = np.nan_to_num(pts["accuracy_std"].to_numpy(float))
        if len(pts):
            ax.plot(x, m, "o-", color="C0" if method == "generated" else "C1", label=f"{method} (mean)")
            ax.fill_between(x, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color="0.6", alpha=0.35, linewidth=0, label="±1 std over repeats")
        if cur[cur["class"] == cls].empty:
            ax.text(0.5, 0.5, f"no {method} runs\nfor class {cls}", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{'abc'[panel] if panel < 3 else panel}) class {cls}")
        ax.set_xlabel(f"{method} images added per minority class")
        ax.set_ylabel("accuracy (recall) on real test set")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return fig


def plot_augmentation(df: pd.DataFrame, path_prefix: str | Path) -> list[Path]:
    """Figures 6–8 of Ramunno et al. (2024, §8.1) from an augmentation table.

    Written (PNG, atomically) to ``<path_prefix>_generated.png`` (Fig. 6: accuracy vs images
    added per minority class with generated images, the ``none`` runs at 0, shaded ±1 std over
    repeats), ``<path_prefix>_classical.png`` (Fig. 7: the same with classical augmentation) and
    ``<path_prefix>_comparison.png`` (Fig. 8: bars of mean ± std accuracy per minority class for
    none, classical and generated at the largest addition).

    Parameters
    ----------
    df : the table of :func:`augmentation_experiment` (its ``attrs["minority_classes"]`` picks the
        panels; without it, every class that received additions).
    path_prefix : file prefix, e.g. ``runs/exp/fig_augmentation``; folders are created.

    Returns
    -------
    list[Path]
        The three PNG paths.

    Raises
    ------
    ValueError
        Missing columns (see :func:`summarize_augmentation`) or an empty table.
    """
    if len(df) == 0:
        raise ValueError("augmentation table is empty: nothing to plot")
    summary = summarize_augmentation(df)
    classes = list(df.attrs.get("minority_classes") or [])
    if not classes and "added" in df.columns:
        classes = list(dict.fromkeys(df.loc[df["added"].astype(bool) & (df["method"] != "none"), "class"]))
    if not classes:
        classes = list(dict.fromkeys(df["class"]))
    prefix = str(path_prefix)
    paths = [
        save_figure(_curve_figure(summary, "generated", classes, "Accuracy with generated images added (cf. Fig. 6)"),
              Path(prefix + "_generated.png"), dpi=120),
        save_figure(_curve_figure(summary, "classical", classes, "Accuracy with classical augmentation (cf. Fig. 7)"),
              Path(prefix + "_classical.png"), dpi=120),
    ]
    fig = Figure(figsize=(1.8 * len(classes) + 3, 3.6))
    ax = fig.subplots()
    width = 0.26
    n_top = {m: summary.loc[summary["method"] == m, "n_added"].max() for m in METHODS}
    for j, method in enumerate(METHODS):
        sub = summary[(summary["method"] == method) & (summary["n_added"] == n_top[method])]
        vals = [sub.loc[sub["class"] == c, ["accuracy_mean", "accuracy_std"]] for c in classes]
        mean = [float(v["accuracy_mean"].iloc[0]) if len(v) else np.nan for v in vals]
        std = [float(np.nan_to_num(v["accuracy_std"].iloc[0])) if len(v) else 0.0 for v in vals]
        label = "only real images" if method == "none" else \
            (f"{method} +{int(n_top[method])}" if np.isfinite(n_top[method]) else f"{method} (no runs)")
        ax.bar(np.arange(len(classes)) + (j - 1) * width, mean, width, yerr=std, capsize=3, label=label,
               color=("0.6", "C1", "C0")[j])
    ax.set_xticks(np.arange(len(classes)))
    ax.set_xticklabels([f"class {c}" for c in classes])
    ax.set_ylabel("accuracy (recall) on real test set")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Least represented classes: none / classical / generated (cf. Fig. 8)")
    paths.append(save_figure(fig, Path(prefix + "_comparison.png"), dpi=120))
    return paths


def conclusions(m: dict[str, Any]) -> dict[str, str]:
    """One sentence per metric on what the sample sizes allow one to conclude (report text).

    Compares each generated-set value (mean ± std over repeats) with its yardsticks measured in
    the same run: the held-out real row (the floor a generator of new real-like images can
    reach at this size), the trivial per-pixel Gaussian generator, and, for F1, chance. A
    difference counts when it exceeds two standard deviations.

    Parameters
    ----------
    m : dict
        The metrics of :func:`~helioforge.diffusion.evaluate.evaluate` (``generated``,
        ``cluster``, ``classifier``, ``frechet``, ``data``), before ``conclusions`` is added.

    Returns
    -------
    dict of str to str
        Sentences under ``cluster_error``, ``cluster_distance``, ``cluster_std``, ``frechet``,
        ``f1``, ``real_f1``, ``macro_precision``, ``macro_recall`` and ``ratio``.

    Raises
    ------
    KeyError
        When ``m`` lacks one of the metrics used.
    """
    g, cl, clf = m["generated"], m["cluster"], m["classifier"]
    n_te, reps = m["data"]["n_test"], g["repeats"]
    out: dict[str, str] = {}

    def between(value: dict, floor: float, ceiling: dict, lower_is_better: bool = True) -> str:
        d = value["mean"] - ceiling["mean"]
        spread = 2 * max(value["std"], ceiling["std"], 1e-12)
        if abs(d) <= spread:
            verdict = "not distinguishable from the trivial generator"
        else:
            better = (d < 0) == lower_is_better
            verdict = "better than the trivial generator" if better else "worse than the trivial generator"
        near = abs(value["mean"] - floor) <= 2 * max(value["std"], 1e-12)
        return f"{verdict}; {'within' if near else 'not within'} two std of the held-out real value"

    ce = cl["generated"]["cluster_error"]
    out["cluster_error"] = (f"Cluster error {ce['mean']:.2f} ± {ce['std']:.2f} over {reps} sets of {g['n_proportional']}: "
                            f"{between(ce, cl['real_test']['cluster_error'], cl['baseline']['cluster_error'])} "
                            f"({cl['real_test']['cluster_error']:.2f} on {n_te} images).")
    for key, label in (("cluster_distance", "Cluster distance"), ("cluster_std", "Cluster std")):
        v = cl["generated"][key]
        out[key] = (f"{label} {v['mean']:.2f} ± {v['std']:.2f} (target: the held-out {cl['real_test'][key]:.2f}; "
                    f"trivial generator {cl['baseline'][key]['mean']:.2f}): "
                    + ("within two std of the held-out value." if abs(v["mean"] - cl["real_test"][key]) <= 2 * v["std"]
                       else "off the held-out value by more than two std."))
    fd = m["frechet"]["generated_vs_train"]
    out["frechet"] = (f"Fréchet distance {fd['mean']:.2f} ± {fd['std']:.2f}: "
                      f"{between(fd, m['frechet']['real_test_vs_train'], m['frechet']['baseline_vs_train'])} "
                      f"({m['frechet']['real_test_vs_train']:.2f}).")
    f1, ch = clf["generated_uniform"]["macro_f1"], clf["generated_chance"]["macro_f1"]
    sig = f1["mean"] - 2 * f1["std"] > ch["mean"] + 2 * ch["std"]
    out["f1"] = (f"Generated macro F1 over {', '.join(clf['classes'])}: {f1['mean']:.2f} ± {f1['std']:.2f} "
                 f"({reps} sets of {g['n_per_class']} per class), chance {ch['mean']:.2f}: "
                 + ("the generated classes are recognised above chance." if sig
                    else "not distinguishable from chance at this size."))
    real, rch = clf["real_test"], clf["real_test_chance"]
    boot = clf.get("real_test_bootstrap", {})
    n_cls = {c: real["per_class"][c]["support"] for c in clf["classes"]}
    out["real_f1"] = (f"Real held-out macro F1 {real['macro_f1']:.2f} on {real['n']} images ({n_cls}; bootstrap std "
                      f"{boot.get('macro_f1_std', float('nan')):.2f}), chance {rch['macro_f1']:.2f} ± "
                      f"{rch['macro_f1_std']:.2f}: "
                      + ("above chance" if real["macro_f1"] > rch["macro_f1"] + 2 * rch["macro_f1_std"]
                         else "not distinguishable from chance")
                      + "; the bootstrap std over the held-out images is the uncertainty of every ratio's "
                        "denominator.")
    for key, label in (("macro_precision", "Precision"), ("macro_recall", "Recall")):
        v, b = clf["ratio"][key], clf["baseline_ratio"][key]
        out[key] = (f"{label} ratio {v['mean']:.2f} ± {v['std']:.2f} (trivial generator {b['mean']:.2f} ± {b['std']:.2f}; "
                    f"paper {0.73 if key == 'macro_precision' else 0.74} for the discrete model).")
    ra, rb = clf["ratio"]["macro_f1"], clf["baseline_ratio"]["macro_f1"]
    spread = 2 * max(ra["std"], rb["std"], 1e-12)
    verdict = ("above the trivial generator's" if ra["mean"] - rb["mean"] > spread else
               "below the trivial generator's" if rb["mean"] - ra["mean"] > spread else
               "not distinguishable from the trivial generator's")
    out["ratio"] = (f"F1 ratio {ra['mean']:.2f} ± {ra['std']:.2f}, {verdict} {rb['mean']:.2f} ± {rb['std']:.2f} "
                    "(a generator that paints each class's mean image with pixel noise); paper 0.70 on 20,420 images.")
    return out


def augmentation_pivot(summary, cfg, test_counts: dict[str, int]):
    """Recall table of the augmentation experiment and one sentence per minority class.

    The sentences compare the largest generated and classical additions with none (a change
    counts when it exceeds two standard deviations).

    Parameters
    ----------
    summary : pandas.DataFrame
        :func:`~helioforge.diffusion.augment.summarize_augmentation` of the experiment
        (``method``, ``n_added``, ``class``, ``accuracy_mean``/``_std``, ``macro_f1_mean``/``_std``).
    cfg : AugmentConfig
        Its ``minority_classes`` and ``additions`` (non-empty).
    test_counts : dict of str to int
        Held-out test images per class; classes with none get no column.

    Returns
    -------
    rows : list of dict
        One per (method, n_added): ``method``, ``n_added``, a "mean ± std" recall string per
        class ("–" when not measured) and ``macro_f1``.
    classes : list of str
        The class columns (classes with test images).
    texts : list of str
        One sentence per minority class.

    Raises
    ------
    ValueError
        When ``cfg.additions`` is empty (from ``max``) and a minority class has test images.
    """
    classes = [c for c in FLARE_CLASSES if test_counts.get(c, 0) > 0]
    rows = []
    for (method, n_added), grp in summary.groupby(["method", "n_added"], sort=False):
        row: dict[str, Any] = {"method": method, "n_added": int(n_added)}
        for c in classes:
            r = grp[grp["class"] == c]
            row[c] = "–" if r.empty or not np.isfinite(r["accuracy_mean"].iloc[0]) else \
                f"{r['accuracy_mean'].iloc[0]:.2f} ± {np.nan_to_num(r['accuracy_std'].iloc[0]):.2f}"
        row["macro_f1"] = f"{grp['macro_f1_mean'].iloc[0]:.2f} ± {np.nan_to_num(grp['macro_f1_std'].iloc[0]):.2f}"
        rows.append(row)
    texts = []
    for c in cfg.minority_classes:
        if test_counts.get(c, 0) == 0:
            texts.append(f"Class {c}: no held-out test image, its recall cannot be measured.")
            continue
        def get(method: str, n: int) -> pd.Series | None:
            r = summary[(summary["method"] == method) & (summary["n_added"] == n) & (summary["class"] == c)]
            return None if r.empty else r.iloc[0]
        base, n_max = get("none", 0), max(cfg.additions)
        parts = []
        for method in ("generated", "classical"):
            r = get(method, n_max)
            if r is None or base is None:
                continue
            d = r["accuracy_mean"] - base["accuracy_mean"]
            spread = 2 * max(np.nan_to_num(r["accuracy_std"]), np.nan_to_num(base["accuracy_std"]), 1e-9)
            verdict = "a gain" if d > spread else ("a loss" if d < -spread else "no change beyond the spread")
            parts.append(f"+{n_max} {method}: {r['accuracy_mean']:.2f} vs {base['accuracy_mean']:.2f} without, {verdict}")
        texts.append(f"Class {c} ({test_counts[c]} test images, so one image moves recall by "
                     f"{1 / test_counts[c]:.2f}): " + "; ".join(parts) + ".")
    return rows, classes, texts


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, dict) and "mean" in v:
        return f"{v['mean']:.{nd}f} ± {v['std']:.{nd}f}"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{nd}f}"
    return str(v)


def write_evaluation_html(report_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Render ``index.html`` of an evaluation from its metrics dictionary.

    Parameters
    ----------
    report_dir : str or pathlib.Path
        Report folder.
    metrics : dict
        The metrics of :func:`~helioforge.diffusion.evaluate.evaluate`.

    Returns
    -------
    pathlib.Path
        ``<report_dir>/index.html``.

    Raises
    ------
    KeyError
        When ``metrics`` lacks ``cluster.gt_real_halves``.
    """
    return write_html(Path(report_dir) / "index.html", "diffusion_evaluate.html.j2", m=metrics, classes=FLARE_CLASSES, paper=PAPER_TABLE1, fmt=_fmt, paper_d1=PAPER_D1_F1,
                      paper_d2=PAPER_D2_F1,
                      k=metrics["cluster"]["gt_real_halves"].get("k", 5))


def write_augmentation_html(report_dir: str | Path, result: dict[str, Any]) -> Path:
    """Render ``augmentation.html`` from the experiment's result dictionary.

    Parameters
    ----------
    report_dir : str or pathlib.Path
        Report folder.
    result : dict
        The result of :func:`~helioforge.diffusion.evaluate.augment_experiment` (with ``summary``,
        a list of row dicts).

    Returns
    -------
    pathlib.Path
        ``<report_dir>/augmentation.html``.

    Raises
    ------
    KeyError
        When ``result`` has no ``summary``.
    """
    cols = list(result["summary"][0].keys()) if result["summary"] else []
    return write_html(Path(report_dir) / "augmentation.html", "diffusion_augment.html.j2", r=result, cols=cols, fmt=_fmt)


def labels_summary_lines(rep: dict[str, Any], label_source: str, tolerance_min: float) -> list[str]:
    """The lines ``helioforge diffusion label`` prints from ``labels.json``.

    Parameters
    ----------
    rep : dict
        The labelling report (``labelled``, ``images_read``, ``unlabelled``, ``skipped``,
        ``histogram``; optional counts by source, events and reasons).
    label_source : str
        ``events``, ``flux`` or ``events+flux``.
    tolerance_min : float
        Event tolerance, minutes after the flare peak.

    Returns
    -------
    list of str
        Lines without newlines.

    Raises
    ------
    KeyError
        When ``rep`` lacks a required key.
    """
    out = [f"labelled {rep['labelled']} of {rep['images_read']} images ({label_source}): "
           f"{rep.get('event_linked', 0)} linked to a flare peak by the event rule (≤ {tolerance_min:g} min after "
           f"the peak), {rep.get('flux_labelled', 0)} by the GOES flux sample nearest the image; "
           f"unlabelled {rep['unlabelled']}; skipped {len(rep['skipped'])}",
           "classes: " + ", ".join(f"{k} {v}" for k, v in rep["histogram"].items())]
    for src, hist in (rep.get("histogram_by_source") or {}).items():
        out.append(f"  by {src}: " + ", ".join(f"{k} {v}" for k, v in hist.items() if k != "unlabelled"))
    ev = rep.get("events") or {}
    if ev:
        out.append(f"events: {ev['listed']} in the list, {ev['used']} with a class ({ev['classless_filled']} of "
                   f"{ev['classless']} without one given the XRS-B flux ≤ 6 s after the peak)"
                   + "".join(f"; {n} skipped: {why}" for why, n in ev.get("skipped", {}).items()))
    for what in ("skipped_by_reason", "unlabelled_by_reason"):
        for why, n in (rep.get(what) or {}).items():
            out.append(f"{what.split('_')[0]} {n}: {why}")
    return out


def evaluation_summary_lines(m: dict[str, Any]) -> list[str]:
    """The lines ``helioforge diffusion evaluate`` prints.

    Parameters
    ----------
    m : dict
        The metrics of :func:`~helioforge.diffusion.evaluate.evaluate`.

    Returns
    -------
    list of str
        Four lines: sampler and set sizes, cluster error, Fréchet distance, macro F1.

    Raises
    ------
    KeyError
        When ``m`` lacks one of the metrics used.
    """
    c, g, k = m["cluster"], m["generated"], m["classifier"]

    def pm(v: dict) -> str:
        return f"{v['mean']:.3f} ± {v['std']:.3f}"

    return [
        f"generated by {g['sampler_label']}, {g['repeats']} sets of {g['n_proportional']} proportional and "
        f"{g['n_per_class']} per class ({', '.join(g['classes'])})",
        f"cluster error GT {pm(c['gt_real_halves']['cluster_error'])} | held-out {c['real_test']['cluster_error']:.3f} | "
        f"generated {pm(c['generated']['cluster_error'])} | trivial {pm(c['baseline']['cluster_error'])}",
        f"Fréchet (domain): held-out {m['frechet']['real_test_vs_train']:.3f} | generated "
        f"{pm(m['frechet']['generated_vs_train'])} | trivial {pm(m['frechet']['baseline_vs_train'])}",
        f"macro F1 over {', '.join(k['classes'])}: real {k['real_test']['macro_f1']:.2f} (chance "
        f"{k['real_test_chance']['macro_f1']:.2f}) | generated {pm(k['generated_uniform']['macro_f1'])} (chance "
        f"{k['generated_chance']['macro_f1']['mean']:.2f}) | ratio {pm(k['ratio']['macro_f1'])} (paper 0.70)",
    ]
