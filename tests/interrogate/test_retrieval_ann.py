"""Approximate retrieval (issue 16): kind by corpus size, recall, persistence, incremental add, shards."""

import json
from dataclasses import replace

import faiss
import numpy as np
import pytest
from astropy.table import Table

from helioforge.interrogate.retrieval import EXACT_MAX, HNSW_MAX, IndexParams, RetrievalIndex, choose_kind


def _lut(n, start=0):
    return Table({"file": [f"f{i}.fits" for i in range(start, start + n)], "HARPNUM": np.arange(start, start + n),
                  "T_REC": ["2012.03.07_00:00:00_TAI"] * n, "crop": [""] * n})


def _mixture(n, d=32, clusters=40, sigma=0.5, seed=0, centres=None):
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = np.random.default_rng(99).standard_normal((clusters, d))
    x = centres[rng.integers(0, len(centres), n)] + sigma * rng.standard_normal((n, d))
    return x.astype(np.float32), centres


def _recall5(rows, truth):
    return np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, truth)])


@pytest.fixture(scope="module")
def data():
    base, centres = _mixture(4000)
    q, _ = _mixture(200, seed=1, centres=centres)
    truth = RetrievalIndex.build(base, _lut(len(base)), IndexParams(kind="flat")).search(q, 5)[1]
    return base, q, truth


# small thresholds so that a few thousand vectors exercise every kind
SMALL = dict(exact_max=1000, hnsw_max=3000, M=16, nlist=32, m=16)


def test_kind_chosen_by_size():
    assert choose_kind(10, 100) == "flat" and choose_kind(EXACT_MAX, 100) == "flat"
    assert choose_kind(EXACT_MAX + 1, 100) == "hnsw" and choose_kind(HNSW_MAX, 100) == "hnsw"
    assert choose_kind(HNSW_MAX + 1, 100) == "ivfpq"
    # the memory cap alone: HNSW would need ~7 GB at 10⁷
    assert choose_kind(10_000_000, 100, IndexParams(hnsw_max=10**9)) == "ivfpq"
    p = IndexParams(**SMALL)
    assert [choose_kind(n, 32, p) for n in (1000, 1001, 3000, 3001)] == ["flat", "hnsw", "hnsw", "ivfpq"]
    assert choose_kind(2000, 32, replace(p, hnsw_max_bytes=2000 * 200)) == "ivfpq"
    rng = np.random.default_rng(0)
    for n, kind in ((800, "flat"), (2000, "hnsw"), (4000, "ivfpq")):
        assert RetrievalIndex.build(rng.normal(size=(n, 32)), _lut(n), p).kind == kind
    with pytest.raises(ValueError, match="unknown index kind"):
        choose_kind(10, 4, IndexParams(kind="lsh"))


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_recall_at_5_on_clustered_data(data, kind):
    base, q, truth = data
    idx = RetrievalIndex.build(base, _lut(len(base)), IndexParams(kind=kind, **SMALL))
    assert idx.kind == kind
    scores, rows = idx.search(q, 5)
    assert rows.shape == scores.shape == (len(q), 5)
    assert _recall5(rows, truth) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_round_trip_restores_search_params(data, tmp_path, kind):
    base, q, _ = data
    idx = RetrievalIndex.build(base, _lut(len(base)), IndexParams(kind=kind, **SMALL))
    idx.set_search_params(ef_search=48, nprobe=5, k_factor=3)
    before = idx.search(q, 5)
    idx.save(tmp_path / "ix")
    side = json.loads((tmp_path / "ix" / RetrievalIndex.SEARCH_FILE).read_text())
    assert side["kind"] == kind and side["params"]["ef_search"] == 48 and side["params"]["nprobe"] == 5
    back = RetrievalIndex.load(tmp_path / "ix")
    assert back.kind == kind and back.params == idx.params
    if kind == "hnsw":
        assert faiss.downcast_index(back.index).hnsw.efSearch == 48
    if kind == "ivfpq":
        assert faiss.extract_index_ivf(back.index).nprobe == 5
        assert faiss.downcast_index(back.index).k_factor == 3
    after = back.search(q, 5)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)  # BLAS may sum in another order
    assert back.matches(q[:1], 2)[0][0].file == idx.matches(q[:1], 2)[0][0].file


