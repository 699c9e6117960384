"""The interrogator's pipeline (Chatterjee et al. 2025, Fig. 1): the work folder and the chain
of stages, nothing else.

config → data (SHARP + full-disk tiles → corpus) → train (GAN, SVM latent directions, SimSiam,
FAISS index) → evaluate (Q generated queries → nearest real match → physical parameters of
both → metrics) → report. The stages live in :mod:`~helioforge.interrogate.config`,
:mod:`~helioforge.interrogate.data`, :mod:`~helioforge.interrogate.train` (with the models in
:mod:`~helioforge.interrogate.gan`, :mod:`~helioforge.interrogate.directions`,
:mod:`~helioforge.interrogate.simsiam`, :mod:`~helioforge.interrogate.retrieval`),
:mod:`~helioforge.interrogate.evaluate` and :mod:`~helioforge.interrogate.report`; the API a
user calls on a finished work folder is :class:`helioforge.interrogate.infer.Interrogator`.

All products live in one work folder (:class:`Workspace`). Every step goes through
:meth:`helioforge.workspace.StepState.run_step`: it records a digest of what the product was
made from; a later run reuses a product whose digest still matches and redoes (or resumes) the
ones that do not.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from helioforge.errors import HelioforgeError, check_count
from helioforge.interrogate import evaluate, train
from helioforge.interrogate.calibrate import Calibration, calibrate_directions
from helioforge.interrogate.config import Profile
from helioforge.interrogate.data import CORPUS_FORMAT, Corpus, build_corpus, training_mask
from helioforge.interrogate.directions import LatentDirections
from helioforge.interrogate.gan import Generator, load_generator
from helioforge.interrogate.report import ReportInputs, write_html, write_report
from helioforge.interrogate.retrieval import RetrievalIndex
from helioforge.interrogate.simsiam import load_simsiam
from helioforge.io import atomic_path, write_json
from helioforge.nn.training import inference_device
from helioforge.workspace import StepState

__all__ = [
    "Workspace",
    "ModelHealthError",
    "REBUILD",
    "require_product",
    "prepare_corpus",
    "ensure_gan",
    "ensure_directions",
    "ensure_calibration",
    "recalibrate",
    "calibration_metrics",
    "ensure_simsiam",
    "ensure_index",
    "train_model",
    "refit_directions",
    "rebuild_index",
    "interrogate",
    "interrogate_seeds",
]

log = logging.getLogger(__name__)


class ModelHealthError(HelioforgeError):
    """A trained model is unusable (mode collapse, embedding collapse, directions at chance)."""


@dataclass
class Workspace(StepState):
    """Paths of the products of one interrogator run under ``root`` (step bookkeeping from
    :class:`helioforge.workspace.StepState`)."""

    corpus = property(lambda self: self.root / "corpus.fits")
    corpus_report = property(lambda self: self.root / "corpus_report.json")
    gan_dir = property(lambda self: self.root / "gan")
    generator = property(lambda self: self.root / "gan" / "generator")
    simsiam_dir = property(lambda self: self.root / "simsiam")
    simsiam = property(lambda self: self.root / "simsiam" / "simsiam")
    directions = property(lambda self: self.root / "directions.json")
    samples = property(lambda self: self.root / "direction_samples.npz")
    calibration = property(lambda self: self.root / "calibration.json")
    index_dir = property(lambda self: self.root / "index")
    profile_file = property(lambda self: self.root / "profile.json")

    def save_profile(self, profile: Profile) -> None:
        """Store the profile the work folder is made with (``profile.json``, written atomically).

        Parameters
        ----------
        profile : Profile
            The profile to store.
        """
        write_json(self.profile_file, profile.to_dict())

    def load_profile(self) -> Profile:
        """The stored profile. Raises ``FileNotFoundError`` when the folder has none."""
        if not self.profile_file.is_file():
            raise FileNotFoundError(f"{self.profile_file}: no profile in this work folder (run a training step first)")
        try:
            return Profile.from_dict(json.loads(self.profile_file.read_text()))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.profile_file}: not a profile of this helioforge version ({exc}); "
                             "pass --profile to start the folder afresh") from None


def _digests(profile: Profile, ws: "Workspace") -> dict[str, str]:
    """Digests of what each product is made from (the work-folder protocol of
    :mod:`helioforge.workspace`): settings, the input files by content, and the upstream
    products as finished (:meth:`StepState.token`: digest + file hashes). A product is stale
    when anything it was made from changed: input files → corpus → GAN → directions;
    corpus → SimSiam → index. ``*_resume`` digests leave out the epoch count: a longer run
    resumes the shorter one. Where the data lie (``sharp_dirs``) does not count, only what the
    files hold."""
    d: dict[str, str] = {}
    d["corpus"] = profile.digest("data", extra=[CORPUS_FORMAT, profile.data.input_listing()],
                                 drop=("data.sharp_dirs", "data.fulldisk_dir", "data.holdout_harps", "data.holdout_seed"))
    corpus = ws.token("corpus")
    holdout = [profile.data.holdout_harps, profile.data.holdout_seed]  # which regions training never sees
    gan_extra = [corpus, profile.params.threshold_gauss, holdout]  # the threshold picks active patches
    d["gan"] = profile.digest("gan", extra=gan_extra)
    d["gan_resume"] = profile.digest("gan", extra=gan_extra, drop=("gan.epochs",))
    d["directions"] = profile.digest("params", "directions", extra=ws.token("gan"))
    d["calibration"] = profile.digest("params", "calibration", extra=[ws.token("directions"), profile.data.tile_px,
                                                                    profile.data.clip_gauss])
    d["simsiam"] = profile.digest("simsiam", extra=[corpus, holdout])
    d["simsiam_resume"] = profile.digest("simsiam", extra=[corpus, holdout], drop=("simsiam.epochs",))
    d["index"] = profile.digest(extra=[ws.token("simsiam"), corpus])
    return d


def _products(ws: "Workspace", step: str) -> tuple[Path, ...]:
    """The files of ``step``'s product (hashed at the mark, checked on load)."""
    return {
        "corpus": (ws.corpus, ws.corpus_report),
        "gan": (ws.generator.with_suffix(".safetensors"), ws.generator.with_suffix(".json")),
        "directions": (ws.directions, ws.samples),
        "calibration": (ws.calibration,),
        "simsiam": (ws.simsiam.with_suffix(".safetensors"), ws.simsiam.with_suffix(".json")),
        "index": (ws.index_dir / RetrievalIndex.INDEX_FILE, ws.index_dir / RetrievalIndex.LUT_FILE),
    }[step]


