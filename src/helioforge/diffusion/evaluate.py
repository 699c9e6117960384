"""Evaluation of a trained flare-conditioned diffusion model (Ramunno et al. 2024, §5–7) and the
augmentation experiment (§8.1).

What is compared with what:

* **Feature space.** A ceVAE-style convolutional VAE (:mod:`helioforge.diffusion.features`) is
  trained on the *real training images*; its posterior means are the domain features (the
  paper's cluster metrics also use a ceVAE latent space, §6).
* **Fréchet distance** (Heusel et al. 2017) in that space between the generated set (drawn with
  the training set's class proportions, as many images as the held-out real test set) and the
  real training set, beside the same distance for the held-out real test set, which is what a
  generator producing new, real-like images should reach at that sample size. The Inception FID
  is added when the user points to local InceptionV3 weights.
* **Cluster metrics** (Hackstein et al. 2023; :func:`helioforge.diffusion.metrics.cluster_metrics`)
  with k-means (k = 5) fitted on the real training features: the GT row (real against real, random
  halves), the held-out real row and the generated row.
* **Classifier scores** (§6): a flare-class classifier trained on the real training images is
  scored on the held-out real images and on generated images with uniform classes; their ratio
  is the paper's 0.70 (discrete model).
* **Std maps** per class, real beside generated (Fig. 4), and a sample grid per class (Fig. 5).

Classes with fewer than ``min_class_images`` training images are not generated (the model has
not seen them); the report lists them.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from helioforge.data.goes import FLARE_CLASSES, flux_to_class
from helioforge.diffusion.augment import augmentation_experiment, plot_augmentation, summarize_augmentation
from helioforge.diffusion.classifier import TrainedClassifier, classification_scores, score_ratio, train_classifier
from helioforge.diffusion.config import DiffusionProfile
from helioforge.diffusion.features import FeatureEncoder, train_feature_encoder
from helioforge.diffusion.metrics import (
    cluster_metrics,
    frechet_distance,
    inception_fid,
    plot_sample_grid,
    plot_std_maps,
    real_vs_real_cluster_metrics,
    std_maps,
)
from helioforge.diffusion.pipeline import DiffusionWorkspace, class_conditions, load_dataset
from helioforge.diffusion.sampling import sample
from helioforge.diffusion.training import load_diffusion
from helioforge.errors import InputError, ProductError, check_count, describe_path_problem
from helioforge.io import write_json
from helioforge.nn.training import inference_device

__all__ = ["evaluate", "augment_experiment", "brightness_index", "eligible_classes"]

log = logging.getLogger(__name__)


def brightness_index(images: np.ndarray) -> np.ndarray:
    """Per-image activity proxy: the 99.5th percentile of the scaled intensity (n,) — bright
    active regions and flares raise it; a quiet Sun keeps it near the disk level."""
    return np.percentile(np.asarray(images).reshape(len(images), -1), 99.5, axis=1)


def eligible_classes(counts: dict[str, int], min_images: int) -> list[int]:
    """Indices of the classes with at least ``min_images`` training images."""
    return [i for i, c in enumerate(FLARE_CLASSES) if counts.get(c, 0) >= min_images]


def _reuse_or_train(ws: DiffusionWorkspace, step: str, digest: str, folder: Path, load, train):
    """``load(stem)`` when ``step`` is current with ``digest`` and its files are those written;
    otherwise (or when they cannot be loaded) clear ``folder`` (a run made with other data or
    settings must never be resumed), ``train()`` and mark the step with its files."""
    stem = folder / step
    files = (stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
    if ws.is_current(step, digest, *files):
        try:
            return load(stem)
        except ProductError as exc:
            log.warning("%s; retraining it", exc)
    ws.unmark(step)
    shutil.rmtree(folder, ignore_errors=True)
    out = train()
    ws.mark(step, digest, *files)
    return out


def _feature_encoder(profile: DiffusionProfile, ws: DiffusionWorkspace, images: np.ndarray, digest: str, **kw) -> FeatureEncoder:
    return _reuse_or_train(ws, "feature_encoder", profile.digest("features", extra=digest), ws.features_dir,
                           FeatureEncoder.load, lambda: train_feature_encoder(images, profile.features, ws.features_dir, **kw))


def _classifier(profile: DiffusionProfile, ws: DiffusionWorkspace, images: np.ndarray, labels: np.ndarray, digest: str,
                **kw) -> TrainedClassifier:
    return _reuse_or_train(ws, "classifier", profile.digest("classifier", extra=digest), ws.classifier_dir,
                           TrainedClassifier.load,
                           lambda: train_classifier(images, labels, profile.classifier, workdir=ws.classifier_dir, **kw))


def _conditions(net, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Conditions producing images of ``classes``: the class index for the class model; for the
    flux model a log10 flux drawn uniformly within the class decade (A: 1e-8–1e-7 W m⁻²)."""
    if net.condition == "class":
        return classes
    return rng.uniform(-8.0 + classes, -7.0 + classes)


