"""The generative interrogator end to end (Chatterjee et al. 2025, Fig. 1).

read SHARP + full-disk tiles → corpus → GAN → SVM latent directions → SimSiam → FAISS index →
Q generated queries → nearest real match → physical parameters of both → metrics and report.

All products live in one work folder (:class:`Workspace`). Every step records a digest of the
configuration it was made with; a later run reuses a product whose digest still matches and
redoes (or resumes) the ones that do not.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from helioforge import __version__
from helioforge.interrogate.config import Profile
from helioforge.interrogate.data import CORPUS_FORMAT, SOURCE_SHARP, SOURCE_TILE, Corpus, build_corpus
from helioforge.interrogate.directions import LatentDirections, conditioning_effect, fit_directions, monotonicity
from helioforge.interrogate.gan import Generator, generate, load_generator, train_gan
from helioforge.interrogate.retrieval import RetrievalIndex
from helioforge.interrogate.simsiam import embed, load_simsiam, train_simsiam
from helioforge.io import atomic_path, write_json
from helioforge.nn.training import inference_device
from helioforge.physics.params import compute_params, is_active
from helioforge.errors import HelioforgeError as HelioforgeErrorBase
from helioforge.errors import ProductError
from helioforge.interrogate.evaluation import like_for_like, real_query_check, retrieval_table
from helioforge.workspace import StepState

__all__ = [
    "Workspace",
    "PAPER_CORRELATIONS",
    "image_params",
    "prepare_corpus",
    "ensure_gan",
    "ensure_directions",
    "ensure_simsiam",
    "ensure_index",
    "Interrogator",
    "interrogate",
]

log = logging.getLogger(__name__)

#: Pearson / Spearman correlations between generated queries and their real matches
#: (paper §Querying: TUF 0.78/0.79, PSEP 0.28/0.31, R 0.73/0.76 in the text, TPF 0.69/0.70, TNF 0.72/0.72).
PAPER_CORRELATIONS = {
    "TUF": (0.78, 0.79),
    "PSEP": (0.28, 0.31),
    "R": (0.73, 0.76),
    "TPF": (0.69, 0.70),
    "TNF": (0.72, 0.72),
}
CORRELATED_PARAMS = tuple(PAPER_CORRELATIONS)


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
    index_dir = property(lambda self: self.root / "index")
    profile_file = property(lambda self: self.root / "profile.json")

    def save_profile(self, profile: Profile) -> None:
        """Store the profile the work folder is made with (``profile.json``)."""
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


def image_params(images: np.ndarray | torch.Tensor, profile: Profile) -> dict[str, np.ndarray]:
    """Physical parameters of preprocessed images (n, 1, N, N) with the profile's threshold
    (150 G / clip) and dilation kernel, as NumPy arrays (units: 1000 G × pixels of the N×N grid)."""
    n = int(np.asarray(images.shape)[-1])
    out = compute_params(
        images,
        threshold=profile.params.threshold_gauss / profile.data.clip_gauss,
        dilation_px=profile.params.dilation_px(n),
    )
    return {k: v.cpu().numpy() for k, v in out.items()}


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
        "simsiam": (ws.simsiam.with_suffix(".safetensors"), ws.simsiam.with_suffix(".json")),
        "index": (ws.index_dir / RetrievalIndex.INDEX_FILE, ws.index_dir / RetrievalIndex.LUT_FILE),
    }[step]


#: The command that rebuilds each product of a work folder (``{w}``: the folder).
REBUILD = {
    "corpus": "helioforge interrogate -w {w}",
    "gan": "helioforge train gan -w {w} (or helioforge interrogate -w {w})",
    "directions": "helioforge directions fit -w {w}",
    "simsiam": "helioforge train simsiam -w {w}",
    "index": "helioforge index build -w {w}",
}


def require_product(profile: Profile, ws: "Workspace", step: str) -> None:
    """Raise :class:`~helioforge.errors.ProductError` unless ``step``'s product in ``ws`` is
    finished, made from what ``profile`` and the upstream products say now, and unchanged on
    disk; the message names the file and the command that rebuilds it."""
    ws.require(step, _digests(profile, ws)[step], *_products(ws, step), rebuild=REBUILD[step].format(w=ws.root))


def _train_step(ws: Workspace, step: str, folder: Path, force: bool, profile: Profile, train: Callable[[], Any]) -> None:
    """Run ``train`` for ``step``: keep a resumable checkpoint only when it was made with the
    same configuration (up to the epoch count) and ``force`` is off; the product is marked
    current only once training has finished."""
    d = _digests(profile, ws)
    resume = ws.state().get(f"{step}_resume")
    resume = resume.get("digest") if isinstance(resume, dict) else resume
    if force or resume != d[f"{step}_resume"]:
        _reset_training(folder)
    ws.unmark(step)
    ws.mark(f"{step}_resume", d[f"{step}_resume"])
    t0 = time.perf_counter()
    train()
    ws.record_time(step, time.perf_counter() - t0)
    ws.mark(step, d[step], *_products(ws, step))


def usflux_check(profile: Profile) -> dict[str, Any]:
    """Spearman ρ between TUF (Mx, over the HARP region) and the header USFLUX on the SHARP
    frames of the profile's folders (issue requirement; expected ≥ 0.9). Also gives ρ for TUF
    over all pixels and how the HARP region was found for each frame."""
    from scipy.stats import spearmanr

    from helioforge.data.sharp import harp_region_mask, read_sharp_folder
    from helioforge.interrogate.evaluation import correlation_ci
    from helioforge.physics.params import physical_params, schrijver_r

    sharp_log = logging.getLogger("helioforge.data.sharp")
    level = sharp_log.level
    sharp_log.setLevel(logging.ERROR)  # the corpus step has already reported these files
    try:
        patches = [p for folder in profile.data.sharp_paths() if folder.is_dir() for p in read_sharp_folder(folder)[0]]
    finally:
        sharp_log.setLevel(level)
    r_ours, r_header, flux_baseline = [], [], []
    for p in patches:  # Schrijver's R on the whole patch (as SHARP computes R_VALUE) vs the header
        if p.r_value is not None and np.isfinite(p.r_value):
            r_ours.append(schrijver_r(p.Br, p.pixel_size_mm, profile.params.threshold_gauss)["R_schrijver_sharp"])
            r_header.append(p.r_value)
            flux_baseline.append(np.log10(p.usflux) if p.usflux else float("nan"))
    us, region, every, sources = [], [], [], []
    for p in patches:
        if p.usflux is None or not np.isfinite(p.usflux):
            continue
        mask, source = harp_region_mask(p, profile.params.threshold_gauss)
        kw = dict(threshold_gauss=profile.params.threshold_gauss, r_kernel_mm=profile.params.r_kernel_mm)
        region.append(physical_params(p.Br, p.pixel_size_mm, mask=mask, schrijver=False, **kw)["TUF"])
        every.append(physical_params(p.Br, p.pixel_size_mm, schrijver=False, **kw)["TUF"])
        us.append(p.usflux)
        sources.append(source.split(" ")[0])
    if len(us) < 3:
        return {"n": len(us), "spearman": float("nan"), "note": "fewer than 3 SHARP frames with USFLUX"}
    return {
        "n": len(us),
        "spearman": float(spearmanr(region, us).statistic),
        "spearman_all_pixels": float(spearmanr(every, us).statistic),
        "region_from": {k: sources.count(k) for k in sorted(set(sources))},
        "R_schrijver_vs_R_VALUE": correlation_ci(np.asarray(r_ours, float), np.asarray(r_header, float), 2000),
        "log_USFLUX_vs_R_VALUE": correlation_ci(np.asarray(flux_baseline, float), np.asarray(r_header, float), 2000),
    }


def prepare_corpus(profile: Profile, ws: Workspace, force: bool = False) -> tuple[Corpus, dict[str, Any]]:
    """Build (or reuse) the real corpus: SHARP Br patches + on-disk full-disk tiles.

    Returns ``(corpus, corpus_report)`` where the report lists the skipped files with their
    problem, the reader warnings (repaired headers) and the TUF–USFLUX check. Raises
    ``RuntimeError`` when no patch at all could be read.
    """
    digest = _digests(profile, ws)["corpus"]
    if not force and ws.is_current("corpus", digest, *_products(ws, "corpus")):
        log.info("reusing corpus %s", ws.corpus)
        return Corpus.load(ws.corpus), json.loads(ws.corpus_report.read_text())
    t0 = time.perf_counter()
    ws.unmark("corpus")
    try:
        corpus, skipped = build_corpus(profile.data, fulldisk=profile.data.use_fulldisk)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None
    corpus.save(ws.corpus)
    report = {
        "skipped": [{"file": str(s.path), "reason": s.reason} for s in skipped],
        "warnings": list(corpus.warnings),
        "usflux_check": usflux_check(profile),
    }
    write_json(ws.corpus_report, report)
    ws.record_time("corpus", time.perf_counter() - t0)
    ws.mark("corpus", digest, *_products(ws, "corpus"))
    return corpus, report


class ModelHealthError(HelioforgeErrorBase):
    """A trained model is unusable (mode collapse, embedding collapse, directions at chance)."""


def holdout_harps(corpus: Corpus, profile: Profile) -> list[int]:
    """HARPs held out of GAN and SimSiam training: up to ``profile.data.holdout_harps`` of the
    corpus's HARPs, drawn with ``profile.data.holdout_seed``, taken in the drawn order only while
    the rest of the corpus keeps at least one GAN batch to train on and two HARPs (on a small
    corpus such as the embedded sample fewer are held out); ``[]`` when none can be."""
    harps_all = np.asarray(corpus.table["HARPNUM"], int)
    harps = sorted({int(h) for h in harps_all if int(h) > 0})
    if int(profile.data.holdout_harps) <= 0 or len(harps) < 3:
        return []
    rng = np.random.default_rng(profile.data.holdout_seed)
    chosen: list[int] = []
    for h in rng.permutation(harps):
        if len(chosen) >= int(profile.data.holdout_harps) or len(chosen) >= len(harps) - 2:
            break
        left = int((~np.isin(harps_all, [*chosen, int(h)])).sum())
        if left >= int(profile.gan.batch_size):
            chosen.append(int(h))
    return sorted(chosen)


def training_mask(corpus: Corpus, profile: Profile) -> np.ndarray:
    """(n,) bool: corpus rows the GAN and SimSiam train on (all but the held-out HARPs)."""
    return ~np.isin(np.asarray(corpus.table["HARPNUM"], int), holdout_harps(corpus, profile))


def ensure_gan(profile: Profile, ws: Workspace, corpus: Corpus, force: bool = False, device: str = "cpu",
               **trainer_kw: Any) -> Generator:
    """Train (or reuse, or resume) the GAN on the corpus; return the selected generator on ``device``."""
    if force or not ws.is_current("gan", _digests(profile, ws)["gan"], *_products(ws, "gan")):
        threshold = profile.params.threshold_gauss / profile.data.clip_gauss
        keep = training_mask(corpus, profile)
        active = is_active(corpus.images[keep], threshold, profile.gan.active_min_area)
        _train_step(ws, "gan", ws.gan_dir, force, profile,
                    lambda: train_gan(corpus.images[keep], profile.gan, ws.gan_dir, active=active, **trainer_kw))
    else:
        log.info("reusing generator %s", ws.generator)
    return load_generator(ws.generator, device)


def _reset_training(folder: Path) -> None:
    """Remove a stale resumable state made with another configuration."""
    stale = folder / "checkpoints" / "last.safetensors"
    if stale.exists():
        log.info("configuration changed: discarding %s", stale)
        stale.unlink()


def params_of_latent(generator: Generator, profile: Profile, chunk: int = 1000) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """z (M, latent_dim) → parameters of G(z), generated and measured ``chunk`` images at a time
    (M = 10⁴ images of 128² would otherwise hold ~650 MB at once)."""
    from helioforge.progress import track

    def fn(z: np.ndarray) -> dict[str, np.ndarray]:
        z = np.asarray(z, dtype=np.float32)
        starts = range(0, len(z), chunk)
        if len(z) > chunk:
            starts = track(starts, f"generating + measuring {len(z)} images", unit="chunk", leave=False)
        parts = [image_params(generate(generator, z[i : i + chunk], progress=False), profile) for i in starts]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    return fn


def ensure_directions(profile: Profile, ws: Workspace, generator: Generator, force: bool = False) -> LatentDirections:
    """Fit (or reuse) the SVM latent directions on M generated samples."""
    digest = _digests(profile, ws)["directions"]
    if not force and ws.is_current("directions", digest, *_products(ws, "directions")):
        return LatentDirections.load(ws.directions)
    ws.unmark("directions")
    cfg = profile.directions
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    z = rng.standard_normal((cfg.n_samples, generator.latent_dim)).astype(np.float32)
    params = params_of_latent(generator, profile)(z)
    directions = fit_directions(z, params, cfg)
    directions.save(ws.directions)
    with atomic_path(ws.samples) as tmp:
        np.savez_compressed(tmp, z=z, **{k: v for k, v in params.items()})
    ws.record_time("directions", time.perf_counter() - t0)
    ws.mark("directions", digest, *_products(ws, "directions"))
    return directions


def ensure_simsiam(profile: Profile, ws: Workspace, corpus: Corpus, force: bool = False, device: str = "cpu",
                   **trainer_kw: Any):
    """Train (or reuse, or resume) SimSiam on the real corpus; returns ``(model, config)``."""
    if force or not ws.is_current("simsiam", _digests(profile, ws)["simsiam"], *_products(ws, "simsiam")):
        _train_step(ws, "simsiam", ws.simsiam_dir, force, profile,
                    lambda: train_simsiam(corpus.images[training_mask(corpus, profile)], profile.simsiam, ws.simsiam_dir,
                                          **trainer_kw))
    return load_simsiam(ws.simsiam, device)


def ensure_index(profile: Profile, ws: Workspace, corpus: Corpus, model, force: bool = False) -> RetrievalIndex:
    """Embed the corpus and build (or reuse) the FAISS index with its look-up table."""
    digest = _digests(profile, ws)["index"]
    if not force and ws.is_current("index", digest, *_products(ws, "index")):
        return RetrievalIndex.load(ws.index_dir)
    ws.unmark("index")
    vectors = embed(model, corpus.images)
    index = RetrievalIndex.build(vectors, corpus.table)
    index.save(ws.index_dir, meta={"corpus": str(ws.corpus), "model": str(ws.simsiam), "digest": digest})
    ws.mark("index", digest, *_products(ws, "index"))
    return index


class Interrogator:
    """Trained models of a work folder, ready to generate and search.

    Built by :meth:`from_workspace`; ``generator``, ``directions``, ``simsiam``, ``index`` and
    ``corpus`` are loaded once. Queries may be latent vectors, arrays or FITS files.
    """

    def __init__(self, profile: Profile, generator: Generator, directions: LatentDirections | None,
                 simsiam, index: RetrievalIndex, corpus: Corpus | None = None):
        self.profile = profile
        self.generator = generator
        self.directions = directions
        self.simsiam = simsiam
        self.index = index
        self.corpus = corpus
        #: why ``directions`` is None (not fitted, stale ...), for the message of a move
        self.directions_problem: str | None = None

    @classmethod
    def from_workspace(cls, root: str | Path, with_index: bool = True) -> "Interrogator":
        """Load what a previous ``interrogate`` (or the train steps) wrote in ``root``; with
        ``with_index=False`` only the generator and directions (enough to generate).
        Every product is checked first (:func:`require_product`): a half-trained generator, an
        index of another corpus or a file changed since it was written is refused. Directions
        that were never fitted give ``directions=None``. Read-only: the folder is not created.

        Raises
        ------
        FileNotFoundError : no such work folder, or no profile in it (nothing was finished).
        ProductError : a product is unfinished, stale, changed or unreadable (names the file
            and the command that rebuilds it).
        """
        ws = Workspace(Path(root), create=False)
        if not ws.root.is_dir():
            raise FileNotFoundError(f"{ws.root}: no such work folder")
        profile = ws.load_profile()
        require_product(profile, ws, "gan")
        generator = load_generator(ws.generator)
        directions, why_none = None, "no latent directions yet (run `helioforge directions fit`)"
        if ws.state().get("directions") is not None or ws.directions.exists():
            try:
                require_product(profile, ws, "directions")
                directions = LatentDirections.load(ws.directions)
            except ProductError as exc:  # generation without moves still works; moves say why not
                why_none = str(exc)
        if not with_index:
            itg = cls(profile, generator, directions, None, None)
            itg.directions_problem = why_none
            return itg
        for step in ("corpus", "simsiam", "index"):
            require_product(profile, ws, step)
        simsiam, _ = load_simsiam(ws.simsiam)
        corpus = Corpus.load(ws.corpus)
        itg = cls(profile, generator, directions, simsiam, RetrievalIndex.load(ws.index_dir), corpus)
        itg.directions_problem = why_none
        return itg

    def images_from_latent(self, z: np.ndarray) -> np.ndarray:
        """G(z): latent vectors (n, latent_dim) → images (n, 1, N, N) in [-1, 1]."""
        return generate(self.generator, np.atleast_2d(z))

    def search_images(self, images: np.ndarray, k: int = 5):
        """Top-k real matches for preprocessed images (n, 1, N, N) in [-1, 1]."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None, None]
        n = self.profile.data.image_size
        if images.shape[-2:] != (n, n):
            raise ValueError(f"query images must be {n}×{n} (preprocessed); got {images.shape[-2:]}")
        return self.index.matches(embed(self.simsiam, images), k)

    def search_latent(self, z: np.ndarray, k: int = 5):
        """Top-k real matches for the images generated from latent vectors z (n, latent_dim)."""
        return self.search_images(self.images_from_latent(z), k)

    def search_array(self, Br_gauss: np.ndarray, k: int = 5):
        """Top-k real matches for a native-resolution Br map in Gauss (any shape)."""
        from helioforge.data.preprocess import preprocess_br

        img = preprocess_br(Br_gauss, self.profile.data.image_size, self.profile.data.clip_gauss)
        return self.search_images(img[None, None], k)

    def search_fits(self, path: str | Path, k: int = 5):
        """Top-k real matches for a FITS file: a SHARP Br patch (Gauss) or a helioforge-generated
        image (``HF_MODEL`` card; values already in units of the clip field)."""
        from astropy.io import fits

        from helioforge.data.sharp import read_sharp

        path = Path(path)
        try:
            with fits.open(path) as hdul:
                if "HF_MODEL" in hdul[0].header:  # one image (N, N) or a cube (n, N, N)
                    img = np.array(hdul[0].data, dtype=np.float32)
                    if img.ndim < 2 or not np.isfinite(img).all() or not np.abs(img).max() > 0:
                        from helioforge.errors import InputError

                        raise InputError(f"{path}: generated image is empty, all zero or not finite; nothing to search for")
                    return self.search_images(img.reshape(-1, 1, *img.shape[-2:]), k)
        except OSError:
            pass
        return self.search_array(read_sharp(path, with_companions=False).Br, k)