#: The command that rebuilds each product of a work folder (``{w}``: the folder).
REBUILD = {
    "corpus": "helioforge interrogate -w {w}",
    "gan": "helioforge train gan -w {w} (or helioforge interrogate -w {w})",
    "directions": "helioforge directions fit -w {w}",
    "calibration": "helioforge directions calibrate -w {w}",
    "simsiam": "helioforge train simsiam -w {w}",
    "index": "helioforge index build -w {w}",
}


def require_product(profile: Profile, ws: "Workspace", step: str) -> None:
    """Raise :class:`~helioforge.errors.ProductError` unless ``step``'s product in ``ws`` is
    finished, made from what ``profile`` and the upstream products say now, and unchanged on
    disk; the message names the file and the command that rebuilds it.

    Parameters
    ----------
    profile : Profile
        The profile the product must have been made with.
    ws : Workspace
        The work folder.
    step : str
        ``"corpus"``, ``"gan"``, ``"directions"``, ``"calibration"``, ``"simsiam"`` or ``"index"``.

    Raises
    ------
    ProductError
        If the product is missing, unfinished, stale or changed, or ``state.json`` is unreadable.
    KeyError
        For an unknown ``step``.
    """
    ws.require(step, _digests(profile, ws)[step], *_products(ws, step), rebuild=REBUILD[step].format(w=ws.root))


