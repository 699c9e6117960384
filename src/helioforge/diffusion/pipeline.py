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
:class:`helioforge.workspace.StepState`); ``force=True`` rebuilds.
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
from helioforge.data.aia import AIAScaling, preprocess_aia, read_aia_folder
from helioforge.data.goes import FLARE_CLASSES, class_histogram, plot_class_histogram, read_event_list, read_xrs_flux, label_images
from helioforge.diffusion.config import DiffusionProfile, dataclass_from_dict
from helioforge.diffusion.sampling import sample
from helioforge.diffusion.training import DIFFUSION_STEM, load_diffusion, train_diffusion
from helioforge.io import atomic_path, write_fits, write_json
from helioforge.nn.training import inference_device
from helioforge.workspace import StepState

__all__ = [
    "DiffusionWorkspace",
    "LabelledSet",
    "label_dataset",
    "load_dataset",
    "train_model",
    "sample_to_files",
    "class_conditions",
]

log = logging.getLogger(__name__)


@dataclass
class DiffusionWorkspace(StepState):
    """Products of one diffusion run under ``root``."""

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

    def save_profile(self, profile: DiffusionProfile) -> None:
        """Store the profile the folder is made with."""
        write_json(self.profile_file, profile.to_dict())

    def load_profile(self) -> DiffusionProfile:
        """The stored profile. Raises ``FileNotFoundError`` when the folder has none and
        ``ValueError`` when it was written by an incompatible version."""
        if not self.profile_file.is_file():
            raise FileNotFoundError(f"{self.profile_file}: no profile in this work folder (run `helioforge diffusion label` first)")
        try:
            return dataclass_from_dict(DiffusionProfile, json.loads(self.profile_file.read_text()))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.profile_file}: not a diffusion profile of this helioforge version ({exc})") from None


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


