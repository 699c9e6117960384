"""Report of an interrogator run: figures like the paper's and an HTML page.

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
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.table import Table  # noqa: E402
from jinja2 import Template  # noqa: E402

from helioforge.io import atomic_path, write_text  # noqa: E402

__all__ = ["write_report", "write_html", "fig_zoo", "fig_latent_projection", "fig_traversal",
           "fig_retrieval", "fig_histograms"]

CMAP = "gray"
TRAVERSAL_ROWS = (
    ("TUF", "TUF", ()),
    ("TUF | R", "TUF", ("R",)),
    ("PSEP", "PSEP", ()),
    ("PSEP | polarity", "PSEP", ("polarity",)),
    ("PSEP | polarity, R", "PSEP", ("polarity", "R")),
)


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _show(ax: plt.Axes, img: np.ndarray, title: str | None = None) -> None:
    ax.imshow(np.squeeze(img), cmap=CMAP, vmin=-1, vmax=1, origin="lower", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def fig_zoo(images: np.ndarray, path: Path, rows: int = 10) -> Path:
    """Grid of rows×rows generated images (n ≥ rows², 1, N, N) in [-1, 1] (paper Fig. 2)."""
    fig, axes = plt.subplots(rows, rows, figsize=(rows, rows))
    for ax, img in zip(axes.ravel(), images):
        _show(ax, img)
    fig.suptitle("GAN-generated magnetograms (Br / 1000 G, gray: -1 … +1)", fontsize=10)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return _save(fig, path)


def fig_latent_projection(z: np.ndarray, params: dict[str, np.ndarray], directions, generate_fn, path: Path,
                          n_thumbs: int = 14) -> Path:
    """Paper Fig. 4: 2-D projection z'₁ = z₁, z'₂ = Σ_{i≥2} nᵢzᵢ/n₂ with the SVM line and thumbnails."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from helioforge.interrogate.directions import direction_labels, project_2d

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
    return _save(fig, path)


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
    annotated with the parameter being moved (and R)."""
    from helioforge.interrogate.directions import conditional_direction, traverse

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
    return _save(fig, path)


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
    """Paper Fig. 6 (left): bipolar queries of opposite polarity and their nearest real matches."""
    idx = _bipolar_pair(res["q_params"])
    fig, axes = plt.subplots(len(idx), 2, figsize=(5, 2.6 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        row = int(res["rows"][i, 0])
        _show(axes[r, 0], res["q_images"][i], f"query #{i} (leading {'+' if res['q_params']['leading_sign'][i] > 0 else '−'})")
        t = corpus_table[row]
        where = f"HARP {t['HARPNUM']}" if t["HARPNUM"] >= 0 else f"tile {t['crop']}"
        _show(axes[r, 1], res["m_images"][i], f"match: {where}\n{str(t['T_REC'])[:16]}  cos={res['scores'][i, 0]:.3f}")
    return _save(fig, path)


def fig_histograms(q: dict[str, np.ndarray], m: dict[str, np.ndarray], corpus: dict[str, np.ndarray],
                   correlations: dict[str, dict[str, float]], path: Path) -> Path:
    """Paper Fig. 6 (right): 2-D histogram of each parameter for queries vs matches, with
    marginals of the queries (light blue), the matches (pink) and the whole corpus (black).
    Flux-type parameters are shown as log10(1 + value); the correlations quoted are those of
    the raw values (as in the paper)."""
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
    return _save(fig, path)


HTML = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>helioforge interrogator report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
.small{color:#666;font-size:90%}
</style></head><body>
<h1>Generative interrogator on real SHARP magnetograms</h1>
<p class="small">helioforge {{ m.helioforge }} · profile <b>{{ m.profile }}</b> · images {{ m.image_size }}×{{ m.image_size }} ·
method: Chatterjee, Muñoz-Jaramillo &amp; Malanushenko (2025), arXiv:2502.05351</p>

{% if m.health %}<h2>Health of the models</h2>
<table><tr><th>check</th><th>value</th><th>limit</th><th>ok</th><th>meaning</th></tr>
{% for c in m.health.checks %}<tr><td>{{ c.name }}</td><td>{{ "%.3f"|format(c.value) }}</td><td>{{ "%.3f"|format(c.limit) }}</td>
<td>{{ "yes" if c.ok else "<b>NO</b>" }}</td><td>{{ c.meaning }}</td></tr>{% endfor %}</table>
{% if m.health.unusable %}<p><b>Unusable: {{ m.health.unusable|join(", ") }}</b> — the numbers below do not measure retrieval.</p>{% endif %}{% endif %}

<h2>Real corpus</h2>
<p><b>Database: {{ m.corpus.sources }}</b> — {{ m.corpus.n_patches }} real patches: {{ m.corpus.n_sharp }} SHARP Br frames of
{{ m.corpus.n_sharp_regions }} regions (HARPs) and {{ m.corpus.n_fulldisk_tiles }} tiles of HMI full-disk
magnetograms (within 60° of disk centre, B<sub>los</sub>/μ); {{ "%.0f%%"|format(100*m.corpus.active_fraction) }} of the patches are active.
HARPs held out of GAN and SimSiam training: {{ m.corpus.held_out_harps|join(", ") or "none" }}.
{{ m.corpus.n_skipped }} input file(s) skipped:</p>
<ul>{% for s in m.corpus.skipped %}<li><code>{{ s.file }}</code>: {{ s.reason }}</li>{% endfor %}</ul>
{% if m.corpus.warnings %}<p>Read with repairs:</p><ul>{% for w in m.corpus.warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
{% set u = m.corpus.usflux_check %}{% if u and u.n %}
<p>Check of the flux measure on the {{ u.n }} real SHARP Br frames: TUF in Mx over the HARP region tracks the header USFLUX with
Spearman ρ = <b>{{ "%.3f"|format(u.spearman) }}</b> (region from {{ u.region_from }}; over all pixels of the box ρ = {{ "%.3f"|format(u.spearman_all_pixels) }}).</p>
{% set r = u.get("R_schrijver_vs_R_VALUE") %}{% if r and r.n %}<p>Schrijver's (2007) R computed on each Br patch as SHARP computes <code>R_VALUE</code>
(binned to ≈1.46 Mm, ±150 G masks, 3×3 dilation, 15 Mm FWHM Gaussian) against the header <code>R_VALUE</code> on {{ r.n }} frames: Spearman ρ =
<b>{{ "%.2f"|format(r.spearman) }}</b> [{{ "%.2f"|format(r.spearman_ci[0]) }}, {{ "%.2f"|format(r.spearman_ci[1]) }}]; baseline log USFLUX vs R_VALUE
ρ = {{ "%.2f"|format(u.log_USFLUX_vs_R_VALUE.spearman) }} [{{ "%.2f"|format(u.log_USFLUX_vs_R_VALUE.spearman_ci[0]) }}, {{ "%.2f"|format(u.log_USFLUX_vs_R_VALUE.spearman_ci[1]) }}].
The <i>R</i> of the tables below is the paper's definition (on the N×N image, no Gaussian, no log), not <code>R_VALUE</code>.</p>{% endif %}{% endif %}

<h2>Query ↔ real-match correlations, like for like with the paper</h2>
<p>{{ m.like_for_like }}: {{ m.n_active_queries }} of {{ m.n_queries }} generated queries are active. Intervals: bootstrap 95 % over queries.
Baselines on the same queries and database: <i>shuffled</i> (a random real patch), <i>activity</i> (a random patch of the
query's activity class), <i>oracle</i> (the patch nearest in the five parameters: the ceiling).</p>
<table><tr><th>parameter</th><th>Pearson [95 %]</th><th>Spearman [95 %]</th><th>paper P / S</th><th>shuffled S</th><th>activity S</th><th>oracle S</th><th>n</th></tr>
{% for name, r in m.correlations.items() %}<tr><td>{{ name }}</td>
<td>{{ "%.2f"|format(r.pearson) }} [{{ "%.2f"|format(r.pearson_ci[0]) }}, {{ "%.2f"|format(r.pearson_ci[1]) }}]</td>
<td><b>{{ "%.2f"|format(r.spearman) }}</b> [{{ "%.2f"|format(r.spearman_ci[0]) }}, {{ "%.2f"|format(r.spearman_ci[1]) }}]</td>
<td>{{ "%.2f"|format(r.paper_pearson) }} / {{ "%.2f"|format(r.paper_spearman) }}</td>
<td>{{ "%.2f"|format(r.get("shuffled_spearman", 0)) }}</td><td>{{ "%.2f"|format(r.get("activity_spearman", 0)) }}</td>
<td>{{ "%.2f"|format(r.get("oracle_spearman", 0)) }}</td><td>{{ r.n }}</td></tr>{% endfor %}</table>
{% set h = m.held_out_correlations %}<p><b>Regions held out of training</b> (database: SHARP frames of HARPs {{ m.corpus.held_out_harps|join(", ") }};
active queries): Spearman TUF {{ "%.2f"|format(h.TUF.spearman) }} [{{ "%.2f"|format(h.TUF.spearman_ci[0]) }}, {{ "%.2f"|format(h.TUF.spearman_ci[1]) }}]
(shuffled {{ "%.2f"|format(h.TUF.get("shuffled_spearman", 0)) }}), R {{ "%.2f"|format(h.R.spearman) }}, PSEP {{ "%.2f"|format(h.PSEP.spearman) }}.</p>
{% set q = m.real_held_out_queries %}{% if q.n_queries %}<p><b>Real queries from unseen regions</b>: the {{ q.n_queries }} SHARP frames of the held-out HARPs
searched against the other {{ q.n_database }} patches: {{ "%.0f%%"|format(100*q.match_active_fraction) }} of their nearest matches are active
(database {{ "%.0f%%"|format(100*q.database_active_fraction) }}); Spearman TUF query ↔ match {{ "%.2f"|format(q.TUF.spearman) }}
[{{ "%.2f"|format(q.TUF.spearman_ci[0]) }}, {{ "%.2f"|format(q.TUF.spearman_ci[1]) }}] (shuffled {{ "%.2f"|format(q.TUF_shuffled.spearman) }}).
With so few frames the interval is wide: read it as a check, not a measurement.</p>{% endif %}
<h3>All splits (Spearman ρ [95 %])</h3>
<table><tr><th>database</th><th>queries</th><th>method</th><th>n db</th><th>n q</th>{% for p in ["TUF","PSEP","R","TPF","TNF"] %}<th>{{ p }}</th>{% endfor %}</tr>
{% for r in m.retrieval_table %}<tr><td>{{ r.database }}</td><td>{{ r.queries }}</td><td>{{ r.method }}</td><td>{{ r.n_database }}</td><td>{{ r.n_queries }}</td>
{% for p in ["TUF","PSEP","R","TPF","TNF"] %}<td>{{ "%.2f"|format(r[p].spearman) }} [{{ "%.2f"|format(r[p].spearman_ci[0]) }}, {{ "%.2f"|format(r[p].spearman_ci[1]) }}]</td>{% endfor %}</tr>{% endfor %}</table>
<p class="small">Mean cosine score of the best match {{ "%.3f"|format(m.match_cosine.mean) }}; {{ m.n_unique_matches }} distinct real patches retrieved.
The paper's R Spearman (0.76) is quoted from its text.</p>

<h2>Latent directions (linear SVMs on {{ m.n_direction_samples }} generated samples, 70/30 split)</h2>
<table><tr><th>direction</th><th>validation accuracy</th><th>train accuracy</th><th>monotonicity: mean per-base Spearman ρ(ε, p)</th><th>pooled ρ</th><th>bases with ρ&gt;0</th></tr>
{% for name, acc in m.svm_accuracy.items() %}<tr><td>{{ name }}</td><td>{{ "%.3f"|format(acc) }}</td><td>{{ "%.3f"|format(m.svm_train_accuracy[name]) }}</td>
<td>{{ "%.2f"|format(m.monotonicity[name].mean_rho) }}</td><td>{{ "%.2f"|format(m.monotonicity[name].pooled_rho) }}</td><td>{{ "%.0f%%"|format(100*m.monotonicity[name].frac_positive) }}</td></tr>{% endfor %}</table>
{% for name, why in m.svm_skipped.items() %}<p><b>{{ name }} direction not fitted</b>: {{ why }}.</p>{% endfor %}
{% set c = m.conditioning_TUF_given_R %}
{% if c.get("skipped") %}<p>Conditioning TUF on R not measured: {{ c.skipped }}.</p>{% else %}
<p>Conditioning TUF on R (n̂<sub>TUF</sub> with n̂<sub>R</sub> projected out, cos = {{ "%.2f"|format(c.cosine_plain_conditioned) }}):
the mean change of R between ε = −{{ eps }} and +{{ eps }} goes from {{ "%.1f"|format(c.dR_plain) }} to {{ "%.1f"|format(c.dR_conditioned) }} kG·px
(<b>{{ "%.0f%%"|format(100*c.R_change_reduction) }} reduction</b>), while the change of TUF ({{ "%.0f"|format(c.dTUF_plain) }} → {{ "%.0f"|format(c.dTUF_conditioned) }} kG·px) keeps {{ "%.0f%%"|format(100*c.TUF_change_kept) }} of its size.</p>{% endif %}

<h2>Figures</h2>
<h3>Generated zoo (paper Fig. 2)</h3><img src="fig2_zoo.png" alt="zoo">
<h3>Latent projection with the decision line (paper Fig. 4)</h3><img src="fig4_latent_projection.png" alt="projection">
<h3>Traversals with and without conditioning (paper Fig. 5)</h3><img src="fig5_traversal.png" alt="traversal">
<h3>Queries and real matches (paper Fig. 6)</h3><img src="fig6_retrieval.png" alt="retrieval" style="max-width:420px"><br>
<img src="fig6_histograms.png" alt="histograms">

<h2>Training</h2>
<p>GAN: kept epoch {{ m.gan.selected_epoch }} of {{ m.gan.epochs }} (discriminator accuracy {{ "%.3f"|format(m.gan.d_accuracy) }}, closest to chance).
SimSiam: {{ sim }}.</p>
{% if m.get("training_s") %}<h2>Training time when the models were made (s)</h2><table><tr>{% for k in m.training_s %}<th>{{ k }}</th>{% endfor %}</tr>
<tr>{% for v in m.training_s.values() %}<td>{{ v }}</td>{% endfor %}</tr></table>{% endif %}
{% if m.get("timings_s") %}<h2>This run (s)</h2><table><tr>{% for k in m.timings_s %}<th>{{ k }}</th>{% endfor %}</tr>
<tr>{% for v in m.timings_s.values() %}<td>{{ v }}</td>{% endfor %}</tr></table>{% endif %}
<p class="small">Per-query parameters and matches: <a href="queries.ecsv">queries.ecsv</a>; all numbers: <a href="metrics.json">metrics.json</a>.
Parameters are on the {{ m.image_size }}×{{ m.image_size }} preprocessed images (B/1000 G, ±150 G threshold): fluxes in kG·pixel, PSEP in pixels.</p>
</body></html>
""")


