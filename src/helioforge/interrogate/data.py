"""The training corpus: SHARP patches and full-disk tiles as one image cube plus a lookup table.

Images follow Chatterjee et al. (2025, §Data): each field map is scaled by ``clip_gauss``
(1000 G), clipped to [-1, 1] and interpolated to N×N (see :mod:`helioforge.data.preprocess`).
The table keeps, for each image, where it came from, so a retrieved image can be traced back
to its file (and, for tiles, to the pixel box of the original full-disk array).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from helioforge.config import SAMPLE_DIR
from helioforge.data.fits import FitsReadError, Skipped
from helioforge.data.fulldisk import tiles_from_fulldisk
from helioforge.data.preprocess import preprocess_br
from helioforge.data.sharp import read_sharp_folder
from helioforge.interrogate.config import DataConfig, Profile
from helioforge.io import write_fits
from helioforge.progress import track

__all__ = ["Corpus", "build_corpus", "holdout_harps", "training_mask", "COLUMNS", "SOURCE_SHARP", "SOURCE_TILE",
           "CORPUS_FORMAT"]

#: Values of the ``source`` column.
SOURCE_SHARP, SOURCE_TILE = "sharp", "fulldisk_tile"
#: Version of the corpus table layout (in the corpus digest: a new layout rebuilds old corpora).
CORPUS_FORMAT = 2

logger = logging.getLogger(__name__)

#: Lookup-table columns, in order, with their dtypes.
COLUMNS: tuple[tuple[str, type], ...] = (
    ("source", str),
    ("region", str),
    ("file", str),
    ("HARPNUM", np.int64),
    ("NOAA_AR", np.int64),
    ("T_REC", str),
    ("crop", str),
    ("pixel_size_mm", np.float64),
    ("USFLUX", np.float64),
)


@dataclass
class Corpus:
    """An image cube with one lookup-table row per image.

    Attributes
    ----------
    images : (n, 1, N, N) float32, B / clip_gauss in [-1, 1].
    table : astropy Table, one row per image, columns ``source`` ("sharp" | "fulldisk_tile"),
        ``region`` ("HARP <n>" for SHARP patches, "full disk <T_REC>" for tiles), ``file`` (basename), ``HARPNUM`` (-1 for tiles), ``NOAA_AR`` (-1 when none), ``T_REC``,
        ``crop`` ("x0:x1,y0:y1" 0-based box of the original full-disk array; "" for SHARP),
        ``pixel_size_mm`` (native pixel, Mm), ``USFLUX`` (Mx, NaN when absent).
    clip_gauss : the scale used, G (recorded in saved files).
    warnings : reader notes about files that were read with repairs (e.g. non-standard header
        cards fixed); kept in memory only, the pipeline records them beside the skipped files.
    """

    images: np.ndarray
    table: Table
    clip_gauss: float = 1000.0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 1 or self.images.shape[2] != self.images.shape[3]:
            raise ValueError(f"corpus images must have shape (n, 1, N, N), got {self.images.shape}")
        if len(self.table) != self.images.shape[0]:
            raise ValueError(f"corpus table has {len(self.table)} rows for {self.images.shape[0]} images")

    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        """N, the image side in pixels."""
        return int(self.images.shape[-1])

    def save(self, path: str | Path) -> Path:
        """Write the corpus to one FITS file, atomically.

        Primary HDU: the (n, 1, N, N) float32 cube with provenance cards (``HF_MODEL='corpus'``,
        ``HIERARCH HF image_size``/``clip_gauss``); extension ``LOOKUP``: the table as a
        binary table.

        Parameters
        ----------
        path : str or Path
            Destination FITS file (written through a temporary file, then renamed).

        Returns
        -------
        Path
            ``path``.
        """
        hdr = fits.Header()
        hdr["BUNIT"] = ("", "B / clip_gauss, dimensionless in [-1, 1]")
        lookup = fits.table_to_hdu(self.table)
        lookup.name = "LOOKUP"
        return write_fits(
            path,
            self.images.astype(np.float32, copy=False),
            model="corpus",
            params={"image_size": self.image_size, "clip_gauss": float(self.clip_gauss), "n_images": len(self)},
            header=hdr,
            extra_hdus=[lookup],
        )

    @classmethod
    def load(cls, path: str | Path) -> "Corpus":
        """Read a corpus written by :meth:`save`.

        Raises
        ------
        FileNotFoundError : no such file.
        FitsReadError : not a readable FITS file, no (n, 1, N, N) image cube in the primary
            HDU, no ``LOOKUP`` table, missing columns, or a row count that differs from n.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: corpus file not found")
        try:
            with fits.open(path, memmap=False) as hdul:
                if hdul[0].data is None:
                    raise FitsReadError(path, "no image cube in the primary HDU")
                images = np.array(hdul[0].data, dtype=np.float32)
                clip = hdul[0].header.get("HIERARCH HF clip_gauss", 1000.0)
                if "LOOKUP" not in hdul:
                    raise FitsReadError(path, "no LOOKUP table extension")
                table = Table.read(hdul["LOOKUP"])
        except FitsReadError:
            raise
        except (OSError, TypeError, ValueError) as exc:
            raise FitsReadError(path, f"corrupt corpus file ({type(exc).__name__}: {exc})") from None
        missing = [c for c, _ in COLUMNS if c not in table.colnames]
        if missing:
            raise FitsReadError(path, f"LOOKUP table lacks column(s): {', '.join(missing)}")
        table.meta.clear()
        for name in table.colnames:  # FITS tables are big-endian; hand back native dtypes
            col = table[name]
            if col.dtype.kind in "iuf" and not col.dtype.isnative:
                table[name] = col.astype(col.dtype.newbyteorder("="))
        try:
            return cls(images=images, table=table, clip_gauss=float(clip))
        except ValueError as exc:
            raise FitsReadError(path, str(exc)) from None


