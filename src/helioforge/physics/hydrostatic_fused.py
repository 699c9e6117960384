"""Hydrostatic equilibrium of τ₅₀₀ stratifications, compiled (numba): one column per thread.

:func:`hydrostatic_equilibrium_fused` computes what
:func:`helioforge.physics.lte.hydrostatic_equilibrium` computes — P_e, P_g, ρ and z of a
temperature stratification on a log τ₅₀₀ grid — with the same scheme and the same physics,
but in scalar float64 code with the depth loop inside and the columns in parallel
(:func:`helioforge.physics.threads.run_in_slices`), instead of thousands of element-wise torch
operations on all columns at once (whose per-operation overhead is most of the torch
function's cost).

The scheme, as the torch function's:

1. top boundary: P_g = g τ_top / κ_m(T, P_g) by 25 fixed-point iterations
   P_g ← (P_g g τ / κ_m)^½ from P_g = 10 dyn cm⁻²;
2. d ln P_g / d log τ = ln10 τ g / (κ₅₀₀/ρ · P_g) (Gray 2005, ch. 9) by Heun's RK2 in ln P_g,
   ``substeps`` sub-steps per grid interval, log τ and T interpolated linearly inside it;
3. the equation of state of :mod:`helioforge.physics.eos` at every stage: Saha ratios of the
   16 elements (Gray 2005 Table D.2 partition functions), H₂ and H₂⁺ (Mihalas 1967 /
   Wittmann 1974 K_p fits) or the atomic gas (``molecules=False``), P_e by Newton steps in
   ln P_e from a warm start (as the ``initial=`` of
   :func:`~helioforge.physics.eos.electron_pressure`), with its bracketed bisection + Newton
   solve as the fallback. The warm start is the previous stage's ln P_e carried to the new
   (T, P_g) to first order, with ∂ln P_e/∂ln T and ∂ln P_e/∂ln P_g from the analytic partial
   derivatives of the residual at that stage (from the previous ratio P_e/P_g alone, as the
   torch warm start does, the solves took 3.0 residual evaluations on average instead of 2.3 at
   the same tolerance);
4. κ₅₀₀ of :func:`~helioforge.physics.lte.continuum_opacity` (Gray 2005 ch. 8: H⁻ bound-free
   and free-free, H bound-free and free-free, Rayleigh scattering on H and H₂, Thomson);
5. z by the trapezoidal rule in log τ, zero at log τ = 0 (linear interpolation).

Everything that depends on T alone (Saha ratios, dissociation constants, the opacities per
neutral H atom) is computed once per distinct temperature of the column (the sub-step
temperatures are shared by consecutive RK stages), and the first stage of each interval is the
final equation-of-state solve of its grid point.

Every table and constant comes from :mod:`helioforge.physics.eos` and
:mod:`helioforge.physics.lte` (the H⁻ bound-free cross-section is evaluated at 5000 Å with
:func:`helioforge.physics.lte._h_minus_bf_cross_section`). They are passed to the compiled
kernel as arguments, not read as globals, so numba's on-disk cache cannot keep stale copies
when those modules change. The fit coefficients written inline in
:func:`~helioforge.physics.lte.continuum_opacity` (H⁻ free-free, H bound-free, Rayleigh) are
repeated in :data:`_OPACITY_FITS` below; ``tests/inversion/test_hydrostatic_fused.py`` checks
the compiled equation of state and opacity against the torch functions at every grid point
(P_e and ρ to 10⁻¹² relative, κ₅₀₀ through z to 10⁻⁹ km), besides the end results.

The result is not differentiable (no autograd graph): use the torch function for gradients.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from helioforge.physics.eos import (
    _ABUND,
    _CHI,
    _LOG_INV_K_H2,
    _LOG_INV_K_H2PLUS,
    _LOGU,
    _MEAN_MASS_PER_H,
    _OTHER_ABUND,
    _THETA_GRID,
    EV,
    H_PLANCK,
    K_B,
    M_E,
    WARM_START_STEPS,
)
from helioforge.physics.lte import GRAVITY, SIGMA_THOMSON, _h_minus_bf_cross_section, depth_order
from helioforge.physics.threads import run_in_slices

__all__ = ["hydrostatic_equilibrium_fused", "TOP_ITERATIONS", "NEWTON_TOLERANCE"]

#: Fixed-point iterations of the top boundary P_g = g τ_top / κ_m (as the torch function).
TOP_ITERATIONS = 25
#: The warm-started Newton iteration for ln P_e stops after a step below this; the error left is
#: of the order of its square (quadratic convergence), i.e. rounding.
NEWTON_TOLERANCE = 1e-8
#: Bisection steps and Newton polish of the bracketed P_e solve (as
#: :func:`helioforge.physics.eos.electron_pressure`).
_BISECTIONS = 12
_POLISH = 4

#: The continuum wavelength of τ₅₀₀ [Å].
_WAV = 5000.0
_LN10 = math.log(10.0)

# --- equation of state (helioforge.physics.eos) ------------------------------------------------
_THETA0 = float(_THETA_GRID[0])  # 0.2
_DTHETA = float(_THETA_GRID[1] - _THETA_GRID[0])  # 0.2
_THETA_MAX = float(_THETA_GRID[-1])  # 2.0
#: log₁₀(u_II/u_I) on the θ grid, (n_el, n_θ).
_DLOGU = np.ascontiguousarray(_LOGU[:, 1, :] - _LOGU[:, 0, :], dtype=np.float64)
#: χ_ion / k [K].
_CHI_K = np.ascontiguousarray(_CHI * EV / K_B, dtype=np.float64)
#: Saha prefactor: Φ = const T^{5/2} (u_II/u_I) e^{−χ/kT} [dyn cm⁻²] (eos.saha_ratio).
_SAHA_CONST = 2.0 * (2.0 * math.pi * M_E * K_B / H_PLANCK ** 2) ** 1.5 * K_B
_ABUND_OTHER = np.ascontiguousarray(_ABUND[1:], dtype=np.float64)
_H2_FIT = np.asarray(_LOG_INV_K_H2, dtype=np.float64)
_H2PLUS_FIT = np.asarray(_LOG_INV_K_H2PLUS, dtype=np.float64)

# --- continuum opacity at 5000 Å (helioforge.physics.lte.continuum_opacity) -------------------
_CHI_LAMBDA = 1.2398e4 / _WAV  # photon energy [eV]
_I_H = 13.598
_N0 = next(n for n in range(1, 20) if _I_H / n ** 2 < _CHI_LAMBDA)  # lowest H level ionised at 5000 Å
#: The fits of continuum_opacity (retyped from it; the tests compare the two), in its notation:
#: H⁻ bound-free 4.158e-10 α(λ) P_e θ^{5/2}
#: 10^{0.754 θ} (Gray eq. 8.12); H⁻ free-free 10⁻²⁶ P_e 10^{f₀ + f₁ log λ + f₂ log² λ}, f_k
#: polynomials in log θ (Gray eq. 8.13); H bf+ff 1.0449e-26 λ³ Σ (Gray eq. 8.8); Rayleigh on
#: H (Dalgarno 1962) and on H₂ (Dalgarno & Williams 1962) as c₄/λ⁴ + c₆/λ⁶ + c₈/λ⁸.
_OPACITY_FITS = {
    "hm_bf": (4.158e-10, 0.754),
    "hm_ff": 1e-26,
    "hm_ff_f0": (-2.2763, -1.6850, 0.76661, -0.053346),
    "hm_ff_f1": (15.2827, -9.2846, 1.99381, -0.142631),
    "hm_ff_f2": (-197.789, 190.266, -67.9775, 10.6913, -0.625151),
    "h_bf_ff": 1.0449e-26,
    "rayleigh_h": (5.799e-13, 1.422e-6, 2.784),
    "rayleigh_h2": (8.14e-13, 1.28e-6, 1.61),
}


def _rayleigh(c: tuple[float, float, float]) -> float:
    return c[0] / _WAV ** 4 + c[1] / _WAV ** 6 + c[2] / _WAV ** 8


def _opacity_parameters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scalars, H⁻ free-free polynomial coefficients (3, 5) and H-level terms (2, 4) of κ₅₀₀."""
    lw = math.log10(_WAV)
    fits = _OPACITY_FITS
    scal = np.array([
        fits["hm_bf"][0] * _h_minus_bf_cross_section(_WAV),  # 0: H⁻ bf prefactor [cm² per dyn cm⁻²]
        fits["hm_bf"][1],  # 1: exponent of 10^{0.754 θ}
        _CHI_LAMBDA,  # 2: photon energy [eV]
        lw,  # 3: log₁₀ λ
        fits["h_bf_ff"] * _WAV ** 3,  # 4: H bf+ff prefactor
        _I_H,  # 5: H ionisation energy [eV]
        math.log10(math.e),  # 6
        _rayleigh(fits["rayleigh_h"]),  # 7: Rayleigh per H atom [cm²]
        _rayleigh(fits["rayleigh_h2"]),  # 8: Rayleigh per H₂ molecule [cm²]
        SIGMA_THOMSON,  # 9
        fits["hm_ff"],  # 10: H⁻ free-free prefactor
    ])
    ff = np.zeros((3, 5))
    for k, name in enumerate(("hm_ff_f0", "hm_ff_f1", "hm_ff_f2")):
        ff[k, :len(fits[name])] = fits[name]
    # Σ_{n=n0}^{n0+2} n⁻³ 10^{−θ I (1 − 1/n²)} and the n0+3 … ∞ and free-free integrals (weights, exponents)
    levels = np.array([[1.0 / n ** 3 for n in range(_N0, _N0 + 3)] + [0.0],
                       [1.0 - 1.0 / n ** 2 for n in range(_N0, _N0 + 4)]])
    return scal, ff, levels