def _check_workdir(ws: DiffusionWorkspace, condition: str) -> None:
    """Refuse a work folder without a finished dataset and model before anything is written
    (a missing folder is not created)."""
    if condition not in ("class", "flux"):
        raise InputError(f"condition must be 'class' or 'flux', got {condition!r}")
    if not ws.root.is_dir():
        raise ProductError(ws.dataset, "no labelled dataset (the work folder does not exist)",
                           f"run `helioforge diffusion label -w {ws.root}`")
    ws.require_dataset()
    ws.require_model(condition)


def _load_trained(ws: DiffusionWorkspace, condition: str, accelerator: str = "auto"):
    """(dataset, model stem, net, model config, device) of a work folder's trained model, after
    checking that labelling and training finished and their files are unchanged."""
    ws.require_dataset()
    stem = ws.require_model(condition)
    data = load_dataset(ws.dataset)
    device = inference_device(accelerator)
    net, config = load_diffusion(stem, device)
    return data, stem, net, config, device


def evaluate(
    profile: DiffusionProfile,
    ws: DiffusionWorkspace,
    report_dir: str | Path,
    *,
    condition: str | None = None,
    inception_weights: str | Path | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the trained ``condition`` model; write ``metrics.json``, figures and
    ``index.html`` to ``report_dir``; return the metrics.

    Holds the work folder's lock (it trains the feature encoder and the classifier there).

    Raises :class:`~helioforge.errors.ProductError` when the dataset or the model is missing,
    unfinished or damaged (naming the file and the command that makes it),
    :class:`~helioforge.errors.InputError` for missing Inception weights, ``ValueError`` when
    fewer than two classes can be generated.
    """
    condition = condition or profile.train.condition
    if inception_weights is not None:
        why = describe_path_problem(inception_weights)
        if why:
            raise InputError(f"{inception_weights}: --inception-weights {why}")
    _check_workdir(ws, condition)
    with ws.lock():
        return _evaluate_locked(profile, ws, Path(report_dir), condition, inception_weights, accelerator, devices,
                                progress)


def _evaluate_locked(profile, ws, report_dir, condition, inception_weights, accelerator, devices, progress):
    from helioforge.diffusion.report import write_evaluation_html

    t_start = time.perf_counter()
    data, stem, net, config, device = _load_trained(ws, condition, accelerator)
    report_dir.mkdir(parents=True, exist_ok=True)
    ev = profile.evaluate
    tr_x, tr_c, tr_f = data.split("train")
    te_x, te_c, te_f = data.split("test")
    counts = config.get("class_counts") or data.class_counts("train")
    eligible = eligible_classes(counts, ev.min_class_images)
    if not eligible:
        raise ValueError(f"no class has ≥ {ev.min_class_images} training images ({counts})")
    left_out = [c for i, c in enumerate(FLARE_CLASSES) if i not in eligible]
    kw = dict(accelerator=accelerator, devices=devices, progress=progress)
    encoder = _feature_encoder(profile, ws, tr_x, data.meta["digest"], **kw)
    clf = _classifier(profile, ws, tr_x, tr_c, data.meta["digest"], **kw)

    rng = np.random.default_rng(ev.seed)
    n_gen = int(ev.n_generated or len(te_x))
    prop_cls = class_conditions({FLARE_CLASSES[i]: counts[FLARE_CLASSES[i]] for i in eligible}, n_gen, rng)
    if net.condition == "flux":
        ok = np.isfinite(tr_f)
        prop_cond = rng.choice(tr_f[ok], n_gen)  # the training flux distribution
        prop_cls = flux_to_class(10.0 ** prop_cond)
    else:
        prop_cond = prop_cls
    uni_cls = np.repeat(np.array(eligible), ev.n_per_class)
    uni_cond = _conditions(net, uni_cls, rng)
    skw = dict(sampler=ev.sampler, steps=ev.steps, cfg_scale=ev.cfg_scale, eta=ev.eta, device=device, progress=progress,
               batch_size=profile.sample.batch_size)
    gen_p = sample(net, config["train"], prop_cond, seed=ev.seed, **skw)
    gen_u = sample(net, config["train"], uni_cond, seed=ev.seed + 1, **skw)

    f_tr, f_te, f_gp = encoder.encode(tr_x), encoder.encode(te_x), encoder.encode(gen_p.images)
    k = ev.k
    metrics: dict[str, Any] = {
        "condition": net.condition,
        "model": str(stem),
        "profile": profile.name,
        "data": {"train": data.class_counts("train"), "test": data.class_counts("test"),
                 "n_train": int(len(tr_x)), "n_test": int(len(te_x)), **data.meta},
        "generated": {"n_proportional": n_gen, "n_per_class": ev.n_per_class,
                      "classes": [FLARE_CLASSES[i] for i in eligible], "left_out": left_out,
                      "sampler": ev.sampler, "steps": ev.steps, "cfg_scale": ev.cfg_scale, "eta": ev.eta,
                      "nfe_per_image": gen_p.nfe_per_image,
                      "seconds_per_image": (gen_p.seconds + gen_u.seconds) / (len(gen_p.images) + len(gen_u.images))},
        "feature_space": {"encoder": "ceVAE-style convolutional VAE trained on the real training images",
                          "latent_dim": int(f_tr.shape[1]), "config": profile.features.__dict__},
        "frechet": {"generated_vs_train": frechet_distance(f_gp, f_tr),
                    "real_test_vs_train": frechet_distance(f_te, f_tr)},
        "cluster": {"gt_real_halves": real_vs_real_cluster_metrics(f_tr, k=k, seed=ev.seed),
                    "real_test": cluster_metrics(f_tr, f_te, k=k, seed=ev.seed),
                    "generated": cluster_metrics(f_tr, f_gp, k=k, seed=ev.seed)},
    }
    if inception_weights:
        metrics["inception_fid"] = {"generated_vs_train": inception_fid(tr_x, gen_p.images, inception_weights),
                                    "real_test_vs_train": inception_fid(tr_x, te_x, inception_weights),
                                    "weights": str(inception_weights)}
    real_scores = classification_scores(te_c, clf.predict(te_x))
    gen_scores = classification_scores(uni_cls, clf.predict(gen_u.images))
    metrics["classifier"] = {"real_test": real_scores, "generated_uniform": gen_scores,
                             "ratio": score_ratio(gen_scores, real_scores),
                             "train_fit": clf.config.get("final_metrics", {})}
    bi_real, bi_gen = brightness_index(data.images), brightness_index(gen_u.images)
    all_cls = data.table["class_index"].to_numpy()
    metrics["brightness_index"] = {
        c: {"real_mean": float(bi_real[all_cls == i].mean()) if (all_cls == i).any() else None,
            "generated_mean": float(bi_gen[uni_cls == i].mean()) if (uni_cls == i).any() else None}
        for i, c in enumerate(FLARE_CLASSES)}
    # figures
    real_std, gen_std = std_maps(data.images, all_cls), std_maps(gen_u.images, uni_cls)
    figs = {
        "histogram": ws.histogram,
        "std_maps": plot_std_maps(real_std, gen_std, FLARE_CLASSES, report_dir / "std_maps.png"),
        "samples": plot_sample_grid(gen_u.images, uni_cls, FLARE_CLASSES, report_dir / "samples_per_class.png",
                                    wavelength=data.meta["wavelength"]),
        "real": plot_sample_grid(data.images, all_cls, FLARE_CLASSES, report_dir / "real_per_class.png",
                                 wavelength=data.meta["wavelength"]),
    }
    if ws.histogram.is_file():
        shutil.copyfile(ws.histogram, report_dir / "class_histogram.png")
        figs["histogram"] = report_dir / "class_histogram.png"
    metrics["figures"] = {k: Path(v).name for k, v in figs.items()}
    metrics["training_s"] = ws.state().get("training_s", {})
    metrics["evaluate_s"] = round(time.perf_counter() - t_start, 1)
    write_json(report_dir / "metrics.json", metrics)
    write_evaluation_html(report_dir, metrics)
    return metrics


def augment_experiment(
    profile: DiffusionProfile,
    ws: DiffusionWorkspace,
    report_dir: str | Path,
    *,
    condition: str | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """§8.1: classifier accuracy per minority class with +generated, +classical-augmented or
    no added images (``profile.augment``); writes ``augmentation.csv``, ``augmentation_summary.csv``,
    ``augmentation.json``, Figs. 6–8 and ``augmentation.html`` to ``report_dir``.

    Minority classes the model never saw in training (fewer than ``min_class_images``) are
    dropped from the experiment and listed in the report. Holds the work folder's lock.

    Raises :class:`~helioforge.errors.InputError` for additions or repeats < 1 and
    :class:`~helioforge.errors.ProductError` for a missing, unfinished or damaged dataset or model.
    """
    condition = condition or profile.train.condition
    additions = tuple(profile.augment.additions)
    if not additions:
        raise InputError("--additions must name at least one count of images to add")
    for a in additions:
        check_count("--additions", a)
    check_count("--repeats", profile.augment.repeats)
    _check_workdir(ws, condition)
    with ws.lock():
        return _augment_locked(profile, ws, Path(report_dir), condition, accelerator, devices, progress)


def _augment_locked(profile, ws, report_dir, condition, accelerator, devices, progress):
    from helioforge.diffusion.report import write_augmentation_html

    data, stem, net, config, device = _load_trained(ws, condition, accelerator)
    report_dir.mkdir(parents=True, exist_ok=True)
    counts = config.get("class_counts") or data.class_counts("train")
    ok = set(eligible_classes(counts, profile.evaluate.min_class_images))
    cfg = copy.deepcopy(profile.augment)
    dropped = [c for c in cfg.minority_classes if FLARE_CLASSES.index(c) not in ok]
    cfg.minority_classes = tuple(c for c in cfg.minority_classes if FLARE_CLASSES.index(c) in ok)
    if not cfg.minority_classes:
        raise ValueError(f"none of the minority classes {profile.augment.minority_classes} has training images ({counts})")
    ev = profile.evaluate
    rng = np.random.default_rng(ev.seed)

    def generate(class_index: int, n: int, seed: int) -> np.ndarray:
        cond = _conditions(net, np.full(n, class_index), rng)
        return sample(net, config["train"], cond, sampler=ev.sampler, steps=ev.steps, cfg_scale=ev.cfg_scale, eta=ev.eta,
                      seed=seed, device=device, progress=False, batch_size=profile.sample.batch_size).images

    tr_x, tr_c, _ = data.split("train")
    te_x, te_c, _ = data.split("test")
    t0 = time.perf_counter()
    df = augmentation_experiment(tr_x, tr_c, te_x, te_c, generate, cfg, progress=progress,
                                 accelerator=accelerator, devices=devices)
    summary = summarize_augmentation(df)
    from helioforge.io import atomic_path

    for name, table in (("augmentation.csv", df), ("augmentation_summary.csv", summary)):
        with atomic_path(report_dir / name, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
    figs = plot_augmentation(df, report_dir / "augmentation")
    result = {
        "condition": net.condition,
        "profile": profile.name,
        "additions": list(cfg.additions),
        "repeats": cfg.repeats,
        "minority_classes": list(cfg.minority_classes),
        "dropped_classes": dropped,
        "paper_scale": profile.name == "paper",
        "classifier_epochs": cfg.classifier.epochs,
        "train_counts": data.class_counts("train"),
        "test_counts": data.class_counts("test"),
        "notes": list(df.attrs.get("notes", [])),
        "summary": summary.to_dict(orient="records"),
        "figures": [Path(f).name for f in figs],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(report_dir / "augmentation.json", result)
    write_augmentation_html(report_dir, result)
    return result
