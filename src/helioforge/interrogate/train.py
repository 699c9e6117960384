"""The train stage of the interrogator: what each model is trained or fitted on.

One function per model of Chatterjee et al. (2025, Fig. 1), given the real corpus (or the
trained generator); the models themselves live in :mod:`~helioforge.interrogate.gan`,
:mod:`~helioforge.interrogate.simsiam`, :mod:`~helioforge.interrogate.directions` and
:mod:`~helioforge.interrogate.retrieval`. Reuse, resumption and the work folder are the
pipeline's (:mod:`helioforge.interrogate.pipeline`), not this module's.

* :func:`train_generator` — the GAN on the corpus rows outside the held-out HARPs, with the
  active patches flagged (paper §"Generative model").
* :func:`fit_latent_directions` — the linear SVMs on ``directions.n_samples`` generated samples
  (paper §"Interpretable Generation").
* :func:`train_embedding` — SimSiam on the same rows (paper §"Querying Generated Image").
* :func:`build_index` — the FAISS index of the SimSiam embeddings of the whole corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from helioforge.interrogate.config import Profile
from helioforge.interrogate.data import Corpus, training_mask
from helioforge.interrogate.directions import LatentDirections, fit_directions
from helioforge.interrogate.evaluate import params_of_latent
from helioforge.interrogate.gan import Generator, train_gan
from helioforge.interrogate.retrieval import RetrievalIndex
from helioforge.interrogate.simsiam import embed, train_simsiam
from helioforge.physics.params import is_active

__all__ = ["train_generator", "fit_latent_directions", "train_embedding", "build_index"]


def train_generator(corpus: Corpus, profile: Profile, folder: str | Path, **trainer_kw: Any) -> None:
    """Train (or resume from ``folder/checkpoints``) the GAN of ``profile.gan`` on the corpus
    rows of :func:`~helioforge.interrogate.data.training_mask`.

    Patches are flagged active (:func:`~helioforge.physics.params.is_active`) when each polarity
    beyond the polarity threshold covers at least ``gan.active_min_area`` of the pixels. Writes
    the selected generator to ``folder/generator.{safetensors,json}``
    (:func:`~helioforge.interrogate.gan.train_gan`).

    Parameters
    ----------
    corpus : Corpus
        The real corpus, images (n, 1, N, N) in units of ``data.clip_gauss``.
    profile : Profile
        Gives ``gan``, the held-out HARPs and the threshold ``params.threshold_gauss / data.clip_gauss``.
    folder : str or Path
        Work folder of the GAN.
    **trainer_kw
        ``accelerator``, ``devices``, ``progress`` of :func:`~helioforge.interrogate.gan.train_gan`.

    Raises
    ------
    ValueError
        From :func:`~helioforge.interrogate.gan.train_gan` when fewer training images than one batch remain.
    """
    threshold = profile.params.threshold_gauss / profile.data.clip_gauss
    keep = training_mask(corpus, profile)
    active = is_active(corpus.images[keep], threshold, profile.gan.active_min_area)
    train_gan(corpus.images[keep], profile.gan, folder, active=active, **trainer_kw)


def fit_latent_directions(generator: Generator, profile: Profile) -> tuple[LatentDirections, np.ndarray, dict[str, np.ndarray]]:
    """Fit the SVM latent directions on ``directions.n_samples`` latent vectors drawn from
    N(0, I) with ``directions.seed``.

    Returns
    -------
    (directions, z, params) : the fitted directions, the samples z (M, latent_dim) float32 and
        the parameters of G(z) (:func:`~helioforge.interrogate.evaluate.image_params`).
    """
    cfg = profile.directions
    rng = np.random.default_rng(cfg.seed)
    z = rng.standard_normal((cfg.n_samples, generator.latent_dim)).astype(np.float32)
    params = params_of_latent(generator, profile)(z)
    return fit_directions(z, params, cfg), z, params


def train_embedding(corpus: Corpus, profile: Profile, folder: str | Path, **trainer_kw: Any) -> None:
    """Train (or resume) SimSiam of ``profile.simsiam`` on the corpus rows of
    :func:`~helioforge.interrogate.data.training_mask`; writes ``folder/simsiam.{safetensors,json}``
    (:func:`~helioforge.interrogate.simsiam.train_simsiam`).

    Parameters
    ----------
    corpus : Corpus
        The real corpus.
    profile : Profile
        Gives ``simsiam`` and the held-out HARPs.
    folder : str or Path
        Work folder of SimSiam.
    **trainer_kw
        ``accelerator``, ``devices``, ``progress`` of :func:`~helioforge.interrogate.simsiam.train_simsiam`.

    Raises
    ------
    ValueError
        From :func:`~helioforge.interrogate.simsiam.train_simsiam` when fewer than two training images remain.
    """
    train_simsiam(corpus.images[training_mask(corpus, profile)], profile.simsiam, folder, **trainer_kw)


def build_index(corpus: Corpus, model) -> RetrievalIndex:
    """The FAISS inner-product index of the SimSiam embeddings of every corpus image, with the
    corpus table as its look-up table.

    Parameters
    ----------
    corpus : Corpus
        All corpus images (n, 1, N, N) and their table (n rows).
    model : SimSiam
        The trained embedding model.

    Returns
    -------
    RetrievalIndex
        n L2-normalised vectors (n, out_dim).

    Raises
    ------
    ValueError
        If an embedding is not finite (:meth:`~helioforge.interrogate.retrieval.RetrievalIndex.build`).
    """
    return RetrievalIndex.build(embed(model, corpus.images), corpus.table)