def _train_step(ws: Workspace, step: str, folder: Path, force: bool, profile: Profile, train: Callable[[], Any]) -> bool:
    """Reuse, resume or (re)train ``step`` (``"gan"`` or ``"simsiam"``) through
    :meth:`~helioforge.workspace.StepState.run_step`: a resumable checkpoint in ``folder`` is kept
    only when it was made with the same configuration up to the epoch count (the ``*_resume``
    digest) and ``force`` is off; the product is marked current only once ``train`` has
    finished. Returns ``True`` when ``train`` ran."""
    d = _digests(profile, ws)
    return ws.run_step(step, d[step], _products(ws, step), train, force=force,
                       resume_digest=d[f"{step}_resume"], reset=lambda: _reset_training(folder))


def _reset_training(folder: Path) -> None:
    """Remove a stale resumable state made with another configuration."""
    stale = folder / "checkpoints" / "last.safetensors"
    if stale.exists():
        log.info("configuration changed: discarding %s", stale)
        stale.unlink()


def prepare_corpus(profile: Profile, ws: Workspace, force: bool = False) -> tuple[Corpus, dict[str, Any]]:
    """Build (or reuse) the real corpus: SHARP Br patches + on-disk full-disk tiles.

    Returns
    -------
    (corpus, corpus_report) : the report lists the skipped files with their problem, the reader
        warnings (repaired headers) and the TUF–USFLUX check (:func:`~helioforge.interrogate.evaluate.usflux_check`).

    Raises
    ------
    RuntimeError : no patch at all could be read.
    """
    made: dict[str, Any] = {}

    def build() -> None:
        try:
            corpus, skipped = build_corpus(profile.data, fulldisk=profile.data.use_fulldisk)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from None
        corpus.save(ws.corpus)
        report = {
            "skipped": [{"file": str(s.path), "reason": s.reason} for s in skipped],
            "warnings": list(corpus.warnings),
            "usflux_check": evaluate.usflux_check(profile),
        }
        write_json(ws.corpus_report, report)
        made.update(corpus=corpus, report=report)

    if not ws.run_step("corpus", _digests(profile, ws)["corpus"], _products(ws, "corpus"), build, force=force):
        log.info("reusing corpus %s", ws.corpus)
        return Corpus.load(ws.corpus), json.loads(ws.corpus_report.read_text())
    return made["corpus"], made["report"]


def ensure_gan(profile: Profile, ws: Workspace, corpus: Corpus, force: bool = False, device: str = "cpu",
               **trainer_kw: Any) -> Generator:
    """Train (or reuse, or resume) the GAN on the corpus rows of
    :func:`~helioforge.interrogate.data.training_mask`; return the selected generator on ``device``.

    Parameters
    ----------
    profile : Profile
        Settings; the product is reused when its digest matches.
    ws : Workspace
        Work folder (the GAN lives in ``ws.gan_dir``).
    corpus : Corpus
        The real corpus.
    force : bool
        Retrain from scratch even if a current product or a resumable checkpoint exists.
    device : str
        Device of the returned generator.
    **trainer_kw
        ``accelerator``, ``devices``, ``progress`` of :func:`~helioforge.interrogate.gan.train_gan`.

    Returns
    -------
    Generator
        The selected generator, in eval mode.

    Raises
    ------
    ValueError
        When fewer training images than one GAN batch remain.
    ProductError
        If the saved generator is unreadable or mismatched.
    """

    if not _train_step(ws, "gan", ws.gan_dir, force, profile,
                       lambda: train.train_generator(corpus, profile, ws.gan_dir, **trainer_kw)):
        log.info("reusing generator %s", ws.generator)
    return load_generator(ws.generator, device)