_OPA_SCAL, _OPA_FF, _OPA_LEVELS = _opacity_parameters()
#: Scalars of the equation of state passed to the kernel.
_EOS_SCAL = np.array([_SAHA_CONST, K_B, _OTHER_ABUND, _MEAN_MASS_PER_H, _THETA0, _DTHETA, _THETA_MAX])

#: LLVM fast-math flags: reassociation, contraction (FMA), reciprocal and signed-zero freedom —
#: about 15 % faster, results change at the 10⁻¹⁵ level. Not ``nnan``/``ninf``: the solver
#: tests for NaN.
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
_JIT = dict(cache=True, error_model="numpy", fastmath=_FASTMATH)

# per-temperature scalars of the kernel (``tc``)
_TC_INV_H2, _TC_INV_H2P, _TC_OPA_PE, _TC_OPA_0, _TC_KT, _TC_G_H2, _TC_G_H2P, _TC_LNT = range(8)
# the column's last P_e solve, the warm start of the next (``st``): ln T, ln P_g, ln P_e,
# ∂ln P_e/∂ln T, ∂ln P_e/∂ln P_g
_ST_LNT, _ST_LNPG, _ST_LNPE, _ST_DT, _ST_DPG = range(5)


# --- compiled pieces --------------------------------------------------------------------------
@numba.njit(**_JIT)
def _t_coefficients(T, molecules, eos, dlogu, chi_k, h2_fit, h2p_fit, opa, ff, levels, phi, gphi, tc):
    """Everything that depends on T alone: the Saha ratios Φ_j (eos.saha_ratio) into ``phi`` and
    their logarithmic derivatives d ln Φ_j / d ln T into ``gphi``; 1/K_p of H₂ and H₂⁺, the
    continuum opacity per neutral H atom at 5000 Å (lte.continuum_opacity), kT and ln T into ``tc``."""
    theta = 5040.0 / T
    # partition functions: linear in log u against clamped θ (eos.partition_function)
    th = min(max(theta, eos[4]), eos[6])
    dth = -theta if eos[4] < theta < eos[6] else 0.0  # dθ_clamped / d ln T
    pos = (th - eos[4]) / eos[5]
    i0 = np.floor(pos)
    if not i0 >= 0.0:  # also NaN: keeps the index in the table
        i0 = 0.0
    if i0 > dlogu.shape[1] - 2.0:
        i0 = dlogu.shape[1] - 2.0
    frac = pos - i0
    i = int(i0)
    pref = eos[0] * T * T * math.sqrt(T)  # const T^{5/2}
    inv_t = 1.0 / T
    for j in range(dlogu.shape[0]):
        lo = dlogu[j, i]
        slope = dlogu[j, i + 1] - lo
        phi[j] = pref * math.exp(_LN10 * (lo + slope * frac) - chi_k[j] * inv_t)
        gphi[j] = 2.5 + chi_k[j] * inv_t + _LN10 * slope / eos[5] * dth
    if molecules:
        tc[_TC_INV_H2] = math.exp(_LN10 * (h2_fit[0] + th * (h2_fit[1] + th * (h2_fit[2] + th * h2_fit[3]))))
        tc[_TC_INV_H2P] = math.exp(_LN10 * (h2p_fit[0] + th * (h2p_fit[1] + th * (h2p_fit[2] + th * h2p_fit[3]))))
        tc[_TC_G_H2] = _LN10 * (h2_fit[1] + th * (2.0 * h2_fit[2] + th * 3.0 * h2_fit[3])) * dth
        tc[_TC_G_H2P] = _LN10 * (h2p_fit[1] + th * (2.0 * h2p_fit[2] + th * 3.0 * h2p_fit[3])) * dth
    else:
        tc[_TC_INV_H2] = 0.0
        tc[_TC_INV_H2P] = 0.0
        tc[_TC_G_H2] = 0.0
        tc[_TC_G_H2P] = 0.0
    # continuum opacity per neutral H atom (lte.continuum_opacity; θ not clamped there)
    lth = math.log10(theta)
    stim = 1.0 - math.exp(-_LN10 * opa[2] * theta)
    hm_bf = opa[0] * theta * theta * math.sqrt(theta) * math.exp(_LN10 * opa[1] * theta) * stim
    f0 = ff[0, 0] + lth * (ff[0, 1] + lth * (ff[0, 2] + lth * ff[0, 3]))
    f1 = ff[1, 0] + lth * (ff[1, 1] + lth * (ff[1, 2] + lth * ff[1, 3]))
    f2 = ff[2, 0] + lth * (ff[2, 1] + lth * (ff[2, 2] + lth * (ff[2, 3] + lth * ff[2, 4])))
    lw = opa[3]
    hm_ff = opa[10] * math.exp(_LN10 * (f0 + f1 * lw + f2 * lw * lw))
    ti = theta * opa[5]
    s = 0.0
    for k in range(3):
        s += levels[0, k] * math.exp(-_LN10 * ti * levels[1, k])
    # the n0+3 … ∞ bound-free integral plus the free-free term, loge/(2θI) [(10^{−θI(1−1/(n0+3)²)}
    # − 10^{−θI}) + 10^{−θI}], summed in closed form
    s += opa[6] / (2.0 * ti) * math.exp(-_LN10 * ti * levels[1, 3])
    tc[_TC_OPA_PE] = hm_bf + hm_ff  # H⁻ bound-free + free-free, per P_e
    tc[_TC_OPA_0] = opa[4] * s * stim + opa[7]  # H bound-free + free-free, Rayleigh
    tc[_TC_KT] = eos[1] * T
    tc[_TC_LNT] = math.log(T)


