"""``helioforge diffusion ...``: the flare-class-conditioned diffusion job (Ramunno et al. 2024).

    helioforge diffusion label               read + label AIA images with GOES classes (Fig. 1)
    helioforge diffusion train               train the class- or flux-conditioned DDPM
    helioforge diffusion sample              images of a class or a flux: FITS + PNG grid
    helioforge diffusion evaluate            Fréchet distance, cluster metrics, classifier, Figs. 4–5
    helioforge diffusion augment-experiment  §8.1: generated vs classical augmentation

Every count and size has its range on the command line (click prints a usage error, exit 2);
floats are checked to be finite. ``label``, ``train``, ``evaluate`` and ``augment-experiment``
hold the work folder's lock; ``sample`` only reads the work folder and never creates it. Any
error is one line naming the file or argument and the remedy, exit status 2.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional, get_args

import typer

from helioforge.cli.common import ACCEL, DATA, DEVICES, fail, trainer_kw, console, out, use_data
from helioforge.diffusion.config import Condition as ConditionChoice
from helioforge.diffusion.config import LabelSource as LabelSourceChoice
from helioforge.diffusion.config import SamplerName
from helioforge.errors import HelioforgeError, check_count, check_finite

diffusion_app = typer.Typer(help="Flare-class-conditioned diffusion on SDO/AIA images.", no_args_is_help=True)

DWORKDIR = typer.Option(Path("runs/diffusion"), "--workdir", "-w", help="Work folder (dataset, models, reports).")
DPROFILE = typer.Option(None, "--profile", "-p", help="Profile: cpu, paper or tiny (default: the work folder's, else cpu).")

#: What a command of this module turns into one ``error:`` line (exit 2).
ERRORS = (HelioforgeError, FileNotFoundError, ValueError, OSError)


def _choices(name: str, literal) -> type[Enum]:
    """A click choice Enum of a profile's ``Literal`` (one list of choices, in the profile)."""
    return Enum(name, {v: v for v in get_args(literal)}, type=str)


Condition = _choices("Condition", ConditionChoice)
Sampler = _choices("Sampler", SamplerName)
LabelSource = _choices("LabelSource", LabelSourceChoice)


def _ws_profile(workdir: Path, name: str | None):
    """:func:`helioforge.diffusion.pipeline.open_workdir`, its errors as one ``error:`` line."""
    from helioforge.diffusion.pipeline import open_workdir

    try:
        return open_workdir(workdir, name)
    except ERRORS as e:
        fail(str(e))


