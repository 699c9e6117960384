"""Search throughput (queries/s): FAISS IndexFlatIP against brute-force NumPy at 10⁵ vectors.

Both return the exact top-k by cosine; the script checks they agree. The NumPy baseline is
a normalised matrix product plus ``argpartition`` per query batch.
Run by hand: ``.venv/bin/python benchmarks/bench_search.py``; results go to docs/benchmarks.md.

``--ann`` measures the approximate kinds of :class:`RetrievalIndex` (HNSW, IVF-PQ) against the
exact one on clustered synthetic data (a Gaussian mixture: ``--clusters`` unit-variance
centres in d dimensions, isotropic noise of standard deviation ``--sigma`` around each,
queries drawn from the same mixture, all L2-normalised): build time, index bytes
(``faiss.serialize_index``), queries/s batched and single, recall@1 and @5 against exact
top-k, over a sweep of the search-time parameters. ``--real FOLDER`` runs the same on the
vectors of a saved index (the real corpus), queries being its own vectors with a little noise.
Example: ``.venv/bin/python benchmarks/bench_search.py --ann --n 1000000``;
results go to docs/interrogator.md ("Approximate search at archive scale").
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from astropy.table import Table
from threadpoolctl import threadpool_limits

from helioforge.interrogate.retrieval import IndexParams, RetrievalIndex


def brute_force(base_n: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ base_n.T
    part = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
    rows = np.take_along_axis(part, order, 1)
    return np.take_along_axis(sims, rows, 1), rows


def mixture(n: int, dim: int, clusters: int, sigma: float, rng: np.random.Generator, centres=None):
    """n points of a Gaussian mixture (float32, L2-normalised) and its centres."""
    if centres is None:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 200_000):  # in chunks, to bound the float64 temporaries
        e = min(n, s + 200_000)
        x[s:e] = centres[rng.integers(0, len(centres), e - s)] + sigma * rng.standard_normal((e - s, dim)).astype(np.float32)
    faiss.normalize_L2(x)
    return x, centres


def timed_search(idx: RetrievalIndex, q: np.ndarray, k: int, n_single: int, reps: int = 3) -> tuple[float, float, np.ndarray]:
    """Batched queries/s (best of ``reps``), single-query queries/s and the batched rows."""
    idx.search(q[:10], k)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        _, rows = idx.search(q, k)
        best = min(best, time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n_single):
        idx.search(q[i : i + 1], k)
    single = n_single / (time.perf_counter() - t)
    return len(q) / best, single, rows


def recall(rows: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """recall@1 (top-1 equals the exact top-1) and recall@5 (|top-5 ∩ exact top-5| / 5)."""
    r1 = float(np.mean(rows[:, 0] == truth[:, 0]))
    r5 = float(np.mean([len(set(a[:5]) & set(b[:5])) / 5 for a, b in zip(rows, truth)]))
    return r1, r5


def ann(args) -> None:
    """Sweep of HNSW and IVF-PQ against the exact index (see the module docstring)."""
    rng = np.random.default_rng(0)
    if args.real:
        exact = RetrievalIndex.load(args.real)
        base = exact.index.reconstruct_n(0, len(exact)) if len(exact.shards) == 1 else np.vstack([s.reconstruct_n(0, s.ntotal) for s in exact.shards])
        q = base[rng.integers(0, len(base), args.queries)] + 0.05 * rng.standard_normal((args.queries, base.shape[1])).astype(np.float32)
        faiss.normalize_L2(q)
        label = f"real corpus {args.real}"
    else:
        base, centres = mixture(args.n, args.dim, args.clusters, args.sigma, rng)
        q, _ = mixture(args.queries, args.dim, args.clusters, args.sigma, rng, centres)
        label = f"Gaussian mixture, {args.clusters} clusters, sigma {args.sigma}"
    n, dim = base.shape
    lut = Table({"file": np.full(n, "x"), "HARPNUM": np.zeros(n, int), "T_REC": np.full(n, "t"), "crop": np.full(n, "")})
    k = args.k
    print(f"# {n:,} vectors, d = {dim}, {len(q)} queries, k = {k}, {label}, {args.threads} threads", flush=True)
    print("| kind | build params | search params | build (s) | index MB | batched q/s | single q/s | × exact batched | × exact single | recall@1 | recall@5 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    t = time.perf_counter()
    exact = RetrievalIndex.build(base, lut, IndexParams(kind="flat"))
    tb = time.perf_counter() - t
    eb, es, truth = timed_search(exact, q, k, min(args.single, 50), reps=1 if n > 300_000 else 3)
    mb = faiss.serialize_index(exact.index).nbytes / 2**20
    print(f"| flat | | | {tb:.1f} | {mb:.0f} | {eb:.0f} | {es:.0f} | 1.00 | 1.00 | 1.000 | 1.000 |", flush=True)
    del exact
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind == "hnsw":
            p = IndexParams(kind="hnsw", M=args.M, ef_construction=args.ef_construction)
            sweep = [dict(ef_search=e) for e in (16, 32, 64, 128, 256)]
            bp = f"M={p.M}, efConstruction={p.ef_construction}"
        else:
            p = IndexParams(kind="ivfpq", nlist=args.nlist, m=args.m, nbits=8, refine=args.refine)
            sweep = [dict(nprobe=np_, k_factor=kf) for np_ in (8, 16, 32, 64) for kf in (4, 16)]
            bp = None
        t = time.perf_counter()
        idx = RetrievalIndex.build(base, lut, p)
        tb = time.perf_counter() - t
        if bp is None:
            bp = f"nlist={idx.params.nlist}, m={idx.params.m}, nbits=8, refine={idx.params.refine}"
        mb = faiss.serialize_index(idx.index).nbytes / 2**20
        for sp in sweep:
            idx.set_search_params(**sp)
            qb, qs, rows = timed_search(idx, q, k, args.single)
            r1, r5 = recall(rows, truth)
            sps = ", ".join(f"{a}={b}" for a, b in sp.items())
            print(f"| {kind} | {bp} | {sps} | {tb:.1f} | {mb:.0f} | {qb:.0f} | {qs:.0f} | {qb / eb:.1f} | {qs / es:.1f} | {r1:.3f} | {r5:.3f} |", flush=True)
        del idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ann", action="store_true", help="approximate kinds against exact (see above)")
    ap.add_argument("--real", default=None, help="with --ann: folder of a saved index to take the vectors from")
    ap.add_argument("--kinds", default="hnsw,ivfpq")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--single", type=int, default=200, help="single queries timed")
    ap.add_argument("--M", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--m", type=int, default=None)
    ap.add_argument("--refine", default="sq8")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)  # NumPy's BLAS gets the same number of threads
    if args.ann:
        ann(args)
        return
    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    q = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    lut = Table({"file": np.full(args.n, "x"), "HARPNUM": np.zeros(args.n, int), "T_REC": np.full(args.n, "t"), "crop": np.full(args.n, "")})
    idx = RetrievalIndex.build(base, lut)
    base_n = base / np.linalg.norm(base, axis=1, keepdims=True)

    results = {}
    for name, fn in (("faiss", lambda: idx.search(q, args.k)), ("numpy", lambda: brute_force(base_n, q, args.k))):
        fn()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t)
        results[name] = (args.queries / best, out)
    n1 = min(200, args.queries)
    for name, fn in (("faiss_single", lambda: [idx.search(q[i : i + 1], args.k) for i in range(n1)]),
                     ("numpy_single", lambda: [brute_force(base_n, q[i : i + 1], args.k) for i in range(n1)])):
        fn()
        t = time.perf_counter()
        fn()
        results[name] = (n1 / (time.perf_counter() - t), None)
    agree = np.mean(results["faiss"][1][1] == results["numpy"][1][1])
    np.testing.assert_allclose(results["faiss"][1][0], results["numpy"][1][0], atol=1e-4)
    f, n = results["faiss"][0], results["numpy"][0]
    fs, ns = results["faiss_single"][0], results["numpy_single"][0]
    print("| vectors | dim | k | queries per call | FAISS (queries/s) | NumPy brute force (queries/s) | FAISS / NumPy | same top-k |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.n:,} | {args.dim} | {args.k} | {args.queries} | {f:.0f} | {n:.0f} | {f / n:.2f}× | {agree:.4f} |")
    print(f"| {args.n:,} | {args.dim} | {args.k} | 1 | {fs:.0f} | {ns:.0f} | {fs / ns:.2f}× | |")


if __name__ == "__main__":
    main()