@numba.njit(inline="always", **_JIT)
def _residual(lnpe, pg, phi, gphi, tc, abund, a_other):
    """f(ln P_e) = ln P_e − ln[P(H⁺) + P(H₂⁺) + n_H kT Σ A_j x_j] (eos.electron_pressure), its
    derivative f' and its partial derivatives ∂f/∂ln T and ∂f/∂ln P_g (for the next warm start)."""
    P = math.exp(lnpe)
    inv_h2, inv_h2p = tc[_TC_INV_H2], tc[_TC_INV_H2P]
    y = phi[0] / P
    c = inv_h2 + y * inv_h2p
    D = max(pg - P, 1e-30 * pg)
    beta = (1.0 + y) * (1.0 + a_other)
    alpha = c * (1.0 + 2.0 * a_other)
    root = math.sqrt(beta * beta + 4.0 * alpha * D)
    p = 2.0 * D / (beta + root)
    p_nuc = (1.0 + y) * p + 2.0 * c * p * p
    s = 0.0
    ds = 0.0
    st = 0.0
    for j in range(abund.shape[0]):
        x = phi[j + 1] / (phi[j + 1] + P)
        w = abund[j] * x * (1.0 - x)
        s += abund[j] * x
        ds -= w
        st += w * gphi[j + 1]
    R = y * p * (1.0 + inv_h2p * p) + p_nuc * s
    f = lnpe - math.log(R)
    q = 2.0 * alpha * p + beta
    # d/d ln P_e (y, c, α, β ∝ 1/P_e parts; D' = −P_e), as eos.electron_pressure
    dy, dc = -y, -y * inv_h2p
    dbeta, dalpha = -y * (1.0 + a_other), -y * inv_h2p * (1.0 + 2.0 * a_other)
    dp = -(dalpha * p * p + dbeta * p + P) / q
    dnuc = dy * p + (1.0 + y) * dp + 2.0 * dc * p * p + 4.0 * c * p * dp
    dR = dy * p * (1.0 + inv_h2p * p) + y * dp * (1.0 + 2.0 * inv_h2p * p) + dnuc * s + p_nuc * ds
    # ∂/∂ ln T at fixed P_e, P_g
    yT = y * gphi[0]
    cT = inv_h2 * tc[_TC_G_H2] + (yT + y * tc[_TC_G_H2P]) * inv_h2p
    pT = -(cT * (1.0 + 2.0 * a_other) * p * p + yT * (1.0 + a_other) * p) / q
    nucT = yT * p + (1.0 + y) * pT + 2.0 * cT * p * p + 4.0 * c * p * pT
    RT = (yT * p * (1.0 + inv_h2p * p) + y * pT * (1.0 + 2.0 * inv_h2p * p) + y * p * p * inv_h2p * tc[_TC_G_H2P]
          + nucT * s + p_nuc * st)
    # ∂/∂ ln P_g at fixed P_e, T (D' = P_g)
    pG = pg / q
    RG = y * pG * (1.0 + 2.0 * inv_h2p * p) + ((1.0 + y) * pG + 4.0 * c * p * pG) * s
    return f, 1.0 - dR / R, -RT / R, -RG / R


