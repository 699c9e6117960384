"""Time to make SICON training patches of 32×32 SP pixels (issue 4, item 8).

Usage::

    .venv/bin/python benchmarks/bench_trainset.py [--patches 4] [--threads 2] [--kernels torch,fused]

Times :func:`helioforge.inversion.dataset.make_patch` (atmosphere map → hydrostatic
equilibrium → LTE synthesis → PSF, rebin, SP spectral profile → 49 targets) for two geometries,
for each synthesis kernel (:func:`helioforge.inversion.forward.kernel_functions`: ``torch``
the old one, ``fused`` the compiled kernel with warm-started hydrostatic equilibrium; the
same patches, interleaved), splits the time into hydrostatic equilibrium, synthesis and the
rest, and extrapolates to 1,000 patches:

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
from helioforge.inversion.forward import StokesChain, kernel_functions


class _Timed:
    """Wrap a function and add its wall time to a counter (picklable enough for one process)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t0


def _time_profile(name: str, patches: int, kernels: list[str]) -> dict[str, dict[str, float]]:
    prof = get_trainset_profile(name)
    prof = replace(prof, trainset=replace(prof.trainset, patch_size=32))
    models = load_model_set(prof.atmosphere.models, prof.grid)
    setups = {}
    for k in kernels:
        synth, hydro = kernel_functions(k)
        synth, hydro = _Timed(synth), _Timed(hydro)
        chain = StokesChain(synth, mu=prof.trainset.mu, oversampling=prof.trainset.wavelength_oversampling)
        setups[k] = (chain, synth, hydro)
    t0 = time.perf_counter()
    reference = quiet_sun_reference(prof, models, setups[kernels[0]][0])
    t_ref = time.perf_counter() - t0
    for _, synth, hydro in setups.values():
        synth.seconds = hydro.seconds = 0.0
    times = {k: [] for k in kernels}
    for i in range(patches):
        for k in kernels:  # interleaved, the same patch for each kernel
            chain, synth, hydro = setups[k]
            t0 = time.perf_counter()
            make_patch(i, prof, models, chain, reference, hydro)
            times[k].append(time.perf_counter() - t0)
    side = prof.trainset.model_size() + 2 * prof.trainset.margin_px * prof.trainset.rebin()
    out = {}
    for k in kernels:
        chain, synth, hydro = setups[k]
        total = sum(times[k][1:]) if len(times[k]) > 1 else sum(times[k])  # the first patch compiles the kernel
        n = max(len(times[k]) - 1, 1)
        first = times[k][0]
        per = total / n
        share = sum(times[k])
        out[k] = dict(per_patch=per, first=first, columns=side * side, reference=t_ref, n_wav=len(chain.wavelengths),
                      n_depth=len(prof.grid.log_tau()), per_1000_h=per * 1000 / 3600,
                      synth_share=synth.seconds / share, hydro_share=hydro.seconds / share)
    return out


def main(argv: list[str] | None = None) -> str:
    """Run the timing and print a markdown table (also returned)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=4, help="patches timed per geometry and kernel (cpu); "
                    "the paper geometry times max(2, patches // 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--kernels", default="torch,fused", help="comma-separated synthesis kernels")
    ap.add_argument("--geometries", default="cpu,paper")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    kernels = args.kernels.split(",")
    rows = {}
    for g in args.geometries.split(","):
        rows[g] = _time_profile(g, args.patches if g == "cpu" else max(2, args.patches // 2), kernels)
    md = [f"Training patches of 32×32 SP pixels on this CPU ({platform.machine()}, torch threads = {args.threads}, "
          "float32 synthesis; the first patch of each kernel, which compiles or loads it, is left out):\n",
          "| geometry | kernel | columns / patch | depth × λ | s / patch | hydrostatic | synthesis | other | "
          "1,000 patches | columns / s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for name, per_kernel in rows.items():
        for k, r in per_kernel.items():
            other = 1 - r["synth_share"] - r["hydro_share"]
            md.append(f"| {name} | {k} | {r['columns']} | {r['n_depth']} × {r['n_wav']} | {r['per_patch']:.2f} | "
                      f"{r['hydro_share']:.0%} | {r['synth_share']:.0%} | {other:.0%} | {r['per_1000_h']:.2f} h | "
                      f"{r['columns'] / r['per_patch']:.0f} |")
        if len(per_kernel) > 1 and "torch" in per_kernel:
            for k, r in per_kernel.items():
                if k != "torch":
                    md.append(f"| {name} | {k} / torch | | | **{per_kernel['torch']['per_patch'] / r['per_patch']:.1f}× faster** "
                              "| | | | | |")
    first = next(iter(rows.values()))
    md.append(f"\n(Quiet-Sun reference map, made once per set: {next(iter(first.values()))['reference']:.1f} s.)")
    text = "\n".join(md)
    print(text)
    return text


if __name__ == "__main__":
    main()
