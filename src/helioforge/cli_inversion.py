"""``helioforge inversion ...``: Stokes synthesis and SICON training sets (Asensio Ramos & Díaz Baso 2019).

    helioforge inversion synth MODEL.mod -o stokes.fits   LTE Stokes profiles of a SIR model (Hinode SP)
    helioforge inversion make-trainset -o DIR             synthetic (Stokes, atmosphere) training patches
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from helioforge.cli_common import _fail, console, out

inversion_app = typer.Typer(help="Stokes synthesis (Fe I 6301/6302) and SICON training sets.", no_args_is_help=True)


class Instrument(str, Enum):
    """Instrument degradation of synthetic profiles."""

    hinode = "hinode"
    none = "none"


class Normalise(str, Enum):
    """Continuum the profiles are divided by."""

    quiet_sun = "quiet-sun"
    model = "model"
    none = "none"


class OutFormat(str, Enum):
    """Output file format."""

    fits = "fits"
    txt = "txt"


@inversion_app.command("synth")
def synth(
    model: Path = typer.Argument(..., help="SIR-format model atmosphere (.mod), or a name such as hsra11, umbra, penumbra."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file (FITS (4, 112) or text table)."),
    mu: float = typer.Option(1.0, "--mu", help="Cosine of the heliocentric angle, (0, 1]."),
    instrument: Instrument = typer.Option(Instrument.hinode, "--instrument", help="hinode: SP spectral profile onto the 112-point grid; none: no convolution."),
    normalise: Normalise = typer.Option(Normalise.quiet_sun, "--normalise", help="Divide by the HSRA continuum at μ (quiet-sun), the model's own continuum, or nothing."),
    fmt: OutFormat = typer.Option(OutFormat.fits, "--format", help="fits or txt."),
) -> None:
    """LTE Stokes I, Q, U, V of Fe I 6301.5/6302.5 Å for one SIR model atmosphere."""
    from helioforge.data.sir import SIRReadError, model_path
    from helioforge.inversion.synthesis import synthesize_model, write_stokes

    path = model if model.is_file() else None
    if path is None:
        try:
            path = model_path(str(model))
        except (FileNotFoundError, KeyError, ValueError) as e:
            _fail(f"{model}: no such model file or known model name ({e})")
    try:
        result = synthesize_model(path, mu=mu, instrument=instrument.value, normalise=normalise.value)
    except (SIRReadError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    write_stokes(output, result, fmt=fmt.value)
    s = result.stokes
    out.print(f"wrote {output}: Stokes (4, {s.shape[1]}) in {result.unit}; I range {s[0].min():.3f}–{s[0].max():.3f}, "
              f"max |Q|,|U|,|V| = {abs(s[1]).max():.2e}, {abs(s[2]).max():.2e}, {abs(s[3]).max():.2e}")


@inversion_app.command("make-trainset")
def make_trainset_cmd(
    output: Path = typer.Option(Path("runs/inversion/trainset"), "--output", "-o", help="Training-set folder (shards + manifest.json)."),
    profile: str = typer.Option("cpu", "--profile", "-p", help="Profile: cpu, paper or tiny."),
    patches: Optional[int] = typer.Option(None, "--patches", help="Number of patches (default: the profile's)."),
    size: Optional[int] = typer.Option(None, "--size", help="Patch side in 0.16″ pixels (default: the profile's, 32)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: the profile's)."),
    device: str = typer.Option("cpu", "--device", help="Where the synthesis runs: cpu or cuda."),
    ranges: bool = typer.Option(True, "--ranges/--no-ranges", help="Write target_ranges.csv/json against SICON's normalisation."),
) -> None:
    """Synthetic (Stokes map, 49 target maps) patches in zarr shards with a manifest (paper §2)."""
    from dataclasses import replace

    from helioforge.data.sir import SIRReadError
    from helioforge.inversion.config import get_trainset_profile
    from helioforge.inversion.trainset import TrainsetError, make_trainset, target_ranges

    try:
        prof = get_trainset_profile(profile)
    except ValueError as e:
        _fail(str(e))
    ts = prof.trainset
    changes = {k: v for k, v in {"n_patches": patches, "patch_size": size, "seed": seed}.items() if v is not None}
    if changes:
        prof = replace(prof, trainset=replace(ts, **changes))
    try:
        manifest = make_trainset(output, prof, device=device, progress=True)
    except (TrainsetError, SIRReadError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    n = sum(s.get("n", 0) for s in manifest.get("shards", []))
    out.print(f"wrote {n} patches in {len(manifest.get('shards', []))} shards under {output} "
              f"({'complete' if manifest.get('complete') else 'incomplete'})")
    if ranges:
        table = target_ranges(output)
        outside = table[~table["inside_sicon"].astype(bool)] if "inside_sicon" in table else table.iloc[0:0]
        console.print(f"target ranges → {output / 'target_ranges.csv'}; {len(outside)} of {len(table)} targets "
                      f"reach outside SICON's training range")
