"""The data stage of the diffusion job: AIA images → labelled, preprocessed, split dataset
(Ramunno et al. 2024, §2.1–2.4).

:func:`build_labelled_set` reads the AIA images of one channel
(:func:`helioforge.data.aia.read_aia_folder`), labels them with GOES classes and log10 X-ray
flux (:func:`helioforge.data.goes_labels.label_images`), preprocesses them to N×N in [-1, 1]
(:func:`helioforge.data.aia_preprocess.preprocess_aia`) and splits whole days into a training and a
held-out real test set; :func:`write_dataset` / :func:`load_dataset` store it as
``dataset.fits`` (cube + label table). The work-folder bookkeeping (which products are current)
is :mod:`helioforge.diffusion.pipeline`'s.

SDOMLv2 stores (``profile.stream.source == "sdoml"``) are not read into memory:
:func:`build_sdoml_index` opens the store lazily (:func:`helioforge.data.sdoml.open_sdoml`:
time range, channel, SDOMLv2's exposure/degradation rule), labels and splits the frames from
their times alone, and :meth:`SDOMLIndex.stream` gives a torch ``IterableDataset``
(:class:`SDOMLStream`) that reads one zarr chunk at a time, preprocesses its frames and
shuffles them through a bounded buffer, for :func:`helioforge.diffusion.train.train_diffusion_stream`.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table
from torch.utils.data import IterableDataset

from helioforge import __version__
from helioforge.data.aia import MIN_AIA_SIDE, AIAImage, aia_image_problem, read_aia_folder
from helioforge.data.aia_preprocess import AIAScaling, preprocess_aia
from helioforge.data.goes import FLARE_CLASSES, read_event_list, read_xrs_flux
from helioforge.data.goes_labels import class_histogram, label_images
from helioforge.data.sdoml import SDOMLError, default_storage_options, open_sdoml, sdoml_blocks, store_url
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
    "SDOMLIndex",
    "SDOMLStream",
    "build_sdoml_index",
    "sdoml_digest",
]

log = logging.getLogger(__name__)

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


def _assign_split(labels: pd.DataFrame, times: np.ndarray, labelled: np.ndarray, profile: DiffusionProfile,
                  where: Any, what: str, of: str, remedy: str) -> None:
    """Fill ``labels["split"]`` (whole days held out for the test split, :func:`_split_by_day`);
    ``ValueError`` naming ``where`` when the training split is smaller than one batch."""
    cfg = profile.data
    test = _split_by_day(times[labelled], cfg.test_fraction, cfg.seed)
    n_train, n_test = int((~test).sum()), int(test.sum())
    batch = int(profile.train.batch_size)
    if n_train < max(2, batch):
        days = len(np.unique(times[labelled].astype("datetime64[D]")))
        raise ValueError(
            f"{where}: only {n_train} training and {n_test} test {what} ({int(labelled.sum())} labelled on {days} "
            f"day(s) {of}): fewer than one training batch ({batch}); {remedy}"
            + ("" if cfg.label_source == "flux" else ", or label by flux (--source flux)"))
    labels.loc[labelled, "split"] = np.where(test, "test", "train")


def check_data_config(profile: DiffusionProfile) -> None:
    """Refuse data settings that cannot make a training set.

    Parameters
    ----------
    profile : DiffusionProfile
        Its ``data`` section (channel, image size, tolerance, test fraction, label source),
        ``unet.block_out_channels`` (the image size must divide by 2^(levels-1)) and the
        ``stream`` section (shuffle buffer ≥ 1, workers ≥ 0, a store for ``sdoml``, parsable
        start/end times) are checked.

    Raises
    ------
    helioforge.errors.InputError
        (a ``ValueError``) naming the command-line option: a wavelength that is not an AIA
        channel (:data:`AIA_CHANNELS`, Å), an image size outside ``MIN_AIA_SIDE``..
        :data:`MAX_IMAGE_SIZE` or not a multiple of the U-Net's downsampling factor, a negative
        or non-finite tolerance (minutes), a test fraction outside (0, 1), an unknown label
        source (not ``events``, ``flux`` or ``events+flux``), or stream settings as above.
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
    st = profile.stream
    check_count("stream.shuffle_buffer", st.shuffle_buffer, 1)
    check_count("stream.num_workers", st.num_workers, 0)
    if st.source == "sdoml" and not st.store:
        raise InputError("stream.source is 'sdoml' but no stream.store is given (a local SDOMLv2 zarr folder or an "
                         "s3:// / gs:// URL)")
    for name in ("start", "end"):
        value = getattr(st, name)
        if value is not None:
            try:
                np.datetime64(value, "s")
            except (ValueError, TypeError):
                raise InputError(f"stream.{name} {value!r} is not a time (ISO 8601, e.g. 2010-05-13T00:00)") from None


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
    events, flux = _goes_inputs(cfg)
    labels = label_images(times, events=events, flux=flux, source=cfg.label_source,
                          tolerance=np.timedelta64(int(round(cfg.tolerance_min * 60)), "s"))
    labels.insert(0, "file", [im.path.name for im in images])
    labelled = (labels["class_index"] >= 0).to_numpy()
    labels["split"] = ""
    if not labelled.any():
        raise ValueError(f"{folder}: none of the {len(images)} images could be labelled with source={cfg.label_source!r}")
    _assign_split(labels, times, labelled, profile, folder, "images",
                  f"of {len(images)} read, {len(skipped)} skipped", "add images from more days")
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


