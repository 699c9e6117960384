"""Every numba-compiled kernel of the ME inversion, in one module.

The compiled synthesis (:func:`_nb_frame`: the Unno-Rachkovsky profiles and their closed-form
derivatives of :func:`helioforge.physics.me.me_frame_profiles`, one pixel at a time in float64)
and the compiled solver built on it (:func:`_nb_residual`, :func:`_nb_rank`, :func:`_nb_lm`).
numba's on-disk cache (``cache=True``) checks only the source file that defines a kernel, so
keeping the kernels that call each other in one file keeps the cache consistent with the code.
The Python side (constants, work arrays, chunks) is :mod:`.solve_compiled`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from helioforge.physics.me import C_KMS

# --------------------------------------------------------------------------- synthesis
#
# The same Unno-Rachkovsky profiles and closed-form derivatives as me_frame_profiles, one pixel
# at a time in float64 machine code: every (pixels × wavelengths) temporary of the torch version
# becomes a row of a per-pixel work array (≈ 140 kB for the Fe I pair on the SP grid × 3) that
# stays in the L2 cache, and the per-wavelength loops are written so that LLVM vectorises them
# (contiguous 1-D rows, range(n) loops, error_model="numpy" so that a division carries no zero
# check). The derivatives are summed per wavelength in registers instead of as (6, 5, n, nλ) planes.

_NB_FASTMATH = {"contract", "arcp", "reassoc", "nsz"}  # no nnan/ninf: the LM tests isfinite()
_SQRT_PI_INV = 1.0 / math.sqrt(math.pi)
_TWO_SQRT_PI_INV = 2.0 / math.sqrt(math.pi)
#: Rows of the per-pixel work array of :func:`_nb_frame`: 5 propagation elements, 7 Faddeeva
#: scratch rows, then per line 18 rows (W, WS, WSS of the b, p, r groups, real and imaginary).
_NB_ROWS_FIXED = 12
_NB_ROWS_LINE = 18


@numba.njit(cache=True, fastmath=_NB_FASTMATH, nogil=True, error_model="numpy")
def _nb_humlicek(xs, a, wr, wi):  # pragma: no cover - compiled
    """Humlíček (1982) region II, w ≈ t (1.410474 + 0.5641896 t²)/(0.75 + t²(3 + t²)), t = a − ix."""
    a2 = a * a
    for j in range(xs.shape[0]):
        x = xs[j]
        ur = a2 - x * x
        ui = -2.0 * a * x
        n1r = 1.410474 + 0.5641896 * ur
        n1i = 0.5641896 * ui
        nr = a * n1r + x * n1i
        ni = a * n1i - x * n1r
        d1r = 3.0 + ur
        dr = ur * d1r - ui * ui + 0.75
        di = ur * ui + ui * d1r
        inv = 1.0 / (dr * dr + di * di)
        wr[j] = (nr * dr + ni * di) * inv
        wi[j] = (ni * dr - nr * di) * inv


@numba.njit(cache=True, fastmath=_NB_FASTMATH, nogil=True, error_model="numpy")
def _nb_weideman(xs, a, wL, wcoef, wr, wi, t0, t1, t2, t3):  # pragma: no cover - compiled
    """Weideman (1994), as :func:`_weideman`: w = (2 p(Z)/(L − iz) + 1/√π)/(L − iz), z = x + ia.

    The Horner recursion runs as one pass over the wavelengths per coefficient (vectorised).
    """
    La = wL + a
    Lm = wL - a
    c0 = wcoef[0]
    for j in range(xs.shape[0]):
        x = xs[j]
        q = 1.0 / (La * La + x * x)
        ir = La * q  # 1/(L − iz) = ((L + a) + ix)/((L + a)² + x²)
        ii = x * q
        t0[j] = ir
        t1[j] = ii
        t2[j] = Lm * ir - x * ii  # Z = ((L − a) + ix)/(L − iz)
        t3[j] = Lm * ii + x * ir
        wr[j] = c0
        wi[j] = 0.0
    for k in range(1, wcoef.shape[0]):
        c = wcoef[k]
        for j in range(xs.shape[0]):
            pr = wr[j]
            pi = wi[j]
            zr = t2[j]
            zi = t3[j]
            wr[j] = pr * zr - pi * zi + c
            wi[j] = pr * zi + pi * zr
    for j in range(xs.shape[0]):
        ir = t0[j]
        ii = t1[j]
        pr = wr[j]
        pi = wi[j]
        qr = 2.0 * (pr * ir - pi * ii) + _SQRT_PI_INV
        qi = 2.0 * (pr * ii + pi * ir)
        wr[j] = qr * ir - qi * ii
        wi[j] = qr * ii + qi * ir


@numba.njit(cache=True, fastmath=_NB_FASTMATH, nogil=True, error_model="numpy")
def _nb_axpy2(c, xr, xi, yr, yi):  # pragma: no cover - compiled
    for j in range(xr.shape[0]):
        yr[j] += c * xr[j]
        yi[j] += c * xi[j]


@numba.njit(cache=True, fastmath=_NB_FASTMATH, nogil=True, error_model="numpy")
def _nb_faddeeva_row(off, centre, inv_d, a, far_wing, wL, wcoef, wr, wi, xs, t0, t1, t2, t3):  # pragma: no cover
    """w(x + ia) at x = (off − centre)/Δλ_D for one Zeeman component, into (wr, wi).

    Weideman's form on the contiguous wavelength range where |x| + a < ``far_wing`` (``off``
    increases), Humlíček's region II outside it (as :func:`_faddeeva_split`); ``far_wing`` ≤ 0:
    Weideman everywhere.
    """
    nf = off.shape[0]
    for j in range(nf):
        xs[j] = (off[j] - centre) * inv_d
    lo = 0
    hi = nf
    if far_wing > 0.0:
        half = max(far_wing - a, 0.0) / inv_d
        lo = max(np.searchsorted(off, centre - half) - 1, 0)
        hi = max(min(np.searchsorted(off, centre + half) + 1, nf), lo)
    if lo > 0:
        _nb_humlicek(xs[:lo], a, wr[:lo], wi[:lo])
    if hi < nf:
        _nb_humlicek(xs[hi:], a, wr[hi:], wi[hi:])
    if hi > lo:
        _nb_weideman(xs[lo:hi], a, wL, wcoef, wr[lo:hi], wi[lo:hi], t0[lo:hi], t1[lo:hi], t2[lo:hi], t3[lo:hi])


@numba.njit(cache=True, fastmath=_NB_FASTMATH, nogil=True, error_model="numpy", inline="always")
def _nb_ur_terms(EI, Elr, Eli, EVr, EVi, j):  # pragma: no cover - compiled
    """Unno-Rachkovsky terms at wavelength j: η_I, η_Q, ρ_Q, η_V, ρ_V (Q, U rotated into Q),
    Π = η_Q ρ_Q + η_V ρ_V and the squares η_I², ρ_Q², ρ_V² (Landi Degl'Innocenti & Landolfi 2004, eq. 9.110)."""
    eI = 1.0 + EI[j]
    eQ = Elr[j]
    rQ = Eli[j]
    eV = EVr[j]
    rV = EVi[j]
    return eI, eQ, rQ, eV, rV, eQ * rQ + eV * rV, eI * eI, rQ * rQ, rV * rV


@numba.njit(cache=True, fastmath=_NB_FASTMATH, nogil=True, error_model="numpy")
def _nb_frame(B, gam_deg, vlos, eta0, dld, a, mu, off, lam0, ratio, lorentz, grp_ptr, comp_s, comp_c, grp_c, grp_cs,
              wL, wcoef, far_wing, kd, derivs, P, dP, wk):  # pragma: no cover - compiled
    """One pixel of :func:`me_frame_profiles`: P (nλ, 4) and, if ``derivs``, dP (nλ_d, 24).

    ``off`` (n_lines, nλ) λ − λ₀ [Å]; ``grp_ptr`` (3 n_lines + 1) delimits the components
    (``comp_s`` shifts in units of Δλ_B, ``comp_c`` strengths) of the b, p, r groups of each line,
    ``grp_c``/``grp_cs`` their Σc and Σcs; ``wk`` (12 + 18 n_lines, nλ) is scratch. ``dP[j, 4q + x]``
    = ∂P_x/∂q at the ``kd``-th wavelengths, q in :data:`FRAME_PARAMS` order (B per G, γ per radian,
    v per km/s, η₀, Δλ_D per Å, a); wavelength-major so that the spectral profile is applied with
    contiguous 24-wide rows.
    """
    nl = off.shape[0]
    nf = off.shape[1]
    nfd = (nf + kd - 1) // kd
    gam = gam_deg * (math.pi / 180.0)
    sg = math.sin(gam)
    cg = math.cos(gam)
    sin2 = sg * sg
    one_cos2 = 1.0 + cg * cg
    inv_d = 1.0 / dld
    EI = wk[0]
    Elr = wk[1]
    Eli = wk[2]
    EVr = wk[3]
    EVi = wk[4]
    wr = wk[5]
    wi = wk[6]
    xs = wk[7]
    for j in range(nf):
        EI[j] = 0.0
        Elr[j] = 0.0
        Eli[j] = 0.0
        EVr[j] = 0.0
        EVi[j] = 0.0
    nrow = 18 if derivs else 6
    for l in range(nl):
        base = _NB_ROWS_FIXED + _NB_ROWS_LINE * l
        for r in range(base, base + nrow):
            row = wk[r]
            for j in range(nf):
                row[j] = 0.0
        shift = lam0[l] * vlos / C_KMS
        lB = lorentz[l] * B
        for g in range(3):
            gi = 3 * l + g
            for k in range(grp_ptr[gi], grp_ptr[gi + 1]):
                s = comp_s[k]
                c = comp_c[k]
                _nb_faddeeva_row(off[l], shift + s * lB, inv_d, a, far_wing, wL, wcoef, wr, wi, xs,
                                 wk[8], wk[9], wk[10], wk[11])
                _nb_axpy2(c, wr, wi, wk[base + 2 * g], wk[base + 2 * g + 1])
                if derivs:
                    _nb_axpy2(c * s, wr, wi, wk[base + 6 + 2 * g], wk[base + 7 + 2 * g])
                    _nb_axpy2(c * s * s, wr, wi, wk[base + 12 + 2 * g], wk[base + 13 + 2 * g])
        half = eta0 * ratio[l] * 0.5
        fs = half * sin2
        fc = half * cg
        Wbr = wk[base]
        Wbi = wk[base + 1]
        Wpr = wk[base + 2]
        Wpi = wk[base + 3]
        Wrr = wk[base + 4]
        Wri = wk[base + 5]
        for j in range(nf):
            mr = 0.5 * (Wbr[j] + Wrr[j])
            mi = 0.5 * (Wbi[j] + Wri[j])
            EI[j] += (Wpr[j] * sin2 + mr * one_cos2) * half
            Elr[j] += (Wpr[j] - mr) * fs
            Eli[j] += (Wpi[j] - mi) * fs
            EVr[j] += (Wrr[j] - Wbr[j]) * fc
            EVi[j] += (Wri[j] - Wbi[j]) * fc
    for j in range(nf):
        eI, eQ, rQ, eV, rV, pi_, eI2, rQ2, rV2 = _nb_ur_terms(EI, Elr, Eli, EVr, EVi, j)
        beta = mu / (eI2 * (eI2 - eQ * eQ - eV * eV + rQ2 + rV2) - pi_ * pi_)
        P[j, 0] = beta * eI * (eI2 + rQ2 + rV2)
        P[j, 1] = -beta * (eI2 * eQ + rQ * pi_)
        P[j, 2] = -beta * eI * (eQ * rV - eV * rQ)
        P[j, 3] = -beta * (eI2 * eV + rV * pi_)
    if not derivs:
        return
    s2c = 2.0 * sg * cg
    ie = 1.0 / eta0
    hoc = 0.5 * one_cos2
    for jd in range(nfd):
        j = jd * kd
        # ∂(η_I, η_Q, ρ_Q, η_V, ρ_V)/∂q for q = B, γ, v, (η₀ below), Δλ_D, a: summed in registers
        b0 = b1 = b2 = b3 = b4 = 0.0
        c0 = c1 = c2 = c3 = c4 = 0.0
        v0 = v1 = v2 = v3 = v4 = 0.0
        w0 = w1 = w2 = w3 = w4 = 0.0
        a0 = a1 = a2 = a3 = a4 = 0.0
        for l in range(nl):
            base = _NB_ROWS_FIXED + _NB_ROWS_LINE * l
            half = eta0 * ratio[l] * 0.5
            zeta = lorentz[l] * B * inv_d
            v = (off[l, j] - lam0[l] * vlos / C_KMS) * inv_d
            # Σc w' = −2[(v + ia) W − ζ WS] + 2i/√π Σc (D1), Σcs w' likewise (DS),
            # Σc Re(z) w' = v D1 − ζ DS (DX), for the b, p, r groups
            d1br, d1bi, dsbr, dsbi, dxbr, dxbi = _nb_group_derivs(wk, base, 0, j, v, a, zeta, grp_c[3 * l],
                                                                  grp_cs[3 * l])
            d1pr, d1pi, dspr, dspi, dxpr, dxpi = _nb_group_derivs(wk, base, 1, j, v, a, zeta, grp_c[3 * l + 1],
                                                                  grp_cs[3 * l + 1])
            d1rr, d1ri, dsrr, dsri, dxrr, dxri = _nb_group_derivs(wk, base, 2, j, v, a, zeta, grp_c[3 * l + 2],
                                                                  grp_cs[3 * l + 2])
            # the groups enter η_I with sin²γ (p), (1 + cos²γ)/2 (b, r); the linear elements with
            # sin²γ (p), −sin²γ/2 (b, r); the circular ones with −cos γ (b), +cos γ (r)
            fB = half * (-lorentz[l] * inv_d)  # ∂z/∂B = −s λ₀² const/Δλ_D
            fv = half * (-(lam0[l] / C_KMS) * inv_d)  # ∂z/∂v = −λ₀/(c Δλ_D)
            fD = -half * inv_d  # ∂z/∂Δλ_D = −Re z/Δλ_D
            fs = 0.5 * sin2
            t = (dspr * sin2 + (dsbr + dsrr) * hoc) * fB
            b0 += t
            b1 += (dspr * sin2 - (dsbr + dsrr) * fs) * fB
            b2 += (dspi * sin2 - (dsbi + dsri) * fs) * fB
            b3 += (dsrr - dsbr) * cg * fB
            b4 += (dsri - dsbi) * cg * fB
            v0 += (d1pr * sin2 + (d1br + d1rr) * hoc) * fv
            v1 += (d1pr * sin2 - (d1br + d1rr) * fs) * fv
            v2 += (d1pi * sin2 - (d1bi + d1ri) * fs) * fv
            v3 += (d1rr - d1br) * cg * fv
            v4 += (d1ri - d1bi) * cg * fv
            w0 += (dxpr * sin2 + (dxbr + dxrr) * hoc) * fD
            w1 += (dxpr * sin2 - (dxbr + dxrr) * fs) * fD
            w2 += (dxpi * sin2 - (dxbi + dxri) * fs) * fD
            w3 += (dxrr - dxbr) * cg * fD
            w4 += (dxri - dxbi) * cg * fD
            # a: ∂z/∂a = i, so i·D1 (real part −Im D1, imaginary part Re D1)
            a0 -= (d1pi * sin2 + (d1bi + d1ri) * hoc) * half
            a1 -= (d1pi * sin2 - (d1bi + d1ri) * fs) * half
            a2 += (d1pr * sin2 - (d1br + d1rr) * fs) * half
            a3 -= (d1ri - d1bi) * cg * half
            a4 += (d1rr - d1br) * cg * half
            # γ (per radian): η_I and the linear elements through sin²γ, the circular ones through cos γ
            mr = 0.5 * (wk[base, j] + wk[base + 4, j])
            mi = 0.5 * (wk[base + 1, j] + wk[base + 5, j])
            lgr = (wk[base + 2, j] - mr) * (half * s2c)
            c0 += lgr
            c1 += lgr
            c2 += (wk[base + 3, j] - mi) * (half * s2c)
            c3 += (wk[base + 4, j] - wk[base, j]) * (-half * sg)
            c4 += (wk[base + 5, j] - wk[base + 1, j]) * (-half * sg)
        eI, eQ, rQ, eV, rV, pi_, eI2, rQ2, rV2 = _nb_ur_terms(EI, Elr, Eli, EVr, EVi, j)
        A = eI2 - eQ * eQ - eV * eV + rQ2 + rV2
        delta = eI2 * A - pi_ * pi_
        beta = mu / delta
        idl = 1.0 / delta
        dD0 = 2.0 * eI * (A + eI2)
        dD1 = -2.0 * (eI2 * eQ + pi_ * rQ)
        dD2 = 2.0 * (eI2 * rQ - pi_ * eQ)
        dD3 = -2.0 * (eI2 * eV + pi_ * rV)
        dD4 = 2.0 * (eI2 * rV - pi_ * eV)
        # G[x][e] = ∂P_x/∂e = ±β ∂N_x/∂e − P_x ∂Δ/∂e / Δ
        tI = P[j, 0] * idl
        gI0 = beta * (3.0 * eI2 + rQ2 + rV2) - tI * dD0
        gI1 = -tI * dD1
        gI2 = beta * 2.0 * eI * rQ - tI * dD2
        gI3 = -tI * dD3
        gI4 = beta * 2.0 * eI * rV - tI * dD4
        tQ = P[j, 1] * idl
        gQ0 = -beta * 2.0 * eI * eQ - tQ * dD0
        gQ1 = -beta * (eI2 + rQ2) - tQ * dD1
        gQ2 = -beta * (pi_ + rQ * eQ) - tQ * dD2
        gQ3 = -beta * rQ * rV - tQ * dD3
        gQ4 = -beta * rQ * eV - tQ * dD4
        tU = P[j, 2] * idl
        gU0 = -beta * (eQ * rV - eV * rQ) - tU * dD0
        gU1 = -beta * eI * rV - tU * dD1
        gU2 = beta * eI * eV - tU * dD2
        gU3 = beta * eI * rQ - tU * dD3
        gU4 = -beta * eI * eQ - tU * dD4
        tV = P[j, 3] * idl
        gV0 = -beta * 2.0 * eI * eV - tV * dD0
        gV1 = -beta * rV * rQ - tV * dD1
        gV2 = -beta * rV * eQ - tV * dD2
        gV3 = -beta * (eI2 + rV2) - tV * dD3
        gV4 = -beta * (pi_ + rV * eV) - tV * dD4
        out = dP[jd]
        _nb_dp4(out, 0, gI0, gI1, gI2, gI3, gI4, gQ0, gQ1, gQ2, gQ3, gQ4, gU0, gU1, gU2, gU3, gU4, gV0, gV1, gV2, gV3,
                gV4, b0, b1, b2, b3, b4)
        _nb_dp4(out, 4, gI0, gI1, gI2, gI3, gI4, gQ0, gQ1, gQ2, gQ3, gQ4, gU0, gU1, gU2, gU3, gU4, gV0, gV1, gV2, gV3,
                gV4, c0, c1, c2, c3, c4)
        _nb_dp4(out, 8, gI0, gI1, gI2, gI3, gI4, gQ0, gQ1, gQ2, gQ3, gQ4, gU0, gU1, gU2, gU3, gU4, gV0, gV1, gV2, gV3,
                gV4, v0, v1, v2, v3, v4)
        # η₀: every line element is proportional to η₀
        _nb_dp4(out, 12, gI0, gI1, gI2, gI3, gI4, gQ0, gQ1, gQ2, gQ3, gQ4, gU0, gU1, gU2, gU3, gU4, gV0, gV1, gV2, gV3,
                gV4, EI[j] * ie, eQ * ie, rQ * ie, eV * ie, rV * ie)
        _nb_dp4(out, 16, gI0, gI1, gI2, gI3, gI4, gQ0, gQ1, gQ2, gQ3, gQ4, gU0, gU1, gU2, gU3, gU4, gV0, gV1, gV2, gV3,
                gV4, w0, w1, w2, w3, w4)
        _nb_dp4(out, 20, gI0, gI1, gI2, gI3, gI4, gQ0, gQ1, gQ2, gQ3, gQ4, gU0, gU1, gU2, gU3, gU4, gV0, gV1, gV2, gV3,
                gV4, a0, a1, a2, a3, a4)


@numba.njit(cache=True, fastmath=_NB_FASTMATH, nogil=True, error_model="numpy", inline="always")
def _nb_group_derivs(wk, base, g, j, v, a, zeta, C, CS):  # pragma: no cover - compiled
    """(Re, Im) of Σc w', Σcs w' and Σc Re(z) w' of group ``g`` at wavelength ``j`` (w' = −2zw + 2i/√π)."""
    Wr = wk[base + 2 * g, j]
    Wi = wk[base + 2 * g + 1, j]
    WSr = wk[base + 6 + 2 * g, j]
    WSi = wk[base + 7 + 2 * g, j]
    WSSr = wk[base + 12 + 2 * g, j]
    WSSi = wk[base + 13 + 2 * g, j]
    d1r = -2.0 * (v * Wr - a * Wi - zeta * WSr)
    d1i = -2.0 * (v * Wi + a * Wr - zeta * WSi) + _TWO_SQRT_PI_INV * C
    dsr = -2.0 * (v * WSr - a * WSi - zeta * WSSr)
    dsi = -2.0 * (v * WSi + a * WSr - zeta * WSSi) + _TWO_SQRT_PI_INV * CS
    return d1r, d1i, dsr, dsi, v * d1r - zeta * dsr, v * d1i - zeta * dsi


@numba.njit(cache=True, fastmath=_NB_FASTMATH, nogil=True, error_model="numpy", inline="always")
def _nb_dp4(out, k, gI0, gI1, gI2, gI3, gI4, gQ0, gQ1, gQ2, gQ3, gQ4, gU0, gU1, gU2, gU3, gU4, gV0, gV1, gV2, gV3, gV4,
            e0, e1, e2, e3, e4):  # pragma: no cover - compiled
    """out[k:k + 4] = ∂(I, Q, U, V)/∂q from the element derivatives e (chain rule through G)."""
    out[k] = gI0 * e0 + gI1 * e1 + gI2 * e2 + gI3 * e3 + gI4 * e4
    out[k + 1] = gQ0 * e0 + gQ1 * e1 + gQ2 * e2 + gQ3 * e3 + gQ4 * e4
    out[k + 2] = gU0 * e0 + gU1 * e1 + gU2 * e2 + gU3 * e3 + gU4 * e4
    out[k + 3] = gV0 * e0 + gV1 * e1 + gV2 * e2 + gV3 * e3 + gV4 * e4


@numba.njit(cache=True, nogil=True)
def _nb_frame_batch(p, mu, off, lam0, ratio, lorentz, grp_ptr, comp_s, comp_c, grp_c, grp_cs, wL, wcoef, far_wing, kd,
                    derivs, P, dP):  # pragma: no cover - compiled
    """:func:`_nb_frame` for every row of ``p`` (n, 9) (physical parameters)."""
    nf = off.shape[1]
    wk = np.empty((_NB_ROWS_FIXED + _NB_ROWS_LINE * off.shape[0], nf))
    for i in range(p.shape[0]):
        _nb_frame(p[i, 0], p[i, 1], p[i, 3], p[i, 4], p[i, 5], p[i, 6], mu, off, lam0, ratio, lorentz, grp_ptr, comp_s,
                  comp_c, grp_c, grp_cs, wL, wcoef, far_wing, kd, derivs, P[i], dP[i], wk)



# --------------------------------------------------------------------------- solver
#
# method="analytic": the same model, start, damping rule and stopping tests as the torch solver
# (solve_torch._fast_candidates, _lm_fast; kept as method="analytic_torch"), one pixel at a time in
# float64 machine code (_nb_frame above for the synthesis). Each pixel's working set (≈ 200 kB)
# stays in the L2 cache; the LM keeps only JᵀJ and Jᵀr of the current point, and a converged
# pixel costs nothing more. Pixels are independent, so chunks run in parallel Python threads (the
# kernels release the GIL) and the result does not depend on the chunking or on the number of
# threads.


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FASTMATH)
def _nb_physical(u, kind, lo, hi, p, dpdu):  # pragma: no cover - compiled
    """:func:`_to_physical` and :func:`_dp_du` of one pixel (9,)."""
    for k in range(9):
        if kind[k] == 1:
            sg = 1.0 / (1.0 + math.exp(-u[k]))
            p[k] = lo[k] + (hi[k] - lo[k]) * sg
            dpdu[k] = (hi[k] - lo[k]) * sg * (1.0 - sg)
        elif kind[k] == 2:
            p[k] = math.exp(u[k])
            dpdu[k] = p[k]
        else:
            p[k] = u[k]
            dpdu[k] = 1.0


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FASTMATH)
def _nb_band4(Mv, Ms, X, out):  # pragma: no cover - compiled
    """out[i, :] = Σ_t Mv[i, t] X[Ms[i] + t, :]: a banded spectral-profile matrix (n_out, width),
    first columns ``Ms``, applied to the wavelength-major Stokes profiles X (n_fine, 4).
    Two partial sums per column (even and odd t) halve the dependency chains."""
    nt = Mv.shape[1]
    for i in range(Mv.shape[0]):
        s0 = Ms[i]
        a0 = a1 = a2 = a3 = 0.0
        b0 = b1 = b2 = b3 = 0.0
        t = 0
        while t + 1 < nt:
            m = Mv[i, t]
            n = Mv[i, t + 1]
            a0 += m * X[s0 + t, 0]
            a1 += m * X[s0 + t, 1]
            a2 += m * X[s0 + t, 2]
            a3 += m * X[s0 + t, 3]
            b0 += n * X[s0 + t + 1, 0]
            b1 += n * X[s0 + t + 1, 1]
            b2 += n * X[s0 + t + 1, 2]
            b3 += n * X[s0 + t + 1, 3]
            t += 2
        if t < nt:
            m = Mv[i, t]
            a0 += m * X[s0 + t, 0]
            a1 += m * X[s0 + t, 1]
            a2 += m * X[s0 + t, 2]
            a3 += m * X[s0 + t, 3]
        out[i, 0] = a0 + b0
        out[i, 1] = a1 + b1
        out[i, 2] = a2 + b2
        out[i, 3] = a3 + b3


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FASTMATH)
def _nb_band24(Mv, Ms, X, out):  # pragma: no cover - compiled
    """:func:`_nb_band4` for the derivative rows X (n_fine, 24) (6 parameters × 4 Stokes), eight
    columns at a time in local accumulators (kept in registers)."""
    nt = Mv.shape[1]
    for i in range(Mv.shape[0]):
        s0 = Ms[i]
        for c in range(0, 24, 8):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
            for t in range(nt):
                m = Mv[i, t]
                src = X[s0 + t]
                a0 += m * src[c]
                a1 += m * src[c + 1]
                a2 += m * src[c + 2]
                a3 += m * src[c + 3]
                a4 += m * src[c + 4]
                a5 += m * src[c + 5]
                a6 += m * src[c + 6]
                a7 += m * src[c + 7]
            o = out[i]
            o[c] = a0
            o[c + 1] = a1
            o[c + 2] = a2
            o[c + 3] = a3
            o[c + 4] = a4
            o[c + 5] = a5
            o[c + 6] = a6
            o[c + 7] = a7


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FASTMATH)
def _nb_synth(u, derivs, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP, Pc, dPc,
              wk):  # pragma: no cover - compiled
    """Frame profiles P (nλ, 4) and derivatives dP (nλ_d, 24) (:func:`_nb_frame`)
    of one pixel from internal ``u``, convolved with the instrument matrices into ``Pc`` (n_obs, 4)
    and ``dPc`` (n_obs, 24) when ``conv`` (else copied)."""
    (off, lam0, ratio, lorentz, grp_ptr, comp_s, comp_c, grp_c, grp_cs, wL, wcoef) = consts
    kind, lo, hi, _, _ = tables
    _nb_physical(u, kind, lo, hi, p, dpdu)
    _nb_frame(p[0], p[1], p[3], p[4], p[5], p[6], mu, off, lam0, ratio, lorentz, grp_ptr, comp_s, comp_c, grp_c,
              grp_cs, wL, wcoef, far_wing, kd, derivs, P, dP, wk)
    if conv:
        _nb_band4(Mv, Ms, P, Pc)
        if derivs:
            _nb_band24(Mjv, Mjs, dP, dPc)
    else:
        Pc[:, :] = P
        if derivs:
            dPc[:, :] = dP


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FASTMATH)
def _nb_residual(u, obs, w, derivs, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP, Pc, dPc,
                 wk, r, J, A, g):  # pragma: no cover - compiled
    """χ² of one pixel at internal ``u``; with ``derivs`` also A = JᵀJ (9, 9) and g = Jᵀr (9,)
    for the weighted residuals r = (O − S) w and J = ∂S/∂u · w (as :meth:`_Model.analytic`)."""
    _nb_synth(u, derivs, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP, Pc, dPc, wk)
    no = obs.shape[1]
    deg = math.pi / 180.0
    c2 = math.cos(2.0 * deg * p[2])
    s2 = math.sin(2.0 * deg * p[2])
    S0 = p[7]
    S1 = p[8]
    chi = 0.0
    f_phi = 2.0 * deg * S1 * dpdu[2]  # ∂(Q, U)/∂φ = 2 S1 (−U_φ, Q_φ), per degree
    for i in range(no):
        PI = Pc[i, 0]
        RQ = Pc[i, 1] * c2 - Pc[i, 2] * s2
        RU = Pc[i, 1] * s2 + Pc[i, 2] * c2
        PV = Pc[i, 3]
        w0 = w[0, i]
        w1 = w[1, i]
        w2 = w[2, i]
        w3 = w[3, i]
        r0 = (obs[0, i] - (S0 + S1 * PI)) * w0
        r1 = (obs[1, i] - S1 * RQ) * w1
        r2 = (obs[2, i] - S1 * RU) * w2
        r3 = (obs[3, i] - S1 * PV) * w3
        r[i] = r0
        r[no + i] = r1
        r[2 * no + i] = r2
        r[3 * no + i] = r3
        chi += r0 * r0 + r1 * r1 + r2 * r2 + r3 * r3
        if derivs:
            d = dPc[i]
            for k, q in ((0, 0), (1, 1), (3, 2), (4, 3), (5, 4), (6, 5)):  # frame order: B, γ, v, η₀, Δλ_D, a
                f = S1 * dpdu[k] * (deg if k == 1 else 1.0)
                dQ = d[4 * q + 1]
                dU = d[4 * q + 2]
                J[k, i] = f * d[4 * q] * w0
                J[k, no + i] = f * (dQ * c2 - dU * s2) * w1
                J[k, 2 * no + i] = f * (dQ * s2 + dU * c2) * w2
                J[k, 3 * no + i] = f * d[4 * q + 3] * w3
            J[2, i] = 0.0
            J[2, no + i] = -f_phi * RU * w1
            J[2, 2 * no + i] = f_phi * RQ * w2
            J[2, 3 * no + i] = 0.0
            J[7, i] = dpdu[7] * w0
            J[7, no + i] = 0.0
            J[7, 2 * no + i] = 0.0
            J[7, 3 * no + i] = 0.0
            J[8, i] = dpdu[8] * PI * w0
            J[8, no + i] = dpdu[8] * RQ * w1
            J[8, 2 * no + i] = dpdu[8] * RU * w2
            J[8, 3 * no + i] = dpdu[8] * PV * w3
    if derivs:
        m = 4 * no
        for k in range(9):
            Jk = J[k]
            acc = 0.0
            for i in range(m):
                acc += Jk[i] * r[i]
            g[k] = acc
            for l in range(k, 9):
                Jl = J[l]
                acc = 0.0
                for i in range(m):
                    acc += Jk[i] * Jl[i]
                A[k, l] = acc
                A[l, k] = acc
    return chi


