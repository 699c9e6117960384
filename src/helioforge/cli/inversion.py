"""``helioforge inversion ...``: Stokes synthesis and SICON training sets (Asensio Ramos & Díaz Baso 2019).

    helioforge inversion synth MODEL.mod -o stokes.fits   LTE Stokes profiles of a SIR model (Hinode SP)
    helioforge inversion make-trainset -o DIR             synthetic (Stokes, atmosphere) training patches
        [--scheduler local|tcp://HOST:PORT]               ... its shards as tasks on a Dask cluster
    helioforge inversion train -t DIR -n encdec|concat    train/resume a SICON network
    helioforge inversion validate --valset DIR            MAD/KDE on held-out maps, ME baseline, SPINOR, re-synthesis
    helioforge invert MAP -o atmos.fits                   (top level) invert a Hinode SP map
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import NoReturn, Optional

import numpy as np
import typer
from rich.markup import escape

from helioforge.cli.common import ACCEL, DATA, DEVICES, console, deprecated, fail, out, trainer_kw, use_data
from helioforge.config import data_root
from helioforge.data.sir import model_path
from helioforge.errors import HelioforgeError, InputError, check_finite, check_output

#: What a subcommand turns into one ``error: …`` line (exit status 2): the errors helioforge
#: raises (they name the file or argument) and the built-in ones its readers raise.
_ERRORS = (HelioforgeError, ValueError, FileNotFoundError, OSError)


def _error(exc: BaseException) -> NoReturn:
    """Exit with ``error: <message>`` (status 2); with ``-v`` the traceback comes first."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        console.print(traceback.format_exc(), markup=False, highlight=False)
    fail(escape(str(exc)))
    raise AssertionError("unreachable")  # fail raises typer.Exit

def _check_device(device: str | None) -> None:
    """Refuse a ``--device`` torch cannot use here (one line, not a CUDA traceback)."""
    if device is None or device == "cpu":
        return
    if not (device == "cuda" or device.startswith("cuda:")):
        raise InputError(f"--device must be cpu or cuda (cuda:N), got {device!r}")
    import torch

    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is available here; use --device cpu")


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
    from helioforge.inversion.synthesis import synthesize_model, write_stokes

    path = model if model.is_file() else None
    if path is None:
        try:
            path = model_path(str(model))
        except (FileNotFoundError, KeyError, ValueError) as e:
            fail(f"{model}: no such model file or known model name ({e})")
    try:
        check_output(output, [path])  # before any work: the model file is never overwritten
        if not 0.0 < check_finite("--mu", mu) <= 1.0:
            raise InputError(f"--mu must be in (0, 1], got {mu}")
        result = synthesize_model(path, mu=mu, instrument=instrument.value, normalise=normalise.value)
        write_stokes(output, result, fmt=fmt.value)
    except _ERRORS as e:
        _error(e)
    s = result.stokes
    out.print(f"wrote {output}: Stokes (4, {s.shape[1]}) in {result.unit}; I range {s[0].min():.3f}–{s[0].max():.3f}, "
              f"max |Q|,|U|,|V| = {abs(s[1]).max():.2e}, {abs(s[2]).max():.2e}, {abs(s[3]).max():.2e}")


