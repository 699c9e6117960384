"""The evaluate stage of the interrogator: what the pipeline measures, and against what.

*Parameters of images* (:func:`image_params`, :func:`params_of_latent`): the physical parameters
of preprocessed or generated images with the profile's threshold and kernel (used by the SVM
directions, the queries and the report).

*Retrieval scored against chance*. The paper (Chatterjee et al. 2025, "Querying Generated Image
to Find Matches in Real Data") reports Pearson and Spearman correlations between the physical
parameters of 1000 generated queries and of their nearest real SHARP patch in SimSiam space.
This module computes the same correlations with their yardsticks, on the same queries in the
same run:

* ``simsiam``   the method: nearest patch by cosine similarity of SimSiam embeddings;
* ``shuffled``  a random real patch of the same database (what any retrieval must beat);
* ``activity``  a random real patch of the query's activity class (active / quiet): what a
  matcher that only knows "active or quiet" reaches on a mixed corpus;
* ``oracle``    the real patch nearest in the five parameters themselves (log flux, PSEP,
  log R, z-scored): the ceiling no image matcher can pass;

each with a bootstrap 95 % interval over queries, split by database (all patches, SHARP only,
full-disk tiles only, SHARP regions held out of training) and by query activity. The row
comparable with the paper is SHARP database × active queries ("like-for-like").

*Checks*: the flux measure against the SHARP header (:func:`usflux_check`), monotonicity and
conditioning of the latent directions (:func:`direction_metrics`), and the health of the models
(:func:`health_checks`: mode collapse, embedding collapse, SVMs at chance).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
from scipy.stats import pearsonr, rankdata, spearmanr
from sklearn.neighbors import NearestNeighbors

from helioforge.data.sharp import harp_region_mask, read_sharp_folder
from helioforge import __version__
from helioforge.interrogate.config import Profile
from helioforge.interrogate.data import SOURCE_SHARP, SOURCE_TILE, Corpus, holdout_harps
from helioforge.interrogate.directions import LatentDirections, conditioning_effect, monotonicity
from helioforge.interrogate.gan import Generator, generate
from helioforge.interrogate.retrieval import RetrievalIndex
from helioforge.interrogate.simsiam import embed
from helioforge.physics.params import compute_params, is_active, physical_params, schrijver_r
from helioforge.progress import track

__all__ = ["METHODS", "PAPER_CORRELATIONS", "CORRELATED_PARAMS", "correlation_ci", "nearest_rows", "baseline_rows",
           "retrieval_table", "like_for_like", "real_query_check", "image_params", "params_of_latent", "usflux_check",
           "direction_metrics", "query_set", "retrieval_metrics", "headline", "health_checks", "run_metrics"]

METHODS = ("simsiam", "shuffled", "activity", "oracle")
PARAMS = ("TUF", "PSEP", "R", "TPF", "TNF")

#: Pearson / Spearman correlations between generated queries and their real matches
#: (paper §Querying: TUF 0.78/0.79, PSEP 0.28/0.31, R 0.73/0.76 in the text, TPF 0.69/0.70, TNF 0.72/0.72).
PAPER_CORRELATIONS = {
    "TUF": (0.78, 0.79),
    "PSEP": (0.28, 0.31),
    "R": (0.73, 0.76),
    "TPF": (0.69, 0.70),
    "TNF": (0.72, 0.72),
}
CORRELATED_PARAMS = tuple(PAPER_CORRELATIONS)

#: Health limits: below them a model is unusable and the run stops instead of reporting numbers.
GAN_DIVERSITY_MIN = 0.2      # mean pairwise distance of generated images / that of real ones
SIMSIAM_STD_MIN_FACTOR = 0.5  # embedding std per dimension / (1/sqrt(d)); 0 is total collapse
SVM_CHANCE_MAX = 0.55        # validation accuracy at or below this is chance (two balanced classes)

log = logging.getLogger(__name__)


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(a, b).statistic), float(spearmanr(a, b).statistic)


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two (B, n) arrays (NaN for a constant row)."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(1) / den, np.nan)


def _percentiles(values: np.ndarray) -> list[float]:
    v = values[np.isfinite(values)]
    return [float(x) for x in np.percentile(v, [2.5, 97.5])] if len(v) else [float("nan")] * 2


def correlation_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Pearson and Spearman correlation of paired samples with percentile bootstrap 95 %
    intervals (resampling the pairs ``n_boot`` times; Spearman resamples keep the pairs' ranks
    in the whole sample).

    Parameters
    ----------
    a, b : (n,) paired values; pairs with a non-finite member are dropped.

    Returns
    -------
    dict with ``pearson``, ``spearman``, ``pearson_ci``, ``spearman_ci`` ([lo, hi]) and ``n``;
    NaN where fewer than 3 finite pairs or a constant sample.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    p, s = _corr(a, b)
    out = {"pearson": p, "spearman": s, "n": int(len(a)), "pearson_ci": [float("nan")] * 2,
           "spearman_ci": [float("nan")] * 2}
    if len(a) >= 3 and np.isfinite(p) and n_boot > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(a), size=(n_boot, len(a)))
        out["pearson_ci"] = _percentiles(_rowwise_pearson(a[idx], b[idx]))  # all resamples at once
        # Spearman: the resampled pairs keep their ranks in the whole sample (ranking once, the
        # usual shortcut; re-ranking every resample would only break the ties of repeated pairs)
        ka, kb = rankdata(a), rankdata(b)
        out["spearman_ci"] = _percentiles(_rowwise_pearson(ka[idx], kb[idx]))
    return out


def nearest_rows(query_vectors: np.ndarray, corpus_vectors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Corpus row of the highest cosine similarity among the ``candidates`` rows, for each query.

    Brute force: the databases here are small (the full index, FAISS, serves ``helioforge search``).

    Parameters
    ----------
    query_vectors : np.ndarray, shape (n, d)
        L2-normalised query embeddings.
    corpus_vectors : np.ndarray, shape (m, d)
        L2-normalised corpus embeddings.
    candidates : np.ndarray of int, shape (c,)
        Corpus rows allowed as matches (non-empty).

    Returns
    -------
    np.ndarray of int, shape (n,)
        The matched corpus row of each query.

    Raises
    ------
    ValueError
        From :func:`numpy.argmax` if ``candidates`` is empty.
    """
    candidates = np.asarray(candidates)
    scores = np.asarray(query_vectors, np.float32) @ np.asarray(corpus_vectors, np.float32)[candidates].T
    return candidates[np.argmax(scores, axis=1)]