def ensure_directions(profile: Profile, ws: Workspace, generator: Generator, force: bool = False) -> LatentDirections:
    """Fit (or reuse) the SVM latent directions on ``directions.n_samples`` generated samples
    (z drawn with ``directions.seed``); the samples and their parameters are kept in
    ``direction_samples.npz`` for the report.

    Parameters
    ----------
    profile : Profile
        Gives ``directions`` and ``params`` settings.
    ws : Workspace
        Work folder (``directions.json``, ``direction_samples.npz``).
    generator : Generator
        The trained generator.
    force : bool
        Refit even if the saved directions are current.

    Returns
    -------
    LatentDirections
        The fitted (or reloaded) directions.

    Raises
    ------
    ValueError
        When no direction at all can be fitted (:func:`~helioforge.interrogate.directions.fit_directions`).
    ProductError
        If reused directions are unreadable.
    """
    made: dict[str, LatentDirections] = {}

    def build() -> None:
        made["directions"], z, params = train.fit_latent_directions(generator, profile)
        made["directions"].save(ws.directions)
        with atomic_path(ws.samples) as tmp:
            np.savez_compressed(tmp, z=z, **{k: v for k, v in params.items()})

    if not ws.run_step("directions", _digests(profile, ws)["directions"], _products(ws, "directions"), build, force=force):
        return LatentDirections.load(ws.directions)
    return made["directions"]


def ensure_calibration(profile: Profile, ws: Workspace, generator: Generator, directions: LatentDirections,
                       force: bool = False) -> Calibration:
    """Calibrate (or reuse) the directions in physical units (``calibration.json``;
    :func:`~helioforge.interrogate.calibrate.calibrate_directions`).

    Parameters
    ----------
    profile : Profile
        ``calibration``, ``params`` and ``data`` settings.
    ws : Workspace
        Work folder.
    generator, directions
        The finished generator and its directions.
    force : bool
        Redo even if the saved calibration is current.

    Returns
    -------
    Calibration

    Raises
    ------
    ValueError
        No direction of TUF, PSEP or R was fitted.
    ProductError
        If a reused calibration is unreadable.
    """
    made: dict[str, Calibration] = {}

    def build() -> None:
        made["c"] = calibrate_directions(generator, directions, profile, progress=True)
        made["c"].save(ws.calibration)

    if not ws.run_step("calibration", _digests(profile, ws)["calibration"], _products(ws, "calibration"), build, force=force):
        return Calibration.load(ws.calibration)
    return made["c"]


def recalibrate(profile: Profile, ws: Workspace, force: bool = False) -> Calibration:
    """The calibration stage on its own (``helioforge directions calibrate``), on the folder's
    finished generator and directions.

    Raises
    ------
    ProductError : the generator or the directions are unfinished, stale or changed.
    """
    with ws.lock():
        require_product(profile, ws, "gan")
        require_product(profile, ws, "directions")
        return ensure_calibration(profile, ws, load_generator(ws.generator), LatentDirections.load(ws.directions), force)


def calibration_metrics(cal: Calibration, profile: Profile) -> dict[str, Any]:
    """The report's view of a calibration.

    Parameters
    ----------
    cal : the calibration. profile : gives the linearity tolerance.

    Returns
    -------
    dict : ``rows`` (:meth:`Calibration.table`), ``scale``, ``random_direction``, ``linearity_tol``.
    """
    return {"rows": cal.table(), "scale": cal.scale, "random_direction": cal.random_direction,
            "linearity_tol": profile.calibration.linearity_tol}


