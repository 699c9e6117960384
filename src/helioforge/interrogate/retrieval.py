"""Nearest-neighbour retrieval of real patches (Chatterjee et al. 2025, §Querying, Fig. 1 LUT).

Real patches are embedded by SimSiam, L2-normalised and stored in a FAISS exact
inner-product index, so the score of a match is its cosine similarity with the query (the
paper ranks by negative cosine distance). The index is saved with its look-up table (LUT):
one row per vector with the file, HARP number, time and crop box of the real patch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from astropy.table import Table

from helioforge.errors import ProductError
from helioforge.io import atomic_path, write_json

__all__ = ["RetrievalIndex", "Match"]

log = logging.getLogger(__name__)


@dataclass
class Match:
    """One retrieved real patch: its row in the LUT, cosine score and LUT fields."""

    rank: int
    row: int
    score: float
    file: str
    HARPNUM: int
    T_REC: str
    crop: str


class RetrievalIndex:
    """FAISS ``IndexFlatIP`` over L2-normalised embeddings plus the look-up table.

    Parameters
    ----------
    index : a FAISS index whose vectors are L2-normalised.
    table : astropy Table with one row per vector (at least ``file``, ``HARPNUM``, ``T_REC``,
        ``crop``).
    """

    INDEX_FILE = "index.faiss"
    LUT_FILE = "lookup.ecsv"

    def __init__(self, index: faiss.Index, table: Table):
        if index.ntotal != len(table):
            raise ValueError(f"index holds {index.ntotal} vectors but the look-up table has {len(table)} rows")
        self.index = index
        self.table = table

    @property
    def dim(self) -> int:
        """Dimension d of the stored vectors."""
        return self.index.d

    def __len__(self) -> int:
        """Number of indexed real patches."""
        return self.index.ntotal

    @staticmethod
    def _normalise(vectors: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        if not np.all(np.isfinite(v)):
            raise ValueError("embeddings contain NaN or infinite values")
        faiss.normalize_L2(v)
        return v

    @classmethod
    def build(cls, embeddings: np.ndarray, table: Table) -> "RetrievalIndex":
        """Index ``embeddings`` (n, d); they are L2-normalised first.

        Parameters
        ----------
        embeddings : np.ndarray, shape (n, d)
            SimSiam embeddings of the real patches (cast to float32; normalised in place when already
            a C-contiguous float32 array).
        table : astropy.table.Table
            Look-up table, one row per embedding (see the class).

        Returns
        -------
        RetrievalIndex
            Over a FAISS ``IndexFlatIP`` (exact inner product = cosine similarity).

        Raises
        ------
        ValueError
            If the embeddings contain NaN or infinite values, or ``table`` has not n rows.
        """
        v = cls._normalise(embeddings)
        index = faiss.IndexFlatIP(v.shape[1])
        index.add(v)
        return cls(index, table)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine scores (q, k) and LUT rows (q, k) for query embeddings (q, d).

        Parameters
        ----------
        queries : np.ndarray, shape (q, d) or (d,)
            Query embeddings; L2-normalised here (in place when already a C-contiguous float32 2-D array).
        k : int
            Number of matches per query; clamped to the index size.

        Returns
        -------
        scores : np.ndarray of float32, shape (q, k)
            Cosine similarities in [-1, 1], best first.
        rows : np.ndarray of int64, shape (q, k)
            LUT rows of the matches.

        Raises
        ------
        ValueError
            If the queries contain NaN or infinite values, or their dimension differs from the index.
        """
        q = self._normalise(queries)
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} does not match the index ({self.dim})")
        k = min(k, len(self))
        scores, rows = self.index.search(q, k)
        return scores, rows

    def matches(self, queries: np.ndarray, k: int = 1) -> list[list[Match]]:
        """Like :meth:`search` but returns :class:`Match` records with the LUT fields.

        Parameters
        ----------
        queries : np.ndarray, shape (q, d) or (d,)
            Query embeddings.
        k : int
            Number of matches per query; clamped to the index size.

        Returns
        -------
        list of list of Match
            q lists of k matches, rank 1 (best) first.

        Raises
        ------
        ValueError
            As :meth:`search`.
        """
        scores, rows = self.search(queries, k)
        out = []
        for srow, rrow in zip(scores, rows):
            out.append([
                Match(rank=j + 1, row=int(r), score=float(s), file=str(self.table["file"][r]),
                      HARPNUM=int(self.table["HARPNUM"][r]), T_REC=str(self.table["T_REC"][r]),
                      crop=str(self.table["crop"][r]))
                for j, (s, r) in enumerate(zip(srow, rrow))
            ])
        return out

    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        """Write ``index.faiss``, ``lookup.ecsv`` and ``index.json`` into ``folder`` (atomically).

        Parameters
        ----------
        folder : str or Path
            Destination folder, created if missing.
        meta : dict, optional
            Extra entries for ``index.json`` (beside ``n``, ``dim`` and ``metric``).

        Returns
        -------
        Path
            ``folder``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / self.INDEX_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        with atomic_path(folder / self.LUT_FILE) as tmp:
            self.table.write(tmp, format="ascii.ecsv", overwrite=True)
        write_json(folder / "index.json", {"n": len(self), "dim": self.dim, "metric": "inner product (cosine)", **(meta or {})})
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "RetrievalIndex":
        """Read an index written by :meth:`save`.

        Parameters
        ----------
        folder : str or Path
            Folder holding ``index.faiss`` and ``lookup.ecsv``.

        Returns
        -------
        RetrievalIndex
            Masked string columns of the LUT are filled with ``""``.

        Raises
        ------
        FileNotFoundError
            If either file is missing (the message names it).
        ProductError
            If the index or the table is unreadable, or their lengths differ.
        """
        folder = Path(folder)
        for name in (cls.INDEX_FILE, cls.LUT_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name}: retrieval index file not found (run `helioforge index build`)")
        remedy = "rebuild it with `helioforge index build --force`"
        try:
            index = faiss.read_index(str(folder / cls.INDEX_FILE))
        except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError with a C++ trace
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ProductError(folder / cls.INDEX_FILE, f"unreadable FAISS index ({first})", remedy) from None
        try:
            table = Table.read(folder / cls.LUT_FILE, format="ascii.ecsv")
        except Exception as exc:  # noqa: BLE001 - astropy's ECSV parser raises many kinds
            raise ProductError(folder / cls.LUT_FILE, f"unreadable look-up table ({type(exc).__name__}: {exc})", remedy) from None
        if len(table) != index.ntotal:
            raise ProductError(folder, f"index holds {index.ntotal} vectors but its look-up table {len(table)} rows", remedy)
        # ECSV reads empty strings (the crop of SHARP rows) back as masked values
        for name in table.colnames:
            col = table[name]
            if getattr(col, "mask", None) is not None and col.dtype.kind in "US":
                table[name] = col.filled("")
        return cls(index, table)
