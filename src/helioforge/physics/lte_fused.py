"""The fused LTE Stokes kernel: Zeeman components, propagation matrix and DELO in one compiled pass.

:func:`helioforge.physics.lte.synth_lte` with ``kernel="fused"`` computes the per-depth
quantities (equation of state, continuum, line opacity, Doppler widths, damping: a few hundred
operations per depth point) with the torch code of :mod:`helioforge.physics.lte`, and hands
them to this module, which does everything per depth point *and* wavelength — 95 % of the
work — in one numba-compiled pass per atmosphere, parallel over atmospheres:

1. **Faddeeva function by region, on fixed wavelength windows.** For each depth, line and
   Zeeman component, the profile argument x = (λ − λ₀ − Δλ_v)/Δλ_D − s Δλ_B/Δλ_D increases with
   the grid index, so the points where |x| + a is large form the two ends of the grid. The
   kernel finds the window boundaries by binary search (no per-point mask) and evaluates
   - |x| ≥ :data:`FAR_REGION`: Humlíček's (1982) two-pole form
     w ≈ t/√π / (½ + t²), t = a − ix (his region I, there for |x| + a ≥ 15; the first
     convergents of the Laplace continued fraction);
   - :data:`MID_REGION` ≤ |x| < :data:`FAR_REGION`: Humlíček's four-pole form
     w ≈ t (1.410474 + t²/√π) / (¾ + t² (3 + t²)) (his region II);
   - the core: Weideman's (1994) rational approximation with N = 12 terms, as the torch kernel.
   The windows are set by |x| alone (Humlíček's by |x| + a), so the pole forms are used only
   where |z| ≥ |x| is large whatever the damping. In float32 each form is within 1.3 × 10⁻⁵ of
   ``scipy.special.wofz`` relative to |w| for 0 ≤ a ≤ 5 (tested). The windows are contiguous
   index ranges, so every loop is straight-line arithmetic the compiler vectorises.
2. **Propagation matrix.** The σ_b, π, σ_r sums of each line are accumulated per wavelength and
   combined into η_I, η_Q, η_U, η_V, ρ_Q, ρ_U, ρ_V (del Toro Iniesta 2003, eq. 7.x; the formulas of
   :func:`helioforge.physics.me.zeeman_propagation`), stored already divided by η_I as DELO
   uses them.
3. **DELO-linear** (Rees, Durrant & Murphy 1989) from the bottom up, with the closed-form 4×4
   inverse of :func:`helioforge.physics.lte.delo_linear`; only two depths of the propagation
   matrix are alive at a time, so an atmosphere's working set (a few × 7 × nλ floats) stays in
   the core's cache.

The arithmetic is float32 (the per-depth inputs are rounded to it); the result is returned in
the dtype of the atmosphere. The kernel is not differentiable: use ``kernel="torch"`` for
gradients. It runs on the CPU with as many threads as torch is set to use
(:func:`torch.get_num_threads`): slices of the batch on Python threads
(:func:`helioforge.physics.threads.run_in_slices`, which says why not numba's OpenMP). The
result does not depend on the number of threads (tested).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from helioforge.physics.faddeeva import weideman_coefficients
from helioforge.physics.me import LORENTZ_SHIFT
from helioforge.physics.threads import run_in_slices

__all__ = ["FAR_REGION", "MID_REGION", "fused_stokes", "faddeeva_regions"]

#: |x| from which Humlíček's two-pole form replaces the four-pole one (relative error
#: 1/(2|z|⁴) ≤ 1e-5 there).
FAR_REGION = 15.0
#: |x| from which Humlíček's four-pole form replaces Weideman's approximation.
MID_REGION = 6.0
_WEIDEMAN_TERMS = 12

_f32 = np.float32
_L_W, _A_W = weideman_coefficients(_WEIDEMAN_TERMS)
_L32 = _f32(_L_W)
_COEF = np.asarray(_A_W, dtype=np.float32)  # highest order first (Horner)
_NC = _COEF.size
_ISQPI = _f32(1.0 / math.sqrt(math.pi))
_TWO = _f32(2.0)
_ONE = _f32(1.0)
_HALF = _f32(0.5)
_ZERO = _f32(0.0)
_H1 = _f32(1.410474)
_H2 = _f32(0.75)
_H3 = _f32(3.0)
_G1, _G2, _G3, _G4, _G5 = _f32(0.5), _f32(-1.0 / 3.0), _f32(1.0 / 8.0), _f32(-1.0 / 30.0), _f32(1.0 / 144.0)
_DELTA_SERIES = _f32(0.1)
_F3, _F4, _F5 = _f32(1.0 / 6.0), _f32(-1.0 / 24.0), _f32(1.0 / 120.0)
_EXP_CLAMP = _f32(87.0)  # e^−87 ≈ 1.6e-38: deeper steps contribute nothing
_LOG2E = _f32(1.0 / math.log(2.0))
_LN2_HI = _f32(0.693359375)  # Cody-Waite split of ln 2
_LN2_LO = _f32(math.log(2.0) - 0.693359375)
_E2, _E3, _E4, _E5, _E6 = _f32(1 / 2), _f32(1 / 6), _f32(1 / 24), _f32(1 / 120), _f32(1 / 720)
_FM = {"contract", "arcp", "nsz", "afn"}


@numba.njit(fastmath=_FM, cache=True, inline="always", error_model="numpy")
def _w_far(x, y):
    """Humlíček region I: w ≈ t/√π / (½ + t²), t = y − ix. Returns (Re w, Im w)."""
    # t² = y² − x² − 2ixy; den = ½ + t²; num = t/√π
    dr = _HALF + y * y - x * x
    di = -_TWO * x * y
    nr = y * _ISQPI
    ni = -x * _ISQPI
    r = _ONE / (dr * dr + di * di)
    return (nr * dr + ni * di) * r, (ni * dr - nr * di) * r


@numba.njit(fastmath=_FM, cache=True, inline="always", error_model="numpy")
def _w_mid(x, y):
    """Humlíček region II: w ≈ t (1.410474 + t²/√π) / (¾ + t² (3 + t²)), t = y − ix."""
    ur = y * y - x * x
    ui = -_TWO * x * y
    # numerator t (H1 + u/√π)
    ar = _H1 + ur * _ISQPI
    ai = ui * _ISQPI
    nr = y * ar + x * ai
    ni = y * ai - x * ar
    # denominator ¾ + u (3 + u)
    br = _H3 + ur
    bi = ui
    dr = _H2 + ur * br - ui * bi
    di = ur * bi + ui * br
    r = _ONE / (dr * dr + di * di)
    return (nr * dr + ni * di) * r, (ni * dr - nr * di) * r


@numba.njit(fastmath=_FM, cache=True, inline="always", error_model="numpy")
def _w_core(x, y):
    """Weideman (1994) with N = 12: w = 2p(Z)/(L − iz)² + 1/(√π (L − iz)), Z = (L + iz)/(L − iz)."""
    lmr = _L32 + y  # L − iz, z = x + iy → (L + y) − ix
    lmi = -x
    r = _ONE / (lmr * lmr + lmi * lmi)
    ir = lmr * r  # 1/(L − iz)
    ii = -lmi * r
    lpr = _L32 - y  # L + iz = (L − y) + ix
    lpi = x
    zr = lpr * ir - lpi * ii
    zi = lpr * ii + lpi * ir
    pr = _COEF[0]
    pi = _ZERO
    for k in range(1, _NC):
        t = pr * zr - pi * zi + _COEF[k]
        pi = pr * zi + pi * zr
        pr = t
    i2r = ir * ir - ii * ii
    i2i = _TWO * ir * ii
    wr = _TWO * (pr * i2r - pi * i2i) + _ISQPI * ir
    wi = _TWO * (pr * i2i + pi * i2r) + _ISQPI * ii
    return wr, wi



def _accumulator(w_form):
    """A compiled loop adding ``wgt`` × w(x_j + iy) of one component into the σ/π sums of a
    window; ``w_form`` is one of the three forms (the loop is vectorised for each)."""

    @numba.njit(fastmath=_FM, inline="always", error_model="numpy")
    def accumulate(o, ap, al, sh, inv_dl, d, y, wgt):
        for j in range(o.size):
            hr, hi = w_form((o[j] - sh) * inv_dl - d, y)
            ap[j] += wgt * hr
            al[j] += wgt * hi

    return accumulate


_accumulate_far = _accumulator(_w_far)
_accumulate_mid = _accumulator(_w_mid)
_accumulate_core = _accumulator(_w_core)

@numba.njit(fastmath=_FM, cache=True, error_model="numpy")
def _faddeeva_regions_kernel(x, y, out_r, out_i, far, mid):
    for j in range(x.size):
        s = abs(x[j])
        if s >= far:
            out_r[j], out_i[j] = _w_far(x[j], y[j])
        elif s >= mid:
            out_r[j], out_i[j] = _w_mid(x[j], y[j])
        else:
            out_r[j], out_i[j] = _w_core(x[j], y[j])


def faddeeva_regions(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The kernel's Faddeeva function w(x + iy), region by region (for tests and checks).

    Parameters
    ----------
    x, y : array_like, broadcastable
        Real part (distance from line centre in Doppler widths) and imaginary part (damping
        a ≥ 0) of the argument.

    Returns
    -------
    complex64 array, broadcast shape
        w(x + iy) from the form the fused kernel uses at |x| + y (see the module docstring),
        in float32 arithmetic.

    Notes
    -----
    Humlíček (1982), JQSRT 27, 437, regions I and II; Weideman (1994), SIAM J. Numer. Anal.
    31, 1497 (N = 12).
    """
    xb, yb = np.broadcast_arrays(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32))
    xf, yf = np.ascontiguousarray(xb).ravel(), np.ascontiguousarray(yb).ravel()
    wr = np.empty_like(xf)
    wi = np.empty_like(xf)
    _faddeeva_regions_kernel(xf, yf, wr, wi, _f32(FAR_REGION), _f32(MID_REGION))
    return (wr + 1j * wi).astype(np.complex64).reshape(xb.shape)


