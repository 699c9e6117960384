"""Latent directions for physical parameters (Chatterjee et al. 2025, "Interpretable Generation").

1. Generate M images from z ~ N(0, I); compute TUF, PSEP, R and the leading polarity.
2. Label each z by whether its parameter exceeds the median (polarity: leading sign > 0).
3. Fit one linear SVM per parameter on 70 % of the samples; report accuracy on the other 30 %.
4. Keep the unit normal n̂ of each decision hyperplane: moving z → z + ε n̂ raises the parameter.

Conditional manipulation (paper, after Shen et al. 2019): the primal direction x is replaced by
its component orthogonal to the span of the condition normals A: x − A(AᵀA)⁻¹Aᵀx, renormalised.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.stats import spearmanr
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from helioforge.errors import ProductError
from helioforge.interrogate.config import DirectionsConfig
from helioforge.io import write_json
from helioforge.nn.checkpoint import read_json_product

__all__ = [
    "DIRECTION_PARAMS",
    "LatentDirections",
    "direction_labels",
    "fit_directions",
    "conditional_direction",
    "traverse",
    "monotonicity",
    "conditioning_effect",
    "project_2d",
]

log = logging.getLogger(__name__)

DIRECTION_PARAMS = ("TUF", "PSEP", "R", "polarity")


@dataclass
class LatentDirections:
    """Unit normals n̂ (latent_dim,) of the SVM boundaries and their fit statistics.

    normals : name → unit vector pointing to higher values (polarity: positive leading).
    offsets : name → b/|w|, the signed distance convention n̂·z + offset = 0 on the boundary.
    accuracy : name → validation accuracy (30 % hold-out).
    train_accuracy, medians, n_train, n_val : fit bookkeeping.
    skipped : name → why no direction could be fitted (e.g. the generator never produced
        both polarities, so PSEP and polarity are undefined for every sample).
    """

    normals: dict[str, np.ndarray]
    offsets: dict[str, float]
    accuracy: dict[str, float]
    train_accuracy: dict[str, float] = field(default_factory=dict)
    medians: dict[str, float] = field(default_factory=dict)
    n_train: dict[str, int] = field(default_factory=dict)
    n_val: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def has(self, *names: str) -> bool:
        """Whether every named direction was fitted (case-insensitive)."""
        have = {k.lower() for k in self.normals}
        return all(n.lower() in have for n in names)

    def get(self, name: str) -> np.ndarray:
        """Normal for ``name`` (case-insensitive: tuf, psep, r, polarity).

        Parameters
        ----------
        name : str
            Direction name, matched case-insensitively.

        Returns
        -------
        np.ndarray, shape (latent_dim,)
            The unit normal n̂ (float64), pointing to higher values of the parameter.

        Raises
        ------
        KeyError
            If the direction was not fitted; the message gives the reason from ``skipped`` when known.
        """
        for key, vec in self.normals.items():
            if key.lower() == name.lower():
                return vec
        why = next((v for k, v in self.skipped.items() if k.lower() == name.lower()), None)
        extra = f" (not fitted: {why})" if why else ""
        raise KeyError(f"no latent direction {name!r}{extra}; have {sorted(self.normals)}")

    def save(self, path: str | Path) -> Path:
        """Write the directions and their statistics as JSON (atomically).

        Non-finite floats (e.g. NaN statistics) are written as ``null``.

        Parameters
        ----------
        path : str or Path
            Destination JSON file.

        Returns
        -------
        Path
            The file written.
        """
        d = asdict(self)
        d["normals"] = {k: v.tolist() for k, v in self.normals.items()}
        return write_json(path, d)

    @classmethod
    def load(cls, path: str | Path) -> "LatentDirections":
        """Read :meth:`save`'s JSON.

        Parameters
        ----------
        path : str or Path
            A file written by :meth:`save`.

        Returns
        -------
        LatentDirections
            With ``normals`` as float64 arrays (latent_dim,).

        Raises
        ------
        FileNotFoundError
            If the file does not exist (the message names it and the command that makes it).
        ProductError
            If the JSON is unreadable, has missing or unknown fields, or non-finite normals.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: latent directions not found (run `helioforge directions fit`)")
        d = read_json_product(path, "latent directions")
        try:
            d["normals"] = {k: np.asarray(v, dtype=np.float64) for k, v in d["normals"].items()}
            out = cls(**d)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProductError(path, f"not latent directions of this helioforge ({type(exc).__name__}: {exc})",
                               "refit them with `helioforge directions fit --force`") from None
        if not all(np.isfinite(v).all() for v in out.normals.values()):
            raise ProductError(path, "non-finite direction vectors", "refit them with `helioforge directions fit --force`")
        return out


