"""Search throughput (queries/s): FAISS IndexFlatIP against brute-force NumPy at 10⁵ vectors.

Both return the exact top-k by cosine; the script checks they agree. The NumPy baseline is
a normalised matrix product plus ``argpartition`` per query batch.
Run by hand: ``.venv/bin/python benchmarks/bench_search.py``; results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from astropy.table import Table
from threadpoolctl import threadpool_limits

from helioforge.interrogate.retrieval import RetrievalIndex


def brute_force(base_n: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ base_n.T
    part = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
    rows = np.take_along_axis(part, order, 1)
    return np.take_along_axis(sims, rows, 1), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)  # NumPy's BLAS gets the same number of threads
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
