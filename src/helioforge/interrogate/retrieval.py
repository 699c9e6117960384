"""Nearest-neighbour retrieval of real patches (Chatterjee et al. 2025, §Querying, Fig. 1 LUT).

Real patches are embedded by SimSiam, L2-normalised and stored in a FAISS inner-product
index, so the score of a match is its cosine similarity with the query (the paper ranks by
negative cosine distance). The index is saved with its look-up table (LUT): one row per vector
with the file, HARP number, time and crop box of the real patch.

The kind of FAISS index (Johnson, Douze & Jégou 2019, "Billion-scale similarity search with
GPUs", IEEE Trans. Big Data) is chosen by corpus size (:func:`choose_kind`): exact
``IndexFlatIP`` for small corpora, a graph index ``IndexHNSWFlat`` (Malkov & Yashunin 2018,
IEEE TPAMI 42, 824) in the middle, and an inverted file with product quantisation
``IndexIVFPQ`` (Jégou, Douze & Schmid 2011, IEEE TPAMI 33, 117) re-ranked on 8-bit scalar
quantised vectors (``IndexRefine``) above (where HNSW measured worse, and would in any case
soon need more than about 1 GB; see :func:`choose_kind`). The index can be
grown (:meth:`RetrievalIndex.add`) and held in several shards searched together with FAISS
``IndexShards`` (merged top-k; row ids run on from shard to shard, as the LUT).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import faiss
import numpy as np
from astropy.table import Table, vstack

from helioforge.errors import ProductError
from helioforge.io import atomic_path, write_json

__all__ = ["RetrievalIndex", "Match", "IndexParams", "choose_kind", "EXACT_MAX", "HNSW_MAX", "HNSW_MAX_BYTES", "hnsw_bytes"]

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


#: Largest corpus searched exactly by ``choose_kind`` (docs/interrogator.md, "Approximate search
#: at archive scale"): HNSW overtakes exact search near 10⁴ vectors (1.9× at 10⁴, 5× at 3·10⁴),
#: but below 5·10⁴ an exact query costs about 1 ms on 2 cores, so exact results are kept.
EXACT_MAX = 50_000
#: Largest corpus given HNSW by ``choose_kind``: HNSW and IVF-PQ (re-ranked) were on a par at
#: 10⁵ clustered vectors, IVF-PQ ahead in speed at equal recall, memory and build time at
#: 3·10⁵ and 10⁶ (docs/interrogator.md).
HNSW_MAX = 200_000
#: HNSW is used only while its estimated memory (:func:`hnsw_bytes`) stays under this too.
HNSW_MAX_BYTES = 1 << 30

_KINDS = ("flat", "hnsw", "ivfpq")


@dataclass
class IndexParams:
    """Build and search parameters of a :class:`RetrievalIndex` (persisted in ``search.json``).

    Parameters
    ----------
    kind : {"auto", "flat", "hnsw", "ivfpq"}
        Index kind; ``"auto"`` chooses by corpus size (:func:`choose_kind`).
    exact_max : int
        ``"auto"`` uses the exact ``IndexFlatIP`` up to this many vectors.
    hnsw_max : int
        ``"auto"`` uses HNSW up to this many vectors (and IVF-PQ above) ...
    hnsw_max_bytes : int
        ... while :func:`hnsw_bytes` stays at or below this (IVF-PQ above).
    M : int
        HNSW graph degree (Malkov & Yashunin 2018, §4: 2·M links per node on layer 0).
    ef_construction, ef_search : int
        HNSW candidate-list sizes at build and at search time.
    nlist : int, optional
        IVF cells (coarse k-means centroids); default a power of two near 4·√n, at most n/39.
    m : int, optional
        PQ sub-quantisers (Jégou et al. 2011, §III); must divide d; default the largest divisor
        of d not above d/4 (25 bytes a vector at d = 100).
    nbits : int
        Bits per PQ sub-quantiser code.
    nprobe : int
        IVF cells visited per query.
    refine : {"sq8", "flat", "none"}
        Re-ranking of the IVF-PQ short list on 8-bit scalar-quantised vectors (100 bytes a
        vector at d = 100), on the float32 vectors, or not at all.
    k_factor : int
        IVF-PQ returns ``k_factor * k`` candidates to the re-ranking.
    train_size : int, optional
        Vectors used to train IVF-PQ (default max(50·nlist, 10 000), at most n).
    shard_size : int, optional
        Most vectors per shard; None keeps one shard.
    """

    kind: str = "auto"
    exact_max: int = EXACT_MAX
    hnsw_max: int = HNSW_MAX
    hnsw_max_bytes: int = HNSW_MAX_BYTES
    M: int = 32
    ef_construction: int = 100
    ef_search: int = 64
    nlist: int | None = None
    m: int | None = None
    nbits: int = 8
    nprobe: int = 16
    refine: str = "sq8"
    k_factor: int = 16
    train_size: int | None = None
    shard_size: int | None = None


def hnsw_bytes(n: int, d: int, M: int) -> int:
    """Estimated memory of an ``IndexHNSWFlat`` over n float32 vectors of dimension d.

    Parameters
    ----------
    n, d : int
        Number and dimension of the vectors.
    M : int
        Graph degree.

    Returns
    -------
    int
        ``n · (4·d + 8·M + 16)`` bytes: the vectors, 2·M 4-byte links on layer 0 and the upper
        layers and level table (measured 672 bytes a vector at d = 100, M = 32, FAISS 1.15).
    """
    return int(n) * (4 * int(d) + 8 * int(M) + 16)


def choose_kind(n: int, d: int, params: IndexParams | None = None) -> str:
    """Index kind for a corpus of n vectors of dimension d.

    Parameters
    ----------
    n, d : int
        Corpus size and vector dimension.
    params : IndexParams, optional
        Thresholds (``exact_max``, ``hnsw_max``, ``hnsw_max_bytes``) and ``M``; an explicit
        ``kind`` other than ``"auto"`` is returned as is.

    Returns
    -------
    str
        ``"flat"`` when n ≤ ``exact_max``, ``"hnsw"`` when n ≤ ``hnsw_max`` and
        :func:`hnsw_bytes` ≤ ``hnsw_max_bytes``, else ``"ivfpq"``.

    Raises
    ------
    ValueError
        If ``params.kind`` is not one of auto, flat, hnsw, ivfpq.
    """
    p = params or IndexParams()
    if p.kind != "auto":
        if p.kind not in _KINDS:
            raise ValueError(f"unknown index kind {p.kind!r} (expected auto, {', '.join(_KINDS)})")
        return p.kind
    if n <= p.exact_max:
        return "flat"
    if n <= p.hnsw_max and hnsw_bytes(n, d, p.M) <= p.hnsw_max_bytes:
        return "hnsw"
    return "ivfpq"


def _kind_of(index: faiss.Index) -> str:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexFlat):
        return "flat"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    return "ivfpq"


def _default_nlist(n: int) -> int:
    target = max(1, min(4 * math.sqrt(n), n / 39))
    return 1 << int(math.floor(math.log2(target)))


def _default_m(d: int) -> int:
    return max(m for m in range(1, max(1, d // 4) + 1) if d % m == 0)


def _apply_search_params(index: faiss.Index, p: IndexParams) -> None:
    ix = faiss.downcast_index(index)
    if isinstance(ix, faiss.IndexHNSW):
        ix.hnsw.efSearch = int(p.ef_search)
    elif isinstance(ix, faiss.IndexRefine):
        ix.k_factor = float(p.k_factor)
        faiss.extract_index_ivf(ix).nprobe = int(p.nprobe)
    elif isinstance(ix, faiss.IndexIVF):
        ix.nprobe = int(p.nprobe)


class RetrievalIndex:
    """FAISS inner-product index over L2-normalised embeddings plus the look-up table.

    The index is exact (``IndexFlatIP``), HNSW (``IndexHNSWFlat``, Malkov & Yashunin 2018) or
    IVF-PQ (``IndexIVFPQ``, Jégou et al. 2011, re-ranked by ``IndexRefine``), chosen by size
    (:func:`choose_kind`), and may be split into shards searched together by FAISS
    ``IndexShards`` with successive ids, so that row r of the merged result is row r of the LUT.

    Parameters
    ----------
    index : faiss.Index or list of faiss.Index
        One index or its shards (in LUT order), over L2-normalised vectors, inner-product metric.
    table : astropy Table with one row per vector (at least ``file``, ``HARPNUM``, ``T_REC``,
        ``crop``).
    params : IndexParams, optional
        Parameters the index was built with; the search-time ones (``ef_search``, ``nprobe``,
        ``k_factor``) are applied to every shard. Default: inferred kind, FAISS's own settings.

    Raises
    ------
    ValueError
        If the shards hold together another number of vectors than the table has rows, or
        their dimensions differ.
    """

    INDEX_FILE = "index.faiss"
    LUT_FILE = "lookup.ecsv"
    SEARCH_FILE = "search.json"
    SHARD_FILE = "index_{:03d}.faiss"

    def __init__(self, index: faiss.Index | list, table: Table, params: IndexParams | None = None):
        shards = list(index) if isinstance(index, (list, tuple)) else [index]
        if not shards:
            raise ValueError("an index needs at least one shard")
        if len({s.d for s in shards}) != 1:
            raise ValueError(f"shards have different dimensions {sorted({s.d for s in shards})}")
        ntotal = sum(s.ntotal for s in shards)
        if ntotal != len(table):
            raise ValueError(f"index holds {ntotal} vectors but the look-up table has {len(table)} rows")
        self.shards = shards
        self.table = table
        self.params = params if params is not None else IndexParams(kind=_kind_of(shards[0]))
        if params is not None:
            for s in shards:
                _apply_search_params(s, params)
        self._wrap()

    def _wrap(self) -> None:
        if len(self.shards) == 1:
            self.index = self.shards[0]
        else:
            # successive ids: shard s's row j is global row sum(ntotal of shards < s) + j
            self.index = faiss.IndexShards(self.dim, False, True)
            for s in self.shards:
                self.index.add_shard(s)

    @property
    def dim(self) -> int:
        """Dimension d of the stored vectors."""
        return self.shards[0].d

    @property
    def kind(self) -> str:
        """Index kind: ``"flat"`` (exact), ``"hnsw"`` or ``"ivfpq"``."""
        return _kind_of(self.shards[0])

    def __len__(self) -> int:
        """Number of indexed real patches."""
        return sum(s.ntotal for s in self.shards)

    @staticmethod
    def _normalise(vectors: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        if v.ndim != 2:
            raise ValueError(f"embeddings must be a (n, d) array, got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("embeddings contain NaN or infinite values")
        faiss.normalize_L2(v)
        return v

    @staticmethod
    def _empty(kind: str, d: int, p: IndexParams, n_hint: int) -> faiss.Index:
        if kind == "flat":
            return faiss.IndexFlatIP(d)
        if kind == "hnsw":
            ix = faiss.IndexHNSWFlat(d, int(p.M), faiss.METRIC_INNER_PRODUCT)
            ix.hnsw.efConstruction = int(p.ef_construction)
            return ix
        nlist = int(p.nlist or _default_nlist(n_hint))
        m = int(p.m or _default_m(d))
        if d % m:
            raise ValueError(f"PQ sub-quantisers m={m} must divide the dimension {d}")
        quantizer = faiss.IndexFlatIP(d)
        # FAISS's Python layer keeps the quantizer (and below the sub-indexes) referenced
        ivf = faiss.IndexIVFPQ(quantizer, d, nlist, m, int(p.nbits), faiss.METRIC_INNER_PRODUCT)
        if p.refine == "none":
            return ivf
        if p.refine == "sq8":
            fine = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        elif p.refine == "flat":
            fine = faiss.IndexFlatIP(d)
        else:
            raise ValueError(f"unknown refine {p.refine!r} (expected sq8, flat or none)")
        return faiss.IndexRefine(ivf, fine)

    @classmethod
    def build(cls, embeddings: np.ndarray, table: Table, params: IndexParams | None = None) -> "RetrievalIndex":
        """Index ``embeddings`` (n, d); they are L2-normalised first.

        Parameters
        ----------
        embeddings : np.ndarray, shape (n, d)
            SimSiam embeddings of the real patches (cast to float32; normalised in place when already
            a C-contiguous float32 array).
        table : astropy.table.Table
            Look-up table, one row per embedding (see the class).
        params : IndexParams, optional
            Kind and parameters; default ``IndexParams()``: the kind is chosen by n
            (:func:`choose_kind`), so a corpus of up to ``EXACT_MAX`` vectors gets the exact
            ``IndexFlatIP`` as before. IVF-PQ is trained on a random sample of the embeddings.

        Returns
        -------
        RetrievalIndex
            Over one shard, or ``ceil(n / shard_size)`` shards.

        Raises
        ------
        ValueError
            If the embeddings contain NaN or infinite values, ``table`` has not n rows, the kind
            is unknown, or IVF-PQ has fewer training vectors than it needs.
        """
        p = replace(params) if params is not None else IndexParams()
        v = cls._normalise(embeddings)
        n, d = v.shape
        if n != len(table):
            raise ValueError(f"{n} embeddings but the look-up table has {len(table)} rows")
        kind = choose_kind(n, d, p)
        p.kind = kind
        if kind == "ivfpq":
            p.nlist = int(p.nlist or _default_nlist(n))
            p.m = int(p.m or _default_m(d))
        first = cls._empty(kind, d, p, n)
        if kind == "ivfpq":
            ivf = faiss.extract_index_ivf(first)
            need = max(ivf.nlist, 1 << p.nbits)
            if n < need:
                raise ValueError(f"IVF-PQ needs at least {need} training vectors (nlist={ivf.nlist}, nbits={p.nbits}), got {n}")
            ntrain = min(n, int(p.train_size or max(50 * ivf.nlist, 10_000)))
            sample = v if ntrain == n else v[np.sort(np.random.default_rng(0).choice(n, ntrain, replace=False))]
            first.train(sample)
        out = cls([first], table[:0].copy(), p)
        out._add_normalised(v)
        out.table = table
        return out

    def _new_shard(self) -> faiss.Index:
        if self.kind == "ivfpq":  # reuse the trained coarse quantizer, PQ codebooks and SQ ranges
            new = faiss.clone_index(self.shards[0])
            new.reset()
        else:
            new = self._empty(self.kind, self.dim, self.params, 0)
        _apply_search_params(new, self.params)
        return new

    def _add_normalised(self, v: np.ndarray) -> None:
        size = self.params.shard_size
        start = 0
        while start < len(v):
            last = self.shards[-1]
            room = len(v) - start if not size else size - last.ntotal
            if room <= 0:
                self.shards.append(self._new_shard())
                continue
            last.add(v[start : start + room])
            start += room
        self._wrap()

    def add(self, vectors: np.ndarray, rows: Table) -> None:
        """Add new patches without rebuilding: their vectors to the index, their rows to the LUT.

        The exact and HNSW indexes grow natively (HNSW inserts into the graph); IVF-PQ encodes
        the new vectors with its trained coarse quantizer and codebooks (no retraining, so a
        corpus that drifts far from the training sample loses recall). With ``shard_size`` set,
        the last shard is filled and new shards are opened as needed.

        Parameters
        ----------
        vectors : np.ndarray, shape (n_new, d)
            Embeddings of the new patches (L2-normalised here).
        rows : astropy.table.Table
            Their LUT rows (n_new rows, the columns of the existing table).

        Raises
        ------
        ValueError
            If the dimension differs from the index, ``rows`` has not n_new rows or other
            columns, or the vectors are not finite.
        """
        v = self._normalise(vectors)
        if v.shape[1] != self.dim:
            raise ValueError(f"vector dimension {v.shape[1]} does not match the index ({self.dim})")
        if len(rows) != len(v):
            raise ValueError(f"{len(v)} vectors but {len(rows)} look-up table rows")
        if list(rows.colnames) != list(self.table.colnames):
            raise ValueError(f"look-up table columns {rows.colnames} differ from the index's {self.table.colnames}")
        table = vstack([self.table, rows], join_type="exact", metadata_conflicts="silent")
        self._add_normalised(v)
        self.table = table

    def set_search_params(self, ef_search: int | None = None, nprobe: int | None = None,
                          k_factor: int | None = None) -> None:
        """Change search-time parameters (speed against recall); saved by :meth:`save`.

        Parameters
        ----------
        ef_search : int, optional
            HNSW candidate-list size (≥ k).
        nprobe : int, optional
            IVF cells visited per query.
        k_factor : int, optional
            IVF-PQ candidates re-ranked per wanted match.
        """
        updates = {k: v for k, v in (("ef_search", ef_search), ("nprobe", nprobe), ("k_factor", k_factor)) if v is not None}
        self.params = replace(self.params, **updates)
        for s in self.shards:
            _apply_search_params(s, self.params)

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
            Cosine similarities in [-1, 1], best first (exact for the flat and HNSW kinds; from
            the re-ranking vectors for IVF-PQ). ``-inf`` where no match was found.
        rows : np.ndarray of int64, shape (q, k)
            LUT rows of the matches; ``-1`` where an approximate index found fewer than k.

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
        if self.kind != "flat":
            scores[rows < 0] = -np.inf
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
            q lists of k matches, rank 1 (best) first (fewer where an approximate index found
            fewer).

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
                for j, (s, r) in enumerate(zip(srow, rrow)) if r >= 0
            ])
        return out

    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        """Write the index, ``lookup.ecsv``, ``search.json`` and ``index.json`` into ``folder``.

        One shard is written as ``index.faiss`` (the format older versions read); several as
        ``index_000.faiss``, ``index_001.faiss``, … (in LUT order; stale index files of an earlier
        save are removed). ``search.json`` holds the kind, the shard files and all
        :class:`IndexParams`, among them the search-time ``ef_search``, ``nprobe`` and
        ``k_factor`` that :meth:`load` restores. Every file is written atomically, the sidecar
        last.

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
        names = [self.INDEX_FILE] if len(self.shards) == 1 else [self.SHARD_FILE.format(i) for i in range(len(self.shards))]
        for name, shard in zip(names, self.shards):
            with atomic_path(folder / name) as tmp:
                faiss.write_index(shard, str(tmp))
        with atomic_path(folder / self.LUT_FILE) as tmp:
            self.table.write(tmp, format="ascii.ecsv", overwrite=True)
        write_json(folder / "index.json", {"n": len(self), "dim": self.dim, "metric": "inner product (cosine)", **(meta or {})})
        write_json(folder / self.SEARCH_FILE, {"format": 2, "kind": self.kind, "shards": names,
                                               "shard_sizes": [int(s.ntotal) for s in self.shards],
                                               "params": asdict(self.params)})
        for stale in [folder / self.INDEX_FILE, *folder.glob("index_[0-9][0-9][0-9].faiss")]:
            if stale.name not in names and stale.is_file():
                stale.unlink()
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "RetrievalIndex":
        """Read an index written by :meth:`save` (or an older plain ``index.faiss`` folder).

        Parameters
        ----------
        folder : str or Path
            Folder holding ``lookup.ecsv`` and ``index.faiss`` or the shards named in
            ``search.json``. Without ``search.json`` the folder is read as before: one index,
            FAISS's stored settings.

        Returns
        -------
        RetrievalIndex
            With the search parameters of ``search.json`` applied. Masked string columns of the
            LUT are filled with ``""``.

        Raises
        ------
        FileNotFoundError
            If a file is missing (the message names it).
        ProductError
            If an index, the sidecar or the table is unreadable, or their lengths differ.
        """
        folder = Path(folder)
        remedy = "rebuild it with `helioforge index build --force`"
        sidecar = folder / cls.SEARCH_FILE
        params, names = None, [cls.INDEX_FILE]
        if sidecar.is_file():
            try:
                info = json.loads(sidecar.read_text())
                names = [str(n) for n in info["shards"]]
                known = {f.name for f in fields(IndexParams)}
                params = IndexParams(**{k: v for k, v in info["params"].items() if k in known})
            except Exception as exc:  # noqa: BLE001 - bad JSON or missing keys
                raise ProductError(sidecar, f"unreadable search parameters ({type(exc).__name__}: {exc})", remedy) from None
        for name in (*names, cls.LUT_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name}: retrieval index file not found (run `helioforge index build`)")
        shards = []
        for name in names:
            try:
                shards.append(faiss.read_index(str(folder / name)))
            except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError with a C++ trace
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                raise ProductError(folder / name, f"unreadable FAISS index ({first})", remedy) from None
        try:
            table = Table.read(folder / cls.LUT_FILE, format="ascii.ecsv")
        except Exception as exc:  # noqa: BLE001 - astropy's ECSV parser raises many kinds
            raise ProductError(folder / cls.LUT_FILE, f"unreadable look-up table ({type(exc).__name__}: {exc})", remedy) from None
        ntotal = sum(s.ntotal for s in shards)
        if len(table) != ntotal:
            raise ProductError(folder, f"index holds {ntotal} vectors but its look-up table {len(table)} rows", remedy)
        # ECSV reads empty strings (the crop of SHARP rows) back as masked values
        for name in table.colnames:
            col = table[name]
            if getattr(col, "mask", None) is not None and col.dtype.kind in "US":
                table[name] = col.filled("")
        return cls(shards, table, params)
