"""``helioforge inversion ...``: Stokes synthesis and SICON training sets (Asensio Ramos & Díaz Baso 2019).

    helioforge inversion synth MODEL.mod -o stokes.fits   LTE Stokes profiles of a SIR model (Hinode SP)
    helioforge inversion make-trainset -o DIR             synthetic (Stokes, atmosphere) training patches
    helioforge inversion train -t DIR -n encdec|concat    train/resume a SICON network
    helioforge inversion validate --valset DIR            MAD/KDE on held-out maps, ME baseline, SPINOR, re-synthesis
    helioforge invert MAP -o atmos.fits                   (top level) invert a Hinode SP map
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from helioforge.cli_common import DATA, _fail, console, deprecated, out, use_data

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
    data: Optional[Path] = DATA,
) -> None:
    """Synthetic (Stokes map, 49 target maps) patches in zarr shards with a manifest (paper §2)."""
    from dataclasses import replace

    use_data(data, announce=True)
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


class Network(str, Enum):
    """SICON architecture (paper §3)."""

    encdec = "encdec"
    concat = "concat"


IWORKDIR = typer.Option(Path("runs/inversion"), "--workdir", "-w", help="Work folder (train_<network>/, report/).")


@inversion_app.command("train")
def train_cmd(
    trainset: Path = typer.Option(Path("runs/inversion/trainset"), "--trainset", "-t", help="Training-set folder (make-trainset)."),
    workdir: Path = IWORKDIR,
    network: Network = typer.Option(Network.encdec, "--network", "-n", help="encdec or concat."),
    profile: str = typer.Option("cpu", "--profile", "-p", help="Training profile: cpu, paper or tiny."),
    accelerator: str = typer.Option("auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu."),
    devices: str = typer.Option("auto", "--devices", help="Number of devices (several GPUs use DDP)."),
) -> None:
    """Train (or resume) a SICON network on a training set; weights → WORKDIR/train_<network>/sicon_<network>."""
    from helioforge.cli_common import _trainer_kw
    from helioforge.inversion.pipeline import training_dir
    from helioforge.inversion.training import train_sicon
    from helioforge.inversion.trainset import TrainsetError

    try:
        stem = train_sicon(trainset, training_dir(workdir, network.value), network=network.value, profile=profile, progress=True,
                           **_trainer_kw(accelerator, devices))
    except (TrainsetError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    out.print(f"weights: {stem}.safetensors (+ .json)")


@inversion_app.command("validate")
def validate_cmd(
    valset: Path = typer.Option(Path("runs/inversion/valset"), "--valset", help="Held-out training-set folder (another seed)."),
    workdir: Path = IWORKDIR,
    sample: Optional[Path] = typer.Option(None, "--map", help="Real SP map to invert (default: the data folder's sample)."),
    spinor: Optional[Path] = typer.Option(None, "--spinor", help="SPINOR inversion of the map (default: the sample's)."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Report folder (default WORKDIR/report)."),
    old_report: Optional[Path] = typer.Option(None, "-o", hidden=True),
    me_pixels: int = typer.Option(1000, "--me-pixels", help="Held-out pixels for the Milne-Eddington baseline."),
    data: Optional[Path] = DATA,
) -> None:
    """Validation report: MAD per quantity and log τ, KDEs, ME baseline, SPINOR, re-synthesis."""
    from helioforge.config import data_root
    from helioforge.inversion.pipeline import run_validation

    use_data(data, announce=True)
    report = deprecated(old_report, "-o (report folder of inversion validate)", "-r/--report", report)
    base = data_root() / "stokes" / "hinode_sp_sample"
    sample = sample or (base / "hinode4d.20130912.sample.fits")
    spinor = spinor or (base / "spinor_inv" if (base / "spinor_inv").is_dir() else None)
    report = report or workdir / "report"
    try:
        metrics = run_validation(workdir, valset, sample if sample.exists() else None, spinor, report,
                                 me_pixels=me_pixels)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    for m, d in metrics["mad_at_log_tau_-1"].items():
        out.print(f"MAD at log τ = −1, {m}: " + ", ".join(f"{q} {v:.3g}" for q, v in d.items()))
    out.print(f"report: {report / 'index.html'}")


def invert_command(
    sp_map: Path = typer.Argument(..., help="Hinode SP level-1 map: a cube FITS or a folder of per-slit FITS files."),
    output: Path = typer.Option(..., "--output", "-o", help="Output FITS cube (quantity, log τ, y, x)."),
    network: Network = typer.Option(Network.encdec, "--network", "-n", help="encdec or concat."),
    workdir: Path = IWORKDIR,
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights stem (default WORKDIR/train_<network>/sicon_<network>)."),
    branch: int = typer.Option(0, "--branch", help="Azimuth solution for Bx, By: 0 (Bx ≥ 0) or 1 (opposite)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
) -> None:
    """Invert a Hinode SP map with a trained SICON network into T, v_z, z, log P, B at 7 log τ."""
    from helioforge.data.hinode import HinodeReadError
    from helioforge.inversion.atmos_cube import write_atmos_cube
    from helioforge.inversion.pipeline import invert_map, weights_stem

    stem = weights or weights_stem(workdir, network.value)
    if not Path(str(stem) + ".safetensors").is_file():
        _fail(f"{stem}.safetensors not found: train first ('helioforge inversion train -n {network.value}') or pass --weights")
    try:
        cube, info = invert_map(sp_map, stem, branch=branch, device=device)
    except (HinodeReadError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    write_atmos_cube(output, cube)
    for s in info["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {s}")
    ny, nx = cube.data.shape[-2:]
    out.print(f"wrote {output}: (7, 7, {ny}, {nx}) + BXYZ (branch {branch}); network {info['seconds_network'] * 1e3:.0f} ms, "
              f"T(log τ=0) {cube.data[0, 0].min():.0f}–{cube.data[0, 0].max():.0f} K")
