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
from helioforge.diffusion.augment import augmentation_experiment, summarize_augmentation
from helioforge.diffusion.classifier import (
    TrainedClassifier,
    chance_scores,
    classification_scores,
    common_classes,
    score_ratio,
    train_classifier,
)
from helioforge.diffusion.config import DiffusionProfile
from helioforge.diffusion.data import class_conditions, load_dataset
from helioforge.diffusion.features import FeatureEncoder, train_feature_encoder
from helioforge.diffusion.infer import sample
from helioforge.diffusion.metrics import (
    bootstrap_scores,
    brightness_index,
    cluster_metrics,
    frechet_distance,
    inception_fid,
    mean_std,
    pixel_gaussian_images,
    real_vs_real_cluster_metrics,
    std_maps,
)
from helioforge.diffusion.pipeline import DiffusionWorkspace
from helioforge.diffusion.report import (
    augmentation_pivot,
    conclusions,
    plot_augmentation,
    plot_sample_grid,
    plot_std_maps,
    write_augmentation_html,
    write_evaluation_html,
)
from helioforge.diffusion.train import load_diffusion
from helioforge.errors import InputError, ProductError, check_count, describe_path_problem
from helioforge.io import atomic_path, write_json
from helioforge.nn.training import inference_device

__all__ = ["evaluate", "augment_experiment", "eligible_classes", "minority_classes", "resolved_steps"]

log = logging.getLogger(__name__)


def eligible_classes(counts: dict[str, int], min_images: int) -> list[int]:
    """Indices of the classes with at least ``min_images`` training images.

    Parameters
    ----------
    counts : dict of str to int
        Training images per class name (A, B, C, M, X); missing names count 0.
    min_images : int
        Least number of training images of a class the model may generate.

    Returns
    -------
    list of int
        Class indices 0..4, ascending.
    """
    return [i for i, c in enumerate(FLARE_CLASSES) if counts.get(c, 0) >= min_images]


