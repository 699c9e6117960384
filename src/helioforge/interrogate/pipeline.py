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
from scipy.stats import pearsonr, spearmanr

from helioforge import __version__
from helioforge.config import Profile
from helioforge.data.corpus import Corpus, build_corpus
from helioforge.data.sharp import Skipped
from helioforge.interrogate.directions import LatentDirections, conditioning_effect, fit_directions, monotonicity
from helioforge.interrogate.gan import Generator, generate, load_generator, train_gan
from helioforge.interrogate.retrieval import RetrievalIndex
from helioforge.interrogate.simsiam import embed, load_simsiam, train_simsiam
from helioforge.io import write_json
from helioforge.physics.params import compute_params, is_active

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
class Workspace:
    """Paths of the products of one interrogator run under ``root``."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    corpus = property(lambda self: self.root / "corpus.fits")
    skipped = property(lambda self: self.root / "skipped.json")
    gan_dir = property(lambda self: self.root / "gan")
    generator = property(lambda self: self.root / "gan" / "generator")
    simsiam_dir = property(lambda self: self.root / "simsiam")
    simsiam = property(lambda self: self.root / "simsiam" / "simsiam")
    directions = property(lambda self: self.root / "directions.json")
    samples = property(lambda self: self.root / "direction_samples.npz")
    index_dir = property(lambda self: self.root / "index")
    state_file = property(lambda self: self.root / "state.json")
    profile_file = property(lambda self: self.root / "profile.json")

    def state(self) -> dict[str, str]:
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}

    def mark(self, step: str, digest: str) -> None:
        state = self.state()
        state[step] = digest
        write_json(self.state_file, state)

    def record_time(self, step: str, seconds: float) -> None:
        """Remember how long making ``step``'s product took (shown in later reports)."""
        state = self.state()
        state.setdefault("training_s", {})[step] = round(seconds, 1)
        write_json(self.state_file, state)

    def is_current(self, step: str, digest: str, *paths: Path) -> bool:
        return self.state().get(step) == digest and all(p.exists() for p in paths)

    def save_profile(self, profile: Profile) -> None:
        write_json(self.profile_file, profile.to_dict())

    def load_profile(self) -> Profile:
        if not self.profile_file.is_file():
            raise FileNotFoundError(f"{self.profile_file}: no profile in this work folder (run a training step first)")
        return Profile.from_dict(json.loads(self.profile_file.read_text()))


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


def _digest(profile: Profile, step: str) -> str:
    sections = {
        "corpus": ("data",),
        "gan": ("data", "gan"),
        "directions": ("data", "params", "gan", "directions"),
        "simsiam": ("data", "simsiam"),
        "index": ("data", "simsiam"),
    }[step]
    return profile.digest(*sections)


def prepare_corpus(profile: Profile, ws: Workspace, force: bool = False) -> tuple[Corpus, list[dict[str, str]]]:
    """Build (or reuse) the real corpus: SHARP Br patches + on-disk full-disk tiles."""
    digest = _digest(profile, "corpus")
    if not force and ws.is_current("corpus", digest, ws.corpus, ws.skipped):
        log.info("reusing corpus %s", ws.corpus)
        return Corpus.load(ws.corpus), json.loads(ws.skipped.read_text())
    t0 = time.perf_counter()
    corpus, skipped = build_corpus(profile.data)
    if len(corpus) == 0:
        raise RuntimeError(f"no readable patches in {profile.data.sharp_path()} or {profile.data.fulldisk_path()}")
    corpus.save(ws.corpus)
    ws.record_time("corpus", time.perf_counter() - t0)
    skipped_rows = [{"file": str(s.path), "reason": s.reason} for s in skipped]
    write_json(ws.skipped, skipped_rows)
    ws.mark("corpus", digest)
    return corpus, skipped_rows