def _goes_inputs(cfg: Any) -> tuple[pd.DataFrame | None, pd.Series | None]:
    """The event list (when the label source uses events) and the XRS-B flux (when its file
    exists; required by a flux source) of the ``data`` settings."""
    events = flux = None
    if "events" in cfg.label_source:
        if not cfg.events_path().is_file():
            raise FileNotFoundError(f"{cfg.events_path()}: event list not found")
        events = read_event_list(cfg.events_path())
    if cfg.flux_path().is_file():
        flux = read_xrs_flux(cfg.flux_path())
    elif "flux" in cfg.label_source:
        raise FileNotFoundError(f"{cfg.flux_path()}: GOES X-ray flux file not found")
    return events, flux


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


# --------------------------------------------------------------------------- SDOMLv2 stream


def sdoml_digest(profile: DiffusionProfile, frames: Any) -> str:
    """Digest of what a streamed SDOML training set is made from, without reading a pixel.

    The ``data`` and ``stream`` settings (without the paths, the store URL, the worker count and
    the buffer size, which do not change the images) plus the frames' metadata (shape, year,
    index, time and correction factor of every frame in the range) and the content of the GOES
    files: the same frames in a copy of the store give the same digest.

    Parameters
    ----------
    profile : DiffusionProfile
        Its ``data`` and ``stream`` sections.
    frames : xarray.DataArray
        :func:`helioforge.data.sdoml.open_sdoml` of the store (coordinates only are used).

    Returns
    -------
    str
        Hex digest (12 digits).
    """
    h = hashlib.sha1()
    h.update(repr(tuple(int(v) for v in frames.shape)).encode())
    for name in ("year", "index", "time", "factor"):
        h.update(np.ascontiguousarray(frames[name].values).view(np.uint8).tobytes())
    cfg = profile.data
    goes_files = [p for p in (cfg.events_path(), cfg.flux_path()) if p.is_file()]
    return profile.digest("data", "stream", extra=[h.hexdigest(), content_digest(goes_files)],
                          drop=("data.images", "data.events", "data.flux", "data.default_folder", "stream.store",
                                "stream.num_workers", "stream.shuffle_buffer", "stream.anonymous"))


