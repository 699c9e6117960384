"""Evaluation metrics of the class-conditional diffusion model (Ramunno et al. 2024, §6–7).

* :func:`frechet_distance` — Fréchet distance between Gaussians fitted to two feature sets
  (Heusel et al. 2017); :class:`InceptionFeatures` / :func:`inception_fid` — the usual FID on
  InceptionV3 pool features from the StyleGAN2-ADA TorchScript weights (Karras et al. 2020),
  loaded from a local file.
* :func:`cluster_metrics` / :func:`real_vs_real_cluster_metrics` — cluster error, cluster
  distance and cluster standard deviation of Hackstein et al. (2023, Astronomy and Computing
  42, 100685), computed in a domain feature space (the ceVAE latent space,
  :mod:`helioforge.diffusion.features`) with K = 5 k-means clusters (paper §6, Table 1).
* :func:`std_maps` — per-class per-pixel standard deviation maps of real and generated images
  (paper §7, Fig. 4; drawn by :func:`helioforge.diffusion.report.plot_std_maps`).
* :func:`mean_std`, :func:`bootstrap_scores`, :func:`brightness_index`,
  :func:`pixel_gaussian_images` — repeat statistics, score spread, an activity proxy and the
  trivial per-pixel Gaussian generator the evaluation compares with.

Images are float arrays (n, 1, N, N) in [-1, 1]; flare-class labels are ints 0..4 (A..X).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from helioforge.diffusion.classifier import classification_scores

__all__ = [
    "frechet_distance",
    "cluster_metrics",
    "real_vs_real_cluster_metrics",
    "InceptionFeatures",
    "inception_fid",
    "std_maps",
    "images_labels",
    "mean_std",
    "bootstrap_scores",
    "brightness_index",
    "pixel_gaussian_images",
    "INCEPTION_URL",
]

log = logging.getLogger(__name__)

#: Where users get the InceptionV3 TorchScript weights (StyleGAN2-ADA; the file clean-fid uses).
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_SIZE = 299


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d) of feature vectors, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


# --------------------------------------------------------------------------- Fréchet distance
def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6).

    d² = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), with the sample means and the unbiased
    sample covariances. The matrix square root is :func:`scipy.linalg.sqrtm`; when it is not
    finite (singular product) it is recomputed on (Σ_a + εI)(Σ_b + εI), and imaginary parts
    left by numerical error are dropped (a warning is logged if they exceed 1e-3), as in the
    reference implementations (pytorch-fid, clean-fid).

    Parameters
    ----------
    feats_a, feats_b : (n_a, d) and (n_b, d) feature vectors, n ≥ 2 each.
    eps : diagonal offset used only when the product of covariances is singular.

    Returns
    -------
    float : the squared Fréchet distance (FID when the features are InceptionV3 pool features).

    Raises
    ------
    ValueError
        Not 2-D, non-finite values, different dimensions, or fewer than two samples in a set.
    """
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set to fit a covariance, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a = np.atleast_2d(np.cov(a, rowvar=False))
    sigma_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.all(np.isfinite(covmean)):
        log.warning("frechet_distance: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(len(sigma_a)) * eps
        covmean = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imag > 1e-3:
            log.warning("frechet_distance: dropping an imaginary component of %.3g from sqrtm", imag)
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean))


# --------------------------------------------------------------------------- cluster metrics
def _distance_stats(d: np.ndarray) -> tuple[float, float]:
    """(D, σ) of distances d: D = sqrt(mean d²) (RMS), σ = sqrt(mean (d − D)²); NaN if empty."""
    if d.size == 0:
        return float("nan"), float("nan")
    rms = float(np.sqrt(np.mean(d**2)))
    return rms, float(np.sqrt(np.mean((d - rms) ** 2)))