@numba.njit(**_JIT)
def _solve_lnpe(lnpg, phi, gphi, tc, abund, a_other, st, max_warm, tol):
    """ln P_e at (T, P_g) (eos.electron_pressure).

    Newton steps from the first-order prediction of the column's last solve ``st`` (none when its
    ln P_e is NaN), stopping after a step below ``tol``; at most ``max_warm`` steps, then the
    bracketed bisection + Newton solve. Updates ``st``.
    """
    pg = math.exp(lnpg)
    cap = lnpg - math.log(2.0)
    lnt = tc[_TC_LNT]
    guess = st[_ST_LNPE] + st[_ST_DT] * (lnt - st[_ST_LNT]) + st[_ST_DPG] * (lnpg - st[_ST_LNPG])
    done = False
    lnpe = cap
    f = df = ft = fg = 0.0
    if guess == guess:  # not NaN
        lnpe = guess if guess < cap else cap
        for _ in range(max_warm):
            f, df, ft, fg = _residual(lnpe, pg, phi, gphi, tc, abund, a_other)
            step = f / df
            lnpe -= step
            if abs(step) < tol:
                done = True
                break
    if not done:
        lo = lnpg - 30.0
        hi = cap
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            if _residual(mid, pg, phi, gphi, tc, abund, a_other)[0] < 0.0:  # (the first solve of a column only)
                lo = mid
            else:
                hi = mid
        lnpe = 0.5 * (lo + hi)
        for _ in range(_POLISH):
            f, df, ft, fg = _residual(lnpe, pg, phi, gphi, tc, abund, a_other)
            lnpe -= f / df
    st[_ST_LNT] = lnt
    st[_ST_LNPG] = lnpg
    st[_ST_LNPE] = lnpe
    st[_ST_DT] = -ft / df
    st[_ST_DPG] = -fg / df
    return lnpe