def write_html(report_dir: Path, metrics: dict[str, Any]) -> Path:
    """Render ``index.html`` from the metrics dictionary."""
    fm = metrics["simsiam"].get("final_metrics", {})
    sim = ", ".join(f"{k} {v:.3f}" for k, v in fm.items() if isinstance(v, float)) or "n/a"
    if metrics["simsiam"].get("collapse_reference_z_std"):
        sim += f" (no collapse ⇔ z_std ≈ 1/√d = {metrics['simsiam']['collapse_reference_z_std']:.3f})"
    text = HTML.render(m=metrics, eps=metrics.get("eps_max", 3), sim=html.escape(sim))
    return write_text(Path(report_dir) / "index.html", text)


def write_report(report_dir: str | Path, metrics: dict[str, Any], res: dict[str, Any], corpus, generator,
                 directions, profile, ws) -> Path:
    """Write the figures and ``queries.ecsv`` into ``report_dir`` (the HTML page is rendered
    by :func:`write_html` once the run's timings are known)."""
    from helioforge.interrogate.gan import generate
    from helioforge.interrogate.pipeline import params_of_latent

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    gen_fn = lambda z: generate(generator, np.asarray(z, np.float32))  # noqa: E731
    params_fn = params_of_latent(generator, profile)
    rows = profile.interrogate.zoo_rows
    fig_zoo(res["q_images"][: rows * rows], report_dir / "fig2_zoo.png", rows)
    with np.load(ws.samples) as samples:
        z, params = samples["z"], {k: samples[k] for k in samples.files if k != "z"}
    fig_latent_projection(z, params, directions, gen_fn, report_dir / "fig4_latent_projection.png")
    eps = np.linspace(-profile.directions.eps_max, profile.directions.eps_max, profile.directions.n_eps)
    fig_traversal(gen_fn, params_fn, directions, generator.latent_dim, eps, report_dir / "fig5_traversal.png")
    fig_retrieval(res, corpus.table, report_dir / "fig6_retrieval.png")
    fig_histograms(res["q_params"], res["m_params"], res["corpus_params"], metrics["correlations"],
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