def ensure_simsiam(profile: Profile, ws: Workspace, corpus: Corpus, force: bool = False, device: str = "cpu",
                   **trainer_kw: Any):
    """Train (or reuse, or resume) SimSiam on the real corpus rows of
    :func:`~helioforge.interrogate.data.training_mask`.

    Parameters
    ----------
    profile : Profile
        Settings; the product is reused when its digest matches.
    ws : Workspace
        Work folder (SimSiam lives in ``ws.simsiam_dir``).
    corpus : Corpus
        The real corpus.
    force : bool
        Retrain from scratch.
    device : str
        Device of the returned model.
    **trainer_kw
        ``accelerator``, ``devices``, ``progress`` of :func:`~helioforge.interrogate.simsiam.train_simsiam`.

    Returns
    -------
    (SimSiam, dict)
        The model in eval mode and its JSON sidecar (sizes, final metrics, collapse reference).

    Raises
    ------
    ValueError
        When fewer than two training images remain.
    ProductError
        If the saved model is unreadable or mismatched.
    """
    _train_step(ws, "simsiam", ws.simsiam_dir, force, profile,
                lambda: train.train_embedding(corpus, profile, ws.simsiam_dir, **trainer_kw))
    return load_simsiam(ws.simsiam, device)


def ensure_index(profile: Profile, ws: Workspace, corpus: Corpus, model, force: bool = False) -> RetrievalIndex:
    """Embed the corpus with the SimSiam ``model`` and build (or reuse) the FAISS index with its
    look-up table.

    Parameters
    ----------
    profile : Profile
        Settings (part of the index digest).
    ws : Workspace
        Work folder (``ws.index_dir``).
    corpus : Corpus
        Every corpus image is indexed.
    model : SimSiam
        The trained embedding model.
    force : bool
        Rebuild even if the saved index is current.

    Returns
    -------
    RetrievalIndex
        The built (or reloaded) index.

    Raises
    ------
    ValueError
        If an embedding is not finite.
    ProductError
        If a reused index is unreadable.
    """
    digest = _digests(profile, ws)["index"]
    made: dict[str, RetrievalIndex] = {}

    def build() -> None:
        made["index"] = train.build_index(corpus, model)
        made["index"].save(ws.index_dir, meta={"corpus": str(ws.corpus), "model": str(ws.simsiam), "digest": digest})

    if not ws.run_step("index", digest, _products(ws, "index"), build, force=force):
        return RetrievalIndex.load(ws.index_dir)
    return made["index"]


def train_model(profile: Profile, ws: Workspace, model: str, force: bool = False, **trainer_kw: Any) -> dict[str, Any]:
    """One training stage on its own (``helioforge train gan|simsiam``): build (or reuse) the
    corpus, train (or reuse, or resume) ``model`` (``"gan"`` or ``"simsiam"``) and record the
    profile, holding the work folder's lock. Returns the corpus report (skipped files ...).

    Raises
    ------
    ValueError : an unknown ``model``. RuntimeError : no input patch could be read.
    FolderInUse : another process is working in the folder.
    """
    if model not in ("gan", "simsiam"):
        raise ValueError(f"model must be 'gan' or 'simsiam', got {model!r}")
    profile.data.pin_folders()
    with ws.lock():
        corpus, report = prepare_corpus(profile, ws)
        ensure = ensure_gan if model == "gan" else ensure_simsiam
        ensure(profile, ws, corpus, force, **trainer_kw)
        ws.save_profile(profile)
    return report


def refit_directions(profile: Profile, ws: Workspace, force: bool = False) -> LatentDirections:
    """The directions stage on its own (``helioforge directions fit``): fit (or reuse) the SVM
    directions on the folder's finished generator and record the profile.

    Raises
    ------
    ProductError : the generator is unfinished, stale or changed (never fit on a half-trained one).
    """
    with ws.lock():
        require_product(profile, ws, "gan")
        directions = ensure_directions(profile, ws, load_generator(ws.generator), force)
        ws.save_profile(profile)
    return directions


def rebuild_index(profile: Profile, ws: Workspace, force: bool = False) -> RetrievalIndex:
    """The index stage on its own (``helioforge index build``): embed the corpus with the
    folder's finished SimSiam and build (or reuse) the index.

    Raises
    ------
    ProductError : SimSiam is unfinished, stale or changed.
    """
    with ws.lock():
        corpus, _ = prepare_corpus(profile, ws)
        require_product(profile, ws, "simsiam")
        model, _ = load_simsiam(ws.simsiam)
        return ensure_index(profile, ws, corpus, model, force)