def ensure_gan(profile: Profile, ws: Workspace, corpus: Corpus, force: bool = False, **trainer_kw: Any) -> Generator:
    """Train (or reuse, or resume) the GAN on the corpus and return the selected generator."""
    digest = _digest(profile, "gan")
    if not force and ws.is_current("gan", digest, ws.generator.with_suffix(".safetensors")):
        log.info("reusing generator %s", ws.generator)
    else:
        if ws.state().get("gan_started") != digest:
            _reset_training(ws.gan_dir)
        ws.mark("gan_started", digest)
        t0 = time.perf_counter()
        active = is_active(corpus.images, profile.params.threshold_gauss / profile.data.clip_gauss, profile.gan.active_min_area)
        train_gan(corpus.images, profile.gan, ws.gan_dir, active=active, **trainer_kw)
        ws.record_time("gan", time.perf_counter() - t0)
        ws.mark("gan", digest)
    return load_generator(ws.generator)


def _reset_training(folder: Path) -> None:
    """Remove a stale resumable state made with another configuration."""
    stale = folder / "checkpoints" / "last.safetensors"
    if stale.exists():
        log.info("configuration changed: discarding %s", stale)
        stale.unlink()


def _params_fn(generator: Generator, profile: Profile) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    return lambda z: image_params(generate(generator, z), profile)


def ensure_directions(profile: Profile, ws: Workspace, generator: Generator, force: bool = False) -> LatentDirections:
    """Fit (or reuse) the SVM latent directions on M generated samples."""
    digest = _digest(profile, "directions")
    if not force and ws.is_current("directions", digest, ws.directions, ws.samples):
        return LatentDirections.load(ws.directions)
    cfg = profile.directions
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    z = rng.standard_normal((cfg.n_samples, generator.latent_dim)).astype(np.float32)
    params = _params_fn(generator, profile)(z)
    directions = fit_directions(z, params, cfg)
    directions.save(ws.directions)
    np.savez_compressed(ws.samples, z=z, **{k: v for k, v in params.items()})
    ws.record_time("directions", time.perf_counter() - t0)
    ws.mark("directions", digest)
    return directions


def ensure_simsiam(profile: Profile, ws: Workspace, corpus: Corpus, force: bool = False, **trainer_kw: Any):
    """Train (or reuse) SimSiam on the real corpus; returns ``(model, config)``."""
    digest = _digest(profile, "simsiam")
    if force or not ws.is_current("simsiam", digest, ws.simsiam.with_suffix(".safetensors")):
        if ws.state().get("simsiam_started") != digest:
            _reset_training(ws.simsiam_dir)
        ws.mark("simsiam_started", digest)
        t0 = time.perf_counter()
        train_simsiam(corpus.images, profile.simsiam, ws.simsiam_dir, **trainer_kw)
        ws.record_time("simsiam", time.perf_counter() - t0)
        ws.mark("simsiam", digest)
    return load_simsiam(ws.simsiam)


def ensure_index(profile: Profile, ws: Workspace, corpus: Corpus, model, force: bool = False) -> RetrievalIndex:
    """Embed the corpus and build (or reuse) the FAISS index with its look-up table."""
    digest = _digest(profile, "index")
    if not force and ws.is_current("index", digest, ws.index_dir / RetrievalIndex.LUT_FILE):
        return RetrievalIndex.load(ws.index_dir)
    vectors = embed(model, corpus.images)
    index = RetrievalIndex.build(vectors, corpus.table)
    index.save(ws.index_dir, meta={"corpus": str(ws.corpus), "model": str(ws.simsiam)})
    ws.mark("index", digest)
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

    @classmethod
    def from_workspace(cls, root: str | Path) -> "Interrogator":
        """Load everything a previous ``interrogate`` (or the train steps) wrote in ``root``."""
        ws = Workspace(Path(root))
        profile = ws.load_profile()
        directions = LatentDirections.load(ws.directions) if ws.directions.is_file() else None
        simsiam, _ = load_simsiam(ws.simsiam)
        corpus = Corpus.load(ws.corpus) if ws.corpus.is_file() else None
        return cls(profile, load_generator(ws.generator), directions, simsiam, RetrievalIndex.load(ws.index_dir), corpus)

    def images_from_latent(self, z: np.ndarray) -> np.ndarray:
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
                    return self.search_images(img.reshape(-1, 1, *img.shape[-2:]), k)
        except OSError:
            pass
        return self.search_array(read_sharp(path, with_companions=False).Br, k)


