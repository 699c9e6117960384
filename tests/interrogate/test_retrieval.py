"""FAISS retrieval equals brute-force cosine search; index and LUT round-trip."""

import numpy as np
import pytest
from astropy.table import Table

from helioforge.interrogate.retrieval import RetrievalIndex


def _lut(n):
    return Table({"file": [f"f{i}.fits" for i in range(n)], "HARPNUM": np.arange(n), "T_REC": ["2012.03.07_00:00:00_TAI"] * n,
                  "crop": [""] * n})


def test_search_matches_brute_force_cosine():
    rng = np.random.default_rng(0)
    base, q = rng.normal(size=(500, 100)), rng.normal(size=(20, 100))
    idx = RetrievalIndex.build(base, _lut(500))
    scores, rows = idx.search(q, 5)
    bn = base / np.linalg.norm(base, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cos = qn @ bn.T
    np.testing.assert_array_equal(rows, np.argsort(-cos, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.take_along_axis(cos, rows, 1), atol=1e-5)


def test_self_query_scores_one_and_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(50, 8))
    idx = RetrievalIndex.build(base, _lut(50))
    idx.save(tmp_path / "ix")
    back = RetrievalIndex.load(tmp_path / "ix")
    m = back.matches(base[7:8] * 3.0, k=2)[0]  # scale does not matter for cosine
    assert m[0].row == 7 and m[0].score == pytest.approx(1.0, abs=1e-5)
    assert m[0].file == "f7.fits" and m[0].HARPNUM == 7 and m[1].rank == 2


def test_errors():
    idx = RetrievalIndex.build(np.eye(4), _lut(4))
    with pytest.raises(ValueError, match="dimension"):
        idx.search(np.ones((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="rows"):
        RetrievalIndex.build(np.eye(4), _lut(3))


def test_load_missing_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.faiss"):
        RetrievalIndex.load(tmp_path)
