"""GAN generation throughput (images/s) for the cpu (N=64) and paper (N=128) generator sizes.

Baseline: the same generator called one latent vector at a time (what a per-query loop does),
against ``generate`` with its default batching and with batches of 256.
Run by hand: ``.venv/bin/python benchmarks/bench_generate.py``; results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from helioforge.interrogate.config import get_profile
from helioforge.interrogate.gan import generate
from helioforge.nn.gan import Generator


def _rate(fn, n: int, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| profile | N | generate, default batch (img/s) | batch 256 (img/s) | one at a time (img/s) | default / one at a time |")
    print("|---|---|---|---|---|---|")
    for name in ("cpu", "paper"):
        prof = get_profile(name)
        gen = Generator(prof.gan.latent_dim, prof.data.image_size, prof.gan.base_channels).eval()
        z = np.random.default_rng(0).standard_normal((args.n, prof.gan.latent_dim)).astype(np.float32)
        default = _rate(lambda: generate(gen, z), args.n)
        big = _rate(lambda: generate(gen, z, batch_size=256), args.n)
        n1 = min(args.n, 200)
        single = _rate(lambda: [generate(gen, z[i : i + 1]) for i in range(n1)], n1)
        print(f"| {name} | {prof.data.image_size} | {default:.0f} | {big:.0f} | {single:.0f} | {default / single:.2f}× |")


if __name__ == "__main__":
    main()