def cluster_metrics(real_feats: np.ndarray, gen_feats: np.ndarray, k: int = 5, seed: int = 0) -> dict:
    """Cluster error, cluster distance and cluster std of Hackstein et al. (2023).

    K-means with ``k`` clusters (scikit-learn, ``n_init=10, random_state=seed``) is fitted on
    the real features; every vector x of a set S is assigned to its nearest centre c_a(x),
    at distance d(x) = min_j ‖x − c_j‖. With f_j^S the fraction of S in cluster j:

    * cluster error      E = Σ_j (f_j^gen − f_j^real)² / (f_j^real)²
    * cluster distance   D = D_gen / D_real,   D_S = sqrt(mean_{x∈S} d(x)²)
    * cluster std        σ = σ_gen / σ_real,   σ_S = sqrt(mean_{x∈S} (d(x) − D_S)²)

    E = 0 when the generated set fills the clusters in the real proportions; it grows with
    mode collapse (all samples in one cluster j: E = (1 − f_j)²/f_j² + (k − 1)). D and σ are
    1 for a generated set as far from, and as spread around, the centres as the real one;
    scaling every generated offset x − c_a(x) by s gives D = σ = s.

    Source: the evaluation code of Hackstein et al. (2023) in the authors' repository
    github.com/vkinakh/galaxy-zoo-generation,
    ``src/metrics/distribution_measures/evaluate_cluster_distribution.py``
    (``DistributionEvaluation.get_errors`` → ``compute_l2_distance`` for E;
    ``get_distances(combined=True)`` → ``compute_distances`` for D and σ, as called by
    ``evaluate_latent_distribution.py``). Two deliberate differences: fractions f_j instead
    of raw counts (identical when both sets have the same size, as in that code, and
    size-independent otherwise), and ``n_init=10, random_state=seed`` instead of
    scikit-learn's defaults with ``random_state=0``. A later re-implementation by the same
    group (per-cluster torch version citing "Hackstein et al. 2023, Eq. 1–3") averages the
    error over clusters instead of summing, i.e. E/k; its per-cluster D_j, σ_j are returned
    here as ``*_per_cluster``. The paper's own text (not at hand) is the final word on
    whether Eq. 1 sums or averages; Ramunno et al. (2024) Table 1 reports E_GT ≈ 0.002,
    D_GT ≈ 1.00, σ_GT ≈ 1.00 for real vs real data, which both conventions reproduce.

    Parameters
    ----------
    real_feats : (n_real, d) features of real images (n_real ≥ k), e.g. ceVAE posterior means.
    gen_feats : (n_gen, d) features of generated images (n_gen ≥ 1).
    k : number of k-means clusters (paper: 5, the GOES classes A, B, C, M, X).
    seed : k-means random state.

    Returns
    -------
    dict with ``cluster_error``, ``cluster_distance``, ``cluster_std`` (floats), ``k``,
    ``real_fraction`` and ``gen_fraction`` (lists of k fractions), ``cluster_distance_per_cluster``
    and ``cluster_std_per_cluster`` (lists of k ratios D_gen,j/D_real,j and σ_gen,j/σ_real,j over
    the points of cluster j; NaN where a generated cluster is empty), ``n_real``, ``n_gen``.

    Raises
    ------
    ValueError
        Not 2-D, non-finite, different dimensions, fewer than ``k`` real vectors, no generated
        vector, or fewer than ``k`` distinct real vectors (a cluster would be empty).
    """
    real, gen = _features(real_feats, "real_feats"), _features(gen_feats, "gen_feats")
    if real.shape[1] != gen.shape[1]:
        raise ValueError(f"feature dimensions differ: real {real.shape[1]} vs generated {gen.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(real) < k:
        raise ValueError(f"need at least k={k} real feature vectors, got {len(real)}")
    if len(gen) < 1:
        raise ValueError("no generated feature vectors")
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(real)

    def assign(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist = km.transform(x)  # (n, k) Euclidean distances to the centres
        lab = dist.argmin(1)
        return lab, dist[np.arange(len(x)), lab]

    lab_r, d_r = assign(real)
    lab_g, d_g = assign(gen)
    f_r = np.bincount(lab_r, minlength=k) / len(real)
    f_g = np.bincount(lab_g, minlength=k) / len(gen)
    if np.any(f_r == 0):
        raise ValueError(f"k-means left an empty cluster on the real features (fewer than k={k} distinct vectors?)")
    error = float(np.sum((f_g - f_r) ** 2 / f_r**2))
    dist_r, std_r = _distance_stats(d_r)
    dist_g, std_g = _distance_stats(d_g)
    per_d, per_s = [], []
    for j in range(k):
        dr, sr = _distance_stats(d_r[lab_r == j])
        dg, sg = _distance_stats(d_g[lab_g == j])
        per_d.append(dg / dr if dr > 0 else float("nan"))
        per_s.append(sg / sr if sr > 0 else float("nan"))
    return {
        "cluster_error": error,
        "cluster_distance": dist_g / dist_r if dist_r > 0 else float("nan"),
        "cluster_std": std_g / std_r if std_r > 0 else float("nan"),
        "k": int(k),
        "real_fraction": f_r.tolist(),
        "gen_fraction": f_g.tolist(),
        "cluster_distance_per_cluster": per_d,
        "cluster_std_per_cluster": per_s,
        "n_real": int(len(real)),
        "n_gen": int(len(gen)),
    }


def real_vs_real_cluster_metrics(real_feats: np.ndarray, k: int = 5, seed: int = 0, repeats: int = 10) -> dict:
    """The ground-truth (GT) row of Ramunno et al. (2024) Table 1: cluster metrics of real
    against real data.

    The real set is split into two random halves ``repeats`` times; k-means is fitted on the
    first half (the reference) and :func:`cluster_metrics` compares the second half with it
    (k-means seed ``seed + r`` for repeat r). Values near E ≈ 0, D ≈ σ ≈ 1 are the target a
    generator is compared with; their spread is the sampling noise of the metrics.

    Parameters
    ----------
    real_feats : (n, d) real features, n ≥ 2k.
    k, seed : as in :func:`cluster_metrics`; ``seed`` also drives the random splits.
    repeats : number of random half splits (≥ 1).

    Returns
    -------
    dict: ``cluster_error``, ``cluster_distance``, ``cluster_std`` each ``{"mean", "std"}``
    (population std over repeats), plus ``k``, ``repeats``, ``n_half``.

    Raises
    ------
    ValueError
        ``repeats < 1`` or fewer than 2k real vectors, and the errors of :func:`cluster_metrics`.
    """
    real = _features(real_feats, "real_feats")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if len(real) < 2 * k:
        raise ValueError(f"need at least 2k={2 * k} real feature vectors to split, got {len(real)}")
    rng = np.random.default_rng(seed)
    half = len(real) // 2
    keys = ("cluster_error", "cluster_distance", "cluster_std")
    values: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(repeats):
        perm = rng.permutation(len(real))
        m = cluster_metrics(real[perm[:half]], real[perm[half:2 * half]], k=k, seed=seed + r)
        for key in keys:
            values[key].append(m[key])
    out: dict = {key: {"mean": float(np.mean(v)), "std": float(np.std(v))} for key, v in values.items()}
    out.update(k=int(k), repeats=int(repeats), n_half=int(half))
    return out


# --------------------------------------------------------------------------- Inception FID
class InceptionFeatures:
    """InceptionV3 pool features (2048-d) from the StyleGAN2-ADA TorchScript weights.

    ``inception-2015-12-05.pt`` (Karras et al. 2020; the TensorFlow FID network of Heusel et al.
    2017 ported to TorchScript) is the network clean-fid (Parmar et al. 2022) and the paper's
    FID use. It is never downloaded here: fetch it once from :data:`INCEPTION_URL` and pass its
    local path.

    Call convention (StyleGAN2-ADA ``metrics/metric_utils.py``; clean-fid
    ``inception_torchscript.py`` with ``resize_inside=True``): ``model(x, return_features=True)``
    with x uint8 RGB (B, 3, H, W) in [0, 255], returning (B, 2048) float features.

    Parameters
    ----------
    path : local TorchScript file.
    device : torch device; default CUDA when available, else CPU.
    batch_size : images per forward pass.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (the message says where to get the file).
    ValueError
        ``path`` is not a TorchScript archive.
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None, batch_size: int = 64):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path}: InceptionV3 TorchScript weights not found. Download inception-2015-12-05.pt "
                f"(StyleGAN2-ADA, the file clean-fid uses) from {INCEPTION_URL} on a machine with internet "
                f"access and pass its local path.")
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = int(batch_size)
        try:
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{self.path}: not a TorchScript model ({exc})") from None

    @staticmethod
    def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
        """Our images in [-1, 1] → the uint8 RGB input of InceptionV3.

        [-1, 1] → [0, 255] rounded to integers (8-bit, as a saved PNG would be), bilinear
        resize to 299×299 (``F.interpolate``, align_corners=False), rounded and clipped to
        uint8, the grey channel repeated three times.

        Parameters
        ----------
        images : torch.Tensor
            (B, 1, N, N) in [-1, 1] (values outside are clipped).

        Returns
        -------
        torch.Tensor
            (B, 3, 299, 299) uint8.
        """
        x = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return x.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features (n, 2048) float64 of images (n, 1, N, N) in [-1, 1].

        Raises ``ValueError`` for another shape.
        """
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"images must be (n, 1, N, N), got {x.shape}")
        out = []
        for start in range(0, len(x), self.batch_size):
            chunk = torch.from_numpy(x[start:start + self.batch_size]).to(self.device)
            feats = self.model(self.to_uint8_rgb(chunk), return_features=True)
            out.append(feats.reshape(len(chunk), -1).double().cpu())
        if not out:
            raise ValueError("no images to encode")
        return torch.cat(out).numpy()


def inception_fid(real_images: np.ndarray, gen_images: np.ndarray, weights_path: str | os.PathLike, *,
                  device: str | torch.device | None = None, batch_size: int = 64) -> float:
    """FID (Heusel et al. 2017) between real and generated images on InceptionV3 pool features.

    The features are those of :class:`InceptionFeatures` (paper Table 1, "FID IV3"). The resize
    (bilinear, torch) differs from clean-fid's default "clean" PIL-bicubic resize, so values are
    comparable between our models but not digit-for-digit with the paper's.

    Parameters
    ----------
    real_images, gen_images : numpy.ndarray
        (n, 1, N, N) and (m, 1, M, M) in [-1, 1], n, m ≥ 2.
    weights_path : str or os.PathLike
        Local TorchScript InceptionV3 weights (``inception-2015-12-05.pt``).
    device : str or torch.device or None
        Default: CUDA when available, else the CPU.
    batch_size : int
        Images per network call.

    Returns
    -------
    float
        The Fréchet distance of the 2048-d features.

    Raises
    ------
    FileNotFoundError
        For missing weights.
    ValueError
        For weights that are not a TorchScript archive, images that are not (n, 1, N, N), or
        fewer than two images per set.
    """
    extractor = InceptionFeatures(weights_path, device=device, batch_size=batch_size)
    return frechet_distance(extractor(real_images), extractor(gen_images))


# --------------------------------------------------------------------------- std maps and figures
def images_labels(images: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert an image set and its class labels.

    Parameters
    ----------
    images : numpy.ndarray
        (n, 1, N, N) images.
    labels : numpy.ndarray
        (n,) integer class indices in [0, n_classes).
    n_classes : int
        Number of classes.

    Returns
    -------
    images : numpy.ndarray
        (n, 1, N, N) float64.
    labels : numpy.ndarray
        (n,) int64.

    Raises
    ------
    ValueError
        Wrong image shape, labels not matching the images, not integers or outside [0, n_classes).
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (n, 1, N, N), got {x.shape}")
    y = np.asarray(labels)
    if y.shape != (len(x),):
        raise ValueError(f"labels must be ({len(x)},) to match the images, got {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be integer class indices in [0, {n_classes}), got {np.unique(y)[:10]}")
    return x, y.astype(np.int64)


def std_maps(images: np.ndarray, labels: np.ndarray, n_classes: int = 5) -> np.ndarray:
    """Per-class per-pixel standard deviation maps (Ramunno et al. 2024 §7, Fig. 4).

    For each class c the images of that class are stacked along the batch axis and the
    sample standard deviation (ddof = 1, torch.std's default) is taken per pixel: bright
    regions vary most, i.e. are where activity appears.

    Parameters
    ----------
    images : (n, 1, N, N) images.
    labels : (n,) integer flare classes in [0, n_classes).
    n_classes : number of classes (5: A, B, C, M, X).

    Returns
    -------
    (n_classes, N, N) float64; all-NaN maps for classes with fewer than two images.

    Raises
    ------
    ValueError
        Wrong image shape, labels not matching the images or outside [0, n_classes).
    """
    x, y = images_labels(images, labels, n_classes)
    maps = np.full((n_classes, x.shape[2], x.shape[3]), np.nan)
    for c in range(n_classes):
        sel = x[y == c, 0]
        if len(sel) >= 2:
            maps[c] = sel.std(axis=0, ddof=1)
    return maps


def mean_std(values: Any) -> dict[str, Any]:
    """Mean and spread of a list of repeat values.

    Population std (ddof = 0); NaN-safe: non-finite values are left out of mean and std and
    counted in ``n_nan``.

    Parameters
    ----------
    values : iterable of float
        One value per repeat.

    Returns
    -------
    dict
        ``mean``, ``std`` (NaN when no value is finite), ``n``, ``n_nan`` and ``values``
        (the list as floats).
    """
    v = np.asarray(list(values), dtype=np.float64)
    ok = np.isfinite(v)
    return {"mean": float(v[ok].mean()) if ok.any() else float("nan"),
            "std": float(v[ok].std()) if ok.any() else float("nan"),
            "n": int(len(v)), "n_nan": int((~ok).sum()), "values": [float(x) for x in v]}


def bootstrap_scores(y_true: np.ndarray, y_pred: np.ndarray, macro_classes: list[int], n_boot: int = 200,
                     seed: int = 0) -> dict[str, float]:
    """Bootstrap spread of the macro scores over the images (resampled with replacement,
    ``n_boot`` times): the uncertainty of a score measured on few images.

    Parameters
    ----------
    y_true, y_pred : ndarray of int, shape (n,)
        True and predicted class indices of the n images.
    macro_classes : list of int
        Classes averaged in the macro scores.
    n_boot : int
        Number of bootstrap resamples.
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        ``macro_f1_std``, ``macro_precision_std``, ``macro_recall_std`` (standard deviations over
        the resamples) and ``n_boot``.
    """
    rng = np.random.default_rng(seed)
    n = len(y_true)
    runs = []
    for _ in range(int(n_boot)):
        i = rng.integers(0, n, n)
        runs.append(classification_scores(y_true[i], y_pred[i], macro_classes=macro_classes))
    out = {f"{k}_std": float(np.std([r[k] for r in runs])) for k in ("macro_f1", "macro_precision", "macro_recall")}
    out["n_boot"] = int(n_boot)
    return out


def brightness_index(images: np.ndarray) -> np.ndarray:
    """Per-image activity proxy: the 99.5th percentile of the scaled intensity.

    Bright active regions and flares raise it; a quiet Sun keeps it near the disk level.

    Parameters
    ----------
    images : numpy.ndarray
        (n, ...) images, e.g. (n, 1, N, N) in network units [-1, 1].

    Returns
    -------
    numpy.ndarray
        (n,) float64, in the units of ``images``.
    """
    return np.percentile(np.asarray(images).reshape(len(images), -1), 99.5, axis=1)


def pixel_gaussian_images(images: np.ndarray, labels: np.ndarray, classes: np.ndarray,
                          rng: np.random.Generator) -> np.ndarray:
    """Trivial class-conditional generator, the yardstick of the generated-set metrics.

    Every pixel is drawn independently from a normal distribution with the per-pixel mean and
    std (ddof = 0) of the real training images of the requested class (no spatial structure
    beyond the class's mean image).

    Parameters
    ----------
    images : numpy.ndarray
        (n, 1, N, N) real images in [-1, 1].
    labels : numpy.ndarray
        (n,) class indices of ``images``.
    classes : numpy.ndarray
        (m,) class of each image to draw; every class should have real images (one without
        gives NaN images, with a NumPy empty-slice warning, not an error).
    rng : numpy.random.Generator
        Source of the draws.

    Returns
    -------
    numpy.ndarray
        (m, 1, N, N) float32 clipped to [-1, 1].
    """
    out = np.empty((len(classes), *images.shape[1:]), dtype=np.float32)
    for c in np.unique(classes):
        real = images[labels == c]
        mu, sd = real.mean(0), real.std(0)
        pick = classes == c
        out[pick] = mu + sd * rng.standard_normal((int(pick.sum()), *images.shape[1:]))
    return np.clip(out, -1.0, 1.0).astype(np.float32)
