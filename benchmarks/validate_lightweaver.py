"""Validation of :func:`helioforge.physics.lte.synth_lte` against Lightweaver, and speed.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/validate_lightweaver.py
    PYTHONPATH=src .venv/bin/python benchmarks/validate_lightweaver.py --n-perturbed 24 --batch 1024 --threads 2

What it does (issue 4, items 4 and 8):

1. Synthesises Fe I 6301.5/6302.5 Å on the Hinode SP grid (112 air wavelengths) with both codes
   for FAL-C, HSRA, the Maltby umbra (E) and the penumbra model as given (B = 0), the same four
   with a uniform field (1.5 kG, γ = 60°, φ = 30°, "+B" rows) and ``--n-perturbed`` randomly
   perturbed magnetised atmospheres (:func:`~validation.lightweaver_ref.perturbed_atmospheres`,
   seed ``--seed``, the same set as the test); each code's profiles are divided by its own I_c.
2. Writes ``runs/validation/lightweaver.csv`` (one row per model and Stokes parameter: RMS and
   max |Δ|, amplitudes and their ratio, both I_c) and prints a markdown table ready for
   ``docs/lightweaver_validation.md`` (also written to ``runs/validation/lightweaver.md``).
3. Draws ``docs/figures/lightweaver_validation.png``: I, Q, U, V of both codes and their
   difference for the four named models with the uniform field.
4. Times profiles per second: Lightweaver (one model at a time, after a warm-up), ``synth_lte``
   on a batch of ``--batch`` atmospheres, and ``synth_me`` on the same batch size; prints a
   markdown speed table and the LTE / Lightweaver ratio (goal ≥ 10³).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from helioforge.config import data_root
from helioforge.data.hinode import hinode_wavelengths
from helioforge.data.sir import read_sir
from helioforge.io import atomic_path, write_text
from helioforge.physics.atomic import fe_lines
from helioforge.physics.lte import Atmosphere, synth_lte
from helioforge.physics.me import MEParameters, synth_me

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: validation/
from validation import lightweaver_ref as lwr  # noqa: E402

NAMED = {"FAL-C": "FALC11", "HSRA": "hsra11", "Maltby umbra": "emaltby11", "penumbra": "penumjti11"}
UNIFORM_FIELD = dict(B=1500.0, inclination=60.0, azimuth=30.0)


def with_field(model, **values):
    """A copy of a SIR model with the given fields (e.g. ``B``) set to a constant at every depth."""
    n = model.log_tau.size
    return replace(model, **{k: np.full(n, float(v)) for k, v in values.items()})


def _figure(pairs, wav, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ("I/I$_c$", "Q/I$_c$", "U/I$_c$", "V/I$_c$")
    n = len(pairs)
    fig, axes = plt.subplots(2 * n, 4, figsize=(15, 3.1 * n), sharex=True,
                             gridspec_kw=dict(height_ratios=[3, 1.2] * n, hspace=0.08, wspace=0.3))
    for r, p in enumerate(pairs):
        ours, ref = p.ours_norm, p.lw_norm
        for k in range(4):
            ax, axd = axes[2 * r, k], axes[2 * r + 1, k]
            ax.plot(wav, ref[k], color="0.35", lw=2.2, label="Lightweaver")
            ax.plot(wav, ours[k], color="C3", lw=1.0, label="synth_lte")
            axd.plot(wav, ours[k] - ref[k], color="C0", lw=1.0)
            axd.axhline(0, color="0.6", lw=0.5)
            ax.set_ylabel(labels[k] if k else f"{p.name}\n{labels[k]}", fontsize=8)
            axd.set_ylabel("Δ", fontsize=8)
            ax.tick_params(labelsize=7)
            axd.tick_params(labelsize=7)
            rms = float(np.sqrt(np.mean((ours[k] - ref[k]) ** 2)))
            axd.text(0.02, 0.72, f"RMS {rms:.1e}", transform=axd.transAxes, fontsize=7)
        if r == 0:
            axes[0, 1].legend(fontsize=7, loc="upper left")
    for k in range(4):
        axes[-1, k].set_xlabel("air wavelength [Å]", fontsize=8)
    fig.suptitle("Fe I 6301.5/6302.5 Å on the Hinode SP grid: synth_lte (torch, DELO-linear) vs Lightweaver "
                 f"(DELO-Bézier); models with B = {UNIFORM_FIELD['B']:.0f} G, γ = {UNIFORM_FIELD['inclination']:.0f}°, "
                 f"φ = {UNIFORM_FIELD['azimuth']:.0f}°; Δ = ours − Lightweaver", fontsize=9, y=0.995)
    fig.subplots_adjust(top=0.965)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def time_best(fn, repeat: int) -> float:
    """Best wall time [s] of ``repeat`` calls of ``fn()``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _speed(models_same_grid, wav, batch: int, repeat: int, lw_times: list[float]) -> dict[str, float]:
    atm = [Atmosphere.from_sir(m) for m in models_same_grid]
    reps = int(np.ceil(batch / len(atm)))
    stack = Atmosphere.stack((atm * reps)[:batch])
    wav_t = torch.as_tensor(wav)
    stack32 = Atmosphere(**{k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in vars(stack).items()})
    with torch.no_grad():
        synth_lte(Atmosphere.stack(atm[:2]), wav_t)  # warm-up
        t_lte = time_best(lambda: synth_lte(stack, wav_t), repeat)
        t_lte32 = time_best(lambda: synth_lte(stack32, wav_t), repeat)
    rng = np.random.default_rng(0)
    me = MEParameters.create(B=rng.uniform(0, 3000, batch), inclination=rng.uniform(0, 180, batch),
                             azimuth=rng.uniform(0, 180, batch), v_los=rng.uniform(-2, 2, batch),
                             eta0=rng.uniform(2, 20, batch), doppler_width=rng.uniform(0.02, 0.04, batch),
                             damping=rng.uniform(0.05, 0.5, batch), S0=np.full(batch, 0.3), S1=np.full(batch, 0.7))
    lines = fe_lines()
    with torch.no_grad():
        t_me = time_best(lambda: synth_me(me, wav_t, lines), repeat)
    t_lw = float(np.median(lw_times))
    return dict(lw=1.0 / t_lw, lte=batch / t_lte, lte32=batch / t_lte32, me=batch / t_me,
                n_depth=int(stack.T.shape[-1]))


