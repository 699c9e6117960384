"""Time to make SICON training patches of 32×32 SP pixels (issue 4, item 8).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_trainset.py [--patches 4] [--threads 2]

Times :func:`helioforge.inversion.dataset.make_patch` (atmosphere map → hydrostatic
equilibrium → LTE synthesis → PSF, rebin, SP spectral profile → 49 targets) for two geometries
and extrapolates to 1,000 patches:

- ``cpu`` geometry: atmospheres built directly at the 0.16″ SP pixel, no margin
  (1,024 columns per 32×32 patch);
- ``paper`` geometry: atmospheres at 0.08″ with a 4-pixel margin, PSF, 2×2 rebin
  (6,400 columns per patch).

The time to write shards is not included (zarr writes ≈ 2 MB per patch, well under a second).
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace

import torch

from helioforge.inversion.atmospheres import load_model_set
from helioforge.inversion.config import get_trainset_profile
from helioforge.inversion.dataset import make_patch, quiet_sun_reference
from helioforge.inversion.forward import StokesChain


def _time_profile(name: str, patches: int) -> dict[str, float]:
    prof = get_trainset_profile(name)
    prof = replace(prof, trainset=replace(prof.trainset, patch_size=32))
    models = load_model_set(prof.atmosphere.models, prof.grid)
    chain = StokesChain(mu=prof.trainset.mu, oversampling=prof.trainset.wavelength_oversampling)
    t0 = time.perf_counter()
    reference = quiet_sun_reference(prof, models, chain)
    t_ref = time.perf_counter() - t0
    times = []
    for i in range(patches):
        t0 = time.perf_counter()
        make_patch(i, prof, models, chain, reference)
        times.append(time.perf_counter() - t0)
    side = prof.trainset.model_size() + 2 * prof.trainset.margin_px * prof.trainset.rebin()
    per = sum(times) / len(times)
    return dict(per_patch=per, columns=side * side, reference=t_ref, n_wav=len(chain.wavelengths),
                n_depth=len(prof.grid.log_tau()), per_1000_h=per * 1000 / 3600)


def main(argv: list[str] | None = None) -> str:
    """Run the timing and print a markdown table (also returned)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=4, help="patches timed per geometry (cpu); 1 for paper")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = {"cpu": _time_profile("cpu", args.patches), "paper": _time_profile("paper", 1)}
    md = [f"Training patches of 32×32 SP pixels on this CPU ({platform.machine()}, torch threads = {args.threads}, "
          "float32 synthesis):\n",
          "| geometry | columns / patch | depth × λ | s / patch | 1,000 patches | columns / s |",
          "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        md.append(f"| {name} | {r['columns']} | {r['n_depth']} × {r['n_wav']} | {r['per_patch']:.1f} | "
                  f"{r['per_1000_h']:.1f} h | {r['columns'] / r['per_patch']:.0f} |")
    md.append(f"\n(Quiet-Sun reference map, made once per set: {rows['cpu']['reference']:.1f} s.)")
    text = "\n".join(md)
    print(text)
    return text


if __name__ == "__main__":
    main()
