"""Time to invert a 512×512 Hinode SP map: SICON networks against Milne-Eddington least squares.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_inversion.py [--size 512] [--me-pixels 2000] [--threads 2]

Issue 5, item 6. The networks are built at the paper's width (32: 3.31 M and 0.99 M
parameters) with their initial weights (the time does not depend on the weights) and run on a
synthetic map of the requested size through :class:`helioforge.inversion.training.SiconInverter`'s
preprocessing, padding and tiling (``invert``), best of ``--repeat`` runs. The ME inversion
(:func:`helioforge.inversion.me_inversion.invert_me`, 30 iterations at most, with and without
the SP spectral profile) is timed on ``--me-pixels`` pixels of ME profiles with 1e-3 noise and
**extrapolated** to the whole map (it scales linearly with the number of pixels).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from helioforge.data.hinode import hinode_wavelengths
from helioforge.inversion.training import (SiconInverter, SiconModelConfig, TargetScaler, build_network)
from helioforge.physics.atomic import fe_lines
from helioforge.physics.me import MEParameters, synth_me


def _me_profiles(n: int, wav: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = MEParameters.create(B=rng.uniform(0, 2500, n), inclination=rng.uniform(0, 180, n), azimuth=rng.uniform(0, 180, n),
                            v_los=rng.uniform(-2, 2, n), eta0=rng.uniform(3, 20, n), doppler_width=rng.uniform(0.02, 0.04, n),
                            damping=rng.uniform(0.05, 0.5, n), S0=np.full(n, 0.3), S1=np.full(n, 0.7), dtype=torch.float32)
    s = synth_me(p, torch.as_tensor(wav), fe_lines()).numpy()
    return s + rng.normal(0, 1e-3, s.shape).astype(np.float32)


def _inverter(network: str, width: int) -> SiconInverter:
    model = SiconModelConfig(network=network, width=width)
    net = build_network(model)
    n = 49
    scaler = TargetScaler(np.zeros(n), np.ones(n))
    cfg = {"network": network, "model": vars(model), "scaler": scaler.to_dict(),
           "targets": {"names": [f"t{i}" for i in range(n)], "units": {}, "log_tau": [0, -0.5, -1, -1.5, -2, -2.5, -3]},
           "stokes": {"n_wavelengths": 112}}
    return SiconInverter(net, cfg, device="cpu")


def main(argv: list[str] | None = None) -> str:
    """Run the timings; print and return a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--me-pixels", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--width", type=int, default=32)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    wav = hinode_wavelengths()
    rng = np.random.default_rng(1)
    prof = _me_profiles(256, wav)
    idx = rng.integers(0, 256, (args.size, args.size))
    stokes = np.moveaxis(prof[idx], (2, 3), (0, 1)).copy()  # (4, 112, H, W)
    rows = {}
    for network in ("encdec", "concat"):
        inv = _inverter(network, args.width)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            inv.invert(stokes)
            best = min(best, time.perf_counter() - t0)
        rows[network] = best
    from helioforge.inversion.me_inversion import invert_me

    me = {}
    pix = _me_profiles(args.me_pixels, wav, seed=2)
    for label, sp in (("ME least squares, SP profile", "hinode"), ("ME least squares, no instrument", None)):
        r = invert_me(pix, wav, spectral_profile=sp)
        me[label] = r.time_s / args.me_pixels * args.size ** 2
    n_pix = args.size ** 2
    md = [f"Inverting a {args.size}×{args.size} map on this CPU ({platform.machine()}, torch threads = {args.threads}):\n",
          "| method | time | pixels/s | ME (SP profile) time / this |", "|---|---|---|---|"]
    ref = me["ME least squares, SP profile"]
    for net, t in rows.items():
        md.append(f"| SICON {net} (width {args.width}) | {t:.1f} s | {n_pix / t:,.0f} | **{ref / t:,.0f}×** |")
    for label, t in me.items():
        md.append(f"| {label} (extrapolated from {args.me_pixels} pixels) | {t / 60:.1f} min | {n_pix / t:,.0f} | "
                  f"{ref / t:.2g}× |")
    text = "\n".join(md)
    print(text)
    return text


if __name__ == "__main__":
    main()
