"""The training corpus: SHARP patches and full-disk tiles as one image cube plus a lookup table.

Images follow Chatterjee et al. (2025, §Data): each field map is scaled by ``clip_gauss``
(1000 G), clipped to [-1, 1] and interpolated to N×N (see :mod:`helioforge.data.preprocess`).
The table keeps, for each image, where it came from, so a retrieved image can be traced back
to its file (and, for tiles, to the pixel box of the original full-disk array).

Two forms of the same corpus:

* :class:`Corpus` (:func:`build_corpus`): every image in memory, saved as one FITS file;
* :class:`CorpusStore` (:func:`build_corpus_store`, :func:`fetch_sharp_corpus`): a folder on
  disk for corpora larger than memory (the whole SHARP archive), appended to as files arrive,
  read lazily (one patch, or batches), opened as a :class:`Corpus` whose image cube is a
  memory map (:meth:`CorpusStore.as_corpus`) without reading it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table

from helioforge import __version__
from helioforge.config import SAMPLE_DIR
from helioforge.data.fits import FitsReadError, Skipped, safe_get
from helioforge.data.fulldisk import tiles_from_fulldisk
from helioforge.data.jsoc import MANIFEST_NAME, ArchiveFile, IngestManifest, IngestReport, fetch_sharp_archive
from helioforge.data.preprocess import preprocess_br
from helioforge.data.sharp import read_sharp, read_sharp_folder
from helioforge.errors import ProductError
from helioforge.interrogate.config import DataConfig, Profile
from helioforge.io import write_fits, write_json
from helioforge.locking import workdir_lock
from helioforge.progress import track
from helioforge.workspace import file_sha256

__all__ = ["Corpus", "build_corpus", "holdout_harps", "training_mask", "COLUMNS", "SOURCE_SHARP", "SOURCE_TILE",
           "CORPUS_FORMAT", "CorpusStore", "StoreBatch", "STORE_FORMAT", "build_corpus_store", "fetch_sharp_corpus"]

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


# ============================================================================ the corpus on disk
#: Version of the :class:`CorpusStore` layout (``store.json``).
STORE_FORMAT = 1
_STORE_META, _STORE_IMAGES, _STORE_TABLE = "store.json", "images.npy", "table.sqlite"
#: Table columns of a store beyond :data:`COLUMNS`: NOAA regions of the HARP (JSOC ``NOAA_ARS``,
#: e.g. ``"11429,11430"``; ``""`` when none), the source folder, the file's SHA-256, when added.
_STORE_EXTRA = ("NOAA_ARS", "folder", "sha256", "added")
_STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS patches (row INTEGER PRIMARY KEY, source TEXT NOT NULL, region TEXT NOT NULL,
    file TEXT NOT NULL, HARPNUM INTEGER NOT NULL, NOAA_AR INTEGER NOT NULL, T_REC TEXT NOT NULL, crop TEXT NOT NULL,
    pixel_size_mm REAL, USFLUX REAL, NOAA_ARS TEXT NOT NULL, folder TEXT NOT NULL, sha256 TEXT NOT NULL,
    added TEXT NOT NULL, UNIQUE (file, crop));
CREATE INDEX IF NOT EXISTS patches_harp ON patches (HARPNUM, T_REC);
CREATE TABLE IF NOT EXISTS skipped (file TEXT PRIMARY KEY, folder TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS warnings (row INTEGER NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provenance (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, entry TEXT NOT NULL);
"""


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _create_leftover(name: str) -> bool:
    """Names a folder may hold and still take a new store: the lock files, and what a
    :meth:`CorpusStore.create` stopped before ``store.json`` was written leaves."""
    return name.startswith((".helioforge.lock", ".store.", _STORE_TABLE)) or name == _STORE_IMAGES


class StoreBatch(NamedTuple):
    """One batch of :meth:`CorpusStore.iter_batches`.

    Attributes
    ----------
    start : int
        Row of the first image.
    images : np.ndarray, shape (b, 1, N, N), float32
        B / clip_gauss in [-1, 1]; a fresh array (the store's file is not mapped).
    table : astropy.table.Table
        The b rows of :meth:`CorpusStore.table`.
    """

    start: int
    images: np.ndarray
    table: Table


def _sharp_files(folder: Path) -> list[Path]:
    """``*.Br.fits`` and ``*.Br.fits.gz`` of a folder sorted by name, a record in both forms
    taken once, plain: the files and order of :func:`helioforge.data.sharp.read_sharp_folder`."""
    plain = {p.name: p for p in folder.glob("*.Br.fits")}
    for p in folder.glob("*.Br.fits.gz"):
        plain.setdefault(p.name[:-3], p)
    return [plain[k] for k in sorted(plain)]


