"""Domain feature space for the evaluation metrics: a context-encoding VAE trained on the real
training images (Ramunno et al. 2024, §6; Zimmerer et al. 2018, arXiv:1812.05941; Giger 2022).

The paper computes its cluster metrics (Hackstein et al. 2023) in the latent space of a ceVAE
pretrained on SDO images: of the spaces it compared (CLIP, a supervised classifier, the ceVAE;
§6, Fig. 3) only the ceVAE latent space separates the flare classes. That network is not
public, so we learn ours on the real training images.

ceVAE training objective (Zimmerer et al. 2018, §2): the encoder/decoder are shared by
* a VAE branch on the full image x:  L_VAE = MSE(x̂(x), x) + β KL(q(z|x) ‖ N(0, I)), and
* a context-encoder branch on x with a random rectangle masked out (set to 0, mid-grey in
  [-1, 1]), reconstructing the **full** image:  L_CE = MSE(x̂(mask(x)), x);
loss = L_VAE + L_CE. MSE is the per-pixel mean, KL is summed over the latent dimensions and
averaged over the batch, so ``beta`` weighs nats against squared [-1, 1] units.
``context_mask_fraction = 0`` drops the CE branch (a plain β-VAE).

Features are the posterior means μ(x) in eval mode (:meth:`FeatureEncoder.encode`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from helioforge.diffusion.config import FeatureConfig
from helioforge.nn.checkpoint import build_from_weights, save_weights
from helioforge.nn.training import check_images, fit_and_save
from helioforge.nn.vae import ConvVAE, kl_divergence

__all__ = ["FeatureEncoderModule", "FeatureEncoder", "train_feature_encoder", "random_box_mask",
           "FEATURE_ENCODER_STEM"]

log = logging.getLogger(__name__)

FEATURE_ENCODER_STEM = "feature_encoder"


def random_box_mask(shape: tuple[int, ...], fraction: float, *, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean masks, one random axis-aligned rectangle per image, True inside.

    Each rectangle covers ≈ ``fraction`` of the image: its aspect ratio is drawn log-uniformly
    in [1/2, 2], its sides are ``sqrt(fraction·N²·aspect)`` and ``sqrt(fraction·N²/aspect)``
    (clipped to [1, N]), and its position is uniform.

    Parameters
    ----------
    shape : tuple of int
        (B, C, H, W) of the image batch (only B, H and W are used).
    fraction : float
        Fraction of the image area to mask; ≤ 0 gives all-False masks.
    generator : torch.Generator or None
        CPU random generator of the draws.
    device : torch.device or str
        Device of the returned masks.

    Returns
    -------
    torch.Tensor
        (B, 1, H, W) bool.

    References
    ----------
    The context-encoder masking of Zimmerer et al. (2018, arXiv:1812.05941, §2).
    """
    b, _, h, w = shape
    if fraction <= 0:
        return torch.zeros((b, 1, h, w), dtype=torch.bool, device=device)
    u = torch.rand(b, 3, generator=generator)
    aspect = torch.exp((u[:, 0] * 2 - 1) * np.log(2.0))
    area = fraction * h * w
    bh = torch.sqrt(area * aspect).round().clamp(1, h).long()
    bw = torch.sqrt(area / aspect).round().clamp(1, w).long()
    y0 = (u[:, 1] * (h - bh + 1).float()).floor().long()
    x0 = (u[:, 2] * (w - bw + 1).float()).floor().long()
    yy = torch.arange(h).view(1, h, 1)
    xx = torch.arange(w).view(1, 1, w)
    inside = ((yy >= y0.view(b, 1, 1)) & (yy < (y0 + bh).view(b, 1, 1))
              & (xx >= x0.view(b, 1, 1)) & (xx < (x0 + bw).view(b, 1, 1)))
    return inside.unsqueeze(1).to(device)