def _finite_or_nan(x: float | None) -> float:
    return float(x) if x is not None and math.isfinite(x) else float("nan")


def _in_sample(folder: Path) -> bool:
    return Path(folder).resolve().is_relative_to(SAMPLE_DIR)


def build_corpus(cfg: DataConfig, sharp: bool = True, fulldisk: bool = True) -> tuple[Corpus, list[Skipped]]:
    """Build the corpus from the SHARP ``Br`` files and/or full-disk tiles named by ``cfg``.

    Uses ``cfg.sharp_paths()``, ``cfg.fulldisk_path()``, ``cfg.image_size``, ``cfg.clip_gauss``,
    ``cfg.tile_px``, ``cfg.tile_stride_px``, ``cfg.max_disk_angle_deg`` and
    ``cfg.radial_correction``. SHARP rows come first (sorted by file name), then tiles (files
    sorted by name, tiles row-major). Bad files and a missing input folder become
    :class:`Skipped` entries (with a logger warning) instead of errors.

    Returns
    -------
    (corpus, skipped)

    Raises
    ------
    ValueError : neither source selected, or no image could be read at all (the message lists
        the skipped files/folders and why).
    """
    if not (sharp or fulldisk):
        raise ValueError("build_corpus: select at least one of sharp=True / fulldisk=True")
    size, clip = int(cfg.image_size), float(cfg.clip_gauss)
    images: list[np.ndarray] = []
    rows: list[tuple] = []
    skipped: list[Skipped] = []

    notes: list[str] = []
    for folder in cfg.sharp_paths() if sharp else []:
        if not folder.is_dir():
            logger.warning("SHARP folder not found: %s", folder)
            skipped.append(Skipped(folder, "SHARP folder not found"))
        else:
            patches, bad = read_sharp_folder(folder, segment="Br")
            skipped.extend(bad)
            for p in track(patches, "SHARP patches", unit="patch", disable=len(patches) < 50):
                notes.extend(p.warnings)
                images.append(preprocess_br(p.Br, size, clip))
                rows.append(
                    (
                        SOURCE_SHARP,
                        f"HARP {p.harpnum}",
                        p.path.name,
                        p.harpnum,
                        p.noaa_ar if p.noaa_ar is not None else -1,
                        p.t_rec,
                        "",
                        p.pixel_size_mm,
                        _finite_or_nan(p.usflux),
                    )
                )

    if fulldisk:
        folder = cfg.fulldisk_path()
        if not folder.is_dir():
            logger.warning("full-disk folder not found: %s", folder)
            hint = " (the embedded sample has none: `helioforge data fetch hmi_fulldisk` gets them)" if _in_sample(folder) else ""
            skipped.append(Skipped(folder, "full-disk folder not found" + hint))
        else:
            files = sorted(folder.glob("*.fits"))
            if not files:
                skipped.append(Skipped(folder, "no *.fits files in the full-disk folder"))
            for f in track(files, "full-disk tiles", unit="file"):
                try:
                    tiles = tiles_from_fulldisk(
                        f,
                        tile_px=cfg.tile_px,
                        stride_px=cfg.tile_stride_px,
                        max_angle_deg=cfg.max_disk_angle_deg,
                        radial_correction=cfg.radial_correction,
                    )
                except (FitsReadError, FileNotFoundError, ValueError) as exc:
                    reason = exc.problem if isinstance(exc, FitsReadError) else str(exc)
                    logger.warning("skipping %s", exc)
                    skipped.append(Skipped(f, reason))
                    continue
                if not tiles:
                    skipped.append(Skipped(f, "no tile within the disk-angle limit without NaN"))
                for t in tiles:
                    x0, x1, y0, y1 = t.crop
                    images.append(preprocess_br(t.Br, size, clip))
                    rows.append(
                        (SOURCE_TILE, f"full disk {t.t_rec}", f.name, -1, -1, t.t_rec, f"{x0}:{x1},{y0}:{y1}",
                         t.pixel_size_mm, float("nan"))
                    )
                del tiles

    if not images:
        detail = "; ".join(f"{s.path}: {s.reason}" for s in skipped) or "no input files"
        raise ValueError(f"build_corpus: no image could be read ({detail})")
    table = Table(rows=rows, names=[c for c, _ in COLUMNS], dtype=[d for _, d in COLUMNS])
    cube = np.stack(images)[:, None, :, :].astype(np.float32, copy=False)
    return Corpus(images=cube, table=table, clip_gauss=clip, warnings=notes), skipped