@numba.njit(fastmath=_FM, cache=True, inline="always", error_model="numpy")
def _window(off, centre, half, inv_dl):
    """Index range [lo, hi) of the grid where |(off − centre)·inv_dl| < half (off increasing)."""
    lo = np.searchsorted(off, centre - half / inv_dl, side="right")
    hi = np.searchsorted(off, centre + half / inv_dl, side="left")
    if hi < lo:
        hi = lo
    return lo, hi


@numba.njit(fastmath=_FM, cache=True, error_model="numpy")
def _propagation(b, i, off, eta0, dlam, damp, shift, zpd, cos_t, sin2_t, cos2c, sin2c,
                 c_line, c_group, c_shift, c_strength, acc, K, far, mid):
    """K[:, :] ← η_I and the six other elements over η_I at depth i of atmosphere b."""
    nl, nw = off.shape
    for j in range(nw):
        K[0, j] = _ONE
        K[1, j] = _ZERO
        K[2, j] = _ZERO
        K[3, j] = _ZERO
        K[4, j] = _ZERO
        K[5, j] = _ZERO
        K[6, j] = _ZERO
    ct = cos_t[b, i]
    st2 = sin2_t[b, i]
    c2 = cos2c[b, i]
    s2 = sin2c[b, i]
    for line in range(nl):
        for g in range(6):
            for j in range(nw):
                acc[g, j] = _ZERO
        inv_dl = _ONE / dlam[b, line, i]
        y = damp[b, line, i]
        sh = shift[b, line, i]
        z = zpd[b, line, i]
        o = off[line]
        for c in range(c_line.size):
            if c_line[c] != line:
                continue
            d = c_shift[c] * z  # component shift [Doppler widths]
            centre = sh + d / inv_dl  # [Å from λ₀]
            wgt = c_strength[c]
            gp = c_group[c]
            lo_m, hi_m = _window(o, centre, far, inv_dl)
            lo_c, hi_c = _window(o, centre, mid, inv_dl)
            if lo_c < lo_m:
                lo_c = lo_m
            if hi_c > hi_m:
                hi_c = hi_m
            if hi_c < lo_c:
                hi_c = lo_c
            ap = acc[gp]
            al = acc[gp + 3]
            _accumulate_far(o[:lo_m], ap[:lo_m], al[:lo_m], sh, inv_dl, d, y, wgt)
            _accumulate_mid(o[lo_m:lo_c], ap[lo_m:lo_c], al[lo_m:lo_c], sh, inv_dl, d, y, wgt)
            _accumulate_core(o[lo_c:hi_c], ap[lo_c:hi_c], al[lo_c:hi_c], sh, inv_dl, d, y, wgt)
            _accumulate_mid(o[hi_c:hi_m], ap[hi_c:hi_m], al[hi_c:hi_m], sh, inv_dl, d, y, wgt)
            _accumulate_far(o[hi_m:], ap[hi_m:], al[hi_m:], sh, inv_dl, d, y, wgt)
        half = _HALF * eta0[b, line, i]
        for j in range(nw):
            pb = acc[0, j]
            pp = acc[1, j]
            pr = acc[2, j]
            qb = acc[3, j]
            qp = acc[4, j]
            qr = acc[5, j]
            lin_eta = half * (pp - _HALF * (pb + pr)) * st2
            lin_rho = half * (qp - _HALF * (qb + qr)) * st2
            K[0, j] += half * (pp * st2 + _HALF * (pb + pr) * (_ONE + ct * ct))
            K[1, j] += lin_eta * c2
            K[2, j] += lin_eta * s2
            K[3, j] += half * (pr - pb) * ct
            K[4, j] += lin_rho * c2
            K[5, j] += lin_rho * s2
            K[6, j] += half * (qr - qb) * ct
    for j in range(nw):
        r = _ONE / K[0, j]
        K[1, j] *= r
        K[2, j] *= r
        K[3, j] *= r
        K[4, j] *= r
        K[5, j] *= r
        K[6, j] *= r