@numba.njit(inline="always", **_JIT)
def _opacity_density(pg, lnpe, phi, tc, eos, opa):
    """(κ₅₀₀ [cm⁻¹], ρ [g cm⁻³], P_e) at (T, P_g, P_e) (eos.gas_state_from_pg, lte.continuum_opacity)."""
    pe = math.exp(lnpe)
    a_other = eos[2]
    inv_h2, inv_h2p, kt = tc[_TC_INV_H2], tc[_TC_INV_H2P], tc[_TC_KT]
    y = phi[0] / pe
    c = inv_h2 + y * inv_h2p
    D = max(pg - pe, 1e-30 * pg)
    beta = (1.0 + y) * (1.0 + a_other)
    alpha = c * (1.0 + 2.0 * a_other)
    p = 2.0 * D / (beta + math.sqrt(beta * beta + 4.0 * alpha * D))  # P(H)
    p_nuc = p * (1.0 + y) + 2.0 * c * p * p
    rho = p_nuc / kt * eos[3]
    kappa = (p * (tc[_TC_OPA_PE] * pe + tc[_TC_OPA_0]) + inv_h2 * p * p * opa[8] + pe * opa[9]) / kt
    return kappa, rho, pe


@numba.njit(inline="always", **_JIT)
def _stage(lt, lnpg, gravity, phi, gphi, tc, abund, eos, opa, st, max_warm, tol):
    """d ln P_g / d log τ = ln10 τ g / (κ_m P_g) at (log τ, T of ``tc``, ln P_g), with κ, ρ, P_e."""
    pg = math.exp(lnpg)
    lnpe = _solve_lnpe(lnpg, phi, gphi, tc, abund, eos[2], st, max_warm, tol)
    kappa, rho, pe = _opacity_density(pg, lnpe, phi, tc, eos, opa)
    return _LN10 * math.exp(_LN10 * lt) * gravity / (kappa / rho * pg), kappa, rho, pe, pg


