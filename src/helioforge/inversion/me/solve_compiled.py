"""The compiled solver of the ME inversion (``method="analytic"``): the Python side.

Line constants on the synthesis grid (:func:`me_line_constants`), the compiled synthesis as a
function (:func:`me_frame_profiles_compiled`), the banded instrument matrices and work arrays
(:class:`_Compiled`), and the chunk-level calls of the kernels of :mod:`.kernels`: the
fast-start and grid-start rankings and Levenberg–Marquardt, pixel by pixel in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from helioforge.inversion.me.kernels import (_NB_ROWS_FIXED, _NB_ROWS_LINE, _nb_frame_batch, _nb_lm, _nb_rank,
                                             _nb_residual_batch)
from helioforge.inversion.me.model import _LOG, _LOG_CLAMP, _LOGIT_CLAMP, _SIGMOID, PARAM_BOUNDS, _Model, _to_internal, _to_physical
from helioforge.inversion.me.solve_torch import _LAM_MAX, _LAM_MIN
from helioforge.inversion.me.start import _grid_variants, _keep_best, _start_variants
from helioforge.physics.atomic import SpectralLine
from helioforge.physics.faddeeva import weideman_coefficients
from helioforge.physics.me import LORENTZ_SHIFT, default_eta0_ratios

__all__ = ["me_line_constants", "me_frame_profiles_compiled"]


# --------------------------------------------------------------------------- compiled synthesis


def me_line_constants(wavelength, lines: list[SpectralLine], eta0_ratios: list[float] | None = None,
                      n_terms: int = 16) -> tuple:
    """Per-grid constants of the compiled synthesis (:func:`me_frame_profiles_compiled`).

    Parameters
    ----------
    wavelength : array (nλ,)
        Air wavelengths [Å], increasing.
    lines : list of SpectralLine
        Lines sharing the atmosphere.
    eta0_ratios : list of float, optional
        As in :func:`~helioforge.physics.me.synth_me` (default :func:`~helioforge.physics.me.default_eta0_ratios`).
    n_terms : int
        Terms of Weideman's Faddeeva approximation.

    Returns
    -------
    tuple
        ``(off (n_lines, nλ) λ − λ₀ [Å], λ₀ (n_lines,), η₀ ratios, Lorentz shift per G
        λ₀² 4.67e-13 [Å/G], group pointers (3 n_lines + 1,) int64, component shifts (units of
        Δλ_B) and strengths, Σc and Σcs per group, Weideman L, Weideman coefficients)``, all
        float64 numpy arrays (pointers int64), in the argument order of the compiled kernels.
    """
    wav = np.ascontiguousarray(np.asarray(wavelength, dtype=np.float64))
    if eta0_ratios is None:
        eta0_ratios = default_eta0_ratios(lines)
    off = np.ascontiguousarray(np.stack([wav - ln.wavelength_air for ln in lines]))
    lam0 = np.array([ln.wavelength_air for ln in lines], dtype=np.float64)
    ptr, cs, cc, gc, gcs = [0], [], [], [], []
    for ln in lines:
        z = ln.zeeman
        for shifts, strengths in ((z.shift_b, z.strength_b), (z.shift_p, z.strength_p), (z.shift_r, z.strength_r)):
            s = [float(x) for x in shifts]
            c = [float(x) for x in strengths]
            cs += s
            cc += c
            ptr.append(len(cs))
            gc.append(sum(c))
            gcs.append(sum(ci * si for ci, si in zip(c, s)))
    L, coeffs = weideman_coefficients(int(n_terms))
    return (off, lam0, np.asarray(eta0_ratios, dtype=np.float64), LORENTZ_SHIFT * lam0 ** 2,
            np.asarray(ptr, dtype=np.int64), np.asarray(cs, dtype=np.float64), np.asarray(cc, dtype=np.float64),
            np.asarray(gc, dtype=np.float64), np.asarray(gcs, dtype=np.float64), float(L),
            np.ascontiguousarray(coeffs, dtype=np.float64))


def me_frame_profiles_compiled(p, wavelength, lines: list[SpectralLine], mu: float = 1.0,
                               eta0_ratios: list[float] | None = None, derivatives: bool = True, n_terms: int = 16,
                               deriv_stride: int = 1,
                               far_wing: float | None = 7.0) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`~helioforge.physics.me.me_frame_profiles` compiled with numba, one pixel at a time, in float64.

    Parameters
    ----------
    p : array or tensor (n, 9)
        Physical parameters in the order of :class:`~helioforge.physics.me.MEParameters` (azimuth, S0, S1 ignored).
    wavelength, lines, mu, eta0_ratios, derivatives, n_terms, deriv_stride, far_wing
        As in :func:`~helioforge.physics.me.me_frame_profiles`.

    Returns
    -------
    P : ndarray (n, 4, nλ) float64
        Unit-source Stokes vector at φ = 0.
    dP : ndarray (n, 6, 4, nλ_d) float64 or None
        ∂P/∂q for q in :data:`~helioforge.physics.me.FRAME_PARAMS` (γ per radian), at ``wavelength[::deriv_stride]``.

    Raises
    ------
    ValueError
        If ``p`` is not (n, 9) or ``mu`` is not in (0, 1].

    Notes
    -----
    Same equations as :func:`~helioforge.physics.me.me_frame_profiles` (del Toro Iniesta 2003, eq. 8.14; LL04 §9.8;
    w' = −2zw + 2i/√π), same Faddeeva approximations; the near-core window of Weideman's form
    is chosen per pixel and component (the torch version takes the union over the batch), so
    the two agree to the 2e-6 relative difference of Humlíček's and Weideman's forms.
    """
    pa = p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
    pa = np.ascontiguousarray(pa, dtype=np.float64)
    if pa.ndim != 2 or pa.shape[-1] != 9:
        raise ValueError(f"me_frame_profiles_compiled: p must be (n, 9) physical parameters, got shape {pa.shape}")
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    consts = me_line_constants(wavelength, lines, eta0_ratios, n_terms)
    nf = consts[0].shape[1]
    kd = max(int(deriv_stride), 1) if derivatives else 1
    nfd = len(range(0, nf, kd))
    P = np.empty((pa.shape[0], nf, 4))
    dP = np.empty((pa.shape[0], nfd, 24) if derivatives else (pa.shape[0], 1, 24))
    _nb_frame_batch(pa, float(mu), *consts, -1.0 if far_wing is None else float(far_wing), kd, bool(derivatives), P, dP)
    P = P.transpose(0, 2, 1).copy()
    return P, (dP.reshape(-1, nfd, 6, 4).transpose(0, 2, 3, 1).copy() if derivatives else None)


