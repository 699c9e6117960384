"""SimSiam training and embedding for retrieval (Chatterjee et al. 2025, §Querying; Chen & He 2020).

Two random views of each real patch are made with kornia: shift ≤ 10 px, zoom 0.8–1.2,
rotation ±20°, horizontal and vertical flips (the paper's augmentation set). SGD with
momentum 0.9, weight decay 1e-4, lr = base_lr × batch/256 with cosine decay (Chen & He §4).
The collapse monitor ``z_std`` (std of the L2-normalised projections, per dimension) is logged:
it stays near 1/√d for a healthy model and drops to 0 when SimSiam collapses.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from helioforge.interrogate.config import SimSiamConfig
from helioforge.nn.checkpoint import build_from_weights
from helioforge.nn.training import check_images, fit_and_save, seed_per_rank
from helioforge.nn.simsiam import SimSiam

__all__ = ["SimSiamModule", "make_augmentation", "train_simsiam", "load_simsiam", "embed"]

log = logging.getLogger(__name__)

SIMSIAM_STEM = "simsiam"


def make_augmentation(cfg: SimSiamConfig, image_size: int) -> K.AugmentationSequential:
    """The paper's augmentation set as a kornia pipeline acting on (B, 1, N, N) tensors.

    The shift is the paper's ``shift_px`` on 128-pixel images, as the same fraction of the side
    at any size (``image_size`` is not used).

    Parameters
    ----------
    cfg : SimSiamConfig
        Gives ``shift_px`` (paper: 10 px on 128²), ``zoom`` (0.8-1.2) and ``rotation_deg`` (±20°).
    image_size : int
        Side N of the images, in pixels (currently unused: the translation is a fraction of the side).

    Returns
    -------
    kornia.augmentation.AugmentationSequential
        Random affine (p = 1, zero padding), then random horizontal and vertical flips (p = 0.5 each).

    References
    ----------
    Chatterjee et al. (2025), Results, "Querying Generated Image to Find Matches in Real Data".
    """
    shift = cfg.shift_px / 128  # the paper's 10 px on 128² images, as a fraction of the side
    return K.AugmentationSequential(
        K.RandomAffine(degrees=cfg.rotation_deg, translate=(shift, shift), scale=cfg.zoom, p=1.0, padding_mode="zeros"),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
    )


class SimSiamModule(L.LightningModule):
    """Lightning wrapper: two augmented views → symmetric negative-cosine loss."""

    def __init__(self, cfg: SimSiamConfig, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.image_size = image_size
        self.model = SimSiam(cfg.out_dim, cfg.proj_hidden, cfg.pred_hidden, cfg.width)
        self.augment = make_augmentation(cfg, image_size)

    def on_train_start(self) -> None:
        """Different augmentations on every DDP rank."""
        seed_per_rank(self, self.cfg.seed)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss of two augmented views of a batch (B, 1, N, N); logs loss and ``z_std``.

        Parameters
        ----------
        batch : tuple of torch.Tensor
            ``(x,)`` with real images (B, 1, N, N) in [-1, 1].
        batch_idx : int
            Index of the batch (unused).

        Returns
        -------
        torch.Tensor
            Scalar symmetric negative-cosine loss (in [-1, 1]; −1 is perfect agreement).

        References
        ----------
        Chen & He (2020), Algorithm 1.
        """
        (x,) = batch
        with torch.no_grad():
            v1, v2 = self.augment(x), self.augment(x)
        loss, z1 = self.model(v1, v2)
        with torch.no_grad():
            z_std = F.normalize(z1, dim=1).std(0).mean()
        self.log_dict({"loss": loss.detach(), "z_std": z_std}, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        """SGD (momentum 0.9, wd 1e-4), lr = base × batch/256, cosine decay (Chen & He §4)."""
        lr = self.cfg.lr * self.cfg.batch_size / 256
        opt = torch.optim.SGD(self.parameters(), lr=lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
        return [opt], [sched]

    def model_config(self) -> dict[str, Any]:
        """JSON sidecar of the saved model: sizes and training settings."""
        return {
            "out_dim": self.cfg.out_dim,
            "proj_hidden": self.cfg.proj_hidden,
            "pred_hidden": self.cfg.pred_hidden,
            "width": self.cfg.width,
            "image_size": self.image_size,
            "simsiam_config": self.cfg.__dict__,
        }


def train_simsiam(
    images: np.ndarray,
    cfg: SimSiamConfig,
    workdir: str | Path,
    *,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
) -> Path:
    """Train SimSiam on real patches (n, 1, N, N) in [-1, 1]; return the saved model's stem.

    Resumable from ``workdir/checkpoints/last.safetensors``. Writes
    ``workdir/simsiam.safetensors`` + ``simsiam.json`` (with the final loss and ``z_std``).

    Parameters
    ----------
    images : np.ndarray, shape (n, 1, N, N)
        Real patches in [-1, 1] (units of 1000 G); cast to float32.
    cfg : SimSiamConfig
        Architecture and optimiser settings; the batch is ``min(cfg.batch_size, n)``.
    workdir : str or Path
        Work folder for checkpoints, logs and the saved model.
    accelerator, devices : str or int
        Passed to the Lightning trainer.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The stem ``workdir/simsiam`` (without suffix).

    Raises
    ------
    ValueError
        For a wrong shape or fewer than two images.
    """
    images = check_images(images, 2)
    L.seed_everything(cfg.seed, verbose=False)
    module = SimSiamModule(cfg, images.shape[-1])
    batch = min(cfg.batch_size, len(images))
    loader = DataLoader(TensorDataset(torch.from_numpy(images)), batch_size=batch, shuffle=True, drop_last=True)
    stem, config = fit_and_save(module, module.model, loader, Path(workdir), SIMSIAM_STEM, cfg.epochs,
                                {**module.model_config(), "collapse_reference_z_std": 1 / math.sqrt(cfg.out_dim)},
                                accelerator=accelerator, devices=devices, progress=progress)
    metrics = config["final_metrics"]
    log.info("SimSiam: final loss %.3f, z_std %.3f (1/sqrt(d) = %.3f)", metrics.get("loss", float("nan")),
             metrics.get("z_std", float("nan")), 1 / math.sqrt(cfg.out_dim))
    return stem


def load_simsiam(path_stem: str | Path, device: str | torch.device = "cpu") -> tuple[SimSiam, dict[str, Any]]:
    """Load a SimSiam model saved by :func:`train_simsiam` (eval mode) and its config.

    Parameters
    ----------
    path_stem : str or Path
        Weights stem (``<stem>.safetensors`` + ``<stem>.json``).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    (SimSiam, dict)
        The model in eval mode and its saved configuration.

    Raises
    ------
    FileNotFoundError
        No weights at ``path_stem``.
    ProductError
        Unreadable, non-finite or mismatched weights.
    """
    return build_from_weights(path_stem, lambda c: SimSiam(c["out_dim"], c["proj_hidden"], c["pred_hidden"], c["width"]), device)


@torch.no_grad()
def embed(model: SimSiam, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """L2-normalised SimSiam projections (n, out_dim) float32 of images (n, 1, N, N).

    Normalised so that inner products are cosine similarities (the paper's retrieval metric).
    Puts ``model`` in eval mode.

    Parameters
    ----------
    model : SimSiam
        The trained model.
    images : np.ndarray or torch.Tensor, shape (n, 1, N, N)
        Images in [-1, 1] (units of 1000 G); cast to float32.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    np.ndarray of float32, shape (n, out_dim)
        Unit-norm embeddings.

    Raises
    ------
    ValueError
        If ``images`` is not (n, 1, N, N).
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (n, 1, N, N), got {tuple(x.shape)}")
    device = next(model.parameters()).device
    model.eval()
    out = [F.normalize(model.embed(chunk.to(device)), dim=1).cpu() for chunk in x.split(batch_size)]
    return torch.cat(out).numpy().astype(np.float32)