def _reuse_or_train(ws: DiffusionWorkspace, step: str, digest: str, folder: Path, load, train):
    """``load(stem)`` when ``step`` is current with ``digest`` and its files are those written;
    otherwise (or when they cannot be loaded) clear ``folder`` (a run made with other data or
    settings must never be resumed) and ``train()`` through the step protocol
    (:meth:`~helioforge.workspace.StepState.run_step`), which marks the step with its files."""
    stem = folder / step
    files = (stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
    if ws.is_current(step, digest, *files):
        try:
            return load(stem)
        except ProductError as exc:
            log.warning("%s; retraining it", exc)
    made = []

    def build() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        made.append(train())

    ws.run_step(step, digest, files, build, force=True)  # checked above: not current, or not loadable
    return made[0]


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
    """Evaluate the trained ``condition`` model (Ramunno et al. 2024, §5–7).

    Writes ``metrics.json``, figures and ``index.html`` to ``report_dir``. Holds the work
    folder's lock (it trains the feature encoder and the classifier there).

    Parameters
    ----------
    profile : DiffusionProfile
        Its ``evaluate``, ``sample``, ``features`` and ``classifier`` sections set the run.
    ws : DiffusionWorkspace
        Work folder with a finished labelled dataset and trained model.
    report_dir : str or pathlib.Path
        Output folder (created).
    condition : str or None
        ``"class"`` or ``"flux"``; default ``profile.train.condition``.
    inception_weights : str or pathlib.Path or None
        Local InceptionV3 weights; when given, the Inception FID is added.
    accelerator, devices : str or int
        Passed to Lightning / the inference device choice.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``: Fréchet distances, cluster metrics, classifier
        scores and ratios, baseline, brightness index, conclusions, figure names, timings.

    Raises
    ------
    helioforge.errors.InputError
        For missing or unreadable Inception weights, ``evaluate.repeats`` < 1, or a condition
        other than ``class``/``flux``.
    helioforge.errors.ProductError
        When the dataset or the model is missing, unfinished or damaged (naming the file and
        the command that makes it).
    helioforge.errors.FolderInUse
        When another process holds the work folder's lock.
    ValueError
        When no class has ``min_class_images`` training images, or no generated class is in the
        held-out real test set (no score ratio can be formed).
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


def resolved_steps(sampler: str, train_config: dict[str, Any]) -> int:
    """Steps a sampler takes when none are given (as :func:`helioforge.diffusion.infer.make_sampler`).

    Parameters
    ----------
    sampler : str
        ``"ddpm"``, ``"ddim"`` or ``"dpm"``.
    train_config : dict
        The model's training settings (``num_train_timesteps`` T, default 1000).

    Returns
    -------
    int
        T for ``ddpm``, 50 for ``ddim``, 20 for ``dpm``, 0 for an unknown sampler.
    """
    return {"ddpm": int(train_config.get("num_train_timesteps", 1000)), "ddim": 50, "dpm": 20}.get(sampler, 0)


def _summarise_repeats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over repeats of every number of a list of nested per-repeat dicts."""
    first = runs[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = _summarise_repeats([r[key] for r in runs])
        elif isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
            out[key] = mean_std([r[key] for r in runs])
    return out


def _evaluate_locked(profile, ws, report_dir, condition, inception_weights, accelerator, devices, progress):
    t_start = time.perf_counter()
    data, stem, net, config, device = _load_trained(ws, condition, accelerator)
    report_dir.mkdir(parents=True, exist_ok=True)
    ev, sc = profile.evaluate, profile.sample
    check_count("repeats", ev.repeats)
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
    # one class set on both sides of every ratio: the held-out real classes the model generates
    common = common_classes(te_c, eligible)
    if not common:
        raise ValueError(f"no class is both generated ({[FLARE_CLASSES[i] for i in eligible]}) and in the held-out "
                         f"real test set ({data.class_counts('test')}): no F1 ratio can be formed")
    common_names = [FLARE_CLASSES[i] for i in common]

    n_gen = int(ev.n_generated or len(te_x))
    skw = dict(sampler=sc.sampler, steps=sc.steps, cfg_scale=sc.cfg_scale, eta=sc.eta, device=device,
               progress=progress, batch_size=sc.batch_size)
    f_tr, f_te = encoder.encode(tr_x), encoder.encode(te_x)
    k = ev.k
    pred_te = clf.predict(te_x)
    real_scores = classification_scores(te_c, pred_te, macro_classes=common)
    real_chance = chance_scores(te_c, pred_te, common, ev.chance_permutations, seed=ev.seed)
    real_boot = bootstrap_scores(te_c, pred_te, common, ev.chance_permutations, seed=ev.seed)
    majority = int(np.argmax(np.bincount(tr_c, minlength=len(FLARE_CLASSES))))
    real_majority = classification_scores(te_c, np.full(len(te_c), majority), macro_classes=common)

    runs, base_runs, fid_runs = [], [], []
    gen_u_first = uni_cls_first = None
    nfe = None
    seconds, n_images = 0.0, 0
    rng_base = np.random.default_rng(ev.seed + 10_000)
    for r in range(int(ev.repeats)):
        rng = np.random.default_rng(ev.seed + 2 * r)
        prop_cls = class_conditions({FLARE_CLASSES[i]: counts[FLARE_CLASSES[i]] for i in eligible}, n_gen, rng)
        if net.condition == "flux":
            ok = np.isfinite(tr_f)
            prop_cond = rng.choice(tr_f[ok], n_gen)  # the training flux distribution
            prop_cls = flux_to_class(10.0 ** prop_cond)
        else:
            prop_cond = prop_cls
        uni_cls = np.repeat(np.array(eligible), ev.n_per_class)
        uni_cond = _conditions(net, uni_cls, rng)
        log.info("evaluation set %d of %d: %d proportional + %d uniform images (%s, %s steps)", r + 1, ev.repeats,
                 n_gen, len(uni_cls), sc.sampler, sc.steps or "default")
        gen_p = sample(net, config["train"], prop_cond, seed=ev.seed + 2 * r, **skw)
        gen_u = sample(net, config["train"], uni_cond, seed=ev.seed + 2 * r + 1, **skw)
        nfe = gen_p.nfe_per_image
        seconds += gen_p.seconds + gen_u.seconds
        n_images += len(gen_p.images) + len(gen_u.images)
        if r == 0:
            gen_u_first, uni_cls_first = gen_u.images, uni_cls
        pred_u = clf.predict(gen_u.images)
        gen_scores = classification_scores(uni_cls, pred_u, macro_classes=common)
        if inception_weights:
            fid_runs.append(inception_fid(tr_x, gen_p.images, inception_weights))
        f_gp = encoder.encode(gen_p.images)
        runs.append({
            "frechet": frechet_distance(f_gp, f_tr),
            "cluster": cluster_metrics(f_tr, f_gp, k=k, seed=ev.seed),
            "scores": {key: gen_scores[key] for key in ("macro_f1", "macro_precision", "macro_recall")},
            "per_class_f1": {c: gen_scores["per_class"][c]["f1"] for c in common_names},
            "ratio": score_ratio(gen_scores, real_scores),
            "chance": {key: v for key, v in chance_scores(uni_cls, pred_u, common, ev.chance_permutations,
                                                           seed=ev.seed + r).items() if key.startswith("macro")},
        })
        # the trivial generator of the same sizes (per-pixel Gaussian of each class's real images)
        elig = np.array(eligible)
        base_p_cls = elig[np.abs(np.asarray(prop_cls)[:, None] - elig[None, :]).argmin(1)]  # nearest trained class
        base_p = pixel_gaussian_images(tr_x, tr_c, base_p_cls, rng_base)
        base_u = pixel_gaussian_images(tr_x, tr_c, uni_cls, rng_base)
        base_scores = classification_scores(uni_cls, clf.predict(base_u), macro_classes=common)
        f_bp = encoder.encode(base_p)
        base_runs.append({
            "frechet": frechet_distance(f_bp, f_tr),
            "cluster": cluster_metrics(f_tr, f_bp, k=k, seed=ev.seed),
            "scores": {key: base_scores[key] for key in ("macro_f1", "macro_precision", "macro_recall")},
            "ratio": score_ratio(base_scores, real_scores),
        })
    gen = _summarise_repeats(runs)
    base = _summarise_repeats(base_runs)
    steps = sc.steps or resolved_steps(sc.sampler, config["train"])
    sampler_label = f"{sc.sampler} ({steps} steps, w = {sc.cfg_scale:g}" + (
        f", η = {sc.eta:g}" if sc.sampler == "ddim" else "") + ")"
    metrics: dict[str, Any] = {
        "condition": net.condition,
        "model": str(stem),
        "profile": profile.name,
        "data": {"train": data.class_counts("train"), "test": data.class_counts("test"),
                 "n_train": int(len(tr_x)), "n_test": int(len(te_x)), **data.meta},
        "generated": {"repeats": int(ev.repeats), "n_proportional": n_gen, "n_per_class": ev.n_per_class,
                      "classes": [FLARE_CLASSES[i] for i in eligible], "left_out": left_out,
                      "sampler": sc.sampler, "steps": sc.steps, "cfg_scale": sc.cfg_scale, "eta": sc.eta,
                      "sampler_label": sampler_label, "nfe_per_image": nfe,
                      "seconds_per_image": seconds / max(1, n_images)},
        "feature_space": {"encoder": "ceVAE-style convolutional VAE trained on the real training images",
                          "latent_dim": int(f_tr.shape[1]), "config": profile.features.__dict__},
        "frechet": {"generated_vs_train": gen["frechet"], "real_test_vs_train": frechet_distance(f_te, f_tr),
                    "baseline_vs_train": base["frechet"]},
        "cluster": {"gt_real_halves": real_vs_real_cluster_metrics(f_tr, k=k, seed=ev.seed),
                    "real_test": cluster_metrics(f_tr, f_te, k=k, seed=ev.seed),
                    "generated": gen["cluster"], "baseline": base["cluster"]},
        "baseline": {"name": "per-pixel Gaussian of each class's real training images",
                     "description": "a generator that knows each class's mean image and per-pixel spread and "
                                    "nothing else; same set sizes and repeats as the generated sets"},
    }
    if inception_weights:
        metrics["inception_fid"] = {"generated_vs_train": mean_std(fid_runs),
                                    "real_test_vs_train": inception_fid(tr_x, te_x, inception_weights),
                                    "weights": str(inception_weights), "note": "proportional sets, as the paper"}
    metrics["classifier"] = {
        "classes": common_names,
        "real_test": real_scores,
        "real_test_chance": real_chance,
        "real_test_bootstrap": real_boot,
        "real_test_majority": {key: real_majority[key] for key in ("macro_f1", "macro_precision", "macro_recall")},
        "majority_class": FLARE_CLASSES[majority],
        "generated_uniform": {**gen["scores"], "per_class_f1": gen["per_class_f1"]},
        "generated_chance": gen["chance"],
        "ratio": gen["ratio"],
        "baseline_uniform": base["scores"],
        "baseline_ratio": base["ratio"],
        "train_fit": clf.config.get("final_metrics", {}),
    }
    bi_real, bi_gen = brightness_index(data.images), brightness_index(gen_u_first)
    all_cls = data.table["class_index"].to_numpy()
    metrics["brightness_index"] = {
        c: {"real_mean": float(bi_real[all_cls == i].mean()) if (all_cls == i).any() else None,
            "generated_mean": float(bi_gen[uni_cls_first == i].mean()) if (uni_cls_first == i).any() else None}
        for i, c in enumerate(FLARE_CLASSES)}
    metrics["conclusions"] = conclusions(metrics)
    # figures
    real_std, gen_std = std_maps(data.images, all_cls), std_maps(gen_u_first, uni_cls_first)
    figs = {
        "histogram": ws.histogram,
        "std_maps": plot_std_maps(real_std, gen_std, FLARE_CLASSES, report_dir / "std_maps.png"),
        "samples": plot_sample_grid(gen_u_first, uni_cls_first, FLARE_CLASSES, report_dir / "samples_per_class.png",
                                    wavelength=data.meta["wavelength"]),
        "real": plot_sample_grid(data.images, all_cls, FLARE_CLASSES, report_dir / "real_per_class.png",
                                 wavelength=data.meta["wavelength"]),
    }
    if ws.histogram.is_file():
        shutil.copyfile(ws.histogram, report_dir / "class_histogram.png")
        figs["histogram"] = report_dir / "class_histogram.png"
    metrics["figures"] = {k: Path(v).name for k, v in figs.items()}
    metrics["labels"] = _labels_summary(ws)
    metrics["training_s"] = ws.state().get("training_s", {})
    metrics["evaluate_s"] = round(time.perf_counter() - t_start, 1)
    write_json(report_dir / "metrics.json", metrics)
    write_evaluation_html(report_dir, metrics)
    return metrics


def _labels_summary(ws: DiffusionWorkspace) -> dict[str, Any]:
    """What the labelling step linked, labelled by flux and skipped (from ``labels.json``)."""
    try:
        rep = ws.read_labels_report()
    except (OSError, ValueError):
        return {}
    keys = ("images_read", "labelled", "unlabelled", "event_linked", "flux_labelled", "histogram", "skipped_by_reason",
            "unlabelled_by_reason", "events", "label_source", "events_file", "flux_file")
    return {k: rep.get(k) for k in keys if k in rep}


def minority_classes(counts: dict[str, int], eligible: set[int] | list[int], fraction: float = 0.5) -> tuple[str, ...]:
    """The least represented classes of a training set that the model can generate.

    Those of ``eligible`` with fewer than ``fraction`` × the largest class's images (the
    paper's A, M and X on its Fig. 1 distribution, §8.1).

    Parameters
    ----------
    counts : dict of str to int
        Training images per class name (A, B, C, M, X); missing names count 0.
    eligible : set or list of int
        Class indices 0..4 the model can generate.
    fraction : float
        Threshold relative to the largest class.

    Returns
    -------
    tuple of str
        Class letters in class-index order (A first).
    """
    top = max(counts.get(c, 0) for c in FLARE_CLASSES)
    return tuple(FLARE_CLASSES[i] for i in sorted(eligible) if counts.get(FLARE_CLASSES[i], 0) < fraction * top)


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
    """The augmentation experiment of §8.1 (Ramunno et al. 2024).

    Classifier accuracy per minority class with +generated, +classical-augmented or no added
    images (``profile.augment``); writes ``augmentation.csv``, ``augmentation_summary.csv``,
    ``augmentation.json``, Figs. 6–8 and ``augmentation.html`` to ``report_dir``.

    Minority classes the model never saw in training (fewer than ``min_class_images``) are
    dropped from the experiment and listed in the report. Holds the work folder's lock.

    Parameters
    ----------
    profile : DiffusionProfile
        Its ``augment``, ``evaluate`` and ``sample`` sections set the run.
    ws : DiffusionWorkspace
        Work folder with a finished labelled dataset and trained model.
    report_dir : str or pathlib.Path
        Output folder (created).
    condition : str or None
        ``"class"`` or ``"flux"``; default ``profile.train.condition``.
    accelerator, devices : str or int
        Passed to Lightning / the inference device choice.
    progress : bool
        Show progress.

    Returns
    -------
    dict
        The content of ``augmentation.json`` (pivot table, conclusions, settings, summary rows,
        figure names, seconds).

    Raises
    ------
    helioforge.errors.InputError
        For no additions, additions or repeats < 1, or a condition other than ``class``/``flux``.
    helioforge.errors.ProductError
        For a missing, unfinished or damaged dataset or model.
    helioforge.errors.FolderInUse
        When another process holds the work folder's lock.
    ValueError
        When none of the minority classes can be generated.
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
    data, stem, net, config, device = _load_trained(ws, condition, accelerator)
    report_dir.mkdir(parents=True, exist_ok=True)
    counts = config.get("class_counts") or data.class_counts("train")
    ok = set(eligible_classes(counts, profile.evaluate.min_class_images))
    cfg = copy.deepcopy(profile.augment)
    if not cfg.minority_classes:  # "auto": the generated classes with under half the largest class's images
        cfg.minority_classes = minority_classes(counts, ok)
    dropped = [c for c in cfg.minority_classes if FLARE_CLASSES.index(c) not in ok]
    cfg.minority_classes = tuple(c for c in cfg.minority_classes if FLARE_CLASSES.index(c) in ok)
    if not cfg.minority_classes:
        raise ValueError(f"none of the minority classes {profile.augment.minority_classes or '(auto)'} can be generated "
                         f"(training images per class: {counts}; at least {profile.evaluate.min_class_images} needed)")
    ev = profile.evaluate
    rng = np.random.default_rng(ev.seed)

    def generate(class_index: int, n: int, seed: int) -> np.ndarray:
        cond = _conditions(net, np.full(n, class_index), rng)
        sc = profile.sample
        return sample(net, config["train"], cond, sampler=sc.sampler, steps=sc.steps, cfg_scale=sc.cfg_scale, eta=sc.eta,
                      seed=seed, device=device, progress=False, batch_size=sc.batch_size).images

    tr_x, tr_c, _ = data.split("train")
    te_x, te_c, _ = data.split("test")
    t0 = time.perf_counter()
    df = augmentation_experiment(tr_x, tr_c, te_x, te_c, generate, cfg, progress=progress,
                                 accelerator=accelerator, devices=devices)
    summary = summarize_augmentation(df)
    for name, table in (("augmentation.csv", df), ("augmentation_summary.csv", summary)):
        with atomic_path(report_dir / name, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
    figs = plot_augmentation(df, report_dir / "augmentation")
    sc = profile.sample
    pivot, pivot_classes, texts = augmentation_pivot(summary, cfg, data.class_counts("test"))
    result = {
        "sampler_label": f"{sc.sampler} ({sc.steps or resolved_steps(sc.sampler, config['train'])} steps, "
                         f"w = {sc.cfg_scale:g})",
        "loss_weights": list(df.attrs.get("loss_weights", [])),
        "loss_weights_text": ("cross-entropy class weights fixed from the original training set "
                              + ", ".join(f"{c} {w:.2f}" for c, w in zip(FLARE_CLASSES, df.attrs.get("loss_weights", [])))
                              if cfg.loss_weights == "original" else "an unweighted cross-entropy"),
        "pivot": pivot,
        "pivot_classes": pivot_classes,
        "conclusions": texts,
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
