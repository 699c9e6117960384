"""Typed configuration of the SICON inversion (Asensio Ramos & Díaz Baso 2019): the
training-set generator (§2, :class:`TrainsetProfile`) and the networks and their training
(§3, :class:`SiconConfig`).

No 3-D MHD snapshot is available here, so the (Stokes maps, atmosphere maps) pairs are made from
the 1-D SIR model atmospheres in ``data_root()/stokes/atmospheres`` arranged into 2-D maps with
spatially correlated structure (granulation, flux concentrations, sunspots; see
:mod:`helioforge.inversion.atmospheres`), synthesised in LTE and degraded with the Hinode SP
instrument model (:mod:`helioforge.inversion.forward`, :mod:`helioforge.inversion.dataset`).

Training-set profiles (:func:`get_trainset_profile`)
----------------------------------------------------
``paper``  the paper's sizes: 50,000 patches of 32×32 Hinode pixels (0.16″), shards of 1,000.
           The atmospheres are built on a 0.08″ grid (64×64 columns per patch), degraded with
           the Hinode PSF for that pixel and rebinned 2×2 to 0.16″ (paper §2 steps 2–3: PSF then
           rebin); the targets are the 2×2 means, not PSF-degraded (paper §2, "physical
           conditions" step 1). Meant for a GPU or a long CPU run.
``cpu``    the same chain on a 2-core laptop: 2,000 patches, shards of 250, atmospheres built
           directly on the 0.16″ grid and degraded with the 0.16″ PSF (4× fewer columns to
           synthesise; unresolved sub-pixel structure is then absent).
``tiny``   smoke tests (seconds): 4 patches of 8×8, a coarse depth grid (0.2 dex).

SICON profiles (:func:`get_sicon_profile`): see :class:`SiconConfig`.

Every section is a :class:`~helioforge.config.Settings` dataclass (``Literal`` choices checked on
construction); :class:`TrainsetProfile` and :class:`SiconConfig` group them, round-trips through JSON
(:meth:`TrainsetProfile.to_dict` / :meth:`TrainsetProfile.from_dict`) and gives short digests
(:meth:`TrainsetProfile.digest`) recorded in the manifest (training sets) and in the work
folder's ``state.json`` (networks) so that a resumed run can check that its existing products
were made with the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from helioforge.config import ProfileBase, Settings, dataclass_from_dict, profile_from_registry
from helioforge.errors import InputError, check_count, check_finite
from helioforge.nn.sicon import AMPLITUDE_FLOOR, CONCAT_STOKES_SCALE, CONTINUUM_QUANTITIES

#: Quadratures of the SP spectral profile (the keys of
#: :data:`helioforge.inversion.instrument.SPECTRAL_QUADRATURES`, which maps them to spline degrees).
Quadrature = Literal["trapezoid", "linear", "cubic", "quintic"]
#: Implementations of the LTE synthesis (:func:`helioforge.physics.lte.synth_lte` ``kernel``).
SynthesisKernel = Literal["torch", "fused"]
#: The two SICON networks: the encoder–decoder (§3.1) and the concatenate network (§3.2).
Network = Literal["encdec", "concat"]
NETWORKS: tuple[str, ...] = get_args(Network)

__all__ = [
    "DepthGridConfig",
    "AtmosphereModelsConfig",
    "AtmosphereConfig",
    "TrainsetConfig",
    "TrainsetProfile",
    "get_trainset_profile",
    "TRAINSET_PROFILES",
    "dataclass_from_dict",
    "SiconModelConfig",
    "SiconTrainConfig",
    "SiconConfig",
    "SICON_PROFILES",
    "get_sicon_profile",
    "NETWORKS",
]


@dataclass
class DepthGridConfig(Settings):
    """The common log τ₅₀₀ grid of the synthesis (SIR ordering: deepest point first).

    log_tau_bottom, log_tau_top : first (deepest) and last (highest) point (+1.2 … −4.0: the
        Fe I 630 nm lines form between log τ ≈ 0 and −3; the paper discards log τ > 2).
    log_tau_step : spacing, dex (0.1 as the SIR models of the Hazel distribution).
    max_extrapolation_dex : how far the grid may reach beyond a model's own log τ range
        (emaltby11 stops at −3.6, solannt11 starts at +1.0); beyond it the model is refused.
    """

    log_tau_bottom: float = 1.2
    log_tau_top: float = -4.0
    log_tau_step: float = 0.1
    max_extrapolation_dex: float = 0.5

    def log_tau(self) -> np.ndarray:
        """The grid (n,), float64, strictly decreasing from ``log_tau_bottom`` to ``log_tau_top``.

        Raises ``ValueError`` when the bounds or the step are inconsistent.
        """
        if not (self.log_tau_step > 0 and self.log_tau_bottom > self.log_tau_top):
            raise ValueError(
                f"log τ grid needs bottom > top and step > 0, got bottom={self.log_tau_bottom}, "
                f"top={self.log_tau_top}, step={self.log_tau_step}"
            )
        n = int(round((self.log_tau_bottom - self.log_tau_top) / self.log_tau_step)) + 1
        return np.round(self.log_tau_bottom - self.log_tau_step * np.arange(n), 10)


@dataclass
class AtmosphereModelsConfig(Settings):
    """SIR model files (stems in ``stokes/atmospheres``) behind each kind of region.

    quiet : quiet-Sun models; the first one (HSRA, Gingerich et al. 1971) is also the reference
        column that defines z = 0 (its log τ = 0 level) and the quiet-Sun continuum. Patches mix
        the listed models with a random weight.
    umbra : umbral models (Maltby et al. 1986, E and M), mixed with a random weight per spot.
    penumbra : penumbral model (del Toro Iniesta, Tarbell & Ruiz Cobo 1994).
    plage, network : flux-tube models (Solanki 1986) used inside flux concentrations.
    """

    quiet: tuple[str, ...] = ("hsra11", "FALC11")
    umbra: tuple[str, ...] = ("emaltby11", "mmaltby11")
    penumbra: str = "penumjti11"
    plage: str = "solanpl11"
    network: str = "solannt11"


@dataclass
class AtmosphereConfig(Settings):
    """How the 2-D maps of atmospheres are built (see :mod:`helioforge.inversion.atmospheres`).

    kind_fractions : probability of each patch kind (quiet, plage, spot).
    granule_size_mm : mean granular cell size, Mm (≈ 1.3 Mm ≈ 1.8″).
    granule_dT_K : range of the granular temperature contrast at log τ = 0, K (drawn per patch).
    granule_dv_kms : range of the granular velocity amplitude at log τ = 0, km s⁻¹.
    granule_T_profile, granule_v_profile : (log τ, factor) nodes of the height dependence of
        the granular T and v_z contrasts (linear in log τ between nodes, constant outside). The
        T contrast reverses above log τ ≈ −1.5 and the velocity above ≈ −2.7 (reversed
        granulation: Rutten et al. 2004, A&A 413, 1183; Cheung et al. 2007, A&A 461, 1163).
    small_scale_dT_K, small_scale_corr_arcsec : extra Gaussian-random-field T fluctuation.
    vmic_kms : range of the microturbulence (a correlated random field per patch), km s⁻¹.
    internetwork_B_G : range of the rms internetwork field drawn per patch, G (isotropic).
    fc_B_G : range of the peak flux-concentration field at log τ = 0, G.
    fc_sigma_km : range of the Gaussian radius (σ) of a flux concentration, km.
    plage_filling : range of the area fraction of flux concentrations in plage patches.
    network_probability, network_filling : share of quiet patches with network elements, and
        their area fraction.
    spot_umbra_radius_arcsec : range of the umbral radius, arcsec.
    spot_penumbra_ratio : range of penumbral/umbral radius.
    spot_B_G : range of the umbral-centre field at log τ = 0, G.
    penumbra_inclination_deg : range of the inclination at the outer penumbral edge, deg.
    B_max_G : clip on |B| (the paper's field-strength range 0–4 kG).
    B_height_gradient : fractional decrease of |B| in spots and flux tubes from log τ = 0 to
        log τ = −3 (≈ −1 to −3 G km⁻¹ over ≈ 400 km; Borrero & Ichimoto 2011).
    balance_log_tau : log τ level at which each column is put in horizontal total-pressure
        balance (P_gas + B²/8π) with the quiet-Sun reference, giving the Wilson depression.
    """

    models: AtmosphereModelsConfig = field(default_factory=AtmosphereModelsConfig)
    kind_fractions: tuple[float, float, float] = (0.35, 0.30, 0.35)
    granule_size_mm: float = 1.3
    granule_dT_K: tuple[float, float] = (100.0, 300.0)
    granule_dv_kms: tuple[float, float] = (1.0, 2.0)
    granule_T_profile: tuple[tuple[float, float], ...] = (
        (1.2, 1.6), (0.0, 1.0), (-1.0, 0.25), (-1.5, 0.0), (-2.5, -0.35), (-4.0, -0.2)
    )
    granule_v_profile: tuple[tuple[float, float], ...] = (
        (1.2, 1.2), (0.0, 1.0), (-1.5, 0.5), (-2.5, 0.1), (-3.0, -0.1), (-4.0, -0.2)
    )
    small_scale_dT_K: float = 40.0
    small_scale_corr_arcsec: float = 0.3
    vmic_kms: tuple[float, float] = (0.3, 1.5)
    internetwork_B_G: tuple[float, float] = (0.0, 200.0)
    fc_B_G: tuple[float, float] = (1000.0, 2000.0)
    fc_sigma_km: tuple[float, float] = (80.0, 220.0)
    plage_filling: tuple[float, float] = (0.10, 0.40)
    network_probability: float = 0.4
    network_filling: tuple[float, float] = (0.01, 0.06)
    spot_umbra_radius_arcsec: tuple[float, float] = (1.5, 6.0)
    spot_penumbra_ratio: tuple[float, float] = (1.8, 2.6)
    spot_B_G: tuple[float, float] = (2200.0, 4000.0)
    penumbra_inclination_deg: tuple[float, float] = (70.0, 105.0)
    B_max_G: float = 4000.0
    B_height_gradient: float = 0.25
    balance_log_tau: float = 0.0

    def __post_init__(self) -> None:
        # JSON round trips give lists; keep the nested (log τ, factor) nodes as tuples.
        self.granule_T_profile = tuple((float(a), float(b)) for a, b in self.granule_T_profile)
        self.granule_v_profile = tuple((float(a), float(b)) for a, b in self.granule_v_profile)
        if len(self.kind_fractions) != 3 or min(self.kind_fractions) < 0 or sum(self.kind_fractions) <= 0:
            raise ValueError(f"kind_fractions must be 3 non-negative weights (quiet, plage, spot), got {self.kind_fractions}")
        super().__post_init__()


@dataclass
class TrainsetConfig(Settings):
    """Sizes, sampling and storage of the training set (paper §2).

    n_patches : patches to make (paper 50,000 for training, plus 2,000 for validation: make
        those as a second set with another ``seed``).
    patch_size : side of a patch in Hinode pixels (paper 32).
    shard_size : patches per shard on disk.
    hinode_pixel_arcsec : the SP pixel (0.16″).
    model_pixel_arcsec : pixel of the atmosphere maps; must divide ``hinode_pixel_arcsec`` by an
        integer factor r (r = 2 for 0.08″). The Stokes maps are PSF-degraded at this pixel then
        rebinned r×r; the targets are r×r means.
    target_log_tau : the optical-depth surfaces of the targets (paper: 0, −0.5, …, −3).
    mu : heliocentric cosine of the synthesis (paper: disk centre).
    noise_sigma : Gaussian noise, units of the quiet-Sun continuum (paper §2 step 5: 1e-3 I_c).
        **Not** added to the stored Stokes maps: it is meant to be added online in training; the
        value is recorded in the manifest.
    margin_px : SP pixels added on each side of a patch before the PSF and cropped after it,
        so that no patch edge sees padded data (costs (1 + 2m/patch)² more synthesis); 0 uses
        reflecting padding at the edges (replicate when the patch is smaller than the PSF).
    wavelength_oversampling : synthesis grid step = SP step / this (the SP profile is ≈ 24 mÅ
        wide, the SP step 21.5 mÅ): 2 gives 238 points 10.7 mÅ apart
        (:func:`~helioforge.inversion.forward.synthesis_wavelengths`).
    spectral_quadrature : how the SP profile is integrated over the synthesised samples
        (:func:`~helioforge.inversion.instrument.spectral_matrix`): ``"quintic"`` (default)
        integrates the quintic spline through them exactly against the piecewise-linear
        profile, < 4 × 10⁻⁵ I_c from a converged synthesis with ``wavelength_oversampling`` 2;
        ``"trapezoid"`` samples the profile on the grid, 2.7 × 10⁻³ I_c (issue 13), as every set
        made before this setting existed (their manifests lack the key: a profile read from
        them gets ``"quintic"``; set ``"trapezoid"`` to resume or extend one); also
        ``"linear"``, ``"cubic"``. Part of the set's digest (except ``"trapezoid"``, which
        keeps the digest of those older sets): a set is not resumed with another quadrature.
    synthesis_kernel : the synthesis and hydrostatic-equilibrium implementation
        (:func:`helioforge.inversion.forward.kernel_functions`): ``"fused"`` (default) the
        compiled one-pass LTE kernel and the compiled hydrostatic equilibrium, ``"torch"`` the
        element-wise torch code that every set made before this setting used (it keeps their
        digest). The fused kernel's Stokes differ from the torch kernel's by < 1.1 × 10⁻⁵ I_c,
        so a set is finished with the kernel it was started with: resuming a torch-made set
        keeps the torch kernel.
    qs_reference_size : side (model pixels) of the quiet-Sun map whose median continuum
        normalises every Stokes map (paper §2 step 3: "normalized to the median continuum in
        the surrounding quiet Sun") and whose mean log τ = 0 height is z = 0.
    qs_reference_seed : seed of that map, ``default_rng([qs_reference_seed, 2**32])``. It is
        **not** ``seed``: a held-out set made with another ``seed`` (and otherwise the same
        settings) gets the same reference as the training set (issue 13). Sets made with other
        settings share a reference with ``make_trainset(..., reference_from=TRAINSET)``
        (``--reference-from``).
    seed : master seed; patch i is drawn from ``numpy.random.default_rng([seed, i])`` so a
        shard's content does not depend on which shards were made before (resumable).
    """

    n_patches: int = 50000
    patch_size: int = 32
    shard_size: int = 1000
    hinode_pixel_arcsec: float = 0.16
    model_pixel_arcsec: float = 0.08
    target_log_tau: tuple[float, ...] = (0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0)
    mu: float = 1.0
    noise_sigma: float = 1e-3
    margin_px: int = 4
    wavelength_oversampling: int = 2
    spectral_quadrature: Quadrature = "quintic"
    synthesis_kernel: SynthesisKernel = "fused"
    qs_reference_size: int = 64
    qs_reference_seed: int = 0
    seed: int = 0

    #: Smallest and largest patch side accepted (a patch smaller than 4 pixels has no spatial
    #: structure to learn; 256² × 4 × 112 float32 is already 117 MB per patch).
    MIN_PATCH_SIZE = 4
    MAX_PATCH_SIZE = 256
    #: Accepted ``spectral_quadrature`` values (:data:`Quadrature`).
    SPECTRAL_QUADRATURES = get_args(Quadrature)

    def __post_init__(self) -> None:
        """Refuse counts that would give an empty or nonsensical set (``InputError``, a
        ``ValueError``, naming the setting)."""
        check_count("n_patches", self.n_patches, 1)
        check_count("patch_size", self.patch_size, self.MIN_PATCH_SIZE, self.MAX_PATCH_SIZE)
        check_count("shard_size", self.shard_size, 1)
        check_count("seed", self.seed, 0)
        check_count("qs_reference_size", self.qs_reference_size, 1)
        check_count("qs_reference_seed", self.qs_reference_seed, 0)
        check_count("margin_px", self.margin_px, 0)
        check_count("wavelength_oversampling", self.wavelength_oversampling, 1)
        check_finite("noise_sigma", self.noise_sigma, 0.0)
        if self.spectral_quadrature not in self.SPECTRAL_QUADRATURES:
            raise InputError(f"spectral_quadrature must be one of {self.SPECTRAL_QUADRATURES}, "
                             f"got {self.spectral_quadrature!r}")
        for name in ("hinode_pixel_arcsec", "model_pixel_arcsec"):
            if not check_finite(name, getattr(self, name)) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < check_finite("mu", self.mu) <= 1.0:
            raise InputError(f"mu must be in (0, 1], got {self.mu}")
        super().__post_init__()

    def rebin(self) -> int:
        """Integer factor r = hinode_pixel / model_pixel; ``ValueError`` if not an integer ≥ 1."""
        r = self.hinode_pixel_arcsec / self.model_pixel_arcsec
        if r < 1 - 1e-9 or abs(r - round(r)) > 1e-6:
            raise ValueError(
                f"model_pixel_arcsec={self.model_pixel_arcsec} must divide hinode_pixel_arcsec="
                f"{self.hinode_pixel_arcsec} by an integer factor"
            )
        return int(round(r))

    def model_size(self) -> int:
        """Side of a patch on the model grid (patch_size × r)."""
        return self.patch_size * self.rebin()

    def n_shards(self) -> int:
        """Number of shards (the last one may be partial)."""
        return -(-self.n_patches // self.shard_size)


@dataclass
class TrainsetProfile(ProfileBase):
    """A complete configuration of the training-set generator."""

    name: str = "paper"
    trainset: TrainsetConfig = field(default_factory=TrainsetConfig)
    grid: DepthGridConfig = field(default_factory=DepthGridConfig)
    atmosphere: AtmosphereConfig = field(default_factory=AtmosphereConfig)


def _cpu() -> TrainsetProfile:
    return TrainsetProfile(
        name="cpu",
        # ≈ 12 min on a 2-core CPU (≈ 90–120 columns/s): 256 patches of 16×16 at the SP pixel
        trainset=TrainsetConfig(n_patches=256, patch_size=16, shard_size=64, model_pixel_arcsec=0.16, margin_px=0,
                                qs_reference_size=48),
    )


def _tiny() -> TrainsetProfile:
    return TrainsetProfile(
        name="tiny",
        trainset=TrainsetConfig(
            n_patches=4, patch_size=8, shard_size=2, model_pixel_arcsec=0.16, margin_px=0, qs_reference_size=16
        ),
        grid=DepthGridConfig(log_tau_step=0.2),
    )


TRAINSET_PROFILES = {"paper": TrainsetProfile, "cpu": _cpu, "tiny": _tiny}


def get_trainset_profile(name: str) -> TrainsetProfile:
    """Return a fresh training-set profile by name.

    Parameters
    ----------
    name : str
        ``paper``, ``cpu`` or ``tiny``.

    Returns
    -------
    TrainsetProfile
        A new instance (free to modify).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the choices).
    """
    return profile_from_registry(TRAINSET_PROFILES, name, "training-set profile")


# --------------------------------------------------------------------------- SICON networks and training
@dataclass
class SiconModelConfig(Settings):
    """Network and input preprocessing (paper §3).

    network : ``encdec`` (§3.1) or ``concat`` (§3.2).
    width : channels of the first block (paper 32 for both).
    amplitude_floor : lower threshold of the Q, U, V amplitude maps of the encoder–decoder
        input (§3.1: 5e-3; footnote 4: ≈ 0.1 slightly better on real data; the inverter can
        override it).
    amplitude_relative_to_continuum : measure those amplitudes relative to each pixel's
        continuum I(λ₀) (authors' code) instead of in quiet-Sun units.
    concat_stokes_scale : multipliers of I, Q, U, V for the concatenate input (§3.2).
    continuum_quantities : outputs of the encoder–decoder to which the continuum image is added.
    """

    network: Network = "encdec"
    width: int = 32
    amplitude_floor: float = AMPLITUDE_FLOOR
    amplitude_relative_to_continuum: bool = True
    concat_stokes_scale: tuple[float, float, float, float] = CONCAT_STOKES_SCALE
    continuum_quantities: tuple[str, ...] = CONTINUUM_QUANTITIES

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"unknown network {self.network!r}; choose one of {list(NETWORKS)}")
        if int(self.width) < 1:
            raise ValueError(f"width must be ≥ 1, got {self.width}")
        super().__post_init__()


@dataclass
class SiconTrainConfig(Settings):
    """Training (paper §2 step 5, §3.1).

    epochs, batch_size : paper 50 and 128 (encoder–decoder).
    lr, lr_step_epochs, lr_gamma : Adam learning rate multiplied by ``lr_gamma`` every
        ``lr_step_epochs`` epochs (paper 3e-4, 30, 0.5; ``torch.optim.lr_scheduler.StepLR``).
    noise_sigma : Gaussian noise added to the Stokes maps, new for every batch, units of the
        quiet-Sun continuum (paper 1e-3).
    augment : random flips and 90° rotations (:func:`helioforge.inversion.train.random_dihedral`).
    validation_fraction : share of the patches held out for the validation loss (the paper
        used a separate set of 2,000; at least one patch is held out when > 0).
    scaler : ``trainset`` (min–max over the training set) or ``sicon`` (SICON's fixed ranges).
    num_workers : DataLoader workers reading large sets lazily from the zarr shards (sets
        held in memory are read in the main process).
    in_memory_gb : sets smaller than this are read into memory once; larger ones are read
        patch by patch from the zarr shards.
    seed : seed of the split, initial weights, augmentation and noise.
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float = 3e-4
    lr_step_epochs: int = 30
    lr_gamma: float = 0.5
    noise_sigma: float = 1e-3
    augment: bool = True
    validation_fraction: float = 0.04
    scaler: Literal["trainset", "sicon"] = "trainset"
    num_workers: int = 4
    in_memory_gb: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scaler not in ("trainset", "sicon"):
            raise ValueError(f"scaler must be 'trainset' or 'sicon', got {self.scaler!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        super().__post_init__()


@dataclass
class SiconConfig(ProfileBase):
    """A complete SICON training configuration (JSON round trip and digests from
    :class:`helioforge.config.ProfileBase`).

    Profiles (:func:`get_sicon_profile`)
    ------------------------------------
    ``paper``         encoder–decoder, width 32 (3.31 M parameters), 50 epochs, batch 128,
                      Adam 3e-4 halved every 30 epochs, noise 1e-3 (§3.1). Meant for a GPU and
                      the 50,000-patch set.
    ``paper-concat``  the concatenate network as the paper trained it (§3.2: width 32, ≈ 1 M
                      parameters, Adam 1e-4 constant, 20 epochs, batch 10).
    ``cpu``           encoder–decoder of width 16 (0.86 M parameters) for the ``cpu`` training
                      set (256 patches of 16×16) on a 2-core CPU: 100 epochs of 7 batches of
                      32 (700 steps), the learning rate halved after 60 epochs (the paper's
                      30/50 of the run). Measured with one torch thread: 199 s of CPU, 277 s
                      wall on a shared, loaded 2-core machine (50 s wall on the 64-patch
                      ``trainset_cpu64``). The loss flattens after ≈ 100 epochs on that set.
    ``tiny``          smoke tests (seconds): width 4.
    """

    name: str = "paper"
    model: SiconModelConfig = field(default_factory=SiconModelConfig)
    train: SiconTrainConfig = field(default_factory=SiconTrainConfig)


def _paper_concat() -> SiconConfig:
    return SiconConfig(name="paper-concat", model=SiconModelConfig(network="concat", width=32),
                       train=SiconTrainConfig(epochs=20, batch_size=10, lr=1e-4, lr_step_epochs=1000, lr_gamma=1.0))


def _cpu() -> SiconConfig:
    return SiconConfig(name="cpu", model=SiconModelConfig(width=16),
                       train=SiconTrainConfig(epochs=100, batch_size=32, lr_step_epochs=60, validation_fraction=0.1,
                                              num_workers=0))


def _tiny() -> SiconConfig:
    return SiconConfig(name="tiny", model=SiconModelConfig(width=4),
                       train=SiconTrainConfig(epochs=12, batch_size=2, lr=3e-3, lr_step_epochs=1000,
                                              validation_fraction=0.25, num_workers=0))


SICON_PROFILES = {"paper": SiconConfig, "paper-concat": _paper_concat, "cpu": _cpu, "tiny": _tiny}


def get_sicon_profile(name: str) -> SiconConfig:
    """Return a fresh SICON training profile by name.

    Parameters
    ----------
    name : str
        ``paper``, ``paper-concat``, ``cpu`` or ``tiny``.

    Returns
    -------
    SiconConfig
        A new instance (free to modify).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the choices).
    """
    return profile_from_registry(SICON_PROFILES, name, "SICON profile")
