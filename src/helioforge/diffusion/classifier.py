"""Supervised GOES flare-class classifier and its scores (Ramunno et al. 2024, §4, §6, App. D).

The paper trains a classifier on real AIA 171 Å images labelled A/B/C/M/X, reports macro F1,
precision and recall on held-out real images (0.55 / 0.57 / 0.54) and on generated images
with uniform classes, and judges a generator by the ratio generated/real of the macro F1
(0.70 for the discrete-label model, Table 1). Here:

* :class:`~helioforge.nn.classifier.FlareClassifier` — a small CNN instead of the paper's DeiT
  (timm/torchvision are unavailable; see that module);
* :func:`train_classifier` — Lightning training, AdamW with cosine learning-rate decay,
  cross-entropy with inverse-frequency class weights (``class_weighted``; flare sets are
  heavily imbalanced — the paper's §8.2 predictor also uses a weighted cross-entropy) and
  random horizontal/vertical flips of the training batches (``flips``; a flip keeps the
  flare class of a full-disk image);
* :func:`classification_scores` / :func:`score_ratio` — scikit-learn metrics.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import kornia.augmentation as K
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from helioforge.data.goes import FLARE_CLASSES
from helioforge.diffusion.config import ClassifierConfig
from helioforge.nn.checkpoint import build_from_weights, save_weights
from helioforge.nn.classifier import FlareClassifier
from helioforge.nn.training import LogProgress, check_images, fit_and_save
from helioforge.progress import stderr_is_terminal

__all__ = [
    "FLARE_CLASSES",
    "FlareClassifierModule",
    "TrainedClassifier",
    "class_weights",
    "train_classifier",
    "classification_scores",
    "common_classes",
    "chance_scores",
    "score_ratio",
]

log = logging.getLogger(__name__)


CLASSIFIER_STEM = "classifier"


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency cross-entropy weights.

    w_c = n / (K · n_c) for the K classes with n_c > 0 training images; classes absent from
    ``labels`` get 0 (they never occur as targets, so their weight has no effect).

    Parameters
    ----------
    labels : numpy.ndarray
        (n,) integer class indices 0..n_classes-1 of the training images.
    n_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray
        (n_classes,) float32 weights ≥ 0, mean 1 over the present classes.

    Raises
    ------
    ValueError
        From :func:`numpy.bincount` for a negative label; a label ≥ ``n_classes`` fails
        with an indexing error (the labels are not otherwise checked).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes, dtype=np.float64)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.astype(np.float32)


def _check_labels(labels: Any, n: int, n_classes: int, what: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{what} must be a 1-D array of {n} class indices, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"{what} must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{what} must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    return labels


class FlareClassifierModule(L.LightningModule):
    """Lightning wrapper of :class:`~helioforge.nn.classifier.FlareClassifier`.

    Parameters
    ----------
    cfg : training settings.
    image_size : side N of the (n, 1, N, N) training images.
    n_classes : number of classes.
    weights : cross-entropy class weights (n_classes,), or ``None`` for an unweighted loss.

    Each step: optional random flips (kornia, p = 0.5 each axis), weighted cross-entropy;
    logs ``loss`` and ``train_acc`` per epoch.
    """

    def __init__(self, cfg: ClassifierConfig, image_size: int, n_classes: int = 5,
                 weights: np.ndarray | None = None):
        super().__init__()
        self.cfg = cfg
        self.image_size = int(image_size)
        self.n_classes = int(n_classes)
        self.model = FlareClassifier(self.image_size, self.n_classes, cfg.width, cfg.dropout)
        w = torch.ones(self.n_classes) if weights is None else torch.as_tensor(np.asarray(weights, np.float32))
        self.register_buffer("class_weight", w)
        self.flip = K.AugmentationSequential(K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)) \
            if cfg.flips else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            (B, 1, N, N) float images in [-1, 1].

        Returns
        -------
        torch.Tensor
            (B, n_classes) logits.
        """
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Weighted cross-entropy of one batch; logs ``loss`` and ``train_acc`` per epoch.

        The images are first flipped at random (horizontal and vertical, p = 0.5 each) when
        ``cfg.flips`` is set.

        Parameters
        ----------
        batch : tuple of torch.Tensor
            ((B, 1, N, N) float images, (B,) int64 class indices).
        batch_idx : int
            Index of the batch (unused).

        Returns
        -------
        torch.Tensor
            Scalar loss, weighted by ``class_weight``.
        """
        x, y = batch
        if self.flip is not None:
            with torch.no_grad():
                x = self.flip(x)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, weight=self.class_weight)
        acc = (logits.argmax(1) == y).float().mean()
        self.log_dict({"loss": loss.detach(), "train_acc": acc}, prog_bar=True, on_step=False, on_epoch=True,
                      batch_size=len(y))
        return loss

    def configure_optimizers(self):
        """AdamW with cosine decay of the learning rate over the epochs."""
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
        return [opt], [sched]


class TrainedClassifier:
    """A trained flare-class classifier ready for inference.

    Parameters
    ----------
    model : the network (switched to eval mode).
    config : JSON-able description (``image_size``, ``n_classes``, ``width``, ``dropout``,
        ``class_names``, training settings, final metrics); saved beside the weights.
    """

    def __init__(self, model: FlareClassifier, config: dict[str, Any]):
        self.model = model.eval()
        self.config = dict(config)

    @property
    def image_size(self) -> int:
        """Side N of the images the classifier takes, pixels."""
        return self.model.image_size

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return self.model.n_classes

    def to(self, device: str | torch.device) -> "TrainedClassifier":
        """Move the network to ``device``.

        Parameters
        ----------
        device : str or torch.device
            Target device, e.g. ``"cpu"`` or ``"cuda:0"``.

        Returns
        -------
        TrainedClassifier
            ``self``.
        """
        self.model.to(device)
        return self

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        images : numpy.ndarray
            (n, 1, N, N) images in [-1, 1], N = ``image_size``; n may be 0.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        numpy.ndarray
            (n, n_classes) float32 probabilities, rows summing to 1.

        Raises
        ------
        ValueError
            For images that are not (n, 1, N, N) with N = ``image_size``.
        """
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"images must be (n, 1, {self.image_size}, {self.image_size}), got {x.shape}")
        self.model.eval()
        device = next(self.model.parameters()).device
        out = [F.softmax(self.model(chunk.to(device)), dim=1).cpu()
               for chunk in torch.from_numpy(x).split(max(1, int(batch_size)))]
        if not out:
            return np.zeros((0, self.n_classes), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Predicted class indices (arg-max of :meth:`predict_proba`).

        Parameters
        ----------
        images : numpy.ndarray
            (n, 1, N, N) images in [-1, 1], N = ``image_size``.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        numpy.ndarray
            (n,) int64 class indices.

        Raises
        ------
        ValueError
            For images of the wrong shape (see :meth:`predict_proba`).
        """
        return self.predict_proba(images, batch_size).argmax(1).astype(np.int64)

    def save(self, path_stem: str | Path) -> Path:
        """Write the weights and their JSON configuration.

        Parameters
        ----------
        path_stem : str or pathlib.Path
            Path without suffix; ``<stem>.safetensors`` and ``<stem>.json`` are written.

        Returns
        -------
        pathlib.Path
            The weights path ``<stem>.safetensors``.
        """
        return save_weights(path_stem, self.model, self.config)

    @classmethod
    def load(cls, path_stem: str | Path, device: str | torch.device = "cpu") -> "TrainedClassifier":
        """Read a classifier written by :meth:`save` / :func:`train_classifier`.

        Parameters
        ----------
        path_stem : str or pathlib.Path
            Path without suffix of ``<stem>.safetensors`` + ``<stem>.json``.
        device : str or torch.device
            Device to put the network on.

        Returns
        -------
        TrainedClassifier
            The network (eval mode) and its saved configuration.

        Raises
        ------
        FileNotFoundError
            Naming the missing file.
        helioforge.errors.ProductError
            (a ``ValueError``) for an unreadable file, a sidecar that lacks the network sizes or
            does not match the weights, or NaN weights.
        """
        stem = Path(path_stem)
        remedy = f"rerun `helioforge diffusion evaluate -w {stem.parent.parent}` (it retrains the classifier)"
        model, cfg = build_from_weights(stem, lambda c: FlareClassifier(c["image_size"], c["n_classes"], c["width"],
                                                                         c.get("dropout", 0.0)), device, remedy)
        return cls(model, cfg)


@contextlib.contextmanager
def _quiet_lightning(quiet: bool) -> Iterator[None]:
    """Silence Lightning's per-Trainer info lines (GPU available..., etc.) while ``quiet``."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda", "lightning.fabric")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    if quiet:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lev in zip(loggers, levels):
            lg.setLevel(lev)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    cfg: ClassifierConfig | None = None,
    *,
    n_classes: int = 5,
    class_names: Sequence[str] | None = None,
    workdir: str | Path | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
    class_weight: np.ndarray | None = None,
) -> TrainedClassifier:
    """Train the flare-class classifier on real images (Ramunno et al. 2024, §4, §8.1).

    Parameters
    ----------
    images : (n, 1, N, N) float32 in [-1, 1].
    labels : (n,) int class indices 0..n_classes-1 (0..4 = A, B, C, M, X).
    cfg : training settings (defaults: :class:`ClassifierConfig`).
    n_classes : number of classes.
    class_names : names of the classes (default: ``FLARE_CLASSES`` for 5 classes), stored in
        the saved configuration.
    workdir : with a folder: resumable training (``workdir/checkpoints/last.safetensors``,
        CSV logs) through :func:`helioforge.nn.training.fit_resumable`, final weights
        ``workdir/classifier.safetensors`` + ``.json``. With ``None`` (many short runs, e.g. the
        augmentation experiment): a Trainer without checkpoints or logs in a temporary folder,
        always on one device (the first of a ``devices`` list, else one device of
        ``accelerator``): never a DDP relaunch from inside a loop of short runs.
    accelerator, devices : passed to Lightning.
    progress : show Lightning's progress bar.
    class_weight : fixed cross-entropy weights (n_classes,) ≥ 0 that replace the ones
        ``cfg.class_weighted`` would compute from ``labels`` (the augmentation experiment fixes
        them from the *original* training set, so that added images change the data, not the
        loss).

    Returns
    -------
    TrainedClassifier
        The network (on CPU after training) and its configuration, including the class
        weights used and the final epoch's ``loss``/``train_acc``.

    Raises
    ------
    ValueError
        Wrong image shape, fewer than 2 images, labels of the wrong length or outside
        0..n_classes-1, ``class_names`` of the wrong length, or a bad ``class_weight``.
    """
    cfg = cfg or ClassifierConfig()
    images = check_images(images, 2)
    labels = _check_labels(labels, len(images), n_classes)
    if class_names is None:
        class_names = FLARE_CLASSES if n_classes == len(FLARE_CLASSES) else tuple(str(i) for i in range(n_classes))
    if len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {n_classes} classes")
    if class_weight is not None:
        weights = np.asarray(class_weight, dtype=np.float32)
        if weights.shape != (n_classes,) or not np.all(np.isfinite(weights)) or (weights < 0).any():
            raise ValueError(f"class_weight must be {n_classes} finite weights >= 0, got {class_weight!r}")
    else:
        weights = class_weights(labels, n_classes) if cfg.class_weighted else None

    L.seed_everything(cfg.seed, verbose=False)
    module = FlareClassifierModule(cfg, images.shape[-1], n_classes, weights)
    batch = min(cfg.batch_size, len(images))
    # a final batch of one image would break batch normalisation: drop it (the order is shuffled)
    loader = DataLoader(TensorDataset(torch.from_numpy(images), torch.from_numpy(labels)), batch_size=batch,
                        shuffle=True, drop_last=len(images) % batch == 1)
    config = {
        "image_size": int(images.shape[-1]),
        "n_classes": int(n_classes),
        "width": cfg.width,
        "dropout": cfg.dropout,
        "class_names": list(class_names),
        "class_weights": None if weights is None else weights.tolist(),
        "train_counts": np.bincount(labels, minlength=n_classes).tolist(),
        "classifier_config": asdict(cfg),
        "backbone": "FlareClassifier CNN (substitute for the paper's DeiT)",
    }
    if workdir is not None:
        _, config = fit_and_save(module, module.model, loader, Path(workdir), CLASSIFIER_STEM, cfg.epochs, config,
                                 accelerator=accelerator, devices=devices, progress=progress)
    else:
        with tempfile.TemporaryDirectory(prefix="helioforge-clf-") as tmp, _quiet_lightning(not progress), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*number of training batches.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning-internal deprecation notice

            trainer = L.Trainer(
                max_epochs=cfg.epochs,
                accelerator=accelerator,
                devices=[devices[0]] if isinstance(devices, (list, tuple)) and devices else 1,
                default_root_dir=tmp,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=progress and stderr_is_terminal(),
                callbacks=[LogProgress("classifier")] if progress and not stderr_is_terminal() else [],
                enable_model_summary=False,
                num_sanity_val_steps=0,
            )
            trainer.fit(module, loader)
        config["final_metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.info("classifier: %d images, final loss %.3f, train accuracy %.3f", len(images),
             config["final_metrics"].get("loss", float("nan")), config["final_metrics"].get("train_acc", float("nan")))
    return TrainedClassifier(module.model.cpu(), config)