@dataclass
class SDOMLIndex:
    """The frames of an SDOMLv2 store in the profile's time range, labelled and split by their
    times alone (no pixel read): what :meth:`stream` turns into a training stream.

    frames : the lazy (time, y, x) DN/s ``DataArray`` of :func:`~helioforge.data.sdoml.open_sdoml`.
    table : one row per frame of ``frames`` (same order): ``frame`` (``"2014/171A[12]"``), and the
        label columns of :func:`~helioforge.data.goes_labels.label_images` (``time``,
        ``flare_class``, ``class_index`` −1 unlabelled, ``log10_flux`` W m⁻², ``label_source``,
        ``event_delay_min``, ``goes_class``, ``xrs_log10_flux``, ``unlabelled_reason``), plus
        ``split`` (``train``/``test``; ``""`` for unlabelled frames).
    report : frames in range, labelled / unlabelled (by reason), class counts per split, store.
    meta : ``wavelength``, ``units``, ``scaling``, ``label_source``, ``store``, ``digest``.
    source : the :func:`open_sdoml` arguments (each reading process opens the store again).
    image_size : N of the streamed N×N images.
    seed : base seed of the stream's shuffling (the profile's ``train.seed``).
    shuffle_buffer : default buffer size of :meth:`stream`.
    """

    frames: Any
    table: pd.DataFrame
    report: dict[str, Any]
    meta: dict[str, Any]
    source: dict[str, Any]
    image_size: int
    seed: int = 0
    shuffle_buffer: int = 512

    def stream(self, split: str = "train", condition: str = "class", *, shuffle_buffer: int | None = None,
               seed: int | None = None, with_time: bool = False) -> "SDOMLStream":
        """The labelled frames of one split as a shuffled stream of training examples.

        Parameters
        ----------
        split : str
            ``"train"`` or ``"test"``.
        condition : str
            ``"class"`` (class index 0..4) or ``"flux"`` (log10 flux, W m⁻²; frames without a
            flux are left out, as the in-memory flux model does).
        shuffle_buffer : int or None
            Frames in the shuffle buffer; ``None``: the profile's ``stream.shuffle_buffer``.
        seed : int or None
            Shuffle seed; ``None``: the profile's ``train.seed``.
        with_time : bool
            Also yield each frame's time (int64 ns since 1970, UTC).

        Returns
        -------
        SDOMLStream
            Yields ``(x (1, N, N) float32 in [-1, 1], cond)`` tensors (``+ (time,)``).

        Raises
        ------
        ValueError
            An unknown split or condition, or no frame left in the split.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if condition not in ("class", "flux"):
            raise ValueError(f"condition must be 'class' or 'flux', got {condition!r}")
        sel = (self.table["split"] == split).to_numpy()
        if condition == "flux":
            sel = sel & np.isfinite(self.table["log10_flux"].to_numpy(dtype=np.float64))
        positions = np.flatnonzero(sel)
        if positions.size == 0:
            raise ValueError(f"{self.source['store']}: no labelled {split} frame for the {condition} model")
        cond = (self.table["class_index"].to_numpy()[positions].astype(np.int64) if condition == "class"
                else self.table["log10_flux"].to_numpy(dtype=np.float64)[positions].astype(np.float32))
        times = self.frames["time"].values[positions].astype("datetime64[ns]").astype(np.int64)
        chunks = self.frames["chunk"].values[positions]
        stream = SDOMLStream(self.source, positions, cond, times, chunks, image_size=self.image_size,
                             scaling=self.meta["scaling"], shuffle_buffer=shuffle_buffer or self.shuffle_buffer,
                             seed=self.seed if seed is None else seed, with_time=with_time)
        stream._frames = self.frames  # this process has the store open already (workers reopen it)
        return stream


def build_sdoml_index(profile: DiffusionProfile) -> SDOMLIndex:
    """Open, label and split the frames of ``profile.stream.store`` (paper §2.4), lazily.

    The frames of ``data.wavelength`` between ``stream.start`` and ``stream.end`` are found from
    the store's attributes (:func:`~helioforge.data.sdoml.open_sdoml`); the GOES labels are
    joined by time with :func:`~helioforge.data.goes_labels.label_images` exactly as for an image
    folder (``events``: the closest frame at or after a flare peak within ``tolerance_min``,
    0 ≤ t_frame − t_peak ≤ 7 min in the paper; ``flux``: the XRS-B sample nearest in time,
    within half the series' cadence; ``events+flux``: the event where linked, else the flux).
    Unlabelled frames are left out and counted by reason in ``report["unlabelled_by_reason"]``.
    Whole UTC days are held out as the test split (same rule and seed as the folder path).

    Parameters
    ----------
    profile : DiffusionProfile
        ``stream`` (store, time range, buffer, access), ``data`` (channel, image size N, labels,
        split) and ``train`` (``batch_size``: the least number of training frames; ``seed``).

    Returns
    -------
    SDOMLIndex
        Frames, label table, report and metadata; nothing is written, no pixel is read.

    Raises
    ------
    helioforge.errors.InputError
        Settings out of range (:func:`check_data_config`), no store given, or a channel
        without a DN/s scaling.
    FileNotFoundError
        A local store, or a GOES file the label source needs, that does not exist.
    helioforge.data.sdoml.SDOMLError
        (naming the store) a store that cannot be read, no such channel, no frame in the
        time range, or frames smaller than N×N or not square.
    ValueError
        No frame labelled, or fewer training frames than one batch (with the counts).
    """
    check_data_config(profile)
    cfg, st = profile.data, profile.stream
    if not st.store:
        raise InputError("no SDOML store given (stream.store: a local SDOMLv2 zarr folder or an s3:// / gs:// URL)")
    url = store_url(st.store)
    source = {"store": url, "wavelength": int(cfg.wavelength), "start": st.start, "end": st.end,
              "storage_options": default_storage_options(url, st.anonymous)}
    frames = open_sdoml(**source)
    ny, nx = (int(v) for v in frames.shape[1:])
    side = max(MIN_AIA_SIDE, int(cfg.image_size))
    if ny != nx or ny < side:
        raise SDOMLError(url, f"{frames.attrs['channel']} frames are {ny}×{nx} pixels: need square frames of at "
                              f"least {side}×{side} for --size {cfg.image_size}")
    try:
        scaling = AIAScaling.for_channel(cfg.wavelength)
    except KeyError as exc:
        raise InputError(f"{url}: {exc.args[0]}") from None
    times = frames["time"].values.astype("datetime64[ns]")
    events, flux = _goes_inputs(cfg)
    labels = label_images(times, events=events, flux=flux, source=cfg.label_source,
                          tolerance=np.timedelta64(int(round(cfg.tolerance_min * 60)), "s"))
    channel = frames.attrs["channel"]
    labels.insert(0, "frame", [f"{y}/{channel}[{i}]" for y, i in zip(frames["year"].values, frames["index"].values)])
    labelled = (labels["class_index"] >= 0).to_numpy()
    labels["split"] = ""
    n = len(labels)
    if not labelled.any():
        raise ValueError(f"{url}: none of the {n} {channel} frames could be labelled with source={cfg.label_source!r} "
                         f"(unlabelled: {_count_reasons(labels['unlabelled_reason'])})")
    _assign_split(labels, times, labelled, profile, url, "frames", f"of {n} in the time range", "widen stream.start/end")
    digest = sdoml_digest(profile, frames)
    meta = {
        "wavelength": int(cfg.wavelength),
        "units": "DN/s",
        "scaling": scaling,
        "label_source": cfg.label_source,
        "store": url,
        "digest": digest,
    }
    sub = labels[labelled]
    report = {
        "frames_in_range": n,
        "time_range": [str(times.min()), str(times.max())],
        "labelled": int(labelled.sum()),
        "unlabelled": int((~labelled).sum()),
        "unlabelled_by_reason": _count_reasons(labels.loc[~labelled, "unlabelled_reason"]),
        "histogram": class_histogram(labels["class_index"].to_numpy()),
        "train": {c: int(((sub["split"] == "train") & (sub["class_index"] == i)).sum()) for i, c in enumerate(FLARE_CLASSES)},
        "test": {c: int(((sub["split"] == "test") & (sub["class_index"] == i)).sum()) for i, c in enumerate(FLARE_CLASSES)},
        "event_linked": int((labels["label_source"] == "events").sum()),
        "flux_labelled": int((labels["label_source"] == "flux").sum()),
        "events": labels.attrs.get("events"),
        "tolerance_min": cfg.tolerance_min,
        "correction": frames.attrs["correction"],
        **{k: v for k, v in meta.items() if k != "scaling"},
        "scaling": {"log10_min": scaling.log10_min, "log10_max": scaling.log10_max},
    }
    log.info("%s: %d %s frames in range, %d labelled (%d train, %d test), %d unlabelled", url, n, channel,
             int(labelled.sum()), int((labels["split"] == "train").sum()), int((labels["split"] == "test").sum()),
             int((~labelled).sum()))
    return SDOMLIndex(frames, labels, report, meta, source, int(cfg.image_size), seed=int(profile.train.seed),
                      shuffle_buffer=int(st.shuffle_buffer))


def _dist_rank() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) without it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


class SDOMLStream(IterableDataset):
    """Training examples streamed from an SDOMLv2 store: memory bounded whatever its length.

    Each reading process (the training process, or each DataLoader worker) opens the store
    itself (:func:`~helioforge.data.sdoml.open_sdoml`), takes its share of the zarr chunks that
    hold the stream's frames (chunks dealt round-robin to the DDP ranks, then, in a random
    order drawn anew each epoch, to the workers), reads one chunk at a time (dask, synchronous:
    exposure/degradation rule applied lazily), checks and preprocesses its frames as the
    in-memory path does (:func:`~helioforge.data.aia.aia_image_problem`,
    :func:`~helioforge.data.aia_preprocess.preprocess_aia`) and passes them through a shuffle
    buffer of ``shuffle_buffer`` frames: when the buffer is full a random one is yielded.

    Memory per reading process: one raw chunk (chunk frames × ny × nx × 4 bytes, e.g. 120 ×
    512² × 4 B = 126 MB for the public store's chunks, 15 × 512² × 4 B = 16 MB for those of
    the SDOMLv2 script) + ``shuffle_buffer`` × N² × 4 bytes + the per-frame index (a few tens
    of bytes a frame). Frames that :func:`aia_image_problem` refuses are skipped with a log
    warning and listed in :attr:`skipped` (of the process that read them).

    Parameters
    ----------
    source : dict
        :func:`open_sdoml` arguments (``store``, ``wavelength``, ``start``, ``end``,
        ``storage_options``).
    positions : numpy.ndarray
        (m,) positions of the stream's frames along the opened array's ``time``.
    cond : numpy.ndarray
        (m,) conditions: class indices 0..4 (int64) or log10 flux, W m⁻² (float32).
    times : numpy.ndarray
        (m,) frame times, int64 ns (checked against the store when it is reopened).
    chunks : numpy.ndarray
        (m,) the frames' ``chunk`` coordinate (which frames are read together).
    image_size : int
        N of the yielded N×N images.
    scaling : helioforge.data.aia_preprocess.AIAScaling
        The channel's DN/s → [-1, 1] scaling.
    shuffle_buffer : int
        Frames held by the shuffle buffer (≥ 1; 1 = chunk order, no shuffling inside).
    seed : int
        Base seed of the chunk order and the buffer draws.
    with_time : bool
        Yield the frame time (int64 ns tensor) as a third element.

    Attributes
    ----------
    skipped : list of (int, str)
        (time ns, reason) of the frames this process refused.
    """

    def __init__(self, source: dict[str, Any], positions: np.ndarray, cond: np.ndarray, times: np.ndarray,
                 chunks: np.ndarray, *, image_size: int, scaling: AIAScaling, shuffle_buffer: int = 512, seed: int = 0,
                 with_time: bool = False) -> None:
        super().__init__()
        if not (len(positions) == len(cond) == len(times) == len(chunks)):
            raise ValueError(f"positions, cond, times and chunks differ in length: "
                             f"{len(positions)}, {len(cond)}, {len(times)}, {len(chunks)}")
        check_count("shuffle_buffer", shuffle_buffer, 1)
        self.source = dict(source)
        self.positions = np.asarray(positions, dtype=np.int64)
        self.cond = np.asarray(cond)
        self.times = np.asarray(times, dtype=np.int64)
        self.blocks = sdoml_blocks(np.asarray(chunks))
        self.image_size = int(image_size)
        self.scaling = scaling
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.with_time = bool(with_time)
        self.skipped: list[tuple[int, str]] = []
        self._iterations = 0
        self._frames: Any = None

    def __getstate__(self) -> dict[str, Any]:  # the open store stays in its process
        state = dict(self.__dict__)
        state["_frames"] = None
        return state

    def __len__(self) -> int:
        """Frames this DDP rank streams per epoch (all of them with one process).

        Returns
        -------
        int
            Sum of the sizes of this rank's chunk groups.
        """
        rank, world = _dist_rank()
        return int(sum(len(b) for b in self.blocks[rank::world]))

    def frames(self):
        """The store's frames, opened in this process (once) and checked against the index.

        Returns
        -------
        xarray.DataArray
            :func:`open_sdoml` of :attr:`source`.

        Raises
        ------
        helioforge.data.sdoml.SDOMLError
            The store no longer holds the indexed frames at their positions (it changed since
            :func:`build_sdoml_index`), or cannot be opened.
        """
        if self._frames is None:
            frames = open_sdoml(**self.source)
            t = frames["time"].values.astype("datetime64[ns]").astype(np.int64)
            if len(self.positions) and (self.positions.max() >= len(t) or not np.array_equal(t[self.positions], self.times)):
                raise SDOMLError(self.source["store"], "the store's frames changed since it was indexed "
                                                       "(times differ); build the index again")
            self._frames = frames
        return self._frames

    def _read(self, block: np.ndarray) -> Iterator[tuple]:
        """Check and preprocess the frames of one chunk group (local positions ``block``)."""
        import dask
        import torch

        frames = self.frames()
        with dask.config.set(scheduler="synchronous"):
            raw = np.asarray(frames.isel(time=self.positions[block]).values)
        store = self.source["store"]
        path = Path(store) if "://" not in store else Path(store.split("://", 1)[1])
        wavelength = int(self.source["wavelength"])
        for j, k in enumerate(block):
            t = self.times[k]
            im = AIAImage(data=raw[j], wavelength=wavelength, time=np.datetime64(int(t), "ns").astype("datetime64[s]"),
                          path=path, kind="zarr", units="DN/s")
            problem = aia_image_problem(im, self.image_size)
            if problem:
                self.skipped.append((int(t), problem))
                log.warning("%s: frame at %s skipped: %s", store, im.time, problem)
                continue
            x = torch.from_numpy(preprocess_aia(im, self.image_size, self.scaling).astype(np.float32)[None])
            item: tuple = (x, torch.as_tensor(self.cond[k]))
            if self.with_time:
                item += (torch.as_tensor(t),)
            yield item
        del raw

    def __iter__(self) -> Iterator[tuple]:
        """One epoch: this process's chunk groups in a fresh random order through the buffer.

        Yields
        ------
        tuple of torch.Tensor
            ``x`` (1, N, N) float32 in [-1, 1], ``cond`` (class index int64 or log10 flux
            float32), and with ``with_time`` the frame time (int64 ns).
        """
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        rank, world = _dist_rank()
        mine = self.blocks[rank::world]
        self._iterations += 1
        # the DataLoader draws a fresh base seed for every epoch's workers (same for all of them);
        # persistent workers and the training process count their own epochs
        base = (info.seed - info.id) % 2**63 if info is not None else 0
        rng = np.random.default_rng([self.seed, base, self._iterations])
        order = rng.permutation(len(mine))
        if info is not None:
            order = order[info.id::info.num_workers]
        pick = np.random.default_rng([self.seed, base, self._iterations, 1 + (info.id if info is not None else 0)])
        buffer: list[tuple] = []
        for b in order:
            for item in self._read(mine[b]):
                buffer.append(item)
                if len(buffer) >= self.shuffle_buffer:
                    j = int(pick.integers(len(buffer)))
                    buffer[j], buffer[-1] = buffer[-1], buffer[j]
                    yield buffer.pop()
        for j in pick.permutation(len(buffer)):
            yield buffer[j]
