"""The diffusion job, step by step: label → train → sample → evaluate (→ augmentation experiment).

Data flow (Ramunno et al. 2024):

1. :func:`label_dataset` reads the AIA images of one channel, labels them with GOES classes and
   log10 X-ray flux (§2.2–2.4), preprocesses them to N×N in [-1, 1], splits whole days into a
   training and a held-out real test set, and writes ``dataset.fits`` (cube + label table),
   ``labels.ecsv`` (every image, labelled or not), ``labels.json`` and the class histogram
   (Fig. 1).
2. :func:`train_model` trains the class- or flux-conditioned DDPM on the training split.
3. :func:`sample_to_files` samples images of a class or a flux and writes FITS + a PNG grid.
4. :func:`evaluate` (§5–7) and :func:`augment_experiment` (§8.1) write report folders.

Products are reused when the configuration that made them has not changed (see
:class:`helioforge.workspace.StepState`); ``force=True`` rebuilds. Labelling and training hold the
work folder's lock (a second command on the same folder stops with
:class:`~helioforge.errors.FolderInUse`); loading a product checks that its step finished and
that its files are those written (:meth:`DiffusionWorkspace.require_dataset`,
:meth:`DiffusionWorkspace.require_model`), and refuses an unfinished or damaged one with the
command that rebuilds it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from helioforge import __version__
from helioforge.data.aia import MIN_AIA_SIDE, AIAScaling, preprocess_aia, read_aia_folder
from helioforge.data.goes import FLARE_CLASSES, class_histogram, plot_class_histogram, read_event_list, read_xrs_flux, label_images
from helioforge.diffusion.config import DiffusionProfile, dataclass_from_dict
from helioforge.diffusion.sampling import sample
from helioforge.diffusion.training import DIFFUSION_STEM, load_diffusion, train_diffusion
from helioforge.errors import InputError, ProductError, check_count, check_finite, check_output
from helioforge.io import atomic_path, write_fits, write_json
from helioforge.nn.training import inference_device
from helioforge.workspace import StepState, content_digest

__all__ = [
    "DiffusionWorkspace",
    "LabelledSet",
    "label_dataset",
    "load_dataset",
    "train_model",
    "sample_to_files",
    "class_conditions",
    "AIA_CHANNELS",
    "MAX_IMAGE_SIZE",
]

log = logging.getLogger(__name__)

#: The AIA channels (Å) a dataset can be made of (EUV, UV and visible).
AIA_CHANNELS = (94, 131, 171, 193, 211, 304, 335, 1600, 1700, 4500)
#: Largest image side N of a dataset (the AIA detector is 4096²).
MAX_IMAGE_SIZE = 4096


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
        """Training folder of the ``class`` or ``flux`` model."""
        return self.root / f"model_{condition}"

    def model_stem(self, condition: str) -> Path:
        """Saved EMA weights of the ``class`` or ``flux`` model (without suffix)."""
        return self.model_dir(condition) / DIFFUSION_STEM

    def model_files(self, condition: str) -> tuple[Path, Path]:
        """(weights, JSON sidecar) of the ``class`` or ``flux`` model."""
        stem = self.model_stem(condition)
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    @property
    def label_products(self) -> tuple[Path, ...]:
        """The files the ``label`` step writes (their SHA-256 is recorded when it finishes)."""
        return self.dataset, self.labels, self.labels_report, self.histogram

    def save_profile(self, profile: DiffusionProfile) -> None:
        """Store the profile the folder is made with."""
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
        """The stem of the trained ``condition`` model, after checking that its training
        finished and that its files are those written; else
        :class:`~helioforge.errors.ProductError` naming the file and the command that trains,
        resumes or rebuilds it."""
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


@dataclass
class LabelledSet:
    """Labelled, preprocessed images.

    images : (n, 1, N, N) float32 in [-1, 1].
    table : one row per image: file, time, flare_class, class_index (0..4), log10_flux (W m⁻²),
        label_source, event_delay_min, split (``train``/``test``).
    meta : wavelength, units, scaling, label source, digest.
    """

    images: np.ndarray
    table: pd.DataFrame
    meta: dict[str, Any]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, class_index, log10_flux) of the ``train`` or ``test`` split."""
        sel = (self.table["split"] == name).to_numpy()
        return self.images[sel], self.table["class_index"].to_numpy()[sel].astype(np.int64), \
            self.table["log10_flux"].to_numpy()[sel].astype(np.float64)

    def class_counts(self, name: str | None = None) -> dict[str, int]:
        """Images per class (all five) in a split, or overall."""
        t = self.table if name is None else self.table[self.table["split"] == name]
        idx = t["class_index"].to_numpy()
        return {c: int((idx == i).sum()) for i, c in enumerate(FLARE_CLASSES)}