def classification_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int = 5,
    class_names: Sequence[str] = FLARE_CLASSES,
    macro_classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Macro and per-class F1, precision and recall of predicted flare classes (paper §4, App. D).

    Parameters
    ----------
    y_true, y_pred : (n,) int class indices 0..n_classes-1, n ≥ 1.
    n_classes : number of classes.
    class_names : their names (default A, B, C, M, X).
    macro_classes : the class indices the macro averages run over; ``None``: the classes
        present in ``y_true``. A ratio of two macro scores must use the same set on both sides
        (:func:`common_classes`).

    Returns
    -------
    dict
        ``macro_f1``, ``macro_precision``, ``macro_recall``: scikit-learn
        ``precision_recall_fscore_support(average="macro", zero_division=0)`` averaged over
        ``macro_classes`` (listed by name in ``macro_classes``): a class outside the set
        neither helps nor hurts; a class in the set never predicted counts with precision 0.
        ``overall_accuracy``: fraction of correct predictions. ``n``.
        ``per_class``: {name: {f1, precision, recall, accuracy, support, predicted}} for every
        class, where accuracy = recall = fraction of that class's images classified correctly
        (the paper's per-class "accuracy", §8.1); for a class absent from y_true, recall,
        accuracy and F1 are NaN and precision is 0 if it was predicted (all false positives)
        else NaN. ``confusion_matrix``: list of lists, rows true class, columns predicted.
        ``class_names``.

    Raises
    ------
    ValueError
        Empty or mismatched inputs, indices outside 0..n_classes-1, or a wrong number of names.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    if y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {y_true.shape}")
    y_true = _check_labels(y_true, len(y_true), n_classes, "y_true")
    y_pred = _check_labels(y_pred, len(y_true), n_classes, "y_pred")
    if len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {n_classes} classes")
    present = np.unique(y_true) if macro_classes is None else np.asarray(sorted(set(int(c) for c in macro_classes)))
    if present.size == 0 or present.min() < 0 or present.max() >= n_classes:
        raise ValueError(f"macro_classes must be a non-empty set of indices in 0..{n_classes - 1}, got {macro_classes}")
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0)
    pc, rc, fc, sc = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(n_classes), average=None,
                                                     zero_division=0)
    predicted = np.bincount(y_pred, minlength=n_classes)
    per_class: dict[str, dict[str, float | int]] = {}
    for k, name in enumerate(class_names):
        if sc[k] > 0:
            entry = {"f1": float(fc[k]), "precision": float(pc[k]), "recall": float(rc[k]), "accuracy": float(rc[k])}
        else:
            nan = float("nan")
            entry = {"f1": nan, "precision": 0.0 if predicted[k] else nan, "recall": nan, "accuracy": nan}
        per_class[str(name)] = {**entry, "support": int(sc[k]), "predicted": int(predicted[k])}
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
    return {
        "macro_f1": float(f),
        "macro_precision": float(p),
        "macro_recall": float(r),
        "overall_accuracy": float(np.mean(y_true == y_pred)),
        "n": int(len(y_true)),
        "macro_classes": [str(class_names[k]) for k in present],
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
        "class_names": [str(c) for c in class_names],
    }