def _param_space(params: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 5) features for the oracle: log10(1 + flux-type parameters), PSEP as is."""
    cols = []
    for name in PARAMS:
        v = np.asarray(params[name], float)
        cols.append(v if name == "PSEP" else np.log10(1.0 + np.clip(v, 0, None)))
    return np.nan_to_num(np.stack(cols, axis=1), nan=0.0)


def baseline_rows(q_params: dict[str, np.ndarray], c_params: dict[str, np.ndarray], q_active: np.ndarray,
                  c_active: np.ndarray, candidates: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Matched corpus rows of the three baselines for each query, drawn from ``candidates``.

    ``activity`` falls back to ``shuffled`` for a query whose activity class has no candidate.
    ``oracle`` is the nearest candidate in the z-scored features log10(1 + TUF, R, TPF, TNF) and PSEP.

    Parameters
    ----------
    q_params, c_params : dict of str to np.ndarray
        Parameters (:data:`PARAMS` keys) of the n queries and of all corpus rows (:func:`image_params`).
    q_active : np.ndarray of bool, shape (n,)
        Activity class of each query.
    c_active : np.ndarray of bool, shape (m,)
        Activity class of each corpus row.
    candidates : np.ndarray of int
        Corpus rows to draw from (non-empty).
    seed : int
        Seed of the random draws.

    Returns
    -------
    dict of str to np.ndarray
        ``{"shuffled": rows, "activity": rows, "oracle": rows}``, each (n,) corpus rows.
    """
    rng = np.random.default_rng(seed)
    candidates = np.asarray(candidates)
    n = len(q_active)
    shuffled = candidates[rng.integers(0, len(candidates), n)]
    activity = shuffled.copy()
    for flag in (True, False):
        pool = candidates[np.asarray(c_active)[candidates] == flag]
        sel = np.asarray(q_active) == flag
        if len(pool) and sel.any():
            activity[sel] = pool[rng.integers(0, len(pool), int(sel.sum()))]
    feats_c = _param_space(c_params)
    mean, std = feats_c[candidates].mean(0), feats_c[candidates].std(0) + 1e-12
    nn = NearestNeighbors(n_neighbors=1).fit((feats_c[candidates] - mean) / std)
    oracle = candidates[nn.kneighbors((_param_space(q_params) - mean) / std, return_distance=False)[:, 0]]
    return {"shuffled": shuffled, "activity": activity, "oracle": oracle}


