"""Benchmark: batched torch :func:`compute_params` against a Python loop of the NumPy/SciPy
:func:`reference_params` on the same realistic smooth bipolar fields.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_params.py --n 2000 --size 128
    PYTHONPATH=src .venv/bin/python benchmarks/bench_params.py --n 1000 --size 64 --markdown docs/benchmarks.md

The fields imitate the paper's preprocessed images (B / 1000 G in [-1, 1]): 1–3 bipoles of
Gaussian spots with random tilt, separation, size and strength, plus smoothed background
noise, clipped to [-1, 1]. Both implementations must agree (rtol 1e-6, NaN-equal) before
timings are reported; each timing is the best of ``--repeat`` runs. Threads are pinned with ``torch.set_num_threads(2)``.
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
from helioforge.physics.params import PARAM_NAMES, compute_params, reference_params


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


def run_torch(images: torch.Tensor, k: int, batch: int) -> dict[str, np.ndarray]:
    """compute_params over ``images`` (n, 1, N, N) in chunks of ``batch``; (n,) arrays per name."""
    parts: dict[str, list[np.ndarray]] = {key: [] for key in PARAM_NAMES}
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            res = compute_params(images[start : start + batch], threshold=0.15, dilation_px=k)
            for key in PARAM_NAMES:
                parts[key].append(res[key].cpu().numpy())
    return {key: np.concatenate(v) for key, v in parts.items()}


def run_reference(images: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Python loop of reference_params over ``images`` (n, 1, N, N); (n,) arrays per name."""
    rows = [reference_params(images[i, 0], threshold=0.15, dilation_px=k) for i in range(images.shape[0])]
    return {key: np.array([r[key] for r in rows]) for key in PARAM_NAMES}


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; print timings and a markdown row (returned). Raises AssertionError
    when the two implementations disagree (rtol 1e-6, NaN-equal)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="number of images")
    ap.add_argument("--size", type=int, default=128, help="image side N")
    ap.add_argument("--batch", type=int, default=1000, help="torch batch size")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeat", type=int, default=3, help="timing: best of this many runs (both implementations)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", type=Path, default=None, help="append the table row to this file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    k = ParamConfig().dilation_px(args.size)
    fields = make_fields(args.n, args.size, args.seed)
    images = torch.from_numpy(fields)

    run_torch(images[: min(args.batch, args.n)], k, args.batch)  # warm-up
    t_torch = float("inf")
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        fast = run_torch(images, k, args.batch)
        t_torch = min(t_torch, time.perf_counter() - t0)

    t_ref = float("inf")
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        slow = run_reference(fields, k)
        t_ref = min(t_ref, time.perf_counter() - t0)

    for key in PARAM_NAMES:
        np.testing.assert_allclose(fast[key], slow[key], rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=key)
    n_nan = int(np.isnan(fast["PSEP"]).sum())

    ips_torch = args.n / t_torch
    ips_ref = args.n / t_ref
    print(f"images: {args.n} x {args.size}x{args.size}, kernel {k}, torch threads {args.threads}, "
          f"batch {args.batch}; unipolar (PSEP NaN): {n_nan}")
    print(f"torch compute_params (batched): {t_torch:8.3f} s  {ips_torch:10.1f} images/s")
    print(f"reference_params (numpy loop):  {t_ref:8.3f} s  {ips_ref:10.1f} images/s")
    print(f"speed-up: {ips_torch / ips_ref:.1f}x   (values agree, rtol 1e-6)")
    header = "| N | images | kernel | threads | torch batched (img/s) | numpy/scipy loop (img/s) | speed-up | CPU |"
    row = (f"| {args.size} | {args.n} | {k} | {args.threads} | {ips_torch:.0f} | {ips_ref:.0f} | "
           f"{ips_torch / ips_ref:.1f}x | {platform.processor() or platform.machine()} |")
    print()
    print(header)
    print("|" + "---|" * 8)
    print(row)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        new = not args.markdown.exists() or args.markdown.stat().st_size == 0
        with args.markdown.open("a") as fh:
            if new:
                fh.write(header + "\n" + "|" + "---|" * 8 + "\n")
            fh.write(row + "\n")
    return row


if __name__ == "__main__":
    main()
