"""Old vs new LTE synthesis kernel vs Lightweaver, side by side in one run (issue 15, item 1).

Usage::

    .venv/bin/python benchmarks/bench_lte_kernel.py [--batch 1024] [--threads 2] [--repeat 3]

What it measures, in one process, interleaved, on the same atmospheres:

1. **Speed** (profiles/s) of Fe I 6301.5/6302.5 Å on the 112-point Hinode SP grid and on the
   238-point synthesis grid of the training sets (SP step / 2), for
   - ``synth_lte(kernel="torch")`` in float32 and float64 (the old kernel; float32 is what the
     training sets used),
   - ``synth_lte(kernel="fused")`` (the new kernel),
   - Lightweaver 0.17 (LTE, one model at a time: the median of ``--lw-runs`` runs after a warm-up),
   each with torch (and numba) threads = 1 and = ``--threads``. The batch is ``--batch``
   copies of the perturbed validation atmospheres on the HSRA grid (55 depth points). Each
   time is the best of ``--repeat`` runs; the kernels are interleaved run by run.
2. **Accuracy** of the new kernel against the old kernel in float64 on the 32 validation
   atmospheres of the Lightweaver comparison (4 models, the same with a 1.5 kG field, 24
   perturbed ones; each normalised by the float64 continuum): RMS and max |Δ| in I_c per
   Stokes parameter, beside the old float32 kernel's.
3. **Where the Faddeeva evaluations fall**: the share of (depth, component, wavelength)
   points in each region of the fused kernel (two-pole, four-pole, Weideman) on those
   atmospheres, for both grids.

Prints Markdown tables for ``docs/benchmarks.md`` and writes them to
``benchmarks/results/lte_kernel.md``; SIR's ≈ 61 profiles/s per core is a quoted figure (no
SIR binary here), not a measurement.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch

from helioforge.config import data_root
from helioforge.data.hinode import hinode_wavelengths
from helioforge.data.sir import read_sir
from helioforge.inversion.forward import synthesis_wavelengths
from helioforge.io import write_text
from helioforge.physics import lte
from helioforge.physics.atomic import fe_lines
from helioforge.physics.lte import Atmosphere, synth_lte
from helioforge.physics.lte_fused import FAR_REGION, MID_REGION
from helioforge.physics.me import LORENTZ_SHIFT

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: validation/
from validation import lightweaver_ref as lwr  # noqa: E402
from benchmarks.validate_lightweaver import UNIFORM_FIELD, time_best, with_field  # noqa: E402

NAMED = ("FALC11", "hsra11", "emaltby11", "penumjti11")
SIR_PER_CORE = 61.0  # profiles/s per core quoted in the issue for SIR2015 on this kind of machine


def _to32(a: Atmosphere) -> Atmosphere:
    return Atmosphere(**{k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in vars(a).items()})


def region_shares(models, wav: torch.Tensor) -> tuple[float, float, float]:
    """Shares of Faddeeva evaluations with |x| ≥ FAR_REGION, between, and < MID_REGION."""
    counts = np.zeros(3)
    lines = fe_lines()
    for m in models:
        q = lte._depth_quantities(Atmosphere.from_sir(m), wav.double(), lines, None)
        for li, line in enumerate(lines):
            off = (wav.double() - line.wavelength_air).numpy()
            dl = q.dlam_D[li].numpy()[:, None]
            v = (off[None, :] - q.shift[li].numpy()[:, None]) / dl
            zpd = (LORENTZ_SHIFT * line.wavelength_air ** 2 * q.B.numpy() / q.dlam_D[li].numpy())[:, None]
            z = line.zeeman
            for s in np.concatenate([z.shift_b, z.shift_p, z.shift_r]):
                ax = np.abs(v - s * zpd)
                counts += [(ax >= FAR_REGION).sum(), ((ax >= MID_REGION) & (ax < FAR_REGION)).sum(),
                           (ax < MID_REGION).sum()]
    return tuple(counts / counts.sum())


def accuracy(models, wav: torch.Tensor) -> dict[str, np.ndarray]:
    """Worst RMS and max |Δ| (I_c) per Stokes parameter over the models, against float64 torch."""
    out = {k: np.zeros(4) for k in ("fused_rms", "fused_max", "torch32_rms", "torch32_max")}
    for m in models:
        a = Atmosphere.from_sir(m)
        ref, ic = synth_lte(a, wav)
        for name, (st, _) in (("fused", synth_lte(a, wav, kernel="fused")), ("torch32", synth_lte(_to32(a), wav))):
            d = (st.double() - ref).numpy() / float(ic)
            out[f"{name}_rms"] = np.maximum(out[f"{name}_rms"], np.sqrt((d ** 2).mean(-1)))
            out[f"{name}_max"] = np.maximum(out[f"{name}_max"], np.abs(d).max(-1))
    return out


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; return the Markdown that was printed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lw-runs", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lte_kernel.md"))
    args = ap.parse_args(argv)

    atm_dir = data_root() / "stokes" / "atmospheres"
    named = [read_sir(atm_dir / f"{s}.mod") for s in NAMED]
    perturbed = lwr.perturbed_atmospheres(named, n=24, seed=4)
    validation = named + [with_field(m, **UNIFORM_FIELD) for m in named] + perturbed
    sp = torch.as_tensor(hinode_wavelengths())
    grid238 = torch.as_tensor(synthesis_wavelengths(hinode_wavelengths(), 2))
    hsra = named[1]
    same = [m for m in perturbed if m.log_tau.size == hsra.log_tau.size and np.allclose(m.log_tau, hsra.log_tau)]
    atm = [Atmosphere.from_sir(m) for m in same]
    stack = Atmosphere.stack((atm * (args.batch // len(atm) + 1))[:args.batch])
    s32 = _to32(stack)

    md = [f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, numba {numba.__version__}; "
          f"batch {args.batch} atmospheres × {stack.T.shape[-1]} depth points; best of {args.repeat}.\n"]
    with torch.no_grad():
        synth_lte(Atmosphere.stack(atm[:2]), sp, kernel="fused")  # compile / load the cached kernel
        lwr.lightweaver_stokes(hsra, sp.numpy())  # warm-up
        lw_times = []
        for k in range(args.lw_runs):
            t0 = time.perf_counter()
            lwr.lightweaver_stokes(same[k % len(same)], sp.numpy())
            lw_times.append(time.perf_counter() - t0)
        lw_rate = 1.0 / float(np.median(lw_times))
        rows = []
        for grid_name, wav in (("SP grid, 112 λ", sp), ("training-set grid, 238 λ", grid238)):
            for threads in sorted({1, args.threads}):
                torch.set_num_threads(threads)
                best = {"torch64": float("inf"), "torch32": float("inf"), "fused": float("inf")}
                for _ in range(args.repeat):  # interleaved
                    best["torch64"] = min(best["torch64"], time_best(lambda: synth_lte(stack, wav), 1))
                    best["torch32"] = min(best["torch32"], time_best(lambda: synth_lte(s32, wav), 1))
                    best["fused"] = min(best["fused"], time_best(lambda: synth_lte(s32, wav, kernel="fused"), 1))
                rate = {k: args.batch / v for k, v in best.items()}
                rows.append((grid_name, threads, rate))
    md.append(f"Lightweaver 0.17 (LTE, SP grid, one model at a time, median of {args.lw_runs}): **{lw_rate:.1f} profiles/s** "
              "(one thread).\n")
    md.append("| grid | threads | old kernel float64 | old kernel float32 | **new kernel** | new / old float32 | "
              "new / Lightweaver | new per core / SIR (61/s per core) |")
    md.append("|---|---|---|---|---|---|---|---|")
    for grid_name, threads, rate in rows:
        lw_cell = f"{rate['fused'] / lw_rate:.0f}×" if grid_name.startswith("SP") else "–"
        md.append(f"| {grid_name} | {threads} | {rate['torch64']:.0f} | {rate['torch32']:.0f} | **{rate['fused']:.0f}** | "
                  f"**{rate['fused'] / rate['torch32']:.1f}×** | {lw_cell} | "
                  f"{rate['fused'] / threads / SIR_PER_CORE:.0f}× |")
    acc = accuracy(validation, sp)
    md.append(f"\nAccuracy against the old kernel in float64 on the {len(validation)} validation atmospheres "
              "(worst case over them, I_c):\n")
    md.append("| kernel | RMS I | RMS Q | RMS U | RMS V | max abs I | max abs Q | max abs U | max abs V |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for name, label in (("fused", "new (fused, float32)"), ("torch32", "old, float32")):
        r, m = acc[f"{name}_rms"], acc[f"{name}_max"]
        md.append(f"| {label} | " + " | ".join(f"{v:.1e}" for v in r) + " | " + " | ".join(f"{v:.1e}" for v in m) + " |")
    md.append(f"\nShare of the Faddeeva evaluations per region on the {len(validation)} validation atmospheres:\n")
    md.append(f"| grid | two-pole (abs x ≥ {FAR_REGION:g}) | four-pole ({MID_REGION:g} ≤ abs x < {FAR_REGION:g}) | Weideman-12 (abs x < {MID_REGION:g}) |")
    md.append("|---|---|---|---|")
    for grid_name, wav in (("SP grid, 112 λ", sp), ("training-set grid, 238 λ", grid238)):
        f, mid, c = region_shares(validation, wav)
        md.append(f"| {grid_name} | {f:.0%} | {mid:.0%} | {c:.0%} |")
    text = "\n".join(md)
    print(text)
    write_text(args.out, text + "\n")
    return text


if __name__ == "__main__":
    main()