def holdout_harps(corpus: Corpus, profile: Profile) -> list[int]:
    """HARPs held out of GAN and SimSiam training.

    Up to ``profile.data.holdout_harps`` of the corpus's HARPs, drawn with
    ``profile.data.holdout_seed``, taken in the drawn order only while the rest of the corpus
    keeps at least one GAN batch (``profile.gan.batch_size``) to train on and two HARPs (on a
    small corpus such as the embedded sample fewer are held out).

    Returns
    -------
    list[int] : sorted HARP numbers; ``[]`` when none can be held out.
    """
    harps_all = np.asarray(corpus.table["HARPNUM"], int)
    harps = sorted({int(h) for h in harps_all if int(h) > 0})
    if int(profile.data.holdout_harps) <= 0 or len(harps) < 3:
        return []
    rng = np.random.default_rng(profile.data.holdout_seed)
    chosen: list[int] = []
    for h in rng.permutation(harps):
        if len(chosen) >= int(profile.data.holdout_harps) or len(chosen) >= len(harps) - 2:
            break
        left = int((~np.isin(harps_all, [*chosen, int(h)])).sum())
        if left >= int(profile.gan.batch_size):
            chosen.append(int(h))
    return sorted(chosen)


def training_mask(corpus: Corpus, profile: Profile) -> np.ndarray:
    """(n,) bool: corpus rows the GAN and SimSiam train on (all but :func:`holdout_harps`).

    Parameters
    ----------
    corpus : Corpus
        The corpus; its ``HARPNUM`` column decides.
    profile : Profile
        Supplies ``data.holdout_harps``, ``data.holdout_seed`` and ``gan.batch_size``.

    Returns
    -------
    np.ndarray of bool, shape (n,)
        True for rows whose HARP is not held out (all True when none is).
    """
    return ~np.isin(np.asarray(corpus.table["HARPNUM"], int), holdout_harps(corpus, profile))
