"""Training the SICON networks on synthetic Stokes maps (Asensio Ramos & Díaz Baso 2019,
A&A 626, A102, §2–§3).

Training (:func:`train_sicon`)
    Batches of (Stokes maps (4, 112, H, W) in quiet-Sun continuum units, targets (49, H, W) in
    physical units) from a training set of :mod:`helioforge.inversion.dataset` are

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
    4. compared with the targets min–max normalised to [0, 1] (:class:`~helioforge.inversion.model.TargetScaler`) by the
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
    η₀ = 3–10, γ = 60°); ``tests/inversion/test_inversion_train.py``
    shows that with :func:`helioforge.physics.me.synth_me` profiles, and checks the rules above
    against eq. 1 on transformed vector fields and against re-synthesised Milne-Eddington
    profiles (exact to 1e-10). (The authors' ``train_encdec.py`` rotates and flips the maps
    with no sign change at all.)

Inversion with the trained weights: :class:`helioforge.inversion.infer.SiconInverter`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

from helioforge.errors import ProductError
from helioforge.inversion.config import SiconConfig, SiconModelConfig, SiconTrainConfig, get_sicon_profile
from helioforge.inversion.dataset import (MANIFEST, TrainsetDataset, quiet_sun_reference_of, read_manifest,
                                          reading_shard, verify_trainset)
from helioforge.inversion.model import (INPUT_VERSION, SETTINGS_FILE, SICON_STEM, TargetScaler, build_network,
                                        model_dict, network_inputs, pad_for_network, train_command)
from helioforge.io import write_json
from helioforge.locking import workdir_lock
from helioforge.nn.checkpoint import SafetensorsCheckpointIO, load_weights
from helioforge.nn.sicon import N_DEPTHS, N_STOKES, count_parameters, log_amplitudes
from helioforge.nn.training import fit_and_save, last_checkpoint, seed_per_rank
from helioforge.physics.sicon_targets import QUANTITIES, TARGET_UNITS
from helioforge.workspace import StepState, file_sha256

__all__ = [
    "augmentation_signs",
    "dihedral",
    "augment_pair",
    "random_dihedral",
    "log_amplitude_offset",
    "OFFSET_MAX_PATCHES",
    "SiconModule",
    "train_sicon",
]

log = logging.getLogger(__name__)

#: Patches of the training split over which :func:`log_amplitude_offset` averages (at most).
OFFSET_MAX_PATCHES = 4096


# --------------------------------------------------------------------------- augmentation
def augmentation_signs(k: int, flip: bool) -> tuple[int, int, int]:
    """Signs of (Q, B_Q), (U, B_U) and (V, B_V) under :func:`dihedral` ``(k, flip)``.

    Paper 003 §2 augmentation; derivation and table in the module docstring. A quarter turn changes
    2φ by 180°: Q and U flip as (−1)^k. A mirror sends φ → π − φ (or −φ): sin 2φ changes sign,
    cos 2φ does not, and B_z and V change sign (B is an axial vector, V the circular-polarisation
    handedness).

    Parameters
    ----------
    k : int
        Quarter turns.
    flip : bool
        Mirror the columns after the rotation.

    Returns
    -------
    tuple of int
        ``(s_Q, s_U, s_V)``, each +1 or −1.
    """
    s_q = -1 if int(k) % 2 else 1
    s_u = s_q * (-1 if flip else 1)
    s_v = -1 if flip else 1
    return s_q, s_u, s_v


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Move the pixels of maps: rotate by k quarter turns, then, if ``flip``, mirror the columns.

    The rotation is ``torch.rot90`` on (rows, columns), from +y towards +x; the mirror is x → −x.
    The 8 ``(k, flip)`` pairs are the 8 symmetries of the square; a vertical flip is
    ``(2, True)``, the transpose ``(3, True)``, the mirror about the other diagonal
    ``(1, True)``. Values are not changed (see :func:`augment_pair`).

    Parameters
    ----------
    x : torch.Tensor
        (..., H, W) maps.
    k : int
        Quarter turns (taken modulo 4).
    flip : bool
        Mirror the columns.

    Returns
    -------
    torch.Tensor
        (..., H, W) for even k, (..., W, H) for odd k.
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
        nt = len(QUANTITIES) * n_depths
        if targets.shape[-3] != nt:
            raise ValueError(f"targets must be (..., {nt}, H, W), got {tuple(targets.shape)}")
        out_t = dihedral(targets, k, flip)
        if signs != (1, 1, 1):
            sign = torch.ones(nt, dtype=out_t.dtype, device=out_t.device)
            for name, sgn in zip(("BQ", "BU", "BV"), signs):
                i = QUANTITIES.index(name)
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



# --------------------------------------------------------------------------- input offset
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
    m = model_dict(model)
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


# --------------------------------------------------------------------------- Lightning module
class SiconModule(L.LightningModule):
    """Lightning wrapper of a SICON network: augmentation, online noise, preprocessing, L2 loss
    on min–max normalised targets (eq. 2); Adam with StepLR.

    Batches are ``(stokes (B, 4, nλ, H, W), targets (B, 49, H, W))`` in quiet-Sun continuum
    and physical units. Logs ``train_loss`` and ``val_loss`` (mean squared error of the
    normalised targets) per epoch.

    Parameters
    ----------
    model, train : :class:`~helioforge.inversion.config.SiconModelConfig`, :class:`~helioforge.inversion.config.SiconTrainConfig`.
    scaler : :class:`~helioforge.inversion.model.TargetScaler` of the 49 targets.
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
        """Normalised prediction of Stokes maps of any size.

        Inputs are preprocessed (:func:`~helioforge.inversion.model.network_inputs`) and padded to a
        size the network accepts (:func:`~helioforge.inversion.model.pad_for_network`); the output is
        cropped back.

        Parameters
        ----------
        stokes : torch.Tensor
            (B, 4, nλ, H, W) in quiet-Sun continuum units.

        Returns
        -------
        torch.Tensor
            (B, 49, H, W) targets normalised to [0, 1] by the scaler's ranges.
        """
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
        """Augment, add noise (σ = ``noise_sigma``, new every batch) and compute the loss of eq. 2.

        The loss is the mean squared error of the normalised targets (paper 003 eq. 2); logs
        ``train_loss`` per epoch.

        Parameters
        ----------
        batch : tuple of torch.Tensor
            ``(stokes (B, 4, nλ, H, W), targets (B, 49, H, W))`` in quiet-Sun continuum units and
            :data:`TARGET_UNITS`.
        batch_idx : int
            Unused.

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
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
        """Loss of eq. 2 on held-out patches with fixed noise; logs ``val_loss``.

        Parameters
        ----------
        batch : tuple of torch.Tensor
            ``(stokes (B, 4, nλ, H, W), targets (B, 49, H, W))``.
        batch_idx : int
            Unused.
        """
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



# --------------------------------------------------------------------------- training
def _load_patches(root: Path, in_memory_gb: float):
    """The training set as a torch Dataset: in memory when small, else the lazy zarr reader."""
    lazy = TrainsetDataset(root)
    man = lazy.manifest
    per_patch = 4 * (int(np.prod(man["stokes"]["shape"])) + int(np.prod(man["targets"]["shape"])))
    if len(lazy) * per_patch > in_memory_gb * 2**30:
        return lazy
    import zarr

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
    taken for a trained model (:meth:`helioforge.inversion.infer.SiconInverter.from_weights` refuses them).

    Parameters
    ----------
    trainset_dir : folder made by :func:`helioforge.inversion.dataset.make_trainset`.
    workdir : training folder; resumes from ``workdir/checkpoints/last.safetensors`` (a run
        with more epochs continues a shorter one).
    network : ``encdec`` or ``concat``; ``None`` keeps the profile's (``encdec`` except in
        ``paper-concat``).
    profile : a :class:`~helioforge.inversion.config.SiconConfig` or its name
        (:func:`~helioforge.inversion.config.get_sicon_profile`).
    accelerator, devices : Lightning's (``auto``: a GPU when present).
    progress : progress bar.
    verify : check every shard of the training set against its manifest's checksums first
        (:func:`~helioforge.inversion.dataset.verify_trainset`; a damaged set is refused).
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
    helioforge.inversion.dataset.TrainsetError : not a (complete) training set, or a damaged
        shard (``verify``).
    ProductError : ``workdir`` holds a checkpoint whose settings file is missing or unreadable.
    FolderInUse : another process trains in ``workdir``.
    ValueError : unknown network or profile, fewer than two training patches, or ``workdir``
        holding a checkpoint made with other settings or another training set.
    """
    cfg = get_sicon_profile(profile) if isinstance(profile, str) else profile
    if network is not None and network != cfg.model.network:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, network=network))
    root = Path(trainset_dir)
    man = verify_trainset(root) if verify else read_manifest(root)  # a bad set is refused before any folder is made
    with workdir_lock(workdir):
        return _train_sicon(root, Path(workdir), cfg, man, accelerator=accelerator, devices=devices,
                            progress=progress, force=force)