@numba.njit(fastmath=_FM, cache=True, inline="always", error_model="numpy")
def _delo_scalar(delta):
    """E = e^−δ, F = 1 − e^−δ, G = (1 − (1+δ)e^−δ)/δ (series below δ = 0.1, as the torch kernel)."""
    E = math.exp(-delta)
    F = -math.expm1(-delta)
    if delta > _DELTA_SERIES:
        G = (F - delta * E) / delta
    else:
        G = delta * (_G1 + delta * (_G2 + delta * (_G3 + delta * (_G4 + delta * _G5))))
    return E, F, G


@numba.njit(fastmath=_FM, cache=True, error_model="numpy")
def _delo_coefficients(eta_d, eta_u, dt, ee, ff, gg, bits):
    """E, F, G of every wavelength (vectorised: e^−δ by Cody-Waite reduction and a polynomial).

    δ = ½ (η_I,d + η_I,u) Δτ/μ; e^−δ = 2^−n e^−r with n = round(δ/ln 2), |r| ≤ ln2/2 and a
    degree-6 Taylor polynomial (relative error < 2e-7, below float32 rounding); for δ ≤ 0.1
    F and G are their Taylor series (no cancellation).
    """
    nw = eta_d.size
    scale = bits.view(np.float32)
    for j in range(nw):
        delta = _HALF * (eta_d[j] + eta_u[j]) * dt
        x = min(delta, _EXP_CLAMP)
        n = np.floor(x * _LOG2E + _HALF)
        r = x - n * _LN2_HI - n * _LN2_LO  # e^−x = 2^−n e^−r
        r = -r
        p = _ONE + r * (_ONE + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * _E6)))))
        bits[j] = np.int32((np.int32(127) - np.int32(n)) << np.int32(23))
        ee[j] = p
        ff[j] = delta
    for j in range(nw):
        delta = ff[j]
        E = ee[j] * scale[j]
        Fs = delta * (_ONE + delta * (-_HALF + delta * (_F3 + delta * (_F4 + delta * _F5))))
        Gs = delta * (_G1 + delta * (_G2 + delta * (_G3 + delta * (_G4 + delta * _G5))))
        F = _ONE - E
        small = delta <= _DELTA_SERIES
        Fv = Fs if small else F
        Gv = Gs if small else (F - delta * E) / max(delta, _DELTA_SERIES)
        ee[j] = _ONE - Fs if small else E
        ff[j] = Fv
        gg[j] = Gv


