"""The diffusion job as one pipeline of stages on a work folder: label → train → sample →
evaluate (→ augmentation experiment).

Stages (Ramunno et al. 2024) and the module that does each:

1. :func:`label_dataset` — :mod:`helioforge.diffusion.data` reads, labels, preprocesses and
   splits the AIA images (§2.2–2.4); this writes ``dataset.fits`` (cube + label table),
   ``labels.ecsv`` (every image, labelled or not), ``labels.json`` and the class histogram (Fig. 1).
2. :func:`train_model` — :mod:`helioforge.diffusion.train` trains the class- or flux-conditioned
   DDPM on the training split.
3. :func:`sample_from_workdir` — :mod:`helioforge.diffusion.infer` samples images of a class or
   a flux and writes FITS + a PNG grid.
4. :func:`helioforge.diffusion.evaluate.evaluate` (§5–7) and
   :func:`helioforge.diffusion.evaluate.augment_experiment` (§8.1) write report folders.

Every product goes through the one step protocol (:meth:`helioforge.workspace.StepState.run_step`):
reused while the configuration that made it has not changed, rebuilt otherwise or with
``force=True``, training resumed from its checkpoint when only the number of epochs grew.
Labelling and training hold the work folder's lock (a second command on the same folder stops
with :class:`~helioforge.errors.FolderInUse`); loading a product checks that its step finished
and that its files are those written (:meth:`DiffusionWorkspace.require_dataset`,
:meth:`DiffusionWorkspace.require_model`), and refuses an unfinished or damaged one with the
command that rebuilds it.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helioforge.config import dataclass_from_dict
from helioforge.data.goes import FLARE_CLASSES
from helioforge.diffusion.config import DiffusionProfile, get_diffusion_profile
from helioforge.diffusion.data import (
    LabelledSet,
    build_labelled_set,
    check_data_config,
    dataset_digest,
    load_dataset,
    write_dataset,
)
from helioforge.diffusion.infer import check_sample_args, sample_to_files
from helioforge.diffusion.report import plot_class_histogram
from helioforge.diffusion.train import DIFFUSION_STEM, train_diffusion
from helioforge.errors import InputError, ProductError, check_count, check_output
from helioforge.io import atomic_path, write_json
from helioforge.locking import LOCK_NAME
from helioforge.workspace import StepState

__all__ = [
    "DiffusionWorkspace",
    "label_dataset",
    "train_model",
    "sample_from_workdir",
    "open_workdir",
]

log = logging.getLogger(__name__)


@dataclass
class DiffusionWorkspace(StepState):
    """Products of one diffusion run under ``root`` (``create=False`` for read-only use: a
    missing folder is not created)."""

    dataset = property(lambda self: self.root / "dataset.fits")
    labels = property(lambda self: self.root / "labels.ecsv")
    labels_report = property(lambda self: self.root / "labels.json")
    histogram = property(lambda self: self.root / "class_histogram.png")
    profile_file = property(lambda self: self.root / "profile.json")
    features_dir = property(lambda self: self.root / "features")
    classifier_dir = property(lambda self: self.root / "classifier")

    def model_dir(self, condition: str) -> Path:
        """Training folder of the ``class`` or ``flux`` model.

        Parameters
        ----------
        condition : str
            ``"class"`` or ``"flux"`` (not checked).

        Returns
        -------
        pathlib.Path
            ``<root>/model_<condition>``.
        """
        return self.root / f"model_{condition}"

    def model_stem(self, condition: str) -> Path:
        """Saved EMA weights of the ``class`` or ``flux`` model (without suffix).

        Parameters
        ----------
        condition : str
            ``"class"`` or ``"flux"`` (not checked).

        Returns
        -------
        pathlib.Path
            ``<root>/model_<condition>/<DIFFUSION_STEM>``.
        """
        return self.model_dir(condition) / DIFFUSION_STEM

    def model_files(self, condition: str) -> tuple[Path, Path]:
        """Files of the ``class`` or ``flux`` model.

        Parameters
        ----------
        condition : str
            ``"class"`` or ``"flux"`` (not checked).

        Returns
        -------
        tuple of pathlib.Path
            (``.safetensors`` weights, ``.json`` sidecar).
        """
        stem = self.model_stem(condition)
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    @property
    def label_products(self) -> tuple[Path, ...]:
        """The files the ``label`` step writes (their SHA-256 is recorded when it finishes)."""
        return self.dataset, self.labels, self.labels_report, self.histogram

    def save_profile(self, profile: DiffusionProfile) -> None:
        """Store the profile the folder is made with (``profile.json``).

        Parameters
        ----------
        profile : DiffusionProfile
            The profile to write.
        """
        write_json(self.profile_file, profile.to_dict())

    def load_profile(self) -> DiffusionProfile:
        """The stored profile. Raises ``FileNotFoundError`` when the folder has none and
        :class:`~helioforge.errors.ProductError` (a ``ValueError``) when it is unreadable or was
        written by an incompatible version."""
        if not self.profile_file.is_file():
            raise FileNotFoundError(f"{self.profile_file}: no profile in this work folder (run `helioforge diffusion label` first)")
        remedy = (f"delete it and run `helioforge diffusion label -w {self.root} -p PROFILE --force` "
                  "(PROFILE: tiny, cpu or paper)")
        try:
            d = json.loads(self.profile_file.read_text())
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            return dataclass_from_dict(DiffusionProfile, d)
        except (OSError, UnicodeDecodeError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ProductError(self.profile_file, f"not a diffusion profile of this helioforge version "
                               f"({type(exc).__name__}: {exc})", remedy) from None

    def require_dataset(self) -> None:
        """Raise :class:`~helioforge.errors.ProductError` with the command that makes it unless
        the labelled dataset is finished and unchanged since it was written."""
        why = self.problem("label", None, self.dataset)
        if why is None:
            return
        label = f"helioforge diffusion label -w {self.root}"
        if why == "not built yet":
            raise ProductError(self.dataset, "no labelled dataset", f"run `{label}`")
        if why.startswith("unfinished"):
            raise ProductError(self.dataset, "the labelled dataset is unfinished (labelling was interrupted or is still running)",
                               f"run `{label}`")
        raise ProductError(self.dataset, why, f"run `{label} --force` to rebuild it")

    def require_model(self, condition: str) -> Path:
        """The stem of the trained ``condition`` model, after checking it.

        Checks that its training finished and that its files are those written.

        Parameters
        ----------
        condition : str
            ``"class"`` or ``"flux"``.

        Returns
        -------
        pathlib.Path
            Stem of the EMA weights (:meth:`model_stem`).

        Raises
        ------
        helioforge.errors.ProductError
            Naming the file and the command that trains, resumes or rebuilds it, when the model
            is not built, unfinished or changed since it was written.
        """
        weights, sidecar = self.model_files(condition)
        why = self.problem(f"model_{condition}", None, weights, sidecar)
        if why is None:
            return self.model_stem(condition)
        train = f"helioforge diffusion train -w {self.root} --condition {condition}"
        if why == "not built yet" and (self.model_dir(condition) / "checkpoints" / "last.safetensors").is_file():
            why = "unfinished"  # a first training interrupted: only its checkpoint is there
        if why == "not built yet":
            raise ProductError(weights, f"no trained {condition} model", f"run `{train}`")
        if why.startswith("unfinished"):
            raise ProductError(weights, f"the {condition} model is unfinished (its training was interrupted or is still "
                               "running)", f"run `{train}` to resume it")
        raise ProductError(weights, why, f"run `{train} --force` to retrain it")

    def read_labels_report(self) -> dict[str, Any]:
        """``labels.json`` (what :func:`label_dataset` read, skipped and labelled).

        Raises :class:`~helioforge.errors.ProductError` for a missing or unreadable file."""
        try:
            rep = json.loads(self.labels_report.read_text())
            if not isinstance(rep, dict):
                raise ValueError("not a JSON object")
            for key in ("labelled", "images_read", "unlabelled", "skipped", "histogram"):
                rep[key]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ProductError(self.labels_report, f"unreadable labelling report ({type(exc).__name__}: {exc})",
                               f"run `helioforge diffusion label -w {self.root} --force`") from None
        return rep


def open_workdir(root: str | Path, profile: str | None = None) -> tuple[DiffusionWorkspace, DiffusionProfile]:
    """A work folder (not created: writing stages create it when they take its lock) and the
    profile to run it with: ``profile`` by name, else the folder's stored one, else ``cpu``.

    Raises
    ------
    ValueError : an unknown profile name. ProductError : an unreadable stored profile.
    """
    ws = DiffusionWorkspace(Path(root), create=False)
    if profile is None and ws.profile_file.is_file():
        return ws, ws.load_profile()
    return ws, get_diffusion_profile(profile or "cpu")


def _remove_if_only_lock(folder: Path) -> None:
    """Remove ``folder`` when it holds nothing but the lock files (a failed first command in a
    new work folder leaves nothing behind)."""
    try:
        names = {p.name for p in folder.iterdir()}
        if names <= {LOCK_NAME, LOCK_NAME + ".json"}:
            for n in names:
                (folder / n).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass


def require_folder_source(profile: DiffusionProfile) -> None:
    """Refuse a profile whose images come from an SDOML store in the work-folder pipeline.

    The work-folder steps (``label``, ``train``, ``evaluate``) read an image folder into memory.
    A profile with ``stream.source="sdoml"`` is trained through the Python API instead:
    :func:`helioforge.diffusion.data.build_sdoml_index` then
    :func:`helioforge.diffusion.train.train_diffusion_stream` (docs/diffusion.md, "Streaming
    SDOMLv2 stores"). Refusing it here keeps the pipeline from silently reading the folder.

    Parameters
    ----------
    profile : DiffusionProfile
        The profile of the run.

    Raises
    ------
    helioforge.errors.InputError
        If ``profile.stream.source`` is ``"sdoml"``.
    """
    if profile.stream.source != "folder":
        raise InputError(f"stream.source={profile.stream.source!r}: the diffusion commands read an image folder; "
                         "stream an SDOML store with the Python API (helioforge.diffusion.data.build_sdoml_index, "
                         "then helioforge.diffusion.train.train_diffusion_stream; docs/diffusion.md)")


def label_dataset(profile: DiffusionProfile, ws: DiffusionWorkspace, *, force: bool = False,
                  progress: bool = True) -> LabelledSet:
    """Read, label, preprocess and split the AIA images (paper §2); write the dataset products.

    Images that cannot be read or cannot be real AIA images (smaller than the image size, blank,
    values that cannot be DN/s; :func:`helioforge.data.aia.aia_image_problem`) are skipped and
    listed in ``labels.json``; images with no label (no flare peak within the tolerance for
    ``events``, no flux sample for ``flux``) are counted and left out. The dataset is current
    while the settings and the *content* of the image folder and the GOES files are unchanged.
    Holds the work folder's lock; a failure leaves the previous products as they were.

    Parameters
    ----------
    profile : DiffusionProfile
        Its ``data`` section (paths, channel, size, label source, tolerance, split) and
        ``train.batch_size`` (least number of training images).
    ws : DiffusionWorkspace
        The work folder (created when missing; removed again when a failed first command
        leaves only its lock).
    force : bool
        Rebuild even when the products are current.
    progress : bool
        Show a progress bar while reading.

    Returns
    -------
    LabelledSet
        Images (n, 1, N, N) float32 in [-1, 1] with their label table and metadata.

    Raises
    ------
    FileNotFoundError
        For a missing image folder or GOES file.
    helioforge.errors.InputError
        For settings out of range (:func:`~helioforge.diffusion.data.check_data_config`), images
        of mixed units or a channel without a DN/s scaling, or ``stream.source="sdoml"`` (see
        :func:`require_folder_source`).
    helioforge.errors.FolderInUse
        When another process holds the work folder's lock.
    ValueError
        (with the folder and the counts) when no image of the channel is left, no image could
        be labelled or the training split would hold less than one batch.
    """
    cfg = profile.data
    check_data_config(profile)
    require_folder_source(profile)
    folder = cfg.images_path()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: AIA image folder not found (set HELIOFORGE_DATA or --images)")
    created = not ws.root.exists()
    try:
        with ws.lock():
            return _label_locked(profile, ws, folder, force=force, progress=progress)
    except BaseException:
        if created:
            _remove_if_only_lock(ws.root)
        raise


def _label_locked(profile: DiffusionProfile, ws: DiffusionWorkspace, folder: Path, *, force: bool,
                  progress: bool) -> LabelledSet:
    cfg = profile.data
    digest = dataset_digest(profile, folder)
    if not force and ws.is_current("label", digest, *ws.label_products):
        log.info("reusing labelled dataset %s", ws.dataset)
        return load_dataset(ws.dataset)
    # every check runs before the step is un-marked: a failed relabelling leaves the old products current
    made = build_labelled_set(profile, folder, digest, progress=progress)

    def write() -> None:
        with atomic_path(ws.labels, suffix=".ecsv") as tmp:
            made.table_all.write(tmp, format="ascii.ecsv", overwrite=True)
        write_dataset(ws.dataset, made.labelled.images, made.labelled.table, made.labelled.meta, profile)
        plot_class_histogram(made.histogram, ws.histogram,
                             title=f"AIA {cfg.wavelength} Å images by GOES class ({cfg.label_source})")
        write_json(ws.labels_report, made.report)
        ws.save_profile(profile)

    ws.run_step("label", digest, ws.label_products, write, force=True)
    rep = made.report
    log.info("labelled %d of %d images (%s); %d skipped", rep["labelled"], rep["images_read"], made.histogram,
             len(rep["skipped"]))
    return made.labelled


def train_model(profile: DiffusionProfile, ws: DiffusionWorkspace, condition: str | None = None, *,
                force: bool = False, accelerator: str = "auto", devices: int | str = "auto",
                progress: bool = True) -> Path:
    """Train (or reuse) the ``class``/``flux``-conditioned model on the training split.

    The model's own settings go to its JSON sidecar; the work folder's stored profile is not
    changed (an ``--epochs`` override for one model does not retrain the other). Holds the work
    folder's lock: a second training on the same folder stops with
    :class:`~helioforge.errors.FolderInUse` instead of resuming the first one's live checkpoint.
    The flux model leaves out training images without an X-ray flux.

    Parameters
    ----------
    profile : DiffusionProfile
        Its ``unet`` and ``train`` sections set the model and the training.
    ws : DiffusionWorkspace
        Work folder with a finished labelled dataset.
    condition : str or None
        ``"class"`` or ``"flux"``; default ``profile.train.condition``.
    force : bool
        Retrain from scratch even when the model is current.
    accelerator, devices : str or int
        Passed to Lightning.
    progress : bool
        Show Lightning's progress bar.

    Returns
    -------
    pathlib.Path
        Stem of the saved EMA weights (``.safetensors`` + ``.json``).

    Raises
    ------
    helioforge.errors.InputError
        For ``epochs`` < 1, an unknown condition or ``stream.source="sdoml"``
        (:func:`require_folder_source`).
    helioforge.errors.ProductError
        (with the command that makes it) without a finished labelled dataset.
    helioforge.errors.FolderInUse
        When another process holds the work folder's lock.
    ValueError
        When fewer than 2 training images are left for the model.
    """
    check_count("--epochs", profile.train.epochs)
    require_folder_source(profile)
    condition = condition or profile.train.condition
    if condition not in ("class", "flux"):
        raise InputError(f"condition must be 'class' or 'flux', got {condition!r}")
    if not ws.root.is_dir():
        raise ProductError(ws.dataset, "no labelled dataset (the work folder does not exist)",
                           f"run `helioforge diffusion label -w {ws.root}`")
    with ws.lock():
        return _train_locked(profile, ws, condition, force=force, accelerator=accelerator, devices=devices,
                             progress=progress)


def _train_locked(profile: DiffusionProfile, ws: DiffusionWorkspace, condition: str, *, force: bool,
                  accelerator: str, devices: int | str, progress: bool) -> Path:
    ws.require_dataset()
    profile = copy.deepcopy(profile)  # the work folder's profile is left as it is
    profile.train.condition = condition
    data = load_dataset(ws.dataset)
    images, cls, flux = data.split("train")
    if condition == "flux":
        ok = np.isfinite(flux)
        if not ok.all():
            log.warning("%d training images have no X-ray flux and are left out of the flux model", (~ok).sum())
        images, cond = images[ok], flux[ok]
    else:
        cond = cls
    if len(images) < 2:
        raise ValueError(f"{ws.dataset}: only {len(images)} training image(s) for the {condition} model; "
                         f"relabel with more images (`helioforge diffusion label -w {ws.root} --force`)")
    step = f"model_{condition}"
    digest = profile.digest("unet", "train", extra=data.meta["digest"])
    stem = ws.model_stem(condition)
    resumable = copy.deepcopy(profile)
    resumable.train.epochs = 0  # a longer run may resume a shorter one with the same settings
    resume_digest = resumable.digest("unet", "train", extra=data.meta["digest"])
    extra = {
        "class_counts": {c: int((cls == i).sum()) for i, c in enumerate(FLARE_CLASSES)},
        "log10_flux_range": [float(np.nanmin(flux)), float(np.nanmax(flux))] if np.isfinite(flux).any() else None,
        "data": data.meta,
    }

    def reset() -> None:
        # a changed configuration must not resume the old run's checkpoint (folders written before
        # the step protocol recorded the resume digest under "<step>_config")
        if force or ws.state().get(f"{step}_config") != resume_digest:
            shutil.rmtree(ws.model_dir(condition), ignore_errors=True)

    def build() -> None:
        train_diffusion(images, cond, profile.unet, profile.train, ws.model_dir(condition), extra_config=extra,
                        accelerator=accelerator, devices=devices, progress=progress)

    if not ws.run_step(step, digest, ws.model_files(condition), build, force=force, resume_digest=resume_digest,
                       reset=reset):
        log.info("reusing %s model %s", condition, stem)
    return stem


def sample_from_workdir(
    ws: DiffusionWorkspace,
    *,
    condition: str = "class",
    flare_class: str | None = None,
    flux: float | None = None,
    n: int = 16,
    cfg_scale: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    seed: int = 0,
    output: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Sample from a work folder's trained ``condition`` model (:func:`~helioforge.diffusion.infer.sample_to_files`).

    Every sampler option left ``None`` comes from the work folder's profile (``sampler``,
    ``cfg_scale``, ``eta``; ``steps`` too when ``sampler`` is not given), else DPM-Solver with
    w = 1 and η = 1. ``output`` defaults to ``<work folder>/samples/<condition>_<class or flux>``.
    The folder is only read (a missing one is not created).

    Returns
    -------
    (fits_path, png_path) : the files written.

    Raises
    ------
    ProductError : the model is missing, unfinished or damaged, or the output would overwrite a
        product of the folder. InputError, ValueError : as :func:`~helioforge.diffusion.infer.sample_to_files`.
    """
    check_sample_args(n=n, steps=steps, cfg_scale=cfg_scale, eta=eta, flux=flux)
    stem = ws.require_model(condition)
    sc = ws.load_profile().sample if ws.profile_file.is_file() else None
    if sc is not None:
        if sampler is None:
            steps = sc.steps if steps is None else steps
        sampler = sampler or sc.sampler
        cfg_scale = sc.cfg_scale if cfg_scale is None else cfg_scale
        eta = sc.eta if eta is None else eta
    sampler = sampler or "dpm"
    cfg_scale = 1.0 if cfg_scale is None else cfg_scale
    eta = 1.0 if eta is None else eta
    tag = (flare_class or (f"{flux:.1e}" if flux else "x")).replace("+", "")
    dest = Path(output) if output is not None else ws.root / "samples" / f"{condition}_{tag}"
    products = (ws.dataset, ws.histogram, *ws.model_files(condition))
    check_output(dest.with_suffix(".fits"), products, protect_foreign_fits=True)
    check_output(dest.with_suffix(".png"), products)
    return sample_to_files(stem, dest, flare_class=flare_class, flux=flux, n=n, cfg_scale=cfg_scale, eta=eta,
                           sampler=sampler, steps=steps, seed=seed, progress=progress)
