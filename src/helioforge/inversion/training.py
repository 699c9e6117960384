"""Training the SICON networks on synthetic Stokes maps, and inverting maps with them
(Asensio Ramos & Díaz Baso 2019, A&A 626, A102, §2–§3).

Training (:func:`train_sicon`)
    Batches of (Stokes maps (4, 112, H, W) in quiet-Sun continuum units, targets (49, H, W) in
    physical units) from a training set of :mod:`helioforge.inversion.trainset` are

    1. augmented by one of the 8 flips/90° rotations of the square (paper §2: "randomly
       flipping the patches horizontally and vertically and also by rotations of 90, 180 and
       270°"), the magnetic field and Stokes Q, U, V transformed with the map
       (:func:`augment_pair`, sign rules below);
    2. given Gaussian noise of 10⁻³ I_c, drawn anew for every batch (§2 step 5, §3.2);
    3. turned into network inputs (:func:`helioforge.nn.sicon.encdec_inputs` or
       :func:`~helioforge.nn.sicon.concat_inputs`); the encoder–decoder's log-amplitude
       channels have a fixed offset subtracted, the mean over the training split measured once
       (:func:`log_amplitude_offset`) and stored in the weights' sidecar, so that inversion
       of a map of any size gives each pixel the input it would have had in training;
    4. compared with the targets min–max normalised to [0, 1] (:class:`TargetScaler`) by the
       mean squared error (eq. 2 up to a constant factor);

    Adam, lr 3e-4 halved every 30 epochs (``StepLR``), 50 epochs, batch 128 (§3.1) in the
    ``paper`` profile. Lightning through :func:`helioforge.nn.training.fit_and_save`: resumable
    from ``workdir/checkpoints/last.safetensors``, final weights ``workdir/sicon_<network>``
    ``.safetensors`` + ``.json``.

Sign rules of the augmentation
    x is the column axis, y the row axis, z the line of sight (towards the observer), the
    azimuth φ is counted from +x towards +y and +Q is along x (:mod:`helioforge.physics.me`),
    so Q ∝ B⊥² cos 2φ, U ∝ B⊥² sin 2φ, and by eq. 1 B_Q = sign(cos 2φ) B⊥ |cos 2φ|^½,
    B_U = sign(sin 2φ) B⊥ |½ sin 2φ|^½, B_V = B_z. Moving the pixels with a symmetry g of the
    square is a rotation about the line of sight (k quarter turns) or a mirror in a vertical
    plane. The augmented pair is a pair of the forward model only if the atmosphere is
    transformed as a physical one: scalars move, and the magnetic field, an axial vector, goes
    to det(g) g B. For a rotation (det = +1) the transverse field turns with the map and B_z
    stays; for a mirror (det = −1) the transverse field is mirrored and reversed and **B_z
    changes sign**, and so does Stokes V (circular polarisation changes handedness in a
    mirror). Then

    ============================  ==========  ==========  ==========
    operation                     Q, B_Q      U, B_U      V, B_V
    ============================  ==========  ==========  ==========
    rotation by 90° or 270°       −           −           +
    rotation by 180°              +           +           +
    mirror x → −x or y → −y       +           −           −
    mirror about a diagonal       −           +           −
    ============================  ==========  ==========  ==========

    (2φ turns by 180° under a quarter turn; a mirror sends φ → π − φ or −φ, changing the sign
    of sin 2φ only; eq. 1 is blind to the overall sign of (B_x, B_y).) Keeping V and B_V
    unchanged under a mirror (B treated as a polar vector) is *not* consistent: it reverses
    the sense of the magneto-optical (Faraday) rotation ρ_V relative to B_z, which changes Q
    and U by 20–70 % of the linear-polarisation amplitude (Milne-Eddington, 0.3–2 kG,
    η₀ = 3–10, γ = 60°); ``tests/test_inversion_training.py``
    shows that with :func:`helioforge.physics.me.synth_me` profiles, and checks the rules above
    against eq. 1 on transformed vector fields and against re-synthesised Milne-Eddington
    profiles (exact to 1e-10). (The authors' ``train_encdec.py`` rotates and flips the maps
    with no sign change at all.)

Inversion (:class:`SiconInverter`)
    Maps of any size: reflection-padded to what the network needs (multiples of 8, ≥ 16 for the
    encoder–decoder), cut into overlapping tiles when large, run without gradients in eval
    mode, cropped and converted back to physical units.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

from helioforge.config import ProfileBase, profile_from_registry
from helioforge.io import write_json
from helioforge.nn.checkpoint import load_weights
from helioforge.nn.sicon import (
    AMPLITUDE_FLOOR,
    CONCAT_STOKES_SCALE,
    CONTINUUM_QUANTITIES,
    N_DEPTHS,
    N_STOKES,
    Concatenate,
    EncoderDecoder,
    check_stokes,
    concat_inputs,
    count_parameters,
    encdec_inputs,
    log_amplitudes,
)
from helioforge.nn.training import fit_and_save, inference_device, last_checkpoint, seed_per_rank

__all__ = [
    "TargetScaler",
    "augmentation_signs",
    "dihedral",
    "augment_pair",
    "random_dihedral",
    "SiconModelConfig",
    "SiconTrainConfig",
    "SiconConfig",
    "SICON_PROFILES",
    "get_sicon_profile",
    "build_network",
    "network_inputs",
    "log_amplitude_offset",
    "INPUT_VERSION",
    "pad_for_network",
    "SiconModule",
    "train_sicon",
    "SiconInverter",
    "check_trained",
    "train_command",
    "SICON_STEM",
    "DEFAULT_PIXEL_ARCSEC",
]

log = logging.getLogger(__name__)

#: Weights are saved as ``workdir/sicon_<network>.safetensors`` + ``.json``.
SICON_STEM = "sicon_{network}"
_SETTINGS = "sicon_settings.json"
_NETWORKS = ("encdec", "concat")
_QUANTITIES = ("T", "vz", "z", "logP", "BQ", "BU", "BV")
#: Version of the network inputs, part of the training digest: 2 = the encoder–decoder's log
#: amplitudes minus a fixed offset of the training set (issue 13), 1 = minus the per-map mean.
INPUT_VERSION = 2
#: Pixel of the training maps assumed for weights whose sidecar does not record it (paper §2:
#: "rebinned to the Hinode pixel size of 0.16''").
DEFAULT_PIXEL_ARCSEC = 0.16
_NO_OFFSET = ("encoder-decoder weights without a fixed log-amplitude offset (preprocessing.log_amplitude_offset): "
              "trained before issue 13, when the log-amplitude channels had each map's own mean subtracted (per "
              "training patch, but per whole map at inversion), so their inputs differ between training and "
              "inversion; they are refused")
#: Patches of the training split over which :func:`log_amplitude_offset` averages (at most).
OFFSET_MAX_PATCHES = 4096


# =========================================================================== target scaling
@dataclass
class TargetScaler:
    """Min–max scaling of the 49 targets to [0, 1] (paper §3.1: "all physical conditions are
    linearly transformed to the interval [0, 1] using the minimum and maximum values").

    Attributes
    ----------
    minimum, maximum : float64 arrays (n,), physical units of each target channel.
    names : target names (``"T@logtau=0"`` …), optional.
    source : where the statistics come from (``"trainset <path>"``, ``"sicon <path>"``).

    A channel with ``maximum == minimum`` (e.g. a field-free training set) is scaled by 1, so
    encode and decode stay inverse.
    """

    minimum: np.ndarray
    maximum: np.ndarray
    names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        self.minimum = np.asarray(self.minimum, dtype=np.float64).reshape(-1)
        self.maximum = np.asarray(self.maximum, dtype=np.float64).reshape(-1)
        self.names = tuple(self.names)
        if self.minimum.shape != self.maximum.shape:
            raise ValueError(f"minimum and maximum differ in length: {self.minimum.shape} vs {self.maximum.shape}")
        if not (np.all(np.isfinite(self.minimum)) and np.all(np.isfinite(self.maximum))):
            raise ValueError("TargetScaler: minimum and maximum must be finite")
        if np.any(self.maximum < self.minimum):
            raise ValueError("TargetScaler: maximum below minimum for channel(s) "
                             f"{np.flatnonzero(self.maximum < self.minimum).tolist()}")
        if self.names and len(self.names) != self.minimum.size:
            raise ValueError(f"{len(self.names)} names for {self.minimum.size} channels")

    @property
    def n_channels(self) -> int:
        """Number of target channels."""
        return int(self.minimum.size)

    @property
    def span(self) -> np.ndarray:
        """maximum − minimum, with 1 where they are equal."""
        d = self.maximum - self.minimum
        return np.where(d > 0, d, 1.0)

    def _apply(self, x, forward: bool):
        shape = getattr(x, "shape", ())
        if len(shape) < 3 or shape[-3] != self.n_channels:
            raise ValueError(f"expected targets (..., {self.n_channels}, H, W), got shape {tuple(shape)}")
        lo, sp = self.minimum[:, None, None], self.span[:, None, None]
        if isinstance(x, np.ndarray):
            lo, sp = lo.astype(x.dtype, copy=False), sp.astype(x.dtype, copy=False)
            return (x - lo) / sp if forward else x * sp + lo
        lo_t = torch.as_tensor(lo, dtype=x.dtype, device=x.device)
        sp_t = torch.as_tensor(sp, dtype=x.dtype, device=x.device)
        return (x - lo_t) / sp_t if forward else x * sp_t + lo_t

    def encode(self, targets):
        """Physical units → [0, 1]: (t − min) / (max − min) along axis −3.

        Parameters
        ----------
        targets : tensor or array (..., n, H, W).

        Returns the same type and dtype. Raises ``ValueError`` for another channel count.
        """
        return self._apply(targets, True)

    def decode(self, normalised):
        """[0, 1] → physical units (inverse of :meth:`encode`), same type as the input."""
        return self._apply(normalised, False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary (lists of floats)."""
        return {"minimum": self.minimum.tolist(), "maximum": self.maximum.tolist(), "names": list(self.names),
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TargetScaler":
        """Inverse of :meth:`to_dict`; ``KeyError`` names a missing entry."""
        for k in ("minimum", "maximum"):
            if k not in d:
                raise KeyError(f"TargetScaler dictionary lacks {k!r}")
        return cls(np.asarray(d["minimum"]), np.asarray(d["maximum"]), tuple(d.get("names", ())), d.get("source", ""))

    @classmethod
    def from_trainset(cls, root: str | Path, chunk: int = 256) -> "TargetScaler":
        """Minimum and maximum of every target channel over all shards of a training set.

        Raises :class:`helioforge.inversion.trainset.TrainsetError` for a folder without a
        manifest or with a missing shard.
        """
        import zarr

        from helioforge.inversion.trainset import TrainsetError, make_trainset_command, read_manifest, reading_shard

        root = Path(root)
        man = read_manifest(root)
        names = tuple(man["targets"]["names"])
        lo = np.full(len(names), np.inf)
        hi = np.full(len(names), -np.inf)
        for e in man["shards"]:
            path = root / e["file"]
            if not path.is_dir():
                raise TrainsetError(path, "shard listed in the manifest is missing",
                                    f"run `{make_trainset_command(root, man)}` to make it again")
            with reading_shard(root, e["file"], man):
                t = zarr.open_group(str(path), mode="r")["targets"]
                for s in range(0, t.shape[0], chunk):
                    x = np.asarray(t[s:s + chunk], dtype=np.float64)
                    lo = np.minimum(lo, x.min(axis=(0, 2, 3)))
                    hi = np.maximum(hi, x.max(axis=(0, 2, 3)))
        if not np.all(np.isfinite(lo)):
            raise TrainsetError(root, "no target values found (empty training set?)")
        return cls(lo, hi, names, f"trainset {root}")

    @classmethod
    def from_sicon(cls, path: str | Path | None = None, names: Sequence[str] = ()) -> "TargetScaler":
        """SICON's fixed ranges (``encdec_normalization.npz``, converted to our units by
        :func:`helioforge.inversion.trainset.sicon_ranges`)."""
        from helioforge.config import data_root
        from helioforge.inversion.trainset import sicon_ranges

        lo, hi = sicon_ranges(path)
        where = path if path is not None else data_root() / "stokes" / "instrument" / "encdec_normalization.npz"
        return cls(lo, hi, tuple(names), f"sicon {where}")


# =========================================================================== augmentation
def augmentation_signs(k: int, flip: bool) -> tuple[int, int, int]:
    """Signs of (Q, B_Q), (U, B_U) and (V, B_V) under :func:`dihedral` ``(k, flip)`` (paper §2
    augmentation; derivation and table in the module docstring).

    A quarter turn changes 2φ by 180°: Q and U flip as (−1)^k. A mirror sends φ → π − φ (or −φ):
    sin 2φ changes sign, cos 2φ does not, and B_z and V change sign (B is an axial vector, V
    the circular-polarisation handedness).

    Returns ``(s_Q, s_U, s_V)``, each +1 or −1.
    """
    s_q = -1 if int(k) % 2 else 1
    s_u = s_q * (-1 if flip else 1)
    s_v = -1 if flip else 1
    return s_q, s_u, s_v


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Move the pixels of maps (..., H, W): rotate by k quarter turns (``torch.rot90`` on
    (rows, columns), from +y towards +x), then, if ``flip``, mirror the columns (x → −x).

    The 8 ``(k, flip)`` pairs are the 8 symmetries of the square; a vertical flip is
    ``(2, True)``, the transpose ``(3, True)``, the mirror about the other diagonal
    ``(1, True)``. Values are not changed (see :func:`augment_pair`).
    """
    x = torch.rot90(x, int(k) % 4, dims=(-2, -1)) if int(k) % 4 else x
    return x.flip(-1) if flip else x


def augment_pair(stokes: torch.Tensor | None, targets: torch.Tensor | None, k: int, flip: bool,
                 n_depths: int = N_DEPTHS) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Apply one flip/rotation to Stokes maps and targets consistently (paper §2 augmentation).

    Parameters
    ----------
    stokes : (..., 4, nλ, H, W) or ``None``.
    targets : (..., 7 n_depths, H, W) quantity-major (T, vz, z, logP, B_Q, B_U, B_V) or ``None``.
    k, flip : the symmetry (:func:`dihedral`).
    n_depths : log τ surfaces per quantity.

    Returns
    -------
    (stokes', targets'): the maps moved by :func:`dihedral`, with Q and B_Q multiplied by s_Q,
    U and B_U by s_U, V and B_V by s_V of :func:`augmentation_signs`; I and the scalar
    quantities (T, v_z, z, log P) only move.

    Raises ``ValueError`` for maps that are not (…, 4, nλ, H, W) or (…, 7 n_depths, H, W).
    """
    s_q, s_u, s_v = augmentation_signs(k, flip)
    signs = (s_q, s_u, s_v)
    out_s = out_t = None
    if stokes is not None:
        if stokes.shape[-4] != N_STOKES:
            raise ValueError(f"stokes must be (..., 4, nλ, H, W), got {tuple(stokes.shape)}")
        out_s = dihedral(stokes, k, flip)
        if signs != (1, 1, 1):
            sign = torch.tensor([1.0, s_q, s_u, s_v], dtype=out_s.dtype, device=out_s.device)[:, None, None, None]
            out_s = out_s * sign
    if targets is not None:
        nt = len(_QUANTITIES) * n_depths
        if targets.shape[-3] != nt:
            raise ValueError(f"targets must be (..., {nt}, H, W), got {tuple(targets.shape)}")
        out_t = dihedral(targets, k, flip)
        if signs != (1, 1, 1):
            sign = torch.ones(nt, dtype=out_t.dtype, device=out_t.device)
            for name, sgn in zip(("BQ", "BU", "BV"), signs):
                i = _QUANTITIES.index(name)
                sign[i * n_depths:(i + 1) * n_depths] = sgn
            out_t = out_t * sign[:, None, None]
    return out_s, out_t


def random_dihedral(stokes: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None,
                    n_depths: int = N_DEPTHS) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch: each sample gets one of the 8 symmetries at random (uniform).

    Parameters
    ----------
    stokes : (B, 4, nλ, H, W); targets : (B, 7 n_depths, H, W).
    generator : CPU ``torch.Generator`` for the draws (default: torch's global one).

    Non-square maps only get the symmetries that keep their shape (k even).
    """
    B = stokes.shape[0]
    square = stokes.shape[-1] == stokes.shape[-2]
    k = torch.randint(0, 4, (B,), generator=generator)
    if not square:
        k = (k // 2) * 2
    flip = torch.randint(0, 2, (B,), generator=generator).bool()
    out_s, out_t = torch.empty_like(stokes), torch.empty_like(targets)
    for kk in range(4):
        for ff in (False, True):
            idx = torch.nonzero((k == kk) & (flip == ff)).flatten()
            if idx.numel() == 0:
                continue
            idx_d = idx.to(stokes.device)
            s, t = augment_pair(stokes[idx_d], targets[idx_d], kk, ff, n_depths)
            out_s[idx_d], out_t[idx_d] = s, t
    return out_s, out_t


# =========================================================================== configuration
@dataclass
class SiconModelConfig:
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

    network: str = "encdec"
    width: int = 32
    amplitude_floor: float = AMPLITUDE_FLOOR
    amplitude_relative_to_continuum: bool = True
    concat_stokes_scale: tuple[float, float, float, float] = CONCAT_STOKES_SCALE
    continuum_quantities: tuple[str, ...] = CONTINUUM_QUANTITIES

    def __post_init__(self) -> None:
        if self.network not in _NETWORKS:
            raise ValueError(f"unknown network {self.network!r}; choose one of {list(_NETWORKS)}")
        if int(self.width) < 1:
            raise ValueError(f"width must be ≥ 1, got {self.width}")


@dataclass
class SiconTrainConfig:
    """Training (paper §2 step 5, §3.1).

    epochs, batch_size : paper 50 and 128 (encoder–decoder).
    lr, lr_step_epochs, lr_gamma : Adam learning rate multiplied by ``lr_gamma`` every
        ``lr_step_epochs`` epochs (paper 3e-4, 30, 0.5; ``torch.optim.lr_scheduler.StepLR``).
    noise_sigma : Gaussian noise added to the Stokes maps, new for every batch, units of the
        quiet-Sun continuum (paper 1e-3).
    augment : random flips and 90° rotations (:func:`random_dihedral`).
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
    scaler: str = "trainset"
    num_workers: int = 4
    in_memory_gb: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scaler not in ("trainset", "sicon"):
            raise ValueError(f"scaler must be 'trainset' or 'sicon', got {self.scaler!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")


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
    """A fresh SICON training profile by name (``paper``, ``paper-concat``, ``cpu``, ``tiny``).

    Raises ``ValueError`` for an unknown name.
    """
    return profile_from_registry(SICON_PROFILES, name, "SICON profile")


# =========================================================================== network plumbing
def _model_dict(model: SiconModelConfig | dict[str, Any]) -> dict[str, Any]:
    return dataclasses.asdict(model) if dataclasses.is_dataclass(model) else dict(model)


def build_network(model: SiconModelConfig | dict[str, Any], n_wavelengths: int = 112) -> torch.nn.Module:
    """The network of a :class:`SiconModelConfig` (or its dict) for nλ wavelengths.

    Returns an :class:`~helioforge.nn.sicon.EncoderDecoder` (4 nλ + 3 → 49 channels) or a
    :class:`~helioforge.nn.sicon.Concatenate` (4 nλ → 49). Raises ``ValueError`` for an unknown
    network name.
    """
    m = _model_dict(model)
    if m["network"] == "encdec":
        return EncoderDecoder(N_STOKES * n_wavelengths + 3, 7 * N_DEPTHS, int(m["width"]),
                              tuple(m.get("continuum_quantities", CONTINUUM_QUANTITIES)))
    if m["network"] == "concat":
        return Concatenate(N_STOKES * n_wavelengths, 7, N_DEPTHS, int(m["width"]))
    raise ValueError(f"unknown network {m['network']!r}; choose one of {list(_NETWORKS)}")


def network_inputs(stokes: torch.Tensor, model: SiconModelConfig | dict[str, Any],
                   amplitude_floor: float | None = None,
                   log_amplitude_offset: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Preprocess Stokes maps (B, 4, nλ, H, W) for the network of ``model``
    (:func:`~helioforge.nn.sicon.encdec_inputs` or :func:`~helioforge.nn.sicon.concat_inputs`).

    Parameters
    ----------
    stokes : (B, 4, nλ, H, W), quiet-Sun continuum units.
    model : :class:`SiconModelConfig` or its dict (a sidecar's ``model`` entry).
    amplitude_floor : overrides the configured Q, U, V amplitude floor (encoder–decoder only).
    log_amplitude_offset : the training set's fixed log-amplitude offset (Q, U, V, dex;
        :func:`log_amplitude_offset`); default ``model["log_amplitude_offset"]`` (set by
        :class:`SiconInverter` from the sidecar). The same offset in training and inversion
        makes a pixel's input independent of the size and content of the map (issue 13).

    Raises
    ------
    ValueError : an encoder–decoder without an offset (neither given nor in ``model``), and
        the errors of :func:`~helioforge.nn.sicon.encdec_inputs`.
    """
    m = _model_dict(model)
    if m["network"] == "encdec":
        floor = float(m["amplitude_floor"] if amplitude_floor is None else amplitude_floor)
        offset = m.get("log_amplitude_offset") if log_amplitude_offset is None else log_amplitude_offset
        if offset is None:
            raise ValueError("encoder-decoder inputs need the training set's fixed log-amplitude offset "
                             "(log_amplitude_offset; stored in the weights' sidecar under preprocessing)")
        return encdec_inputs(stokes, floor, bool(m.get("amplitude_relative_to_continuum", True)), offset)
    return concat_inputs(stokes, tuple(m.get("concat_stokes_scale", CONCAT_STOKES_SCALE)))


def log_amplitude_offset(dataset, indices: Sequence[int], model: SiconModelConfig | dict[str, Any],
                         noise_sigma: float = 1e-3, seed: int = 0,
                         max_patches: int = OFFSET_MAX_PATCHES) -> list[float]:
    """The fixed offset of the encoder–decoder's log-amplitude channels: mean of log₁₀ a of
    Q, U, V over the pixels of training patches (paper §3.1; issue 13).

    SICON subtracts a mean of the log amplitudes "over the map"; taken per map it makes the
    same pixel's input depend on what else the map holds (a patch in training, a whole map in
    inversion). This one number per parameter, measured once on the training split with the
    training noise added, is stored in the weights' sidecar and used identically in training
    and inversion.

    Parameters
    ----------
    dataset : indexable of ``(stokes (4, nλ, H, W), targets)`` (a training set).
    indices : the training patches; at most ``max_patches`` of them, evenly spaced, are read.
    model : its ``amplitude_floor`` and ``amplitude_relative_to_continuum`` are used.
    noise_sigma : Gaussian noise added first (the training noise, quiet-Sun units).
    seed : seed of that noise (the offset is reproducible).

    Returns
    -------
    [offset_Q, offset_U, offset_V], dex (Python floats).

    Raises
    ------
    ValueError : no index given.
    """
    m = _model_dict(model)
    idx = list(indices)
    if not idx:
        raise ValueError("log_amplitude_offset: no training patch given")
    if len(idx) > max_patches:
        idx = [idx[int(k)] for k in np.linspace(0, len(idx) - 1, max_patches).round().astype(int)]
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    total = torch.zeros(3, dtype=torch.float64)
    count = 0
    for i in idx:
        stokes = torch.as_tensor(dataset[i][0], dtype=torch.float32)
        if noise_sigma > 0:
            stokes = stokes + noise_sigma * torch.randn(stokes.shape, generator=gen)
        la = log_amplitudes(stokes[None], float(m["amplitude_floor"]),
                            bool(m.get("amplitude_relative_to_continuum", True)))[0].double()
        total += la.sum(dim=(1, 2))
        count += la.shape[1] * la.shape[2]
    return [float(v) for v in (total / count)]


def _reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflection padding of (B, C, H, W) by any amount (repeated reflections; replicate for a
    1-pixel axis)."""
    while top or bottom or left or right:
        H, W = x.shape[-2:]
        if H == 1 and (top or bottom):
            x = F.pad(x, (0, 0, top, bottom), mode="replicate")
            top = bottom = 0
            continue
        if W == 1 and (left or right):
            x = F.pad(x, (left, right, 0, 0), mode="replicate")
            left = right = 0
            continue
        t, b, l, r = min(top, H - 1), min(bottom, H - 1), min(left, W - 1), min(right, W - 1)
        x = F.pad(x, (l, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - l, right - r
    return x


def pad_for_network(x: torch.Tensor, net: torch.nn.Module) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Reflection-pad network inputs (B, C, H, W) to the size ``net`` accepts (H, W multiples of
    ``net.size_multiple`` and ≥ ``net.min_size``), the map centred.

    Returns ``(padded, (rows, cols))``: the slices that crop the output back to H × W.
    """
    H, W = x.shape[-2:]
    mult, least = int(getattr(net, "size_multiple", 1)), int(getattr(net, "min_size", 1))

    def target(n: int) -> int:
        return max(least, -(-n // mult) * mult)

    Ht, Wt = target(H), target(W)
    top, left = (Ht - H) // 2, (Wt - W) // 2
    if (Ht, Wt) != (H, W):
        x = _reflect_pad(x, top, Ht - H - top, left, Wt - W - left)
    return x, (slice(top, top + H), slice(left, left + W))


# =========================================================================== Lightning module
class SiconModule(L.LightningModule):
    """Lightning wrapper of a SICON network: augmentation, online noise, preprocessing, L2 loss
    on min–max normalised targets (eq. 2); Adam with StepLR.

    Batches are ``(stokes (B, 4, nλ, H, W), targets (B, 49, H, W))`` in quiet-Sun continuum
    and physical units. Logs ``train_loss`` and ``val_loss`` (mean squared error of the
    normalised targets) per epoch.

    Parameters
    ----------
    model, train : :class:`SiconModelConfig`, :class:`SiconTrainConfig`.
    scaler : :class:`TargetScaler` of the 49 targets.
    n_wavelengths : nλ (112).
    log_amplitude_offset : the encoder–decoder's fixed log-amplitude offset (Q, U, V, dex;
        :func:`log_amplitude_offset`); required for ``encdec``, ignored for ``concat``.

    Raises ``ValueError`` for an encoder–decoder without ``log_amplitude_offset``.
    """

    def __init__(self, model: SiconModelConfig, train: SiconTrainConfig, scaler: TargetScaler,
                 n_wavelengths: int = 112, log_amplitude_offset: Sequence[float] | None = None) -> None:
        super().__init__()
        self.model_cfg, self.cfg = model, train
        if model.network == "encdec" and log_amplitude_offset is None:
            raise ValueError("SiconModule: the encoder-decoder needs log_amplitude_offset (see log_amplitude_offset())")
        self.register_buffer("log_amp_offset", torch.as_tensor(
            log_amplitude_offset if log_amplitude_offset is not None else [0.0, 0.0, 0.0], dtype=torch.float32),
            persistent=False)
        self.net = build_network(model, n_wavelengths)
        self.register_buffer("t_min", torch.as_tensor(scaler.minimum, dtype=torch.float32)[:, None, None])
        self.register_buffer("t_span", torch.as_tensor(scaler.span, dtype=torch.float32)[:, None, None])
        self.val_loader: DataLoader | None = None
        self._val_gen: torch.Generator | None = None

    def forward(self, stokes: torch.Tensor) -> torch.Tensor:
        """Normalised prediction (B, 49, H, W) of Stokes maps (B, 4, nλ, H, W) of any size."""
        x, (rows, cols) = pad_for_network(network_inputs(stokes, self.model_cfg,
                                                         log_amplitude_offset=self.log_amp_offset), self.net)
        return self.net(x)[..., rows, cols]

    def _loss(self, stokes: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        y = (targets - self.t_min) / self.t_span
        return F.mse_loss(self(stokes + noise), y)

    def on_train_start(self) -> None:
        """Different augmentation and noise on every DDP rank."""
        seed_per_rank(self, self.cfg.seed)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Augment, add noise (σ = ``noise_sigma``, new every batch), eq. 2; logs ``train_loss``."""
        stokes, targets = batch
        if self.cfg.augment:
            stokes, targets = random_dihedral(stokes, targets)
        noise = self.cfg.noise_sigma * torch.randn_like(stokes)
        loss = self._loss(stokes, targets, noise)
        self.log("train_loss", loss.detach(), prog_bar=True, on_step=False, on_epoch=True, batch_size=len(stokes))
        return loss

    def on_validation_epoch_start(self) -> None:
        """The same noise realisation at every validation, so that epochs compare."""
        self._val_gen = torch.Generator().manual_seed(self.cfg.seed + 7919)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Eq. 2 on held-out patches with fixed noise; logs ``val_loss``."""
        stokes, targets = batch
        noise = self.cfg.noise_sigma * torch.randn(stokes.shape, generator=self._val_gen).to(stokes)
        loss = self._loss(stokes, targets, noise)
        self.log("val_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(stokes), sync_dist=True)

    def val_dataloader(self):
        """The held-out patches (empty list when none)."""
        return self.val_loader if self.val_loader is not None else []

    def configure_optimizers(self):
        """Adam (lr 3e-4) with ``StepLR`` (× 0.5 every 30 epochs) (paper §3.1)."""
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(self.cfg.lr_step_epochs)),
                                                gamma=self.cfg.lr_gamma)
        return [opt], [{"scheduler": sched, "interval": "epoch"}]


# =========================================================================== training
def _load_patches(root: Path, in_memory_gb: float):
    """The training set as a torch Dataset: in memory when small, else the lazy zarr reader."""
    from helioforge.inversion.trainset import TrainsetDataset

    lazy = TrainsetDataset(root)
    man = lazy.manifest
    per_patch = 4 * (int(np.prod(man["stokes"]["shape"])) + int(np.prod(man["targets"]["shape"])))
    if len(lazy) * per_patch > in_memory_gb * 2**30:
        return lazy
    import zarr

    from helioforge.inversion.trainset import reading_shard

    stokes, targets = [], []
    for e in lazy.shards:
        with reading_shard(root, e["file"], man):
            g = zarr.open_group(str(root / e["file"]), mode="r")
            stokes.append(torch.from_numpy(np.asarray(g["stokes"][:], dtype=np.float32)))
            targets.append(torch.from_numpy(np.asarray(g["targets"][:], dtype=np.float32)))
    return TensorDataset(torch.cat(stokes), torch.cat(targets))


def train_sicon(
    trainset_dir: str | Path,
    workdir: str | Path,
    network: str | None = None,
    profile: str | SiconConfig = "cpu",
    *,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
    verify: bool = True,
    force: bool = False,
) -> Path:
    """Train a SICON network on a training set; return the stem of the saved weights.

    The training folder's lock is held throughout (a second run on it raises
    :class:`~helioforge.errors.FolderInUse`). The final weights are recorded in
    ``workdir/state.json`` (step ``sicon_<network>``, with their SHA-256) only once they are
    written; the record is removed when a run starts, so weights of an interrupted run are never
    taken for a trained model (:meth:`SiconInverter.from_weights` refuses them).

    Parameters
    ----------
    trainset_dir : folder made by :func:`helioforge.inversion.trainset.make_trainset`.
    workdir : training folder; resumes from ``workdir/checkpoints/last.safetensors`` (a run
        with more epochs continues a shorter one).
    network : ``encdec`` or ``concat``; ``None`` keeps the profile's (``encdec`` except in
        ``paper-concat``).
    profile : a :class:`SiconConfig` or its name (:func:`get_sicon_profile`).
    accelerator, devices : Lightning's (``auto``: a GPU when present).
    progress : progress bar.
    verify : check every shard of the training set against its manifest's checksums first
        (:func:`~helioforge.inversion.trainset.verify_trainset`; a damaged set is refused).
    force : start afresh: remove the folder's checkpoint, final weights and settings first.

    Returns
    -------
    Path ``workdir/sicon_<network>`` (without suffix) of ``.safetensors`` (network weights) and
    ``.json``: network settings and parameter count, preprocessing (with the fixed
    ``log_amplitude_offset`` of the encoder–decoder), the quiet-Sun reference of the training
    set (``quiet_sun_reference``) and its pixel (``stokes.pixel_arcsec``), scaler statistics, target
    names/units/log τ, Stokes wavelengths and units, the training set's path, digest and
    manifest checksum, split sizes, the profile, ``final_metrics`` (``train_loss``,
    ``val_loss``) and ``epochs_trained``.

    Raises
    ------
    helioforge.inversion.trainset.TrainsetError : not a (complete) training set, or a damaged
        shard (``verify``).
    ProductError : ``workdir`` holds a checkpoint whose settings file is missing or unreadable.
    FolderInUse : another process trains in ``workdir``.
    ValueError : unknown network or profile, fewer than two training patches, or ``workdir``
        holding a checkpoint made with other settings or another training set.
    """
    from helioforge.inversion.trainset import read_manifest, verify_trainset
    from helioforge.locking import workdir_lock

    cfg = get_sicon_profile(profile) if isinstance(profile, str) else profile
    if network is not None and network != cfg.model.network:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, network=network))
    root = Path(trainset_dir)
    man = verify_trainset(root) if verify else read_manifest(root)  # a bad set is refused before any folder is made
    with workdir_lock(workdir):
        return _train_sicon(root, Path(workdir), cfg, man, accelerator=accelerator, devices=devices,
                            progress=progress, force=force)


def train_command(workdir: str | Path, network: str, trainset: str | Path | None = None, profile: str | None = None,
                  force: bool = False) -> str:
    """The ``helioforge inversion train`` command that (re)makes the weights of ``network`` in
    the training folder ``workdir`` (``…/train_<network>``: ``-w`` is its parent)."""
    import shlex

    workdir = Path(workdir)
    w = workdir.parent if workdir.name == f"train_{network}" else workdir
    cmd = (f"helioforge inversion train -t {shlex.quote(str(trainset)) if trainset else 'TRAINSET'} "
           f"-w {shlex.quote(str(w))} -n {network}")
    if profile:
        cmd += f" -p {shlex.quote(str(profile))}"
    return cmd + (" --force" if force else "")


def _stem_readable(stem: Path) -> bool:
    """Whether both files of a weights stem can be read (:func:`load_weights` succeeds)."""
    try:
        load_weights(stem)
    except Exception:  # noqa: BLE001 - any failure: not readable
        return False
    return True


def _train_sicon(root: Path, workdir: Path, cfg: SiconConfig, man: dict[str, Any], *, accelerator, devices,
                 progress: bool, force: bool) -> Path:
    from helioforge.errors import ProductError
    from helioforge.inversion.trainset import MANIFEST, TARGET_UNITS, quiet_sun_reference_of
    from helioforge.workspace import StepState, file_sha256

    mc, tc = cfg.model, cfg.train
    step = SICON_STEM.format(network=mc.network)
    stem = workdir / step
    files = (stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
    # the encoder–decoder's inputs changed with INPUT_VERSION 2: its older checkpoints are another run
    extra = f"{man.get('digest')}/inputs-v{INPUT_VERSION}" if mc.network == "encdec" else man.get("digest")
    digest = cfg.digest("model", "train", extra=extra, drop=("train.epochs", "train.num_workers", "train.in_memory_gb"))
    settings = workdir / _SETTINGS
    fresh = train_command(workdir, mc.network, root, cfg.name, force=True)
    state = StepState(workdir)
    if force:  # the folder holds this network only: its bookkeeping goes too (even if unreadable)
        for p in (*files, settings, state.state_file, workdir / "checkpoints" / "last.safetensors"):
            p.unlink(missing_ok=True)
    ckpt = last_checkpoint(workdir)
    if ckpt is not None:
        if not settings.is_file():
            raise ProductError(ckpt, f"a training checkpoint without its settings file {_SETTINGS} (unknown run)",
                               f"start afresh with `{fresh}`, or use a new folder")
        try:
            old = json.loads(settings.read_text())
            if not isinstance(old, dict):
                raise ValueError(f"a JSON {type(old).__name__}, not an object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ProductError(settings, f"unreadable settings of the checkpointed run ({type(exc).__name__}: {exc})",
                               f"start afresh with `{fresh}`, or use a new folder") from None
        if old.get("digest") != digest:
            raise ValueError(f"{workdir}: holds a checkpoint of another SICON run (settings digest {old.get('digest')} "
                             f"≠ {digest}); use a new folder, or start afresh with `{fresh}`")
        from helioforge.nn.checkpoint import SafetensorsCheckpointIO

        try:  # a truncated or garbled checkpoint is refused here, not deep inside Lightning's resume
            SafetensorsCheckpointIO().load_checkpoint(ckpt)
        except Exception as exc:  # noqa: BLE001 - safetensors/JSON raise several kinds for a damaged file
            problem = exc.problem if isinstance(exc, ProductError) else f"{type(exc).__name__}: {exc}"
            raise ProductError(ckpt, f"unreadable training checkpoint ({problem})",
                               f"start afresh with `{fresh}`") from None
    dataset = _load_patches(root, tc.in_memory_gb)
    workers = tc.num_workers if not isinstance(dataset, TensorDataset) else 0
    n = len(dataset)
    n_val = max(1, int(round(tc.validation_fraction * n))) if tc.validation_fraction > 0 else 0
    if n - n_val < 2:
        raise ValueError(f"{root}: {n} patches leave {n - n_val} for training (need ≥ 2)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(tc.seed)).tolist()
    val_idx, train_idx = sorted(perm[:n_val]), sorted(perm[n_val:])

    # from here on the folder's weights are being remade: not current until written and marked
    current = state.is_current(step, None, *files)
    state.unmark(step)
    if not current and any(p.exists() for p in files) and not _stem_readable(stem):
        for p in files:  # weights of an interrupted or damaged run: remade from the checkpoint
            p.unlink(missing_ok=True)
    write_json(settings, {"digest": digest, "profile": cfg.to_dict(), "trainset": str(root.resolve()),
                          "trainset_digest": man.get("digest")})

    scaler = TargetScaler.from_trainset(root) if tc.scaler == "trainset" else \
        TargetScaler.from_sicon(names=man["targets"]["names"])
    n_wav = int(man["stokes"]["shape"][1])
    L.seed_everything(tc.seed, verbose=False)
    offset = None
    if mc.network == "encdec":
        offset = log_amplitude_offset(dataset, train_idx, mc, tc.noise_sigma, tc.seed)
        log.info("log-amplitude offset (Q, U, V) of %s: %s dex", root, ", ".join(f"{v:.4f}" for v in offset))
    module = SiconModule(mc, tc, scaler, n_wav, log_amplitude_offset=offset)
    batch = min(tc.batch_size, len(train_idx))
    loader = DataLoader(Subset(dataset, train_idx), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    if n_val:
        module.val_loader = DataLoader(Subset(dataset, val_idx), batch_size=min(tc.batch_size, n_val), shuffle=False,
                                       num_workers=workers)
    config = {
        "network": mc.network,
        "model": {**dataclasses.asdict(mc), "in_channels": module.net.in_channels,
                  "out_channels": module.net.out_channels, "n_parameters": count_parameters(module.net)},
        "preprocessing": {
            "input": "encdec_inputs" if mc.network == "encdec" else "concat_inputs",
            "amplitude_floor": mc.amplitude_floor,
            "amplitude_relative_to_continuum": mc.amplitude_relative_to_continuum,
            "concat_stokes_scale": list(mc.concat_stokes_scale),
            "input_version": INPUT_VERSION,
            "log_amplitude_offset": offset,
            "log_amplitude_offset_source": (
                f"mean log10 amplitude (Q, U, V) over {min(len(train_idx), OFFSET_MAX_PATCHES)} training patches "
                f"of {root.resolve()} with noise {tc.noise_sigma:g}" if offset is not None else None),
            "size_multiple": int(module.net.size_multiple),
            "min_size": int(module.net.min_size),
        },
        "scaler": scaler.to_dict(),
        "targets": {
            "names": list(man["targets"]["names"]),
            "quantities": list(man["targets"]["quantities"]),
            "log_tau": list(man["targets"]["log_tau"]),
            "units": dict(man["targets"].get("units", TARGET_UNITS)),
            "order": man["targets"].get("order", "quantity-major"),
            "z_offset_km": man["targets"].get("z_offset_km"),
        },
        "stokes": {
            "n_wavelengths": n_wav,
            "wavelengths_air_A": man["stokes"].get("wavelengths_air_A"),
            "units": man["stokes"].get("units"),
            "ic_quiet_sun_cgs": man["stokes"].get("ic_quiet_sun_cgs"),
            "mu": man["stokes"].get("mu"),
            "pixel_arcsec": man.get("pixel_arcsec"),
        },
        "quiet_sun_reference": quiet_sun_reference_of(man, root),
        "trainset": {
            "path": str(root.resolve()),
            "digest": man.get("digest"),
            "manifest_sha256": file_sha256(root / MANIFEST),
            "profile_name": man.get("profile_name"),
            "n_patches": n,
            "patch_size": man.get("patch_size"),
        },
        "split": {"n_train": len(train_idx), "n_validation": n_val, "seed": tc.seed},
        "profile": cfg.to_dict(),
        "source": "Asensio Ramos & Díaz Baso 2019, A&A 626, A102 (SICON)",
    }
    t0 = time.perf_counter()
    stem, full = fit_and_save(module, module.net, loader, workdir, step, tc.epochs,
                              config, accelerator=accelerator, devices=devices, progress=progress)
    state.mark(step, digest, *files)
    m = full["final_metrics"]
    log.info("SICON %s: %d epochs, train loss %.4g, val loss %.4g (%.1f s this call)", mc.network,
             full["epochs_trained"], m.get("train_loss", float("nan")), m.get("val_loss", float("nan")),
             time.perf_counter() - t0)
    return stem


# =========================================================================== inversion
def _train_command_for(stem: Path, network: str, force: bool = False) -> str:
    """The training command of the weights ``stem``, with the training set and profile its
    folder's ``sicon_settings.json`` records (placeholders when unreadable)."""
    if stem.parent.name != f"train_{network}":  # weights copied out of their training folder
        return f"helioforge inversion train -t TRAINSET -w WORKDIR -n {network}" + (" --force" if force else "")
    trainset = profile = None
    try:
        d = json.loads((stem.parent / _SETTINGS).read_text())
        trainset, profile = d.get("trainset"), (d.get("profile") or {}).get("name")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        pass
    return train_command(stem.parent, network, trainset, profile, force=force)


def check_trained(stem: str | Path) -> None:
    """Refuse the weights ``stem`` of a training folder unless their training finished.

    A folder made by :func:`train_sicon` (it has ``state.json`` or a training checkpoint) must
    record the weights as finished, with their SHA-256 unchanged; weights elsewhere (a copy
    without the training folder) are taken as they are.

    Raises
    ------
    ProductError : unfinished (interrupted or still running: the command resumes it), or the
        files changed since they were written.
    """
    from helioforge.workspace import StepState

    stem = Path(stem)
    folder = stem.parent
    if not ((folder / "state.json").is_file() or last_checkpoint(folder) is not None):
        return
    from helioforge.errors import ProductError

    network = stem.name.removeprefix("sicon_") or "encdec"
    cmd = _train_command_for(stem, network)
    state = StepState(folder, create=False)
    try:
        state.require(stem.name, None, stem.with_suffix(".safetensors"), stem.with_suffix(".json"), rebuild=cmd)
    except ProductError as exc:
        if exc.path != state.state_file:
            raise
        raise ProductError(exc.path, exc.problem, f"delete it and run `{cmd}` (it resumes from the checkpoint and "
                                                  "records the weights again)") from None


class SiconInverter:
    """A trained SICON network applied to Stokes maps of any size (paper §4).

    Build with :meth:`from_weights`. :meth:`invert` preprocesses each map as in training (the
    encoder–decoder's log amplitudes minus the training set's fixed offset of the sidecar,
    never a statistic of the map itself), reflection-pads it to what the network accepts, runs it in tiles (with overlapping
    margins) when it is large, without gradients and in eval mode, crops, and converts the
    output to physical units with the stored :class:`TargetScaler`.

    Attributes
    ----------
    net : the network (eval mode) on ``device``.
    config : the JSON sidecar of the weights.
    scaler : the target scaling.
    network : ``encdec`` or ``concat``.
    target_names, target_units, log_tau, n_wavelengths : from the sidecar.
    log_amplitude_offset : the encoder–decoder's fixed log-amplitude offset (Q, U, V, dex), or
        ``None`` for the concatenate network.
    pixel_arcsec : pixel of the training maps (sidecar ``stokes.pixel_arcsec``; weights that
        predate it: :data:`DEFAULT_PIXEL_ARCSEC`, the paper's 0.16″).

    Raises
    ------
    ValueError : encoder–decoder weights whose sidecar has no ``log_amplitude_offset``
        (trained before issue 13 with per-map means: they must be retrained).
    """

    def __init__(self, net: torch.nn.Module, config: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.config = config
        self.scaler = TargetScaler.from_dict(config["scaler"])
        self.network = config["network"]
        self.model_cfg = config["model"]
        self.target_names = list(config["targets"]["names"])
        self.target_units = dict(config["targets"]["units"])
        self.log_tau = list(config["targets"]["log_tau"])
        self.n_wavelengths = int(config["stokes"]["n_wavelengths"])
        pre = config.get("preprocessing") or {}
        self.log_amplitude_offset = pre.get("log_amplitude_offset")
        if self.network == "encdec" and self.log_amplitude_offset is None:
            raise ValueError(_NO_OFFSET)
        if self.log_amplitude_offset is not None:
            self.log_amplitude_offset = [float(v) for v in self.log_amplitude_offset]
            if len(self.log_amplitude_offset) != 3 or not np.all(np.isfinite(self.log_amplitude_offset)):
                raise ValueError(f"log_amplitude_offset must be 3 finite numbers, got {self.log_amplitude_offset}")
        self.model_cfg = {**self.model_cfg, "log_amplitude_offset": self.log_amplitude_offset}
        self.pixel_arcsec = float(config["stokes"].get("pixel_arcsec") or DEFAULT_PIXEL_ARCSEC)

    @classmethod
    def from_weights(cls, stem: str | Path, device: str | torch.device | None = None) -> "SiconInverter":
        """Load what :func:`train_sicon` saved (``stem.safetensors`` + ``stem.json``).

        ``device``: ``None`` picks a GPU when present, else the CPU.

        Encoder–decoder weights whose sidecar lacks the fixed log-amplitude offset (trained
        before issue 13) are refused with a :class:`~helioforge.errors.ProductError` naming
        the sidecar and the command that retrains them: no fallback, since the per-map mean
        they were trained with cannot be reproduced on a whole map.

        Raises ``FileNotFoundError`` naming a missing file;
        :class:`~helioforge.errors.ProductError` (a ``ValueError``) naming the file and the
        command that retrains it when the weights are unfinished (training interrupted or
        still running, :func:`check_trained`), changed since they were written, unreadable
        (truncated, garbled), non-finite (NaN/inf), or do not match the settings of the
        sidecar (another architecture), or when the sidecar is unreadable or not that of a
        SICON network.
        """
        from helioforge.errors import HelioforgeError, ProductError

        stem = Path(stem)
        weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        for p in (weights, sidecar):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: model file not found")
        check_trained(stem)
        network = stem.name.removeprefix("sicon_") or "encdec"
        remedy = f"retrain it with `{_train_command_for(stem, network, force=True)}`"
        try:
            config = json.loads(sidecar.read_text())
            if not isinstance(config, dict):
                raise ValueError(f"a JSON {type(config).__name__}, not an object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ProductError(sidecar, f"unreadable model settings ({type(exc).__name__}: {exc})", remedy) from None
        missing = [k for k in ("network", "model", "scaler", "targets", "stokes") if k not in config]
        if missing:
            raise ProductError(sidecar, f"not a SICON model (missing {missing})", remedy)
        if config.get("network") == "encdec" and (config.get("preprocessing") or {}).get("log_amplitude_offset") is None:
            raise ProductError(sidecar, _NO_OFFSET, remedy)
        try:
            state, _ = load_weights(stem)
        except ProductError as exc:  # the reader's diagnosis, with the command that remakes SICON weights
            raise ProductError(exc.path, exc.problem, remedy) from None
        except HelioforgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
            raise ProductError(weights, f"unreadable weights ({type(exc).__name__}: {exc})", remedy) from None
        for key, t in state.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ProductError(weights, f"non-finite weights (NaN or inf) in {key}: the network would give NaN maps",
                                   remedy)
        try:
            net = build_network(config["model"], int(config["stokes"]["n_wavelengths"]))
            net.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - size mismatch (RuntimeError), bad settings (KeyError, ValueError…)
            detail = str(exc).strip().splitlines()
            detail = "; ".join(d.strip() for d in detail[:3]) + (" …" if len(detail) > 3 else "")
            raise ProductError(sidecar, f"its settings do not match the weights in {weights.name} "
                                        f"({type(exc).__name__}: {detail})", remedy) from None
        try:
            return cls(net, config, device if device is not None else inference_device("auto"))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProductError(sidecar, f"damaged model settings ({type(exc).__name__}: {exc})", remedy) from None

    def _tiles(self, H: int, W: int, tile: int, margin: int) -> list[tuple[slice, slice, slice, slice]]:
        """Per tile: (input rows, input cols, rows and cols of its core within the tile, rows and cols of
        that core in the map)."""
        mult = int(getattr(self.net, "size_multiple", 1))
        tile = max(-(-tile // mult) * mult, int(getattr(self.net, "min_size", 1)))
        margin = -(-margin // mult) * mult
        if tile <= 2 * margin:
            raise ValueError(f"tile {tile} must exceed twice the margin {margin}")
        th, tw = min(tile, H), min(tile, W)

        def axis(n: int, t: int) -> list[tuple[int, int, int]]:
            if n <= t:
                return [(0, 0, n)]
            core = t - 2 * margin
            out = []
            for s in range(0, n, core):
                e = min(s + core, n)
                t0 = max(0, min(s - margin, n - t))
                out.append((t0, s, e))
            return out

        jobs = []
        for r0, rs, re in axis(H, th):
            for c0, cs, ce in axis(W, tw):
                jobs.append((slice(r0, r0 + th), slice(c0, c0 + tw), slice(rs - r0, re - r0), slice(cs - c0, ce - c0),
                             slice(rs, re), slice(cs, ce)))
        return jobs

    @torch.no_grad()
    def invert(self, stokes, *, batch_size: int = 8, tile: int = 512, margin: int | None = None,
               amplitude_floor: float | None = None):
        """Infer the 49 target maps from Stokes maps.

        Parameters
        ----------
        stokes : array or tensor (4, nλ, H, W) or (B, 4, nλ, H, W), I, Q, U, V in units of the
            quiet-Sun continuum (paper §4), on the training set's wavelength grid (112 SP
            points); any H, W ≥ 1.
        batch_size : tiles per network call.
        tile : tile side (rounded up to the network's multiple) for maps larger than it.
        margin : overlap discarded at inner tile edges (default 32 pixels for the
            encoder–decoder, 8 for the concatenate network, whose 9×9 receptive field makes
            tiling exact).
        amplitude_floor : override the trained Q, U, V amplitude floor (encoder–decoder; the
            paper's footnote 4 uses ≈ 0.1 on real data). The log-amplitude offset stays the
            trained one (:attr:`log_amplitude_offset`), so the inputs then differ from the
            training inputs wherever the amplitude lies between the two floors.

        Returns
        -------
        float32 targets (49, H, W) or (B, 49, H, W) in physical units (``target_units``),
        quantity-major; a numpy array for numpy input, else a CPU tensor.

        Raises
        ------
        ValueError : not 4 Stokes parameters, another number of wavelengths, wrong number of
            dimensions, an empty map, or NaN/inf values.
        """
        as_numpy = not isinstance(stokes, torch.Tensor)
        x = torch.as_tensor(np.asarray(stokes) if as_numpy else stokes)
        single = x.ndim == 4
        x = check_stokes(x, self.n_wavelengths).to(torch.float32)
        margin = (32 if self.network == "encdec" else 8) if margin is None else int(margin)
        B, _, _, H, W = x.shape
        out = torch.empty((B, self.scaler.n_channels, H, W), dtype=torch.float32)
        for b in range(B):
            inp = network_inputs(x[b:b + 1].to(self.device), self.model_cfg, amplitude_floor)
            inp, (rows, cols) = pad_for_network(inp, self.net)
            Hp, Wp = inp.shape[-2:]
            pred = torch.empty((self.scaler.n_channels, Hp, Wp), dtype=torch.float32, device=self.device)
            jobs = self._tiles(Hp, Wp, tile, margin)
            for j in range(0, len(jobs), max(1, batch_size)):
                chunk = jobs[j:j + batch_size]
                y = self.net(torch.cat([inp[0, :, r, c][None] for r, c, *_ in chunk]))
                for yy, (_, _, tr, tc, orow, ocol) in zip(y, chunk):
                    pred[:, orow, ocol] = yy[:, tr, tc]
            out[b] = self.scaler.decode(pred[:, rows, cols]).cpu()
        out = out[0] if single else out
        return out.numpy() if as_numpy else out