def interrogate(
    profile: Profile,
    workdir: str | Path,
    report_dir: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    accelerator: str = "auto",
    devices: int | str = "auto",
) -> dict[str, Any]:
    """Run the whole interrogator and write the report; returns the metrics dictionary.

    Products go to ``workdir`` (reused by later runs with the same configuration); the report
    (``metrics.json``, ``queries.ecsv``, figures, ``index.html``) to ``report_dir`` (default
    ``workdir/report``). Holds the work folder's lock throughout.

    Raises
    ------
    FolderInUse : another process is working in ``workdir``.
    RuntimeError : no input patch could be read.
    ModelHealthError : a model is unusable (:func:`~helioforge.interrogate.evaluate.health_checks`)
        and ``profile.interrogate.enforce_health`` is set.
    """
    ws = Workspace(Path(workdir))
    profile.data.pin_folders()
    with ws.lock():
        return _interrogate(profile, ws, report_dir, force=force, progress=progress, accelerator=accelerator,
                            devices=devices)


def _interrogate(profile: Profile, ws: "Workspace", report_dir: str | Path | None, *, force: bool, progress: bool,
                 accelerator: str, devices: int | str) -> dict[str, Any]:
    """:func:`interrogate` inside the work folder's lock; the profile is recorded once the
    products it describes are all finished."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    report_dir = Path(report_dir) if report_dir else ws.root / "report"
    kw = dict(progress=progress, accelerator=accelerator, devices=devices)
    device = inference_device(accelerator)

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        log.info("step: %s", name)
        out = fn()
        timings[name] = round(time.perf_counter() - t, 2)
        return out

    corpus, corpus_report = step("corpus", lambda: prepare_corpus(profile, ws, force))
    generator = step("gan", lambda: ensure_gan(profile, ws, corpus, force, device, **kw))
    directions = step("directions", lambda: ensure_directions(profile, ws, generator, force))
    calibration = step("calibration", lambda: ensure_calibration(profile, ws, generator, directions, force))
    simsiam, sim_cfg = step("simsiam", lambda: ensure_simsiam(profile, ws, corpus, force, device, **kw))
    index = step("index", lambda: ensure_index(profile, ws, corpus, simsiam, force))
    ws.save_profile(profile)  # every product is now the profile's: record it (not before)

    direction_metrics = step("direction metrics", lambda: evaluate.direction_metrics(generator, directions, profile))
    queries = step("queries", lambda: evaluate.query_set(generator, simsiam, index, corpus, profile))
    retrieval = step("retrieval metrics", lambda: evaluate.retrieval_metrics(simsiam, corpus, queries, profile))
    health = evaluate.health_checks(queries["q_images"], corpus.images[training_mask(corpus, profile)], sim_cfg,
                                    directions.accuracy)
    metrics = evaluate.run_metrics(profile=profile, corpus=corpus, corpus_report=corpus_report,
                                   gan_config=json.loads(ws.generator.with_suffix(".json").read_text()), simsiam_config=sim_cfg,
                                   directions=directions, direction_metrics=direction_metrics, queries=queries,
                                   retrieval=retrieval, health=health)
    if health["unusable"] and profile.interrogate.enforce_health:
        write_json(report_dir / "metrics.json", {k: metrics[k] for k in ("helioforge", "profile", "health", "corpus")})
        failed = "; ".join(f"{c['name']} = {c['value']:.3g} (limit {c['limit']:.3g}: {c['meaning']})"
                           for c in health["checks"] if not c["ok"] and c["model"] in health["unusable"])
        raise ModelHealthError(f"{ws.root}: unusable model(s) {', '.join(health['unusable'])}: {failed}; "
                               f"no numbers reported (health in {report_dir / 'metrics.json'}); retrain with other "
                               "settings or more data (`--force`)")
    metrics["calibration"] = calibration_metrics(calibration, profile)
    inputs = ReportInputs(metrics=metrics, queries=queries, corpus=corpus, generator=generator, directions=directions,
                          profile=profile, direction_samples=ws.samples)
    step("report figures", lambda: write_report(report_dir, inputs))
    timings["total"] = round(time.perf_counter() - t_start, 2)
    metrics["timings_s"] = timings
    metrics["training_s"] = ws.state().get("training_s", {})
    write_json(report_dir / "metrics.json", metrics)
    write_html(report_dir, metrics)
    log.info("report written to %s (%.1f s)", report_dir, timings["total"])
    return metrics


def _seeded(profile: Profile, k: int) -> Profile:
    """A copy of ``profile`` whose GAN, SimSiam, SVM and query seeds are offset by ``k``."""
    p = Profile.from_dict(profile.to_dict())
    for section in (p.gan, p.simsiam, p.directions, p.interrogate):
        section.seed = int(section.seed) + k
    return p


def _headline_numbers(m: dict[str, Any]) -> dict[str, float]:
    """The numbers a seed study reports: like-for-like correlations and baselines, held-out
    rows, real unseen-region queries, SVM accuracies."""
    out: dict[str, float] = {}
    for name, r in m["correlations"].items():
        for key in ("pearson", "spearman", "shuffled_spearman", "activity_spearman", "oracle_spearman"):
            if key in r:
                out[f"{name} {key}"] = float(r[key])
    for name, r in m["held_out_correlations"].items():
        out[f"held-out {name} spearman"] = float(r["spearman"])
    q = m.get("real_held_out_queries") or {}
    if q.get("n_queries"):
        out["unseen-region queries: active match fraction"] = float(q["match_active_fraction"])
        out["unseen-region queries: TUF spearman"] = float(q["TUF"]["spearman"])
    for name, v in m["svm_accuracy"].items():
        out[f"SVM {name} accuracy"] = float(v)
    return out


def interrogate_seeds(profile: Profile, workdir: str | Path, seeds: int, **kw: Any) -> dict[str, Any]:
    """The whole pipeline ``seeds`` times (seed offsets 0 … K−1 of GAN, SimSiam, SVM and
    queries; the corpus and the held-out regions stay the same), each in
    ``workdir/seed_<k>``; returns and writes ``workdir/seeds_summary.json``: every headline
    number as mean ± std (ddof 1) over the seeds, with the per-seed values.

    Parameters
    ----------
    profile : Profile
        Base profile; seed k adds k to the seeds of ``gan``, ``simsiam``, ``directions`` and ``interrogate``.
    workdir : str or Path
        Parent folder of the per-seed work folders.
    seeds : int
        Number of seeds K (≥ 2).
    **kw
        Passed to :func:`interrogate` (``report_dir``, ``force``, ``progress``, ...).

    Returns
    -------
    dict
        ``profile``, ``seeds`` and ``numbers``: headline name → ``{mean, std, values}`` (NaN ignored in
        mean and std; only numbers every seed has).

    Raises
    ------
    InputError
        For fewer than 2 seeds.
    FolderInUse, RuntimeError, ModelHealthError
        As :func:`interrogate`, for any seed.
    """
    check_count("--seeds", seeds, minimum=2)
    root = Path(workdir)
    per_seed = []
    for k in range(seeds):
        log.info("seed %d of %d", k + 1, seeds)
        per_seed.append(_headline_numbers(interrogate(_seeded(profile, k), root / f"seed_{k}", **kw)))
    keys = [k for k in per_seed[0] if all(k in s for s in per_seed)]
    summary = {"profile": profile.name, "seeds": seeds,
               "numbers": {k: {"mean": float(np.nanmean([s[k] for s in per_seed])),
                               "std": float(np.nanstd([s[k] for s in per_seed], ddof=1)),
                               "values": [s[k] for s in per_seed]} for k in keys}}
    write_json(root / "seeds_summary.json", summary)
    return summary