def direction_labels(params: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Binary labels per direction: ``name → (valid mask, labels, threshold)``.

    TUF, PSEP, R: value > median of the valid (finite) values. polarity: leading_sign > 0,
    valid where the sign is defined (both polarities present).

    Parameters
    ----------
    params : dict of str to np.ndarray
        Arrays (M,) with at least the keys ``TUF``, ``PSEP``, ``R`` and ``leading_sign``, as from
        :func:`helioforge.physics.params.compute_params` (any units: only the ordering matters).

    Returns
    -------
    dict of str to (np.ndarray, np.ndarray, float)
        For each of ``TUF``, ``PSEP``, ``R``, ``polarity``: the (M,) bool valid mask, the (M,) bool
        labels and the threshold (the median, NaN if no value is finite; 0.0 for polarity).

    Raises
    ------
    KeyError
        If a required key is missing from ``params``.

    References
    ----------
    Chatterjee et al. (2025), Results, "Interpretable Generation": median thresholds as binary labels.
    """
    out = {}
    for name in ("TUF", "PSEP", "R"):
        v = np.asarray(params[name], dtype=np.float64)
        ok = np.isfinite(v)
        med = float(np.median(v[ok])) if ok.any() else float("nan")
        out[name] = (ok, v > med, med)
    sign = np.asarray(params["leading_sign"], dtype=np.float64)
    out["polarity"] = (sign != 0, sign > 0, 0.0)
    return out


def fit_directions(z: np.ndarray, params: dict[str, np.ndarray], cfg: DirectionsConfig) -> LatentDirections:
    """Fit one LinearSVC per parameter on (z, label) with a ``train_fraction`` split.

    A parameter whose labels have a single class, or fewer than 10 defined samples per class,
    is not fitted: it is logged and listed in ``skipped`` with the reason.

    Parameters
    ----------
    z : np.ndarray, shape (M, latent_dim)
        Latent vectors the images were generated from.
    params : dict of str to np.ndarray
        Arrays (M,) from :func:`helioforge.physics.params.compute_params` (see :func:`direction_labels`).
    cfg : DirectionsConfig
        Supplies ``train_fraction`` (paper: 0.7), ``seed`` and ``svm_C``.

    Returns
    -------
    LatentDirections
        Unit normals, offsets b/|w| and validation/training accuracies of the fitted SVMs.

    Raises
    ------
    ValueError
        When no direction at all can be fitted.

    References
    ----------
    Chatterjee et al. (2025), Results, "Interpretable Generation": 7,000 / 3,000 split of 10,000 samples.
    """
    z = np.asarray(z, dtype=np.float64)
    normals, offsets, acc, tacc, meds, ntr, nva, skipped = {}, {}, {}, {}, {}, {}, {}, {}
    for name, (ok, y, med) in direction_labels(params).items():
        zs, ys = z[ok], y[ok]
        counts = np.bincount(ys.astype(int), minlength=2)
        if counts.min() < 10:
            skipped[name] = (f"only {counts[1]} high / {counts[0]} low of {len(z)} generated samples"
                             + (" (undefined without both polarities)" if name in ("PSEP", "polarity") else ""))
            log.warning("SVM %s not fitted: %s", name, skipped[name])
            continue
        ztr, zva, ytr, yva = train_test_split(zs, ys, train_size=cfg.train_fraction, random_state=cfg.seed, stratify=ys)
        svm = LinearSVC(C=cfg.svm_C, max_iter=20000, dual="auto").fit(ztr, ytr)
        w = svm.coef_[0]
        norm = np.linalg.norm(w)
        normals[name] = w / norm
        offsets[name] = float(svm.intercept_[0] / norm)
        acc[name] = float(svm.score(zva, yva))
        tacc[name] = float(svm.score(ztr, ytr))
        meds[name] = med
        ntr[name], nva[name] = len(ytr), len(yva)
        log.info("SVM %-8s validation accuracy %.3f (n=%d/%d)", name, acc[name], len(ytr), len(yva))
    if not normals:
        raise ValueError(f"no latent direction could be fitted: {skipped}")
    return LatentDirections(normals, offsets, acc, tacc, meds, ntr, nva, skipped)


def conditional_direction(primal: np.ndarray, conditions: Sequence[np.ndarray]) -> np.ndarray:
    """Unit vector of ``primal`` with the span of ``conditions`` removed: x − A(AᵀA)⁻¹Aᵀx.

    For one condition this is the paper's n̂_new = (n̂ − (n̂·n̂_c) n̂_c)/|…| (Results,
    "Interpretable Generation").

    Parameters
    ----------
    primal : ndarray, shape (d,)
        The direction to steer along (latent space of dimension d).
    conditions : sequence of ndarray, each shape (d,)
        Directions whose parameters are to be held fixed.

    Returns
    -------
    ndarray, shape (d,), float64
        Unit vector orthogonal to every condition.

    Raises
    ------
    ValueError
        ``primal`` lies in the span of the conditions.
    """
    x = np.asarray(primal, dtype=np.float64)
    if not conditions:
        return x / np.linalg.norm(x)
    A = np.stack([np.asarray(c, dtype=np.float64) for c in conditions], axis=1)
    perp = x - A @ np.linalg.solve(A.T @ A, A.T @ x)
    n = np.linalg.norm(perp)
    if n < 1e-8 * np.linalg.norm(x):
        raise ValueError("the primal direction lies in the span of the conditions")
    return perp / n


def traverse(z: np.ndarray, direction: np.ndarray, eps: Sequence[float]) -> np.ndarray:
    """Latent vectors z + ε n̂ for every ε, z-major order (paper: z_shift = z + ε n̂).

    Parameters
    ----------
    z : np.ndarray, shape (n, latent_dim) or (latent_dim,)
        Base latent vectors.
    direction : np.ndarray, shape (latent_dim,)
        Direction n̂ (used as given, not renormalised).
    eps : sequence of float
        Shifts ε, in latent units.

    Returns
    -------
    np.ndarray, shape (n * len(eps), latent_dim)
        Float64; row ``i * len(eps) + k`` is z[i] + eps[k] n̂.
    """
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    e = np.asarray(eps, dtype=np.float64)
    return (z[:, None, :] + e[None, :, None] * np.asarray(direction)[None, None, :]).reshape(-1, z.shape[1])


ParamFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def _param_value(params: dict[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(params["leading_sign"] if name == "polarity" else params[name], dtype=np.float64)


def monotonicity(
    z_base: np.ndarray,
    directions: LatentDirections,
    params_of_z: ParamFn,
    eps: Sequence[float],
) -> dict[str, dict[str, float]]:
    """Spearman ρ of ε against each parameter along its own direction.

    For every direction and every base vector, the parameter of G(z + ε n̂) is computed over the
    ε grid. Returns per name: ``mean_rho`` (mean over bases of the per-base ρ, bases with a
    constant sequence left out), ``pooled_rho`` (ρ over all (ε, value) pairs),
    ``frac_positive`` (share of bases with ρ > 0) and ``n_base``.

    Parameters
    ----------
    z_base : np.ndarray, shape (n_base, latent_dim)
        Base latent vectors.
    directions : LatentDirections
        Fitted directions; names not fitted are left out of the result.
    params_of_z : callable
        Maps latent vectors (m, latent_dim) to parameter arrays (m,) (keys as
        :func:`helioforge.physics.params.compute_params`), e.g. by generating images.
    eps : sequence of float
        The ε grid.

    Returns
    -------
    dict of str to dict
        Per fitted name of :data:`DIRECTION_PARAMS`: ``mean_rho``, ``pooled_rho``, ``frac_positive``
        (NaN when undefined) and ``n_base``.
    """
    eps = np.asarray(eps, dtype=np.float64)
    out = {}
    for name in DIRECTION_PARAMS:
        if not directions.has(name):
            continue
        zz = traverse(z_base, directions.get(name), eps)
        vals = _param_value(params_of_z(zz), name).reshape(len(z_base), len(eps))
        rhos = []
        for row in vals:
            ok = np.isfinite(row)
            if ok.sum() >= 3 and np.ptp(row[ok]) > 0:
                rhos.append(spearmanr(eps[ok], row[ok]).statistic)
        e_all = np.broadcast_to(eps, vals.shape).ravel()
        ok = np.isfinite(vals.ravel())
        pooled = spearmanr(e_all[ok], vals.ravel()[ok]).statistic if ok.sum() > 2 else float("nan")
        out[name] = {
            "mean_rho": float(np.mean(rhos)) if rhos else float("nan"),
            "pooled_rho": float(pooled),
            "frac_positive": float(np.mean(np.asarray(rhos) > 0)) if rhos else float("nan"),
            "n_base": int(len(z_base)),
        }
    return out


def conditioning_effect(
    z_base: np.ndarray,
    directions: LatentDirections,
    params_of_z: ParamFn,
    eps_max: float,
    primal: str = "TUF",
    conditions: Sequence[str] = ("R",),
) -> dict[str, float]:
    """How much conditioning on ``conditions`` reduces the change of R along ``primal``.

    For each base z, ΔP = P(z + ε n) − P(z − ε n) with ε = ``eps_max`` for the plain normal and
    the conditioned one. Returns, in the units of the parameters, the mean signed changes
    ``d<P>_<plain|conditioned>`` and the mean absolute changes ``abs_d<P>_…`` of R and of the
    primal parameter, ``R_change_reduction`` = 1 − |ΔR_cond| / |ΔR_plain| (signed means) and
    ``<primal>_change_kept`` = ΔP_cond / ΔP_plain; or ``{"skipped": reason}`` when a needed
    direction was not fitted.

    Parameters
    ----------
    z_base : np.ndarray, shape (n_base, latent_dim)
        Base latent vectors.
    directions : LatentDirections
        Fitted directions.
    params_of_z : callable
        Maps latent vectors (m, latent_dim) to parameter arrays (m,).
    eps_max : float
        Shift ε (latent units) applied in both senses.
    primal : str
        Name of the direction moved along (default TUF).
    conditions : sequence of str
        Directions whose span is removed from the primal one (:func:`conditional_direction`).

    Returns
    -------
    dict of str to float
        The quantities above plus ``cosine_plain_conditioned``; ratios are NaN when the plain change is 0.

    Raises
    ------
    ValueError
        From :func:`conditional_direction` if the primal direction lies in the span of the conditions.

    References
    ----------
    Chatterjee et al. (2025), Results, conditional manipulation after Shen et al. (2019).
    """
    missing = [n for n in (primal, *conditions) if not directions.has(n)]
    if missing:
        return {"skipped": f"direction(s) not fitted: {', '.join(missing)}"}
    plain = directions.get(primal)
    cond = conditional_direction(plain, [directions.get(c) for c in conditions])
    eps = [-eps_max, eps_max]
    res: dict[str, float] = {"cosine_plain_conditioned": float(plain @ cond)}
    for label, vec in (("plain", plain), ("conditioned", cond)):
        p = params_of_z(traverse(z_base, vec, eps))
        for name in ("R", primal):
            v = _param_value(p, name).reshape(len(z_base), 2)
            res[f"d{name}_{label}"] = float(np.nanmean(v[:, 1] - v[:, 0]))
            res[f"abs_d{name}_{label}"] = float(np.nanmean(np.abs(v[:, 1] - v[:, 0])))
    res["R_change_reduction"] = 1.0 - abs(res["dR_conditioned"]) / abs(res["dR_plain"]) if res["dR_plain"] else float("nan")
    res[f"{primal}_change_kept"] = res[f"d{primal}_conditioned"] / res[f"d{primal}_plain"] if res[f"d{primal}_plain"] else float("nan")
    return res


def project_2d(z: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """The paper's Fig. 4 projection: z'₁ = z₁, z'₂ = (1/n₂) Σ_{i≥2} nᵢ zᵢ → (M, 2).

    In these coordinates the hyperplane n̂·z + b = 0 is the line z'₂ = −(n₁ z'₁ + b)/n₂.

    Parameters
    ----------
    z : np.ndarray, shape (M, latent_dim)
        Latent vectors.
    normal : np.ndarray, shape (latent_dim,)
        Hyperplane normal n̂.

    Returns
    -------
    np.ndarray, shape (M, 2)
        (z'₁, z'₂), float64.

    Raises
    ------
    ValueError
        When |n₂| < 1e-12.

    References
    ----------
    Chatterjee et al. (2025), Results, Fig. 4.
    """
    z = np.asarray(z, dtype=np.float64)
    n = np.asarray(normal, dtype=np.float64)
    if abs(n[1]) < 1e-12:
        raise ValueError("n_2 = 0: the projection is undefined")
    return np.stack([z[:, 0], (z[:, 1:] @ n[1:]) / n[1]], axis=1)