def main(argv: list[str] | None = None) -> str:
    """Run the validation and the timing; return the markdown text that was printed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-perturbed", type=int, default=24, help="number of perturbed magnetised atmospheres")
    ap.add_argument("--seed", type=int, default=4, help="seed of the perturbed set (the test uses 4)")
    ap.add_argument("--batch", type=int, default=1024, help="batch of atmospheres for the synth_lte/synth_me timing")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeat", type=int, default=2, help="timings: best of this many runs")
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/lightweaver_validation.png"))
    ap.add_argument("--csv", type=Path, default=Path("runs/validation/lightweaver.csv"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    atm_dir = data_root() / "stokes" / "atmospheres"
    wav = hinode_wavelengths()
    named = {label: read_sir(atm_dir / f"{stem}.mod") for label, stem in NAMED.items()}
    magnetised = {f"{label} +B": with_field(m, **UNIFORM_FIELD) for label, m in named.items()}
    perturbed = lwr.perturbed_atmospheres(list(named.values()), n=args.n_perturbed, seed=args.seed)

    lwr.lightweaver_stokes(named["HSRA"], wav)  # warm-up (imports, atomic data, wavelength grids)
    models = list(named.values()) + list(magnetised.values()) + perturbed
    names = list(named) + list(magnetised) + [m.name for m in perturbed]
    t0 = time.perf_counter()
    pairs = lwr.paired_profiles(models, names, wav)
    t_pairs = time.perf_counter() - t0
    df = lwr.compare_with_lightweaver(None, None, wav, pairs=pairs)
    with atomic_path(args.csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    _figure([p for p in pairs if p.name in magnetised], wav, args.figure)

    pert = df[df["model"].isin([m.name for m in perturbed])]
    summary = lwr.summarise_comparison(df)
    summary_pert = lwr.summarise_comparison(pert)
    hsra_pb = next(p for p in pairs if p.name == "HSRA")
    speed = _speed([m for m in perturbed if m.log_tau.size == named["HSRA"].log_tau.size
                    and np.allclose(m.log_tau, named["HSRA"].log_tau)] or [named["HSRA"]],
                   wav, args.batch, args.repeat, [p.lw_seconds for p in pairs])

    md = []
    md.append(f"Fe I 6301.5/6302.5 Å, Hinode SP grid ({wav.size} points, {wav[0]:.4f}–{wav[-1]:.4f} Å), μ = 1; "
              "each code normalised by its own continuum I_c. Δ = synth_lte − Lightweaver.\n")
    md.append("Named models (as given: B = 0, so Q = U = V = 0) and with a uniform field "
              f"(+B: {UNIFORM_FIELD['B']:.0f} G, γ = {UNIFORM_FIELD['inclination']:.0f}°, "
              f"φ = {UNIFORM_FIELD['azimuth']:.0f}°):\n")
    md.append(lwr.comparison_markdown(df, models=list(named) + list(magnetised)))
    md.append(f"\nAll {df['model'].nunique()} models (worst case per Stokes parameter; amplitude = line depth for I, "
              "max |X/I_c| for Q, U, V; ratio = ours / Lightweaver):\n")
    md.append("| Stokes | max RMS | mean RMS | max abs Δ | amplitude ratio min | max |")
    md.append("|---|---|---|---|---|---|")
    for s, row in summary.iterrows():
        md.append(f"| {s} | {row.max_rms:.4f} | {row.mean_rms:.4f} | {row.max_abs:.4f} | "
                  f"{row.amp_ratio_min:.3f} | {row.amp_ratio_max:.3f} |")
    md.append(f"\n{len(perturbed)} perturbed magnetised atmospheres alone: max RMS I/I_c = "
              f"{summary_pert.loc['I', 'max_rms']:.4f}, V amplitude ratio "
              f"{summary_pert.loc['V', 'amp_ratio_min']:.3f}–{summary_pert.loc['V', 'amp_ratio_max']:.3f} "
              "(goals: RMS < 0.02, within 5 %).")
    ic_ratio = df.groupby("model")["Ic_ratio"].first()
    md.append(f"Absolute continuum I_c(ours)/I_c(Lightweaver): {ic_ratio.min():.4f}–{ic_ratio.max():.4f}; "
              f"HSRA I_c(6302 Å) = {hsra_pb.lw_Ic:.4e} (Lightweaver), {hsra_pb.ours_Ic:.4e} (synth_lte) "
              "erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹; observed ≈ 4.03e-5 (Neckel & Labs 1984 via Allen 2000 Table 14.13).\n")
    md.append(f"Speed on this CPU ({platform.processor() or platform.machine()}, torch threads = {args.threads}, "
              f"{speed['n_depth']} depth points, {wav.size} wavelengths, both lines):\n")
    md.append("| code | profiles/s (4 Stokes × 112 λ) | relative to Lightweaver |")
    md.append("|---|---|---|")
    md.append(f"| Lightweaver 0.17 (LTE, one model at a time, 1 thread) | {speed['lw']:.1f} | 1 |")
    md.append(f"| synth_lte (torch float64, batch {args.batch}) | {speed['lte']:.0f} | {speed['lte'] / speed['lw']:.0f}× |")
    md.append(f"| synth_lte (torch float32, batch {args.batch}) | {speed['lte32']:.0f} | {speed['lte32'] / speed['lw']:.0f}× |")
    md.append(f"| synth_me (torch, batch {args.batch}) | {speed['me']:.0f} | {speed['me'] / speed['lw']:.0f}× |")
    md.append(f"\n(Lightweaver time per model: median of {len(pairs)} runs after a warm-up, including its "
              f"atmosphere set-up and the continuum formal solution; whole paired run {t_pairs:.1f} s.)")
    text = "\n".join(md)
    print(text)
    write_text(args.csv.with_suffix(".md"), text + "\n")
    return text


if __name__ == "__main__":
    main()
