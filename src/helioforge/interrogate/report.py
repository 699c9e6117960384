"""The report stage of the interrogator: figures like the paper's and an HTML page, written
with the report toolkit (:mod:`helioforge.reporting`: figures saved by ``save_figure`` at
110 dpi, the page from the template file ``templates/interrogate_report.html.j2``).

:func:`write_report` takes the run's inputs as one :class:`ReportInputs`; :func:`write_html`
renders ``index.html`` from the metrics once the run's timings are known.

* ``fig2_zoo.png`` — 10×10 generated magnetograms (paper Fig. 2).
* ``fig4_latent_projection.png`` — latent samples in the 2-D projection where the SVM boundary
  is a line, coloured by label, with generated thumbnails (paper Fig. 4).
* ``fig5_traversal.png`` — rows of z + ε n̂ for TUF, TUF | R, PSEP, PSEP | polarity,
  PSEP | polarity, R (paper Fig. 5).
* ``fig6_retrieval.png`` — two bipolar queries of opposite leading polarity with their
  nearest real matches; ``fig6_histograms.png`` — 2-D histograms of query vs match parameters
  with marginals (generated, matched, and the whole real corpus) (paper Fig. 6).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from helioforge import reporting
from helioforge.interrogate.config import Profile
from helioforge.interrogate.data import Corpus
from helioforge.interrogate.directions import LatentDirections, conditional_direction, direction_labels, project_2d, traverse
from helioforge.interrogate.evaluate import params_of_latent
from helioforge.interrogate.gan import Generator, generate
from helioforge.io import atomic_path

__all__ = ["ReportInputs", "write_report", "write_html", "fig_zoo", "fig_latent_projection", "fig_traversal",
           "fig_retrieval", "fig_histograms", "TEMPLATE"]

#: The report page (``helioforge/templates``; extends ``base.html.j2``).
TEMPLATE = "interrogate_report.html.j2"

CMAP = "gray"
TRAVERSAL_ROWS = (
    ("TUF", "TUF", ()),
    ("TUF | R", "TUF", ("R",)),
    ("PSEP", "PSEP", ()),
    ("PSEP | polarity", "PSEP", ("polarity",)),
    ("PSEP | polarity, R", "PSEP", ("polarity", "R")),
)


def _show(ax: plt.Axes, img: np.ndarray, title: str | None = None) -> None:
    ax.imshow(np.squeeze(img), cmap=CMAP, vmin=-1, vmax=1, origin="lower", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def fig_zoo(images: np.ndarray, path: Path, rows: int = 10) -> Path:
    """Grid of rows×rows generated images (n, 1, N, N) in [-1, 1] (paper Fig. 2).

    Parameters
    ----------
    images : np.ndarray, shape (n, 1, N, N)
        Generated images, Br / 1000 G; the first rows² are shown (with fewer, the last panels stay empty).
    path : Path
        Destination PNG.
    rows : int
        Panels per side (paper: 10).

    Returns
    -------
    Path
        ``path``.
    """
    fig, axes = plt.subplots(rows, rows, figsize=(rows, rows))
    for ax, img in zip(axes.ravel(), images):
        _show(ax, img)
    fig.suptitle("GAN-generated magnetograms (Br / 1000 G, gray: -1 … +1)", fontsize=10)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return reporting.save_figure(fig, path, dpi=110)


def fig_latent_projection(z: np.ndarray, params: dict[str, np.ndarray], directions, generate_fn, path: Path,
                          n_thumbs: int = 14) -> Path:
    """Paper Fig. 4: 2-D projection z'₁ = z₁, z'₂ = Σ_{i≥2} nᵢzᵢ/n₂ with the SVM line and thumbnails.

    One panel per fitted direction among TUF and polarity (else the first fitted one).

    Parameters
    ----------
    z : np.ndarray, shape (M, latent_dim)
        The latent samples the directions were fitted on.
    params : dict of str to np.ndarray
        Their parameters (M,) (:func:`~helioforge.interrogate.directions.direction_labels` keys).
    directions : LatentDirections
        The fitted directions.
    generate_fn : callable
        z (k, latent_dim) → images (k, 1, N, N) in [-1, 1], for up to ``n_thumbs`` thumbnails.
    path : Path
        Destination PNG.
    n_thumbs : int
        Number of thumbnails, spread over the plane.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If n₂ = 0 for a shown direction (:func:`~helioforge.interrogate.directions.project_2d`).
    """
    labels = direction_labels(params)
    names = [n for n in ("TUF", "polarity") if directions.has(n)] or list(directions.normals)[:1]
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 6), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes[0], names):
        n = directions.get(name)
        b = directions.offsets[name]
        p2 = project_2d(z, n)
        ok, y, _ = labels[name]
        ax.scatter(p2[ok & y, 0], p2[ok & y, 1], s=3, c="tab:red", alpha=0.35, label=f"{name} high" if name != "polarity" else "positive leading")
        ax.scatter(p2[ok & ~y, 0], p2[ok & ~y, 1], s=3, c="tab:blue", alpha=0.35, label=f"{name} low" if name != "polarity" else "negative leading")
        xs = np.linspace(p2[:, 0].min(), p2[:, 0].max(), 10)
        ax.plot(xs, -(n[0] * xs + b) / n[1], "k-", lw=2, label="SVM decision boundary")
        pick = _spread(p2, n_thumbs, rng)
        thumbs = generate_fn(z[pick])
        for (x0, y0), img in zip(p2[pick], thumbs):
            ab = AnnotationBbox(OffsetImage(np.squeeze(img)[::-1], cmap=CMAP, zoom=36 / img.shape[-1], norm=matplotlib.colors.Normalize(-1, 1)),
                                (x0, y0), pad=0.05, frameon=True)
            ax.add_artist(ab)
        ax.set_xlabel("z'₁ = z₁")
        ax.set_ylabel("z'₂ = Σᵢ₌₂ nᵢ zᵢ / n₂")
        ax.set_title(f"{name}: validation accuracy {directions.accuracy[name]:.2f}")
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    return reporting.save_figure(fig, path, dpi=110)


def _spread(points: np.ndarray, n: int, rng: np.random.Generator, min_dist: float = 0.15) -> np.ndarray:
    """Indices of up to ``n`` points at least ``min_dist`` apart (in units of the data range)."""
    span = np.ptp(points, axis=0)
    scaled = (points - points.min(0)) / np.where(span > 0, span, 1)
    chosen: list[int] = []
    for i in rng.permutation(len(points)):
        if all(np.hypot(*(scaled[i] - scaled[j])) >= min_dist for j in chosen):
            chosen.append(int(i))
            if len(chosen) == n:
                break
    return np.asarray(chosen, dtype=int)


def fig_traversal(generator_fn, params_fn, directions, latent_dim: int, eps: np.ndarray, path: Path, seed: int = 3) -> Path:
    """Paper Fig. 5: one base z moved along plain and conditioned directions; each panel is
    annotated with the parameter being moved (and R).

    Rows are the entries of :data:`TRAVERSAL_ROWS` whose directions are fitted (else one plain row per
    fitted direction); columns are the values of ``eps``.

    Parameters
    ----------
    generator_fn : callable
        z (k, latent_dim) → images (k, 1, N, N) in [-1, 1].
    params_fn : callable
        z (k, latent_dim) → parameter arrays (k,) (:func:`~helioforge.interrogate.evaluate.params_of_latent`).
    directions : LatentDirections
        The fitted directions.
    latent_dim : int
        Dimension of z.
    eps : np.ndarray, shape (n_eps,)
        Shifts ε along each direction.
    path : Path
        Destination PNG.
    seed : int
        Seed of the base z.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If a primal direction lies in the span of its conditions
        (:func:`~helioforge.interrogate.directions.conditional_direction`).
    """
    z0 = np.random.default_rng(seed).standard_normal((1, latent_dim))
    rows = [row for row in TRAVERSAL_ROWS if directions.has(row[1], *row[2])]
    if not rows:
        rows = [(name, name, ()) for name in directions.normals]
    fig, axes = plt.subplots(len(rows), len(eps), figsize=(1.3 * len(eps), 1.5 * len(rows)), squeeze=False)
    for r, (label, primal, conds) in enumerate(rows):
        vec = conditional_direction(directions.get(primal), [directions.get(c) for c in conds])
        zz = traverse(z0, vec, eps)
        imgs = generator_fn(zz)
        p = params_fn(zz)
        key = "leading_sign" if primal == "polarity" else primal
        for c, img in enumerate(imgs):
            _show(axes[r, c], img, f"{primal}={p[key][c]:.0f} R={p['R'][c]:.0f}")
            if r == 0:
                axes[0, c].set_title(f"ε={eps[c]:+.1f}\n{primal}={p[key][c]:.0f} R={p['R'][c]:.0f}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.35)
    return reporting.save_figure(fig, path, dpi=110)


def _bipolar_pair(q_params: dict[str, np.ndarray]) -> list[int]:
    """Indices of two strong bipolar queries of opposite leading polarity."""
    tuf, psep, sign = q_params["TUF"], q_params["PSEP"], q_params["leading_sign"]
    score = np.where(np.isfinite(psep), np.minimum(q_params["TPF"], q_params["TNF"]), -np.inf)
    out = []
    for s in (1, -1):
        cand = np.flatnonzero(sign == s)
        if len(cand):
            out.append(int(cand[np.argmax(score[cand])]))
    return out or [int(np.argmax(tuf))]


def fig_retrieval(res: dict[str, Any], corpus_table: Table, path: Path) -> Path:
    """Paper Fig. 6 (left): bipolar queries of opposite polarity and their nearest real matches.

    Parameters
    ----------
    res : dict
        Output of :func:`~helioforge.interrogate.evaluate.query_set` (uses ``q_params``, ``q_images``,
        ``m_images``, ``rows`` and ``scores``).
    corpus_table : astropy.table.Table
        The corpus table (``HARPNUM``, ``crop``, ``T_REC`` of the matches).
    path : Path
        Destination PNG.

    Returns
    -------
    Path
        ``path``.
    """
    idx = _bipolar_pair(res["q_params"])
    fig, axes = plt.subplots(len(idx), 2, figsize=(5, 2.6 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        row = int(res["rows"][i, 0])
        _show(axes[r, 0], res["q_images"][i], f"query #{i} (leading {'+' if res['q_params']['leading_sign'][i] > 0 else '−'})")
        t = corpus_table[row]
        where = f"HARP {t['HARPNUM']}" if t["HARPNUM"] >= 0 else f"tile {t['crop']}"
        _show(axes[r, 1], res["m_images"][i], f"match: {where}\n{str(t['T_REC'])[:16]}  cos={res['scores'][i, 0]:.3f}")
    return reporting.save_figure(fig, path, dpi=110)


def fig_histograms(q: dict[str, np.ndarray], m: dict[str, np.ndarray], corpus: dict[str, np.ndarray],
                   correlations: dict[str, dict[str, float]], path: Path) -> Path:
    """Paper Fig. 6 (right): 2-D histogram of each parameter for queries vs matches, with
    marginals of the queries (light blue), the matches (pink) and the whole corpus (black).
    Flux-type parameters are shown as log10(1 + value); the correlations quoted are those of
    the raw values (as in the paper).

    Parameters
    ----------
    q, m, corpus : dict of str to np.ndarray
        Parameters of the queries (Q,), of their best matches (Q,) and of the whole corpus (n,).
    correlations : dict of str to dict
        :func:`~helioforge.interrogate.evaluate.headline` output; one panel per key, titled with its
        ``pearson``, ``spearman``, ``paper_pearson`` and ``paper_spearman``.
    path : Path
        Destination PNG.

    Returns
    -------
    Path
        ``path``.
    """
    names = list(correlations)
    fig = plt.figure(figsize=(4 * len(names), 4.4))
    outer = fig.add_gridspec(1, len(names), wspace=0.35)
    for k, name in enumerate(names):
        a, b = np.asarray(q[name], float), np.asarray(m[name], float)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        c = np.asarray(corpus[name], float)
        c = c[np.isfinite(c)]
        log = name != "PSEP"  # fluxes span decades: show log10(1 + value)
        if log:
            a, b, c = np.log10(1 + np.maximum(a, 0)), np.log10(1 + np.maximum(b, 0)), np.log10(1 + np.maximum(c, 0))
        allv = np.r_[a, b, c]
        if len(a) == 0:  # e.g. PSEP when no query has both polarities
            ax = fig.add_subplot(outer[k])
            ax.text(0.5, 0.5, f"{name}: no query/match pair\nwith a defined value", ha="center", va="center")
            ax.set_axis_off()
            continue
        lo, hi = float(allv.min()), float(np.percentile(allv, 99.5))
        bins = np.linspace(lo, max(hi, lo + 1e-9), 30)
        gs = outer[k].subgridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05, hspace=0.05)
        ax = fig.add_subplot(gs[1, 0])
        axx = fig.add_subplot(gs[0, 0], sharex=ax)
        axy = fig.add_subplot(gs[1, 1], sharey=ax)
        ax.hist2d(a, b, bins=[bins, bins], cmap="Greys", cmin=1)
        ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
        label = f"log10(1 + {name})" if log else name
        ax.set_xlabel(f"{label}, generated query")
        ax.set_ylabel(f"{label}, real match")
        axx.hist(a, bins=bins, density=True, color="lightblue", alpha=0.8)
        axx.hist(c, bins=bins, density=True, histtype="step", color="k")
        axy.hist(b, bins=bins, density=True, color="pink", alpha=0.8, orientation="horizontal")
        axy.hist(c, bins=bins, density=True, histtype="step", color="k", orientation="horizontal")
        axx.tick_params(labelbottom=False, labelleft=False)
        axy.tick_params(labelleft=False, labelbottom=False)
        r = correlations[name]
        axx.set_title(f"{name}: Pearson {r['pearson']:.2f}, Spearman {r['spearman']:.2f}\n(paper {r['paper_pearson']:.2f} / {r['paper_spearman']:.2f})", fontsize=8)
    return reporting.save_figure(fig, path, dpi=110)


@dataclass
class ReportInputs:
    """What the report's figures and query table are made from (one run of
    :func:`helioforge.interrogate.pipeline.interrogate`).

    Attributes
    ----------
    metrics : the run's metrics (:func:`helioforge.interrogate.evaluate.run_metrics`); the
        histogram titles quote its ``correlations``.
    queries : the evaluation's queries (:func:`helioforge.interrogate.evaluate.query_set`):
        ``z``, ``q_images``, ``scores``, ``rows``, ``m_images``, ``q_params``, ``m_params``,
        ``corpus_params``.
    corpus : the real corpus searched. generator : the trained generator.
    directions : the fitted SVM latent directions. profile : the run's profile.
    direction_samples : the ``direction_samples.npz`` the directions were fitted on (``z`` and
        the parameters of G(z)), for the latent projection (paper Fig. 4).
    """

    metrics: dict[str, Any]
    queries: dict[str, Any]
    corpus: Corpus
    generator: Generator
    directions: LatentDirections
    profile: Profile
    direction_samples: Path


def write_html(report_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Render ``index.html`` (:data:`TEMPLATE`) in ``report_dir`` from the metrics dictionary.

    Parameters
    ----------
    report_dir : str or Path
        Report folder.
    metrics : dict
        The run's metrics (:func:`~helioforge.interrogate.evaluate.run_metrics`, plus the timings).

    Returns
    -------
    Path
        ``report_dir/index.html``.

    Raises
    ------
    jinja2.UndefinedError
        When ``metrics`` lacks a number the page shows.
    KeyError
        When ``metrics`` lacks ``simsiam`` or ``helioforge``.
    """
    fm = metrics["simsiam"].get("final_metrics", {})
    sim = ", ".join(f"{k} {v:.3f}" for k, v in fm.items() if isinstance(v, float)) or "n/a"
    if metrics["simsiam"].get("collapse_reference_z_std"):
        sim += f" (no collapse ⇔ z_std ≈ 1/√d = {metrics['simsiam']['collapse_reference_z_std']:.3f})"
    return reporting.write_html(Path(report_dir) / "index.html", TEMPLATE, m=metrics, eps=metrics.get("eps_max", 3),
                                sim=html.escape(sim), version=metrics["helioforge"])


