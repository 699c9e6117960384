"""The torch solvers of the ME inversion: batched Levenberg–Marquardt over a chunk of pixels.

``method="analytic_torch"``: closed-form Jacobians (:meth:`_Model.analytic`), the fast start
ranked by one forward synthesis per candidate (:func:`_fast_candidates`), :func:`_lm_fast`.
``method="autograd"``: double-vjp Jacobians (:meth:`_Model.residual_jacobian`), the (η₀, Δλ_D)
grid start (:func:`_grid_start`), :func:`_lm`. Both share the damped step (:func:`_lm_trial`)
and the acceptance, damping and stopping rule (:func:`_lm_update`), which the compiled solver
(:mod:`.kernels`) repeats pixel by pixel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from helioforge.inversion.me.model import _clamp_internal, _Model, _to_internal, _to_physical
from helioforge.inversion.me.start import _grid_variants, _keep_best, _start_variants

#: Bounds of the LM damping λ (a pixel whose λ exceeds ``_LAM_MAX`` has converged).
_LAM_MAX = 1e8
_LAM_MIN = 1e-7


# --------------------------------------------------------------------------- starts ranked by synthesis


def _eval_rotated(obs: torch.Tensor, w: torch.Tensor, p: torch.Tensor, model: _Model) -> tuple[torch.Tensor, torch.Tensor]:
    """χ² with the best azimuth for physical parameters ``p`` (azimuth column ignored).

    Changing φ rotates the whole linear polarisation, Q + iU → e^{2iΔφ}(Q + iU), magneto-optical
    terms included, so one synthesis at φ = 0 gives the least-squares φ in closed form:
    2φ = arg Σ w² (Q_o + iU_o)(Q_0 − iU_0) (exact for σ_Q = σ_U; weights of Q used).
    Returns (χ² (n,), φ [deg] (n,)).
    """
    n = obs.shape[0]
    p0 = p.clone()
    p0[:, 2] = 0.0
    with torch.no_grad():
        syn = model(_to_internal(p0)).reshape(n, 4, -1).double()
    o = obs.reshape(n, 4, -1).double()
    ww = w.reshape(w.shape[0], 4, -1).double()
    wq2 = ww[:, 1] ** 2
    re = (wq2 * (o[:, 1] * syn[:, 1] + o[:, 2] * syn[:, 2])).sum(-1)
    im = (wq2 * (o[:, 2] * syn[:, 1] - o[:, 1] * syn[:, 2])).sum(-1)
    two_phi = torch.atan2(im, re)
    c, s = torch.cos(two_phi)[:, None], torch.sin(two_phi)[:, None]
    q = syn[:, 1] * c - syn[:, 2] * s
    u = syn[:, 1] * s + syn[:, 2] * c
    rot = torch.stack([syn[:, 0], q, u, syn[:, 3]], 1)
    chi = (((o - rot) * ww) ** 2).sum((-1, -2))
    return chi, torch.rad2deg(two_phi / 2.0)


def _grid_start(obs: torch.Tensor, w: torch.Tensor, guess: dict[str, np.ndarray], model: _Model,
                eta0_grid: Sequence[float], width_grid: Sequence[float], damping: float) -> torch.Tensor:
    """Start values: a small grid around the weak-field / COG guess, best χ² per pixel.

    Stage 1: (η₀, Δλ_D) grid with S₁ from the line depth (depth ≈ S₁ η₀ / ((1 + η₀) I_c)) and the
    field of ``guess``; stage 2: B_LOS × {1, 1.6} and B⊥ × {1, 1.6, 2.5} (the weak-field and COG
    estimates saturate in kG fields) at the best stage-1 values. The azimuth of every
    candidate is the closed-form optimum (:func:`_eval_rotated`).
    """
    dt, dev = model.dtype, model.device
    best_p, best_chi = None, None
    for p in _grid_variants(guess, obs.shape[0], eta0_grid, width_grid, damping,
                            lambda: best_p.double().cpu().numpy()):
        p = torch.as_tensor(p, dtype=dt, device=dev)
        chi, phi = _eval_rotated(obs, w, p, model)
        p[:, 2] = phi.to(dt)
        best_p, best_chi = _keep_best(best_p, best_chi, p, chi)
    return _to_internal(best_p)



# --------------------------------------------------------------------------- autograd method: LM


def _lm(obs: torch.Tensor, w: torch.Tensor, u: torch.Tensor, model: _Model, max_iter: int, ftol: float,
        lam0: float, xtol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Levenberg–Marquardt on a chunk. Returns (u, χ², iterations, converged)."""
    n = u.shape[0]
    dev = u.device
    u = u.clone()
    r, J = model.residual_jacobian(u, obs, w)
    chi2 = (r.double() ** 2).sum(-1)
    lam = torch.full((n,), lam0, dtype=torch.float64, device=dev)
    nu = torch.full((n,), 2.0, dtype=torch.float64, device=dev)
    iters = torch.zeros(n, dtype=torch.int64, device=dev)
    conv = ~torch.isfinite(chi2)  # pixels whose start is not finite are dropped (flagged below)
    bad_start = conv.clone()
    # residuals at round-off (every point within 10⁻³ σ): nothing left to fit
    floor = 1e-6 * float((w > 0).sum(-1).max())
    conv |= chi2 <= floor
    eye = torch.eye(9, dtype=torch.float64, device=dev)
    for _ in range(max_iter):
        idx = torch.nonzero(~conv).squeeze(-1)
        if idx.numel() == 0:
            break
        Ja = J[idx].double().transpose(1, 2)  # (k, 9, m)
        delta, g, lD, u_try = _lm_trial(Ja, r[idx].double(), lam[idx], u[idx], eye)
        r_try = model.residual(u_try, obs[idx], w[idx] if w.shape[0] > 1 else w)
        chi_try = (r_try.double() ** 2).sum(-1)
        acc, ai, _ = _lm_update(idx, delta, g, lD, chi_try, u_try, u, chi2, lam, nu, iters, conv, ftol, xtol, floor)
        need = ai[~conv[ai]]
        if need.numel():
            r_new, J_new = model.residual_jacobian(u[need], obs[need], w[need] if w.shape[0] > 1 else w)
            r[need] = r_new
            J[need] = J_new
    conv = conv & ~bad_start
    return u, chi2, iters, conv