@diffusion_app.command("label")
def label_cmd(
    workdir: Path = DWORKDIR,
    profile: Optional[str] = DPROFILE,
    images: Optional[Path] = typer.Option(None, "--images", help="AIA folder: FITS, SDOML-binned FITS or browse JPEG (default DATA/aia/browse)."),
    wavelength: Optional[int] = typer.Option(None, "--wavelength", min=1, max=10_000, help="AIA channel, Å (default 193)."),
    size: Optional[int] = typer.Option(None, "--size", min=16, max=4096, help="Image side N (paper 64)."),
    events: Optional[Path] = typer.Option(None, "--events", help="Flare event list CSV (default DATA/goes SWPC list)."),
    flux: Optional[Path] = typer.Option(None, "--flux", help="GOES XRS file: hourly CSV or FITS/netCDF (default DATA/goes hourly CSV)."),
    source: Optional[LabelSource] = typer.Option(None, "--source", help="Labels from flare events (paper), X-ray flux, or both."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance-min", min=0, help="Image-after-peak tolerance, minutes (paper 7)."),
    force: bool = typer.Option(False, "--force", help="Relabel even if the dataset is current."),
    data: Optional[Path] = DATA,
) -> None:
    """Read, label (GOES class, log10 flux), preprocess and split the AIA images; write the
    class histogram (paper Fig. 1)."""
    from helioforge.diffusion.pipeline import label_dataset
    from helioforge.diffusion.report import labels_summary_lines

    try:
        check_finite("--tolerance-min", tolerance, minimum=0)
    except ERRORS as e:
        fail(str(e))
    use_data(data, announce=True)
    ws, prof = _ws_profile(workdir, profile)
    d = prof.data
    if images is not None:
        d.images = str(images.resolve())
    if events is not None:
        d.events = str(events.resolve())
    if flux is not None:
        d.flux = str(flux.resolve())
    for attr, value in (("wavelength", wavelength), ("image_size", size), ("tolerance_min", tolerance)):
        if value is not None:
            setattr(d, attr, value)
    if source is not None:
        d.label_source = source.value
    try:
        labelled = label_dataset(prof, ws, force=force)
        rep = ws.read_labels_report()
    except ERRORS as e:
        fail(str(e))
    for line in labels_summary_lines(rep, d.label_source, d.tolerance_min):
        out.print(line)
    out.print(f"train {len(labelled.split('train')[0])} / test {len(labelled.split('test')[0])} images → {ws.dataset}; histogram {ws.histogram}")


@diffusion_app.command("train")
def train_cmd(
    workdir: Path = DWORKDIR,
    profile: Optional[str] = DPROFILE,
    condition: Condition = typer.Option(Condition("class"), "--condition", help="Condition on the GOES class or on log10 flux."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the profile's epochs (a longer run resumes a shorter one)."),
    force: bool = typer.Option(False, "--force", help="Start training afresh."),
    accelerator: str = ACCEL,
    devices: str = DEVICES,
) -> None:
    """Train the conditional DDPM (eq. 5, CFG condition dropout, AdamW, EMA) on the labelled set."""
    from helioforge.diffusion.pipeline import train_model

    try:
        check_count("--epochs", epochs)
    except ERRORS as e:
        fail(str(e))
    ws, prof = _ws_profile(workdir, profile)
    if epochs is not None:
        prof.train.epochs = epochs
    try:
        stem = train_model(prof, ws, condition.value, force=force, **trainer_kw(accelerator, devices))
    except ERRORS as e:
        fail(str(e))
    out.print(f"{condition.value} model: {stem}.safetensors")


@diffusion_app.command("sample")
def sample_cmd(
    workdir: Path = DWORKDIR,
    condition: Condition = typer.Option(Condition("class"), "--condition", help="Which model of the work folder."),
    flare_class: Optional[str] = typer.Option(None, "--flare-class", "-c", help="GOES class A, B, C, M or X (class model)."),
    flux: Optional[float] = typer.Option(None, "--flux", help="GOES 1–8 Å flux, W m^-2, e.g. 3e-5 (flux model)."),
    n: int = typer.Option(16, "-n", min=1, help="Number of images."),
    cfg_scale: Optional[float] = typer.Option(None, "--cfg-scale", help="Classifier-free guidance scale w ≥ 0 (eq. 6; default: the work folder's profile)."),
    sampler: Optional[Sampler] = typer.Option(None, "--sampler", help="ddpm (T steps, as the paper), ddim or dpm (SDE-DPM-Solver++); default: the work folder's profile (paper ddpm, cpu dpm)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Steps (default: the profile's, else T for ddpm, 50 for ddim, 20 for dpm)."),
    eta: Optional[float] = typer.Option(None, "--eta", help="DDIM η in [0, 1]: 1 stochastic, 0 deterministic (default: the profile's)."),
    seed: int = typer.Option(0, "--seed", min=0),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output stem (default WORKDIR/samples/<condition>)."),
) -> None:
    """Sample images of a flare class or an X-ray flux; write FITS (with provenance) and a PNG grid.

    Reads the work folder only (a missing one is not created); the model must have finished
    training."""
    from helioforge.diffusion.pipeline import DiffusionWorkspace, sample_from_workdir

    try:
        fits_path, png = sample_from_workdir(
            DiffusionWorkspace(workdir, create=False), condition=condition.value, flare_class=flare_class, flux=flux,
            n=n, cfg_scale=cfg_scale, sampler=sampler.value if sampler else None, steps=steps, eta=eta, seed=seed,
            output=output)
    except ERRORS as e:
        fail(str(e))
    out.print(f"{n} images → {fits_path} and {png}")


@diffusion_app.command("evaluate")
def evaluate_cmd(
    workdir: Path = DWORKDIR,
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Report folder (default WORKDIR/report_<condition>)."),
    condition: Condition = typer.Option(Condition("class"), "--condition"),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="Local TorchScript InceptionV3 (inception-2015-12-05.pt) for the FID; never downloaded."),
    accelerator: str = ACCEL,
    devices: str = DEVICES,
) -> None:
    """Evaluate a trained model (paper §5–7): metrics.json, figures and index.html."""
    from helioforge.diffusion.evaluate import evaluate
    from helioforge.diffusion.report import evaluation_summary_lines

    ws, prof = _ws_profile(workdir, None)
    dest = report or ws.root / f"report_{condition.value}"
    try:
        m = evaluate(prof, ws, dest, condition=condition.value, inception_weights=inception_weights,
                     **trainer_kw(accelerator, devices))
    except ERRORS as e:
        fail(str(e))
    for line in evaluation_summary_lines(m):
        out.print(line)
    out.print(f"report: {dest / 'index.html'}")


def _parse_additions(text: str) -> tuple[int, ...]:
    """``--additions`` as positive counts; :func:`~helioforge.cli.common.fail` naming the option otherwise."""
    try:
        values = tuple(int(a) for a in text.split(","))
    except ValueError:
        fail(f"--additions must be comma-separated integers ≥ 1, got {text!r}")
    bad = [a for a in values if a < 1]
    if bad:
        fail(f"--additions must be counts ≥ 1, got {text!r}")
    return values


@diffusion_app.command("augment-experiment")
def augment_cmd(
    workdir: Path = DWORKDIR,
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Report folder (default WORKDIR/report_<condition>)."),
    condition: Condition = typer.Option(Condition("class"), "--condition"),
    additions: Optional[str] = typer.Option(None, "--additions", help="Comma-separated images added per minority class, each ≥ 1 (paper 200,400,600)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="Repeats per addition (paper 3)."),
    accelerator: str = ACCEL,
    devices: str = DEVICES,
) -> None:
    """Paper §8.1: per-class accuracy with generated, classical or no added images (Figs. 6–8)."""
    from helioforge.diffusion.evaluate import augment_experiment

    parsed = _parse_additions(additions) if additions is not None else None
    ws, prof = _ws_profile(workdir, None)
    if parsed is not None:
        prof.augment.additions = parsed
    if repeats is not None:
        prof.augment.repeats = repeats
    dest = report or ws.root / f"report_{condition.value}"
    try:
        r = augment_experiment(prof, ws, dest, condition=condition.value, **trainer_kw(accelerator, devices))
    except ERRORS as e:
        fail(str(e))
    console.print(f"augmentation experiment: {len(r['summary'])} rows, {r['seconds']:.0f} s")
    out.print(f"report: {dest / 'augmentation.html'}")