def _split_by_day(times: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``True`` for the held-out days: whole UTC days drawn at random until ``fraction`` of the
    images is reached, so consecutive (near-identical) images never sit on both sides."""
    days = times.astype("datetime64[D]")
    uniq = np.unique(days)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    test = np.zeros(len(times), bool)
    target = fraction * len(times)
    for i in order:
        if test.sum() >= target:
            break
        test |= days == uniq[i]
    return test


def _check_data_config(profile: DiffusionProfile) -> None:
    """Refuse data settings that cannot make a training set (:class:`~helioforge.errors.InputError`
    naming the command-line option)."""
    cfg = profile.data
    check_count("--wavelength", cfg.wavelength, 1, 10_000)
    if int(cfg.wavelength) not in AIA_CHANNELS:
        raise InputError(f"--wavelength {cfg.wavelength} is not an AIA channel (one of {', '.join(map(str, AIA_CHANNELS))} Å)")
    check_count("--size", cfg.image_size, MIN_AIA_SIDE, MAX_IMAGE_SIZE)
    levels = len(profile.unet.block_out_channels)
    factor = 2 ** (levels - 1)
    if cfg.image_size % factor:
        raise InputError(f"--size {cfg.image_size} must be a multiple of {factor} for the {profile.name} profile's "
                         f"U-Net ({levels} resolution levels)")
    check_finite("--tolerance-min", cfg.tolerance_min, minimum=0)
    f = check_finite("test_fraction", cfg.test_fraction)
    if not 0 < f < 1:
        raise InputError(f"test_fraction of the profile must lie between 0 and 1, got {f}")
    if cfg.label_source not in ("events", "flux", "events+flux"):
        raise InputError(f"--source must be events, flux or events+flux, got {cfg.label_source!r}")


def _remove_if_only_lock(folder: Path) -> None:
    """Remove ``folder`` when it holds nothing but the lock files (a failed first command in a
    new work folder leaves nothing behind)."""
    from helioforge.locking import LOCK_NAME

    try:
        names = {p.name for p in folder.iterdir()}
        if names <= {LOCK_NAME, LOCK_NAME + ".json"}:
            for n in names:
                (folder / n).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass


def label_dataset(profile: DiffusionProfile, ws: DiffusionWorkspace, *, force: bool = False,
                  progress: bool = True) -> LabelledSet:
    """Read, label, preprocess and split the AIA images (paper §2); write the dataset products.

    Images that cannot be read or cannot be real AIA images (smaller than the image size, blank,
    values that cannot be DN/s; :func:`helioforge.data.aia.aia_image_problem`) are skipped and
    listed in ``labels.json``; images with no label (no flare peak within the tolerance for
    ``events``, no flux sample for ``flux``) are counted and left out. The dataset is current
    while the settings and the *content* of the image folder and the GOES files are unchanged.
    Holds the work folder's lock; a failure leaves the previous products as they were.

    Raises ``FileNotFoundError`` for a missing image folder or GOES file,
    :class:`~helioforge.errors.InputError` for settings out of range, and ``ValueError`` (with
    the folder and the counts) when no image of the channel is left, no image could be labelled
    or the training split would hold less than one batch.
    """
    cfg = profile.data
    _check_data_config(profile)
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
    files = sorted(p for p in folder.iterdir() if p.is_file())
    goes_files = [p for p in (cfg.events_path(), cfg.flux_path()) if p.is_file()]
    # content, not names, sizes or times: copying the same data elsewhere keeps the dataset current
    digest = profile.digest("data", extra=[content_digest(files), content_digest(goes_files)],
                            drop=("data.images", "data.events", "data.flux"))
    if not force and ws.is_current("label", digest, *ws.label_products):
        log.info("reusing labelled dataset %s", ws.dataset)
        return load_dataset(ws.dataset)
    images, skipped = read_aia_folder(folder, wavelength=cfg.wavelength, progress=progress,
                                      min_size=max(MIN_AIA_SIDE, cfg.image_size))
    if not images:
        raise ValueError(f"{folder}: no usable {cfg.wavelength} Å image ({len(skipped)} skipped"
                         + (f", e.g. {skipped[0].path.name}: {skipped[0].reason}" if skipped else "") + ")")
    times = np.array([im.time for im in images], dtype="datetime64[ns]")
    events = flux = None
    if "events" in cfg.label_source:
        if not cfg.events_path().is_file():
            raise FileNotFoundError(f"{cfg.events_path()}: event list not found")
        events = read_event_list(cfg.events_path())
    if cfg.flux_path().is_file():
        flux = read_xrs_flux(cfg.flux_path())
    elif "flux" in cfg.label_source:
        raise FileNotFoundError(f"{cfg.flux_path()}: GOES X-ray flux file not found")
    labels = label_images(times, events=events, flux=flux, source=cfg.label_source,
                          tolerance=np.timedelta64(int(round(cfg.tolerance_min * 60)), "s"))
    labels.insert(0, "file", [im.path.name for im in images])
    labelled = (labels["class_index"] >= 0).to_numpy()
    labels["split"] = ""
    if not labelled.any():
        raise ValueError(f"{folder}: none of the {len(images)} images could be labelled with source={cfg.label_source!r}")
    test = _split_by_day(times[labelled], cfg.test_fraction, cfg.seed)
    n_train, n_test = int((~test).sum()), int(test.sum())
    batch = int(profile.train.batch_size)
    if n_train < max(2, batch):
        days = len(np.unique(times[labelled].astype("datetime64[D]")))
        raise ValueError(
            f"{folder}: only {n_train} training and {n_test} test images ({int(labelled.sum())} labelled on {days} "
            f"day(s) of {len(images)} read, {len(skipped)} skipped): fewer than one training batch ({batch}); "
            "add images from more days" + ("" if cfg.label_source == "flux" else ", or label by flux (--source flux)"))
    labels.loc[labelled, "split"] = np.where(test, "test", "train")
    units = images[0].units
    mixed = sorted({im.units for im in images})
    if len(mixed) > 1:
        other = next(im for im in images if im.units != units)
        raise InputError(f"{folder}: mixes images in {' and '.join(mixed)} units (e.g. {images[0].path.name} and "
                         f"{other.path.name}); one dataset needs one kind (browse images or FITS in DN/s)")
    try:
        scaling = None if units == "display" else AIAScaling.for_channel(cfg.wavelength)
    except KeyError as exc:
        raise InputError(f"{folder}: {exc.args[0]}") from None
    arrays = np.stack([preprocess_aia(im, cfg.image_size, scaling) for im, ok in zip(images, labelled) if ok])[:, None]
    meta = {
        "wavelength": cfg.wavelength,
        "units": units,
        "scaling": None if scaling is None else {"log10_min": scaling.log10_min, "log10_max": scaling.log10_max},
        "label_source": cfg.label_source,
        "images_folder": str(folder),
        "digest": digest,
    }
    # every image (labelled or not) for the user; the cube holds the labelled ones
    keep = ["file", "time", "flare_class", "class_index", "log10_flux", "label_source", "event_delay_min", "goes_class", "split"]
    every = keep + ["xrs_log10_flux", "unlabelled_reason"]
    table_all = Table.from_pandas(labels[every].assign(time=labels["time"].astype(str)))
    table_all.meta.update({"helioforge": __version__, **{k: v for k, v in meta.items() if k != "scaling"}})
    sub = labels.loc[labelled, keep].reset_index(drop=True)
    hist_all = class_histogram(labels["class_index"].to_numpy())
    report = {
        "images_read": len(images),
        "skipped": [{"file": str(s.path), "reason": s.reason} for s in skipped],
        "labelled": int(labelled.sum()),
        "unlabelled": int((~labelled).sum()),
        "histogram": hist_all,
        "train": {c: int(((sub["split"] == "train") & (sub["class_index"] == i)).sum()) for i, c in enumerate(FLARE_CLASSES)},
        "test": {c: int(((sub["split"] == "test") & (sub["class_index"] == i)).sum()) for i, c in enumerate(FLARE_CLASSES)},
        "event_linked": int((labels["label_source"] == "events").sum()),
        "flux_labelled": int((labels["label_source"] == "flux").sum()),
        "histogram_by_source": {src: class_histogram(labels.loc[labels["label_source"] == src, "class_index"].to_numpy())
                                for src in ("events", "flux") if (labels["label_source"] == src).any()},
        "skipped_by_reason": _count_reasons(s.reason for s in skipped),
        "unlabelled_by_reason": _count_reasons(labels.loc[~labelled, "unlabelled_reason"]),
        "events": labels.attrs.get("events"),
        "tolerance_min": cfg.tolerance_min,
        "events_file": str(cfg.events_path()) if events is not None else None,
        "flux_file": str(cfg.flux_path()) if flux is not None else None,
        **meta,
    }
    # everything is checked: from here on the old products are replaced
    ws.unmark("label")
    with atomic_path(ws.labels, suffix=".ecsv") as tmp:
        table_all.write(tmp, format="ascii.ecsv", overwrite=True)
    _write_dataset(ws.dataset, arrays, sub, meta, profile)
    plot_class_histogram(hist_all, ws.histogram, title=f"AIA {cfg.wavelength} Å images by GOES class ({cfg.label_source})")
    write_json(ws.labels_report, report)
    ws.save_profile(profile)
    ws.mark("label", digest, *ws.label_products)
    log.info("labelled %d of %d images (%s); %d skipped", labelled.sum(), len(images), hist_all, len(skipped))
    return LabelledSet(arrays.astype(np.float32), sub, meta)


def _count_reasons(reasons: Any) -> dict[str, int]:
    """Counts per reason, most frequent first (file-specific details after a colon dropped)."""
    out: dict[str, int] = {}
    for r in reasons:
        key = str(r).split(": ", 1)[0] if str(r).count(":") and not str(r).startswith(("outside", "in a gap")) else str(r)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _write_dataset(path: Path, arrays: np.ndarray, table: pd.DataFrame, meta: dict[str, Any],
                   profile: DiffusionProfile) -> None:
    hdr = fits.Header()
    hdr["WAVELNTH"] = (int(meta["wavelength"]), "AIA channel, Angstrom")
    hdr["BUNIT"] = ("scaled", "network units in [-1, 1]; see HF SCALING")
    tab = fits.BinTableHDU(Table.from_pandas(table.assign(time=table["time"].astype(str))), name="LABELS")
    sc = meta.get("scaling") or {}
    params = {"profile": profile.name, "units": meta["units"], "label_source": meta["label_source"],
              "digest": meta["digest"], "scale_log10_min": sc.get("log10_min", ""),
              "scale_log10_max": sc.get("log10_max", "")}
    tab.header["IMAGES"] = (str(meta["images_folder"])[-68:], "source folder (tail)")
    write_fits(path, arrays[:, 0].astype(np.float32), model="diffusion-dataset", params=params, header=hdr,
               extra_hdus=[tab])


def load_dataset(path: str | Path) -> LabelledSet:
    """Read ``dataset.fits`` written by :func:`label_dataset`.

    Raises ``FileNotFoundError`` for a missing file and :class:`~helioforge.errors.ProductError`
    (naming the file and ``diffusion label --force``) for one that is unreadable, truncated or
    not a labelled dataset.
    """
    import warnings

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no labelled dataset (run `helioforge diffusion label`)")
    remedy = f"run `helioforge diffusion label -w {path.parent} --force` to rebuild it"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's truncation warnings: the error below says it
            with fits.open(path) as hdul:
                if hdul[0].data is None or hdul[0].data.ndim != 3:
                    raise ValueError("no (n, N, N) image cube in the primary HDU")
                arrays = np.asarray(hdul[0].data, dtype=np.float32)[:, None]
                h = hdul[0].header
                lo, hi = h.get("HIERARCH HF scale_log10_min", ""), h.get("HIERARCH HF scale_log10_max", "")
                meta = {"wavelength": int(h["WAVELNTH"]), "units": h.get("HIERARCH HF units", ""),
                        "scaling": {"log10_min": float(lo), "log10_max": float(hi)} if lo != "" else None,
                        "label_source": h.get("HIERARCH HF label_source", ""),
                        "images_folder": hdul["LABELS"].header.get("IMAGES", ""),
                        "digest": h.get("HIERARCH HF digest", "")}
                table = Table(hdul["LABELS"].data).to_pandas()
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, EOFError) as exc:
        raise ProductError(path, f"unreadable labelled dataset ({type(exc).__name__}: {exc})", remedy) from None
    missing = [c for c in ("class_index", "log10_flux", "split") if c not in table.columns]
    if missing or len(table) != len(arrays):
        problem = f"label table lacks {missing}" if missing else f"{len(arrays)} images but {len(table)} label rows"
        raise ProductError(path, f"not a labelled dataset of this helioforge version ({problem})", remedy)
    if not np.isfinite(arrays).all() or arrays.size and (arrays.min() < -1 or arrays.max() > 1):
        raise ProductError(path, "damaged labelled dataset (image values outside [-1, 1] or not finite)", remedy)
    for col in table.columns:
        if table[col].dtype == object:
            table[col] = table[col].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    return LabelledSet(arrays, table, meta)


def train_model(profile: DiffusionProfile, ws: DiffusionWorkspace, condition: str | None = None, *,
                force: bool = False, accelerator: str = "auto", devices: int | str = "auto",
                progress: bool = True) -> Path:
    """Train (or reuse) the ``class``/``flux``-conditioned model on the training split; return
    the stem of its EMA weights. The model's own settings go to its JSON sidecar; the work
    folder's stored profile is not changed (an ``--epochs`` override for one model does not
    retrain the other). Holds the work folder's lock: a second training on the same folder
    stops with :class:`~helioforge.errors.FolderInUse` instead of resuming the first one's
    live checkpoint.

    Raises :class:`~helioforge.errors.InputError` for ``epochs`` < 1 or an unknown condition,
    and :class:`~helioforge.errors.ProductError` (with the command that makes it) without a
    finished labelled dataset.
    """
    check_count("--epochs", profile.train.epochs)
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
    import copy
    import shutil

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
    products = ws.model_files(condition)
    if not force and ws.is_current(step, digest, *products):
        log.info("reusing %s model %s", condition, stem)
        return stem
    ws.unmark(step)
    resumable = copy.deepcopy(profile)
    resumable.train.epochs = 0  # a longer run may resume a shorter one with the same settings
    run_digest = resumable.digest("unet", "train", extra=data.meta["digest"])
    if force or ws.state().get(f"{step}_config") != run_digest:
        # a changed configuration must not resume the old run's checkpoint
        shutil.rmtree(ws.model_dir(condition), ignore_errors=True)
    state = ws.state()
    state[f"{step}_config"] = run_digest
    write_json(ws.state_file, state)
    t0 = time.perf_counter()
    extra = {
        "class_counts": {c: int((cls == i).sum()) for i, c in enumerate(FLARE_CLASSES)},
        "log10_flux_range": [float(np.nanmin(flux)), float(np.nanmax(flux))] if np.isfinite(flux).any() else None,
        "data": data.meta,
    }
    stem = train_diffusion(images, cond, profile.unet, profile.train, ws.model_dir(condition), extra_config=extra,
                           accelerator=accelerator, devices=devices, progress=progress)
    ws.record_time(step, time.perf_counter() - t0)
    ws.mark(step, digest, *products)
    return stem


def class_conditions(counts: dict[str, int], n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``n`` class indices in the proportions of ``counts`` (largest-remainder rounding),
    shuffled. Classes with a zero count get none."""
    c = np.array([counts.get(k, 0) for k in FLARE_CLASSES], float)
    if c.sum() <= 0:
        raise ValueError("no class has any image")
    exact = c / c.sum() * n
    k = np.floor(exact).astype(int)
    k[np.argsort(exact - k)[::-1][: n - k.sum()]] += 1
    out = np.repeat(np.arange(len(FLARE_CLASSES)), k)
    return (rng or np.random.default_rng(0)).permutation(out)