@numba.njit(**_JIT)
def _column(lt, T, gravity, substeps, molecules, eos, dlogu, chi_k, h2_fit, h2p_fit, abund, opa, ff, levels,
            max_warm, tol, top_iterations, pe_out, pg_out, rho_out, z_out):
    """One column, top first (log τ increasing)."""
    n = T.shape[0]
    phi = np.empty(dlogu.shape[0])
    gphi = np.empty(dlogu.shape[0])
    tc = np.empty(8)
    st = np.full(5, np.nan)  # no warm start for the first solve
    kap = np.empty(n)
    # top boundary: P_g = g τ / κ_m by fixed-point iteration
    t_cached = T[0]
    _t_coefficients(t_cached, molecules, eos, dlogu, chi_k, h2_fit, h2p_fit, opa, ff, levels, phi, gphi, tc)
    tau0 = 10.0 ** lt[0]
    pg = 10.0
    for _ in range(top_iterations):
        lnpe = _solve_lnpe(math.log(pg), phi, gphi, tc, abund, eos[2], st, max_warm, tol)
        kappa, rho, _pe = _opacity_density(pg, lnpe, phi, tc, eos, opa)
        pg = math.sqrt(pg * gravity * tau0 / (kappa / rho))
    y = math.log(pg)
    for i in range(n):
        # the grid point: final P_e, ρ, κ, and the first RK stage of the interval below it
        if T[i] != t_cached:
            t_cached = T[i]
            _t_coefficients(t_cached, molecules, eos, dlogu, chi_k, h2_fit, h2p_fit, opa, ff, levels, phi, gphi, tc)
        k1_node, kappa, rho, pe, p_node = _stage(lt[i], y, gravity, phi, gphi, tc, abund, eos, opa, st, max_warm, tol)
        pe_out[i] = pe
        pg_out[i] = p_node
        rho_out[i] = rho
        kap[i] = kappa
        if i == n - 1:
            break
        lt0, lt1, t0, t1 = lt[i], lt[i + 1], T[i], T[i + 1]
        for k in range(substeps):
            fa = k / substeps
            fb = (k + 1) / substeps
            la = lt0 + (lt1 - lt0) * fa
            lb = lt0 + (lt1 - lt0) * fb
            ta = t0 + (t1 - t0) * fa
            tb = t0 + (t1 - t0) * fb
            h = lb - la
            if k == 0:
                k1 = k1_node  # la = lt0 and ta = t0 exactly: the grid point's solve
            else:
                if ta != t_cached:
                    t_cached = ta
                    _t_coefficients(ta, molecules, eos, dlogu, chi_k, h2_fit, h2p_fit, opa, ff, levels, phi, gphi, tc)
                k1, _k, _r, _p, _g = _stage(la, y, gravity, phi, gphi, tc, abund, eos, opa, st, max_warm, tol)
            if tb != t_cached:
                t_cached = tb
                _t_coefficients(tb, molecules, eos, dlogu, chi_k, h2_fit, h2p_fit, opa, ff, levels, phi, gphi, tc)
            k2, _k, _r, _p, _g = _stage(lb, y + h * k1, gravity, phi, gphi, tc, abund, eos, opa, st, max_warm, tol)
            y = y + 0.5 * h * (k1 + k2)
    # geometric height: trapezoid of dz/d log τ = −ln10 τ / κ, zero at log τ = 0
    depth = 0.0
    prev = _LN10 * math.exp(_LN10 * lt[0]) / kap[0]
    z_out[0] = 0.0
    for i in range(1, n):
        cur = _LN10 * math.exp(_LN10 * lt[i]) / kap[i]
        depth += 0.5 * (cur + prev) * (lt[i] - lt[i - 1])
        prev = cur
        z_out[i] = -depth * 1e-5
    idx = 0
    while idx < n and lt[idx] < 0.0:  # torch.searchsorted (left side) of 0 in the increasing grid
        idx += 1
    idx = min(max(idx, 1), n - 1)
    xa, xb = lt[idx - 1], lt[idx]
    w = min(max((0.0 - xa) / (xb - xa), 0.0), 1.0)
    z0 = z_out[idx - 1] + w * (z_out[idx] - z_out[idx - 1])
    for i in range(n):
        z_out[i] = z_out[i] - z0


