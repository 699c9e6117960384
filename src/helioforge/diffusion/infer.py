"""Inference: sampling images of a flare class or an X-ray flux from a trained model, with
classifier-free guidance (Ramunno et al. 2024, eq. 6; Ho & Salimans 2022).

The user-facing entry points are :func:`sample` (an array of conditions → images, in memory)
and :func:`sample_to_files` (a saved model, a GOES class or flux → FITS cube + PNG grid).

At every step the network is evaluated with the condition and with the null condition (in one
batched call) and the two noise predictions are combined as

    ε̂(x_t, c) = (1 + w) ε(x_t, c) − w ε(x_t)                                  (eq. 6)

with w the CFG scale (``cfg_scale``; w = 0 is the purely conditional model and needs one
evaluation per step). The update x_t → x_{t−1} is done by a diffusers scheduler built from the
training noise schedule:

* ``ddpm``: ancestral DDPM (Ho et al. 2020), T = 1000 steps as in the paper;
* ``ddim``: DDIM (Song et al. 2021) on a subsequence of few steps (default 50), with η = 1 by
  default: the DDPM posterior noise on the short schedule. With η = 0 (deterministic DDIM) the
  small errors of a briefly trained network at low noise levels are never washed out and
  survive as pixel noise (measured on the CPU demo model: mean |Δx| between neighbouring
  pixels 0.11 at η = 0 against 0.057 at η = 1, 0.065 for DDPM-1000 and 0.055 for real images);
* ``dpm``: SDE-DPM-Solver++ (2M, Lu et al. 2022), 20 steps by default, with x̂₀ thresholded to
  [-1, 1]; the deterministic DPM-Solver++ diverges on the same model. On the CPU demo model it
  reaches the Fréchet distance of DDPM-1000 (ratio 0.98) with 50× fewer network evaluations,
  where DDIM-50 does not (ratio 5.4; benchmarks/bench_samplers.py), so it is the default
  few-step sampler.

:func:`sample` also counts network evaluations per image (NFE), which is the cost measure of the
sampler benchmark.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from helioforge.data.aia import full_disk_wcs
from helioforge.data.goes import FLARE_CLASSES
from helioforge.diffusion.report import save_grid
from helioforge.diffusion.train import load_diffusion, make_scheduler
from helioforge.errors import InputError, check_count, check_finite, check_output
from helioforge.io import atomic_path, write_fits
from helioforge.nn.flare_unet import FlareUNet
from helioforge.nn.training import inference_device
from helioforge.progress import progress_bar

__all__ = ["guided_noise", "make_sampler", "sample", "sample_to_files", "check_sample_args", "SampleResult", "SAMPLERS"]

log = logging.getLogger(__name__)

SAMPLERS = ("ddpm", "ddim", "dpm")


def guided_noise(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guided noise prediction, ε̂ = (1 + w) ε(x, c) − w ε(x).

    Parameters
    ----------
    eps_cond : torch.Tensor
        Conditional noise prediction ε(x, c), any shape, e.g. (B, 1, N, N).
    eps_uncond : torch.Tensor
        Null-condition prediction ε(x), same shape.
    cfg_scale : float
        Guidance scale w (0: purely conditional).

    Returns
    -------
    torch.Tensor
        ε̂, same shape.

    References
    ----------
    Ramunno et al. (2024), eq. 6; Ho & Salimans (2022).
    """
    return (1.0 + cfg_scale) * eps_cond - cfg_scale * eps_uncond


