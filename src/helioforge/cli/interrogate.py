"""``helioforge`` commands of the generative interrogator (paper 000): ``params``, ``fetch sharp``,
``train gan|simsiam``, ``directions fit``, ``generate``, ``index build``, ``search`` and
``interrogate`` (the main job). Each parses its arguments and calls :mod:`helioforge.interrogate`.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from helioforge.cli.app import app
from helioforge.cli.common import ACCEL, DATA, DEVICES, console, deprecated, fail, out, trainer_kw, use_data
from helioforge.data.fits import FitsReadError
from helioforge.errors import InputError, check_finite, check_output
from helioforge.interrogate.config import get_profile

fetch_app = typer.Typer(help="Download data from the archives.", no_args_is_help=True)
train_app = typer.Typer(help="Train the interrogator's models.", no_args_is_help=True)
directions_app = typer.Typer(help="Latent directions for physical parameters.", no_args_is_help=True)
index_app = typer.Typer(help="The retrieval index of real patches.", no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")
app.add_typer(train_app, name="train")
app.add_typer(directions_app, name="directions")
app.add_typer(index_app, name="index")


#: The interrogator's one work folder default: the folder `make demo` fills.
DEFAULT_WORKDIR = Path("runs/demo")
WORKDIR = typer.Option(DEFAULT_WORKDIR, "--workdir", "-w", help="Work folder holding corpus, models, index and report.")
PROFILE = typer.Option("cpu", "--profile", "-p", help="Configuration profile: cpu, paper or tiny.")


class Fmt(str, Enum):
    """Output format of the listing commands."""

    table = "table"
    json = "json"


class Units(str, Enum):
    """Units of ``params``: the paper's preprocessed image, or physical (Mx, Mm)."""

    paper = "paper"
    physical = "physical"


def _profile(name: str):
    try:
        return get_profile(name)
    except ValueError as e:
        fail(str(e))


def _workspace_profile(workdir: Path, name: str | None):
    """The work folder and the profile to build it with: ``name``, else the folder's own, else
    ``cpu``. Nothing is written: the profile is recorded when the products it makes are done."""
    from helioforge.interrogate.pipeline import Workspace

    ws = Workspace(workdir, create=False)
    if name is None and ws.profile_file.is_file():
        try:
            return ws, ws.load_profile()
        except ValueError as e:
            fail(str(e))
    return ws, _profile(name or "cpu")


def _existing_workspace(workdir: Path):
    """A work folder opened read-only, with its profile; a clear error when there is none."""
    from helioforge.interrogate.pipeline import Workspace

    ws = Workspace(workdir, create=False)
    if not ws.root.is_dir():
        fail(f"{workdir}: no such work folder; make it with: helioforge interrogate -w {workdir}")
    return ws, ws.load_profile()


