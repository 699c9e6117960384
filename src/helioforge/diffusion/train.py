"""Training the conditional DDPM (Ramunno et al. 2024, §3–4; Ho et al. 2020; Ho & Salimans 2022).

One training step: draw t ~ U{0..T−1} and ε ~ N(0, I), form
x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (diffusers ``DDPMScheduler.add_noise``), replace the condition by
the null condition with probability ``cond_dropout`` (so the same network learns ε(x) and
ε(x, c)), and minimise ‖ε_θ(x_t, t, c) − ε‖² (eq. 5). AdamW, lr 3e-4 (§4). An exponential moving
average of the weights (``torch.optim.swa_utils.AveragedModel``) is kept for sampling. The PSNR
of the implied x̂_0 is logged, as the paper monitors training with PSNR.

The saved product is ``<workdir>/diffusion.safetensors`` (EMA weights) + ``diffusion.json``
(network shape, condition, noise schedule, training-set class counts, provenance).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from helioforge.diffusion.config import DiffusionTrainConfig, UNetConfig
from helioforge.errors import check_count
from helioforge.nn.checkpoint import build_from_weights
from helioforge.nn.flare_unet import FlareUNet
from helioforge.nn.training import check_images, fit_and_save, seed_per_rank

__all__ = ["DiffusionModule", "make_scheduler", "build_unet", "train_diffusion", "train_diffusion_stream", "load_diffusion",
           "DIFFUSION_STEM", "ema_decay_at", "make_ema"]

log = logging.getLogger(__name__)

DIFFUSION_STEM = "diffusion"


def make_scheduler(cfg: DiffusionTrainConfig | dict[str, Any]) -> DDPMScheduler:
    """The DDPM noise schedule of the training config, predicting ε, clipping x̂_0 to [-1, 1].

    Parameters
    ----------
    cfg : DiffusionTrainConfig or dict
        Needs ``num_train_timesteps`` (T), ``beta_start``, ``beta_end`` and ``beta_schedule``.

    Returns
    -------
    diffusers.DDPMScheduler
        The noise schedule of Ho et al. (2020) (paper §3).

    Raises
    ------
    KeyError
        When a dict lacks one of the keys above.
    NotImplementedError
        From diffusers for an unknown ``beta_schedule``.
    """
    c = cfg if isinstance(cfg, dict) else cfg.__dict__
    return DDPMScheduler(num_train_timesteps=int(c["num_train_timesteps"]), beta_start=float(c["beta_start"]),
                         beta_end=float(c["beta_end"]), beta_schedule=str(c["beta_schedule"]),
                         prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0)


def build_unet(unet: UNetConfig | dict[str, Any], image_size: int, condition: str, n_classes: int = 5) -> FlareUNet:
    """A :class:`FlareUNet` from a :class:`UNetConfig` (or its dict).

    Parameters
    ----------
    unet : UNetConfig or dict
        ``block_out_channels``, ``attention`` (one flag per level), ``layers_per_block``,
        ``norm_num_groups``.
    image_size : int
        Side N of the (B, 1, N, N) images, pixels.
    condition : str
        ``"class"`` (class index) or ``"flux"`` (log10 flux, W m⁻²).
    n_classes : int
        Number of classes of the class condition.

    Returns
    -------
    FlareUNet
        The untrained denoiser.

    Raises
    ------
    ValueError
        For an unknown condition, an ``attention`` list of another length than
        ``block_out_channels``, or an image size not divisible by 2^(levels-1).
    KeyError
        When a dict lacks one of the keys above.
    """
    u = unet if isinstance(unet, dict) else unet.__dict__
    return FlareUNet(image_size, condition, n_classes, tuple(u["block_out_channels"]), tuple(bool(a) for a in u["attention"]),
                     int(u["layers_per_block"]), int(u["norm_num_groups"]))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay used at update ``step``: ``min(decay, (1 + step) / (10 + step))``.

    The warm-up of diffusers' ``EMAModel`` (after Tarvainen & Valpola 2017): a fixed decay d
    keeps a weight d^n of the first (random) weights after n updates — 0.998^1120 = 0.11 after
    the 1,120 steps of the CPU demo, which left the sampled images full of pixel noise — while
    the warm-up forgets them within the first hundred steps.

    Parameters
    ----------
    step : int
        Update index, 0-based.
    decay : float
        Largest decay (``train.ema_decay``).

    Returns
    -------
    float
        The decay of this update.
    """
    return float(min(float(decay), (1.0 + step) / (10.0 + step)))