def _headline(like: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The paper-comparable correlations (like-for-like row: SHARP database, active queries)
    with their interval, the three baselines' Spearman ρ and the paper's values."""
    out = {}
    sim = like.get("simsiam")
    for name in CORRELATED_PARAMS:
        r = sim[name] if sim else {"pearson": float("nan"), "spearman": float("nan"), "n": 0,
                                   "pearson_ci": [float("nan")] * 2, "spearman_ci": [float("nan")] * 2}
        out[name] = {**r, "paper_pearson": PAPER_CORRELATIONS[name][0], "paper_spearman": PAPER_CORRELATIONS[name][1],
                     **{f"{m}_spearman": like[m][name]["spearman"] for m in ("shuffled", "activity", "oracle") if m in like},
                     **{f"{m}_spearman_ci": like[m][name]["spearman_ci"] for m in ("shuffled", "activity", "oracle") if m in like}}
    return out


#: Health limits: below them a model is unusable and the run stops instead of reporting numbers.
GAN_DIVERSITY_MIN = 0.2      # mean pairwise distance of generated images / that of real ones
SIMSIAM_STD_MIN_FACTOR = 0.5  # embedding std per dimension / (1/sqrt(d)); 0 is total collapse
SVM_CHANCE_MAX = 0.55        # validation accuracy at or below this is chance (two balanced classes)


def _pairwise_spread(images: np.ndarray, n: int = 200, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    x = x[rng.choice(len(x), size=min(n, len(x)), replace=False)]
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    return float(d[np.triu_indices(len(x), 1)].mean()) if len(x) > 1 else 0.0


def health_checks(q_images: np.ndarray, real_images: np.ndarray, sim_cfg: dict[str, Any], svm_accuracy: dict[str, float]) -> dict[str, Any]:
    """Mode collapse of the GAN, embedding collapse of SimSiam, SVM directions at chance.

    Returns ``{"checks": [{name, ok, value, limit, meaning}], "unusable": [names]}``: the GAN is
    unusable when generated images are ``GAN_DIVERSITY_MIN`` times less spread than real ones,
    SimSiam when its embedding std per dimension is below half of 1/√d, the directions when
    every SVM is at chance.
    """
    checks = []
    ratio = _pairwise_spread(q_images) / max(_pairwise_spread(real_images), 1e-12)
    checks.append({"name": "GAN diversity (generated / real pairwise distance)", "value": ratio, "limit": GAN_DIVERSITY_MIN,
                   "ok": ratio >= GAN_DIVERSITY_MIN, "model": "GAN", "meaning": "mode collapse below the limit"})
    z_std = float((sim_cfg.get("final_metrics") or {}).get("z_std", float("nan")))
    ref = float(sim_cfg.get("collapse_reference_z_std") or (1.0 / np.sqrt(float(sim_cfg.get("out_dim", 100)))))
    checks.append({"name": "SimSiam embedding std per dimension", "value": z_std, "limit": SIMSIAM_STD_MIN_FACTOR * ref,
                   "ok": bool(z_std >= SIMSIAM_STD_MIN_FACTOR * ref), "model": "SimSiam",
                   "meaning": f"collapse below the limit (1/sqrt(d) = {ref:.3f} for a healthy embedding)"})
    for k, v in svm_accuracy.items():
        checks.append({"name": f"SVM {k} validation accuracy", "value": float(v), "limit": SVM_CHANCE_MAX,
                       "ok": float(v) > SVM_CHANCE_MAX, "model": "directions", "meaning": "at chance at or below the limit"})
    unusable = sorted({c["model"] for c in checks if not c["ok"] and c["model"] != "directions"})
    svm = [c for c in checks if c["model"] == "directions"]
    if svm and not any(c["ok"] for c in svm):
        unusable.append("directions")
    return {"checks": checks, "unusable": unusable}


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
    from helioforge.interrogate.report import write_html, write_report

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
    simsiam, sim_cfg = step("simsiam", lambda: ensure_simsiam(profile, ws, corpus, force, device, **kw))
    index = step("index", lambda: ensure_index(profile, ws, corpus, simsiam, force))
    ws.save_profile(profile)  # every product is now the profile's: record it (not before)

    def evaluate() -> dict[str, Any]:
        params_fn = params_of_latent(generator, profile)
        dcfg = profile.directions
        rng = np.random.default_rng(dcfg.seed + 1000)
        z_base = rng.standard_normal((dcfg.n_base, generator.latent_dim))
        eps = np.linspace(-dcfg.eps_max, dcfg.eps_max, dcfg.n_eps)
        mono = monotonicity(z_base, directions, params_fn, eps)
        cond = conditioning_effect(z_base, directions, params_fn, dcfg.eps_max, "TUF", ("R",))
        return {"monotonicity": mono, "conditioning_TUF_given_R": cond}

    direction_metrics = step("direction metrics", evaluate)

    def query() -> dict[str, Any]:
        icfg = profile.interrogate
        rng = np.random.default_rng(icfg.seed)
        z = rng.standard_normal((icfg.n_queries, generator.latent_dim)).astype(np.float32)
        q_images = generate(generator, z, progress=True)
        scores, rows = index.search(embed(simsiam, q_images), icfg.top_k)
        m_images = corpus.images[rows[:, 0]]
        return {"z": z, "q_images": q_images, "scores": scores, "rows": rows, "m_images": m_images,
                "q_params": image_params(q_images, profile), "m_params": image_params(m_images, profile),
                "corpus_params": image_params(corpus.images, profile)}

    res = step("queries", query)

    def retrieval() -> dict[str, Any]:
        icfg = profile.interrogate
        threshold = profile.params.threshold_gauss / profile.data.clip_gauss
        c_vec, q_vec = embed(simsiam, corpus.images), embed(simsiam, res["q_images"])
        c_active = is_active(corpus.images, threshold, profile.gan.active_min_area)
        q_active = is_active(res["q_images"], threshold, profile.gan.active_min_area)
        src = np.asarray(corpus.table["source"])
        held = holdout_harps(corpus, profile)
        is_held = np.isin(np.asarray(corpus.table["HARPNUM"], int), held)
        rows = np.arange(len(corpus))
        databases = {"all": rows, "sharp": rows[src == SOURCE_SHARP], "fulldisk_tile": rows[src == SOURCE_TILE],
                     "sharp_held_out": rows[is_held]}
        table = retrieval_table(q_vec, c_vec, res["q_params"], res["corpus_params"], q_active, c_active, databases,
                                icfg.n_bootstrap, icfg.seed)
        real = real_query_check(c_vec[is_held], c_vec, np.asarray(res["corpus_params"]["TUF"])[is_held],
                                res["corpus_params"], c_active, rows[~is_held], icfg.n_bootstrap, icfg.seed)
        sharp_harps = sorted({int(h) for h in np.asarray(corpus.table["HARPNUM"])[src == SOURCE_SHARP]})
        return {"table": table, "like_for_like": like_for_like(table), "held_out": like_for_like(table, "sharp_held_out"),
                "real_held_out_queries": real, "held_out_harps": held, "n_sharp_regions": len(sharp_harps),
                "n_active_queries": int(q_active.sum()), "corpus_active_fraction": float(c_active.mean())}

    ret = step("retrieval metrics", retrieval)
    correlations = _headline(ret["like_for_like"])
    health = health_checks(res["q_images"], corpus.images[training_mask(corpus, profile)], sim_cfg, directions.accuracy)

    gen_cfg = json.loads(ws.generator.with_suffix(".json").read_text())
    n_sharp = int(np.sum(corpus.table["source"] == SOURCE_SHARP))
    metrics: dict[str, Any] = {
        "helioforge": __version__,
        "profile": profile.name,
        "image_size": profile.data.image_size,
        "health": health,
        "corpus": {"n_patches": len(corpus), "n_sharp": n_sharp, "n_fulldisk_tiles": len(corpus) - n_sharp,
                   "n_sharp_regions": ret["n_sharp_regions"], "sources": "SHARP + full-disk tiles" if profile.data.use_fulldisk
                   else "SHARP only (as the paper)", "held_out_harps": ret["held_out_harps"],
                   "active_fraction": ret["corpus_active_fraction"],
                   "n_skipped": len(corpus_report["skipped"]), **corpus_report},
        "gan": {"selected_epoch": gen_cfg.get("selected_epoch"), "d_accuracy": gen_cfg.get("d_accuracy"),
                "epochs": profile.gan.epochs},
        "simsiam": {"final_metrics": sim_cfg.get("final_metrics", {}),
                    "collapse_reference_z_std": sim_cfg.get("collapse_reference_z_std")},
        "svm_accuracy": directions.accuracy,
        "svm_train_accuracy": directions.train_accuracy,
        "svm_skipped": directions.skipped,
        "n_direction_samples": profile.directions.n_samples,
        "eps_max": profile.directions.eps_max,
        **direction_metrics,
        "n_queries": profile.interrogate.n_queries,
        "match_cosine": {"mean": float(res["scores"][:, 0].mean()), "min": float(res["scores"][:, 0].min())},
        "n_unique_matches": int(len(np.unique(res["rows"][:, 0]))),
        "n_active_queries": ret["n_active_queries"],
        "correlations": correlations,
        "like_for_like": "SHARP database, active generated queries (the paper searched SHARP patches)",
        "held_out_correlations": _headline(ret["held_out"]),
        "real_held_out_queries": ret["real_held_out_queries"],
        "retrieval_table": ret["table"],
    }
    if health["unusable"] and profile.interrogate.enforce_health:
        write_json(report_dir / "metrics.json", {k: metrics[k] for k in ("helioforge", "profile", "health", "corpus")})
        failed = "; ".join(f"{c['name']} = {c['value']:.3g} (limit {c['limit']:.3g}: {c['meaning']})"
                           for c in health["checks"] if not c["ok"] and c["model"] in health["unusable"])
        raise ModelHealthError(f"{ws.root}: unusable model(s) {', '.join(health['unusable'])}: {failed}; "
                               f"no numbers reported (health in {report_dir / 'metrics.json'}); retrain with other "
                               "settings or more data (`--force`)")
    step("report figures", lambda: write_report(report_dir, metrics, res, corpus, generator, directions, profile, ws))
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

    Raises ``InputError`` for fewer than 2 seeds.
    """
    from helioforge.errors import check_count

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