# --------------------------------------------------------------------------- analytic method: start


def _fast_candidates(obs: torch.Tensor, w: torch.Tensor, p0: np.ndarray, guess: dict[str, np.ndarray], model: _Model,
                     n_terms: int, perp_factors: Sequence[float],
                     eta_width_factors: Sequence[tuple[float, float]] = ()) -> torch.Tensor:
    """Best χ² among the closed-form start with B⊥ scaled by ``perp_factors`` (the weak-field
    B⊥ saturates in kG fields); one forward synthesis at φ = 0 per factor, the azimuth of each
    candidate set to its least-squares value in closed form (as in :func:`_eval_rotated`; the
    weak-field azimuth turns by 90° when the σ components split). Returns internal u (n, 9)."""
    dt, dev = model.dtype, model.device
    n = obs.shape[0]
    best_u, best_chi = None, None
    o = obs.reshape(n, 4, -1).double()
    ww = w.reshape(w.shape[0], 4, -1).double()
    wq2 = ww[:, 1] ** 2
    ones = torch.ones_like(w)
    for p in _start_variants(p0, guess, perp_factors, eta_width_factors, model.mu,
                             lambda: _to_physical(best_u).double().cpu().numpy()):
        p[:, 2] = 0.0
        u = _to_internal(torch.as_tensor(p, dtype=dt, device=dev))
        r, _ = model.analytic(u, torch.zeros_like(obs), ones, derivatives=False, n_terms=n_terms)
        syn = (-r).reshape(n, 4, -1).double()
        re = (wq2 * (o[:, 1] * syn[:, 1] + o[:, 2] * syn[:, 2])).sum(-1)
        im = (wq2 * (o[:, 2] * syn[:, 1] - o[:, 1] * syn[:, 2])).sum(-1)
        two_phi = torch.atan2(im, re)
        c, sn = torch.cos(two_phi)[:, None], torch.sin(two_phi)[:, None]
        rot = torch.stack([syn[:, 0], syn[:, 1] * c - syn[:, 2] * sn, syn[:, 1] * sn + syn[:, 2] * c, syn[:, 3]], 1)
        chi = (((o - rot) * ww) ** 2).sum((-1, -2))
        u = u.clone()
        u[:, 2] = torch.rad2deg(two_phi / 2.0).to(dt)
        best_u, best_chi = _keep_best(best_u, best_chi, u, chi)
    return best_u


# --------------------------------------------------------------------------- analytic method: LM


