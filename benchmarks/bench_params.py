"""Benchmark: :func:`compute_params` (fused CPU kernel) against the former batched torch path
and a Python loop of the NumPy/SciPy :func:`reference_params`, on the same realistic smooth
bipolar fields, with this machine's memory bandwidth measured in the same run.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_params.py --n 1000 --sizes 64 128
    PYTHONPATH=src .venv/bin/python benchmarks/bench_params.py --n 1000 --sizes 64 128 --markdown out.md
    PYTHONPATH=src .venv/bin/python benchmarks/bench_params.py --threads 1   # like-for-like with the loop

The fields imitate the paper's preprocessed images (B / 1000 G in [-1, 1]): 1–3 bipoles of
Gaussian spots with random tilt, separation, size and strength, plus smoothed background
noise, clipped to [-1, 1]. All three implementations must agree (rtol 1e-6, NaN-equal) before
timings are reported; each timing is the best of ``--repeat`` runs, the three implementations
interleaved within each repeat (so that load from other jobs hits all of them alike). Threads
are pinned with ``torch.set_num_threads``.

Memory-bound limit: a pass over the batch has to read every pixel once (H·W·4 bytes per
float32 image); the read bandwidth is measured as the best of a few ``torch.sum`` and ``torch.amax`` over a
float32 tensor of ``--bw-mb`` MB (and a copy, ``torch.add(.., out=..)``, for reference), with
the same threads. limit (images/s) = read bandwidth / (H·W·4); the table reports the fraction
of that limit the new path reaches.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from helioforge.interrogate.config import ParamConfig
from helioforge.physics.params import PARAM_NAMES, _compute_params_torch, compute_params, reference_params


def make_fields(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random bipolar fields, shape ``(n, 1, size, size)``, float32, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        img = np.zeros((size, size))
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0.25, 0.75, 2) * size
            sep = rng.uniform(0.05, 0.35) * size
            ang = np.deg2rad(rng.normal(0, 20) + (180 if rng.random() < 0.5 else 0))
            width = rng.uniform(0.03, 0.1) * size
            amp = rng.uniform(0.3, 2.0)
            for sgn in (1.0, -1.0):
                x0 = cx + sgn * 0.5 * sep * np.cos(ang)
                y0 = cy + sgn * 0.5 * sep * np.sin(ang)
                a = amp * rng.uniform(0.7, 1.3)
                img += sgn * a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * width**2))
        img += 0.05 * ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5) / 0.19
        out[i, 0] = np.clip(img, -1.0, 1.0)
    return out


def _collect(fn, images: torch.Tensor, k: int, batch: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {key: [] for key in PARAM_NAMES}
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            res = fn(images[start : start + batch], threshold=0.15, dilation_px=k)
            for key in PARAM_NAMES:
                parts[key].append(res[key].cpu().numpy())
    return {key: np.concatenate(v) for key, v in parts.items()}


def run_torch(images: torch.Tensor, k: int, batch: int) -> dict[str, np.ndarray]:
    """compute_params (the new path) over ``images`` (n, 1, N, N) in chunks of ``batch``."""
    return _collect(compute_params, images, k, batch)


def run_old(images: torch.Tensor, k: int, batch: int) -> dict[str, np.ndarray]:
    """The former batched torch path (element-wise torch, shifted-OR dilation), same chunks."""
    return _collect(_compute_params_torch, images, k, batch)


def run_reference(images: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Python loop of reference_params over ``images`` (n, 1, N, N); (n,) arrays per name."""
    rows = [reference_params(images[i, 0], threshold=0.15, dilation_px=k) for i in range(images.shape[0])]
    return {key: np.array([r[key] for r in rows]) for key in PARAM_NAMES}