def make_sampler(train_config: dict[str, Any], sampler: str, steps: int | None):
    """A diffusers scheduler for ``sampler`` on the training noise schedule, with its timesteps set.

    DDIM and DPM-Solver use ``timestep_spacing="trailing"``; DPM-Solver is the SDE-DPM-Solver++
    of order 2 with x̂₀ thresholded to [-1, 1] (module docstring).

    Parameters
    ----------
    train_config : dict
        The ``train`` section of the model's JSON (noise schedule, T = ``num_train_timesteps``).
    sampler : str
        ``"ddpm"``, ``"ddim"`` or ``"dpm"``.
    steps : int or None
        Sampling steps; ``None``: T for DDPM, 50 for DDIM, 20 for DPM-Solver.

    Returns
    -------
    diffusers.SchedulerMixin
        ``DDPMScheduler``, ``DDIMScheduler`` or ``DPMSolverMultistepScheduler``.

    Raises
    ------
    ValueError
        For an unknown sampler or ``steps`` outside 1..T.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    base = make_scheduler(train_config)
    T = base.config.num_train_timesteps
    steps = {"ddpm": T, "ddim": 50, "dpm": 20}[sampler] if steps is None else int(steps)
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be within 1..{T}, got {steps}")
    if sampler == "ddpm":
        sched = base
    elif sampler == "ddim":
        sched = DDIMScheduler.from_config(base.config, timestep_spacing="trailing")
    else:
        sched = DPMSolverMultistepScheduler.from_config(base.config, algorithm_type="sde-dpmsolver++",
                                                        timestep_spacing="trailing", solver_order=2,
                                                        thresholding=True, sample_max_value=1.0)
    sched.set_timesteps(steps)
    return sched


@dataclass
class SampleResult:
    """Generated images and what they cost.

    images : (n, 1, N, N) float32 in [-1, 1].
    cond : (n,) the conditions used (class indices or log10 flux).
    nfe_per_image : network evaluations per image (steps × 2 with guidance, × 1 without).
    seconds : wall time of the sampling loop.
    """

    images: np.ndarray
    cond: np.ndarray
    nfe_per_image: int
    seconds: float


@torch.no_grad()
def sample(
    net: FlareUNet,
    train_config: dict[str, Any],
    cond: np.ndarray,
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    cfg_scale: float = 1.0,
    eta: float = 1.0,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> SampleResult:
    """Generate one image per entry of ``cond``.

    Parameters
    ----------
    net : the trained denoiser (EMA weights; :func:`helioforge.diffusion.train.load_diffusion`).
    train_config : the ``train`` section of the model's JSON (its noise schedule).
    cond : (n,) class indices 0..4 (class model) or log10 flux in W m⁻² (flux model).
    sampler, steps : see :func:`make_sampler`.
    cfg_scale : w of eq. 6 (≥ 0).
    eta : DDIM η (1: stochastic, the DDPM posterior on the short schedule; 0: deterministic);
        used by ``ddim`` only.
    batch_size : images per network call (the guided call evaluates 2 × batch_size); ``None``
        is 16 on a CPU, where larger batches lose their time to memory allocation (glibc
        returns the large activation buffers to the system after every call), and 256 on a GPU.
    seed : the initial noise and the DDPM noise are drawn from a generator with this seed, so a
        call is reproducible on a given device.
    device : where the network runs. progress : show a progress bar.

    Returns
    -------
    SampleResult : ``images`` (n, 1, N, N) float32 in [-1, 1], the conditions, network
        evaluations per image and the wall time.

    Raises
    ------
    InputError : (a ``ValueError``) a ``cfg_scale`` that is not a finite number ≥ 0, an ``eta``
        outside [0, 1] or ``steps`` < 1.
    ValueError : a condition the model cannot take (a class index outside 0..4, a non-finite flux).

    Examples
    --------
    Two B-class images (class index 1) with guidance w = 2 from an untrained 16×16 class
    model, by DDIM in 3 steps (2 network evaluations per step: conditional and null):

    >>> from helioforge.diffusion.config import DiffusionTrainConfig, UNetConfig
    >>> from helioforge.diffusion.train import build_unet
    >>> from dataclasses import asdict
    >>> _ = torch.manual_seed(0)
    >>> unet = UNetConfig(block_out_channels=(8, 16), attention=(False, False), layers_per_block=1,
    ...                   norm_num_groups=4)
    >>> net = build_unet(unet, image_size=16, condition="class")
    >>> train = asdict(DiffusionTrainConfig(num_train_timesteps=50))
    >>> res = sample(net, train, np.array([1, 1]), sampler="ddim", steps=3, cfg_scale=2.0, progress=False)
    >>> res.images.shape, res.images.dtype, res.nfe_per_image
    ((2, 1, 16, 16), dtype('float32'), 6)
    >>> bool(np.abs(res.images).max() <= 1)
    True
    """
    cond = np.asarray(cond)
    check_finite("cfg_scale", cfg_scale, minimum=0)
    check_finite("eta", eta, minimum=0)
    if eta > 1:
        raise InputError(f"eta must lie between 0 and 1, got {eta:g}")
    check_count("steps", steps)
    if net.condition == "class":
        if cond.size and (cond.min() < 0 or cond.max() >= net.n_classes):
            raise ValueError(f"class conditions must be within 0..{net.n_classes - 1}")
        cond_t = torch.from_numpy(cond.astype(np.int64))
    else:
        if not np.all(np.isfinite(cond)):
            raise ValueError("flux conditions must be finite log10 fluxes (W m^-2)")
        cond_t = torch.from_numpy(cond.astype(np.float32))
    device = torch.device(device)
    batch_size = batch_size or (256 if device.type == "cuda" else 16)
    net = net.to(device).eval()
    n, size = len(cond), net.image_size
    gen = torch.Generator().manual_seed(int(seed))
    out = np.empty((n, 1, size, size), np.float32)
    guided = cfg_scale != 0
    t0 = time.perf_counter()
    sched = make_sampler(train_config, sampler, steps)
    n_steps = len(sched.timesteps)
    batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    bar = progress_bar(len(batches) * n_steps, f"sampling {n} images ({sampler}, {n_steps} steps, w={cfg_scale:g})",
                       "step", disable=not progress, leave=False)
    with bar:
        for lo, hi in batches:
            sched = make_sampler(train_config, sampler, steps)  # fresh state (multistep solvers keep history)
            c = cond_t[lo:hi].to(device)
            x = torch.randn((hi - lo, 1, size, size), generator=gen).to(device) * sched.init_noise_sigma
            null = net.null_condition(hi - lo, device).to(c.dtype)
            for t in sched.timesteps:
                xin = sched.scale_model_input(x, t)
                tt = torch.full((hi - lo,), int(t), device=device, dtype=torch.long)
                if guided:
                    eps_c, eps_u = net(torch.cat([xin, xin]), torch.cat([tt, tt]), torch.cat([c, null])).chunk(2)
                    eps = guided_noise(eps_c, eps_u, cfg_scale)
                else:
                    eps = net(xin, tt, c)
                extra = {"eta": eta} if sampler == "ddim" else {}
                x = sched.step(eps, t, x, generator=gen, **extra).prev_sample
                bar.update(1)
            out[lo:hi] = x.clamp(-1, 1).cpu().numpy()
    return SampleResult(out, cond, n_steps * (2 if guided else 1), time.perf_counter() - t0)


def check_sample_args(*, n: int = 1, steps: int | None = None, cfg_scale: float | None = None,
                      eta: float | None = None, flux: float | None = None) -> tuple[int, float | None, float | None]:
    """Check the sampling options before any model is loaded; ``None`` skips a check.

    Returns
    -------
    (n, cfg_scale, eta) as numbers.

    Raises
    ------
    InputError : ``n`` or ``steps`` < 1, a ``cfg_scale`` that is not a finite number ≥ 0, an
        ``eta`` outside [0, 1], a ``flux`` that is not a finite number > 0 (W m⁻²); the message
        names the command-line option.
    """
    n = check_count("-n", n)
    check_count("--steps", steps)
    cfg_scale = check_finite("--cfg-scale", cfg_scale, minimum=0)
    eta = check_finite("--eta", eta, minimum=0)
    if eta is not None and eta > 1:
        raise InputError(f"--eta must lie between 0 and 1, got {eta:g}")
    if flux is not None:
        check_finite("--flux", flux)
        if not flux > 0:
            raise InputError(f"--flux must be a GOES 1–8 Å flux > 0 W m^-2 (e.g. 3e-5), got {flux:g}")
    return n, cfg_scale, eta


def sample_to_files(
    stem: str | Path,
    out: str | Path,
    *,
    flare_class: str | None = None,
    flux: float | None = None,
    n: int = 16,
    cfg_scale: float = 1.0,
    eta: float = 1.0,
    sampler: str = "dpm",
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Sample ``n`` images of a GOES class or X-ray flux from a saved model and write them to files.

    Writes ``<out>.fits`` (cube (n, N, N) in network units [-1, 1], with the scaling to
    intensity, condition, sampler and provenance in the header) and ``<out>.png`` (grid).

    The FITS header carries a helioprojective WCS of the downsampled full disk
    (:func:`helioforge.data.aia.full_disk_wcs`: 0.6″ × 4096 / N per pixel, disk centre at the
    image centre), so ``sunpy.map.Map(fits_path)`` opens the first image with its axes in arcsec.

    Every argument is checked before the model is loaded, and both files are written only when
    the sampling succeeded (atomically: a failure leaves nothing behind).

    Parameters
    ----------
    stem : str or pathlib.Path
        Saved model without suffix (``.safetensors`` + ``.json``).
    out : str or pathlib.Path
        Output path; its suffix is replaced by ``.fits`` and ``.png``.
    flare_class : str or None
        GOES class letter A, B, C, M or X (only the first letter counts); needed by a class model.
    flux : float or None
        GOES 1–8 Å flux, W m⁻², > 0; needed by a flux model (outside the training range: a warning).
    n : int
        Number of images, ≥ 1.
    cfg_scale : float
        Guidance scale w of eq. 6, ≥ 0.
    eta : float
        DDIM η in [0, 1] (``ddim`` only).
    sampler, steps : str, int or None
        See :func:`make_sampler`.
    seed : int
        Seed of the noise.
    device : str or None
        Default: :func:`helioforge.nn.training.inference_device`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    tuple of pathlib.Path
        (``<out>.fits``, ``<out>.png``).

    Raises
    ------
    helioforge.errors.InputError
        For ``n`` or ``steps`` < 1, a ``cfg_scale`` that is not a finite number ≥ 0, an ``eta``
        outside [0, 1], a flux that is not a finite number > 0, or an output that would
        overwrite the model or a FITS file helioforge did not write.
    FileNotFoundError
        For a missing model file.
    helioforge.errors.ProductError
        For a damaged model.
    ValueError
        When the condition does not suit the model (a class for a flux model or the reverse, a
        missing or unknown class, a class absent from the model's training set), for an unknown
        sampler or ``steps`` > T, or when sampling gave non-finite pixels.
    """
    stem = Path(stem)
    n, cfg_scale, eta = check_sample_args(n=n, steps=steps, cfg_scale=cfg_scale, eta=eta, flux=flux)
    out = Path(out)
    fits_out, png_out = out.with_suffix(".fits"), out.with_suffix(".png")
    inputs = (stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
    check_output(fits_out, inputs, protect_foreign_fits=True)
    check_output(png_out, inputs)
    device = device or inference_device()
    net, config = load_diffusion(stem, device)
    counts = config.get("class_counts", {})
    if net.condition == "class":
        if flare_class is None:
            raise ValueError(f"{stem}: a class-conditioned model needs --flare-class (one of {', '.join(FLARE_CLASSES)})")
        letter = flare_class.strip().upper()[:1]
        if letter not in FLARE_CLASSES:
            raise ValueError(f"flare class {flare_class!r} is not one of {', '.join(FLARE_CLASSES)}")
        if counts and counts.get(letter, 0) == 0:
            raise ValueError(f"{stem}: the model saw no {letter}-class image in training ({counts}); it cannot generate that class")
        cond = np.full(n, FLARE_CLASSES.index(letter))
        label = f"GOES class {letter}"
    else:
        if flux is None:
            raise ValueError(f"{stem}: a flux-conditioned model needs --flux > 0 (W m^-2)")
        lo_hi = config.get("log10_flux_range")
        if lo_hi and not lo_hi[0] <= np.log10(flux) <= lo_hi[1]:
            log.warning("flux %.2g W/m² lies outside the training range 1e%.1f–1e%.1f: extrapolation", flux, *lo_hi)
        cond = np.full(n, np.log10(flux))
        label = f"GOES flux {flux:.2g} W/m²"
    res = sample(net, config["train"], cond, sampler=sampler, steps=steps, cfg_scale=cfg_scale, eta=eta, seed=seed,
                 device=device, progress=progress)
    if not np.isfinite(res.images).all():
        raise ValueError(f"{stem}: sampling gave non-finite pixels; nothing written (retrain the model with "
                         "`helioforge diffusion train --force`)")
    data_meta = config.get("data", {})
    hdr = full_disk_wcs(net.image_size, wavelength=int(data_meta.get("wavelength", 0)) or None)
    hdr["WAVELNTH"] = (int(data_meta.get("wavelength", 0)), "AIA channel, Angstrom")
    hdr["BUNIT"] = ("scaled", "network units [-1,1]; see data.aia_preprocess.to_intensity")
    params = {"condition": net.condition, "flare_class": flare_class or "", "flux_Wm2": flux if flux else "",
              "cfg_scale": cfg_scale, "eta": eta, "sampler": sampler, "steps": res.nfe_per_image // (2 if cfg_scale else 1),
              "seed": seed, "model": str(stem), "units": data_meta.get("units", ""),
              "scaling": data_meta.get("scaling") or ""}
    # both files or neither: each is renamed into place only when both are complete
    with atomic_path(fits_out) as tmp_fits, atomic_path(png_out) as tmp_png:
        write_fits(tmp_fits, res.images[:, 0], model="diffusion", params=params, header=hdr)
        save_grid(res.images, tmp_png, title=f"{label}, w={cfg_scale:g}, {sampler}")
    return fits_out, png_out