def _lm_trial(Jt: torch.Tensor, r: torch.Tensor, lam: torch.Tensor, u: torch.Tensor, eye: torch.Tensor):
    """One damped Gauss–Newton trial of Levenberg–Marquardt for k pixels.

    ``Jt`` (k, 9, m) transposed Jacobians and ``r`` (k, m) residuals (float64), ``lam`` (k,)
    damping, ``u`` (k, 9) internal parameters. Solves (JᵀJ + λ·diag(JᵀJ)) δ = Jᵀr (Marquardt's
    scaling, the diagonal floored at 10⁻⁹ of its largest entry). Returns ``delta``, ``g`` = Jᵀr,
    ``lD`` = λ·diag and the clamped trial point ``u + δ``.
    """
    A = Jt @ Jt.transpose(1, 2)
    g = (Jt @ r.unsqueeze(-1)).squeeze(-1)
    dA = torch.diagonal(A, dim1=1, dim2=2)
    dA = dA.clamp_min(1e-9 * dA.amax(-1, keepdim=True).clamp_min(1e-30))
    lD = lam[:, None] * dA
    M = A + lD.unsqueeze(-1) * eye + 1e-12 * eye
    delta = torch.linalg.solve(M, g.unsqueeze(-1)).squeeze(-1)
    return delta, g, lD, _clamp_internal(u + delta.to(u.dtype))


def _lm_update(idx, delta, g, lD, chi_try, u_try, u, chi2, lam, nu, iters, conv, ftol: float, xtol: float,
               floor: float):
    """Accept or reject the trial of the pixels ``idx`` and update, in place, the parameters
    ``u``, χ² ``chi2``, the damping ``lam``/``nu`` (Nielsen's rule, Madsen, Nielsen & Tingleff
    2004, §3.2; the gain ratio uses the predicted decrease χ² − |r − Jδ|² = δ·(g + λDδ)),
    ``iters`` and the convergence flags ``conv`` (relative decrease < ``ftol``, a step below
    ``xtol`` at small damping, damping above its ceiling, or χ² at the round-off ``floor``).
    Returns the accepted mask (over ``idx``), the accepted and the rejected pixel indices."""
    old = chi2[idx]
    predicted = (delta * (g + lD * delta)).sum(-1).clamp_min(1e-300)
    rho = (old - chi_try) / predicted
    acc = torch.isfinite(chi_try) & (chi_try < old)
    iters[idx] += 1
    rel = (old - chi_try) / old.clamp_min(1e-300)
    ai, rj = idx[acc], idx[~acc]
    u[ai] = u_try[acc]
    chi2[ai] = chi_try[acc]
    factor = torch.clamp(1.0 - (2.0 * rho[acc] - 1.0) ** 3, min=1.0 / 3.0)
    lam[ai] = (lam[ai] * factor).clamp_min(_LAM_MIN)
    nu[ai] = 2.0
    lam[rj] = lam[rj] * nu[rj]
    nu[rj] = nu[rj] * 2.0
    small_step = (delta[acc].abs().amax(-1) < xtol) & (lam[ai] <= 1.0)
    conv[ai[(rel[acc] < ftol) | small_step]] = True
    conv[rj[(lam[rj] > _LAM_MAX) | (chi2[rj] <= floor)]] = True
    conv[ai[chi2[ai] <= floor]] = True
    return acc, ai, rj


def _lm_fast(obs: torch.Tensor, w: torch.Tensor, u: torch.Tensor, model: _Model, max_iter: int, ftol: float,
             lam0: float, n_terms: int, xtol: float = 1e-5, jacobian_stride: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Levenberg–Marquardt with closed-form Jacobians, one synthesis (profiles + Jacobian) per
    iteration and pixel; same damping rule and stopping tests as :func:`_lm`."""
    n = u.shape[0]
    dev = u.device
    u = u.clone()
    r, J = model.analytic(u, obs, w, True, n_terms, jacobian_stride)
    chi2 = (r.double() ** 2).sum(-1)
    lam = torch.full((n,), lam0, dtype=torch.float64, device=dev)
    nu = torch.full((n,), 2.0, dtype=torch.float64, device=dev)
    iters = torch.zeros(n, dtype=torch.int64, device=dev)
    conv = ~torch.isfinite(chi2)
    bad_start = conv.clone()
    floor = 1e-6 * float((w > 0).sum(-1).max())
    conv |= chi2 <= floor
    eye = torch.eye(9, dtype=torch.float64, device=dev)
    shared_w = w.shape[0] == 1
    for _ in range(max_iter):
        idx = torch.nonzero(~conv).squeeze(-1)
        if idx.numel() == 0:
            break
        delta, g, lD, u_try = _lm_trial(J[idx].double(), r[idx].double(), lam[idx], u[idx], eye)
        r_try, J_try = model.analytic(u_try, obs[idx], w if shared_w else w[idx], True, n_terms, jacobian_stride)
        chi_try = (r_try.double() ** 2).sum(-1)
        acc, ai, _ = _lm_update(idx, delta, g, lD, chi_try, u_try, u, chi2, lam, nu, iters, conv, ftol, xtol, floor)
        r[ai] = r_try[acc]
        J[ai] = J_try[acc]
    conv = conv & ~bad_start
    return u, chi2, iters, conv

