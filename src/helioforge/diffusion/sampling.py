"""Sampling with classifier-free guidance (Ramunno et al. 2024, eq. 6; Ho & Salimans 2022).

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from helioforge.errors import InputError, check_count, check_finite
from helioforge.nn.flare_unet import FlareUNet

__all__ = ["guided_noise", "make_sampler", "sample", "SampleResult", "SAMPLERS"]

log = logging.getLogger(__name__)

SAMPLERS = ("ddpm", "ddim", "dpm")


def guided_noise(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Eq. 6: ε̂ = (1 + w) ε(x, c) − w ε(x), w = ``cfg_scale``; tensors of any equal shape."""
    return (1.0 + cfg_scale) * eps_cond - cfg_scale * eps_uncond


def make_sampler(train_config: dict[str, Any], sampler: str, steps: int | None):
    """A diffusers scheduler for ``sampler`` on the training noise schedule, with its timesteps
    set: ``steps`` defaults to T for DDPM, 50 for DDIM and 20 for DPM-Solver. Raises ``ValueError`` for an unknown
    sampler or ``steps`` outside 1..T."""
    from helioforge.diffusion.training import make_scheduler

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
    net : the trained denoiser (EMA weights; :func:`helioforge.diffusion.training.load_diffusion`).
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

    Raises :class:`~helioforge.errors.InputError` (a ``ValueError``) for a ``cfg_scale`` that is
    not a finite number ≥ 0, an ``eta`` outside [0, 1] or ``steps`` < 1, and ``ValueError`` for a
    condition the model cannot take.
    """
    import time

    from helioforge.progress import progress_bar

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