def test_incremental_add_exact_is_identical(data):
    base, q, _ = data
    whole = RetrievalIndex.build(base, _lut(len(base)))
    assert whole.kind == "flat"
    grown = RetrievalIndex.build(base[:1500], _lut(1500))
    grown.add(base[1500:3000], _lut(1500, 1500))
    grown.add(base[3000:], _lut(1000, 3000))
    assert len(grown) == len(grown.table) == len(base)
    np.testing.assert_array_equal(grown.search(q, 5)[1], whole.search(q, 5)[1])
    np.testing.assert_allclose(grown.search(q, 5)[0], whole.search(q, 5)[0], atol=1e-6)
    assert list(grown.table["file"]) == list(whole.table["file"])


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_incremental_add_ann_keeps_recall(data, kind):
    base, q, truth = data
    p = IndexParams(kind=kind, **SMALL)
    whole = RetrievalIndex.build(base, _lut(len(base)), p)
    grown = RetrievalIndex.build(base[:2000], _lut(2000), p)  # IVF-PQ: quantizer trained on the first half
    trained = faiss.extract_index_ivf(grown.index).quantizer.reconstruct_n(0, 32) if kind == "ivfpq" else None
    grown.add(base[2000:], _lut(2000, 2000))
    if kind == "ivfpq":  # reused, not retrained
        np.testing.assert_array_equal(faiss.extract_index_ivf(grown.index).quantizer.reconstruct_n(0, 32), trained)
    r_whole, r_grown = _recall5(whole.search(q, 5)[1], truth), _recall5(grown.search(q, 5)[1], truth)
    assert r_grown >= 0.9 and abs(r_grown - r_whole) <= 0.03
    assert grown.matches(q[:1], 1)[0][0].HARPNUM == grown.search(q[:1], 1)[1][0, 0]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_sharded_save_and_search(data, tmp_path, kind):
    base, q, _ = data
    extra, _ = _mixture(700, seed=2, centres=_mixture(1)[1])
    everything = np.vstack([base, extra])
    p = IndexParams(kind=kind, **SMALL)
    sharded = RetrievalIndex.build(base, _lut(len(base)), replace(p, shard_size=1500))
    assert [s.ntotal for s in sharded.shards] == [1500, 1500, 1000]
    sharded.add(extra, _lut(700, 4000))  # fills the last shard, opens a fourth
    assert [s.ntotal for s in sharded.shards] == [1500, 1500, 1500, 200]
    sharded.save(tmp_path / "ix")
    names = sorted(f.name for f in (tmp_path / "ix").glob("index*.faiss"))
    assert names == [f"index_{i:03d}.faiss" for i in range(4)]
    back = RetrievalIndex.load(tmp_path / "ix")
    assert back.params.shard_size == 1500 and len(back.shards) == 4
    scores, rows = back.search(q, 5)
    np.testing.assert_array_equal(rows, sharded.search(q, 5)[1])
    whole = RetrievalIndex.build(everything, _lut(4700), IndexParams(kind="flat"))
    w_scores, w_rows = whole.search(q, 5)
    if kind == "flat":  # exact: same as one unsharded index over the same vectors
        np.testing.assert_array_equal(rows, w_rows)
        np.testing.assert_allclose(scores, w_scores, atol=1e-6)
    else:
        assert _recall5(rows, w_rows) >= 0.9
    # LUT rows line up with the merged ids across shards (row 4300 is in the fourth shard)
    for r in (0, 1600, 4300):
        m = back.matches(everything[r : r + 1], 1)[0][0]
        assert m.row == r and m.file == f"f{r}.fits" and m.score == pytest.approx(1.0, abs=2e-2)


def test_old_format_folder_loads_identically(data, tmp_path):
    base, q, _ = data
    folder = tmp_path / "old"
    folder.mkdir()
    flat = faiss.IndexFlatIP(base.shape[1])
    v = base.copy()
    faiss.normalize_L2(v)
    flat.add(v)
    faiss.write_index(flat, str(folder / "index.faiss"))
    _lut(len(base)).write(folder / "lookup.ecsv", format="ascii.ecsv")
    back = RetrievalIndex.load(folder)
    assert back.kind == "flat" and len(back.shards) == 1
    ref = RetrievalIndex(flat, _lut(len(base)))
    np.testing.assert_array_equal(back.search(q, 5)[1], ref.search(q, 5)[1])
    np.testing.assert_allclose(back.search(q, 5)[0], ref.search(q, 5)[0], atol=1e-6)
    back.save(folder)  # a re-save keeps the old file name, adds the sidecar
    assert (folder / "index.faiss").is_file() and (folder / RetrievalIndex.SEARCH_FILE).is_file()


def test_bad_input_names_the_problem(data):
    base, _, _ = data
    idx = RetrievalIndex.build(base[:100], _lut(100))
    with pytest.raises(ValueError, match="dimension 31 does not match the index \\(32\\)"):
        idx.add(base[:5, :31], _lut(5))
    with pytest.raises(ValueError, match="5 vectors but 4 look-up table rows"):
        idx.add(base[:5], _lut(4))
    with pytest.raises(ValueError, match="columns"):
        idx.add(base[:2], Table({"file": ["a", "b"]}))
    with pytest.raises(ValueError, match="query dimension"):
        idx.search(base[:1, :31])
    with pytest.raises(ValueError, match="100 embeddings but the look-up table has 99 rows"):
        RetrievalIndex.build(base[:100], _lut(99))
    with pytest.raises(ValueError, match="IVF-PQ needs at least"):
        RetrievalIndex.build(base[:100], _lut(100), IndexParams(kind="ivfpq", nlist=32, m=8))
    assert len(idx) == 100  # failed adds changed nothing