@numba.njit(nogil=True, **_JIT)
def _hydrostatic_kernel(lt, T, gravity, substeps, molecules, eos, dlogu, chi_k, h2_fit, h2p_fit, abund, opa, ff,
                        levels, max_warm, tol, top_iterations, pe, pg, rho, z):
    """All columns (rows of ``T``; ``lt`` has one row per column or one for all), one after another."""
    ncol = T.shape[0]
    shared = lt.shape[0] == 1
    for j in range(ncol):
        r = 0 if shared else j
        _column(lt[r], T[j], gravity, substeps, molecules, eos, dlogu, chi_k, h2_fit, h2p_fit, abund, opa, ff,
                levels, max_warm, tol, top_iterations, pe[j], pg[j], rho[j], z[j])


def hydrostatic_equilibrium_fused(log_tau: torch.Tensor, T: torch.Tensor, gravity: float = GRAVITY,
                                  substeps: int = 2, molecules: bool = True,
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gas and electron pressure, density and geometric height of a τ₅₀₀ stratification (compiled).

    The numba-compiled equivalent of :func:`helioforge.physics.lte.hydrostatic_equilibrium`:
    integrates dP_g/d log τ = ln10 τ g / κ₅₀₀(T, P_e(P_g, T)) downwards from the top with a
    second-order Runge-Kutta (Heun) scheme in ln P_g, the top boundary P_g = g τ_top / κ_m
    solved by fixed-point iteration, then dz = −ln10 τ d log τ / (κ₅₀₀ ρ), column by column in
    float64 scalar code, the columns in parallel.

    Parameters
    ----------
    log_tau : tensor or array (n,) or (..., n)
        log τ₅₀₀, ordered either way (deepest first as in SIR files, or top first); broadcast
        against ``T``.
    T : tensor (..., n)
        Temperature [K].
    gravity : float
        Surface gravity [cm s⁻²].
    substeps : int
        RK2 sub-steps per grid interval.
    molecules : bool
        Equation of state with H₂ and H₂⁺ (default); False gives the atomic one.

    Returns
    -------
    Pe, Pg : tensor (..., n) [dyn cm⁻²]
    rho : tensor (..., n) [g cm⁻³]
    z : tensor (..., n) [km], height relative to log τ₅₀₀ = 0 (interpolated, clamped to the
        grid's ends), positive upwards.

    All four have the dtype and device of ``T``; the arithmetic is float64 on the CPU whatever
    the input dtype. They carry no gradient: the function is not differentiable (use
    :func:`~helioforge.physics.lte.hydrostatic_equilibrium` for gradients).

    Raises
    ------
    ValueError
        If the grid has fewer than two points or is not strictly monotonic (the same checks
        and messages as the torch function).

    Notes
    -----
    The scheme and physics of the torch function (Gray 2005, *The Observation and Analysis of
    Stellar Photospheres*, 3rd ed.: ch. 8 for the continuous opacity — H⁻ bound-free with the
    Wishart 1979 cross-section, H⁻ free-free of Bell & Berrington 1987, H bound-free and
    free-free, Rayleigh scattering on H (Dalgarno 1962) and H₂ (Dalgarno & Williams 1962),
    Thomson; ch. 9 for hydrostatic equilibrium; the Saha equation eq. 1.20 with the partition
    functions of Table D.2; H₂ and H₂⁺ with the K_p fits of Mihalas 1967 as used by Wittmann
    1974): 25 fixed-point iterations at the top, ``substeps`` Heun steps per interval with log τ
    and T linear inside it, trapezoidal z. P_e is found at every stage by Newton steps in
    ln P_e (at most :data:`~helioforge.physics.eos.WARM_START_STEPS`, stopping after a step
    below :data:`NEWTON_TOLERANCE`) from the previous stage's ln P_e carried to first order to
    the new T and P_g, falling back to the bracketed bisection + Newton solve of
    :func:`~helioforge.physics.eos.electron_pressure`, which the first solve of every column
    uses. The same root as the torch function's solves, so the results agree to rounding: in
    float64 ≲ 10⁻¹⁴ relative in P_e, P_g and ρ and ≲ 10⁻¹¹ km in z (either ``warm_start`` of
    the torch function; tested on the SIR model atmospheres and perturbed training-set
    columns, both depth orders, with and without molecules). Runs with as many threads as torch
    is set to use (:func:`torch.get_num_threads`, :func:`~helioforge.physics.threads.run_in_slices`); the first
    call in a fresh environment compiles (~5-10 s, then cached on disk).
    """
    T = torch.as_tensor(T)
    grid = torch.as_tensor(log_tau, dtype=T.dtype, device=T.device)
    log_tau, top_first = depth_order(grid, T)
    shape, n = T.shape, T.shape[-1]
    t_np = T.detach().to("cpu", torch.float64).reshape(-1, n).numpy()
    one_grid = grid.numel() == n  # one grid for all columns: passed once
    lt_np = (grid if one_grid else log_tau).detach().to("cpu", torch.float64).reshape(-1, n).numpy()
    if not top_first:
        t_np, lt_np = t_np[:, ::-1], lt_np[:, ::-1]
    t_np = np.ascontiguousarray(t_np, dtype=np.float64)
    lt_np = np.ascontiguousarray(lt_np, dtype=np.float64)
    ncol = t_np.shape[0]
    out = np.empty((4, ncol, n))
    if ncol:
        def run(sl: slice) -> None:
            _hydrostatic_kernel(lt_np if one_grid else lt_np[sl], t_np[sl], float(gravity), int(substeps),
                                bool(molecules), _EOS_SCAL, _DLOGU, _CHI_K, _H2_FIT, _H2PLUS_FIT, _ABUND_OTHER,
                                _OPA_SCAL, _OPA_FF, _OPA_LEVELS, int(WARM_START_STEPS), float(NEWTON_TOLERANCE),
                                int(TOP_ITERATIONS), out[0, sl], out[1, sl], out[2, sl], out[3, sl])

        run_in_slices(run, ncol)
    if not top_first:
        out = out[..., ::-1]
    res = torch.from_numpy(np.ascontiguousarray(out)).to(device=T.device, dtype=T.dtype)
    return tuple(r.reshape(shape) for r in res.unbind(0))