def label_dataset(profile: DiffusionProfile, ws: DiffusionWorkspace, *, force: bool = False,
                  progress: bool = True) -> LabelledSet:
    """Read, label, preprocess and split the AIA images (paper §2); write the dataset products.

    Images that cannot be read are skipped (listed in ``labels.json``); images with no label
    (no flare peak within the tolerance for ``events``, no flux sample for ``flux``) are counted
    and left out. Raises ``FileNotFoundError`` for a missing image folder or GOES file and
    ``ValueError`` when no image of the channel is left or no image could be labelled.
    """
    cfg = profile.data
    folder = cfg.images_path()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: AIA image folder not found (set HELIOFORGE_DATA or --images)")
    listing = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())
    goes_files = [p for p in (cfg.events_path(), cfg.flux_path()) if p.is_file()]
    digest = profile.digest("data", extra=[listing, [(str(p), p.stat().st_size) for p in goes_files]])
    if not force and ws.is_current("label", digest, ws.dataset, ws.labels):
        log.info("reusing labelled dataset %s", ws.dataset)
        return load_dataset(ws.dataset)
    ws.unmark("label")
    images, skipped = read_aia_folder(folder, wavelength=cfg.wavelength, progress=progress)
    if not images:
        raise ValueError(f"{folder}: no readable {cfg.wavelength} Å image ({len(skipped)} skipped)")
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
    labels.loc[labelled, "split"] = np.where(test, "test", "train")
    arrays = np.stack([preprocess_aia(im, cfg.image_size) for im, ok in zip(images, labelled) if ok])[:, None]
    units = images[0].units
    scaling = None if units == "display" else AIAScaling.for_channel(cfg.wavelength)
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
    table_all = Table.from_pandas(labels[keep].assign(time=labels["time"].astype(str)))
    table_all.meta.update({"helioforge": __version__, **{k: v for k, v in meta.items() if k != "scaling"}})
    with atomic_path(ws.labels, suffix=".ecsv") as tmp:
        table_all.write(tmp, format="ascii.ecsv", overwrite=True)
    sub = labels.loc[labelled, keep].reset_index(drop=True)
    _write_dataset(ws.dataset, arrays, sub, meta, profile)
    hist_all = class_histogram(labels["class_index"].to_numpy())
    plot_class_histogram(hist_all, ws.histogram, title=f"AIA {cfg.wavelength} Å images by GOES class ({cfg.label_source})")
    report = {
        "images_read": len(images),
        "skipped": [{"file": str(s.path), "reason": s.reason} for s in skipped],
        "labelled": int(labelled.sum()),
        "unlabelled": int((~labelled).sum()),
        "histogram": hist_all,
        "train": {c: int(((sub["split"] == "train") & (sub["class_index"] == i)).sum()) for i, c in enumerate(FLARE_CLASSES)},
        "test": {c: int(((sub["split"] == "test") & (sub["class_index"] == i)).sum()) for i, c in enumerate(FLARE_CLASSES)},
        "event_linked": int((labels["label_source"] == "events").sum()),
        "events_file": str(cfg.events_path()) if events is not None else None,
        "flux_file": str(cfg.flux_path()) if flux is not None else None,
        **meta,
    }
    write_json(ws.labels_report, report)
    ws.save_profile(profile)
    ws.mark("label", digest)
    log.info("labelled %d of %d images (%s); %d skipped", labelled.sum(), len(images), hist_all, len(skipped))
    return LabelledSet(arrays.astype(np.float32), sub, meta)


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
    """Read ``dataset.fits`` written by :func:`label_dataset`. Raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no labelled dataset (run `helioforge diffusion label`)")
    with fits.open(path) as hdul:
        arrays = np.asarray(hdul[0].data, dtype=np.float32)[:, None]
        h = hdul[0].header
        lo, hi = h.get("HIERARCH HF scale_log10_min", ""), h.get("HIERARCH HF scale_log10_max", "")
        meta = {"wavelength": int(h["WAVELNTH"]), "units": h.get("HIERARCH HF units", ""),
                "scaling": {"log10_min": float(lo), "log10_max": float(hi)} if lo != "" else None,
                "label_source": h.get("HIERARCH HF label_source", ""), "images_folder": hdul["LABELS"].header.get("IMAGES", ""),
                "digest": h.get("HIERARCH HF digest", "")}
        table = Table(hdul["LABELS"].data).to_pandas()
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
    retrain the other). Raises ``FileNotFoundError`` without a labelled dataset and
    ``ValueError`` for an unknown condition."""
    import copy

    condition = condition or profile.train.condition
    if condition not in ("class", "flux"):
        raise ValueError(f"condition must be 'class' or 'flux', got {condition!r}")
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
    step = f"model_{condition}"
    digest = profile.digest("unet", "train", extra=data.meta["digest"])
    stem = ws.model_stem(condition)
    if not force and ws.is_current(step, digest, stem.with_suffix(".safetensors")):
        log.info("reusing %s model %s", condition, stem)
        return stem
    ws.unmark(step)
    resumable = copy.deepcopy(profile)
    resumable.train.epochs = 0  # a longer run may resume a shorter one with the same settings
    run_digest = resumable.digest("unet", "train", extra=data.meta["digest"])
    if force or ws.state().get(f"{step}_config") != run_digest:
        # a changed configuration must not resume the old run's checkpoint
        import shutil

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
    ws.mark(step, digest)
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

    Raises ``ValueError`` when the condition does not suit the model (a class for a flux model
    or the reverse, a class absent from the model's training set, a non-positive flux).
    """
    from helioforge.diffusion.report import save_grid

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
        if flux is None or not flux > 0:
            raise ValueError(f"{stem}: a flux-conditioned model needs --flux > 0 (W m^-2)")
        lo_hi = config.get("log10_flux_range")
        if lo_hi and not lo_hi[0] <= np.log10(flux) <= lo_hi[1]:
            log.warning("flux %.2g W/m² lies outside the training range 1e%.1f–1e%.1f: extrapolation", flux, *lo_hi)
        cond = np.full(n, np.log10(flux))
        label = f"GOES flux {flux:.2g} W/m²"
    res = sample(net, config["train"], cond, sampler=sampler, steps=steps, cfg_scale=cfg_scale, eta=eta, seed=seed,
                 device=device, progress=progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data_meta = config.get("data", {})
    hdr = fits.Header()
    hdr["WAVELNTH"] = (int(data_meta.get("wavelength", 0)), "AIA channel, Angstrom")
    hdr["BUNIT"] = ("scaled", "network units [-1,1]; helioforge.data.aia.to_intensity")
    params = {"condition": net.condition, "flare_class": flare_class or "", "flux_Wm2": flux if flux else "",
              "cfg_scale": cfg_scale, "eta": eta, "sampler": sampler, "steps": res.nfe_per_image // (2 if cfg_scale else 1),
              "seed": seed, "model": str(stem), "units": data_meta.get("units", ""),
              "scaling": data_meta.get("scaling") or ""}
    fits_path = write_fits(out.with_suffix(".fits"), res.images[:, 0], model="diffusion", params=params, header=hdr)
    png = save_grid(res.images, out.with_suffix(".png"), title=f"{label}, w={cfg_scale:g}, {sampler}")
    return fits_path, png