@numba.njit(fastmath=_FM, cache=True, error_model="numpy")
def _delo_step(dq, du, dv, drq, dru, drv, uq, uu, uv, urq, uru, urv, ee, ff, gg, Su, Sd, s0a, s1a, s2a, s3a):
    """One DELO-linear step upwards for every wavelength (closed-form (1 + A)⁻¹, see lte.delo_linear)."""
    for j in range(ee.size):
        E = ee[j]
        G = gg[j]
        FG = ff[j] - G
        s0 = s0a[j]
        s1 = s1a[j]
        s2 = s2a[j]
        s3 = s3a[j]
        # (G K̃_d) s
        q = dq[j]
        u = du[j]
        v = dv[j]
        rq = drq[j]
        ru = dru[j]
        rv = drv[j]
        g0 = G * (q * s1 + u * s2 + v * s3)
        g1 = G * (q * s0 + rv * s2 - ru * s3)
        g2 = G * (u * s0 - rv * s1 + rq * s3)
        g3 = G * (v * s0 + ru * s1 - rq * s2)
        r0 = E * s0 - g0 + FG * Su + G * Sd
        r1 = E * s1 - g1 + FG * Su * uq[j] + G * Sd * q
        r2 = E * s2 - g2 + FG * Su * uu[j] + G * Sd * u
        r3 = E * s3 - g3 + FG * Su * uv[j] + G * Sd * v
        # A = FG K̃_u
        q = FG * uq[j]
        u = FG * uu[j]
        v = FG * uv[j]
        rq = FG * urq[j]
        ru = FG * uru[j]
        rv = FG * urv[j]
        a10 = q * r1 + u * r2 + v * r3
        a11 = q * r0 + rv * r2 - ru * r3
        a12 = u * r0 - rv * r1 + rq * r3
        a13 = v * r0 + ru * r1 - rq * r2
        a20 = q * a11 + u * a12 + v * a13
        a21 = q * a10 + rv * a12 - ru * a13
        a22 = u * a10 - rv * a11 + rq * a13
        a23 = v * a10 + ru * a11 - rq * a12
        a30 = q * a21 + u * a22 + v * a23
        a31 = q * a20 + rv * a22 - ru * a23
        a32 = u * a20 - rv * a21 + rq * a23
        a33 = v * a20 + ru * a21 - rq * a22
        p = q * q + u * u + v * v - rq * rq - ru * ru - rv * rv
        qq = q * rq + u * ru + v * rv
        inv = _ONE / (_ONE - p - qq * qq)
        omp = _ONE - p
        s0a[j] = (omp * (r0 - a10) + a20 - a30) * inv
        s1a[j] = (omp * (r1 - a11) + a21 - a31) * inv
        s2a[j] = (omp * (r2 - a12) + a22 - a32) * inv
        s3a[j] = (omp * (r3 - a13) + a23 - a33) * inv


