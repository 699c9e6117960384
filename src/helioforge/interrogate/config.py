"""Typed configuration of the generative interrogator (paper 000): one dataclass per stage,
grouped in a :class:`Profile`.

Profiles
--------
``paper``  the sizes of Chatterjee et al. (2025): N=128, GAN 200 epochs, M=10,000 latent
           samples for the SVMs, Q=1000 queries. Meant for a GPU.
``cpu``    the same pipeline scaled to run on a 2-core laptop in minutes (N=64).
``tiny``   a smoke-test configuration (seconds per step); not for science.

Every section is a :class:`~helioforge.config.Settings` dataclass (choices checked on
construction); the profile has the JSON round trip and digests of
:class:`~helioforge.config.ProfileBase`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from helioforge.config import ProfileBase, Settings, data_root, profile_from_registry
from helioforge.workspace import content_digest

__all__ = [
    "DataConfig",
    "ParamConfig",
    "GANConfig",
    "SimSiamConfig",
    "DirectionsConfig",
    "CalibrationConfig",
    "ProjectionConfig",
    "InterrogateConfig",
    "Profile",
    "PROFILES",
    "get_profile",
]


@dataclass
class DataConfig(Settings):
    """Corpus construction (paper §Data).

    image_size : N, side of the square images fed to the networks (paper 128).
    clip_gauss : |B| clip and scale, G (paper 1000 G: images are B/1000 G in [-1, 1]).
    sharp_dirs : SHARP folders read in turn; empty means ``data_root()/sharp``. The demo also
        passes the sample's ``sharp_bad`` folder so that the report shows the skipped files.
    fulldisk_dir : full-disk folder; ``None`` means ``data_root()/hmi_fulldisk``.
    tile_px, tile_stride_px : full-disk tile side and stride, native pixels (0.5").
    max_disk_angle_deg : keep tiles whose centre lies within this heliocentric angle.
    radial_correction : divide line-of-sight B by mu to approximate Br on full-disk tiles.
    use_fulldisk : add full-disk tiles to the corpus (the paper: SHARP patches only, so
        ``False`` in the ``paper`` profile; the ``cpu`` profile adds them and its report says so).
    holdout_harps : number of HARPs (chosen with the interrogator seed) held out of GAN and
        SimSiam training, so that retrieval can be measured on regions the models never saw
        (a departure from the paper, which trained on all its SHARPs); ``holdout_seed`` draws
        them (kept fixed across ``--seeds`` runs, so seeds vary the models, not the test set).
    """

    image_size: int = 128
    clip_gauss: float = 1000.0
    sharp_dirs: tuple[str, ...] = ()
    fulldisk_dir: str | None = None
    tile_px: int = 256
    tile_stride_px: int = 192
    max_disk_angle_deg: float = 60.0
    radial_correction: bool = True
    use_fulldisk: bool = False
    holdout_harps: int = 3
    holdout_seed: int = 0

    def sharp_paths(self) -> list[Path]:
        """SHARP input folders (absolute)."""
        return [Path(d).resolve() for d in self.sharp_dirs] or [data_root() / "sharp"]

    def fulldisk_path(self) -> Path:
        """Full-disk input folder (absolute)."""
        return Path(self.fulldisk_dir).resolve() if self.fulldisk_dir else data_root() / "hmi_fulldisk"

    def pin_folders(self) -> None:
        """Replace the default folders (``data_root()/sharp``, ``data_root()/hmi_fulldisk``) by the
        absolute folders they resolve to now, so the profile a work folder records names the data
        its products were made from, whatever ``--data`` a later command is given."""
        self.sharp_dirs = tuple(str(p) for p in self.sharp_paths())
        self.fulldisk_dir = str(self.fulldisk_path())

    def input_listing(self) -> list[tuple[str, int, str]]:
        """(file name, size, sha256) of every input FITS file, so a changed file invalidates the
        corpus while the same data copied elsewhere (or touched) does not."""
        files = []
        for folder in [*self.sharp_paths(), self.fulldisk_path()]:
            files += sorted([*folder.glob("*.fits"), *folder.glob("*.fits.gz")]) if folder.is_dir() else []
        return content_digest(files)


@dataclass
class ParamConfig(Settings):
    """Physical-parameter settings (paper, "Interpretable Generation").

    threshold_gauss : polarity threshold, G (paper ±150 G).
    dilation_px_at_128 : side of the square dilation kernel for the paper's R on a 128×128
        image (the authors' code uses 7); other sizes N get the kernel of the same physical
        area (:meth:`dilation_px`).
    r_kernel_mm : dilation kernel side for R on native-resolution patches (physical units), Mm.
        4.3 Mm is Schrijver's (2007) 3×3 kernel on 1.44 Mm MDI pixels.
    dilation_rule : ``"area"`` (default): the odd side whose square area is nearest to the
        paper's kernel area scaled to N (:meth:`dilation_px`); ``"legacy"``: the rule before
        issue 11 (``round(7·N/128)``, bumped up to odd: 5 px at N = 64, twice the area), kept
        to reproduce older runs.
    """

    threshold_gauss: float = 150.0
    dilation_px_at_128: int = 7
    r_kernel_mm: float = 4.3
    dilation_rule: Literal["area", "legacy"] = "area"

    def dilation_px(self, image_size: int) -> int:
        """Odd side of the square dilation kernel for the paper's R on an N×N image.

        The paper's kernel (``dilation_px_at_128`` = 7 px at N = 128) spans the side fraction
        7/128 of the image; at N it is ``s = 7·N/128`` pixels. With ``dilation_rule="area"`` the
        result is the odd k (of the two bracketing ``s``) whose area k² is nearest to s² (ties
        to the smaller), and at least 3 (k = 1 would make R ≡ 0: the two polarity masks never
        overlap undilated). N = 128 gives exactly 7; N = 64 gives 3 (s = 3.5: area 9 px²
        against 12.25, i.e. 0.73× the paper's area; the former 5 px was 25 px², 2.04×);
        N = 32 gives 3 (floor; s = 1.75); N = 256 gives 13.

        Departure: no odd square matches at N = 64. The area-matched 3 px kernel reaches 1 px
        (2/128 of the side) where the paper's reaches 3/128, so on down-sampled images R is
        smaller than the paper's N = 128 value: on the 39 sample SHARP frames (×4 for the
        pixel area) the median of R(64, 3 px) / R(128, 7 px) is 0.05 (0.79 with 5 px), while
        both keep the ranking (Spearman 0.93 with R(128, 7 px)). R is resolution-dependent;
        compare R only between images of the same N.

        Parameters
        ----------
        image_size : N, positive int.

        Returns
        -------
        int, odd, ≥ 3.

        Raises
        ------
        ValueError : non-positive ``image_size`` or ``dilation_px_at_128``, or an unknown
            ``dilation_rule``.

        Source: Chatterjee et al. (2025), "Interpretable Generation" (R); the 7×7 kernel of the
        authors' ``utils.calculate_srij_R`` at N = 128.
        """
        n = int(image_size)
        if n != image_size or n < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if not self.dilation_px_at_128 >= 1:
            raise ValueError(f"dilation_px_at_128 must be >= 1, got {self.dilation_px_at_128!r}")
        s = self.dilation_px_at_128 * n / 128
        if self.dilation_rule == "legacy":
            k = max(3, int(round(s)))
            return k if k % 2 == 1 else k + 1
        if self.dilation_rule != "area":
            raise ValueError(f"dilation_rule must be 'area' or 'legacy', got {self.dilation_rule!r}")
        lo = max(1, 2 * int((s - 1) // 2) + 1)  # largest odd <= s (1 when s < 1)
        hi = lo + 2
        k = lo if abs(lo * lo - s * s) <= abs(hi * hi - s * s) else hi
        return max(3, k)


@dataclass
class GANConfig(Settings):
    """GAN training (paper §Methods/Results: 100-d z, batch 32, lr 5e-4, 200 epochs).

    beta1, beta2 : Adam moments (0.5 as DCGAN; the paper gives only the learning rate).
    select_after_fraction : epochs before this share of training are not eligible for the
        closest-to-chance selection.
    active_fraction : probability that a training draw is an *active* patch (both polarities
        above the threshold over ≥ ``active_min_area`` of the image each). The paper trains on
        SHARPs, which are active regions by construction; the ``cpu`` corpus adds mostly
        quiet-Sun full-disk tiles, so its sampler restores an active-region majority while
        keeping the low-flux regime (1 − active_fraction) in view. ``None`` (the paper) draws
        uniformly.
    """

    latent_dim: int = 100
    base_channels: int = 64
    epochs: int = 200
    batch_size: int = 32
    lr: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    select_after_fraction: float = 0.25
    augment_flips: bool = False
    active_fraction: float | None = None
    active_min_area: float = 0.0025
    seed: int = 0


@dataclass
class SimSiamConfig(Settings):
    """SimSiam retrieval model (Chen & He 2020; paper §Querying).

    out_dim : representation size (paper 100).
    shift_px, zoom, rotation_deg : augmentation ranges (paper: 10 px, 0.8–1.2, ±20°, flips).
    lr : base SGD learning rate, scaled by batch_size/256 as in Chen & He.
    """

    out_dim: int = 100
    proj_hidden: int = 512
    pred_hidden: int = 64
    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    shift_px: float = 10.0
    zoom: tuple[float, float] = (0.8, 1.2)
    rotation_deg: float = 20.0
    width: int = 64
    seed: int = 0


@dataclass
class DirectionsConfig(Settings):
    """SVM latent directions (paper: 10,000 samples, median labels, 7,000/3,000 split).

    n_samples : M generated images.
    train_fraction : SVM training share (0.7).
    svm_C : LinearSVC regularisation.
    eps_max, n_eps : traversal ε grid, symmetric, for the monotonicity report.
    n_base : base latent vectors for monotonicity / conditioning (≥ 50).
    """

    n_samples: int = 10000
    train_fraction: float = 0.7
    svm_C: float = 1.0
    eps_max: float = 3.0
    n_eps: int = 7
    n_base: int = 50
    seed: int = 0


@dataclass
class CalibrationConfig(Settings):
    """Directions in physical units (the paper's future work; :mod:`~helioforge.interrogate.calibrate`).

    n_base : base latent vectors of the fit.
    eps_max, n_eps : symmetric ε grid (n_eps odd, so that it holds ε = 0).
    linearity_tol : relative change of the slope that ends the valid ε range.
    n_bootstrap : resamples of the bases for the slope's 95 % interval.
    native_side_px : native SHARP pixels across the patch an N×N image stands for; ``None``:
        ``data.tile_px`` (the side of the corpus's full-disk tiles, as written FITS headers say).
    seed : seed of the bases and of the random-direction yardstick.
    """

    n_base: int = 64
    eps_max: float = 3.0
    n_eps: int = 13
    linearity_tol: float = 0.25
    n_bootstrap: int = 200
    native_side_px: float | None = None
    seed: int = 0


@dataclass
class ProjectionConfig(Settings):
    """A real magnetogram in the latent space (:mod:`~helioforge.interrogate.project`).

    n_init : random z drawn; the ``restarts`` with the lowest pixel loss start the optimisation.
    restarts, steps, lr : Adam on z, all restarts as one batch.
    param_weight : weight of the flux loss ((ΣB⁺, ΣB⁻ of G(z) − target) / target's Σ|B|)².
    prior_weight : weight of (|z|²/d − 1)², keeping z on the shell where N(0, I) draws lie.
    seed : seed of the random starts.
    """

    n_init: int = 256
    restarts: int = 8
    steps: int = 300
    lr: float = 0.05
    param_weight: float = 0.1
    prior_weight: float = 0.01
    seed: int = 0


@dataclass
class InterrogateConfig(Settings):
    """The main job: Q generated queries, nearest real match for each (paper: 1000).

    ``n_bootstrap`` resamples give the 95 % intervals of every correlation; with
    ``enforce_health`` a run whose GAN or SimSiam is unusable (mode or embedding collapse) or
    whose directions are all at chance stops with an error instead of reporting numbers.
    """

    n_queries: int = 1000
    top_k: int = 1
    seed: int = 1
    zoo_rows: int = 10
    n_bootstrap: int = 1000
    enforce_health: bool = True


@dataclass
class Profile(ProfileBase):
    """A complete configuration for the interrogator pipeline."""

    name: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    params: ParamConfig = field(default_factory=ParamConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    simsiam: SimSiamConfig = field(default_factory=SimSiamConfig)
    directions: DirectionsConfig = field(default_factory=DirectionsConfig)
    interrogate: InterrogateConfig = field(default_factory=InterrogateConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)


def _cpu() -> Profile:
    return Profile(
        name="cpu",
        data=DataConfig(image_size=64, use_fulldisk=True),
        gan=GANConfig(base_channels=32, epochs=90, select_after_fraction=0.5, augment_flips=True, active_fraction=0.7),
        simsiam=SimSiamConfig(epochs=15, batch_size=64, width=32),
        directions=DirectionsConfig(n_samples=3000, n_base=50),
        interrogate=InterrogateConfig(n_queries=1000),
    )


def _tiny() -> Profile:
    return Profile(
        name="tiny",
        data=DataConfig(image_size=32, tile_px=512, tile_stride_px=512, use_fulldisk=True),
        gan=GANConfig(base_channels=8, epochs=6, batch_size=16, augment_flips=True, active_fraction=0.7),
        simsiam=SimSiamConfig(epochs=1, batch_size=16, width=8, proj_hidden=64, pred_hidden=16),
        directions=DirectionsConfig(n_samples=200, n_base=50, n_eps=5),
        interrogate=InterrogateConfig(n_queries=40, n_bootstrap=200, enforce_health=False),
        calibration=CalibrationConfig(n_base=16, n_eps=7, n_bootstrap=50),
        projection=ProjectionConfig(n_init=64, restarts=4, steps=60),
    )


PROFILES = {"paper": Profile, "cpu": _cpu, "tiny": _tiny}


def get_profile(name: str) -> Profile:
    """Return a fresh profile by name (``paper``, ``cpu`` or ``tiny``).

    Parameters
    ----------
    name : str
        A key of :data:`PROFILES`.

    Returns
    -------
    Profile
        A new instance (editing it does not change later calls).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the choices.
    """
    return profile_from_registry(PROFILES, name)