def sample_to_files(
    stem: str | Path,
    out: str | Path,
    *,
    flare_class: str | None = None,
    flux: float | None = None,
    n: int = 16,
    cfg_scale: float = 1.0,
    eta: float = 1.0,
    sampler: str = "dpm",
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Sample ``n`` images of a GOES class (class model) or an X-ray flux in W m⁻² (flux model)
    and write ``<out>.fits`` (cube (n, N, N) in network units [-1, 1], with the scaling to
    intensity, condition, sampler and provenance in the header) and ``<out>.png`` (grid).

    Every argument is checked before the model is loaded, and both files are written only when
    the sampling succeeded (atomically: a failure leaves nothing behind).

    Raises :class:`~helioforge.errors.InputError` for ``n`` or ``steps`` < 1, a ``cfg_scale``
    that is not a finite number ≥ 0, an ``eta`` outside [0, 1], a flux that is not a finite
    number > 0, or an output that would overwrite the model or a FITS file helioforge did not
    write; ``ValueError`` when the condition does not suit the model (a class for a flux model
    or the reverse, a class absent from the model's training set);
    :class:`~helioforge.errors.ProductError` for a damaged model.
    """
    from helioforge.diffusion.report import save_grid

    stem = Path(stem)
    n = check_count("-n", n)
    check_count("--steps", steps)
    cfg_scale = check_finite("--cfg-scale", cfg_scale, minimum=0)
    eta = check_finite("--eta", eta, minimum=0)
    if eta > 1:
        raise InputError(f"--eta must lie between 0 and 1, got {eta:g}")
    if flux is not None:
        check_finite("--flux", flux)
        if not flux > 0:
            raise InputError(f"--flux must be a GOES 1–8 Å flux > 0 W m^-2 (e.g. 3e-5), got {flux:g}")
    out = Path(out)
    fits_out, png_out = out.with_suffix(".fits"), out.with_suffix(".png")
    inputs = (stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
    check_output(fits_out, inputs, protect_foreign_fits=True)
    check_output(png_out, inputs)
    device = device or inference_device()
    net, config = load_diffusion(stem, device)
    counts = config.get("class_counts", {})
    if net.condition == "class":
        if flare_class is None:
            raise ValueError(f"{stem}: a class-conditioned model needs --flare-class (one of {', '.join(FLARE_CLASSES)})")
        letter = flare_class.strip().upper()[:1]
        if letter not in FLARE_CLASSES:
            raise ValueError(f"flare class {flare_class!r} is not one of {', '.join(FLARE_CLASSES)}")
        if counts and counts.get(letter, 0) == 0:
            raise ValueError(f"{stem}: the model saw no {letter}-class image in training ({counts}); it cannot generate that class")
        cond = np.full(n, FLARE_CLASSES.index(letter))
        label = f"GOES class {letter}"
    else:
        if flux is None:
            raise ValueError(f"{stem}: a flux-conditioned model needs --flux > 0 (W m^-2)")
        lo_hi = config.get("log10_flux_range")
        if lo_hi and not lo_hi[0] <= np.log10(flux) <= lo_hi[1]:
            log.warning("flux %.2g W/m² lies outside the training range 1e%.1f–1e%.1f: extrapolation", flux, *lo_hi)
        cond = np.full(n, np.log10(flux))
        label = f"GOES flux {flux:.2g} W/m²"
    res = sample(net, config["train"], cond, sampler=sampler, steps=steps, cfg_scale=cfg_scale, eta=eta, seed=seed,
                 device=device, progress=progress)
    if not np.isfinite(res.images).all():
        raise ValueError(f"{stem}: sampling gave non-finite pixels; nothing written (retrain the model with "
                         "`helioforge diffusion train --force`)")
    data_meta = config.get("data", {})
    hdr = fits.Header()
    hdr["WAVELNTH"] = (int(data_meta.get("wavelength", 0)), "AIA channel, Angstrom")
    hdr["BUNIT"] = ("scaled", "network units [-1,1]; helioforge.data.aia.to_intensity")
    params = {"condition": net.condition, "flare_class": flare_class or "", "flux_Wm2": flux if flux else "",
              "cfg_scale": cfg_scale, "eta": eta, "sampler": sampler, "steps": res.nfe_per_image // (2 if cfg_scale else 1),
              "seed": seed, "model": str(stem), "units": data_meta.get("units", ""),
              "scaling": data_meta.get("scaling") or ""}
    # both files or neither: each is renamed into place only when both are complete
    with atomic_path(fits_out) as tmp_fits, atomic_path(png_out) as tmp_png:
        write_fits(tmp_fits, res.images[:, 0], model="diffusion", params=params, header=hdr)
        save_grid(res.images, tmp_png, title=f"{label}, w={cfg_scale:g}, {sampler}")
    return fits_out, png_out
