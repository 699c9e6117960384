"""Minority-class augmentation experiment: generated vs classical vs none (Ramunno et al. 2024, §8.1).

The paper adds +200, +400 and +600 images to each of the least represented flare classes
(A, M, X) of the classifier's training set, with three different sets per addition, and
compares the per-class accuracy (recall) on the same real test set for

* ``"generated"`` — images sampled from the class-conditional diffusion model,
* ``"classical"`` — real training images of that class, transformed by random horizontal and
  vertical flips, random rotation and a random affine map with translation and shear (the
  paper used torchvision; here :mod:`kornia.augmentation`),
* ``"none"`` — no addition (trained ``repeats`` times with different seeds, so its spread is
  known too).

:func:`summarize_augmentation` gives the per-class accuracy table; Figures 6 (generated), 7
(classical) and 8 (the three side by side) are drawn by
:func:`helioforge.diffusion.report.plot_augmentation`, and the experiment is run on a work
folder by :func:`helioforge.diffusion.evaluate.augment_experiment`. Its settings are
:class:`helioforge.diffusion.config.AugmentConfig`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Callable

import kornia.augmentation as K
import numpy as np
import pandas as pd
import torch

from helioforge.diffusion.classifier import class_weights, classification_scores, train_classifier
from helioforge.diffusion.config import AugmentConfig, ClassifierConfig
from helioforge.nn.training import check_images
from helioforge.progress import track

__all__ = ["classical_augment", "augmentation_experiment", "summarize_augmentation", "METHODS"]

log = logging.getLogger(__name__)

METHODS = ("none", "classical", "generated")

GenerateFn = Callable[[int, int, int], np.ndarray]


def classical_augment(
    images: np.ndarray,
    n: int,
    *,
    seed: int = 0,
    rotation_deg: float = 30.0,
    affine_deg: float = 10.0,
    translate: float = 0.1,
    shear_deg: float = 10.0,
) -> np.ndarray:
    """Classical data augmentation of real images (Ramunno et al. 2024, §8.1).

    ``n`` source images are drawn with replacement from ``images`` and each is transformed
    by the kornia sequence (every random parameter drawn per image):

    1. ``RandomHorizontalFlip(p=0.5)`` and ``RandomVerticalFlip(p=0.5)``;
    2. ``RandomRotation(degrees=rotation_deg, p=1)``: angle uniform in ±``rotation_deg``;
    3. ``RandomAffine(degrees=affine_deg, translate=(translate, translate), shear=shear_deg,
       p=1)``: a further rotation in ±``affine_deg``, a shift of up to ``translate`` × the
       image side along each axis, and shears in ±``shear_deg`` degrees.

    The paper lists these operations without their values (it used torchvision); the
    defaults here are our choice: strong enough to make hundreds of distinct images from the
    48 X-class images the paper mentions, mild enough to keep a recognisable disk. A step whose
    parameters are all 0 is left out (so ``rotation_deg=affine_deg=translate=shear_deg=0``
    gives pure flips).

    Pixels brought in from outside the frame are set to -1 (the off-disk background of the
    [-1, 1] scaling): the transforms act on ``images + 1`` with zero padding and 1 is
    subtracted after. Bilinear interpolation stays within the input range, so results stay in
    [-1, 1] (clipped against round-off).

    Parameters
    ----------
    images : (m, 1, N, N) source images in [-1, 1], m ≥ 1.
    n : number of images to make (≥ 0).
    seed : seed of the source choice and of the transforms (the global torch RNG is left
        untouched).
    rotation_deg, affine_deg, translate, shear_deg : see above; degrees, degrees, fraction of
        the side, degrees.

    Returns
    -------
    np.ndarray
        (n, 1, N, N) float32 in [-1, 1].

    Raises
    ------
    ValueError
        Wrong shape, no source images, negative ``n`` or negative parameters.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be (m, 1, N, N), got {images.shape}")
    if len(images) == 0:
        raise ValueError("classical augmentation needs at least one source image, got none")
    if int(n) < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    for name, v in (("rotation_deg", rotation_deg), ("affine_deg", affine_deg), ("translate", translate),
                    ("shear_deg", shear_deg)):
        if v < 0:
            raise ValueError(f"{name} must be non-negative, got {v}")
    n = int(n)
    if n == 0:
        return np.zeros((0, *images.shape[1:]), dtype=np.float32)
    steps: list[Any] = [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
    if rotation_deg > 0:
        steps.append(K.RandomRotation(degrees=float(rotation_deg), p=1.0))
    if affine_deg > 0 or translate > 0 or shear_deg > 0:
        steps.append(K.RandomAffine(degrees=float(affine_deg), translate=(float(translate), float(translate)) if translate > 0 else None,
                                    shear=float(shear_deg) if shear_deg > 0 else None, padding_mode="zeros", p=1.0))
    aug = K.AugmentationSequential(*steps)
    rng = np.random.default_rng(seed)
    source = images[rng.integers(0, len(images), size=n)]
    out = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
        for chunk in torch.from_numpy(source).split(256):
            out.append(aug(chunk + 1.0) - 1.0)
    return np.clip(torch.cat(out).numpy(), -1.0, 1.0).astype(np.float32)


def _set_seed(base: int, method: str, repeat: int, class_index: int) -> int:
    """Seed of one added set, distinct for every (method, repeat, class)."""
    ss = np.random.SeedSequence([int(base), METHODS.index(method), int(repeat), int(class_index)])
    return int(ss.generate_state(1)[0] % (2**31 - 1))


def augmentation_experiment(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    generate: GenerateFn,
    cfg: AugmentConfig | None = None,
    *,
    progress: bool = True,
    accelerator: str = "auto",
    devices: int | str = "auto",
) -> pd.DataFrame:
    """Per-class accuracy with generated, classical or no additions to the minority classes (§8.1).

    For each repeat r = 0..repeats-1 a classifier is trained (seed ``cfg.classifier.seed + r``)

    * once on the real training set alone (``"none"``, ``n_added`` = 0), and
    * for each ``n`` in ``cfg.additions`` and each method in ``"classical"``, ``"generated"``:
      on the real training set plus ``n`` extra images of every minority class,

    and tested on the same real test set. Every run uses the same loss (``cfg.loss_weights``:
    class weights fixed from the original training set, or none) and no random flips, so the
    runs of one repeat differ only by the added images. The added sets of a (method, repeat, class) are
    drawn once with ``max(additions)`` images and the first ``n`` are used for addition ``n``
    (nested sets: within a repeat, a larger addition extends the smaller one; the repeats use
    different seeds, so the sets of different repeats differ, as in the paper). Generation is
    thus ``repeats × len(minority_classes) × max(additions)`` images in all.

    Parameters
    ----------
    train_images, test_images : (n, 1, N, N) float32 real images in [-1, 1].
    train_labels, test_labels : (n,) int class indices into ``cfg.class_names``.
    generate : ``generate(class_index, n, seed) -> (n, 1, N, N)`` images of that class in
        [-1, 1] (e.g. sampling the diffusion model); different seeds must give different sets.
    cfg : experiment settings.
    progress : progress bar over the training runs (tqdm).
    accelerator, devices : passed to :func:`~helioforge.diffusion.classifier.train_classifier`.

    Returns
    -------
    pandas.DataFrame
        One row per (method, n_added, repeat, class) for every class of ``cfg.class_names``:
        ``method``, ``n_added``, ``repeat``, ``class``, ``class_index``, ``accuracy`` (recall of
        that class on the real test set; NaN if it has no test images), ``support`` (its test
        images), ``macro_f1`` (of the run, over the classes present in the test set),
        ``n_train`` (training images incl. additions), ``added`` (whether this class received
        images in this run), ``seed`` (classifier seed). ``df.attrs`` holds ``notes``
        (list of str: skipped combinations, e.g. classical augmentation of a minority class
        without real training images, which only the generated method can fill),
        ``minority_classes``, ``class_names``, ``additions`` and ``config``.

    Raises
    ------
    ValueError
        Bad shapes or labels, an unknown minority class, no additions/repeats, or ``generate``
        returning the wrong shape or non-finite values.
    """
    cfg = cfg or AugmentConfig()
    names = tuple(cfg.class_names)
    n_classes = len(names)
    train_images = check_images(train_images, 2)
    test_images = check_images(test_images, 1)
    if test_images.shape[-1] != train_images.shape[-1]:
        raise ValueError(f"test images are {test_images.shape[-1]}² but training images {train_images.shape[-1]}²")
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    for what, lab, imgs in (("train_labels", train_labels, train_images), ("test_labels", test_labels, test_images)):
        if lab.ndim != 1 or len(lab) != len(imgs):
            raise ValueError(f"{what} must be (n,) with n = {len(imgs)}, got shape {lab.shape}")
        if lab.min() < 0 or lab.max() >= n_classes:
            raise ValueError(f"{what} must lie in 0..{n_classes - 1}, got {lab.min()}..{lab.max()}")
    train_labels = train_labels.astype(np.int64)
    test_labels = test_labels.astype(np.int64)
    unknown = [c for c in cfg.minority_classes if c not in names]
    if unknown:
        raise ValueError(f"minority classes {unknown} are not among the class names {names}")
    additions = tuple(int(a) for a in cfg.additions)
    if not additions or min(additions) <= 0:
        raise ValueError(f"additions must be positive counts, got {cfg.additions}")
    if cfg.repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {cfg.repeats}")
    if cfg.loss_weights not in ("original", "none"):
        raise ValueError(f"loss_weights must be 'original' or 'none', got {cfg.loss_weights!r}")
    minority = [names.index(c) for c in cfg.minority_classes]
    size = train_images.shape[-1]
    # one loss for every arm: weights from the original training set (or none), no flips
    fixed_weights = (class_weights(train_labels, n_classes) if cfg.loss_weights == "original"
                     else np.ones(n_classes, dtype=np.float32))
    n_max = max(additions)
    notes: list[str] = []

    # plan the runs: (method, n_added, repeat)
    runs = [("none", 0, r) for r in range(cfg.repeats)]
    runs += [(m, n, r) for m in ("classical", "generated") for n in additions for r in range(cfg.repeats)]
    counts = np.bincount(train_labels, minlength=n_classes)
    classical_ok = [k for k in minority if counts[k] > 0]
    for k in minority:
        if counts[k] == 0:
            notes.append(f"classical: class {names[k]} has no real training images, nothing to augment; "
                         f"classical runs add no {names[k]} images (only the generated method can)")
    if not classical_ok:
        notes.append("classical: no minority class has real training images; all classical runs skipped")
        runs = [run for run in runs if run[0] != "classical"]

    pools: dict[tuple[str, int, int], np.ndarray] = {}

    def added_set(method: str, repeat: int, k: int) -> np.ndarray:
        key = (method, repeat, k)
        if key not in pools:
            seed = _set_seed(cfg.seed, method, repeat, k)
            if method == "classical":
                imgs = classical_augment(train_images[train_labels == k], n_max, seed=seed,
                                         rotation_deg=cfg.rotation_deg, affine_deg=cfg.affine_deg,
                                         translate=cfg.translate, shear_deg=cfg.shear_deg)
            else:
                imgs = np.asarray(generate(k, n_max, seed), dtype=np.float32)
                if imgs.shape != (n_max, 1, size, size):
                    raise ValueError(f"generate({k} = class {names[k]}, {n_max}, seed={seed}) returned shape "
                                     f"{imgs.shape}, expected {(n_max, 1, size, size)}")
                if not np.all(np.isfinite(imgs)):
                    raise ValueError(f"generate({k} = class {names[k]}, {n_max}, seed={seed}) returned non-finite values")
            pools[key] = imgs
        return pools[key]

    iterator: Any = runs
    if progress:
        iterator = track(runs, "augmentation experiment", unit="run")
    rows: list[dict[str, Any]] = []
    for method, n_add, repeat in iterator:
        receivers = {"none": [], "classical": classical_ok, "generated": minority}[method]
        extra_x = [added_set(method, repeat, k)[:n_add] for k in receivers]
        extra_y = [np.full(n_add, k, dtype=np.int64) for k in receivers]
        x = np.concatenate([train_images, *extra_x]) if extra_x else train_images
        y = np.concatenate([train_labels, *extra_y]) if extra_y else train_labels
        seed = cfg.classifier.seed + repeat
        clf_cfg = ClassifierConfig(**{**asdict(cfg.classifier), "seed": seed, "flips": False})
        clf = train_classifier(x, y, clf_cfg, n_classes=n_classes, class_names=names, workdir=None,
                               accelerator=accelerator, devices=devices, progress=False, class_weight=fixed_weights)
        scores = classification_scores(test_labels, clf.predict(test_images), n_classes, names)
        for k, name in enumerate(names):
            pc = scores["per_class"][name]
            rows.append({"method": method, "n_added": n_add, "repeat": repeat, "class": name, "class_index": k,
                         "accuracy": pc["accuracy"], "support": pc["support"], "macro_f1": scores["macro_f1"],
                         "n_train": len(x), "added": k in receivers, "seed": seed})
        log.info("%s +%d (repeat %d): macro F1 %.3f; %s", method, n_add, repeat, scores["macro_f1"],
                 ", ".join(f"{names[k]} {scores['per_class'][names[k]]['accuracy']:.2f}" for k in minority))
    df = pd.DataFrame(rows)
    df.attrs["notes"] = notes
    df.attrs["minority_classes"] = list(cfg.minority_classes)
    df.attrs["class_names"] = list(names)
    df.attrs["additions"] = list(additions)
    df.attrs["config"] = asdict(cfg)
    df.attrs["loss_weights"] = fixed_weights.tolist()
    for note in notes:
        log.warning(note)
    return df


def summarize_augmentation(df: pd.DataFrame) -> pd.DataFrame:
    """Per-class accuracy table: mean and spread over repeats per (method, n_added, class) (§8.1).

    Parameters
    ----------
    df : the table of :func:`augmentation_experiment`.

    Returns
    -------
    pandas.DataFrame
        Columns ``method``, ``n_added``, ``class``, ``accuracy_mean``, ``accuracy_std``
        (sample std, ddof = 1; NaN for one repeat), ``macro_f1_mean``, ``macro_f1_std``,
        ``support``, ``repeats``; ordered none → classical → generated, then n_added, then
        class index. ``attrs`` are carried over.

    Raises
    ------
    ValueError
        When a required column is missing.
    """
    need = {"method", "n_added", "repeat", "class", "class_index", "accuracy", "support", "macro_f1"}
    missing = need - set(df.columns)
    if missing:
        raise ValueError(f"augmentation table lacks columns {sorted(missing)}")
    g = df.groupby(["method", "n_added", "class_index", "class"], sort=False)
    out = g.agg(accuracy_mean=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
                macro_f1_mean=("macro_f1", "mean"), macro_f1_std=("macro_f1", "std"),
                support=("support", "first"), repeats=("repeat", "nunique")).reset_index()
    out["_m"] = out["method"].map({m: i for i, m in enumerate(METHODS)}).fillna(len(METHODS))
    out = out.sort_values(["_m", "n_added", "class_index"]).drop(columns=["_m"]).reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out