@numba.njit(cache=True, nogil=True)
def _nb_residual_batch(U, obs, w, derivs, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP, Pc,
                       dPc, wk, R, JJ, chi):  # pragma: no cover - compiled
    """:func:`_nb_residual` for every row of ``U`` (n, 9): residuals R (n, M), J (n, 9, M), χ² (n,)."""
    A = np.empty((9, 9))
    g = np.empty(9)
    for n in range(U.shape[0]):
        chi[n] = _nb_residual(U[n], obs[n], w, derivs, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p,
                              dpdu, P, dP, Pc, dPc, wk, R[n], JJ[n], A, g)



@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FASTMATH)
def _nb_rank(U, obs, w, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP, Pc, dPc, wk,
             chi, phi):  # pragma: no cover - compiled
    """χ² (n,) of the candidates ``U`` (n, 9) (internal, azimuth ignored) at their least-squares
    azimuth φ [deg] (n,) in closed form (as :func:`_eval_rotated`): one synthesis at φ = 0."""
    no = obs.shape[2]
    for n in range(U.shape[0]):
        u = U[n].copy()
        u[2] = 0.0
        _nb_synth(u, False, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP, Pc, dPc, wk)
        o = obs[n]
        S0 = p[7]
        S1 = p[8]
        re = 0.0
        im = 0.0
        for i in range(no):
            wq2 = w[1, i] * w[1, i]
            sq = S1 * Pc[i, 1]
            su = S1 * Pc[i, 2]
            re += wq2 * (o[1, i] * sq + o[2, i] * su)
            im += wq2 * (o[2, i] * sq - o[1, i] * su)
        two_phi = math.atan2(im, re)
        c = math.cos(two_phi)
        s = math.sin(two_phi)
        acc = 0.0
        for i in range(no):
            sq = S1 * Pc[i, 1]
            su = S1 * Pc[i, 2]
            d0 = (o[0, i] - (S0 + S1 * Pc[i, 0])) * w[0, i]
            d1 = (o[1, i] - (sq * c - su * s)) * w[1, i]
            d2 = (o[2, i] - (sq * s + su * c)) * w[2, i]
            d3 = (o[3, i] - S1 * Pc[i, 3]) * w[3, i]
            acc += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3
        chi[n] = acc
        phi[n] = math.degrees(two_phi / 2.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _nb_solve9(A, lD, g, delta):  # pragma: no cover - compiled
    """δ from (A + diag(lD) + 10⁻¹² I) δ = g by Cholesky (9 × 9, symmetric positive definite);
    False (and δ untouched) when a pivot is not positive or not finite."""
    L = np.empty((9, 9))
    for i in range(9):
        for j in range(i + 1):
            s = A[i, j] + (lD[i] + 1e-12 if i == j else 0.0)
            for k in range(j):
                s -= L[i, k] * L[j, k]
            if i == j:
                if not s > 0.0 or not math.isfinite(s):
                    return False
                L[i, i] = math.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    y = np.empty(9)
    for i in range(9):
        s = g[i]
        for k in range(i):
            s -= L[i, k] * y[k]
        y[i] = s / L[i, i]
    for i in range(8, -1, -1):
        s = y[i]
        for k in range(i + 1, 9):
            s -= L[k, i] * delta[k]
        delta[i] = s / L[i, i]
    return True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _nb_lm(U0, obs, w, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP, Pc, dPc, wk,
           max_iter, ftol, lam0, xtol, floor, lam_min, lam_max, U, chi_out, iters, converged):  # pragma: no cover
    """Levenberg–Marquardt of :func:`_lm_fast` for each pixel (row of ``U0`` (n, 9)) in turn, with
    the same Marquardt-scaled damping, Nielsen's update and stopping tests (:func:`_lm_trial`,
    :func:`_lm_update`); A = JᵀJ and g = Jᵀr of the current point are carried, a trial costs one
    synthesis with derivatives; results in ``U`` (n, 9), ``chi_out``, ``iters``, ``converged``."""
    umin = tables[3]
    umax = tables[4]
    no = obs.shape[2]
    m = 4 * no
    r = np.empty(m)
    J = np.empty((9, m))
    A = np.empty((9, 9))
    g = np.empty(9)
    At = np.empty((9, 9))
    gt = np.empty(9)
    lD = np.empty(9)
    delta = np.empty(9)
    ut = np.empty(9)
    for n in range(U0.shape[0]):
        u = U[n]
        u[:] = U0[n]
        o = obs[n]
        chi = _nb_residual(u, o, w, True, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP,
                           Pc, dPc, wk, r, J, A, g)
        lam = lam0
        nu = 2.0
        it = 0
        bad_start = not math.isfinite(chi)  # dropped (flagged not converged)
        done = bad_start or chi <= floor
        while not done and it < max_iter:
            # (JᵀJ + λ diag JᵀJ) δ = Jᵀr, the diagonal floored at 10⁻⁹ of its largest entry
            dmax = 0.0
            for k in range(9):
                dmax = max(dmax, A[k, k])
            dmax = max(dmax, 1e-30) * 1e-9
            for k in range(9):
                lD[k] = lam * max(A[k, k], dmax)
            chi_t = np.inf
            if _nb_solve9(A, lD, g, delta):
                for k in range(9):
                    ut[k] = min(max(u[k] + delta[k], umin[k]), umax[k])
                chi_t = _nb_residual(ut, o, w, True, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p,
                                     dpdu, P, dP, Pc, dPc, wk, r, J, At, gt)
            else:
                delta[:] = 0.0
            it += 1
            if math.isfinite(chi_t) and chi_t < chi:
                # gain ratio against the predicted decrease χ² − |r − Jδ|² = δ·(g + λDδ)
                pred = 0.0
                step = 0.0
                for k in range(9):
                    pred += delta[k] * (g[k] + lD[k] * delta[k])
                    step = max(step, abs(delta[k]))
                rho = (chi - chi_t) / max(pred, 1e-300)
                rel = (chi - chi_t) / max(chi, 1e-300)
                chi = chi_t
                u[:] = ut
                A[:, :] = At
                g[:] = gt
                lam = max(lam * max(1.0 - (2.0 * rho - 1.0) ** 3, 1.0 / 3.0), lam_min)
                nu = 2.0
                if rel < ftol or (step < xtol and lam <= 1.0) or chi <= floor:
                    done = True
            else:
                lam = lam * nu
                nu = nu * 2.0
                if lam > lam_max or chi <= floor:
                    done = True
        chi_out[n] = chi
        iters[n] = it
        converged[n] = done and not bad_start