@inversion_app.command("make-trainset")
def make_trainset_cmd(
    output: Path = typer.Option(Path("runs/inversion/trainset"), "--output", "-o", help="Training-set folder (shards + manifest.json)."),
    profile: str = typer.Option("cpu", "--profile", "-p", help="Profile: cpu, paper or tiny."),
    patches: Optional[int] = typer.Option(None, "--patches", min=1, help="Number of patches (default: the profile's)."),
    size: Optional[int] = typer.Option(None, "--size", min=4, max=256, help="Patch side in 0.16″ pixels, 4–256 (default: the profile's, 32)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Random seed, ≥ 0 (default: the profile's)."),
    device: str = typer.Option("cpu", "--device", help="Where the synthesis runs: cpu or cuda."),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="Synthesis kernel: fused (compiled, CPU; the default) or torch (the element-wise torch code; the default with --device cuda). A set is resumed with the kernel it was started with."),
    ranges: bool = typer.Option(True, "--ranges/--no-ranges", help="Write target_ranges.csv/json against SICON's normalisation."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the shards already in the folder against their checksums and make damaged ones again (--no-verify trusts them)."),
    reference_from: Optional[Path] = typer.Option(None, "--reference-from", help="Training-set folder whose quiet-Sun reference (I_c, z offset) this set uses: make held-out sets with it."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Kinds of map to draw, equally often: a comma list of quiet, plage, spot (default: the profile's fractions). E.g. --kinds plage,spot --size 64 for held-out maps with quiet Sun around a spot or plage."),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", min=1, help="Patches per shard, ≥ 1 (default: the profile's). On a cluster each shard is one task: use at least a few shards per worker."),
    scheduler: str = typer.Option("none", "--scheduler", help="none: serial, in this process (default); local: a Dask LocalCluster of one single-threaded worker process per core (--workers); tcp://HOST:PORT: the scheduler of a running Dask cluster (e.g. dask-jobqueue), whose workers share the output and data folders."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes of --scheduler local, ≥ 1 (default: one per core)."),
    retries: int = typer.Option(2, "--retries", min=0, help="Further attempts of a shard whose task fails on the cluster, ≥ 0."),
    data: Optional[Path] = DATA,
) -> None:
    """Synthetic (Stokes map, 49 target maps) patches in zarr shards with a manifest (paper §2).

    Resumable: complete shards already in the folder are verified and kept, damaged or missing
    ones are made. The folder is locked while the command runs. A held-out set must share the
    training set's quiet-Sun reference (``inversion validate`` refuses one that does not): sets
    that differ only in ``--seed`` share it; otherwise pass ``--reference-from TRAINSET``.

    With ``--scheduler local`` or ``--scheduler tcp://HOST:PORT`` each shard is one task on a
    Dask cluster, bit-identical to the serial one; shards that still fail after ``--retries``
    are named (with their patches and seeds) and the command exits with status 2 after the
    others are made: rerun it to make only the missing shards.
    """
    use_data(data, announce=True)
    from helioforge.inversion.config import get_trainset_profile
    from helioforge.inversion.dataset import make_trainset, target_ranges

    try:
        _check_device(device)
        prof = get_trainset_profile(profile)
        ts = prof.trainset
        if kernel is None and device != "cpu":
            kernel = "torch"  # the fused kernel runs on the CPU only
        changes = {k: v for k, v in {"n_patches": patches, "patch_size": size, "seed": seed,
                                     "shard_size": shard_size, "synthesis_kernel": kernel}.items() if v is not None}
        if changes:
            prof = replace(prof, trainset=replace(ts, **changes))
        if kinds is not None:
            prof = replace(prof, atmosphere=replace(prof.atmosphere, kind_fractions=kind_fractions(kinds)))
        manifest = make_trainset(output, prof, device=device, progress=True, verify_existing=verify,
                                 reference_from=reference_from, scheduler=scheduler, n_workers=workers,
                                 retries=retries)
    except _ERRORS as e:
        _error(e)
    n = sum(s.get("n", 0) for s in manifest.get("shards", []))
    run = (manifest.get("runs") or [{}])[-1]
    where = run.get("scheduler") or {}
    how = (f" on the Dask cluster {where.get('address')} ({where.get('n_workers')} workers)"
           if where.get("address") else "")
    out.print(f"wrote {n} patches in {len(manifest.get('shards', []))} shards under {output}{how} "
              f"({'complete' if manifest.get('complete') else 'incomplete'})")
    if ranges:
        try:
            table = target_ranges(output)
        except _ERRORS as e:
            _error(e)
        outside = table[~table["inside_sicon"].astype(bool)] if "inside_sicon" in table else table.iloc[0:0]
        console.print(f"target ranges → {output / 'target_ranges.csv'}; {len(outside)} of {len(table)} targets "
                      f"reach outside SICON's training range")


def kind_fractions(kinds: str) -> tuple[float, float, float]:
    """``--kinds`` (e.g. ``"plage,spot"``) → (quiet, plage, spot) weights, 1 for each kind named.

    Raises
    ------
    helioforge.errors.InputError : an unknown or no kind (names the value and the choices).
    """
    from helioforge.inversion.atmospheres import KINDS

    names = [k.strip().lower() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in names if k not in KINDS]
    if unknown or not names:
        raise InputError(f"--kinds must be a comma list of {', '.join(KINDS)}, got {kinds!r}")
    return tuple(1.0 if k in names else 0.0 for k in KINDS)  # type: ignore[return-value]


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
    accelerator: str = ACCEL,
    devices: str = DEVICES,
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check every shard of the training set against its manifest first (--no-verify skips that pass over the set)."),
    force: bool = typer.Option(False, "--force", help="Start afresh: remove this network's checkpoint, weights and settings first."),
) -> None:
    """Train (or resume) a SICON network on a training set; weights → WORKDIR/train_<network>/sicon_<network>.

    The work folder is locked while the command runs; the weights count as trained only once
    the run has finished (``helioforge invert`` refuses those of an interrupted run).
    """
    from helioforge.inversion.pipeline import train_network

    try:
        stem = train_network(trainset, workdir, network.value, profile, progress=True, verify=verify, force=force,
                             **trainer_kw(accelerator, devices))
    except _ERRORS as e:
        _error(e)
    out.print(f"weights: {stem}.safetensors (+ .json)")


@inversion_app.command("validate")
def validate_cmd(
    valset: Path = typer.Option(Path("runs/inversion/valset"), "--valset", help="Held-out training-set folder (another seed)."),
    workdir: Path = IWORKDIR,
    sample: Optional[Path] = typer.Option(None, "--map", help="Real SP map to invert (default: the data folder's sample)."),
    spinor: Optional[Path] = typer.Option(None, "--spinor", help="SPINOR inversion of the map (default: the sample's)."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Report folder (default WORKDIR/report)."),
    old_report: Optional[Path] = typer.Option(None, "-o", hidden=True),
    me_pixels: int = typer.Option(1000, "--me-pixels", min=1, help="Held-out pixels for the Milne-Eddington baseline (≥ 1)."),
    data: Optional[Path] = DATA,
) -> None:
    """Validation report: MAD per quantity and log τ, KDEs, ME baseline, SPINOR, re-synthesis."""
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
    except _ERRORS as e:
        _error(e)
    for m, d in metrics["mad_at_log_tau_-1"].items():
        out.print(f"MAD at log τ = −1, {m}: " + ", ".join(f"{q} {v:.3g}" for q, v in d.items()))
    out.print(f"report: {report / 'index.html'}")


def invert_command(
    sp_map: Path = typer.Argument(..., help="Hinode SP level-1 map: a cube FITS or a folder of per-slit FITS files."),
    output: Path = typer.Option(..., "--output", "-o", help="Output FITS cube (quantity, log τ, y, x)."),
    network: Network = typer.Option(Network.encdec, "--network", "-n", help="encdec or concat."),
    workdir: Path = IWORKDIR,
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights stem (default WORKDIR/train_<network>/sicon_<network>)."),
    branch: int = typer.Option(0, "--branch", min=0, max=1, help="Azimuth solution for Bx, By: 0 (Bx ≥ 0) or 1 (opposite)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    pixel_scale: Optional[str] = typer.Option(None, "--pixel-scale", help="Pixel of the map X,Y in arcsec (default: its XSCALE, YSCALE cards)."),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="Calibrate the wavelength axis on the quiet-Sun Fe I line cores (--no-calibrate: the file's axis)."),
    qs_velocity: float = typer.Option(0.0, "--qs-velocity", min=-3.0, max=3.0, help="Velocity given to the quiet-Sun line cores, km/s, + = redshift (0: quiet Sun at rest, as in the training sets)."),
) -> None:
    """Invert a Hinode SP map with a trained SICON network into T, v_z, z, log P, B at 7 log τ.

    Pixels with non-finite values are masked: NaN in the output cube there. A map whose pixel
    differs by more than 2 % from the networks' (0.16″) is resampled to it, with a warning; one
    without XSCALE/YSCALE cards is taken to be at that pixel, with a warning (or give
    --pixel-scale). The wavelength axis is calibrated so that the mean quiet-Sun Fe I line
    cores are at --qs-velocity (Hinode spectra have no telluric lines). Reads the work folder only (nothing is created or changed in it).
    """
    from helioforge.inversion.atmos_cube import write_atmos_cube
    from helioforge.inversion.infer import invert_map
    from helioforge.inversion.pipeline import weights_stem

    stem = weights or weights_stem(workdir, network.value)
    files = [Path(str(stem) + ".safetensors"), Path(str(stem) + ".json")]
    train = f"helioforge inversion train -t TRAINSET -w {workdir} -n {network.value}"
    try:
        scale = None
        if pixel_scale is not None:
            try:
                parts = [float(v) for v in pixel_scale.split(",")]
            except ValueError:
                parts = []
            if len(parts) not in (1, 2) or not all(np.isfinite(v) and v > 0 for v in parts):
                raise InputError(f"--pixel-scale must be X[,Y] in arcsec (positive numbers), got {pixel_scale!r}")
            scale = (parts[0], parts[-1])
        inputs = [sp_map, *files]
        if sp_map.is_dir():  # a folder of slit files: none of them may be overwritten either
            inputs += sorted(sp_map.iterdir())
        check_output(output, inputs)
        _check_device(device)
    except _ERRORS as e:
        _error(e)
    if not sp_map.exists():  # the input first: a missing map is named even when no network is trained yet
        fail(f"{sp_map}: no such file or folder (the Hinode SP map to invert)")
    if not stem.parent.is_dir():
        fail(f"{stem.parent}: no such weights folder; train first (`{train}`) or pass --weights")
    if not files[0].is_file():
        fail(f"{files[0]} not found: train first (`{train}`) or pass --weights")
    try:
        cube, info = invert_map(sp_map, stem, branch=branch, device=device, pixel_scale=scale, calibrate=calibrate,
                                qs_velocity_kms=qs_velocity)
        write_atmos_cube(output, cube, mask=info["mask"])
    except _ERRORS as e:
        _error(e)
    for s in info["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {s}")
    for msg in info.get("pixel_scale", {}).get("warnings", []):
        console.print(f"[yellow]pixel scale[/yellow] {escape(msg)}")
    cal = info.get("wavelength_calibration")
    if cal:
        console.print(f"wavelength: quiet-Sun Fe I cores at {cal['velocity_kms']:+.2f} km/s on the file's axis "
                      f"(6301.5 {cal['line_velocities_kms'][0]:+.2f}, 6302.5 {cal['line_velocities_kms'][1]:+.2f}); "
                      f"axis shifted by {cal['shift_mA']:+.1f} mÅ to put them at {cal['qs_velocity_kms']:+.2f} km/s")
    if info.get("n_masked"):
        p = cube.params
        console.print(f"[yellow]masked[/yellow] {info['n_masked']} of {info['mask'].size} pixel(s) of {escape(str(sp_map))} "
                      f"(non-finite {p.get('bad_nonfinite', 0)}, negative counts {p.get('bad_negative', 0)}, "
                      f"saturated {p.get('bad_saturated', 0)}; or no positive continuum): NaN in the output there, "
                      "MASK extension = 1")
    ny, nx = cube.data.shape[-2:]
    t0 = cube.data[0, 0]
    t_range = f"{np.nanmin(t0):.0f}–{np.nanmax(t0):.0f} K" if np.isfinite(t0).any() else "no finite value"
    out.print(f"wrote {output}: (7, 7, {ny}, {nx}) + BXYZ (branch {branch}); network {info['seconds_network'] * 1e3:.0f} ms, "
              f"T(log τ=0) {t_range}")