def common_classes(real_labels: np.ndarray, generated_classes: Sequence[int]) -> list[int]:
    """The classes a generated/real score ratio can compare (paper §6).

    Those present in the real test labels *and* generated.

    Parameters
    ----------
    real_labels : numpy.ndarray
        (n,) integer class indices of the real test images.
    generated_classes : sequence of int
        Class indices that were generated.

    Returns
    -------
    list of int
        Sorted class indices in both sets (pass as ``macro_classes`` to
        :func:`classification_scores`).
    """
    return sorted(set(np.unique(np.asarray(real_labels, dtype=np.int64)).tolist()) & set(int(c) for c in generated_classes))


def chance_scores(y_true: np.ndarray, y_pred: np.ndarray, macro_classes: Sequence[int], n_permutations: int = 200,
                  seed: int = 0, n_classes: int = 5) -> dict[str, float]:
    """Macro F1 / precision / recall by chance.

    The same predictions scored against randomly permuted true labels (``n_permutations``
    times), over ``macro_classes``: the yardstick of a classifier score, what the same
    predictions would reach if they carried no information about the class.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray
        (n,) int class indices 0..n_classes-1, n ≥ 1.
    macro_classes : sequence of int
        Class indices the macro averages run over (e.g. :func:`common_classes`).
    n_permutations : int
        Number of random permutations, ≥ 1.
    seed : int
        Seed of the permutations.
    n_classes : int
        Number of classes. The scores use the default names ``FLARE_CLASSES``, so any value
        other than 5 raises ``ValueError``.

    Returns
    -------
    dict
        ``macro_f1``, ``macro_precision``, ``macro_recall`` (means over the permutations),
        ``macro_f1_std`` (standard deviation) and ``n_permutations``.

    Raises
    ------
    ValueError
        As :func:`classification_scores`, or for ``n_permutations`` < 1.
    """
    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    rng = np.random.default_rng(seed)
    y_true = np.asarray(y_true, dtype=np.int64)
    runs = [classification_scores(rng.permutation(y_true), y_pred, n_classes, macro_classes=macro_classes)
            for _ in range(int(n_permutations))]
    out = {k: float(np.mean([r[k] for r in runs])) for k in ("macro_f1", "macro_precision", "macro_recall")}
    out["macro_f1_std"] = float(np.std([r["macro_f1"] for r in runs]))
    out["n_permutations"] = int(n_permutations)
    return out