def _stem_readable(stem: Path) -> bool:
    """Whether both files of a weights stem can be read (:func:`load_weights` succeeds)."""
    try:
        load_weights(stem)
    except Exception:  # noqa: BLE001 - any failure: not readable
        return False
    return True


def _train_sicon(root: Path, workdir: Path, cfg: SiconConfig, man: dict[str, Any], *, accelerator, devices,
                 progress: bool, force: bool) -> Path:
    mc, tc = cfg.model, cfg.train
    step = SICON_STEM.format(network=mc.network)
    stem = workdir / step
    files = (stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
    # the encoder–decoder's inputs changed with INPUT_VERSION 2: its older checkpoints are another run
    extra = f"{man.get('digest')}/inputs-v{INPUT_VERSION}" if mc.network == "encdec" else man.get("digest")
    digest = cfg.digest("model", "train", extra=extra, drop=("train.epochs", "train.num_workers", "train.in_memory_gb"))
    settings = workdir / SETTINGS_FILE
    fresh = train_command(workdir, mc.network, root, cfg.name, force=True)
    state = StepState(workdir)
    if force:  # the folder holds this network only: its bookkeeping goes too (even if unreadable)
        for p in (*files, settings, state.state_file, workdir / "checkpoints" / "last.safetensors"):
            p.unlink(missing_ok=True)
    ckpt = last_checkpoint(workdir)
    if ckpt is not None:
        if not settings.is_file():
            raise ProductError(ckpt, f"a training checkpoint without its settings file {SETTINGS_FILE} (unknown run)",
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
        try:  # a truncated or garbled checkpoint is refused here, not deep inside Lightning's resume
            SafetensorsCheckpointIO().load_checkpoint(ckpt)
        except Exception as exc:  # noqa: BLE001 - safetensors/JSON raise several kinds for a damaged file
            problem = exc.problem if isinstance(exc, ProductError) else f"{type(exc).__name__}: {exc}"
            raise ProductError(ckpt, f"unreadable training checkpoint ({problem})",
                               f"start afresh with `{fresh}`") from None

    def build() -> None:
        # the training set is read only when the weights are remade (not when they are reused)
        dataset = _load_patches(root, tc.in_memory_gb)
        workers = tc.num_workers if not isinstance(dataset, TensorDataset) else 0
        n = len(dataset)
        n_val = max(1, int(round(tc.validation_fraction * n))) if tc.validation_fraction > 0 else 0
        if n - n_val < 2:
            raise ValueError(f"{root}: {n} patches leave {n - n_val} for training (need ≥ 2)")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(tc.seed)).tolist()
        val_idx, train_idx = sorted(perm[:n_val]), sorted(perm[n_val:])
        # from here on the folder's weights are being remade: not current until written and marked
        # (StepState.run_step has unmarked them)
        if any(p.exists() for p in files) and not _stem_readable(stem):
            for p in files:  # weights of an interrupted or damaged run: remade from the checkpoint
                p.unlink(missing_ok=True)
        write_json(settings, {"digest": digest, "profile": cfg.to_dict(), "trainset": str(root.resolve()),
                              "trainset_digest": man.get("digest")})
        _fit(root, workdir, cfg, man, dataset, train_idx, val_idx, workers, step, accelerator=accelerator,
             devices=devices, progress=progress)

    # the one step protocol: finished weights of these settings and as many epochs are reused; any
    # other run resumes the checkpoint (checked above against sicon_settings.json) and re-marks them
    if not state.run_step(step, digest, files, build, force=force or _epochs_trained(stem) != tc.epochs):
        log.info("SICON %s: the weights in %s are current (same settings, %d epochs): reused", mc.network, workdir,
                 tc.epochs)
    return stem


def _epochs_trained(stem: Path) -> int | None:
    """``epochs_trained`` of the weights' sidecar (``None`` when missing or unreadable)."""
    try:
        d = json.loads(stem.with_suffix(".json").read_text())
        return int(d["epochs_trained"]) if isinstance(d, dict) else None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def _fit(root: Path, workdir: Path, cfg: SiconConfig, man: dict[str, Any], dataset, train_idx: list[int],
         val_idx: list[int], workers: int, step: str, *, accelerator, devices, progress: bool) -> Path:
    """Train (resuming the folder's checkpoint) and save the weights ``workdir/<step>``."""
    mc, tc = cfg.model, cfg.train
    n, n_val = len(dataset), len(val_idx)
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
    m = full["final_metrics"]
    log.info("SICON %s: %d epochs, train loss %.4g, val loss %.4g (%.1f s this call)", mc.network,
             full["epochs_trained"], m.get("train_loss", float("nan")), m.get("val_loss", float("nan")),
             time.perf_counter() - t0)
    return stem
