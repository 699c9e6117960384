"""How good is retrieval, against what it would be by chance: baselines, intervals, splits.

The paper (Chatterjee et al. 2025, "Querying Generated Image to Find Matches in Real Data")
reports Pearson and Spearman correlations between the physical parameters of 1000 generated
queries and of their nearest real SHARP patch in SimSiam space. This module computes the same
correlations with their yardsticks, on the same queries in the same run:

* ``simsiam``   the method: nearest patch by cosine similarity of SimSiam embeddings;
* ``shuffled``  a random real patch of the same database (what any retrieval must beat);
* ``activity``  a random real patch of the query's activity class (active / quiet): what a
  matcher that only knows "active or quiet" reaches on a mixed corpus;
* ``oracle``    the real patch nearest in the five parameters themselves (log flux, PSEP,
  log R, z-scored): the ceiling no image matcher can pass;

each with a bootstrap 95 % interval over queries, split by database (all patches, SHARP only,
full-disk tiles only, SHARP regions held out of training) and by query activity. The row
comparable with the paper is SHARP database × active queries ("like-for-like").
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

__all__ = ["METHODS", "correlation_ci", "nearest_rows", "baseline_rows", "retrieval_table", "like_for_like",
           "real_query_check"]

METHODS = ("simsiam", "shuffled", "activity", "oracle")
PARAMS = ("TUF", "PSEP", "R", "TPF", "TNF")


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
        from scipy.stats import rankdata

        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(a), size=(n_boot, len(a)))
        out["pearson_ci"] = _percentiles(_rowwise_pearson(a[idx], b[idx]))  # all resamples at once
        # Spearman: the resampled pairs keep their ranks in the whole sample (ranking once, the
        # usual shortcut; re-ranking every resample would only break the ties of repeated pairs)
        ka, kb = rankdata(a), rankdata(b)
        out["spearman_ci"] = _percentiles(_rowwise_pearson(ka[idx], kb[idx]))
    return out


def nearest_rows(query_vectors: np.ndarray, corpus_vectors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Corpus row of the highest cosine similarity (inputs L2-normalised, (n, d) and (m, d))
    among the ``candidates`` rows, for each query. Brute force: the databases here are small
    (the full index, FAISS, serves ``helioforge search``)."""
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

    Returns ``{"shuffled": rows, "activity": rows, "oracle": rows}``. ``activity`` falls back to
    ``shuffled`` for a query whose activity class has no candidate.
    """
    from sklearn.neighbors import NearestNeighbors

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

    Returns a list of rows ``{database, queries, method, n_database, n_queries, param: {...}}``.
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
    """``{method: row}`` of the table at ``database`` × ``queries`` (default: the paper's setting)."""
    return {r["method"]: r for r in table if r["database"] == database and r["queries"] == queries}


def real_query_check(q_vectors: np.ndarray, c_vectors: np.ndarray, q_tuf: np.ndarray, c_params: dict[str, np.ndarray],
                     c_active: np.ndarray, candidates: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Real patches of regions *not* in the database as queries (paper claim of retrieval that
    generalises): the fraction whose nearest match is an active patch, and Spearman ρ between
    the query's and the match's TUF (with interval), beside the shuffled baseline."""
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