def write_report(report_dir: str | Path, inputs: ReportInputs) -> Path:
    """Write the figures (paper Figs. 2, 4, 5, 6) and ``queries.ecsv`` into ``report_dir``; the
    HTML page is rendered by :func:`write_html` once the run's timings are known.

    Parameters
    ----------
    report_dir : str or Path
        Report folder (created when missing).
    inputs : ReportInputs
        The run's queries, corpus, generator, directions and profile.

    Returns
    -------
    Path
        ``report_dir``.
    """
    res, corpus, generator, directions, profile = inputs.queries, inputs.corpus, inputs.generator, inputs.directions, inputs.profile
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    gen_fn = lambda z: generate(generator, np.asarray(z, np.float32))  # noqa: E731
    params_fn = params_of_latent(generator, profile)
    rows = profile.interrogate.zoo_rows
    fig_zoo(res["q_images"][: rows * rows], report_dir / "fig2_zoo.png", rows)
    with np.load(inputs.direction_samples) as samples:
        z, params = samples["z"], {k: samples[k] for k in samples.files if k != "z"}
    fig_latent_projection(z, params, directions, gen_fn, report_dir / "fig4_latent_projection.png")
    eps = np.linspace(-profile.directions.eps_max, profile.directions.eps_max, profile.directions.n_eps)
    fig_traversal(gen_fn, params_fn, directions, generator.latent_dim, eps, report_dir / "fig5_traversal.png")
    fig_retrieval(res, corpus.table, report_dir / "fig6_retrieval.png")
    fig_histograms(res["q_params"], res["m_params"], res["corpus_params"], inputs.metrics["correlations"],
                   report_dir / "fig6_histograms.png")

    t = Table()
    t["query"] = np.arange(len(res["z"]))
    for name in ("TUF", "TPF", "TNF", "PSEP", "R", "tilt", "leading_sign"):
        t[f"{name}_query"] = res["q_params"][name]
        t[f"{name}_match"] = res["m_params"][name]
    t["match_row"] = res["rows"][:, 0]
    t["match_cosine"] = res["scores"][:, 0]
    for col in ("file", "HARPNUM", "T_REC", "crop"):
        t[f"match_{col}"] = corpus.table[col][res["rows"][:, 0]]
    with atomic_path(report_dir / "queries.ecsv") as tmp:
        t.write(tmp, format="ascii.ecsv", overwrite=True)
    return report_dir