# --------------------------------------------------------------------------- compiled solver


def _transform_tables() -> tuple[np.ndarray, ...]:
    """(kind, lo, hi, u_min, u_max) per parameter for the compiled transforms: kind 0 free,
    1 scaled logistic on [lo, hi], 2 exp; u clamped to [u_min, u_max] (:func:`_clamp_internal`)."""
    kind = np.zeros(9, dtype=np.int64)
    lo, hi = np.zeros(9), np.zeros(9)
    umin, umax = np.full(9, -np.inf), np.full(9, np.inf)
    for name, k in _SIGMOID.items():
        kind[k] = 1
        lo[k], hi[k] = PARAM_BOUNDS[name]
        umin[k], umax[k] = -_LOGIT_CLAMP, _LOGIT_CLAMP
    for name, k in _LOG.items():
        kind[k] = 2
        umin[k], umax[k] = _LOG_CLAMP[name]
    return kind, lo, hi, umin, umax


_TRANSFORMS = _transform_tables()


def _nb_scratch(consts: tuple, kd: int, n_obs: int) -> tuple:
    """Per-call work arrays of :func:`_nb_residual` (argument order after ``Mjs``)."""
    nl, nf = consts[0].shape
    nfd = len(range(0, nf, kd))
    return (np.empty(9), np.empty(9), np.empty((nf, 4)), np.empty((nfd, 24)), np.empty((n_obs, 4)),
            np.empty((n_obs, 24)), np.empty((_NB_ROWS_FIXED + _NB_ROWS_LINE * nl, nf)))