@numba.njit(nogil=True, fastmath=_FM, cache=True, error_model="numpy")
def _fused_kernel(tau, S, eta0, dlam, damp, shift, zpd, cos_t, sin2_t, cos2c, sin2c, off,
                  c_line, c_group, c_shift, c_strength, mu, far, mid, out, ic_out):
    nb, n = tau.shape
    nw = off.shape[1]
    for b in range(nb):
        Kd = np.empty((7, nw), dtype=np.float32)
        Ku = np.empty((7, nw), dtype=np.float32)
        acc = np.empty((6, nw), dtype=np.float32)
        st = np.empty((4, nw), dtype=np.float32)
        ee = np.empty(nw, dtype=np.float32)
        ff = np.empty(nw, dtype=np.float32)
        gg = np.empty(nw, dtype=np.float32)
        bits = np.empty(nw, dtype=np.int32)
        i = n - 1
        _propagation(b, i, off, eta0, dlam, damp, shift, zpd, cos_t, sin2_t, cos2c, sin2c,
                     c_line, c_group, c_shift, c_strength, acc, Kd, far, mid)
        dtb = tau[b, i] - tau[b, i - 1]
        if dtb < _f32(1e-30):
            dtb = _f32(1e-30)
        dS = (S[b, i] - S[b, i - 1]) / dtb
        for j in range(nw):
            st[0, j] = S[b, i] + mu * dS / Kd[0, j]
            st[1, j] = _ZERO
            st[2, j] = _ZERO
            st[3, j] = _ZERO
        ic = S[b, i] + mu * dS
        for i in range(n - 2, -1, -1):
            _propagation(b, i, off, eta0, dlam, damp, shift, zpd, cos_t, sin2_t, cos2c, sin2c,
                         c_line, c_group, c_shift, c_strength, acc, Ku, far, mid)
            dt = (tau[b, i + 1] - tau[b, i]) / mu
            Sd = S[b, i + 1]
            Su = S[b, i]
            _delo_coefficients(Kd[0], Ku[0], dt, ee, ff, gg, bits)
            ec, fc, gc = _delo_scalar(dt)  # continuum: η_I = 1
            ic = ec * ic + (fc - gc) * Su + gc * Sd
            _delo_step(Kd[1], Kd[2], Kd[3], Kd[4], Kd[5], Kd[6], Ku[1], Ku[2], Ku[3], Ku[4], Ku[5], Ku[6],
                       ee, ff, gg, Su, Sd, st[0], st[1], st[2], st[3])
            Kd, Ku = Ku, Kd
        for k in range(4):
            for j in range(nw):
                out[b, k, j] = st[k, j]
        ic_out[b] = ic


