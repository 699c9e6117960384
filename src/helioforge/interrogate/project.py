"""A real magnetogram in the GAN's latent space: find z whose G(z) reproduces a preprocessed Br patch.

GAN inversion by optimisation (the standard approach of e.g. Creswell & Bharath 2019; the
interrogator paper generates from z only, so this is an addition the issue asks for): with the
target x = preprocessed patch (B / clip_gauss, N×N, the corpus's preprocessing),

    L(z) = mean (G(z) − x)²  +  w_p Σ_{s=+,−} ((F_s(G(z)) − F_s(x)) / F(x))²  +  w_z (|z|²/d − 1)²,

where F_+ = Σ max(B, 0), F_− = Σ max(−B, 0) are the signed fluxes (differentiable forms of TPF
and TNF without the threshold), F = F_+ + F_−, and the last term keeps z on the shell where
draws from N(0, I) lie (so that moves along the SVM directions stay in the region they were
fitted on). Starts: ``n_init`` random z, of which the ``restarts`` with the lowest pixel loss
are optimised together with Adam; the restart with the lowest final loss wins.

Reported, in the same run: the median absolute pixel error (G), |ΔTUF|/TUF and the parameter
differences of the fit; the same for the best random start before optimisation and for an
all-zero image (the trivial yardsticks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from helioforge.errors import InputError
from helioforge.interrogate.config import Profile
from helioforge.interrogate.evaluate import image_params
from helioforge.interrogate.gan import Generator, generate
from helioforge.progress import track

__all__ = ["Projection", "project_image", "projection_errors", "summarise_projections"]

log = logging.getLogger(__name__)


@dataclass
class Projection:
    """The result of :func:`project_image`.

    z : (latent_dim,) float64, the best latent vector.
    image : (N, N) float32, G(z) (units of clip_gauss).
    target : (N, N) float32, the preprocessed target.
    errors : :func:`projection_errors` of the fit, ``random_start`` and ``zero_image`` the same
        for the yardsticks.
    losses : final loss of each restart (best first).
    native_side_px : the target patch's own scale, when known (set by
        :meth:`~helioforge.interrogate.infer.Interrogator.project`).
    """

    z: np.ndarray
    image: np.ndarray
    target: np.ndarray
    errors: dict[str, float]
    random_start: dict[str, float]
    zero_image: dict[str, float]
    losses: list[float]
    native_side_px: float | None = None


def projection_errors(fit: np.ndarray, target: np.ndarray, profile: Profile) -> dict[str, float]:
    """Reconstruction error of an image ``fit`` against ``target`` (both (N, N), clip units).

    Returns
    -------
    dict : ``median_abs_G`` (median |fit − target| × clip_gauss over pixels, G),
        ``median_abs_G_active`` (the same over pixels where |target| > the polarity threshold;
        NaN when there are none), ``rms_G`` (root mean square, G: what the pixel loss minimises), ``rel_dTUF`` = |TUF_fit − TUF_target| / TUF_target, and
        ``d<P>`` = P_fit − P_target for TUF, TPF, TNF, R (kG px), PSEP (px); NaN where undefined.
    """
    clip = profile.data.clip_gauss
    diff = np.abs(np.asarray(fit, np.float64) - np.asarray(target, np.float64)) * clip
    active = np.abs(target) * clip > profile.params.threshold_gauss
    p = image_params(np.stack([fit, target])[:, None].astype(np.float32), profile)
    out = {"median_abs_G": float(np.median(diff)),
           "median_abs_G_active": float(np.median(diff[active])) if active.any() else float("nan"),
           "rms_G": float(np.sqrt(np.mean(diff ** 2)))}
    tuf = float(p["TUF"][1])
    out["rel_dTUF"] = abs(float(p["TUF"][0]) - tuf) / tuf if tuf > 0 else float("nan")
    for k in ("TUF", "TPF", "TNF", "R", "PSEP"):
        out[f"d{k}"] = float(p[k][0] - p[k][1])
    return out


def _signed_flux(img: torch.Tensor) -> torch.Tensor:
    """(n, 1, N, N) → (n, 2): Σ max(B, 0), Σ max(−B, 0)."""
    return torch.stack([img.clamp(min=0).sum(dim=(1, 2, 3)), (-img).clamp(min=0).sum(dim=(1, 2, 3))], dim=1)


def project_image(generator: Generator, target: np.ndarray, profile: Profile, progress: bool = False) -> Projection:
    """Find z with G(z) ≈ ``target`` (module docstring).

    Parameters
    ----------
    generator : the trained generator (eval mode; its weights are not changed).
    target : (N, N) preprocessed image (B / clip_gauss in [-1, 1]), N = the generator's size.
    profile : ``projection`` settings (starts, restarts, steps, lr, weights, seed) and the
        parameter settings of the errors.
    progress : show a progress bar over the steps.

    Returns
    -------
    Projection

    Raises
    ------
    InputError : a target of the wrong shape, not finite, or all zero (nothing to fit).
    """
    cfg = profile.projection
    x = np.asarray(target, dtype=np.float32)
    n = generator.image_size
    if x.shape != (n, n):
        raise InputError(f"the target must be the preprocessed {n}x{n} image, got shape {x.shape}")
    if not np.isfinite(x).all() or not np.abs(x).max() > 0:
        raise InputError("the target is all zero or not finite: nothing to project")
    rng = np.random.default_rng(cfg.seed)
    z0 = rng.standard_normal((cfg.n_init, generator.latent_dim))
    imgs0 = generate(generator, z0, progress=False)
    pix0 = ((imgs0[:, 0] - x[None]) ** 2).mean(axis=(1, 2))
    order = np.argsort(pix0)[: cfg.restarts]
    device = next(generator.parameters()).device
    xt = torch.as_tensor(x, device=device)[None, None]
    f_t = _signed_flux(xt)
    norm = f_t.sum().clamp(min=1e-6)
    z = torch.tensor(z0[order], dtype=torch.float32, device=device, requires_grad=True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    d = generator.latent_dim
    req = [p.requires_grad for p in generator.parameters()]
    for p in generator.parameters():
        p.requires_grad_(False)
    steps = track(range(cfg.steps), f"projecting onto the latent space ({cfg.restarts} restarts)", unit="step",
                  leave=False, disable=not progress)

    def loss_of(zz: torch.Tensor) -> torch.Tensor:
        g = generator(zz)
        pix = ((g - xt) ** 2).mean(dim=(1, 2, 3))
        flux = (((_signed_flux(g) - f_t) / norm) ** 2).sum(dim=1)
        prior = ((zz * zz).sum(dim=1) / d - 1.0) ** 2
        return pix + cfg.param_weight * flux + cfg.prior_weight * prior

    try:
        with torch.enable_grad():
            for _ in steps:
                opt.zero_grad()
                loss = loss_of(z)
                loss.sum().backward()
                opt.step()
        with torch.no_grad():
            final = loss_of(z).cpu().numpy()
    finally:
        for p, r in zip(generator.parameters(), req):
            p.requires_grad_(r)
    best = int(np.argmin(final))
    zb = z.detach().cpu().numpy()[best].astype(np.float64)
    fit = generate(generator, zb[None], progress=False)[0, 0]
    return Projection(z=zb, image=fit, target=x, errors=projection_errors(fit, x, profile),
                      random_start=projection_errors(imgs0[order[0], 0], x, profile),
                      zero_image=projection_errors(np.zeros_like(x), x, profile),
                      losses=[float(v) for v in np.sort(final)])


def summarise_projections(rows: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Medians over files of the fit and the yardsticks, with 95 % bootstrap intervals.

    Parameters
    ----------
    rows : one dict per file with ``fit``, ``random_start`` and ``zero_image`` error dicts
        (:func:`projection_errors`).

    Returns
    -------
    dict : ``n`` and, for ``median_abs_G`` and ``rel_dTUF`` of each of the three, ``median`` and ``ci``.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n": len(rows)}
    for what in ("fit", "random_start", "zero_image"):
        for key in ("median_abs_G", "median_abs_G_active", "rms_G", "rel_dTUF"):
            v = np.array([r[what][key] for r in rows], dtype=np.float64)
            v = v[np.isfinite(v)]
            if not v.size:
                continue
            boots = [np.median(rng.choice(v, v.size)) for _ in range(n_boot)]
            out[f"{what}.{key}"] = {"median": float(np.median(v)), "ci": [float(np.percentile(boots, 2.5)),
                                                                         float(np.percentile(boots, 97.5))]}
    return out
