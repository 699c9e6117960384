"""Shared Lightning plumbing: a Trainer that runs on CPU, one GPU or many (DDP), resumes from
the last safetensors checkpoint in a work folder, and logs to CSV."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
import torch
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from helioforge.nn.checkpoint import SafetensorsCheckpointIO, load_weights, save_weights
from helioforge.progress import LogBar, stderr_is_terminal

__all__ = ["LogProgress", "make_trainer", "last_checkpoint", "finish_rank", "check_images", "fit_resumable", "fit_and_save", "inference_device"]

log = logging.getLogger(__name__)


class _SafetensorsModelCheckpoint(ModelCheckpoint):
    FILE_EXTENSION = ".safetensors"


class LogProgress(L.Callback):
    """Lightning callback: one log line per ~10 % of the epochs or 30 s (epoch, logged losses,
    elapsed, ETA). Used instead of Lightning's bar when stderr is not a terminal."""

    def __init__(self, desc: str | None = None) -> None:
        self.desc = desc
        self.bar: LogBar | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.bar = LogBar(trainer.max_epochs, self.desc or f"training {type(pl_module).__name__}", "epoch",
                              initial=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is None:
            return
        numbers = {}
        for k, v in trainer.callback_metrics.items():
            try:
                numbers[k] = float(v)
            except (TypeError, ValueError):
                continue
        self.bar.postfix = numbers
        self.bar.update(1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def inference_device(accelerator: str = "auto") -> str:
    """Device for sampling, generation and embedding: a GPU when asked for (or ``auto``) and
    present, else ``cpu``."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def last_checkpoint(workdir: Path) -> Path | None:
    """The resumable training state in ``workdir/checkpoints``, or ``None``."""
    path = Path(workdir) / "checkpoints" / "last.safetensors"
    return path if path.is_file() else None


def make_trainer(
    workdir: Path,
    max_epochs: int,
    *,
    accelerator: str = "auto",
    devices: int | str = "auto",
    progress: bool = True,
    find_unused_parameters: bool = False,
) -> L.Trainer:
    """A Trainer writing ``workdir/checkpoints/last.safetensors`` every epoch and CSV logs.

    ``accelerator``/``devices`` are passed to Lightning: ``"auto"`` picks a GPU when present;
    several devices use DDP. ``progress``: Lightning's bar on a terminal, :class:`LogProgress`
    lines in a log. ``find_unused_parameters`` is needed by the GAN, whose two
    alternating optimisation steps each leave the other network without gradients.
    """
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*number of training batches.*")
    # one rolling file, rewritten at the end of every epoch (no monitor: the latest state wins)
    ckpt = _SafetensorsModelCheckpoint(dirpath=Path(workdir) / "checkpoints", filename="last", save_top_k=1,
                                       save_last=False, enable_version_counter=False)
    callbacks: list[L.Callback] = [ckpt]
    if progress and not stderr_is_terminal():  # a log, not a terminal: lines instead of a bar
        callbacks.append(LogProgress())
    strategy = "auto"
    if devices not in ("auto", 1, "1"):
        strategy = "ddp_find_unused_parameters_true" if find_unused_parameters else "ddp"
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        plugins=[SafetensorsCheckpointIO()],
        callbacks=callbacks,
        logger=CSVLogger(str(workdir), name="logs"),
        enable_progress_bar=progress and stderr_is_terminal(),
        enable_model_summary=False,
        log_every_n_steps=5,
        num_sanity_val_steps=0,
    )


def seed_per_rank(module: L.LightningModule, seed: int) -> None:
    """Under DDP, reseed torch with ``seed + 1 + rank`` at the start of training, so every rank
    draws different noise and augmentations (the weights are already synchronised)."""
    if module.trainer.world_size > 1:
        torch.manual_seed(seed + 1 + module.global_rank)


def finish_rank(trainer: L.Trainer) -> None:
    """After ``fit``: under DDP every rank runs the whole command (Lightning's launcher); only
    rank 0 goes on to evaluation and reports, the others stop here."""
    if trainer.world_size > 1 and not trainer.is_global_zero:
        raise SystemExit(0)


def check_images(images: np.ndarray, min_count: int) -> np.ndarray:
    """Training images as float32 (n, 1, N, N), N×N square. Raises ``ValueError`` for another
    shape or fewer than ``min_count`` images."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be (n, 1, N, N), got {images.shape}")
    if len(images) < min_count:
        raise ValueError(f"need at least one batch ({min_count}) of images, got {len(images)}")
    return images


def fit_resumable(module: L.LightningModule, loader, workdir: Path, max_epochs: int, *, accelerator: str = "auto",
                  devices: int | str = "auto", progress: bool = True, find_unused_parameters: bool = False) -> L.Trainer:
    """Fit ``module``, resuming from ``workdir/checkpoints/last.safetensors`` when present; under
    DDP only rank 0 returns (see :func:`finish_rank`). Returns the trainer."""
    trainer = make_trainer(workdir, max_epochs, accelerator=accelerator, devices=devices, progress=progress,
                           find_unused_parameters=find_unused_parameters)
    resume = last_checkpoint(workdir)
    if resume is not None:
        log.info("resuming %s from %s", type(module).__name__, resume)
    trainer.fit(module, loader, ckpt_path=str(resume) if resume else None)
    finish_rank(trainer)
    return trainer


def fit_and_save(module: L.LightningModule, model, loader, workdir: Path, stem_name: str, max_epochs: int,
                 config: dict, *, accelerator: str = "auto", devices: int | str = "auto", progress: bool = True,
                 find_unused_parameters: bool = False) -> tuple[Path, dict]:
    """:func:`fit_resumable`, then save ``model``'s weights as ``workdir/<stem_name>.safetensors``
    with ``config`` plus ``final_metrics`` (the last epoch's logged values; those of the previous
    run when nothing was left to train) and ``epochs_trained`` in the JSON sidecar.

    Returns ``(stem, sidecar config)``. Only rank 0 returns under DDP.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    trainer = fit_resumable(module, loader, workdir, max_epochs, accelerator=accelerator, devices=devices,
                            progress=progress, find_unused_parameters=find_unused_parameters)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    stem = workdir / stem_name
    if not metrics and stem.with_suffix(".json").is_file():  # nothing left to train: keep the last numbers
        metrics = load_weights(stem)[1].get("final_metrics", {})
    full = {**config, "final_metrics": metrics, "epochs_trained": int(trainer.current_epoch)}
    save_weights(stem, model, full)
    return stem, full
