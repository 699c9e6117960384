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
        """Open a :class:`~helioforge.progress.LogBar` over ``trainer.max_epochs`` (rank 0 only),
        starting at the current epoch of a resumed run.

        Parameters
        ----------
        trainer : lightning.Trainer
            The running trainer.
        pl_module : lightning.LightningModule
            The module being trained (its class names the step when ``desc`` is ``None``).
        """
        if trainer.is_global_zero:
            self.bar = LogBar(trainer.max_epochs, self.desc or f"training {type(pl_module).__name__}", "epoch",
                              initial=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Count one epoch, with the trainer's logged metrics that convert to ``float`` as the
        line's numbers.

        Parameters
        ----------
        trainer : lightning.Trainer
            The running trainer.
        pl_module : lightning.LightningModule
            The module being trained (unused).
        """
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
        """Close the bar (writing a last line if needed).

        Parameters
        ----------
        trainer : lightning.Trainer
            The trainer (unused).
        pl_module : lightning.LightningModule
            The module (unused).
        """
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def inference_device(accelerator: str = "auto") -> str:
    """Device for sampling, generation and embedding.

    Parameters
    ----------
    accelerator : str
        ``"auto"``, ``"gpu"`` or ``"cuda"`` ask for a GPU; anything else (``"cpu"``) means the CPU.

    Returns
    -------
    str
        ``"cuda"`` when a GPU was asked for and CUDA is available, else ``"cpu"``.
    """
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def last_checkpoint(workdir: Path) -> Path | None:
    """The resumable training state in ``workdir/checkpoints``.

    Parameters
    ----------
    workdir : Path
        The training's work folder.

    Returns
    -------
    Path or None
        ``workdir/checkpoints/last.safetensors`` when it is a file, else ``None``.
    """
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

    Checkpoints go through :class:`~helioforge.nn.checkpoint.SafetensorsCheckpointIO` (no
    pickle); logs to ``workdir/logs``; no sanity validation steps, no model summary.

    Parameters
    ----------
    workdir : Path
        The training's work folder.
    max_epochs : int
        Total number of epochs (a resumed run continues up to it).
    accelerator, devices : str or int
        Passed to Lightning: ``"auto"`` picks a GPU when present; ``devices`` other than
        ``"auto"``, ``1`` or ``"1"`` use the DDP strategy.
    progress : bool
        Lightning's bar on a terminal, :class:`LogProgress` lines in a log; ``False``: neither.
    find_unused_parameters : bool
        DDP with ``find_unused_parameters=True``; needed by the GAN, whose two alternating
        optimisation steps each leave the other network without gradients.

    Returns
    -------
    lightning.Trainer
        The configured trainer.
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
    draws different noise and augmentations (the weights are already synchronised).

    Parameters
    ----------
    module : lightning.LightningModule
        The module being trained (attached to a trainer); nothing happens with one process.
    seed : int
        The run's seed.
    """
    if module.trainer.world_size > 1:
        torch.manual_seed(seed + 1 + module.global_rank)


def finish_rank(trainer: L.Trainer) -> None:
    """After ``fit``: under DDP every rank runs the whole command (Lightning's launcher); only
    rank 0 goes on to evaluation and reports, the others stop here.

    Parameters
    ----------
    trainer : lightning.Trainer
        The trainer that has just fitted.

    Raises
    ------
    SystemExit
        With status 0, on every rank but 0 when ``trainer.world_size > 1``.
    """
    if trainer.world_size > 1 and not trainer.is_global_zero:
        raise SystemExit(0)


def check_images(images: np.ndarray, min_count: int) -> np.ndarray:
    """Check a training set of single-channel square images.

    Parameters
    ----------
    images : array_like
        Images (n, 1, N, N).
    min_count : int
        Fewest images accepted (one batch).

    Returns
    -------
    numpy.ndarray
        ``images`` as float32, shape (n, 1, N, N).

    Raises
    ------
    ValueError
        Another shape (not 4-D, not one channel, not square), or fewer than ``min_count`` images.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be (n, 1, N, N), got {images.shape}")
    if len(images) < min_count:
        raise ValueError(f"need at least one batch ({min_count}) of images, got {len(images)}")
    return images


def fit_resumable(module: L.LightningModule, loader, workdir: Path, max_epochs: int, *, accelerator: str = "auto",
                  devices: int | str = "auto", progress: bool = True, find_unused_parameters: bool = False) -> L.Trainer:
    """Fit ``module``, resuming from ``workdir/checkpoints/last.safetensors`` when present.

    Parameters
    ----------
    module : lightning.LightningModule
        The training module.
    loader : torch.utils.data.DataLoader
        The training batches.
    workdir, max_epochs, accelerator, devices, progress, find_unused_parameters
        As in :func:`make_trainer`.

    Returns
    -------
    lightning.Trainer
        The trainer after ``fit``. Under DDP only rank 0 returns (see :func:`finish_rank`).

    Raises
    ------
    ProductError
        The checkpoint to resume from is unreadable
        (:meth:`~helioforge.nn.checkpoint.SafetensorsCheckpointIO.load_checkpoint`).
    """
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

    Parameters
    ----------
    module : lightning.LightningModule
        The training module.
    model : torch.nn.Module
        The network whose weights are saved (usually a part of ``module``).
    loader : torch.utils.data.DataLoader
        The training batches.
    workdir : Path
        The work folder (created).
    stem_name : str
        Name of the weights pair in ``workdir``.
    max_epochs : int
        Total number of epochs.
    config : dict
        JSON-able settings that rebuild ``model`` (:func:`~helioforge.nn.checkpoint.save_weights`).
    accelerator, devices, progress, find_unused_parameters
        As in :func:`make_trainer`.

    Returns
    -------
    (Path, dict)
        The stem ``workdir/stem_name`` and the sidecar config. Only rank 0 returns under DDP.

    Raises
    ------
    ProductError
        An unreadable resume checkpoint, or (when nothing was left to train) unreadable earlier
        weights whose metrics are kept.
    FileNotFoundError
        Nothing was left to train and the earlier JSON sidecar lacks its ``.safetensors`` file.
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
