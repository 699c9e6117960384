"""Typed configuration of the flare-class-conditioned diffusion model (Ramunno et al. 2024).

Profiles
--------
``paper``  the paper's setting: 64×64 AIA 171 Å DN/s images labelled by the event rule (§2.4),
           U-Net with self-attention, 500 epochs, batch 12, AdamW lr 3e-4, DDPM sampling with
           T = 1000 steps (§3–4), 10 proportional sets of 1000 and 10 uniform sets of 200 per
           class for the evaluation (§6). Meant for a GPU and SDOMLv2 171 Å data (``--images``).
``cpu``    the same pipeline scaled to a 2-core laptop (minutes): the sample's 131 Å DN/s files
           (event rule, else the flux at the image time), a narrower U-Net with attention at
           the two coarsest levels only, the paper's batch 12 and learning rate, SDE-DPM-Solver++
           sampling (20 steps), 5 repeats of each generated set.
``tiny``   smoke tests (seconds per step); not for science.

Every stage's settings live here (the implementation modules import them): each section is a
:class:`~helioforge.config.Settings` dataclass whose string choices (``sampler``, ``condition``,
``label_source``, ``beta_schedule``, ``loss_weights``) are ``Literal`` fields checked on
construction; :class:`DiffusionProfile` groups them, round-trips through JSON
(:meth:`~helioforge.config.ProfileBase.to_json` / :meth:`~helioforge.config.ProfileBase.from_json`)
and gives the short digests the work folder uses to decide whether a saved product can be reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from helioforge.config import ProfileBase, Settings, data_file, data_root, dataclass_from_dict, profile_from_registry
from helioforge.data.goes import FLARE_CLASSES

__all__ = [
    "AIADataConfig",
    "StreamConfig",
    "UNetConfig",
    "DiffusionTrainConfig",
    "SampleConfig",
    "EvaluateConfig",
    "FeatureConfig",
    "ClassifierConfig",
    "AugmentConfig",
    "DiffusionProfile",
    "get_diffusion_profile",
    "DIFFUSION_PROFILES",
    "dataclass_from_dict",
    "LabelSource",
    "Condition",
    "SamplerName",
    "DataSource",
]

#: Where the flare-class labels come from (:attr:`AIADataConfig.label_source`).
LabelSource = Literal["events", "flux", "events+flux"]
#: What the denoiser is conditioned on (:attr:`DiffusionTrainConfig.condition`).
Condition = Literal["class", "flux"]
#: Where the training images come from (:attr:`StreamConfig.source`).
DataSource = Literal["folder", "sdoml"]
#: Reverse-process solvers (:attr:`SampleConfig.sampler`; :func:`helioforge.diffusion.infer.make_sampler`).
SamplerName = Literal["ddpm", "ddim", "dpm"]


@dataclass
class AIADataConfig(Settings):
    """Image selection and labelling (paper §2).

    images : folder of AIA images (FITS, SDOML-binned FITS or browse JPEG); ``None`` means
        ``default_folder`` inside the data folder.
    default_folder : the data-folder subfolder used when ``images`` is ``None``:
        ``aia/sdoml_binned`` (calibrated DN/s FITS at 131 and 193 Å, the `paper` and `cpu`
        profiles) or ``aia/browse`` (display-scaled JPEGs, 193/304 Å; `tiny`).
    wavelength : AIA channel, Å (paper 171; the sample's DN/s files are 131 and 193 Å).
    image_size : N of the N×N training images (paper 64; 128 in its App. C).
    events : SWPC/HEK event list (CSV); ``None`` means the sample's SWPC list.
    flux : GOES XRS-B series (hourly CSV or a file sunpy ``TimeSeries`` reads); ``None`` means the
        sample's GOES-15 hourly CSV.
    label_source : ``events`` (paper: only images at ≤ ``tolerance_min`` after a flare peak),
        ``flux`` (every image by the X-ray flux at its time) or ``events+flux``.
    tolerance_min : image-after-peak tolerance, minutes (paper 7).
    test_fraction : share of *days* held out as the real test set; whole days are held out so
        that near-identical consecutive images never sit on both sides.
    seed : split seed.
    """

    images: str | None = None
    default_folder: str = "aia/sdoml_binned"
    wavelength: int = 171
    image_size: int = 64
    events: str | None = None
    flux: str | None = None
    label_source: LabelSource = "events"
    tolerance_min: float = 7.0
    test_fraction: float = 0.25
    seed: int = 0

    def images_path(self) -> Path:
        """Image folder (absolute)."""
        return Path(self.images).resolve() if self.images else data_root() / self.default_folder

    def events_path(self) -> Path:
        """Event list (absolute)."""
        return Path(self.events).resolve() if self.events else data_file("goes/swpc_ftp_flares_20100101_20251115.csv")

    def flux_path(self) -> Path:
        """X-ray flux file (absolute)."""
        return Path(self.flux).resolve() if self.flux else data_file("goes/goes15_xrs_hourly_2010-2018.csv")


@dataclass
class StreamConfig(Settings):
    """Where the training images come from: the image folder (read into memory, the default) or
    an SDOMLv2 zarr store streamed lazily (:mod:`helioforge.data.sdoml`,
    :class:`helioforge.diffusion.data.SDOMLStream`).

    A section of its own (not fields of :class:`AIADataConfig`) so that the digests of the
    ``data`` section, and with them every existing work folder, stay as they were. The channel,
    image size, labels and split are still :class:`AIADataConfig`'s.

    source : ``folder`` (:attr:`AIADataConfig.images`, every image in memory) or ``sdoml``
        (frames read chunk by chunk from ``store`` while training).
    store : the SDOMLv2 store: a local folder or a URL (``s3://``, ``gs://`` with the ``cloud``
        extra; ``file://``, ``memory://``); needed by ``sdoml``.
    start, end : time range of the frames, UTC, inclusive (ISO 8601; ``None`` = open).
    shuffle_buffer : frames held (preprocessed to N×N) by the bounded shuffle buffer of each
        reading process; larger mixes more chunks (one chunk holds consecutive frames).
    num_workers : DataLoader worker processes reading the store (0: the training process).
    anonymous : anonymous access to cloud buckets (SDOMLv2's public buckets need no account).
    """

    source: DataSource = "folder"
    store: str | None = None
    start: str | None = None
    end: str | None = None
    shuffle_buffer: int = 512
    num_workers: int = 0
    anonymous: bool = True


@dataclass
class UNetConfig(Settings):
    """The denoiser: diffusers ``UNet2DModel`` (Ronneberger et al. 2015; paper App. B).

    block_out_channels : channels per resolution level (each level halves the image).
    attention : per level, whether the block carries self-attention (paper: between every
        down/up-sampling layer; the CPU profile keeps it at the coarse levels only, where it is
        cheap).
    layers_per_block : ResNet blocks per level.
    norm_num_groups : GroupNorm groups.
    """

    block_out_channels: tuple[int, ...] = (64, 128, 256, 256)
    attention: tuple[bool, ...] = (False, True, True, True)
    layers_per_block: int = 2
    norm_num_groups: int = 32


@dataclass
class DiffusionTrainConfig(Settings):
    """Training (paper §3–4: MSE on the noise, eq. 5; AdamW lr 3e-4, batch 12, 500 epochs).

    condition : ``class`` (GOES class A–X through an embedding added to the time embedding) or
        ``flux`` (log10 X-ray flux through a two-layer MLP to the same width).
    cond_dropout : probability that a training example's condition is replaced by the null
        condition (classifier-free guidance, Ho & Salimans 2022, Alg. 1; 0.1–0.2 there).
    num_train_timesteps, beta_start, beta_end, beta_schedule : DDPM noise schedule (Ho et al.
        2020: T = 1000, linear β from 1e-4 to 0.02).
    ema_decay : exponential moving average of the weights used for sampling.
    flips : random east–west flips during training (off by default: AIA images are solar-north
        up and east left, and a flip reverses the sense of rotation).
    """

    condition: Condition = "class"
    epochs: int = 500
    batch_size: int = 12
    lr: float = 3e-4
    weight_decay: float = 1e-2
    cond_dropout: float = 0.1
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    ema_decay: float = 0.999
    flips: bool = False
    seed: int = 0


@dataclass
class SampleConfig(Settings):
    """Sampling with classifier-free guidance (eq. 6).

    sampler : ``ddpm`` (ancestral, ``steps`` = T as the paper), ``ddim`` (Song et al. 2021)
        or ``dpm`` (SDE-DPM-Solver++, Lu et al. 2022).
    eta : DDIM η (1: stochastic, default; 0: deterministic DDIM).
    steps : denoising steps (``None``: T for DDPM, 50 for DDIM, 20 for DPM-Solver).
    cfg_scale : w of eq. 6; 0 is the purely conditional model.
    batch_size : images per network call (the guided call doubles it); ``None``: 16 on a CPU
        (larger batches spend most of their time in the allocator, see docs/benchmarks.md)
        and 256 on a GPU.
    """

    sampler: SamplerName = "ddpm"
    steps: int | None = None
    cfg_scale: float = 1.0
    eta: float = 1.0
    batch_size: int | None = None
    seed: int = 0


@dataclass
class EvaluateConfig(Settings):
    """Evaluation (paper §5–7). The sampler of every generated set is the profile's
    :class:`SampleConfig` (the report names it beside each number).

    repeats : independent generated sets of each kind (paper 10 proportional sets of 1000 and
        10 uniform sets of 200 per class, §6); every metric is reported as mean ± std over them.
    n_generated : images per proportional set, drawn with the real training set's class
        proportions, for the Fréchet distance and the cluster metrics (paper 1000; ``None``: as
        many as the real test images, so that the held-out real row is a floor at the same size).
    n_per_class : images per class per uniform set, for the classifier scores (paper 200).
    min_class_images : classes with fewer real training images are not generated (a class the
        model never saw cannot be judged) and are reported as such.
    k : k-means clusters for the cluster metrics (paper 5, the number of GOES classes).
    chance_permutations : label permutations for the chance level of the F1 scores.
    seed : base seed of the generated sets (set r uses ``seed + 2r`` and ``seed + 2r + 1``).
    """

    repeats: int = 10
    n_generated: int | None = 1000
    n_per_class: int = 200
    min_class_images: int = 5
    k: int = 5
    chance_permutations: int = 200
    seed: int = 1


@dataclass
class FeatureConfig(Settings):
    """Settings of the ceVAE feature encoder (Ramunno et al. 2024 §6; Zimmerer et al. 2018).

    latent_dim : size of the feature vectors (the paper's ceVAE has 512; 64 suffices at 64×64).
    width : channels of the first convolution of :class:`~helioforge.nn.vae.ConvVAE`.
    epochs, batch_size, lr : Adam training schedule.
    beta : KL weight β (see the module docstring for the loss scaling).
    context_mask_fraction : area fraction of the random rectangle masked in the CE branch;
        0 disables the context-encoding branch.
    seed : seed of weights, shuffling and masks.
    """

    latent_dim: int = 64
    width: int = 32
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    beta: float = 1e-3
    context_mask_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.context_mask_fraction < 1.0:
            raise ValueError(f"context_mask_fraction must be in [0, 1), got {self.context_mask_fraction}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


@dataclass
class ClassifierConfig(Settings):
    """Training settings of the flare-class classifier.

    Attributes
    ----------
    width : CNN stem width (see :class:`~helioforge.nn.classifier.FlareClassifier`).
    epochs : training epochs.
    batch_size : images per batch (reduced to the training-set size when larger).
    lr : AdamW peak learning rate, decayed to 0 with a cosine over ``epochs``.
    weight_decay : AdamW weight decay.
    class_weighted : weight the cross-entropy by inverse class frequency,
        w_c = n / (K · n_c) over the K classes present in the training labels, so that each
        present class carries the same total weight (flare sets are dominated by B/C images).
    flips : random horizontal and vertical flips of each training batch (kornia).
    seed : seed of the weights, batch order, flips and dropout (CPU runs are reproducible).
    dropout : dropout before the linear head.
    """

    width: int = 32
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    class_weighted: bool = True
    flips: bool = True
    seed: int = 0
    dropout: float = 0.2


@dataclass
class AugmentConfig(Settings):
    """Settings of the augmentation experiment (Ramunno et al. 2024, §8.1).

    Attributes
    ----------
    additions : images added to each minority class (paper 200, 400, 600).
    repeats : different added sets (and classifier seeds) per addition (paper 3).
    minority_classes : class names that receive additions (paper A, M, X); empty: the
        classes the model can generate with under half the largest class's training images
        (:func:`helioforge.diffusion.evaluate.minority_classes`; the `cpu` profile, whose sample
        has no A image and many M images).
    classifier : classifier training settings; repeat r uses seed ``classifier.seed + r`` for
        every method, so the methods of one repeat differ only by the added images. Its random
        flips are switched off in every arm (the ``none`` arm is augmentation-free).
    loss_weights : ``"original"`` — cross-entropy class weights n/(K·n_c) computed once from
        the *original* training set and used unchanged in every arm, so that the rebalancing
        the added images bring is not cancelled by re-weighting (the weights are what the
        paper's §4 classifier trains with, the additions are what §8.1 measures); ``"none"`` —
        an unweighted loss in every arm.
    class_names : all class names, index order (A, B, C, M, X).
    seed : base seed of the generated/classical sets.
    rotation_deg, affine_deg, translate, shear_deg : classical augmentation parameters
        (see :func:`classical_augment`).
    """

    additions: tuple[int, ...] = (200, 400, 600)
    repeats: int = 3
    minority_classes: tuple[str, ...] = ("A", "M", "X")
    classifier: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(flips=False))
    loss_weights: Literal["original", "none"] = "original"
    class_names: tuple[str, ...] = FLARE_CLASSES
    seed: int = 0
    rotation_deg: float = 30.0
    affine_deg: float = 10.0
    translate: float = 0.1
    shear_deg: float = 10.0


@dataclass
class DiffusionProfile(ProfileBase):
    """A complete configuration of the diffusion pipeline (JSON round trip and digests from
    :class:`helioforge.config.ProfileBase`)."""

    name: str = "paper"
    data: AIADataConfig = field(default_factory=AIADataConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def _cpu() -> DiffusionProfile:
    p = DiffusionProfile(name="cpu")
    # the sample's calibrated DN/s files (131 Å has 126 images, 193 Å 65): the paper's event rule
    # links 9 of them, the others are labelled by the GOES flux at their time (docs/diffusion.md)
    p.data = AIADataConfig(wavelength=131, label_source="events+flux")
    p.unet = UNetConfig(block_out_channels=(16, 32, 64, 64), attention=(False, False, True, True), layers_per_block=1,
                        norm_num_groups=8)
    # 93 training images in 8 batches: 300 epochs ≈ 2,400 optimiser steps (the EMA warm-up matters here)
    p.train = DiffusionTrainConfig(epochs=300, batch_size=12, lr=3e-4, ema_decay=0.998)
    p.sample = SampleConfig(sampler="dpm", steps=20)
    p.features = FeatureConfig(epochs=40)
    p.classifier = ClassifierConfig(epochs=30)
    p.evaluate = EvaluateConfig(repeats=5, n_per_class=20, n_generated=None)
    p.augment = AugmentConfig(additions=(20, 40, 60), repeats=3, minority_classes=(),
                              classifier=ClassifierConfig(epochs=15, flips=False))
    return p


def _tiny() -> DiffusionProfile:
    p = DiffusionProfile(name="tiny")
    p.data = AIADataConfig(default_folder="aia/browse", wavelength=193, image_size=32, label_source="flux")
    p.unet = UNetConfig(block_out_channels=(8, 16, 16), attention=(False, False, True), layers_per_block=1,
                        norm_num_groups=4)
    p.train = DiffusionTrainConfig(epochs=2, batch_size=16, num_train_timesteps=100, ema_decay=0.9)
    p.sample = SampleConfig(sampler="ddim", steps=5)
    p.features = FeatureConfig(latent_dim=8, width=8, epochs=2)
    p.classifier = ClassifierConfig(width=8, epochs=2)
    p.evaluate = EvaluateConfig(repeats=2, n_generated=24, n_per_class=4, min_class_images=2, chance_permutations=20)
    p.augment = AugmentConfig(additions=(4, 8), repeats=2, classifier=ClassifierConfig(width=8, epochs=1, flips=False))
    return p


DIFFUSION_PROFILES = {"paper": DiffusionProfile, "cpu": _cpu, "tiny": _tiny}


def get_diffusion_profile(name: str) -> DiffusionProfile:
    """A fresh diffusion profile by name (``paper``, ``cpu``, ``tiny``).

    Raises
    ------
    ValueError : an unknown name (the message lists the choices).

    Examples
    --------
    >>> p = get_diffusion_profile("tiny")
    >>> (p.data.image_size, p.sample.sampler, p.sample.steps)
    (32, 'ddim', 5)
    >>> SampleConfig(sampler="euler")
    Traceback (most recent call last):
    ...
    ValueError: SampleConfig.sampler must be one of 'ddpm', 'ddim', 'dpm'; got 'euler'
    """
    return profile_from_registry(DIFFUSION_PROFILES, name)