class CorpusStore:
    """A corpus on disk that grows as files arrive and is read without loading it.

    A folder holding ``store.json`` (layout version, N, clip_gauss, preprocessing, creation
    provenance), ``images.npy`` (a standard NumPy file (n, 1, N, N) little-endian float32,
    appended to and memory-mapped) and ``table.sqlite`` (one row per image: the columns of
    :data:`COLUMNS` plus ``NOAA_ARS``, ``folder``, ``sha256`` and ``added``; the files skipped
    with their reason; reader warnings; one provenance entry per build or ingest run).

    Appending is crash-safe: the images are written and synced first, then their rows are
    committed in one SQLite transaction, which is the commit point; image bytes beyond the
    committed rows (a run killed in between) are ignored and overwritten by the next append. A
    file is stored once (its name, with the tile's crop box, is its key), so appending again
    after an interruption adds only what is missing. One process appends at a time (the
    folder's lock, :func:`helioforge.locking.workdir_lock`); any number may read.

    Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`; close with
    :meth:`close` or a ``with`` block.

    Parameters
    ----------
    path : str or Path
        The store folder.
    mode : str
        ``"r"`` (read) or ``"a"`` (read and append).

    Raises
    ------
    FileNotFoundError
        No store at ``path``.
    helioforge.errors.ProductError
        Not a store of this layout, or its files disagree (the message names the file).
    ValueError
        An unknown mode.
    """

    def __init__(self, path: str | Path, mode: str = "r") -> None:
        if mode not in ("r", "a"):
            raise ValueError(f"CorpusStore mode must be 'r' or 'a', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self._stack = contextlib.ExitStack()
        meta_path = self.path / _STORE_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path}: no corpus store here ({_STORE_META} missing); make one with "
                                    "build_corpus_store or `helioforge fetch sharp --all-harps --corpus`")
        try:
            self.meta = json.loads(meta_path.read_text())
            self.image_size = int(self.meta["image_size"])
            self.clip_gauss = float(self.meta["clip_gauss"])
            fmt = int(self.meta["format"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProductError(meta_path, f"unreadable store description ({exc})") from None
        if fmt != STORE_FORMAT:
            raise ProductError(meta_path, f"store layout {fmt}, this helioforge reads {STORE_FORMAT}")
        self._row_bytes = 4 * self.image_size * self.image_size
        try:
            if mode == "a":
                self._stack.enter_context(workdir_lock(self.path))
            self._db = sqlite3.connect(self.path / _STORE_TABLE, timeout=30.0) if mode == "a" else \
                sqlite3.connect(f"{(self.path / _STORE_TABLE).resolve().as_uri()}?mode=ro", uri=True)
            self._stack.callback(self._db.close)
            self._n = int(self._db.execute("SELECT COUNT(*) FROM patches").fetchone()[0])
            last = self._db.execute("SELECT MAX(row) FROM patches").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._stack.close()
            raise ProductError(self.path / _STORE_TABLE, f"unreadable store table ({exc})") from None
        except BaseException:
            self._stack.close()
            raise
        if self._n and last != self._n - 1:
            self._stack.close()
            raise ProductError(self.path / _STORE_TABLE, f"rows are not 0..{self._n - 1} (last row {last})")
        self._images_path = self.path / _STORE_IMAGES
        try:
            self._fh = open(self._images_path, "r+b" if mode == "a" else "rb", buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            self._stack.close()
            raise ProductError(self._images_path, f"image file unreadable ({exc})") from None
        self._stack.callback(self._fh.close)
        try:
            version = np.lib.format.read_magic(self._fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(self._fh)
            self._header_len = self._fh.tell()
        except (ValueError, OSError) as exc:
            self._stack.close()
            raise ProductError(self._images_path, f"not a NumPy .npy file ({exc})") from None
        if fortran or dtype != np.dtype("<f4") or tuple(shape[1:]) != (1, self.image_size, self.image_size):
            self._stack.close()
            raise ProductError(self._images_path, f"holds {dtype} {shape}, not (n, 1, {self.image_size}, {self.image_size}) float32")
        size = os.fstat(self._fh.fileno()).st_size
        if size < self._header_len + self._n * self._row_bytes:
            self._stack.close()
            raise ProductError(self._images_path, f"holds {(size - self._header_len) // self._row_bytes} image(s), "
                                                  f"the table {self._n}: images lost")
        if mode == "a" and (shape[0] != self._n or size != self._header_len + self._n * self._row_bytes):
            self._fh.truncate(self._header_len + self._n * self._row_bytes)  # bytes of an uncommitted append
            self._write_header()

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | Path, image_size: int, clip_gauss: float = 1000.0,
               provenance: dict[str, Any] | None = None) -> "CorpusStore":
        """Make an empty store (open for appending).

        Parameters
        ----------
        path : str or Path
            New folder (or an empty one).
        image_size : int
            N, the image side in pixels (≥ 8).
        clip_gauss : float
            Clip level and scale of the images, G (> 0).
        provenance : dict, optional
            Recorded in ``store.json`` (e.g. the command that made it).

        Returns
        -------
        CorpusStore
            In mode ``"a"``.

        Raises
        ------
        ValueError
            ``image_size`` < 8, ``clip_gauss`` not positive, or ``path`` is a non-empty folder
            or a file.
        """
        path = Path(path)
        n = int(image_size)
        if n != image_size or n < 8:
            raise ValueError(f"image_size must be an integer ≥ 8, got {image_size!r}")
        if not (math.isfinite(float(clip_gauss)) and float(clip_gauss) > 0):
            raise ValueError(f"clip_gauss must be a positive number of gauss, got {clip_gauss!r}")
        if path.exists() and (not path.is_dir() or any(not _create_leftover(p.name) for p in path.iterdir())):
            raise ValueError(f"{path}: exists and is not an empty folder; a new corpus store needs a new folder")
        with workdir_lock(path):
            for p in path.iterdir():  # what a creation stopped before store.json left: never a store
                if p.name == _STORE_IMAGES or p.name.startswith((".store.", _STORE_TABLE)):
                    p.unlink()
            with open(path / _STORE_IMAGES, "wb") as fh:
                np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (0, 1, n, n)})
            with contextlib.closing(sqlite3.connect(path / _STORE_TABLE)) as db, db:
                db.executescript(_STORE_SCHEMA)
            write_json(path / _STORE_META, {  # written last: a folder without it is not a store
                "format": STORE_FORMAT,
                "kind": "helioforge corpus store",
                "image_size": n,
                "clip_gauss": float(clip_gauss),
                "images": f"{_STORE_IMAGES}: (n, 1, {n}, {n}) little-endian float32, B / clip_gauss in [-1, 1]",
                "table": f"{_STORE_TABLE}: table patches (row = image index), skipped, warnings, provenance",
                "preprocessing": "helioforge.data.preprocess.preprocess_br: NaN -> 0 G, clip to +-clip_gauss, divide by "
                                 "clip_gauss, bilinear anti-aliased resize to N x N (Chatterjee et al. 2025, Data)",
                "created": _utc_now(),
                "helioforge": __version__,
                "provenance": provenance or {},
            })
        return cls(path, "a")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "CorpusStore":
        """Open an existing store.

        Parameters
        ----------
        path : str or Path
            The store folder.
        mode : str
            ``"r"`` or ``"a"``.

        Returns
        -------
        CorpusStore
            The store.

        Raises
        ------
        FileNotFoundError, helioforge.errors.ProductError
            As :class:`CorpusStore`.
        """
        return cls(path, mode)

    @classmethod
    def open_or_create(cls, path: str | Path, image_size: int, clip_gauss: float = 1000.0,
                       provenance: dict[str, Any] | None = None) -> "CorpusStore":
        """Open a store for appending, making it if there is none.

        Parameters
        ----------
        path : str or Path
            The store folder.
        image_size : int
            N; must match an existing store's.
        clip_gauss : float
            Clip level, G; must match an existing store's.
        provenance : dict, optional
            For a new store, as :meth:`create`.

        Returns
        -------
        CorpusStore
            In mode ``"a"``.

        Raises
        ------
        ValueError
            The existing store was made with another N or clip level.
        """
        if (Path(path) / _STORE_META).is_file():
            store = cls(path, "a")
            if store.image_size != int(image_size) or store.clip_gauss != float(clip_gauss):
                store.close()
                raise ValueError(f"{path}: the corpus store holds {store.image_size}×{store.image_size} images clipped at "
                                 f"{store.clip_gauss:g} G, not {int(image_size)}×{int(image_size)} at {float(clip_gauss):g} G; "
                                 "use another store folder")
            return store
        return cls.create(path, image_size, clip_gauss, provenance)

    def close(self) -> None:
        """Close the files (and release the append lock)."""
        self._stack.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()

    def __enter__(self) -> "CorpusStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        """Number of images."""
        return self._n

    def __repr__(self) -> str:
        return f"<CorpusStore {self.path}: {self._n} images of {self.image_size}×{self.image_size}, mode {self.mode!r}>"

    # ------------------------------------------------------------------ writing
    def _write_header(self) -> None:
        n = self.image_size
        self._fh.seek(0)
        np.lib.format.write_array_header_1_0(self._fh, {"descr": "<f4", "fortran_order": False, "shape": (self._n, 1, n, n)})
        if self._fh.tell() != self._header_len:
            raise ProductError(self._images_path, "the .npy header changed length; cannot append in place")

    def _need_append(self) -> None:
        if self.mode != "a":
            raise ValueError(f"{self.path}: corpus store opened read-only; open it with mode='a' to append")

    def contains(self, file: str, crop: str | None = "") -> bool:
        """Whether the image of ``file`` (and ``crop``) is stored.

        Parameters
        ----------
        file : str
            File name (basename).
        crop : str or None
            Crop box of a full-disk tile, ``""`` for SHARP patches; ``None``: any image of the file.

        Returns
        -------
        bool
            True when stored.
        """
        if crop is None:
            row = self._db.execute("SELECT 1 FROM patches WHERE file = ?", (str(file),)).fetchone()
        else:
            row = self._db.execute("SELECT 1 FROM patches WHERE file = ? AND crop = ?", (str(file), str(crop))).fetchone()
        return row is not None

    def append(self, images: np.ndarray, rows: Sequence[dict[str, Any]], warnings: Sequence[Sequence[str]] | None = None) -> int:
        """Append images and their table rows; rows already stored (same file and crop) are left out.

        Parameters
        ----------
        images : np.ndarray, shape (b, 1, N, N) or (b, N, N)
            Preprocessed images (B / clip_gauss, finite), cast to float32.
        rows : sequence of dict
            b rows with the keys of :data:`COLUMNS`, optionally ``NOAA_ARS``, ``folder`` and
            ``sha256`` (default ``""``).
        warnings : sequence of sequence of str, optional
            Reader warnings of each row.

        Returns
        -------
        int
            Images appended.

        Raises
        ------
        ValueError
            Read-only store, wrong image shape, non-finite pixels, row count or missing keys
            (the message names the row's file).
        OSError
            The files cannot be written (nothing is committed then).
        """
        self._need_append()
        n = self.image_size
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[:, None]
        if arr.ndim != 4 or arr.shape[1:] != (1, n, n):
            raise ValueError(f"{self.path}: images must be (b, 1, {n}, {n}), got {arr.shape}")
        if len(rows) != arr.shape[0]:
            raise ValueError(f"{self.path}: {arr.shape[0]} images but {len(rows)} rows")
        warnings = list(warnings) if warnings is not None else [[] for _ in rows]
        keep, seen = [], set()
        for i, r in enumerate(rows):
            missing = [c for c, _ in COLUMNS if c not in r]
            if missing:
                raise ValueError(f"{self.path}: row of {r.get('file', f'#{i}')!r} lacks {', '.join(missing)}")
            key = (str(r["file"]), str(r["crop"]))
            if key in seen or self.contains(*key):
                continue
            if not np.isfinite(arr[i]).all():
                raise ValueError(f"{self.path}: image of {r['file']!r} has non-finite pixels")
            seen.add(key)
            keep.append(i)
        if not keep:
            return 0
        block = np.ascontiguousarray(arr[keep], dtype="<f4")
        start = self._header_len + self._n * self._row_bytes
        self._fh.truncate(start)
        self._fh.seek(start)
        view = memoryview(block).cast("B")
        written = 0
        while written < len(view):
            written += self._fh.write(view[written:])
        os.fsync(self._fh.fileno())
        now = _utc_now()
        recs, notes = [], []
        for k, i in enumerate(keep):
            r = rows[i]
            usflux = float(r["USFLUX"])
            recs.append((self._n + k, str(r["source"]), str(r["region"]), str(r["file"]), int(r["HARPNUM"]), int(r["NOAA_AR"]),
                         str(r["T_REC"]), str(r["crop"]), float(r["pixel_size_mm"]), usflux if math.isfinite(usflux) else None,
                         str(r.get("NOAA_ARS", "") or ""), str(r.get("folder", "") or ""), str(r.get("sha256", "") or ""), now))
            notes += [(self._n + k, str(w)) for w in warnings[i]]
        with self._db:
            self._db.executemany(f"INSERT INTO patches VALUES ({','.join('?' * 14)})", recs)
            self._db.executemany("INSERT INTO warnings VALUES (?, ?)", notes)
            self._db.executemany("DELETE FROM skipped WHERE file = ?", [(str(rows[i]["file"]),) for i in keep])
        self._n += len(keep)
        self._write_header()
        return len(keep)

    def record_skipped(self, path: str | Path, reason: str) -> None:
        """Record a file left out (unreadable, implausible), with the reason.

        Parameters
        ----------
        path : str or Path
            The file.
        reason : str
            The problem.
        """
        self._need_append()
        p = Path(path)
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?)", (p.name, str(p.parent), str(reason), _utc_now()))

    def add_provenance(self, entry: dict[str, Any]) -> None:
        """Record how images came in (a build or an ingest run: settings, folders, times).

        Parameters
        ----------
        entry : dict
            JSON-able description.
        """
        self._need_append()
        with self._db:
            self._db.execute("INSERT INTO provenance (at, entry) VALUES (?, ?)", (_utc_now(), json.dumps(entry, default=str)))

    def _sharp_row(self, path: Path) -> tuple[np.ndarray, dict[str, Any], list[str]] | str:
        """(image, row, warnings) of a SHARP Br file, or the reason it is skipped (recorded)."""
        try:
            p = read_sharp(path, segment="Br")
            image = preprocess_br(p.Br, self.image_size, self.clip_gauss)
        except (FitsReadError, FileNotFoundError, ValueError) as exc:
            reason = exc.problem if isinstance(exc, FitsReadError) else str(exc)
            logger.warning("skipping %s: %s", path, reason)
            self.record_skipped(path, reason)
            return reason
        ars = safe_get(p.header, "NOAA_ARS")
        row = {"source": SOURCE_SHARP, "region": f"HARP {p.harpnum}", "file": p.path.name, "HARPNUM": p.harpnum,
               "NOAA_AR": p.noaa_ar if p.noaa_ar is not None else -1, "T_REC": p.t_rec, "crop": "",
               "pixel_size_mm": p.pixel_size_mm, "USFLUX": _finite_or_nan(p.usflux),
               "NOAA_ARS": "" if ars is None else str(ars).strip(), "folder": str(path.parent.resolve()),
               "sha256": file_sha256(path)}
        return image, row, list(p.warnings)

    def add_sharp_files(self, paths: Sequence[str | Path], batch_size: int = 64, progress: bool = True) -> tuple[int, list[Skipped]]:
        """Read, preprocess and append SHARP ``Br`` files, a batch at a time.

        Files already stored are passed over without reading; unreadable ones are recorded as
        skipped (and logged) and the rest go on.

        Parameters
        ----------
        paths : sequence of str or Path
            SHARP ``Br`` FITS files, in the order their rows should take.
        batch_size : int
            Images held in memory before an append.
        progress : bool
            Show progress for more than 50 files.

        Returns
        -------
        (int, list of Skipped)
            Images appended, and the files skipped by this call with their reason.

        Raises
        ------
        ValueError
            Read-only store.
        """
        self._need_append()
        added, skipped = 0, []
        images: list[np.ndarray] = []
        rows: list[dict[str, Any]] = []
        notes: list[list[str]] = []

        def flush() -> None:
            nonlocal added
            if rows:
                added += self.append(np.stack(images), rows, notes)
                images.clear(), rows.clear(), notes.clear()

        paths = [Path(p) for p in paths]
        for path in track(paths, "SHARP patches → store", unit="file", disable=not progress or len(paths) <= 50):
            if self.contains(path.name) or any(r["file"] == path.name for r in rows):
                continue
            got = self._sharp_row(path)
            if isinstance(got, str):
                skipped.append(Skipped(path, got))
                continue
            images.append(got[0]), rows.append(got[1]), notes.append(got[2])
            if len(rows) >= int(batch_size):
                flush()
        flush()
        return added, skipped

    def add_sharp_file(self, path: str | Path) -> bool:
        """Append one SHARP ``Br`` file (see :meth:`add_sharp_files`).

        Parameters
        ----------
        path : str or Path
            The file.

        Returns
        -------
        bool
            True when stored by this call (False: already there, or skipped).
        """
        return self.add_sharp_files([path], progress=False)[0] == 1

    def on_archive_file(self, f: ArchiveFile) -> None:
        """The ``on_file`` callback of :func:`helioforge.data.jsoc.fetch_sharp_archive`: appends
        each ``Br`` file as it arrives (other segments are left to the download folder).

        Parameters
        ----------
        f : ArchiveFile
            The file in place.
        """
        if f.segment == "Br":
            self.add_sharp_file(f.path)

    # ------------------------------------------------------------------ reading
    def _read(self, start: int, count: int) -> np.ndarray:
        out = np.empty((count, 1, self.image_size, self.image_size), dtype="<f4")
        view = memoryview(out).cast("B")
        got = 0
        while got < len(view):
            k = os.preadv(self._fh.fileno(), [view[got:]], self._header_len + start * self._row_bytes + got)
            if k <= 0:
                raise ProductError(self._images_path, f"ends inside image {start + got // self._row_bytes}")
            got += k
        return out

    def _rows(self, index: Any) -> np.ndarray:
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (self._n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {self._n} images")
            return np.flatnonzero(idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"corpus store index must be an int, a slice, ints or a boolean mask, got {idx.dtype}")
        idx = idx.astype(np.int64).ravel()
        bad = idx[(idx < -self._n) | (idx >= self._n)]
        if bad.size:
            raise IndexError(f"image {int(bad[0])} out of range for {self._n} images")
        return np.where(idx < 0, idx + self._n, idx)

    def read(self, rows: Any) -> np.ndarray:
        """The images of some rows, reading only those.

        Parameters
        ----------
        rows : array-like of int or bool
            Row numbers (any order, repeats allowed) or an (n,) boolean mask.

        Returns
        -------
        np.ndarray, shape (k, 1, N, N), float32
            In the order of ``rows``.

        Raises
        ------
        IndexError
            A row out of range or a mask of the wrong length.
        """
        r = self._rows(rows)
        out = np.empty((len(r), 1, self.image_size, self.image_size), dtype=np.float32)
        order = np.argsort(r, kind="stable")
        i = 0
        while i < len(order):  # runs of consecutive rows are read at once
            j = i + 1
            while j < len(order) and r[order[j]] - r[order[j - 1]] <= 1:
                j += 1
            lo, hi = int(r[order[i]]), int(r[order[j - 1]])
            block = self._read(lo, hi - lo + 1)
            out[order[i:j]] = block[r[order[i:j]] - lo]
            i = j
        return out

    def __getitem__(self, index: Any) -> np.ndarray:
        """Images by index, reading only those: an int gives (1, N, N); a slice, ints or a mask give (k, 1, N, N).

        Parameters
        ----------
        index : int, slice, array-like of int or bool
            Which images.

        Returns
        -------
        np.ndarray, float32
            The images.
        """
        if isinstance(index, (int, np.integer)):
            i = int(self._rows([index])[0])
            return self._read(i, 1)[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if step == 1:
                return self._read(start, max(0, stop - start))
            return self.read(np.arange(start, stop, step))
        return self.read(index)

    def _select(self, columns: str, where: str = "", args: Sequence[Any] = ()) -> list[tuple]:
        return self._db.execute(f"SELECT {columns} FROM patches {where} ORDER BY row", tuple(args)).fetchall()

    def _table_from(self, records: list[tuple], extra: bool) -> Table:
        names = [c for c, _ in COLUMNS] + (["NOAA_ARS"] if extra else [])
        dtypes = [d for _, d in COLUMNS] + ([str] if extra else [])
        fixed = [tuple(float("nan") if v is None and names[k] in ("USFLUX", "pixel_size_mm") else v
                       for k, v in enumerate(rec)) for rec in records]
        if not fixed:
            return Table(names=names, dtype=dtypes)
        return Table([list(col) for col in zip(*fixed)], names=names, dtype=dtypes)  # column-wise: as Table(rows=...), faster

    def table(self, start: int = 0, stop: int | None = None, extra: bool = True) -> Table:
        """Rows of the lookup table (the corpus table of :class:`Corpus`).

        Parameters
        ----------
        start, stop : int
            Row range [start, stop) (default all).
        extra : bool
            Add the ``NOAA_ARS`` column after :data:`COLUMNS`.

        Returns
        -------
        astropy.table.Table
            Columns :data:`COLUMNS` (+ ``NOAA_ARS``), in row order.
        """
        stop = self._n if stop is None else min(int(stop), self._n)
        cols = ",".join([c for c, _ in COLUMNS] + (["NOAA_ARS"] if extra else []))
        return self._table_from(self._select(cols, "WHERE row >= ? AND row < ?", (int(start), stop)), extra)

    def row(self, i: int) -> dict[str, Any]:
        """Everything recorded about image ``i``.

        Parameters
        ----------
        i : int
            Row.

        Returns
        -------
        dict
            The columns of :data:`COLUMNS`, ``NOAA_ARS``, ``folder``, ``sha256``, ``added``
            and ``warnings`` (list of str).

        Raises
        ------
        IndexError
            Out of range.
        """
        i = int(self._rows([i])[0])
        cur = self._db.execute("SELECT * FROM patches WHERE row = ?", (i,))
        names = [d[0] for d in cur.description]
        out = dict(zip(names, cur.fetchone()))
        out.pop("row")
        if out["USFLUX"] is None:
            out["USFLUX"] = float("nan")
        out["warnings"] = [t for (t,) in self._db.execute("SELECT text FROM warnings WHERE row = ?", (i,))]
        return out

    def iter_batches(self, batch_size: int = 256, rows: Any = None) -> Iterator[StoreBatch]:
        """Images and table rows a batch at a time; memory stays that of one batch.

        Parameters
        ----------
        batch_size : int
            Images per batch (≥ 1).
        rows : array-like of int or bool, optional
            Only these rows (in the order given); default all, in order.

        Yields
        ------
        StoreBatch
            ``(start, images (b, 1, N, N) float32, table)``; ``start`` is the first row for
            contiguous batches, -1 for a batch of selected rows.

        Raises
        ------
        ValueError
            ``batch_size`` < 1.
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        b = int(batch_size)
        if rows is None:
            for s in range(0, self._n, b):
                k = min(b, self._n - s)
                yield StoreBatch(s, self._read(s, k), self.table(s, s + k))
            return
        r = self._rows(rows)
        cols = ",".join(["row"] + [c for c, _ in COLUMNS] + ["NOAA_ARS"])
        for s in range(0, len(r), b):
            part = r[s:s + b]
            found: dict[int, tuple] = {}
            uniq = sorted({int(i) for i in part})
            for k in range(0, len(uniq), 900):  # SQLite's limit on bound parameters
                chunk = uniq[k:k + 900]
                for rec in self._select(cols, f"WHERE row IN ({','.join('?' * len(chunk))})", chunk):
                    found[rec[0]] = rec[1:]
            yield StoreBatch(-1, self.read(part), self._table_from([found[int(i)] for i in part], True))

    def images_memmap(self) -> np.ndarray:
        """The whole image cube as a copy-on-write memory map (nothing is read until used).

        Returns
        -------
        np.memmap, shape (n, 1, N, N), float32
            Pages are read from disk when touched; writes stay private to the process.

        Raises
        ------
        helioforge.errors.ProductError
            The store is empty (a map needs at least one image).
        """
        if self._n == 0:
            raise ProductError(self.path, "the corpus store holds no image yet", "append files to it first")
        n = self.image_size
        return np.memmap(self._images_path, dtype="<f4", mode="c", offset=self._header_len, shape=(self._n, 1, n, n))

    def skipped(self) -> list[Skipped]:
        """Files left out of the store, with the reason.

        Returns
        -------
        list of Skipped
            Sorted by file name.
        """
        rows = self._db.execute("SELECT file, folder, reason FROM skipped ORDER BY file").fetchall()
        return [Skipped(Path(folder) / f, reason) for f, folder, reason in rows]

    def warnings(self) -> list[str]:
        """Reader warnings of the stored files (repaired header cards ...), in row order.

        Returns
        -------
        list of str
            One message per warning, each naming its file.
        """
        return [t for (t,) in self._db.execute("SELECT text FROM warnings ORDER BY row, rowid")]

    def provenance(self) -> list[dict[str, Any]]:
        """The creation record and one entry per build or ingest run.

        Returns
        -------
        list of dict
            ``store.json``'s description first, then ``{"at": ..., **entry}`` in order.
        """
        rows = self._db.execute("SELECT at, entry FROM provenance ORDER BY id").fetchall()
        return [dict(self.meta)] + [{"at": at, **json.loads(e)} for at, e in rows]

    def as_corpus(self) -> Corpus:
        """This store as a :class:`Corpus`, without reading the images.

        ``images`` is :meth:`images_memmap` (an ``np.ndarray`` subclass, so every function that
        takes a corpus works unchanged; pages are read when used), ``table`` the whole lookup
        table (:meth:`table`, about 0.5 kB of memory per row), ``warnings`` the reader warnings.

        Returns
        -------
        Corpus
            Backed by the store's image file.

        Raises
        ------
        helioforge.errors.ProductError
            The store is empty.
        """
        return Corpus(images=self.images_memmap(), table=self.table(), clip_gauss=self.clip_gauss, warnings=self.warnings())


def build_corpus_store(cfg: DataConfig, path: str | Path, sharp: bool = True, fulldisk: bool = True,
                       batch_size: int = 64) -> tuple[CorpusStore, list[Skipped]]:
    """Build (or complete) a :class:`CorpusStore` from the files :func:`build_corpus` reads.

    Same inputs, preprocessing, rows and order as :func:`build_corpus` (SHARP ``Br`` files of
    each folder sorted by name, then full-disk tiles), but one file at a time: memory holds one
    batch of images, not the corpus. Files already stored are passed over, so a run that was
    interrupted is completed by running it again.

    Parameters
    ----------
    cfg : DataConfig
        Gives the folders, ``image_size``, ``clip_gauss`` and the tile settings.
    path : str or Path
        The store folder (made if missing; an existing one must have the same N and clip).
    sharp, fulldisk : bool
        Sources to read.
    batch_size : int
        Images held before an append.

    Returns
    -------
    (CorpusStore, list of Skipped)
        The store, open for appending (close it, or use it in a ``with`` block), and the files or
        folders skipped by this run with the reason.

    Raises
    ------
    ValueError
        Neither source selected, a store made with other settings, or a store still empty at
        the end (the message lists what was skipped).
    """
    if not (sharp or fulldisk):
        raise ValueError("build_corpus_store: select at least one of sharp=True / fulldisk=True")
    store = CorpusStore.open_or_create(path, cfg.image_size, cfg.clip_gauss, provenance={"made_by": "build_corpus_store"})
    try:
        skipped: list[Skipped] = []
        for folder in cfg.sharp_paths() if sharp else []:
            if not folder.is_dir():
                logger.warning("SHARP folder not found: %s", folder)
                skipped.append(Skipped(folder, "SHARP folder not found"))
                continue
            skipped.extend(store.add_sharp_files(_sharp_files(folder), batch_size=batch_size)[1])
        if fulldisk:
            folder = cfg.fulldisk_path()
            files = sorted(folder.glob("*.fits")) if folder.is_dir() else []
            if not folder.is_dir():
                logger.warning("full-disk folder not found: %s", folder)
                hint = " (the embedded sample has none: `helioforge data fetch hmi_fulldisk`)" if _in_sample(folder) else ""
                skipped.append(Skipped(folder, "full-disk folder not found" + hint))
            elif not files:
                skipped.append(Skipped(folder, "no *.fits files in the full-disk folder"))
            for f in track(files, "full-disk tiles → store", unit="file"):
                if store.contains(f.name, crop=None):
                    continue
                try:
                    tiles = tiles_from_fulldisk(f, tile_px=cfg.tile_px, stride_px=cfg.tile_stride_px,
                                                max_angle_deg=cfg.max_disk_angle_deg, radial_correction=cfg.radial_correction)
                except (FitsReadError, FileNotFoundError, ValueError) as exc:
                    reason = exc.problem if isinstance(exc, FitsReadError) else str(exc)
                    logger.warning("skipping %s", exc)
                    skipped.append(Skipped(f, reason))
                    store.record_skipped(f, reason)
                    continue
                if not tiles:
                    skipped.append(Skipped(f, "no tile within the disk-angle limit without NaN"))
                sha = file_sha256(f) if tiles else ""
                for s in range(0, len(tiles), int(batch_size)):
                    part = tiles[s:s + int(batch_size)]
                    rows = [{"source": SOURCE_TILE, "region": f"full disk {t.t_rec}", "file": f.name, "HARPNUM": -1,
                             "NOAA_AR": -1, "T_REC": t.t_rec, "crop": f"{t.crop[0]}:{t.crop[1]},{t.crop[2]}:{t.crop[3]}",
                             "pixel_size_mm": t.pixel_size_mm, "USFLUX": float("nan"), "folder": str(folder.resolve()),
                             "sha256": sha} for t in part]
                    store.append(np.stack([preprocess_br(t.Br, cfg.image_size, cfg.clip_gauss) for t in part]), rows)
                del tiles
        store.add_provenance({"made_by": "build_corpus_store", "sharp_dirs": [str(p) for p in cfg.sharp_paths()] if sharp else [],
                              "fulldisk_dir": str(cfg.fulldisk_path()) if fulldisk else None, "rows": len(store)})
        if len(store) == 0:
            detail = "; ".join(f"{s.path}: {s.reason}" for s in skipped) or "no input files"
            raise ValueError(f"build_corpus_store: no image could be read ({detail})")
    except BaseException:
        store.close()
        raise
    return store, skipped


def fetch_sharp_corpus(out_dir: str | Path, email: str, store: str | Path, *, image_size: int = 128,
                       clip_gauss: float = 1000.0, **fetch_kw: Any) -> tuple[IngestReport, CorpusStore]:
    """Download SHARP files from JSOC (:func:`helioforge.data.jsoc.fetch_sharp_archive`) and append
    each ``Br`` patch to a corpus store as it arrives.

    Before the download, ``Br`` files the folder's manifest holds but the store lacks (a store
    added later, or a run stopped between the two) are appended, so the store follows the
    folder. Bad ``Br`` files are recorded in the store as skipped (:meth:`CorpusStore.skipped`).

    Parameters
    ----------
    out_dir : str or Path
        Download folder.
    email : str
        Address registered with JSOC exports.
    store : str or Path
        Corpus store folder (made if missing).
    image_size : int
        N of the store's images (paper 128); must match an existing store.
    clip_gauss : float
        Clip level, G; must match an existing store.
    **fetch_kw
        ``start``, ``end``, ``cadence``, ``segments`` (``Br`` is added if missing), ``harps``,
        ``chunk``, ``max_records``, ``delay_s``, ``retries``, ``backoff_s`` ... of
        :func:`~helioforge.data.jsoc.fetch_sharp_archive`.

    Returns
    -------
    (IngestReport, CorpusStore)
        The ingest report and the store, open for appending (close it after use).

    Raises
    ------
    ValueError, helioforge.errors.FolderInUse, OSError
        As :func:`~helioforge.data.jsoc.fetch_sharp_archive` and :meth:`CorpusStore.open_or_create`.
    """
    segs = list(fetch_kw.pop("segments", ("Br",)))
    if "Br" not in segs:
        segs.insert(0, "Br")
    cs = CorpusStore.open_or_create(store, image_size, clip_gauss, provenance={"made_by": "fetch_sharp_corpus"})
    try:
        out = Path(out_dir)
        if (out / MANIFEST_NAME).is_file():
            with IngestManifest(out) as man:
                names = man.files("Br")
            pending = [out / f for f in names if (out / f).is_file() and not cs.contains(f)]
            if pending:
                logger.info("appending %d downloaded Br file(s) the store lacks", len(pending))
                cs.add_sharp_files(pending)
        cs.add_provenance({"made_by": "fetch_sharp_corpus", "out_dir": str(out.resolve()), "segments": segs,
                           **{k: v for k, v in fetch_kw.items() if k in ("start", "end", "cadence", "harps", "chunk", "series")}})
        report = fetch_sharp_archive(out, email, segments=segs, on_file=cs.on_archive_file, **fetch_kw)
    except BaseException:
        cs.close()
        raise
    return report, cs
