"""GAN training on magnetogram patches (Chatterjee et al. 2025, §Methods eqs. 1–2, §Results).

* losses: G_loss = −E log D(G(z)) (eq. 1); D_loss = −½[E log(1 − D(G(z))) + E log D(x)] (eq. 2),
  computed from logits for numerical stability; D's parameters are frozen in the G step and
  G(z) is detached in the D step, as the paper states.
* Adam, lr 5e-4, batch 32, 200 epochs (paper profile).
* Model selection: "the epoch for which the discriminator shows the least accuracy in
  distinguishing generated data from real" — we keep the generator of the epoch whose mean
  discriminator accuracy is closest to chance (0.5), considering epochs after a warm-up
  fraction (``select_after_fraction``) so an untrained first epoch cannot win by accident.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from helioforge.interrogate.config import GANConfig
from helioforge.io import write_json
from helioforge.nn.checkpoint import build_from_weights, save_weights
from helioforge.nn.gan import Discriminator, Generator
from helioforge.nn.training import check_images, fit_resumable, seed_per_rank
from helioforge.progress import track

__all__ = ["GANModule", "train_gan", "load_generator", "generate"]

log = logging.getLogger(__name__)

GENERATOR_STEM = "generator"


class GANModule(L.LightningModule):
    """Lightning module holding G and D; trains with manual optimisation (two Adam optimisers)."""

    def __init__(self, cfg: GANConfig, image_size: int, workdir: str | Path | None = None):
        super().__init__()
        self.cfg = cfg
        self.image_size = image_size
        self.workdir = Path(workdir) if workdir else None
        self.automatic_optimization = False
        self.generator = Generator(cfg.latent_dim, image_size, cfg.base_channels)
        self.discriminator = Discriminator(image_size, cfg.base_channels)
        self.augment = K.AugmentationSequential(K.RandomHorizontalFlip(), K.RandomVerticalFlip()) if cfg.augment_flips else None
        self._correct = 0
        self._seen = 0
        self.best = {"epoch": -1, "d_accuracy": float("nan"), "distance": float("inf")}
        self.history: list[dict[str, float]] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): (B, latent_dim) → (B, 1, N, N).

        Parameters
        ----------
        z : torch.Tensor, shape (B, latent_dim)
            Latent vectors, z ~ N(0, I).

        Returns
        -------
        torch.Tensor, shape (B, 1, N, N)
            Generated images in [-1, 1] (tanh), units of 1000 G.
        """
        return self.generator(z)

    def on_train_start(self) -> None:
        """Different noise and flips on every DDP rank (weights are already synchronised)."""
        seed_per_rank(self, self.cfg.seed)

    def configure_optimizers(self):
        """Adam for G and for D (paper: lr 5e-4)."""
        betas = (self.cfg.beta1, self.cfg.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.cfg.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.lr, betas=betas)
        return [opt_g, opt_d]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One generator step (eq. 1) then one discriminator step (eq. 2) on a real batch.

        Also counts the discriminator's correct calls (real logit > 0, fake logit < 0) for the
        epoch accuracy used in model selection, and logs ``g_loss`` and ``d_loss``.

        Parameters
        ----------
        batch : tuple of torch.Tensor
            ``(real,)`` with real images (B, 1, N, N) in [-1, 1]; flipped at random when
            ``cfg.augment_flips``.
        batch_idx : int
            Index of the batch (unused).

        Returns
        -------
        None
            Manual optimisation: both optimisers are stepped here.

        References
        ----------
        Chatterjee et al. (2025), Methods, eqs. 1-2.
        """
        (real,) = batch
        if self.augment is not None:
            real = self.augment(real)
        opt_g, opt_d = self.optimizers()
        n = real.shape[0]
        ones = torch.ones(n, 1, device=real.device)
        zeros = torch.zeros(n, 1, device=real.device)
        z = torch.randn(n, self.cfg.latent_dim, device=real.device)

        # generator step, eq. (1); D is frozen
        self.toggle_optimizer(opt_g)
        fake = self.generator(z)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator.logits(fake), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        # discriminator step, eq. (2); G(z) detached from the graph
        self.toggle_optimizer(opt_d)
        logit_fake = self.discriminator.logits(fake.detach())
        logit_real = self.discriminator.logits(real)
        d_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(logit_fake, zeros) + F.binary_cross_entropy_with_logits(logit_real, ones)
        )
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        correct = int((logit_real > 0).sum() + (logit_fake < 0).sum())
        self._correct += correct
        self._seen += 2 * n
        self.log_dict({"g_loss": g_loss.detach(), "d_loss": d_loss.detach()}, prog_bar=True, on_step=True, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        """Epoch discriminator accuracy (all ranks); keep G if it is the closest to chance yet."""
        counts = torch.tensor([self._correct, self._seen], dtype=torch.float64, device=self.device)
        counts = self.all_gather(counts)
        if counts.ndim > 1:
            counts = counts.sum(0)
        acc = float(counts[0] / counts[1]) if counts[1] > 0 else float("nan")
        self._correct = self._seen = 0
        epoch = self.current_epoch
        self.log("d_accuracy", acc, prog_bar=True, sync_dist=False)
        self.history.append({"epoch": epoch, "d_accuracy": acc})
        warm = int(self.cfg.select_after_fraction * self.trainer.max_epochs)
        dist = abs(acc - 0.5)
        if epoch >= min(warm, self.trainer.max_epochs - 1) and dist < self.best["distance"]:
            self.best = {"epoch": epoch, "d_accuracy": acc, "distance": dist}
            if self.workdir is not None and self.trainer.is_global_zero:
                save_weights(self.workdir / GENERATOR_STEM, self.generator, self.generator_config())

    def generator_config(self) -> dict[str, Any]:
        """JSON sidecar of the saved generator: sizes, selected epoch and its D accuracy."""
        return {
            "latent_dim": self.cfg.latent_dim,
            "image_size": self.image_size,
            "base_channels": self.cfg.base_channels,
            "selected_epoch": self.best["epoch"],
            "d_accuracy": self.best["d_accuracy"],
            "gan_config": self.cfg.__dict__,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the selection state (best epoch, history) in the resumable checkpoint.

        Parameters
        ----------
        checkpoint : dict
            Lightning checkpoint, updated in place with the key ``gan_selection``.
        """
        checkpoint["gan_selection"] = {"best": dict(self.best), "history": list(self.history)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the selection state when resuming.

        Parameters
        ----------
        checkpoint : dict
            Lightning checkpoint; without ``gan_selection`` the best epoch is kept and the history emptied.
        """
        sel = checkpoint.get("gan_selection", {})
        self.best = dict(sel.get("best", self.best))
        self.history = list(sel.get("history", []))


def train_gan(
    images: np.ndarray,
    cfg: GANConfig,
    workdir: str | Path,
    *,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
    active: np.ndarray | None = None,
) -> Path:
    """Train the GAN on ``images`` (n, 1, N, N) in [-1, 1]; return the selected generator's stem.

    ``active`` (n,) bool marks active-region patches; with ``cfg.active_fraction`` set, each
    epoch draws n patches with replacement, active ones with that total probability.

    Resumes from ``workdir/checkpoints/last.safetensors`` when present. The selected generator
    (closest-to-chance discriminator accuracy) is written to ``workdir/generator.safetensors``
    + ``generator.json``; the per-epoch history is in ``generator.json`` and the CSV logs.

    Parameters
    ----------
    images : np.ndarray, shape (n, 1, N, N)
        Training patches in [-1, 1] (units of 1000 G), N×N square; cast to float32.
    cfg : GANConfig
        Architecture, optimiser (paper: Adam, lr 5e-4, batch 32, 200 epochs), selection and sampling settings.
    workdir : str or Path
        Work folder (created if missing) for checkpoints, logs and the selected generator.
    accelerator, devices : str or int
        Passed to the Lightning trainer.
    progress : bool
        Show progress bars.
    active : np.ndarray of bool, shape (n,), optional
        Active-region flags for the weighted sampler (used only when ``cfg.active_fraction`` is set
        and both classes are present).

    Returns
    -------
    Path
        The stem ``workdir/generator`` (without suffix) of the selected generator.

    Raises
    ------
    ValueError
        For images of the wrong shape or fewer images than one batch (``cfg.batch_size``).

    References
    ----------
    Chatterjee et al. (2025), Methods (GAN, eqs. 1-2) and Results ("Training Generative Model").
    """
    images = check_images(images, cfg.batch_size)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, verbose=False)
    module = GANModule(cfg, images.shape[-1], workdir)
    dataset = TensorDataset(torch.from_numpy(images))
    sampler = None
    if active is not None and cfg.active_fraction is not None:
        active = np.asarray(active, bool)
        n_act = int(active.sum())
        if 0 < n_act < len(active):
            w = np.where(active, cfg.active_fraction / n_act, (1 - cfg.active_fraction) / (len(active) - n_act))
            sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), len(images), replacement=True,
                                            generator=torch.Generator().manual_seed(cfg.seed))
        log.info("GAN training set: %d active of %d patches (drawn with probability %.2f)", n_act, len(active), cfg.active_fraction)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True)
    fit_resumable(module, loader, workdir, cfg.epochs, accelerator=accelerator, devices=devices, progress=progress,
                  find_unused_parameters=True)
    stem = workdir / GENERATOR_STEM
    # the selected weights were saved during training; add the full history to their sidecar
    sidecar = stem.with_suffix(".json")
    write_json(sidecar, {**json.loads(sidecar.read_text()), "history": module.history})
    log.info("GAN: kept epoch %d (discriminator accuracy %.3f)", module.best["epoch"], module.best["d_accuracy"])
    return stem


def load_generator(path_stem: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a generator saved by :func:`train_gan` (eval mode).

    Parameters
    ----------
    path_stem : str or Path
        Stem of ``<stem>.safetensors`` + ``<stem>.json``.
    device : str or torch.device
        Device to load the weights onto.

    Returns
    -------
    Generator
        In eval mode, sizes from the JSON sidecar.

    Raises
    ------
    FileNotFoundError
        If the weights or sidecar are missing.
    ProductError
        If the weights are unreadable, non-finite or do not match the sidecar (names the file).
    """
    gen, _ = build_from_weights(path_stem, lambda c: Generator(c["latent_dim"], c["image_size"], c["base_channels"]), device)
    return gen


@torch.no_grad()
def generate(generator: Generator, z: np.ndarray | torch.Tensor, batch_size: int | None = None,
             progress: bool | None = None) -> np.ndarray:
    """Images (n, 1, N, N) float32 in [-1, 1] (units of 1000 G) for latent vectors z (n, latent_dim).

    ``batch_size`` defaults to 8 on a CPU and 256 on a GPU: on CPUs large batches of
    upsample-convolutions are slower per image (measured 686 img/s at 8 vs 219 at 256 for
    N = 64; docs/benchmarks.md). A progress bar is shown for 2000 images or more unless
    ``progress`` is False.

    Parameters
    ----------
    generator : Generator
        The generator (used as given; :func:`load_generator` returns it in eval mode).
    z : np.ndarray or torch.Tensor, shape (n, latent_dim)
        Latent vectors; cast to float32.
    batch_size : int, optional
        Images per forward pass (default 8 on CPU, 256 on GPU).
    progress : bool, optional
        True always shows a progress bar, False never, None for n ≥ 2000.

    Returns
    -------
    np.ndarray of float32, shape (n, 1, N, N)
        Generated images in [-1, 1], units of 1000 G; shape (0, 1, N, N) for n = 0.

    Raises
    ------
    ValueError
        For z of the wrong shape.
    """
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    if z.ndim != 2 or z.shape[1] != generator.latent_dim:
        raise ValueError(f"z must be (n, {generator.latent_dim}), got {tuple(z.shape)}")
    device = next(generator.parameters()).device
    if batch_size is None:
        batch_size = 8 if device.type == "cpu" else 256
    chunks = z.split(batch_size)
    if progress or (progress is None and len(z) >= 2000):
        chunks = track(chunks, f"generating {len(z)} images", unit="batch", leave=False)
    out = [generator(chunk.to(device)).cpu() for chunk in chunks]
    return torch.cat(out).numpy() if out else np.zeros((0, 1, generator.image_size, generator.image_size), np.float32)