def retrieval_table(q_vectors: np.ndarray, c_vectors: np.ndarray, q_params: dict[str, np.ndarray],
                    c_params: dict[str, np.ndarray], q_active: np.ndarray, c_active: np.ndarray,
                    databases: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """The split table: for each database (name → candidate corpus rows) × query set (all /
    active / quiet) × method, the correlation of every parameter with its interval.

    Empty databases and query sets of fewer than 3 queries are left out.

    Parameters
    ----------
    q_vectors, c_vectors : np.ndarray, shapes (n, d) and (m, d)
        L2-normalised SimSiam embeddings of the queries and of the corpus.
    q_params, c_params : dict of str to np.ndarray
        Parameters of the queries (n,) and of the corpus (m,) (:func:`image_params`).
    q_active, c_active : np.ndarray of bool, shapes (n,) and (m,)
        Activity class of queries and corpus rows.
    databases : dict of str to np.ndarray
        Database name → candidate corpus rows.
    n_boot : int
        Bootstrap resamples of each interval (:func:`correlation_ci`).
    seed : int
        Seed of the baselines and the bootstrap.

    Returns
    -------
    list of dict
        Rows ``{database, queries, method, n_database, n_queries, <param>: correlation_ci dict}`` for
        each param of :data:`PARAMS`; ``simsiam`` rows also have ``match_active_fraction``.

    References
    ----------
    Chatterjee et al. (2025), Results, "Querying Generated Image to Find Matches in Real Data".
    """
    q_active = np.asarray(q_active, bool)
    query_sets = {"all": np.ones(len(q_active), bool), "active": q_active, "quiet": ~q_active}
    rows = []
    for db_name, cand in databases.items():
        cand = np.asarray(cand)
        if len(cand) == 0:
            continue
        matched = {"simsiam": nearest_rows(q_vectors, c_vectors, cand),
                   **baseline_rows(q_params, c_params, q_active, c_active, cand, seed)}
        for q_name, sel in query_sets.items():
            if sel.sum() < 3:
                continue
            for method in METHODS:
                m_rows = matched[method][sel]
                row = {"database": db_name, "queries": q_name, "method": method, "n_database": int(len(cand)),
                       "n_queries": int(sel.sum())}
                for name in PARAMS:
                    row[name] = correlation_ci(np.asarray(q_params[name])[sel], np.asarray(c_params[name])[m_rows],
                                               n_boot, seed)
                if method == "simsiam":
                    row["match_active_fraction"] = float(np.mean(np.asarray(c_active)[m_rows]))
                rows.append(row)
    return rows


def like_for_like(table: list[dict[str, Any]], database: str = "sharp", queries: str = "active") -> dict[str, dict]:
    """``{method: row}`` of the table at ``database`` × ``queries`` (default: the paper's setting).

    Parameters
    ----------
    table : list of dict
        Output of :func:`retrieval_table`.
    database, queries : str
        The database and query set to pick (default SHARP database, active queries).

    Returns
    -------
    dict of str to dict
        Method name → row; empty when that cell is absent from the table.
    """
    return {r["method"]: r for r in table if r["database"] == database and r["queries"] == queries}


def real_query_check(q_vectors: np.ndarray, c_vectors: np.ndarray, q_tuf: np.ndarray, c_params: dict[str, np.ndarray],
                     c_active: np.ndarray, candidates: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Real patches of regions *not* in the database as queries (paper claim of retrieval that
    generalises): the fraction whose nearest match is an active patch, and Spearman ρ between
    the query's and the match's TUF (with interval), beside the shuffled baseline.

    Parameters
    ----------
    q_vectors : np.ndarray, shape (n, d)
        L2-normalised embeddings of the real query patches.
    c_vectors : np.ndarray, shape (m, d)
        L2-normalised embeddings of the corpus.
    q_tuf : np.ndarray, shape (n,)
        TUF of the queries (same units as ``c_params["TUF"]``).
    c_params : dict of str to np.ndarray
        Corpus parameters (m,); only ``TUF`` is used.
    c_active : np.ndarray of bool, shape (m,)
        Activity class of the corpus rows.
    candidates : np.ndarray of int
        Corpus rows of the database.
    n_boot, seed : int
        Bootstrap resamples and seed (:func:`correlation_ci`; the seed also draws the shuffled baseline).

    Returns
    -------
    dict
        ``n_queries``, ``n_database``, ``match_active_fraction``, ``database_active_fraction``,
        ``TUF`` and ``TUF_shuffled`` (:func:`correlation_ci` dicts); only ``{"n_queries": 0}`` when
        there is no query or no candidate.
    """
    if len(q_vectors) == 0 or len(candidates) == 0:
        return {"n_queries": 0}
    rows = nearest_rows(q_vectors, c_vectors, candidates)
    rng = np.random.default_rng(seed)
    shuffled = np.asarray(candidates)[rng.integers(0, len(candidates), len(rows))]
    c_tuf = np.asarray(c_params["TUF"])
    return {"n_queries": int(len(rows)), "n_database": int(len(candidates)),
            "match_active_fraction": float(np.mean(np.asarray(c_active)[rows])),
            "database_active_fraction": float(np.mean(np.asarray(c_active)[candidates])),
            "TUF": correlation_ci(q_tuf, c_tuf[rows], n_boot, seed),
            "TUF_shuffled": correlation_ci(q_tuf, c_tuf[shuffled], n_boot, seed)}


# ----------------------------------------------------------------------------- parameters of images
def image_params(images: np.ndarray | torch.Tensor, profile: Profile) -> dict[str, np.ndarray]:
    """Physical parameters of preprocessed images with the profile's threshold and kernel.

    Parameters
    ----------
    images : (n, 1, N, N) images in units of ``profile.data.clip_gauss`` (B / 1000 G).
    profile : gives the threshold (``params.threshold_gauss / data.clip_gauss``) and the
        dilation kernel of R (:meth:`~helioforge.interrogate.config.ParamConfig.dilation_px`).

    Returns
    -------
    dict name → (n,) NumPy array (:data:`helioforge.physics.params.PARAM_NAMES`; fluxes in
    1000 G × pixels of the N×N grid, PSEP in pixels, tilt in degrees).
    """
    n = int(np.asarray(images.shape)[-1])
    out = compute_params(
        images,
        threshold=profile.params.threshold_gauss / profile.data.clip_gauss,
        dilation_px=profile.params.dilation_px(n),
    )
    return {k: v.cpu().numpy() for k, v in out.items()}


def params_of_latent(generator: Generator, profile: Profile, chunk: int = 1000) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The function z (M, latent_dim) → :func:`image_params` of G(z).

    Images are generated and measured ``chunk`` at a time (M = 10⁴ images of 128² would
    otherwise hold ~650 MB at once).

    Parameters
    ----------
    generator : Generator
        The trained GAN generator.
    profile : Profile
        Gives the threshold and kernel of :func:`image_params`.
    chunk : int
        Images generated and measured at once.

    Returns
    -------
    callable
        ``fn(z)`` with z an array (M, latent_dim), returning a dict name → (M,) array
        (units of :func:`image_params`).
    """

    def fn(z: np.ndarray) -> dict[str, np.ndarray]:
        z = np.asarray(z, dtype=np.float32)
        starts = range(0, len(z), chunk)
        if len(z) > chunk:
            starts = track(starts, f"generating + measuring {len(z)} images", unit="chunk", leave=False)
        parts = [image_params(generate(generator, z[i : i + chunk], progress=False), profile) for i in starts]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    return fn


# ----------------------------------------------------------------------------- the flux measure
def usflux_check(profile: Profile) -> dict[str, Any]:
    """Spearman ρ between TUF (Mx, over the HARP region) and the header USFLUX on the SHARP
    frames of the profile's folders (expected ≥ 0.9). Also gives ρ for TUF over all pixels,
    how the HARP region was found for each frame, and Schrijver's R against the header
    ``R_VALUE`` (with log USFLUX as the baseline).

    Parameters
    ----------
    profile : Profile
        Gives the SHARP folders (``data.sharp_paths()``), ``params.threshold_gauss`` [G] and
        ``params.r_kernel_mm`` [Mm].

    Returns
    -------
    dict
        ``n``, ``spearman``, ``spearman_all_pixels``, ``region_from`` (region source → count),
        ``R_schrijver_vs_R_VALUE`` and ``log_USFLUX_vs_R_VALUE`` (:func:`correlation_ci` dicts);
        with fewer than 3 frames with USFLUX only ``n``, ``spearman`` (NaN) and ``note``.
    """
    sharp_log = logging.getLogger("helioforge.data.sharp")
    level = sharp_log.level
    sharp_log.setLevel(logging.ERROR)  # the corpus step has already reported these files
    try:
        patches = [p for folder in profile.data.sharp_paths() if folder.is_dir() for p in read_sharp_folder(folder)[0]]
    finally:
        sharp_log.setLevel(level)
    r_ours, r_header, flux_baseline = [], [], []
    for p in patches:  # Schrijver's R on the whole patch (as SHARP computes R_VALUE) vs the header
        if p.r_value is not None and np.isfinite(p.r_value):
            r_ours.append(schrijver_r(p.Br, p.pixel_size_mm, profile.params.threshold_gauss)["R_schrijver_sharp"])
            r_header.append(p.r_value)
            flux_baseline.append(np.log10(p.usflux) if p.usflux else float("nan"))
    us, region, every, sources = [], [], [], []
    for p in patches:
        if p.usflux is None or not np.isfinite(p.usflux):
            continue
        mask, source = harp_region_mask(p, profile.params.threshold_gauss)
        kw = dict(threshold_gauss=profile.params.threshold_gauss, r_kernel_mm=profile.params.r_kernel_mm)
        region.append(physical_params(p.Br, p.pixel_size_mm, mask=mask, schrijver=False, **kw)["TUF"])
        every.append(physical_params(p.Br, p.pixel_size_mm, schrijver=False, **kw)["TUF"])
        us.append(p.usflux)
        sources.append(source.split(" ")[0])
    if len(us) < 3:
        return {"n": len(us), "spearman": float("nan"), "note": "fewer than 3 SHARP frames with USFLUX"}
    return {
        "n": len(us),
        "spearman": float(spearmanr(region, us).statistic),
        "spearman_all_pixels": float(spearmanr(every, us).statistic),
        "region_from": {k: sources.count(k) for k in sorted(set(sources))},
        "R_schrijver_vs_R_VALUE": correlation_ci(np.asarray(r_ours, float), np.asarray(r_header, float), 2000),
        "log_USFLUX_vs_R_VALUE": correlation_ci(np.asarray(flux_baseline, float), np.asarray(r_header, float), 2000),
    }


# ----------------------------------------------------------------------------- the run's measurements
def direction_metrics(generator: Generator, directions: LatentDirections, profile: Profile) -> dict[str, Any]:
    """Monotonicity of every direction and the effect of conditioning TUF on R, on
    ``profile.directions.n_base`` base vectors drawn with ``profile.directions.seed + 1000``.

    The ε grid is ``n_eps`` points over [−eps_max, eps_max] of ``profile.directions``.

    Parameters
    ----------
    generator : Generator
        The trained generator (gives ``latent_dim``).
    directions : LatentDirections
        The fitted directions.
    profile : Profile
        Gives ``directions`` settings and the parameter measure (:func:`params_of_latent`).

    Returns
    -------
    dict
        ``{"monotonicity": ..., "conditioning_TUF_given_R": ...}``
        (:func:`~helioforge.interrogate.directions.monotonicity`,
        :func:`~helioforge.interrogate.directions.conditioning_effect`).

    Raises
    ------
    ValueError
        From :func:`~helioforge.interrogate.directions.conditioning_effect` if the TUF direction lies
        in the span of the R direction.
    """
    params_fn = params_of_latent(generator, profile)
    dcfg = profile.directions
    rng = np.random.default_rng(dcfg.seed + 1000)
    z_base = rng.standard_normal((dcfg.n_base, generator.latent_dim))
    eps = np.linspace(-dcfg.eps_max, dcfg.eps_max, dcfg.n_eps)
    mono = monotonicity(z_base, directions, params_fn, eps)
    cond = conditioning_effect(z_base, directions, params_fn, dcfg.eps_max, "TUF", ("R",))
    return {"monotonicity": mono, "conditioning_TUF_given_R": cond}


def query_set(generator: Generator, simsiam, index: RetrievalIndex, corpus: Corpus, profile: Profile) -> dict[str, Any]:
    """The Q generated queries of the evaluation (``interrogate.n_queries`` latent vectors drawn
    with ``interrogate.seed``), their top-k real matches in the index and the parameters of
    queries, best matches and the whole corpus.

    Parameters
    ----------
    generator : Generator
        The trained generator.
    simsiam : SimSiam
        The trained embedding model (:func:`~helioforge.interrogate.simsiam.embed`).
    index : RetrievalIndex
        Index over the corpus rows.
    corpus : Corpus
        The corpus the index was built on.
    profile : Profile
        Gives ``interrogate.n_queries``, ``seed``, ``top_k`` and the parameter measure.

    Returns
    -------
    dict
        ``z`` (Q, latent_dim) float32, ``q_images`` (Q, 1, N, N), ``scores`` (cosine) and
        ``rows`` (Q, k), ``m_images`` (Q, 1, N, N) of the best matches, and ``q_params``,
        ``m_params``, ``corpus_params`` (:func:`image_params`).
    """
    icfg = profile.interrogate
    rng = np.random.default_rng(icfg.seed)
    z = rng.standard_normal((icfg.n_queries, generator.latent_dim)).astype(np.float32)
    q_images = generate(generator, z, progress=True)
    scores, rows = index.search(embed(simsiam, q_images), icfg.top_k)
    m_images = corpus.images[rows[:, 0]]
    return {"z": z, "q_images": q_images, "scores": scores, "rows": rows, "m_images": m_images,
            "q_params": image_params(q_images, profile), "m_params": image_params(m_images, profile),
            "corpus_params": image_params(corpus.images, profile)}


def retrieval_metrics(simsiam, corpus: Corpus, queries: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """The retrieval table of :func:`retrieval_table` over the databases all / SHARP / full-disk
    tiles / held-out SHARP regions, its like-for-like rows, and the real held-out frames as
    queries (:func:`real_query_check`, against the rows not held out).

    Parameters
    ----------
    simsiam : SimSiam
        The trained embedding model.
    corpus : Corpus
        The corpus (its ``source`` and ``HARPNUM`` columns define the databases).
    queries : dict
        Output of :func:`query_set`.
    profile : Profile
        Gives the activity threshold, ``gan.active_min_area``, the held-out HARPs and the bootstrap settings.

    Returns
    -------
    dict
        ``table``, ``like_for_like``, ``held_out`` (like-for-like on the held-out database),
        ``real_held_out_queries``, ``held_out_harps``, ``n_sharp_regions``, ``n_active_queries`` and
        ``corpus_active_fraction``.
    """
    icfg = profile.interrogate
    threshold = profile.params.threshold_gauss / profile.data.clip_gauss
    c_vec, q_vec = embed(simsiam, corpus.images), embed(simsiam, queries["q_images"])
    c_active = is_active(corpus.images, threshold, profile.gan.active_min_area)
    q_active = is_active(queries["q_images"], threshold, profile.gan.active_min_area)
    src = np.asarray(corpus.table["source"])
    held = holdout_harps(corpus, profile)
    is_held = np.isin(np.asarray(corpus.table["HARPNUM"], int), held)
    rows = np.arange(len(corpus))
    databases = {"all": rows, "sharp": rows[src == SOURCE_SHARP], "fulldisk_tile": rows[src == SOURCE_TILE],
                 "sharp_held_out": rows[is_held]}
    table = retrieval_table(q_vec, c_vec, queries["q_params"], queries["corpus_params"], q_active, c_active, databases,
                            icfg.n_bootstrap, icfg.seed)
    real = real_query_check(c_vec[is_held], c_vec, np.asarray(queries["corpus_params"]["TUF"])[is_held],
                            queries["corpus_params"], c_active, rows[~is_held], icfg.n_bootstrap, icfg.seed)
    sharp_harps = sorted({int(h) for h in np.asarray(corpus.table["HARPNUM"])[src == SOURCE_SHARP]})
    return {"table": table, "like_for_like": like_for_like(table), "held_out": like_for_like(table, "sharp_held_out"),
            "real_held_out_queries": real, "held_out_harps": held, "n_sharp_regions": len(sharp_harps),
            "n_active_queries": int(q_active.sum()), "corpus_active_fraction": float(c_active.mean())}


def headline(like: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The paper-comparable correlations (a :func:`like_for_like` row) of each of
    :data:`CORRELATED_PARAMS` with their interval, the three baselines' Spearman ρ and
    intervals, and the paper's values (``paper_pearson``, ``paper_spearman``).

    Parameters
    ----------
    like : dict of str to dict
        Method → row, as :func:`like_for_like`; NaN correlations when ``simsiam`` is absent.

    Returns
    -------
    dict of str to dict
        Per parameter: the :func:`correlation_ci` entries, ``paper_pearson``, ``paper_spearman`` and
        ``<baseline>_spearman`` / ``<baseline>_spearman_ci`` for the baselines present.

    References
    ----------
    Chatterjee et al. (2025), Results, "Querying Generated Image to Find Matches in Real Data".
    """
    out = {}
    sim = like.get("simsiam")
    for name in CORRELATED_PARAMS:
        r = sim[name] if sim else {"pearson": float("nan"), "spearman": float("nan"), "n": 0,
                                   "pearson_ci": [float("nan")] * 2, "spearman_ci": [float("nan")] * 2}
        out[name] = {**r, "paper_pearson": PAPER_CORRELATIONS[name][0], "paper_spearman": PAPER_CORRELATIONS[name][1],
                     **{f"{m}_spearman": like[m][name]["spearman"] for m in ("shuffled", "activity", "oracle") if m in like},
                     **{f"{m}_spearman_ci": like[m][name]["spearman_ci"] for m in ("shuffled", "activity", "oracle") if m in like}}
    return out


# ----------------------------------------------------------------------------- health of the models
def _pairwise_spread(images: np.ndarray, n: int = 200, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    x = x[rng.choice(len(x), size=min(n, len(x)), replace=False)]
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    return float(d[np.triu_indices(len(x), 1)].mean()) if len(x) > 1 else 0.0


def health_checks(q_images: np.ndarray, real_images: np.ndarray, sim_cfg: dict[str, Any], svm_accuracy: dict[str, float]) -> dict[str, Any]:
    """Mode collapse of the GAN, embedding collapse of SimSiam, SVM directions at chance.

    The GAN is unusable when the mean pairwise distance of generated images is below
    ``GAN_DIVERSITY_MIN`` (0.2) times that of real ones, SimSiam when its embedding std per
    dimension is below ``SIMSIAM_STD_MIN_FACTOR`` (half) of the reference (1/√d by default), the
    directions when every SVM validation accuracy is at or below ``SVM_CHANCE_MAX`` (0.55).

    Parameters
    ----------
    q_images : np.ndarray, shape (n, 1, N, N)
        Generated images (up to 200 are sampled).
    real_images : np.ndarray, shape (m, 1, N, N)
        Real corpus images.
    sim_cfg : dict
        SimSiam side-file JSON: ``final_metrics.z_std`` and ``collapse_reference_z_std`` or ``out_dim``.
    svm_accuracy : dict of str to float
        Validation accuracy of each SVM direction.

    Returns
    -------
    dict
        ``{"checks": [{name, ok, value, limit, model, meaning}], "unusable": [model names]}``.
    """
    checks = []
    ratio = _pairwise_spread(q_images) / max(_pairwise_spread(real_images), 1e-12)
    checks.append({"name": "GAN diversity (generated / real pairwise distance)", "value": ratio, "limit": GAN_DIVERSITY_MIN,
                   "ok": ratio >= GAN_DIVERSITY_MIN, "model": "GAN", "meaning": "mode collapse below the limit"})
    z_std = float((sim_cfg.get("final_metrics") or {}).get("z_std", float("nan")))
    ref = float(sim_cfg.get("collapse_reference_z_std") or (1.0 / np.sqrt(float(sim_cfg.get("out_dim", 100)))))
    checks.append({"name": "SimSiam embedding std per dimension", "value": z_std, "limit": SIMSIAM_STD_MIN_FACTOR * ref,
                   "ok": bool(z_std >= SIMSIAM_STD_MIN_FACTOR * ref), "model": "SimSiam",
                   "meaning": f"collapse below the limit (1/sqrt(d) = {ref:.3f} for a healthy embedding)"})
    for k, v in svm_accuracy.items():
        checks.append({"name": f"SVM {k} validation accuracy", "value": float(v), "limit": SVM_CHANCE_MAX,
                       "ok": float(v) > SVM_CHANCE_MAX, "model": "directions", "meaning": "at chance at or below the limit"})
    unusable = sorted({c["model"] for c in checks if not c["ok"] and c["model"] != "directions"})
    svm = [c for c in checks if c["model"] == "directions"]
    if svm and not any(c["ok"] for c in svm):
        unusable.append("directions")
    return {"checks": checks, "unusable": unusable}


# ----------------------------------------------------------------------------- the run's record
def run_metrics(*, profile: Profile, corpus: Corpus, corpus_report: dict[str, Any], gan_config: dict[str, Any],
                simsiam_config: dict[str, Any], directions: LatentDirections, direction_metrics: dict[str, Any],
                queries: dict[str, Any], retrieval: dict[str, Any], health: dict[str, Any]) -> dict[str, Any]:
    """The metrics dictionary of one run (``metrics.json``, the report's numbers).

    Parameters
    ----------
    corpus_report : the corpus step's report (skipped files, warnings, USFLUX check).
    gan_config, simsiam_config : the saved models' JSON side files (selected epoch, final metrics).
    direction_metrics, queries, retrieval : outputs of :func:`direction_metrics`,
        :func:`query_set` and :func:`retrieval_metrics`. health : :func:`health_checks`.
    """
    n_sharp = int(np.sum(corpus.table["source"] == SOURCE_SHARP))
    return {
        "helioforge": __version__,
        "profile": profile.name,
        "image_size": profile.data.image_size,
        "health": health,
        "corpus": {"n_patches": len(corpus), "n_sharp": n_sharp, "n_fulldisk_tiles": len(corpus) - n_sharp,
                   "n_sharp_regions": retrieval["n_sharp_regions"], "sources": "SHARP + full-disk tiles" if profile.data.use_fulldisk
                   else "SHARP only (as the paper)", "held_out_harps": retrieval["held_out_harps"],
                   "active_fraction": retrieval["corpus_active_fraction"],
                   "n_skipped": len(corpus_report["skipped"]), **corpus_report},
        "gan": {"selected_epoch": gan_config.get("selected_epoch"), "d_accuracy": gan_config.get("d_accuracy"),
                "epochs": profile.gan.epochs},
        "simsiam": {"final_metrics": simsiam_config.get("final_metrics", {}),
                    "collapse_reference_z_std": simsiam_config.get("collapse_reference_z_std")},
        "svm_accuracy": directions.accuracy,
        "svm_train_accuracy": directions.train_accuracy,
        "svm_skipped": directions.skipped,
        "n_direction_samples": profile.directions.n_samples,
        "eps_max": profile.directions.eps_max,
        **direction_metrics,
        "n_queries": profile.interrogate.n_queries,
        "match_cosine": {"mean": float(queries["scores"][:, 0].mean()), "min": float(queries["scores"][:, 0].min())},
        "n_unique_matches": int(len(np.unique(queries["rows"][:, 0]))),
        "n_active_queries": retrieval["n_active_queries"],
        "correlations": headline(retrieval["like_for_like"]),
        "like_for_like": "SHARP database, active generated queries (the paper searched SHARP patches)",
        "held_out_correlations": headline(retrieval["held_out"]),
        "real_held_out_queries": retrieval["real_held_out_queries"],
        "retrieval_table": retrieval["table"],
    }