def score_ratio(gen_scores: dict[str, Any], real_scores: dict[str, Any]) -> dict[str, float]:
    """Generated / real ratio of the macro scores (Ramunno et al. 2024, §6, Table 1: 0.70).

    Parameters
    ----------
    gen_scores : :func:`classification_scores` of the classifier on generated images.
    real_scores : the same on held-out real images.

    Returns
    -------
    dict
        ``macro_f1``, ``macro_precision``, ``macro_recall``: gen / real, NaN where the real
        score is 0.

    Raises
    ------
    KeyError
        When a score dict lacks one of the macro keys.
    ValueError
        When the two scores average over different class sets (``macro_classes``).
    """
    if "macro_classes" in gen_scores and "macro_classes" in real_scores \
            and list(gen_scores["macro_classes"]) != list(real_scores["macro_classes"]):
        raise ValueError(f"the scores average over different classes (generated {gen_scores['macro_classes']}, "
                         f"real {real_scores['macro_classes']}): score both over common_classes()")
    out: dict[str, float] = {}
    for key in ("macro_f1", "macro_precision", "macro_recall"):
        for what, d in (("gen_scores", gen_scores), ("real_scores", real_scores)):
            if key not in d:
                raise KeyError(f"{what} has no {key!r}: pass the dict of classification_scores")
        real = float(real_scores[key])
        out[key] = float(gen_scores[key]) / real if real != 0 else float("nan")
    return out