class FeatureEncoderModule(L.LightningModule):
    """Lightning wrapper of the ceVAE objective (module docstring); logs ``loss``, ``recon``,
    ``kl`` and ``ce`` (context-encoder reconstruction) per epoch."""

    def __init__(self, cfg: FeatureConfig, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.image_size = image_size
        self.model = ConvVAE(image_size, cfg.latent_dim, cfg.width, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """ceVAE loss of one batch: L_VAE + L_CE (module docstring; Zimmerer et al. 2018, §2).

        Parameters
        ----------
        batch : tuple of torch.Tensor
            ((B, 1, N, N) float images in [-1, 1],).
        batch_idx : int
            Index of the batch (unused).

        Returns
        -------
        torch.Tensor
            Scalar loss MSE + β·KL (+ context-encoder MSE when ``context_mask_fraction`` > 0).
        """
        (x,) = batch
        recon, mu, logvar = self.model(x)
        rec = F.mse_loss(recon, x)
        kl = kl_divergence(mu, logvar).mean()
        loss = rec + self.cfg.beta * kl
        metrics = {"recon": rec.detach(), "kl": kl.detach()}
        if self.cfg.context_mask_fraction > 0:
            mask = random_box_mask(tuple(x.shape), self.cfg.context_mask_fraction, device=x.device)
            ce_recon, _, _ = self.model(x.masked_fill(mask, 0.0))
            ce = F.mse_loss(ce_recon, x)
            loss = loss + ce
            metrics["ce"] = ce.detach()
        self.log_dict({"loss": loss.detach(), **metrics}, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        """Adam with the configured learning rate."""
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr)

    def model_config(self) -> dict[str, Any]:
        """JSON sidecar: network sizes, image size and the training settings."""
        return {"image_size": self.image_size, "latent_dim": self.cfg.latent_dim, "width": self.cfg.width,
                "in_channels": 1, "feature_config": dataclasses.asdict(self.cfg)}


class FeatureEncoder:
    """A trained ceVAE used as a fixed feature map: images → posterior means.

    Parameters
    ----------
    model : the trained :class:`~helioforge.nn.vae.ConvVAE` (put in eval mode here).
    config : the JSON sidecar (``image_size``, ``latent_dim``, ``width``, ``feature_config``...).
    """

    def __init__(self, model: ConvVAE, config: dict[str, Any]):
        self.model = model.eval()
        self.config = dict(config)
        self.image_size = int(model.image_size)
        self.latent_dim = int(model.latent_dim)

    @property
    def device(self) -> torch.device:
        """Device the network lives on."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "FeatureEncoder":
        """Move the network to ``device``.

        Parameters
        ----------
        device : str or torch.device
            Target device.

        Returns
        -------
        FeatureEncoder
            ``self``.
        """
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Posterior means μ of images (the domain features).

        Eval mode, no gradients, in batches of at most ``batch_size``.

        Parameters
        ----------
        images : numpy.ndarray
            (n, 1, N, N) in [-1, 1], N = ``image_size``; n may be 0.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        numpy.ndarray
            (n, latent_dim) float64.

        Raises
        ------
        ValueError
            For another shape or an image size other than the one the encoder was trained on.
        """
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"images must be (n, 1, {self.image_size}, {self.image_size}), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.latent_dim), dtype=np.float64)
        self.model.eval()
        device = self.device
        out = [self.model.encode(torch.from_numpy(chunk).to(device)).cpu().double()
               for chunk in np.array_split(x, max(1, -(-len(x) // batch_size)))]
        return torch.cat(out).numpy()

    def save(self, path_stem: str | Path) -> Path:
        """Write the weights and their JSON sidecar (atomically).

        Parameters
        ----------
        path_stem : str or pathlib.Path
            Path without suffix; ``<stem>.safetensors`` and ``<stem>.json`` are written.

        Returns
        -------
        pathlib.Path
            The weights path ``<stem>.safetensors``.
        """
        return save_weights(path_stem, self.model, self.config)

    @classmethod
    def load(cls, path_stem: str | Path, device: str | torch.device = "cpu") -> "FeatureEncoder":
        """Load an encoder written by :meth:`save` or :func:`train_feature_encoder`.

        Parameters
        ----------
        path_stem : str or pathlib.Path
            Path without suffix of ``<stem>.safetensors`` + ``<stem>.json``.
        device : str or torch.device
            Device to put the network on.

        Returns
        -------
        FeatureEncoder
            The network (eval mode) and its sidecar configuration.

        Raises
        ------
        FileNotFoundError
            Naming the missing ``.safetensors``/``.json`` file.
        helioforge.errors.ProductError
            (a ``ValueError``) for an unreadable file, a sidecar that lacks the network sizes or
            does not match the weights, or NaN weights.
        """
        stem = Path(path_stem)
        remedy = f"rerun `helioforge diffusion evaluate -w {stem.parent.parent}` (it retrains the encoder)"
        model, cfg = build_from_weights(stem, lambda c: ConvVAE(int(c["image_size"]), int(c["latent_dim"]), int(c["width"]),
                                                                 int(c.get("in_channels", 1))), device, remedy)
        return cls(model, cfg)


def train_feature_encoder(
    images: np.ndarray,
    cfg: FeatureConfig,
    workdir: str | Path,
    *,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
) -> FeatureEncoder:
    """Train the ceVAE feature encoder on real images (n, 1, N, N) in [-1, 1].

    Resumable: a second call with the same ``workdir`` continues from
    ``workdir/checkpoints/last.safetensors`` up to ``cfg.epochs`` (more epochs → more
    training; the same number → nothing to do). Writes ``workdir/feature_encoder.safetensors``
    and ``feature_encoder.json`` (sizes, image size, the :class:`FeatureConfig`, the final
    epoch-mean losses and ``epochs_trained``).

    Returns the trained :class:`FeatureEncoder` (eval mode, on the CPU).

    Raises
    ------
    ValueError
        Wrong image shape, or fewer than two images (one batch of ≥ 2).
    """
    images = check_images(images, 2)
    L.seed_everything(cfg.seed, verbose=False)
    module = FeatureEncoderModule(cfg, images.shape[-1])
    batch = min(cfg.batch_size, len(images))
    loader = DataLoader(TensorDataset(torch.from_numpy(images)), batch_size=batch, shuffle=True, drop_last=True)
    _, config = fit_and_save(module, module.model, loader, Path(workdir), FEATURE_ENCODER_STEM, cfg.epochs,
                             module.model_config(), accelerator=accelerator, devices=devices, progress=progress)
    metrics = config["final_metrics"]
    log.info("feature encoder: %d epochs, loss %.4f (recon %.4f, kl %.2f)", config["epochs_trained"],
             metrics.get("loss", float("nan")), metrics.get("recon", float("nan")), metrics.get("kl", float("nan")))
    return FeatureEncoder(module.model.cpu(), config)