# ----------------------------------------------------------------------------- params
@app.command()
def params(
    files: list[Path] = typer.Argument(..., help="SHARP Br FITS files."),
    format: Fmt = typer.Option(Fmt.table, "--format", "-f", help="table or json (one record per file)."),
    units: Units = typer.Option(Units.paper, "--units", help="paper: the N×N preprocessed image (kG·px, px); "
                                "physical: native-resolution patch in Mx and Mm, over the HARP region (bitmap ≥ 33, as SHARP's USFLUX)."),
    size: int = typer.Option(128, "--size", min=8, max=4096, help="N for --units paper (paper: 128)."),
    threshold: float = typer.Option(150.0, "--threshold", help="Polarity threshold, G (finite, ≥ 0)."),
) -> None:
    """Physical parameters (TUF, TPF, TNF, PSEP, R, tilt) of each file. Bad files are reported and skipped."""
    from helioforge.interrogate.infer import magnetogram_params

    check_finite("--threshold", threshold, minimum=0.0)
    records, skipped = [], []
    for f in files:
        try:
            rec = magnetogram_params(f, units=units.value, size=size, threshold=threshold)
        except (FitsReadError, FileNotFoundError) as e:
            skipped.append({"file": str(f), "reason": str(e)})
            continue
        for w in rec.pop("warnings"):
            console.print(f"[yellow]warning:[/yellow] {w}")
        records.append(rec)
    if format is Fmt.json:
        typer.echo(json.dumps([{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records], indent=2))
    else:
        tab = RichTable(title=f"physical parameters ({records[0]['units'] if records else units.value})")
        for col in ("file", "TUF", "TPF", "TNF", "PSEP", "R", "tilt", "leading_sign"):
            tab.add_column(col, justify="left" if col == "file" else "right")
        for r in records:
            tab.add_row(Path(r["file"]).name, *(f"{r[k]:.4g}" for k in ("TUF", "TPF", "TNF", "PSEP", "R", "tilt")), str(r["leading_sign"]))
        out.print(tab)
    for s in skipped:
        console.print(f"[yellow]skipped[/yellow] {s['reason']}")
    if skipped and not records:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- fetch
@fetch_app.command("sharp")
def fetch_sharp_cmd(
    email: str = typer.Option(..., "--email", help="Email registered with JSOC exports."),
    start: str = typer.Option(..., "--start", help="Start time (ISO, e.g. 2011-02-15T00:00)."),
    end: str = typer.Option(..., "--end", help="End time (ISO; with --all-harps not included)."),
    harp: Optional[list[int]] = typer.Option(None, "--harp", help="HARP number (repeatable)."),
    noaa: Optional[list[int]] = typer.Option(None, "--noaa", help="NOAA active-region number (repeatable)."),
    all_harps: bool = typer.Option(False, "--all-harps", help="Every HARP of the range: chunked, resumable archive ingest "
                                   "(manifest in the output folder; rerun the same command to resume)."),
    cadence: str = typer.Option("12m", "--cadence", help="JSOC cadence, e.g. 12m, 96m, 1h, 1d."),
    segment: list[str] = typer.Option(["Br"], "--segment", help="Segments (repeatable): Br, bitmap, magnetogram, ..."),
    out_dir: Path = typer.Option(Path("data/sharp"), "--output", "-o", help="Download folder."),
    old_out: Optional[Path] = typer.Option(None, "--out", hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the JSOC query (with --all-harps: the chunk queries) and stop."),
    chunk: str = typer.Option("1d", "--chunk", help="--all-harps: chunk length, a whole number of cadence steps."),
    max_records: int = typer.Option(2000, "--max-records", min=1, help="--all-harps: most records in one export request."),
    delay: float = typer.Option(2.0, "--delay", min=0.0, help="--all-harps: pause after each JSOC request, s."),
    retries: int = typer.Option(4, "--retries", min=0, help="--all-harps: further attempts of a failed request "
                                "(waits 10 s, 20 s, 40 s ...)."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="--all-harps: corpus store folder; each Br patch is "
                                          "appended to it as it arrives (made if missing)."),
    profile: str = typer.Option("cpu", "--profile", "-p", help="--corpus: profile giving the image size N and clip level."),
) -> None:
    """Download hmi.sharp_cea_720s segments from JSOC through drms.

    With --harp/--noaa: one export of those regions. With --all-harps: every HARP of the range, in
    chunks, one export at a time, with retries; resumable; optionally feeding a corpus store."""
    from helioforge.data.jsoc import build_sharp_query, fetch_sharp, fetch_sharp_archive, plan_sharp_archive

    out_dir = deprecated(old_out, "--out", "--output/-o", None) or out_dir
    if corpus is not None and not all_harps:
        fail("--corpus goes with --all-harps (the archive ingest feeds the corpus store)")
    if all_harps:
        if harp or noaa:
            fail("--all-harps takes every HARP of the range; leave out --harp/--noaa")
        try:
            queries = [c.query(None, segment) for c in plan_sharp_archive(start, end, cadence=cadence, chunk=chunk)]
        except ValueError as e:
            fail(str(e))
        console.print(f"{len(queries)} chunk(s): [bold]{escape(queries[0])}[/bold]"
                      + (f" … [bold]{escape(queries[-1])}[/bold]" if len(queries) > 1 else ""))
        if dry_run:
            typer.echo("\n".join(queries))
            return
        kw = dict(start=start, end=end, cadence=cadence, segments=segment, chunk=chunk, max_records=max_records,
                  delay_s=delay, retries=retries)
        try:
            if corpus is not None:
                from helioforge.interrogate.data import fetch_sharp_corpus

                prof = _profile(profile)
                report, store = fetch_sharp_corpus(out_dir, email, corpus, image_size=prof.data.image_size,
                                                   clip_gauss=prof.data.clip_gauss, **kw)
                with store:
                    n_store, bad = len(store), store.skipped()
            else:
                report = fetch_sharp_archive(out_dir, email, **kw)
        except ValueError as e:
            fail(str(e))
        console.print(f"{report.files_downloaded} file(s) downloaded, {report.files_adopted} found complete, to {out_dir}; "
                      f"chunks: {report.chunks_done} done now, {report.chunks_already_done} before, "
                      f"{report.chunks_partial} partial, {len(report.failed_chunks)} failed")
        if corpus is not None:
            console.print(f"corpus store {corpus}: {n_store} patch(es)" + (f", {len(bad)} file(s) skipped" if bad else ""))
            for s in bad:
                console.print(f"[yellow]skipped[/yellow] {escape(s.path.name)}: {escape(s.reason)}")
        for p in report.problems:
            console.print(f"[yellow]not downloaded[/yellow] {escape(p['record'])} {p['segment']}: {escape(p['reason'])}")
        for c in report.failed_chunks:
            console.print(f"[yellow]failed[/yellow] chunk {escape(c['chunk'])}: {escape(c['error'])}")
        if not report.complete:
            console.print("rerun the same command to retry what is missing")
            raise typer.Exit(1)
        return
    try:
        query = build_sharp_query(harps=harp or None, noaa=noaa or None, start=start, end=end, cadence=cadence, segments=segment)
    except ValueError as e:
        fail(str(e))
    console.print(f"JSOC query: [bold]{query}[/bold]")
    if dry_run:
        typer.echo(query)
        return
    try:
        paths = fetch_sharp(out_dir, email, harps=harp or None, noaa=noaa or None, start=start, end=end, cadence=cadence, segments=segment)
    except (ValueError, RuntimeError, OSError) as e:  # JSOC refusals and network failures
        fail(f"JSOC export failed: {e}")
    console.print(f"downloaded {len(paths)} file(s) to {out_dir}")


# ----------------------------------------------------------------------------- training


TRAIN_PROFILE = typer.Option(None, "--profile", "-p", help="Profile (cpu, paper, tiny); default: the work folder's, else cpu.")
EPOCHS = typer.Option(None, min=1, help="Override the profile's epochs.")
FORCE = typer.Option(False, help="Retrain even if a matching model exists.")


def _train(model: str, workdir: Path, profile: str | None, epochs: int | None, force: bool, accelerator: str, devices: str,
           data: Path | None = None) -> None:
    from helioforge.interrogate.pipeline import train_model

    use_data(data, announce=True)
    ws, prof = _workspace_profile(workdir, profile)
    if epochs is not None:
        getattr(prof, model).epochs = epochs
    try:
        report = train_model(prof, ws, model, force, **trainer_kw(accelerator, devices))
    except RuntimeError as e:
        fail(str(e))
    for s in report["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {s['file']}: {s['reason']}")
    console.print(f"{model}: {ws.generator if model == 'gan' else ws.simsiam}.safetensors")


@train_app.command("gan")
def train_gan_cmd(workdir: Path = WORKDIR, profile: Optional[str] = TRAIN_PROFILE, epochs: Optional[int] = EPOCHS,
                  force: bool = FORCE, accelerator: str = ACCEL, devices: str = DEVICES, data: Optional[Path] = DATA) -> None:
    """Build the real corpus and train (or resume) the GAN."""
    _train("gan", workdir, profile, epochs, force, accelerator, devices, data)


@train_app.command("simsiam")
def train_simsiam_cmd(workdir: Path = WORKDIR, profile: Optional[str] = TRAIN_PROFILE, epochs: Optional[int] = EPOCHS,
                      force: bool = FORCE, accelerator: str = ACCEL, devices: str = DEVICES, data: Optional[Path] = DATA) -> None:
    """Build the real corpus and train (or resume) SimSiam on it."""
    _train("simsiam", workdir, profile, epochs, force, accelerator, devices, data)


@directions_app.command("fit")
def directions_fit_cmd(workdir: Path = WORKDIR, samples: Optional[int] = typer.Option(None, "--samples", "-m", min=20,
                                                                                     help="M generated samples (paper 10,000)."),
                       force: bool = typer.Option(False)) -> None:
    """Fit linear SVMs for TUF, PSEP, R and polarity on generated samples; print accuracies."""
    from helioforge.interrogate.pipeline import refit_directions

    ws, prof = _existing_workspace(workdir)
    if samples is not None:
        prof.directions.n_samples = samples
    d = refit_directions(prof, ws, force)
    tab = RichTable(title=f"SVM latent directions ({prof.directions.n_samples} samples, 70/30)")
    tab.add_column("direction")
    tab.add_column("validation accuracy", justify="right")
    for k, v in d.accuracy.items():
        tab.add_row(k, f"{v:.3f}")
    for k, why in d.skipped.items():
        tab.add_row(k, f"not fitted: {why}")
    out.print(tab)


@index_app.command("build")
def index_build_cmd(workdir: Path = WORKDIR, force: bool = typer.Option(False)) -> None:
    """Embed the real corpus with SimSiam into a FAISS inner-product index (+ look-up table)."""
    from helioforge.interrogate.pipeline import rebuild_index

    ws, prof = _existing_workspace(workdir)
    idx = rebuild_index(prof, ws, force)
    console.print(f"index: {len(idx)} vectors of dimension {idx.dim} in {ws.index_dir}")


# ----------------------------------------------------------------------------- generate
@app.command()
def generate(
    workdir: Path = WORKDIR,
    move: list[str] = typer.Option([], "--move", help="Direction and change (repeatable): a shift ε (tuf=+2) or a physical "
                                   "change (tuf=+2e22Mx, r=-1e21Mx, psep=+5Mm; needs `helioforge directions calibrate`). "
                                   "Names: tuf, psep, r, polarity."),
    keep: str = typer.Option("", "--keep", help="Comma-separated directions to hold fixed (conditional manipulation), e.g. r,polarity."),
    seed: int = typer.Option(0, "--seed", help="Seed of the base latent vector(s)."),
    n: int = typer.Option(1, "-n", min=1, max=100_000, help="Number of images."),
    from_file: Optional[Path] = typer.Option(None, "--from", help="Start from the latent vector(s) of this FITS file "
                                             "(written by `helioforge project` or `generate`) instead of --seed/-n."),
    refine: int = typer.Option(3, "--refine", min=0, max=20, help="Secant rounds that bring each image's achieved "
                               "physical change to the requested one (0: the calibrated ε alone)."),
    output: Path = typer.Option(Path("generated.fits"), "-o", "--output", help="Output FITS (a PNG is written beside it)."),
) -> None:
    """Generate magnetograms z + Σ ε n̂ (n̂ conditioned on --keep) and write FITS (+ PNG) with their parameters."""
    from helioforge.interrogate.infer import read_latent

    check_output(output, protect_foreign_fits=True)
    check_output(output.with_suffix(".png"), protect_foreign_fits=True)
    itg = _load_interrogator(workdir, need_index=False)
    try:
        z, side = (read_latent(from_file, with_scale=True) if from_file is not None else (None, None))
        fits_path, png_path, table = itg.generate(output, seed=seed, n=n, move=move, keep=keep, z=z, refine=refine,
                                                  native_side_px=side)
    except (InputError, FileNotFoundError) as e:
        fail(str(e))
    console.print(f"wrote {fits_path} and {png_path}")
    for key in [k for k in table[0] if k.startswith("outside_")]:
        n_out = sum(bool(r[key]) for r in table)
        if n_out:
            console.print(f"[yellow]warning:[/yellow] {n_out} of {len(table)} image(s) needed an ε beyond the calibrated range "
                          f"of {key[len('outside_'):]} (`helioforge directions calibrate` shows it): the change is extrapolated")
    _print_param_table([{k: v for k, v in r.items() if k not in ("TPF_Mx", "TNF_Mx")} for r in table])


@directions_app.command("calibrate")
def directions_calibrate_cmd(workdir: Path = WORKDIR, force: bool = typer.Option(False)) -> None:
    """Calibrate the directions in physical units (ΔTUF, ΔR in Mx and ΔPSEP in Mm per unit ε) with R² and valid range."""
    from helioforge.interrogate.pipeline import recalibrate

    ws, prof = _existing_workspace(workdir)
    try:
        cal = recalibrate(prof, ws, force)
    except ValueError as e:
        fail(str(e))
    tab = RichTable(title=f"directions in physical units ({cal.scale['assumption']})")
    for col in ("direction", "held", "per ε", "95 % interval", "R²", "valid |ε| ≤", "random direction per ε (R²)"):
        tab.add_column(col, justify="right")
    for r in cal.table():
        rd = cal.random_direction.get(r["direction"], {})
        tab.add_row(r["direction"], r["keep"], f"{r['per_eps']:.3g} {r['unit']}" + ("" if r["significant"] else " (n.s.)"),
                    f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]",
                    f"{r['r2']:.2f}", f"{r['eps_valid']:g}", f"{rd.get('slope', float('nan')):.3g} ({rd.get('r2', float('nan')):.2f})")
    out.print(tab)
    console.print(f"calibration: {ws.calibration}; n.s.: the 95 % interval includes 0, so moves in units are refused there")


@app.command()
def project(
    files: list[Path] = typer.Argument(..., help="SHARP Br FITS files (each preprocessed as the corpus)."),
    workdir: Path = WORKDIR,
    output: Path = typer.Option(Path("projected"), "-o", "--output", help="Output folder: <file>_z.fits (+ PNG) per input "
                                "and projection.json (errors and their yardsticks)."),
) -> None:
    """Find the latent vector z whose generated image reproduces each real patch; write z (edit it with `generate --from`)."""
    from dataclasses import asdict

    from helioforge.interrogate.infer import write_generated
    from helioforge.interrogate.project import summarise_projections
    from helioforge.io import write_json

    itg = _load_interrogator(workdir, need_index=False)
    output.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for f in files:
        try:
            pr = itg.project(f, progress=True)
        except (FitsReadError, FileNotFoundError, InputError) as e:
            skipped.append({"file": str(f), "reason": str(e)})
            console.print(f"[yellow]skipped[/yellow] {escape(str(e))}")
            continue
        dest = output / (f.name.split(".fits")[0] + "_z.fits")
        settings = {"projected_from": f.name, **{f"proj_{k}": v for k, v in pr.errors.items()}}
        write_generated(itg, pr.z[None], dest, settings, native_side_px=pr.native_side_px)
        rows.append({"file": str(f), "output": str(dest), "fit": pr.errors, "random_start": pr.random_start,
                     "zero_image": pr.zero_image, "losses": pr.losses})
        console.print(f"{f.name}: median |ΔB| {pr.errors['median_abs_G']:.1f} G (best random start "
                      f"{pr.random_start['median_abs_G']:.1f} G), |ΔTUF|/TUF {pr.errors['rel_dTUF']:.3f} "
                      f"(random start {pr.random_start['rel_dTUF']:.3f}) → {dest}")
    summary = summarise_projections(rows) if rows else {"n": 0}
    write_json(output / "projection.json", {"summary": summary, "files": rows, "skipped": skipped,
                                            "settings": asdict(itg.profile.projection)})
    if rows:
        tab = RichTable(title=f"projection of {len(rows)} patch(es): median over files [95 % bootstrap]")
        for col in ("", "median |ΔB| (G)", "in active pixels (G)", "RMS (G)", "|ΔTUF|/TUF"):
            tab.add_column(col, justify="right")
        for what, label in (("fit", "projection"), ("random_start", "best random start"), ("zero_image", "zero image")):
            cells = []
            for key in ("median_abs_G", "median_abs_G_active", "rms_G", "rel_dTUF"):
                v = summary.get(f"{what}.{key}")
                cells.append(f"{v['median']:.3g} [{v['ci'][0]:.3g}, {v['ci'][1]:.3g}]" if v else "n/a")
            tab.add_row(label, *cells)
        out.print(tab)
    console.print(f"summary: {output / 'projection.json'}")
    if not rows:
        raise typer.Exit(1)


def _print_param_table(rows: list[dict]) -> None:
    tab = RichTable()
    for col in rows[0]:
        tab.add_column(col, justify="right")
    for r in rows:
        tab.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()))
    out.print(tab)