def memory_bandwidth(mb: int = 512, repeat: int = 5) -> tuple[float, float]:
    """(read GB/s, copy GB/s) of this machine with the current torch threads: best of
    ``repeat`` ``torch.sum`` and ``torch.amax`` over a float32 tensor of ``mb`` MB (bytes read
    / time; the faster of the two, as the lighter reduction is closer to pure streaming) and
    ``torch.add(a, 0, out=b)`` (bytes read + written / time)."""
    n = mb * 2**20 // 4
    a = torch.ones(n, dtype=torch.float32)
    b = torch.empty_like(a)
    t_read = t_copy = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a.sum()
        t_read = min(t_read, time.perf_counter() - t0)
        t0 = time.perf_counter()
        a.amax()
        t_read = min(t_read, time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.add(a, 0, out=b)
        t_copy = min(t_copy, time.perf_counter() - t0)
    return 4 * n / t_read / 1e9, 8 * n / t_copy / 1e9


def bench_size(size: int, n: int, batch: int, repeat: int, seed: int, read_gbs: float) -> dict:
    """Time the three paths at one image side (interleaved, best of ``repeat``); check equality."""
    k = ParamConfig().dilation_px(size)
    fields = make_fields(n, size, seed)
    images = torch.from_numpy(fields)
    runs = {
        "new": lambda: run_torch(images, k, batch),
        "old": lambda: run_old(images, k, batch),
        "loop": lambda: run_reference(fields, k),
    }
    run_torch(images[:16], k, batch)  # warm-up (compiles the kernel on first use)
    run_old(images[:16], k, batch)
    best = {name: float("inf") for name in runs}
    res = {}
    for _ in range(max(1, repeat)):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            res[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    for name in ("new", "old"):
        for key in PARAM_NAMES:
            np.testing.assert_allclose(res[name][key], res["loop"][key], rtol=1e-6, atol=1e-9, equal_nan=True,
                                       err_msg=f"{name} {key}")
    ips = {name: n / t for name, t in best.items()}
    bytes_per_image = size * size * fields.itemsize
    limit = read_gbs * 1e9 / bytes_per_image
    return dict(size=size, n=n, k=k, ips=ips, limit=limit, bytes_per_image=bytes_per_image,
                n_nan=int(np.isnan(res["new"]["PSEP"]).sum()))


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; print timings and a markdown table (returned). Raises AssertionError
    when the implementations disagree (rtol 1e-6, NaN-equal)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of images per size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image sides N")
    ap.add_argument("--size", type=int, default=None, help="one image side (overrides --sizes)")
    ap.add_argument("--batch", type=int, default=1000, help="batch size of both torch paths")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeat", type=int, default=3, help="timing: best of this many interleaved runs")
    ap.add_argument("--bw-mb", type=int, default=512, help="size of the bandwidth probe, MB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    sizes = [args.size] if args.size is not None else args.sizes
    read_gbs, copy_gbs = memory_bandwidth(args.bw_mb)
    results = [bench_size(s, args.n, args.batch, args.repeat, args.seed, read_gbs) for s in sizes]
    read_gbs2, copy_gbs2 = memory_bandwidth(args.bw_mb)  # again after, under the same load
    read_gbs, copy_gbs = max(read_gbs, read_gbs2), max(copy_gbs, copy_gbs2)

    cpu = platform.processor() or platform.machine()
    print(f"torch threads {args.threads}, batch {args.batch}, {args.n} images per size, best of {args.repeat} "
          f"interleaved; CPU {cpu}")
    print(f"memory bandwidth (this run): read {read_gbs:.1f} GB/s (torch.sum / amax), copy {copy_gbs:.1f} GB/s "
          f"(read + write, torch.add)")
    header = ("| N | kernel | loop (img/s) | old batched (img/s) | new (img/s) | old / loop | new / loop | "
              "new / old | memory-bound limit (img/s) | new / limit |")
    lines = [header, "|" + "---|" * 10]
    for r in results:
        ips, lim = r["ips"], r["limit"]
        lines.append(
            f"| {r['size']} | {r['k']} | {ips['loop']:,.0f} | {ips['old']:,.0f} | {ips['new']:,.0f} | "
            f"{ips['old'] / ips['loop']:.1f}x | **{ips['new'] / ips['loop']:.1f}x** | {ips['new'] / ips['old']:.1f}x | "
            f"{lim:,.0f} | {ips['new'] / lim:.0%} |")
        print(f"N={r['size']}: new path reads {ips['new'] * r['bytes_per_image'] / 1e9:.2f} GB/s of images "
              f"({r['bytes_per_image']} B each); unipolar (PSEP NaN): {r['n_nan']}")
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\nread bandwidth {read_gbs:.1f} GB/s, copy {copy_gbs:.1f} GB/s; values agree (rtol 1e-6)")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        with args.markdown.open("a") as fh:
            fh.write(table + f"\n\nread bandwidth {read_gbs:.1f} GB/s, copy {copy_gbs:.1f} GB/s\n")
    return table


if __name__ == "__main__":
    main()