def _components(lines) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flattened Zeeman components: line index, group (0 σ_b, 1 π, 2 σ_r), shift [Lorentz units], strength."""
    c_line, c_group, c_shift, c_strength = [], [], [], []
    for li, line in enumerate(lines):
        z = line.zeeman
        for g, (shifts, strengths) in enumerate(((z.shift_b, z.strength_b), (z.shift_p, z.strength_p),
                                                 (z.shift_r, z.strength_r))):
            for s, w in zip(shifts, strengths):
                c_line.append(li)
                c_group.append(g)
                c_shift.append(float(s))
                c_strength.append(float(w))
    return (np.asarray(c_line, dtype=np.int64), np.asarray(c_group, dtype=np.int64),
            np.asarray(c_shift, dtype=np.float32), np.asarray(c_strength, dtype=np.float32))


def fused_stokes(q, wavelength: torch.Tensor, lines, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stokes vector and continuum intensity from the per-depth quantities of the LTE synthesis.

    Parameters
    ----------
    q : helioforge.physics.lte._DepthQuantities
        Per-depth inputs, top first, tensors (B, n) (per line: lists of (B, n)), from the shared
        preamble of :func:`helioforge.physics.lte.synth_lte`.
    wavelength : tensor (nλ,)
        Air wavelengths [Å], increasing (float64 recommended: λ − λ₀ is formed in double
        precision before it is rounded to float32).
    lines : list of SpectralLine
        The lines, in the order of ``q``'s per-line lists.
    mu : float
        Cosine of the heliocentric angle, (0, 1].

    Returns
    -------
    stokes : tensor (B, 4, nλ)
        I, Q, U, V [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹], in the dtype of ``q.tau_c``.
    Ic : tensor (B,)
        Continuum intensity (line opacity off), same units and dtype.

    Raises
    ------
    ValueError
        If the wavelengths do not increase strictly or a tensor is not on the CPU.

    Notes
    -----
    The algorithm and its sources are in the module docstring; the physics is that of
    :func:`helioforge.physics.lte.synth_lte` (``kernel="torch"``), to < 10⁻⁴ I_c RMS (tested on
    the 32 Lightweaver validation atmospheres).
    """
    if q.tau_c.device.type != "cpu":
        raise ValueError(f"the fused kernel runs on the CPU; the atmosphere is on {q.tau_c.device} (use kernel='torch')")
    wav = np.asarray(torch.as_tensor(wavelength, dtype=torch.float64).cpu().numpy(), dtype=np.float64)
    if wav.size < 1 or (wav.size > 1 and not np.all(np.diff(wav) > 0)):
        raise ValueError("the fused kernel needs strictly increasing wavelengths")
    f32 = lambda t: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)  # noqa: E731
    stack = lambda ts: np.ascontiguousarray(np.stack([f32(t) for t in ts], axis=1))  # noqa: E731  (B, nl, n)
    dlam = stack(q.dlam_D)
    zpd = np.ascontiguousarray(np.stack([f32(LORENTZ_SHIFT * line.wavelength_air ** 2 * q.B) for line in lines], axis=1)
                               / dlam)
    off = np.ascontiguousarray(np.stack([wav - line.wavelength_air for line in lines]).astype(np.float32))
    inc, azi = q.inc_r.detach().cpu().double(), q.azi_r.detach().cpu().double()
    nb = q.tau_c.shape[0]
    out = np.empty((nb, 4, wav.size), dtype=np.float32)
    ic = np.empty(nb, dtype=np.float32)
    per_atmosphere = (f32(q.tau_c), f32(q.S), stack(q.eta0), dlam, stack(q.damping), stack(q.shift), zpd,
                      f32(torch.cos(inc)), f32(torch.sin(inc) ** 2), f32(torch.cos(2 * azi)), f32(torch.sin(2 * azi)))
    shared = (off, *_components(lines), _f32(mu), _f32(FAR_REGION), _f32(MID_REGION))

    def run(sl: slice) -> None:
        _fused_kernel(*(a[sl] for a in per_atmosphere), *shared, out[sl], ic[sl])

    run_in_slices(run, nb)
    dtype = q.tau_c.dtype
    return torch.from_numpy(out).to(dtype), torch.from_numpy(ic).to(dtype)