def _load_interrogator(workdir: Path, need_index: bool = True):
    from helioforge.interrogate.infer import Interrogator

    try:
        return Interrogator.from_workspace(workdir, with_index=need_index)
    except FileNotFoundError as e:
        fail(f"{e}. Train first: helioforge interrogate --workdir {workdir} (or the train/index steps).")
    except ValueError as e:
        fail(str(e))


# ----------------------------------------------------------------------------- search
@app.command()
def search(
    query: Optional[Path] = typer.Argument(None, help="Query FITS: a SHARP Br patch or a file written by `helioforge generate`."),
    workdir: Path = WORKDIR,
    seed: Optional[int] = typer.Option(None, "--seed", help="Instead of a file: query with the image generated from this seed's z."),
    k: int = typer.Option(5, "-k", min=1, max=1000, help="Number of matches."),
    format: Fmt = typer.Option(Fmt.table, "--format", "-f"),
) -> None:
    """Top-k real patches nearest to the query in SimSiam space (cosine score)."""
    itg = _load_interrogator(workdir)
    if query is None and seed is None:
        fail("give a query FITS file or --seed")
    if query is not None:
        try:
            matches = itg.search(query, k)[0]
        except (FitsReadError, FileNotFoundError, ValueError) as e:
            fail(str(e))
    else:
        matches = itg.search_latent(itg.latent(seed), k)[0]
    rows = [{"rank": m.rank, "score": m.score, "file": m.file, "HARPNUM": m.HARPNUM, "T_REC": m.T_REC, "crop": m.crop} for m in matches]
    if format is Fmt.json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_param_table(rows)


