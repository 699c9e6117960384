"""The corpus on disk (``CorpusStore``): same corpus as ``build_corpus``, appended crash-safely,
read lazily, opened as a ``Corpus`` by the pipeline code, and bounded memory on a corpus many
times the real sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.table import vstack

import helioforge.interrogate.data as data_mod
from helioforge.errors import ProductError
from helioforge.interrogate.config import get_profile
from helioforge.interrogate.data import (
    COLUMNS,
    Corpus,
    CorpusStore,
    build_corpus,
    build_corpus_store,
    holdout_harps,
    training_mask,
)
from helioforge.interrogate.evaluate import image_params
from helioforge.physics.params import is_active


def _cfg(data_dir, size=64):
    p = get_profile("cpu")
    p.data.image_size = size
    p.data.sharp_dirs = (str(data_dir / "sharp"), str(data_dir / "sharp_bad"))
    return p


@pytest.fixture(scope="module")
def both(data_dir, tmp_path_factory):
    """The real sample (SHARP + the bad files) as an in-memory corpus and as a store."""
    prof = _cfg(data_dir)
    corpus, skipped = build_corpus(prof.data, fulldisk=False)
    store, skipped_store = build_corpus_store(prof.data, tmp_path_factory.mktemp("st") / "sample.corpus", fulldisk=False)
    yield prof, corpus, skipped, store, skipped_store
    store.close()


def _rows(n, start=0, prefix="f"):
    return [{"source": "sharp", "region": f"HARP {start + i}", "file": f"{prefix}{start + i}.Br.fits", "HARPNUM": start + i,
             "NOAA_AR": -1, "T_REC": "2012.03.06_00:00:00_TAI", "crop": "", "pixel_size_mm": 0.36, "USFLUX": float("nan")}
            for i in range(n)]


def _images(n, size=8, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 1, size, size)).astype(np.float32)


# ----------------------------------------------------------------------------- same corpus
def test_store_holds_the_same_corpus_as_build_corpus(both):
    prof, corpus, skipped, store, skipped_store = both
    sc = store.as_corpus()
    assert isinstance(sc.images, np.memmap) and sc.images.shape == corpus.images.shape == (39, 1, 64, 64)
    assert np.array_equal(sc.images, corpus.images)  # bit for bit
    for name, _ in COLUMNS:
        assert sc.table[name].dtype == corpus.table[name].dtype, name
        assert np.array_equal(sc.table[name], corpus.table[name], equal_nan=sc.table[name].dtype.kind == "f"), name
    assert sc.table.colnames == [c for c, _ in COLUMNS] + ["NOAA_ARS"]
    assert sc.warnings == corpus.warnings and any("R_VALUE" in w for w in sc.warnings)
    assert [(s.path, s.reason) for s in skipped_store] == [(s.path, s.reason) for s in skipped] and len(skipped) == 3
    assert sorted(s.path.name for s in store.skipped()) == sorted(s.path.name for s in skipped)
    assert sc.clip_gauss == corpus.clip_gauss and sc.image_size == 64


def test_pipeline_code_gives_identical_results_on_the_store_corpus(both, tmp_path):
    """What train.py / evaluate.py / pipeline.py do with a corpus, on both forms."""
    prof, corpus, _, store, _ = both
    sc = store.as_corpus()
    assert holdout_harps(sc, prof) == holdout_harps(corpus, prof)
    keep = training_mask(sc, prof)
    assert np.array_equal(keep, training_mask(corpus, prof))
    assert np.array_equal(sc.images[keep], corpus.images[keep])
    a, b = image_params(sc.images, prof), image_params(corpus.images, prof)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    assert np.array_equal(is_active(sc.images, 0.15), is_active(corpus.images, 0.15))
    sc.save(tmp_path / "corpus.fits")  # the pipeline's product: same images, table with NOAA_ARS beside
    back = Corpus.load(tmp_path / "corpus.fits")
    assert np.array_equal(back.images, corpus.images) and list(back.table["file"]) == list(corpus.table["file"])


def test_lazy_reads_touch_only_the_patches_asked_for(both, monkeypatch):
    _, corpus, _, store, _ = both
    read: list[int] = []
    real = os.preadv

    def counting(fd, buffers, offset):
        n = real(fd, buffers, offset)
        read.append(n)
        return n

    monkeypatch.setattr(data_mod.os, "preadv", counting)
    patch = 64 * 64 * 4
    assert np.array_equal(store[7], corpus.images[7]) and read == [patch]  # one patch: its 16 kB only
    read.clear()
    assert np.array_equal(store[[30, 2, 2, 3]], corpus.images[[30, 2, 2, 3]]) and sum(read) == 3 * patch
    read.clear()
    assert np.array_equal(store[-1], corpus.images[-1]) and np.array_equal(store[5:9], corpus.images[5:9])
    assert sum(read) == 5 * patch
    read.clear()
    batches = list(store.iter_batches(16))
    assert [b.start for b in batches] == [0, 16, 32] and max(read) == 16 * patch
    assert np.array_equal(np.concatenate([b.images for b in batches]), corpus.images)
    assert list(vstack([b.table for b in batches])["file"]) == list(corpus.table["file"])
    mask = np.asarray(corpus.table["HARPNUM"]) == 1449
    (sel,) = list(store.iter_batches(100, rows=mask))
    assert sel.start == -1 and np.array_equal(sel.images, corpus.images[mask]) and set(sel.table["HARPNUM"]) == {1449}
    with pytest.raises(IndexError, match="out of range"):
        store[39]
    with pytest.raises(IndexError, match="boolean index"):
        store.read(np.ones(3, bool))
    with pytest.raises(ValueError, match="batch_size"):
        next(store.iter_batches(0))
    r = store.row(0)
    assert r["file"] == corpus.table["file"][0] and len(r["sha256"]) == 64 and r["folder"].endswith("sharp")


# ----------------------------------------------------------------------------- appending
def test_append_is_idempotent_and_survives_a_crash_between_writes(tmp_path):
    path = tmp_path / "s"
    with CorpusStore.create(path, 8, 1000.0, provenance={"by": "test"}) as s:
        assert s.append(_images(3), _rows(3)) == 3
        assert s.append(_images(3), _rows(3)) == 0  # the same files again: nothing added
        assert s.append(_images(2, seed=1), _rows(1, 3) * 2) == 1  # a repeat inside one call too
        s.add_provenance({"made_by": "test", "n": 4})
    assert np.load(path / "images.npy", mmap_mode="r").shape == (4, 1, 8, 8)  # a standard .npy file
    with open(path / "images.npy", "ab") as fh:  # a run killed after writing images, before committing rows
        fh.write(b"\x01" * 700)
    with CorpusStore.open(path) as s:
        assert len(s) == 4 and np.array_equal(s[0:3], _images(3))
        assert s.provenance()[0]["provenance"] == {"by": "test"} and s.provenance()[-1]["n"] == 4
    with CorpusStore.open(path, "a") as s:  # the uncommitted bytes are dropped
        assert os.path.getsize(path / "images.npy") == 128 + 4 * 256
        assert s.append(_images(1, seed=2), _rows(1, 10)) == 1
        assert np.array_equal(s[4], _images(1, seed=2)[0])
    with open(path / "images.npy", "r+b") as fh:  # killed after committing rows, before the header update
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (2, 1, 8, 8)})
    with CorpusStore.open(path) as s:
        assert len(s) == 5 and np.array_equal(s.as_corpus().images[4], _images(1, seed=2)[0])
    with CorpusStore.open(path, "a"):
        pass
    assert np.load(path / "images.npy", mmap_mode="r").shape == (5, 1, 8, 8)


def test_bad_files_are_recorded_and_the_rest_go_on(data_dir, tmp_path):
    files = sorted((data_dir / "sharp_bad").glob("*.Br.fits")) + sorted((data_dir / "sharp").glob("*.1445.*.Br.fits"))
    with CorpusStore.create(tmp_path / "s", 32) as s:
        added, skipped = s.add_sharp_files(files)
        assert added == 2 and len(s) == 2 and set(s.table()["HARPNUM"]) == {1445}
        reasons = {x.path.name: x.reason for x in skipped}
        assert len(reasons) == 3 and sum("truncated" in r for r in reasons.values()) == 2
        assert any("empty" in r for r in reasons.values())
        assert {x.path.name: x.reason for x in s.skipped()} == reasons
        assert s.add_sharp_file(files[-1]) is False  # already there


def test_errors_name_the_store_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no corpus store here"):
        CorpusStore.open(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        CorpusStore.create(tmp_path / "full", 8)
    with pytest.raises(ValueError, match="image_size"):
        CorpusStore.create(tmp_path / "s0", 4)
    (tmp_path / "half").mkdir()  # a creation stopped before store.json: not a store, made afresh
    (tmp_path / "half" / "images.npy").write_bytes(b"junk")
    (tmp_path / "half" / "table.sqlite").write_bytes(b"junk")
    with pytest.raises(FileNotFoundError, match="no corpus store here"):
        CorpusStore.open(tmp_path / "half")
    with CorpusStore.open_or_create(tmp_path / "half", 8) as s:
        assert len(s) == 0 and s.append(_images(1), _rows(1)) == 1
    path = tmp_path / "s"
    with CorpusStore.create(path, 8) as s:
        with pytest.raises(ValueError, match=r"images must be \(b, 1, 8, 8\)"):
            s.append(_images(1, size=9), _rows(1))
        bad = _images(1)
        bad[0, 0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="f0.Br.fits' has non-finite pixels"):
            s.append(bad, _rows(1))
        with pytest.raises(ValueError, match="lacks T_REC"):
            s.append(_images(1), [{k: v for k, v in _rows(1)[0].items() if k != "T_REC"}])
        with pytest.raises(ProductError, match="holds no image yet"):
            s.as_corpus()
        s.append(_images(2), _rows(2))
    with CorpusStore.open(path) as s, pytest.raises(ValueError, match="opened read-only"):
        s.append(_images(1), _rows(1, 5))
    with pytest.raises(ValueError, match="not 16×16"):
        CorpusStore.open_or_create(path, 16)
    with open(path / "images.npy", "r+b") as fh:  # images lost: the table holds more rows than the file
        fh.truncate(128 + 256)
    with pytest.raises(ProductError, match="images.npy: holds 1 image\\(s\\), the table 2: images lost"):
        CorpusStore.open(path)
    (path / "table.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ProductError, match="table.sqlite: unreadable store table"):
        CorpusStore.open(path)


# ----------------------------------------------------------------------------- memory
_MEASURE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from helioforge.interrogate.data import Corpus, CorpusStore

    def hwm_mib():  # peak resident set of this process (Linux VmHWM; ru_maxrss elsewhere)
        try:
            line = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
            return int(line.split()[1]) / 1024
        except (OSError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    mode, path = sys.argv[1], sys.argv[2]
    base, total, n = hwm_mib(), 0.0, 0
    if mode == "in-memory":  # the pipeline's reuse path: Corpus.load, then batches of the array
        c = Corpus.load(path)
        batches = (c.images[i:i + 256] for i in range(0, len(c), 256))
    else:
        s = CorpusStore.open(path)
        if mode == "store":  # iter_batches: fresh arrays, the file is never mapped
            batches = (b.images for b in s.iter_batches(256))
        else:  # as_corpus: the memory map the pipeline code gets
            c = s.as_corpus()
            batches = (c.images[i:i + 256] for i in range(0, len(c), 256))
    for b in batches:
        total += float(np.abs(b).sum(dtype=np.float64))
        n += len(b)
    print(json.dumps({"mode": mode, "baseline_mib": base, "peak_mib": hwm_mib(), "n": n, "sum": total,
                      "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def test_peak_memory_stays_bounded_on_a_corpus_40_times_the_sample(data_dir, tmp_path):
    """1560 images of 128² (40 × the 39 real SHARP frames, 98 MiB): peak RSS of one pass over
    the corpus loaded in memory vs. read from the store a batch at a time, each in a fresh
    process. Run with ``-s`` to see the numbers."""
    prof = _cfg(data_dir, size=128)
    prof.data.sharp_dirs = (str(data_dir / "sharp"),)
    small, _ = build_corpus_store(prof.data, tmp_path / "sample.corpus", fulldisk=False)
    with small:
        images, table = small[0:len(small)], small.table()
    reps = 40
    with CorpusStore.create(tmp_path / "big.corpus", 128) as big:
        for k in range(reps):
            rows = [{**{c: r[c] for c, _ in COLUMNS}, "file": f"copy{k:02d}/{r['file']}"} for r in table]
            big.append(images, rows)
        assert len(big) == reps * len(images) == 1560
    Corpus(images=np.concatenate([images] * reps), table=vstack([table] * reps)).save(tmp_path / "big.fits")
    cube_mib = 1560 * 128 * 128 * 4 / 2**20

    def measure(mode, path):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-c", _MEASURE, mode, str(path)], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    mem = measure("in-memory", tmp_path / "big.fits")
    lazy = measure("store", tmp_path / "big.corpus")
    mapped = measure("memmap", tmp_path / "big.corpus")
    print(f"\ncorpus of {1560} images 128x128 float32 = {cube_mib:.1f} MiB")
    for m in (mem, lazy, mapped):
        print(f"  {m['mode']:>9}: peak RSS {m['peak_mib']:.1f} MiB (after imports {m['baseline_mib']:.1f} MiB, "
              f"+{m['peak_mib'] - m['baseline_mib']:.1f} MiB)")
    assert mem["n"] == lazy["n"] == mapped["n"] == 1560
    assert mem["sum"] == pytest.approx(lazy["sum"], rel=1e-12) and lazy["sum"] == pytest.approx(mapped["sum"], rel=1e-12)
    assert mem["peak_mib"] - mem["baseline_mib"] > 0.9 * cube_mib  # the whole cube in memory
    assert lazy["peak_mib"] - lazy["baseline_mib"] < 0.35 * cube_mib  # one batch of 256 images: 16 MiB
