"""Training targets of the SICON inversion: the 49 maps of an atmosphere patch, and their
layout in the network output (Asensio Ramos & Díaz Baso 2019, §2 "physical conditions").

The quantities, units, surfaces and the B_Q/B_U/B_V transform (eq. 1) are defined once in
:mod:`helioforge.physics.sicon_targets`; this module turns atmosphere patches into target maps
(:func:`patch_targets`), names them (:func:`target_names`), splits network outputs into
(quantity, surface) cubes (:func:`split_targets`) and recovers (B_x, B_y, B_z) on one azimuth
branch (:func:`field_vector`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from helioforge.inversion.atmospheres import PatchAtmosphere
from helioforge.physics.sicon_targets import QUANTITIES, bq_bu_bv, bxbyz_from_bqbubv

__all__ = ["target_names", "interp_log_tau", "patch_targets", "split_targets", "field_vector"]


def target_names(target_log_tau: Iterable[float]) -> list[str]:
    """Names of the targets, quantity-major: ``"T@logtau=0"``, ``"T@logtau=-0.5"``, …

    Parameters
    ----------
    target_log_tau : iterable of float
        The log τ levels.

    Returns
    -------
    list of str
        7 × len(target_log_tau) names.
    """
    lts = list(target_log_tau)
    return [f"{q}@logtau={lt:g}" for q in QUANTITIES for lt in lts]


def interp_log_tau(x: torch.Tensor, log_tau: np.ndarray, at: Iterable[float]) -> torch.Tensor:
    """Linear interpolation of ``x`` on a decreasing log τ grid at the levels ``at``.

    Parameters
    ----------
    x : torch.Tensor
        (..., n) values on the grid.
    log_tau : np.ndarray
        (n,) decreasing log τ grid.
    at : iterable of float
        Levels to interpolate at.

    Returns
    -------
    torch.Tensor
        (..., len(at)).

    Raises
    ------
    ValueError
        For a level outside the grid.
    """
    lt = np.asarray(log_tau, dtype=np.float64)
    out = []
    for level in at:
        if not (lt.min() - 1e-9 <= level <= lt.max() + 1e-9):
            raise ValueError(f"log τ = {level} lies outside the grid {lt.max():g} … {lt.min():g}")
        j = int(np.clip(np.searchsorted(-lt, -level, side="right") - 1, 0, lt.size - 2))
        t = (lt[j] - level) / (lt[j] - lt[j + 1])
        out.append(x[..., j] * (1 - t) + x[..., j + 1] * t)
    return torch.stack(out, dim=-1)


def _block_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over r×r blocks of the first two axes of (H, W, ...)."""
    if r == 1:
        return x
    H, W = x.shape[:2]
    x = x[: H // r * r, : W // r * r]
    return x.reshape(H // r, r, W // r, r, *x.shape[2:]).mean(dim=(1, 3))


def patch_targets(patch: PatchAtmosphere, log_tau: np.ndarray, target_log_tau: Iterable[float], rebin: int = 1,
                  z_offset_km: float = 0.0) -> torch.Tensor:
    """The 49 target maps of one patch (paper §2, "physical conditions").

    T, v_z, z, P_gas and Bx, By, Bz are interpolated to the target log τ surfaces, averaged over
    ``rebin``×``rebin`` blocks (rebinned, not PSF-degraded), then log₁₀ P_gas and eq. 1 are
    applied to the averages.

    Parameters
    ----------
    patch : a :class:`~helioforge.inversion.atmospheres.PatchAtmosphere` (H, W, n).
    log_tau : its grid (n,).
    target_log_tau : the surfaces (7 in the paper).
    rebin : model pixels per output pixel along each axis.
    z_offset_km : subtracted from z (the mean quiet-Sun log τ = 0 height).

    Returns
    -------
    float32 tensor (7 × len(target_log_tau), H/rebin, W/rebin), quantity-major, units of
    :data:`~helioforge.physics.sicon_targets.TARGET_UNITS`.
    """
    lts = list(target_log_tau)
    a = patch.atmosphere
    get = lambda x: _block_mean(interp_log_tau(x.to(torch.float64), log_tau, lts), rebin)  # noqa: E731
    T = get(a.T)
    vz = get(a.vlos) * 1e-5
    z = get(patch.z_km) - z_offset_km
    logP = torch.log10(get(a.Pg))
    BQ, BU, BV = bq_bu_bv(get(patch.Bx), get(patch.By), get(patch.Bz))
    maps = torch.cat([T, vz, z, logP, BQ, BU, BV], dim=-1)  # (H, W, 49)
    return maps.permute(2, 0, 1).to(torch.float32).contiguous()


def split_targets(targets: np.ndarray | torch.Tensor, n_tau: int = 7) -> np.ndarray:
    """Split quantity-major target maps by quantity and level: (…, 49, ny, nx) → (…, 7, n_tau, ny, nx).

    Parameters
    ----------
    targets : np.ndarray or torch.Tensor
        (…, 7 n_tau, ny, nx) maps.
    n_tau : int, optional
        Number of log τ levels.

    Returns
    -------
    np.ndarray
        (…, 7, n_tau, ny, nx) (a tensor is moved to the CPU).

    Raises
    ------
    ValueError
        When axis −3 does not hold 7 × ``n_tau`` maps.
    """
    t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    if t.shape[-3] != len(QUANTITIES) * n_tau:
        raise ValueError(f"expected {len(QUANTITIES) * n_tau} target maps, got {t.shape[-3]}")
    return t.reshape(*t.shape[:-3], len(QUANTITIES), n_tau, *t.shape[-2:])


def field_vector(cube_data: np.ndarray, branch: int = 0) -> np.ndarray:
    """(B_x, B_y, B_z) [G] from B_Q, B_U, B_V of a (7, n_tau, ny, nx) cube on one azimuth branch.

    ``branch`` 0 takes the azimuth in (−90°, 90°] (B_x ≥ 0), 1 the solution rotated by 180°
    (paper §2: the two compatible solutions of eq. 1; SICON's evaluation takes branch 0).

    Returns
    -------
    np.ndarray (3, n_tau, ny, nx)
    """
    BQ, BU, BV = (torch.as_tensor(cube_data[QUANTITIES.index(q)]) for q in ("BQ", "BU", "BV"))
    return torch.stack(bxbyz_from_bqbubv(BQ, BU, BV, branch)).numpy()
