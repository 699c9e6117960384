"""The data stage of the diffusion job: AIA images → labelled, preprocessed, split dataset
(Ramunno et al. 2024, §2.1–2.4).

:func:`build_labelled_set` reads the AIA images of one channel
(:func:`helioforge.data.aia.read_aia_folder`), labels them with GOES classes and log10 X-ray
flux (:func:`helioforge.data.goes_labels.label_images`), preprocesses them to N×N in [-1, 1]
(:func:`helioforge.data.aia_preprocess.preprocess_aia`) and splits whole days into a training and a
held-out real test set; :func:`write_dataset` / :func:`load_dataset` store it as
``dataset.fits`` (cube + label table). The work-folder bookkeeping (which products are current)
is :mod:`helioforge.diffusion.pipeline`'s.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from helioforge import __version__
from helioforge.data.aia import MIN_AIA_SIDE, read_aia_folder
from helioforge.data.aia_preprocess import AIAScaling, preprocess_aia
from helioforge.data.goes import FLARE_CLASSES, read_event_list, read_xrs_flux
from helioforge.data.goes_labels import class_histogram, label_images
from helioforge.diffusion.config import DiffusionProfile
from helioforge.errors import InputError, ProductError, check_count, check_finite
from helioforge.io import write_fits
from helioforge.workspace import content_digest

__all__ = [
    "AIA_CHANNELS",
    "MAX_IMAGE_SIZE",
    "LabelledSet",
    "LabelledProducts",
    "check_data_config",
    "dataset_digest",
    "build_labelled_set",
    "write_dataset",
    "load_dataset",
    "class_conditions",
]

#: The AIA channels (Å) a dataset can be made of (EUV, UV and visible).
AIA_CHANNELS = (94, 131, 171, 193, 211, 304, 335, 1600, 1700, 4500)
#: Largest image side N of a dataset (the AIA detector is 4096²).
MAX_IMAGE_SIZE = 4096

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
        """Images and labels of one split.

        Parameters
        ----------
        name : str
            ``"train"`` or ``"test"``; any other name selects nothing.

        Returns
        -------
        images : numpy.ndarray
            (m, 1, N, N) float32 in [-1, 1].
        class_index : numpy.ndarray
            (m,) int64 GOES class indices 0..4 (A, B, C, M, X).
        log10_flux : numpy.ndarray
            (m,) float64 log10 of the GOES 1–8 Å peak flux, W m⁻².
        """
        sel = (self.table["split"] == name).to_numpy()
        return self.images[sel], self.table["class_index"].to_numpy()[sel].astype(np.int64), \
            self.table["log10_flux"].to_numpy()[sel].astype(np.float64)

    def class_counts(self, name: str | None = None) -> dict[str, int]:
        """Images per class (all five) in a split, or overall.

        Parameters
        ----------
        name : str or None
            ``"train"``, ``"test"``, or ``None`` for the whole set.

        Returns
        -------
        dict of str to int
            {class name A..X: number of images}, zero counts included.
        """
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


def check_data_config(profile: DiffusionProfile) -> None:
    """Refuse data settings that cannot make a training set.

    Parameters
    ----------
    profile : DiffusionProfile
        Its ``data`` section (channel, image size, tolerance, test fraction, label source) and
        ``unet.block_out_channels`` (the image size must divide by 2^(levels-1)) are checked.

    Raises
    ------
    helioforge.errors.InputError
        (a ``ValueError``) naming the command-line option: a wavelength that is not an AIA
        channel (:data:`AIA_CHANNELS`, Å), an image size outside ``MIN_AIA_SIDE``..
        :data:`MAX_IMAGE_SIZE` or not a multiple of the U-Net's downsampling factor, a negative
        or non-finite tolerance (minutes), a test fraction outside (0, 1), or an unknown label
        source (not ``events``, ``flux`` or ``events+flux``).
    """
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


def dataset_digest(profile: DiffusionProfile, folder: Path) -> str:
    """Digest of what a labelled dataset is made from.

    The ``data`` settings (without the paths) and the *content* of the image folder's files and
    the GOES files (copying the same data elsewhere keeps a dataset current).

    Parameters
    ----------
    profile : DiffusionProfile
        Its ``data`` section, including the GOES event and flux paths (missing files are left
        out of the digest).
    folder : pathlib.Path
        The image folder (its regular files, not subfolders, are digested).

    Returns
    -------
    str
        Hex digest, stored with the dataset.

    Raises
    ------
    FileNotFoundError
        When ``folder`` does not exist (from listing it).
    """
    cfg = profile.data
    files = sorted(p for p in folder.iterdir() if p.is_file())
    goes_files = [p for p in (cfg.events_path(), cfg.flux_path()) if p.is_file()]
    return profile.digest("data", extra=[content_digest(files), content_digest(goes_files)],
                          drop=("data.images", "data.events", "data.flux"))


@dataclass
class LabelledProducts:
    """Everything :func:`build_labelled_set` makes, before anything is written.

    labelled : the labelled, preprocessed images (the ``dataset.fits`` content).
    table_all : every image read, labelled or not (``labels.ecsv``).
    report : what was read, skipped and labelled (``labels.json``).
    histogram : images per class, unlabelled included (Fig. 1).
    """

    labelled: LabelledSet
    table_all: Table
    report: dict[str, Any]
    histogram: dict[str, int]


def build_labelled_set(profile: DiffusionProfile, folder: Path, digest: str, *, progress: bool = True) -> LabelledProducts:
    """Read, label, preprocess and split the AIA images of ``folder`` (paper §2); write nothing.

    Parameters
    ----------
    profile : its ``data`` section picks the channel, image size N, label source, tolerance and
        split; ``train.batch_size`` is the least number of training images.
    folder : the image folder (FITS, SDOML-binned FITS or browse JPEG).
    digest : :func:`dataset_digest` of the inputs (stored with the dataset).
    progress : show a progress bar while reading.

    Returns
    -------
    LabelledProducts : images (n, 1, N, N) float32 in [-1, 1] with their label table, the table
        of every image, the labelling report and the class histogram.

    Raises
    ------
    FileNotFoundError : a GOES file the label source needs is missing.
    InputError : images of mixed units, or a channel without a DN/s scaling.
    ValueError : no usable image, no image labelled, or fewer training images than one batch.
    """
    cfg = profile.data
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
    return LabelledProducts(LabelledSet(arrays.astype(np.float32), sub, meta), table_all, report, hist_all)


def _count_reasons(reasons: Any) -> dict[str, int]:
    """Counts per reason, most frequent first (file-specific details after a colon dropped)."""
    out: dict[str, int] = {}
    for r in reasons:
        key = str(r).split(": ", 1)[0] if str(r).count(":") and not str(r).startswith(("outside", "in a gap")) else str(r)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def write_dataset(path: Path, arrays: np.ndarray, table: pd.DataFrame, meta: dict[str, Any],
                  profile: DiffusionProfile) -> None:
    """Write ``dataset.fits``.

    The cube (n, N, N) float32 in network units [-1, 1] goes in the primary HDU (channel,
    scaling, label source and digest in its header) and the label table in the ``LABELS``
    binary table.

    Parameters
    ----------
    path : pathlib.Path
        Output FITS file.
    arrays : numpy.ndarray
        (n, 1, N, N) images in [-1, 1] (the channel axis is dropped on writing).
    table : pandas.DataFrame
        One label row per image, with a ``time`` column (written as strings).
    meta : dict
        ``wavelength`` (Å), ``units``, ``scaling`` (dict with ``log10_min``/``log10_max`` or
        ``None``), ``label_source``, ``digest`` and ``images_folder``.
    profile : DiffusionProfile
        Its name is recorded in the header.

    Raises
    ------
    KeyError
        When ``meta`` lacks one of the keys above.
    """
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
    """Read ``dataset.fits`` written by :func:`~helioforge.diffusion.pipeline.label_dataset`.

    Parameters
    ----------
    path : str or pathlib.Path
        The dataset file.

    Returns
    -------
    LabelledSet
        Images (n, 1, N, N) float32 in [-1, 1], the label table and the metadata
        (``wavelength`` Å, ``units``, ``scaling``, ``label_source``, ``images_folder``, ``digest``).

    Raises
    ------
    FileNotFoundError
        For a missing file.
    helioforge.errors.ProductError
        (a ``ValueError``, naming the file and ``diffusion label --force``) for one that is
        unreadable, truncated or not a labelled dataset (no image cube, label columns missing,
        row count not matching, values not finite or outside [-1, 1]).
    """
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


def class_conditions(counts: dict[str, int], n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``n`` class indices in the proportions of ``counts``, shuffled.

    Largest-remainder rounding; classes with a zero count get none.

    Parameters
    ----------
    counts : dict of str to int
        Images per class name (A, B, C, M, X); missing names count 0.
    n : int
        Number of indices to draw, ≥ 0.
    rng : numpy.random.Generator or None
        Generator of the shuffle (default: seed 0).

    Returns
    -------
    numpy.ndarray
        (n,) int class indices 0..4.

    Raises
    ------
    ValueError
        When no class has any image.
    """
    c = np.array([counts.get(k, 0) for k in FLARE_CLASSES], float)
    if c.sum() <= 0:
        raise ValueError("no class has any image")
    exact = c / c.sum() * n
    k = np.floor(exact).astype(int)
    k[np.argsort(exact - k)[::-1][: n - k.sum()]] += 1
    out = np.repeat(np.arange(len(FLARE_CLASSES)), k)
    return (rng or np.random.default_rng(0)).permutation(out)
