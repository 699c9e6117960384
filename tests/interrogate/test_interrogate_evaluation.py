"""Retrieval yardsticks: correlations with bootstrap intervals, the three baselines, the split
table, and the health checks, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

import json
import shutil

from astropy.io import fits

from helioforge.config import SAMPLE_DIR
from helioforge.interrogate.config import get_profile
from helioforge.interrogate.data import SOURCE_SHARP, build_corpus, holdout_harps, training_mask
from helioforge.interrogate.evaluate import (baseline_rows, correlation_ci, health_checks, like_for_like, nearest_rows,
                                           real_query_check, retrieval_table)
from helioforge.interrogate.pipeline import interrogate, interrogate_seeds

PARAMS = ("TUF", "PSEP", "R", "TPF", "TNF")


def _params(rng, n):
    base = rng.lognormal(3, 1, n)
    return {"TUF": base, "TPF": base / 2, "TNF": base / 2, "PSEP": rng.uniform(1, 30, n), "R": base / 10}


def test_correlation_ci_known_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    same = correlation_ci(a, 3 * a + 1, n_boot=300)
    assert same["pearson"] == pytest.approx(1) and same["spearman"] == pytest.approx(1)
    assert same["spearman_ci"][0] == pytest.approx(1)
    indep = correlation_ci(a, rng.normal(size=400), n_boot=500)
    assert indep["pearson_ci"][0] < 0 < indep["pearson_ci"][1] and indep["n"] == 400
    b = a + rng.normal(size=400)  # r = 1/sqrt(2)
    mid = correlation_ci(b, a, n_boot=500)
    assert mid["pearson_ci"][0] < 0.707 < mid["pearson_ci"][1]
    short = correlation_ci([1.0, 2.0], [1.0, np.nan])
    assert np.isnan(short["pearson"]) and short["n"] == 1


def test_nearest_rows_respects_the_candidate_database():
    c = np.eye(4, dtype=np.float32)
    q = np.array([[0.9, 0.1, 0, 0], [0, 0, 1, 0]], np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert list(nearest_rows(q, c, np.arange(4))) == [0, 2]
    assert list(nearest_rows(q, c, np.array([1, 3]))) == [1, 1] or list(nearest_rows(q, c, np.array([1, 3])))[0] == 1


def test_baselines_oracle_finds_the_same_parameters_activity_keeps_the_class():
    rng = np.random.default_rng(1)
    c = _params(rng, 200)
    c_active = np.arange(200) % 2 == 0
    pick = rng.integers(0, 200, 50)
    q = {k: v[pick] for k, v in c.items()}
    rows = baseline_rows(q, c, c_active[pick], c_active, np.arange(200), seed=0)
    assert np.array_equal(rows["oracle"], pick) or np.allclose(c["TUF"][rows["oracle"]], q["TUF"])
    assert np.array_equal(c_active[rows["activity"]], c_active[pick])
    sub = np.arange(100, 200)
    rows = baseline_rows(q, c, c_active[pick], c_active, sub, seed=0)
    assert all(np.isin(r, sub).all() for r in rows.values())


def test_retrieval_table_perfect_matcher_beats_the_shuffled_baseline():
    rng = np.random.default_rng(2)
    c = _params(rng, 300)
    c_vec = rng.normal(size=(300, 16)).astype(np.float32)
    c_vec /= np.linalg.norm(c_vec, axis=1, keepdims=True)
    pick = rng.integers(0, 300, 120)
    q = {k: v[pick] for k, v in c.items()}
    q_active = rng.random(120) < 0.6
    c_active = rng.random(300) < 0.5
    table = retrieval_table(c_vec[pick], c_vec, q, c, q_active, c_active, {"all": np.arange(300)}, n_boot=100)
    ll = like_for_like(table, "all", "active")
    assert ll["simsiam"]["TUF"]["spearman"] == pytest.approx(1)
    assert abs(ll["shuffled"]["TUF"]["spearman"]) < 0.35
    assert ll["oracle"]["TUF"]["spearman"] > 0.95
    assert {r["queries"] for r in table} == {"all", "active", "quiet"}


def test_real_query_check_counts_active_matches():
    c_vec = np.eye(3, dtype=np.float32)
    params = {"TUF": np.array([1.0, 2.0, 3.0])}
    out = real_query_check(c_vec[[0, 1]], c_vec, np.array([5.0, 6.0]), params, np.array([True, False, True]),
                           np.array([0, 1, 2]), n_boot=10)
    assert out["n_queries"] == 2 and out["match_active_fraction"] == pytest.approx(0.5)


def test_health_checks_flag_collapse():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(100, 1, 8, 8)).astype(np.float32)
    collapsed = np.repeat(real[:1], 100, axis=0)
    healthy_sim = {"final_metrics": {"z_std": 0.099}, "collapse_reference_z_std": 0.1}
    h = health_checks(collapsed, real, healthy_sim, {"TUF": 0.8})
    assert h["unusable"] == ["GAN"]
    h = health_checks(real, real, {"final_metrics": {"z_std": 0.01}, "collapse_reference_z_std": 0.1}, {"TUF": 0.5, "R": 0.52})
    assert h["unusable"] == ["SimSiam", "directions"]
    assert health_checks(real, real, healthy_sim, {"TUF": 0.8, "R": 0.5})["unusable"] == []


def test_runs_are_deterministic_and_seeds_report_spread(tmp_path):
    """The README's numbers moved between two runs of one commit: a run is now deterministic for
    a seed on one machine, and --seeds K reports the spread over seeds."""

    def tiny():
        p = get_profile("tiny")
        p.data.sharp_dirs = (str(SAMPLE_DIR / "sharp"),)
        p.data.use_fulldisk = False
        return p

    a = interrogate(tiny(), tmp_path / "a", progress=False, accelerator="cpu")
    b = interrogate(tiny(), tmp_path / "b", progress=False, accelerator="cpu")
    same = lambda k: json.dumps(a[k], sort_keys=True) == json.dumps(b[k], sort_keys=True)  # noqa: E731 (NaN == NaN here)
    assert same("retrieval_table") and same("correlations") and same("svm_accuracy")
    assert any(np.isfinite(r["TUF"]["spearman"]) for r in a["retrieval_table"])
    assert len(a["corpus"]["held_out_harps"]) == 3 and a["corpus"]["sources"].startswith("SHARP only")
    s = interrogate_seeds(tiny(), tmp_path / "s", 2, progress=False, accelerator="cpu")
    svm = s["numbers"]["SVM TUF accuracy"]
    assert len(svm["values"]) == 2 and np.isfinite(svm["std"]) and "TUF spearman" in s["numbers"]
    assert (tmp_path / "s" / "seeds_summary.json").is_file() and (tmp_path / "s" / "seed_1" / "report" / "index.html").is_file()


def test_corpus_rows_carry_source_and_region_and_bad_files_are_named(tmp_path):

    folder = tmp_path / "sharp"
    folder.mkdir()
    files = sorted((SAMPLE_DIR / "sharp").glob("*.Br.fits"))
    for f in files[:4]:
        shutil.copyfile(f, folder / f.name)
    with fits.open(files[4]) as h:  # the same frame without HARPNUM
        hdu = h[-1]
        data, hdr = hdu.data, hdu.header.copy()
    del hdr["HARPNUM"]
    fits.PrimaryHDU(data, header=hdr).writeto(folder / "hmi.sharp_cea_720s.9999.20120306_142400_TAI.Br.fits",
                                              output_verify="silentfix")
    p = get_profile("tiny")
    p.data.sharp_dirs = (str(folder),)
    corpus, skipped = build_corpus(p.data, fulldisk=False)
    assert len(corpus) == 4 and set(corpus.table["source"]) == {SOURCE_SHARP}
    assert all(r.startswith("HARP ") for r in corpus.table["region"])
    assert len(skipped) == 1 and "9999" in skipped[0].path.name and "HARPNUM" in skipped[0].reason
    p.gan.batch_size = 1  # so that a 4-frame corpus can spare regions
    held = holdout_harps(corpus, p)  # regions with a single frame are held out like any other
    n_harps = len(set(corpus.table["HARPNUM"]))
    assert len(held) == min(3, max(n_harps - 2, 0))
    assert training_mask(corpus, p).sum() == sum(int(h) not in held for h in corpus.table["HARPNUM"])


def test_holdout_leaves_a_batch_to_train_on():
    """`make demo` on the embedded sample failed: holding out 3 HARPs left 29 images for a GAN
    batch of 32."""

    p = get_profile("cpu")
    p.data.sharp_dirs = (str(SAMPLE_DIR / "sharp"),)
    p.data.image_size = 32
    corpus, _ = build_corpus(p.data, fulldisk=False)
    held = holdout_harps(corpus, p)
    assert 1 <= len(held) <= 3 and training_mask(corpus, p).sum() >= p.gan.batch_size
