"""Accuracy and cost of the synthesis grid and SP-profile quadrature of the training sets (issue 13, defect 3).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_synthesis_grid.py [--columns 256] [--repeats 5]
        [--threads 1] [--patch-columns 16] [--no-check-reference]

The training sets synthesise Fe I 6301.5/6302.5 Å on a fine grid
(:func:`helioforge.inversion.forward.synthesis_wavelengths`) and convolve the result with the
SP spectral profile onto the 112-point SP grid
(:func:`helioforge.inversion.instrument.spectral_matrix`). For each scheme (grid × quadrature)
this prints:

- the number of synthesis wavelengths;
- the largest error in I, Q, U and V (units of each atmosphere's own continuum, which is
  stricter than the quiet-Sun continuum of the sets for the dark umbrae) after the SP profile,
  per atmosphere, against a reference synthesised on the uniform ×16 grid (1.34 mÅ, 1,897
  points) with the quintic quadrature. The reference's own convergence is checked against ×32
  (0.67 mÅ), with both the quintic and the trapezoid quadrature;
- the time per profile of synthesis + SP profile (``synth_lte`` in float32, as
  :class:`~helioforge.inversion.forward.StokesChain`, then one matrix product), on a batch of
  ``--columns`` columns of a quiet-Sun training patch: median of ``--repeats`` runs, the
  schemes interleaved in every repeat so that they share the machine's load.

Atmospheres: the SIR models of the training sets (HSRA and FAL-C quiet Sun; Solanki's plage
and network; del Toro Iniesta's penumbra; Maltby's umbrae E and M) with uniform fields up to
4 kG, inclined, and line-of-sight velocities up to ±8 km/s (some with the smallest
microturbulence of the sets, 0.3 km/s), and ``--patch-columns`` columns of each kind of
training patch (quiet, plage, spot; :func:`helioforge.inversion.atmospheres.make_patch_atmosphere`,
``cpu`` profile).
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from dataclasses import replace

import numpy as np
import torch

from helioforge.data.sir import model_path, read_sir
from helioforge.inversion.atmospheres import KINDS, load_model_set, make_patch_atmosphere
from helioforge.inversion.config import get_trainset_profile
from helioforge.inversion.instrument import HinodeSP, spectral_matrix
from helioforge.inversion.forward import synthesis_wavelengths
from helioforge.physics.lte import Atmosphere, synth_lte

#: (label, SIR model, B [G], inclination [deg], azimuth [deg], v_LOS [km/s], v_mic [km/s] or None = the model's)
ATMOSPHERES = (
    ("quiet HSRA, B = 0", "hsra11", 0.0, 0.0, 0.0, 0.0, None),
    ("quiet FAL-C, B = 0", "FALC11", 0.0, 0.0, 0.0, 0.0, None),
    ("quiet HSRA, 200 G 45°, +2 km/s", "hsra11", 200.0, 45.0, 20.0, 2.0, None),
    ("plage, 1.5 kG 30°, −3 km/s", "solanpl11", 1500.0, 30.0, 60.0, -3.0, None),
    ("network, 2 kG 10°, +8 km/s", "solannt11", 2000.0, 10.0, 10.0, 8.0, 0.3),
    ("penumbra, 1.5 kG 80°, +8 km/s", "penumjti11", 1500.0, 80.0, 30.0, 8.0, None),
    ("umbra E, 2.5 kG 45°, +3 km/s", "emaltby11", 2500.0, 45.0, 30.0, 3.0, None),
    ("umbra M, 4 kG 20°, −8 km/s", "mmaltby11", 4000.0, 20.0, 75.0, -8.0, 0.3),
    ("umbra E, 4 kG 60°, +8 km/s", "emaltby11", 4000.0, 60.0, 120.0, 8.0, 0.3),
    ("umbra M, 3 kG 90°", "mmaltby11", 3000.0, 90.0, 0.0, 0.0, 0.3),
)

#: (label, oversampling, quadrature)
SCHEMES = (
    ("old: ×2 uniform, trapezoid", 2, "trapezoid"),
    ("new: ×2 uniform, quintic", 2, "quintic"),
    ("×2 uniform, cubic", 2, "cubic"),
    ("×4 uniform, trapezoid", 4, "trapezoid"),
)
REFERENCE = (16, "quintic")


def _sir_atmosphere(name: str, B: float, inc: float, az: float, v_kms: float, vmic_kms: float | None) -> Atmosphere:
    a = Atmosphere.from_sir(read_sir(model_path(name)))
    full = lambda v: torch.full_like(a.T, v)  # noqa: E731
    a = replace(a, B=full(B), inclination=full(inc), azimuth=full(az), vlos=full(v_kms * 1e5))
    return a if vmic_kms is None else replace(a, vmic=full(vmic_kms * 1e5))


def _patch_columns(kind: str, n: int, side: int = 16, seed: int = 0) -> Atmosphere:
    """``n`` columns (n, n_depth) of a training patch of ``kind`` (for spots, the most umbral/penumbral)."""
    prof = get_trainset_profile("cpu")
    models = load_model_set(prof.atmosphere.models, prof.grid)
    p = make_patch_atmosphere(models, prof.atmosphere, side, 0.16, np.random.default_rng([seed, 7]), kind=kind)
    a = p.atmosphere
    H, W, nd = a.T.shape
    if kind == "spot":
        idx = torch.argsort(-(p.weights["umbra"] + p.weights["penumbra"]).reshape(-1))[:n]
    else:
        idx = torch.randperm(H * W, generator=torch.Generator().manual_seed(seed))[:n]
    cols = {}
    for f in a.__dataclass_fields__:
        v = getattr(a, f)
        cols[f] = None if v is None else (v.reshape(H * W, nd)[idx] if v.ndim == 3 else v)
    return Atmosphere(**cols)


def _synth(atmos: Atmosphere, wav: np.ndarray, dtype=torch.float64) -> np.ndarray:
    a = Atmosphere(**{f: (None if getattr(atmos, f) is None else getattr(atmos, f).to(dtype))
                      for f in atmos.__dataclass_fields__})
    s, ic = synth_lte(a, torch.as_tensor(wav, dtype=torch.float64))
    return (s / ic[..., None, None]).double().numpy()  # (..., 4, nλ), own continuum


def errors(atmospheres: dict[str, Atmosphere], sp: HinodeSP, check_reference: bool = True):
    """Max |error| in I, Q, U, V per scheme and atmosphere (and the reference's convergence).

    Returns ``(err, conv, n_points)``: ``err[scheme][atmosphere]`` (4,) arrays; ``conv`` maps
    ``"quintic"``/``"trapezoid"`` to the largest ×16 − ×32 difference (4,) over the named SIR
    atmospheres (or is empty); ``n_points[scheme]``.
    """
    wav_sp = np.asarray(sp.wavelengths)
    grids = {os_: synthesis_wavelengths(wav_sp, os_) for os_ in {s[1] for s in SCHEMES} | {REFERENCE[0]}}
    mats = {(os_, q): spectral_matrix(grids[os_], wav_sp, sp.profile, quadrature=q)
            for os_, q in {(s[1], s[2]) for s in SCHEMES} | {REFERENCE}}
    err = {s[0]: {} for s in SCHEMES}
    conv: dict[str, np.ndarray] = {}
    for name, atm in atmospheres.items():
        fine = {os_: _synth(atm, g) for os_, g in grids.items()}
        ref = fine[REFERENCE[0]] @ mats[REFERENCE].T
        for label, os_, q in SCHEMES:
            d = np.abs(fine[os_] @ mats[(os_, q)].T - ref)
            err[label][name] = d.reshape(-1, 4, d.shape[-1]).max(axis=(0, 2))
        if check_reference and name in {a[0] for a in ATMOSPHERES}:
            g32 = synthesis_wavelengths(wav_sp, 32)
            s32 = _synth(atm, g32)
            for q in ("quintic", "trapezoid"):
                m16 = mats[(16, q)] if (16, q) in mats else spectral_matrix(grids[16], wav_sp, sp.profile, quadrature=q)
                d = np.abs(fine[16] @ m16.T - s32 @ spectral_matrix(g32, wav_sp, sp.profile, quadrature=q).T)
                conv[q] = np.maximum(conv.get(q, 0.0), d.max(axis=-1))
    return err, conv, {s[0]: grids[s[1]].size for s in SCHEMES}


def timings(atmos: Atmosphere, sp: HinodeSP, repeats: int) -> dict[str, float]:
    """Median seconds per profile of float32 synthesis + SP profile (one matmul) per scheme."""
    wav_sp = np.asarray(sp.wavelengths)
    a32 = Atmosphere(**{f: (None if getattr(atmos, f) is None else getattr(atmos, f).to(torch.float32))
                        for f in atmos.__dataclass_fields__})
    setup = {}
    for label, os_, q in SCHEMES:
        g = synthesis_wavelengths(wav_sp, os_)
        setup[label] = (torch.as_tensor(g, dtype=torch.float64),
                        torch.as_tensor(sp.spectral_matrix(g, q), dtype=torch.float32).T.contiguous())
    times: dict[str, list[float]] = {label: [] for label in setup}
    n = atmos.T.shape[0]
    for _ in range(repeats):
        for label, (g, mt) in setup.items():
            t0 = time.perf_counter()
            s, ic = synth_lte(a32, g)
            out = torch.matmul(s, mt)  # (n, 4, 112)
            assert out.shape[-1] == wav_sp.size
            times[label].append((time.perf_counter() - t0) / n)
    return {label: float(np.median(v)) for label, v in times.items()}


def main(argv: list[str] | None = None) -> str:
    """Run the comparison and print markdown tables (also returned)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--columns", type=int, default=256, help="columns of the timed batch")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--patch-columns", type=int, default=16, help="columns of each kind of training patch checked")
    ap.add_argument("--no-check-reference", action="store_true", help="skip the ×16 vs ×32 check of the reference")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sp = HinodeSP.from_data()
    atmospheres = {a[0]: _sir_atmosphere(*a[1:]) for a in ATMOSPHERES}
    if args.patch_columns > 0:
        for kind in KINDS:
            atmospheres[f"{args.patch_columns} columns of a {kind} patch"] = _patch_columns(kind, args.patch_columns)
    err, conv, npts = errors(atmospheres, sp, check_reference=not args.no_check_reference)
    side = int(math.ceil(math.sqrt(args.columns)))
    batch = _patch_columns("quiet", args.columns, side=side, seed=1)
    t = timings(batch, sp, args.repeats)
    old = SCHEMES[0][0]

    fmt = lambda v: f"{v:.1e}"  # noqa: E731
    md = [f"Synthesis grid and SP-profile quadrature ({platform.machine()}, torch threads = {args.threads}). "
          f"Max |error| after the SP profile, units of I_c, against ×{REFERENCE[0]} uniform with the "
          f"{REFERENCE[1]} quadrature; time per profile = float32 `synth_lte` + one matmul, batch of "
          f"{batch.T.shape[0]} quiet-Sun columns, median of {args.repeats}:\n",
          "| scheme | points | max I | max Q | max U | max V | ms / profile | vs old |",
          "|---|---|---|---|---|---|---|---|"]
    for label, _, _ in SCHEMES:
        worst = np.max(np.stack(list(err[label].values())), axis=0)
        md.append(f"| {label} | {npts[label]} | " + " | ".join(fmt(v) for v in worst)
                  + f" | {1e3 * t[label]:.2f} | {t[label] / t[old]:.2f}× |")
    md += ["", "Per atmosphere, max |error| I / Q / U / V:", "",
           "| atmosphere | " + " | ".join(s[0] for s in SCHEMES) + " |",
           "|---|" + "---|" * len(SCHEMES)]
    for name in atmospheres:
        md.append(f"| {name} | " + " | ".join(" / ".join(fmt(v) for v in err[s[0]][name]) for s in SCHEMES) + " |")
    if conv:
        md += ["", f"Reference convergence (×16 vs ×32, the {len(ATMOSPHERES)} SIR atmospheres), "
               "max |Δ| I / Q / U / V: " + "; ".join(f"{q} " + " / ".join(fmt(v) for v in d) for q, d in conv.items())]
    text = "\n".join(md)
    print(text)
    return text


if __name__ == "__main__":
    main()