def make_ema(net: torch.nn.Module, decay: float) -> AveragedModel:
    """EMA copy of ``net`` with the warm-up of :func:`ema_decay_at`.

    Floating-point buffers are averaged too; integer buffers (counters) are copied.

    Parameters
    ----------
    net : torch.nn.Module
        The network being trained.
    decay : float
        Largest EMA decay.

    Returns
    -------
    torch.optim.swa_utils.AveragedModel
        Update it with ``update_parameters(net)`` after every optimiser step.
    """

    def update(ema_params: list, params: list, num_averaged: torch.Tensor) -> None:
        d = ema_decay_at(int(num_averaged), decay)
        pairs = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if pairs:
            torch._foreach_lerp_([e for e, _ in pairs], [p for _, p in pairs], 1.0 - d)
        for e, p in zip(ema_params, params):  # integer buffers (counters) are copied, not averaged
            if not e.is_floating_point():
                e.copy_(p)

    return AveragedModel(net, multi_avg_fn=update, use_buffers=True)


class DiffusionModule(L.LightningModule):
    """Lightning wrapper: ε-prediction MSE with condition dropout, AdamW, EMA weights.

    Batches are ``(x0, cond)``: x0 (B, 1, N, N) float in [-1, 1]; cond (B,) class indices
    (long) or log10 flux (float).
    """

    def __init__(self, unet: UNetConfig, train: DiffusionTrainConfig, image_size: int, n_classes: int = 5):
        super().__init__()
        self.cfg = train
        self.net = build_unet(unet, image_size, train.condition, n_classes)
        self.ema = make_ema(self.net, train.ema_decay)
        self.ema.requires_grad_(False)
        self.scheduler = make_scheduler(train)

    def on_train_start(self) -> None:
        """Different noise on every DDP rank."""
        seed_per_rank(self, self.cfg.seed)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Eq. 5 with classifier-free condition dropout (paper §3–4).

        Optionally flips the images left-right (p = 0.5, ``train.flips``), draws t and ε, replaces
        the condition by the null condition with probability ``cond_dropout``; logs ``loss`` and
        ``psnr`` (dB, of x̂_0, peak-to-peak range 2) per epoch.

        Parameters
        ----------
        batch : tuple of torch.Tensor
            (x0 (B, 1, N, N) float in [-1, 1], cond (B,) class indices (long) or log10 flux
            (float, W m⁻²)).
        batch_idx : int
            Index of the batch (unused).

        Returns
        -------
        torch.Tensor
            Scalar MSE ‖ε_θ(x_t, t, c) − ε‖².
        """
        x0, cond = batch
        if self.cfg.flips:
            flip = torch.rand(len(x0), device=x0.device) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(x0),), device=x0.device)
        xt = self.scheduler.add_noise(x0, noise, t)
        drop = torch.rand(len(x0), device=x0.device) < self.cfg.cond_dropout
        cond = torch.where(drop, self.net.null_condition(len(x0), x0.device).to(cond.dtype), cond)
        eps = self.net(xt, t, cond)
        loss = F.mse_loss(eps, noise)
        with torch.no_grad():
            ab = self.scheduler.alphas_cumprod.to(x0.device)[t][:, None, None, None]
            x0_hat = ((xt - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
            mse = (x0_hat - x0).pow(2).mean(dim=(1, 2, 3))
            psnr = (10 * torch.log10(4.0 / mse.clamp_min(1e-10))).mean()  # peak-to-peak range 2
        self.log_dict({"loss": loss.detach(), "psnr": psnr}, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA update after every optimiser step.

        Parameters
        ----------
        outputs : Any
            The training step's output (unused).
        batch : Any
            The batch (unused).
        batch_idx : int
            Index of the batch (unused).
        """
        self.ema.update_parameters(self.net)

    def configure_optimizers(self):
        """AdamW (paper §4: lr 3e-4)."""
        return torch.optim.AdamW(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


def train_diffusion(
    images: np.ndarray,
    cond: np.ndarray,
    unet: UNetConfig,
    train: DiffusionTrainConfig,
    workdir: str | Path,
    *,
    extra_config: dict[str, Any] | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
) -> Path:
    """Train the conditional DDPM; return the stem of the saved EMA weights.

    Parameters
    ----------
    images : (n, 1, N, N) float32 in [-1, 1].
    cond : (n,) class indices 0..4 (``train.condition == "class"``) or log10 flux, W m⁻²
        (``"flux"``); NaN flux rows are rejected.
    unet, train : network and training settings.
    workdir : training folder; resumes from ``workdir/checkpoints/last.safetensors`` (a longer
        run continues a shorter one).
    extra_config : further entries for the JSON sidecar (labels, data provenance).

    Raises ``ValueError`` for a wrong image shape, a condition of another length or invalid
    values (class outside 0..4, NaN flux).
    """
    check_count("epochs", train.epochs)
    images = check_images(images, 2)
    cond = np.asarray(cond)
    if len(cond) != len(images):
        raise ValueError(f"{len(images)} images but {len(cond)} conditions")
    if train.condition == "class":
        if cond.min() < 0 or cond.max() > 4:
            raise ValueError("class conditions must be indices 0..4 (A..X); unlabelled images must be left out")
        cond_t = torch.from_numpy(cond.astype(np.int64))
    else:
        if not np.all(np.isfinite(cond)):
            raise ValueError("flux conditions must be finite log10 fluxes; unlabelled images must be left out")
        cond_t = torch.from_numpy(cond.astype(np.float32))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(train.seed, verbose=False)
    module = DiffusionModule(unet, train, images.shape[-1])
    loader = DataLoader(TensorDataset(torch.from_numpy(images), cond_t), batch_size=min(train.batch_size, len(images)),
                        shuffle=True, drop_last=True)
    config = _sidecar(int(images.shape[-1]), unet, train, extra_config)
    stem, _ = fit_and_save(module, module.ema.module, loader, workdir, DIFFUSION_STEM, train.epochs, config,
                           accelerator=accelerator, devices=devices, progress=progress)
    return stem


def _sidecar(image_size: int, unet: UNetConfig, train: DiffusionTrainConfig,
             extra_config: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON sidecar of a trained denoiser (network shape, condition, settings, provenance)."""
    return {
        "image_size": int(image_size),
        "condition": train.condition,
        "n_classes": 5,
        "unet": dict(unet.__dict__),
        "train": dict(train.__dict__),
        **(extra_config or {}),
    }


def train_diffusion_stream(
    stream: IterableDataset,
    unet: UNetConfig,
    train: DiffusionTrainConfig,
    workdir: str | Path,
    *,
    num_workers: int = 0,
    extra_config: dict[str, Any] | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
) -> Path:
    """Train the conditional DDPM on examples streamed from a store (never all in memory).

    The same module, optimiser, EMA, checkpoints and sidecar as :func:`train_diffusion`; the
    batches come from ``stream`` (e.g. :meth:`helioforge.diffusion.data.SDOMLIndex.stream`),
    which reads, preprocesses and shuffles the frames itself, through a DataLoader with
    ``num_workers`` reading processes (each with its own share of the store's chunks and its own
    bounded shuffle buffer). Each worker drops its last incomplete batch.

    Parameters
    ----------
    stream : torch.utils.data.IterableDataset
        Yields ``(x0 (1, N, N) float32 in [-1, 1], cond)``: class index 0..4 (int64) for
        ``train.condition == "class"``, log10 flux (float32, W m⁻²) for ``"flux"``; has
        ``image_size`` (N) and ``len()`` (examples per epoch, ≥ 2).
    unet, train : UNetConfig, DiffusionTrainConfig
        Network and training settings (batch size, epochs, seed ...).
    workdir : str or pathlib.Path
        Training folder; resumes from ``workdir/checkpoints/last.safetensors``.
    num_workers : int
        DataLoader worker processes (0: read in the training process).
    extra_config : dict or None
        Further entries for the JSON sidecar (labels, data provenance).
    accelerator, devices, progress : str, int, bool
        Passed to Lightning (:func:`helioforge.nn.training.make_trainer`).

    Returns
    -------
    pathlib.Path
        Stem of the saved EMA weights (``.safetensors`` + ``.json``).

    Raises
    ------
    ValueError
        ``epochs`` < 1 (``InputError``), a stream of fewer than 2 examples or without
        ``image_size``, or ``num_workers`` < 0.
    """
    check_count("epochs", train.epochs)
    check_count("num_workers", num_workers, 0)
    image_size = getattr(stream, "image_size", None)
    if image_size is None:
        raise ValueError("the stream must say its image size N (attribute image_size)")
    n = len(stream)
    if n < 2:
        raise ValueError(f"the stream holds {n} example(s): need at least 2 to train")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(train.seed, verbose=False)
    module = DiffusionModule(unet, train, int(image_size))
    loader = DataLoader(stream, batch_size=min(train.batch_size, n), num_workers=num_workers, drop_last=True,
                        persistent_workers=num_workers > 0)
    config = _sidecar(int(image_size), unet, train, extra_config)
    stem, _ = fit_and_save(module, module.ema.module, loader, workdir, DIFFUSION_STEM, train.epochs, config,
                           accelerator=accelerator, devices=devices, progress=progress)
    return stem


def _retrain_remedy(stem: Path) -> str:
    """The command that rebuilds the model saved at ``stem`` (a work folder's ``model_<condition>``)."""
    folder = stem.parent
    if folder.name in ("model_class", "model_flux"):
        return (f"run `helioforge diffusion train -w {folder.parent} --condition {folder.name[len('model_'):]} --force` "
                "to retrain it")
    return "retrain it (`helioforge diffusion train -w WORKDIR --force`)"


def load_diffusion(stem: str | Path, device: str | torch.device = "cpu", *,
                   remedy: str | None = None) -> tuple[FlareUNet, dict[str, Any]]:
    """Load the EMA denoiser written by :func:`train_diffusion`.

    Parameters
    ----------
    stem : str or pathlib.Path
        Path without suffix of ``<stem>.safetensors`` + ``<stem>.json``.
    device : str or torch.device
        Device to put the network on.
    remedy : str or None
        What the error message tells the user to do; default: the ``diffusion train --force``
        command of the work folder.

    Returns
    -------
    net : FlareUNet
        The denoiser in eval mode.
    config : dict
        The JSON sidecar (``image_size``, ``condition``, ``unet``, ``train``, class counts, ...).

    Raises
    ------
    FileNotFoundError
        Naming a missing file.
    helioforge.errors.ProductError
        (naming the file and ``remedy``) for an unreadable or truncated weights file, a sidecar
        that is not a diffusion model's or does not match the weights, and NaN/inf weights.
    NotImplementedError
        From diffusers when the sidecar names an unknown ``beta_schedule`` (not turned into a
        ``ProductError``).
    """
    stem = Path(stem)

    def factory(config: dict[str, Any]) -> FlareUNet:
        make_scheduler(config["train"])  # the sidecar must describe the noise schedule too
        return build_unet(config["unet"], int(config["image_size"]), config["condition"], int(config.get("n_classes", 5)))

    return build_from_weights(stem, factory, device, remedy or _retrain_remedy(stem))