# ----------------------------------------------------------------------------- interrogate
@app.command()
def interrogate(
    workdir: Path = WORKDIR,
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Report folder (default WORKDIR/report)."),
    profile: Optional[str] = TRAIN_PROFILE,
    sharp_dir: list[Path] = typer.Option([], "--sharp-dir", help="SHARP Br folder (repeatable; default DATA/sharp)."),
    fulldisk_dir: Optional[Path] = typer.Option(None, "--fulldisk-dir", help="HMI full-disk folder (default DATA/hmi_fulldisk)."),
    queries: Optional[int] = typer.Option(None, "--queries", "-q", min=1, max=1_000_000, help="Number of generated queries Q (paper 1000)."),
    force: bool = typer.Option(False, "--force", help="Retrain everything."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=2, max=100, help="Run the whole pipeline K times (seed offsets "
                                        "0…K−1, in WORKDIR/seed_<k>) and report every headline number as mean ± std."),
    accelerator: str = ACCEL,
    devices: str = DEVICES,
    data: Optional[Path] = DATA,
) -> None:
    """The main job: corpus → GAN → SVM directions → SimSiam → index → queries → report."""
    from helioforge.interrogate.pipeline import interrogate as run
    from helioforge.interrogate.pipeline import interrogate_seeds

    use_data(data, announce=True)
    _, prof = _workspace_profile(workdir, profile)
    if queries is not None:
        prof.interrogate.n_queries = queries
    if sharp_dir:
        prof.data.sharp_dirs = tuple(str(d.resolve()) for d in sharp_dir)
    if fulldisk_dir:
        prof.data.fulldisk_dir = str(fulldisk_dir.resolve())
    if seeds is not None:
        summary = interrogate_seeds(prof, workdir, seeds, force=force, **trainer_kw(accelerator, devices))
        tab = RichTable(title=f"{seeds} seeds of the whole pipeline: mean ± std")
        for col in ("number", "mean", "std", "per seed"):
            tab.add_column(col, justify="right")
        for k, v in summary["numbers"].items():
            tab.add_row(k, f"{v['mean']:.3f}", f"{v['std']:.3f}", " ".join(f"{x:.2f}" for x in v["values"]))
        out.print(tab)
        out.print(f"summary: {Path(workdir) / 'seeds_summary.json'}; reports: {Path(workdir)}/seed_<k>/report/index.html")
        return
    try:
        m = run(prof, workdir, report, force=force, **trainer_kw(accelerator, devices))
    except RuntimeError as e:
        fail(str(e))
    out.print(f"database: {m['corpus']['sources']} ({m['corpus']['n_sharp']} SHARP frames of {m['corpus']['n_sharp_regions']} "
              f"HARPs, {m['corpus']['n_fulldisk_tiles']} full-disk tiles)")
    tab = RichTable(title=f"query ↔ real match, like for like with the paper: SHARP database, {m['n_active_queries']} active "
                          f"of {m['n_queries']} queries (Spearman [95 %])")
    for col in ("parameter", "Pearson", "Spearman", "paper P", "paper S", "shuffled", "activity", "oracle"):
        tab.add_column(col, justify="right")
    for name, r in m["correlations"].items():
        tab.add_row(name, f"{r['pearson']:.2f}", f"{r['spearman']:.2f} [{r['spearman_ci'][0]:.2f}, {r['spearman_ci'][1]:.2f}]",
                    f"{r['paper_pearson']:.2f}", f"{r['paper_spearman']:.2f}", *(f"{r.get(k + '_spearman', float('nan')):.2f}"
                                                                                 for k in ("shuffled", "activity", "oracle")))
    out.print(tab)
    h = m["held_out_correlations"]["TUF"]
    out.print(f"held-out regions (HARPs {', '.join(map(str, m['corpus']['held_out_harps'])) or 'none'}): TUF Spearman "
              f"{h['spearman']:.2f} [{h['spearman_ci'][0]:.2f}, {h['spearman_ci'][1]:.2f}], shuffled {h.get('shuffled_spearman', float('nan')):.2f}")
    q = m["real_held_out_queries"]
    if q.get("n_queries"):
        out.print(f"real queries from unseen regions: {q['n_queries']} frames, {100 * q['match_active_fraction']:.0f} % active matches, "
                  f"TUF Spearman {q['TUF']['spearman']:.2f} [{q['TUF']['spearman_ci'][0]:.2f}, {q['TUF']['spearman_ci'][1]:.2f}]")
    out.print("SVM accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in m["svm_accuracy"].items()))
    u = m["corpus"].get("usflux_check", {})
    if u.get("n"):
        out.print(f"TUF (Mx, HARP region) vs header USFLUX on {u['n']} SHARP frames: Spearman {u['spearman']:.3f}")
    if m["corpus"]["skipped"]:
        out.print(f"skipped {len(m['corpus']['skipped'])} input file(s): " + "; ".join(
            f"{Path(s['file']).name}: {s['reason']}" for s in m["corpus"]["skipped"]))
    out.print(f"report: {(report or Path(workdir) / 'report') / 'index.html'}  ({m['timings_s']['total']:.0f} s)")