def _correlations(q: dict[str, np.ndarray], m: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for name in CORRELATED_PARAMS:
        a, b = np.asarray(q[name], float), np.asarray(m[name], float)
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() > 2 and np.ptp(a[ok]) > 0 and np.ptp(b[ok]) > 0:
            pr, sr = pearsonr(a[ok], b[ok]).statistic, spearmanr(a[ok], b[ok]).statistic
        else:
            pr = sr = float("nan")
        out[name] = {
            "pearson": float(pr),
            "spearman": float(sr),
            "n": int(ok.sum()),
            "paper_pearson": PAPER_CORRELATIONS[name][0],
            "paper_spearman": PAPER_CORRELATIONS[name][1],
        }
    return out


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
    ``workdir/report``).
    """
    from helioforge.interrogate.report import write_report

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ws = Workspace(Path(workdir))
    ws.save_profile(profile)
    report_dir = Path(report_dir) if report_dir else ws.root / "report"
    kw = dict(progress=progress, accelerator=accelerator, devices=devices)

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        log.info("step: %s", name)
        out = fn()
        timings[name] = round(time.perf_counter() - t, 2)
        return out

    corpus, skipped = step("corpus", lambda: prepare_corpus(profile, ws, force))
    generator = step("gan", lambda: ensure_gan(profile, ws, corpus, force, **kw))
    directions = step("directions", lambda: ensure_directions(profile, ws, generator, force))
    simsiam, sim_cfg = step("simsiam", lambda: ensure_simsiam(profile, ws, corpus, force, **kw))
    index = step("index", lambda: ensure_index(profile, ws, corpus, simsiam, force))

    def evaluate() -> dict[str, Any]:
        params_fn = _params_fn(generator, profile)
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
        q_images = generate(generator, z)
        scores, rows = index.search(embed(simsiam, q_images), icfg.top_k)
        m_images = corpus.images[rows[:, 0]]
        return {"z": z, "q_images": q_images, "scores": scores, "rows": rows, "m_images": m_images,
                "q_params": image_params(q_images, profile), "m_params": image_params(m_images, profile),
                "corpus_params": image_params(corpus.images, profile)}

    res = step("queries", query)
    correlations = _correlations(res["q_params"], res["m_params"])

    gen_cfg = json.loads(ws.generator.with_suffix(".json").read_text())
    n_sharp = int(np.sum(corpus.table["source"] == "sharp"))
    metrics: dict[str, Any] = {
        "helioforge": __version__,
        "profile": profile.name,
        "image_size": profile.data.image_size,
        "corpus": {"n_patches": len(corpus), "n_sharp": n_sharp, "n_fulldisk_tiles": len(corpus) - n_sharp,
                   "n_skipped": len(skipped), "skipped": skipped},
        "gan": {"selected_epoch": gen_cfg.get("selected_epoch"), "d_accuracy": gen_cfg.get("d_accuracy"),
                "epochs": profile.gan.epochs},
        "simsiam": {"final_metrics": sim_cfg.get("final_metrics", {}),
                    "collapse_reference_z_std": sim_cfg.get("collapse_reference_z_std")},
        "svm_accuracy": directions.accuracy,
        "svm_train_accuracy": directions.train_accuracy,
        "svm_skipped": directions.skipped,
        "n_direction_samples": profile.directions.n_samples,
        **direction_metrics,
        "n_queries": profile.interrogate.n_queries,
        "match_cosine": {"mean": float(res["scores"][:, 0].mean()), "min": float(res["scores"][:, 0].min())},
        "n_unique_matches": int(len(np.unique(res["rows"][:, 0]))),
        "correlations": correlations,
    }
    step("report", lambda: write_report(report_dir, metrics, res, corpus, generator, directions, profile, ws))
    timings["total"] = round(time.perf_counter() - t_start, 2)
    metrics["timings_s"] = timings
    metrics["training_s"] = ws.state().get("training_s", {})
    write_json(report_dir / "metrics.json", metrics)
    # the HTML shows the timings too: re-render it with the final numbers (cheap, no figures)
    from helioforge.interrogate.report import write_html

    write_html(report_dir, metrics)
    log.info("report written to %s (%.1f s)", report_dir, timings["total"])
    return metrics