def _band(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (n_out, n_fine) matrix as (values (n_out, width), first column (n_out,) int64) of its
    non-zero band (rows of the spectral-profile matrix are a ±70 mÅ window)."""
    nz = np.abs(m) > 0
    first = np.where(nz.any(1), nz.argmax(1), 0)
    last = np.where(nz.any(1), m.shape[1] - 1 - nz[:, ::-1].argmax(1), 0)
    width = int((last - first).max()) + 1
    start = np.minimum(first, m.shape[1] - width).astype(np.int64)
    vals = np.stack([m[i, s:s + width] for i, s in enumerate(start)])
    return np.ascontiguousarray(vals, dtype=np.float64), np.ascontiguousarray(start)


@dataclass
class _Compiled:
    """Constants of the compiled model: line data on the synthesis grid, banded profile matrices."""

    consts: tuple
    mu: float
    far_wing: float
    kd: int
    conv: bool
    Mv: np.ndarray
    Ms: np.ndarray
    Mjv: np.ndarray
    Mjs: np.ndarray
    n_obs: int

    def args(self) -> tuple:
        return (self.consts, _TRANSFORMS, self.mu, self.far_wing, self.kd, self.conv, self.Mv, self.Ms, self.Mjv,
                self.Mjs)

    def scratch(self) -> tuple:
        return _nb_scratch(self.consts, self.kd, self.n_obs)

    def residual_jacobian(self, U: np.ndarray, obs: np.ndarray, w: np.ndarray,
                          derivatives: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Weighted residuals r = (O − S) w (n, 4·nλ) and J = ∂S/∂u · w (n, 9, 4·nλ) at internal
        ``U`` (n, 9) for ``obs`` (n, 4, nλ), ``w`` (4, nλ) (as :meth:`_Model.analytic`)."""
        n, m = U.shape[0], 4 * self.n_obs
        R, JJ, chi = np.empty((n, m)), np.empty((n, 9, m)), np.empty(n)
        _nb_residual_batch(np.ascontiguousarray(U, dtype=np.float64), np.ascontiguousarray(obs, dtype=np.float64),
                           np.ascontiguousarray(w, dtype=np.float64), bool(derivatives), *self.args(), *self.scratch(),
                           R, JJ, chi)
        return R, (JJ if derivatives else None)

    def rank(self, U: np.ndarray, obs: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """χ² and least-squares azimuth [deg] of the candidates ``U`` (n, 9) internal."""
        chi, phi = np.empty(U.shape[0]), np.empty(U.shape[0])
        _nb_rank(np.ascontiguousarray(U, dtype=np.float64), obs, w, *self.args(), *self.scratch(), chi, phi)
        return chi, phi


def _compiled(model: _Model, n_terms: int, jacobian_stride: int, far_wing: float = 7.0) -> _Compiled:
    """The :class:`_Compiled` twin of ``model`` (same grid, lines, μ and spectral profile)."""
    consts = me_line_constants(model.wavelength.cpu().numpy(), model.lines, None, n_terms)
    n_obs = int(model.observed.size)
    if model.matrix is None:
        z, zi = np.zeros((1, 1)), np.zeros(1, dtype=np.int64)
        return _Compiled(consts, float(model.mu), float(far_wing), 1, False, z, zi, z, zi, n_obs)
    kd = max(int(jacobian_stride), 1)
    Mv, Ms = _band(model.matrix.double().cpu().numpy())
    Mj = model.matrix if kd == 1 else model._jacobian_matrix(kd)
    Mjv, Mjs = _band(Mj.double().cpu().numpy())
    return _Compiled(consts, float(model.mu), float(far_wing), kd, True, Mv, Ms, Mjv, Mjs, n_obs)


def _lm_compiled(obs: np.ndarray, w: np.ndarray, U0: np.ndarray, cm: _Compiled, max_iter: int, ftol: float,
                 lam0: float, xtol: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_nb_lm` on a chunk: ``obs`` (n, 4, nλ), ``w`` (4, nλ), ``U0`` (n, 9) internal start.
    Returns (u (n, 9), χ² (n,), iterations (n,), converged (n,))."""
    n = U0.shape[0]
    U = np.empty((n, 9))
    chi, it, cv = np.empty(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.bool_)
    floor = 1e-6 * float((w > 0).sum())
    _nb_lm(np.ascontiguousarray(U0, dtype=np.float64), obs, w, *cm.args(), *cm.scratch(), int(max_iter), float(ftol),
           float(lam0), float(xtol), floor, _LAM_MIN, _LAM_MAX, U, chi, it, cv)
    return U, chi, it, cv


def _fast_candidates_compiled(obs: np.ndarray, w: np.ndarray, p0: np.ndarray, guess: dict[str, np.ndarray],
                              cm: _Compiled, perp_factors: Sequence[float],
                              eta_width_factors: Sequence[tuple[float, float]] = ()) -> np.ndarray:
    """:func:`_fast_candidates` with the compiled synthesis: the closed-form start with B⊥ ×
    ``perp_factors``, then (η₀, Δλ_D) × ``eta_width_factors`` at the best B⊥, each ranked by one
    forward synthesis at its least-squares azimuth. Returns internal u (n, 9) float64."""
    best_u, best_chi = None, None

    def keep(p: np.ndarray) -> None:  # p is a fresh array; its azimuth is not read by the ranking
        nonlocal best_u, best_chi
        u = _to_internal(torch.as_tensor(p, dtype=torch.float64)).numpy()
        chi, phi = cm.rank(u, obs, w)
        u[:, 2] = phi
        best_u, best_chi = _keep_best(best_u, best_chi, u, chi)

    for p in _start_variants(p0, guess, perp_factors, eta_width_factors, cm.mu,
                             lambda: _to_physical(torch.as_tensor(best_u)).numpy()):
        keep(p)
    return best_u


def _grid_start_compiled(obs: np.ndarray, w: np.ndarray, guess: dict[str, np.ndarray], cm: _Compiled,
                         eta0_grid: Sequence[float], width_grid: Sequence[float], damping: float) -> np.ndarray:
    """:func:`_grid_start` with the compiled synthesis (same candidates, same ranking); internal u (n, 9)."""
    best_p, best_chi = None, None
    for p in _grid_variants(guess, obs.shape[0], eta0_grid, width_grid, damping, lambda: best_p):
        chi, phi = cm.rank(_to_internal(torch.as_tensor(p)).numpy(), obs, w)
        p[:, 2] = phi
        best_p, best_chi = _keep_best(best_p, best_chi, p, chi)
    return _to_internal(torch.as_tensor(best_p)).numpy()


def _warm_compiled(cm: _Compiled, n_obs: int) -> None:
    """Compile (or load from numba's cache) the kernels before a timed run: one dummy pixel."""
    obs = np.full((1, 4, n_obs), 0.5)
    obs[:, 1:] = 0.0
    w = np.ones((4, n_obs))
    U = _to_internal(torch.tensor([[100.0, 45.0, 0.0, 0.0, 5.0, 0.03, 0.3, 0.3, 0.7]], dtype=torch.float64)).numpy()
    cm.rank(U, obs, w)
    _lm_compiled(obs, w, U, cm, 1, 1e-4, 1e-2)

