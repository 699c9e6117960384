"""Milne-Eddington Stokes synthesis in PyTorch, batched over pixels and differentiable.

The analytic Unno-Rachkovsky solution for a line formed in a Milne-Eddington atmosphere
(constant propagation matrix, source function linear in optical depth) as written by del Toro
Iniesta (2003, *Introduction to Spectropolarimetry*, eq. 8.12-8.14) and Landi Degl'Innocenti &
Landolfi (2004, LL04, §9.8), with the Zeeman pattern of the line summed component by component.

Conventions (shared with :mod:`helioforge.physics.lte`):
- the field points towards the observer for inclination < 90°; Stokes V is then positive in the
  blue wing (V ≈ −Δλ_B ḡ cos θ ∂I/∂λ in the weak-field limit, LL04 eq. 9.79);
- +Q is along the reference direction x, the azimuth is counted from x towards y;
- a positive line-of-sight velocity is a redshift (motion away from the observer, SIR's sign).

:func:`synth_me_jacobian` (and the lower-level :func:`me_frame_profiles` /
:func:`me_frame_to_stokes` used by the inversion) give the same profiles with closed-form
derivatives with respect to all nine parameters, without autograd.
:func:`me_frame_profiles_compiled` is :func:`me_frame_profiles` compiled with numba (float64,
one pixel at a time, the kernel of :func:`helioforge.inversion.me_inversion.invert_me`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numba
import numpy as np
import torch

from helioforge.physics.atomic import SpectralLine
from helioforge.physics.faddeeva import _weideman_coefficients, voigt_faraday

__all__ = ["LORENTZ_SHIFT", "C_KMS", "FRAME_PARAMS", "PropagationElements", "zeeman_propagation", "MEParameters", "synth_me",
           "default_eta0_ratios", "me_frame_profiles", "me_frame_to_stokes", "synth_me_jacobian",
           "me_line_constants", "me_frame_profiles_compiled"]

#: Lorentz (Zeeman) shift per gauss per Å² of λ₀: Δλ_B = LORENTZ_SHIFT λ₀² B  [Å], LL04 eq. 3.10.
LORENTZ_SHIFT = 4.6686e-13
#: Speed of light [km/s].
C_KMS = 299792.458


@dataclass
class PropagationElements:
    """The seven independent elements of the line part of the propagation matrix (LL04 eq. 8.x).

    Each is a tensor (..., nλ), in units of the line opacity scale passed to
    :func:`zeeman_propagation` (for ME: η₀; for LTE: the line-to-continuum ratio).
    The full matrix is ``K = 1 + [[η_I, η_Q, η_U, η_V], [η_Q, η_I, ρ_V, −ρ_U],
    [η_U, −ρ_V, η_I, ρ_Q], [η_V, ρ_U, −ρ_Q, η_I]]`` with the continuum on the diagonal.
    """

    eta_I: torch.Tensor
    eta_Q: torch.Tensor
    eta_U: torch.Tensor
    eta_V: torch.Tensor
    rho_Q: torch.Tensor
    rho_U: torch.Tensor
    rho_V: torch.Tensor

    def __add__(self, other: "PropagationElements") -> "PropagationElements":
        return PropagationElements(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def zeeman_propagation(line: SpectralLine, wavelength: torch.Tensor, lambda_D: torch.Tensor, damping: torch.Tensor,
                       line_shift: torch.Tensor, B: torch.Tensor, inclination: torch.Tensor,
                       azimuth: torch.Tensor, scale: torch.Tensor, n_terms: int = 16) -> PropagationElements:
    """Absorption and dispersion elements of a Zeeman-split line (del Toro Iniesta 2003 eq. 7.x).

    Parameters
    ----------
    line : SpectralLine
        Line data with its Zeeman pattern.
    wavelength : tensor (nλ,)
        Wavelengths [Å], same frame (air) as ``line.wavelength_air``; pass float64 (λ − λ₀ is
        formed in double precision, then cast to the dtype of ``lambda_D``).
    lambda_D : tensor (...,)
        Doppler width [Å].
    damping : tensor (...,)
        Voigt damping parameter a.
    line_shift : tensor (...,)
        Doppler shift of the line centre [Å], positive to the red.
    B : tensor (...,)
        Field strength [G].
    inclination, azimuth : tensor (...,)
        Field inclination to the line of sight and azimuth [rad].
    scale : tensor (...,)
        Line opacity scale multiplying the peak-normalised profiles (η₀ in ME).
    n_terms : int
        Terms of the Faddeeva approximation (:func:`helioforge.physics.faddeeva.faddeeva`).

    Returns
    -------
    PropagationElements with tensors (..., nλ)
    """
    ex = lambda t: t.unsqueeze(-1)  # noqa: E731  (..., 1) against (nλ,)
    lam0 = line.wavelength_air
    # λ − λ₀ in double precision: a float32 wavelength near 6302 Å resolves only 0.4 mÅ
    offset = (torch.as_tensor(wavelength, dtype=torch.float64, device=lambda_D.device) - lam0).to(lambda_D.dtype)
    v = (offset - ex(line_shift)) / ex(lambda_D)
    a = ex(damping)
    zeeman_per_doppler = ex(LORENTZ_SHIFT * lam0 ** 2 * B / lambda_D)
    z = line.zeeman

    def group(shifts, strengths):
        phi = torch.zeros_like(v)
        psi = torch.zeros_like(v)
        for s, w in zip(shifts, strengths):
            H, L = voigt_faraday(a, v - float(s) * zeeman_per_doppler, n_terms)
            phi = phi + float(w) * H
            psi = psi + float(w) * L
        return phi, psi

    phi_b, psi_b = group(z.shift_b, z.strength_b)
    phi_p, psi_p = group(z.shift_p, z.strength_p)
    phi_r, psi_r = group(z.shift_r, z.strength_r)
    cos_t = ex(torch.cos(inclination))
    sin2_t = ex(torch.sin(inclination) ** 2)
    cos_2c = ex(torch.cos(2 * azimuth))
    sin_2c = ex(torch.sin(2 * azimuth))
    half = ex(scale) / 2
    lin_eta = half * (phi_p - (phi_b + phi_r) / 2) * sin2_t
    lin_rho = half * (psi_p - (psi_b + psi_r) / 2) * sin2_t
    return PropagationElements(
        eta_I=half * (phi_p * sin2_t + (phi_b + phi_r) / 2 * (1 + cos_t ** 2)),
        eta_Q=lin_eta * cos_2c,
        eta_U=lin_eta * sin_2c,
        eta_V=half * (phi_r - phi_b) * cos_t,
        rho_Q=lin_rho * cos_2c,
        rho_U=lin_rho * sin_2c,
        rho_V=half * (psi_r - psi_b) * cos_t,
    )


@dataclass
class MEParameters:
    """Milne-Eddington model parameters, each a tensor of the batch shape (...,).

    Attributes
    ----------
    B : field strength [G]
    inclination : field inclination to the line of sight [deg], 0-180
    azimuth : field azimuth [deg]
    v_los : line-of-sight velocity [km/s], positive = redshift
    eta0 : line-to-continuum opacity ratio at line centre (per line: scaled by the line's gf
        relative to the first line when one ``eta0`` drives both lines, see :func:`synth_me`)
    doppler_width : Doppler width Δλ_D [Å]
    damping : Voigt damping parameter a
    S0, S1 : source function S(τ) = S0 + S1 τ (continuum-normalised units: I_c = S0 + μ S1)
    """

    B: torch.Tensor
    inclination: torch.Tensor
    azimuth: torch.Tensor
    v_los: torch.Tensor
    eta0: torch.Tensor
    doppler_width: torch.Tensor
    damping: torch.Tensor
    S0: torch.Tensor
    S1: torch.Tensor

    @classmethod
    def create(cls, **kw) -> "MEParameters":
        """Build from floats, arrays or tensors; broadcast to one batch shape in float64 by default."""
        dtype = kw.pop("dtype", torch.float64)
        vals = [torch.as_tensor(kw[f.name], dtype=dtype) for f in fields(cls)]
        return cls(*torch.broadcast_tensors(*vals))


def synth_me(params: MEParameters, wavelength: torch.Tensor, lines: list[SpectralLine],
             mu: float = 1.0, eta0_ratios: list[float] | None = None) -> torch.Tensor:
    """Milne-Eddington Stokes profiles of one or more lines (Unno-Rachkovsky solution).

    Parameters
    ----------
    params : MEParameters
        Batch of model parameters, shape (...,).
    wavelength : tensor (nλ,)
        Air wavelengths [Å].
    lines : list of SpectralLine
        Lines that share the atmosphere (e.g. :func:`helioforge.physics.atomic.fe_lines`).
    mu : float
        Cosine of the heliocentric angle (the source gradient enters as μ S1).
    eta0_ratios : list of float, optional
        η₀ of each line relative to ``params.eta0``; default 10^(log gf − log gf₀) ×
        10^(−5040 (χ − χ₀)/5800 K) (same species, Boltzmann factor at 5800 K), so one η₀ drives
        the Fe I pair as in most ME codes.

    Returns
    -------
    tensor (..., 4, nλ)
        I, Q, U, V in the units of S0, S1.

    Raises
    ------
    ValueError
        If ``mu`` is not in (0, 1].

    Notes
    -----
    del Toro Iniesta (2003) eq. 8.12-8.14; LL04 eq. 9.110. Every operation is a torch op, so
    gradients with respect to all nine parameters come from autograd.
    """
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    wavelength = torch.as_tensor(wavelength, dtype=torch.float64)
    if eta0_ratios is None:
        eta0_ratios = default_eta0_ratios(lines)
    inc = torch.deg2rad(params.inclination)
    azi = torch.deg2rad(params.azimuth)
    K = None
    for line, ratio in zip(lines, eta0_ratios):
        shift = line.wavelength_air * params.v_los / C_KMS
        k = zeeman_propagation(line, wavelength, params.doppler_width, params.damping, shift, params.B, inc, azi,
                               params.eta0 * ratio)
        K = k if K is None else K + k
    eI = 1.0 + K.eta_I
    eQ, eU, eV, rQ, rU, rV = K.eta_Q, K.eta_U, K.eta_V, K.rho_Q, K.rho_U, K.rho_V
    pi_ = eQ * rQ + eU * rU + eV * rV
    delta = eI ** 2 * (eI ** 2 - eQ ** 2 - eU ** 2 - eV ** 2 + rQ ** 2 + rU ** 2 + rV ** 2) - pi_ ** 2
    beta = (mu * params.S1).unsqueeze(-1) / delta
    S0 = params.S0.unsqueeze(-1)
    I = S0 + beta * eI * (eI ** 2 + rQ ** 2 + rU ** 2 + rV ** 2)
    Q = -beta * (eI ** 2 * eQ + eI * (eV * rU - eU * rV) + rQ * pi_)
    U = -beta * (eI ** 2 * eU + eI * (eQ * rV - eV * rQ) + rU * pi_)
    V = -beta * (eI ** 2 * eV + eI * (eU * rQ - eQ * rU) + rV * pi_)
    return torch.stack([I, Q, U, V], dim=-2)


# --------------------------------------------------------------------------- analytic derivatives

#: Order of the derivative planes returned by :func:`me_frame_profiles` (profile parameters only;
#: the azimuth, S0 and S1 derivatives follow in closed form in :func:`me_frame_to_stokes`).
FRAME_PARAMS = ("B", "inclination", "v_los", "eta0", "doppler_width", "damping")

_TWO_I_SQRT_PI = 2j / math.sqrt(math.pi)


def _weideman(x: torch.Tensor, a: torch.Tensor, n_terms: int) -> torch.Tensor:
    """Faddeeva w(x + ia) by Weideman's (1994) rational approximation, evaluated in place.

    The same approximation and coefficients as :func:`helioforge.physics.faddeeva.faddeeva`
    (w = 2 p(Z)/(L − iz)² + (L − iz)⁻¹/√π, Z = (L + iz)/(L − iz)), without autograd and with
    in-place Horner steps. ``x`` (..., nλ) real, ``a`` ≥ 0 broadcastable; returns complex.
    """
    L, coeffs = _weideman_coefficients(n_terms)
    ae = a.expand_as(x)
    inv = torch.reciprocal(torch.complex(L + ae, -x))  # 1/(L − iz)
    Z = torch.complex(L - ae, x).mul_(inv)
    p = torch.full_like(Z, float(coeffs[0]))
    for c in coeffs[1:]:
        p.mul_(Z).add_(float(c))
    return p.mul_(inv).mul_(2.0).add_(1.0 / math.sqrt(math.pi)).mul_(inv)


def _faddeeva_split(x: torch.Tensor, a: torch.Tensor, n_terms: int, far_wing: float | None,
                    near: tuple[int, int] | None = None) -> torch.Tensor:
    """w(x + ia) with Humlíček's (1982, JQSRT 27, 437, region II) rational form in the far wings.

    Humlíček: w ≈ t (1.410474 + 0.5641896 t²)/(0.75 + t²(3 + t²)), t = a − ix; its relative
    error against ``scipy.special.wofz`` is below 2e-6 for |x| + a ≥ 7 and a ≤ 1.5 — that of
    Weideman's N = 16 — at a quarter of the cost. Weideman's form is used on the columns
    ``near = (lo, hi)`` of ``x`` (n, nλ), which must contain every point with |x| + a <
    ``far_wing``; ``far_wing=None`` (or ``near=None``) = Weideman everywhere.
    """
    if far_wing is None or near is None:
        return _weideman(x, a, n_terms)
    lo, hi = near
    ae = a.expand_as(x)
    t = torch.complex(ae, -x)
    u = t * t
    w = (u * 0.5641896 + 1.410474).mul_(t).div_((u + 3.0).mul_(u).add_(0.75))
    if hi > lo:
        w[:, lo:hi] = _weideman(x[:, lo:hi], a, n_terms)
    return w


def default_eta0_ratios(lines: list[SpectralLine]) -> list[float]:
    """η₀ of each line relative to the first: 10^(log gf − log gf₀) 10^(−5040 (χ − χ₀)/5800 K).

    Parameters
    ----------
    lines : list of SpectralLine, non-empty.

    Returns
    -------
    list of float, one per line (1.0 for the first). Same species and a Boltzmann factor at
    5800 K, the convention of :func:`synth_me`.
    """
    ref = lines[0]
    return [10 ** (ln.log_gf - ref.log_gf) * 10 ** (-5040.0 * (ln.excitation_potential - ref.excitation_potential) / 5800.0)
            for ln in lines]


def me_frame_profiles(p: torch.Tensor, wavelength, lines: list[SpectralLine], mu: float = 1.0,
                      eta0_ratios: list[float] | None = None, derivatives: bool = True,
                      n_terms: int = 16, deriv_stride: int = 1, far_wing: float | None = 7.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Unit-source Unno-Rachkovsky profiles at azimuth 0 and their closed-form derivatives.

    The Stokes vector of :func:`synth_me` is ``S = S0 e_I + S1 R(2φ) P`` where ``e_I`` = (1, 0,
    0, 0), ``R(2φ)`` rotates (Q, U) by 2φ (the whole linear polarisation, magneto-optical terms
    included, turns with the field azimuth: Q + iU ∝ e^{2iφ}) and ``P`` is the solution for
    S1 = 1 at φ = 0, where η_U = ρ_U = 0 and (del Toro Iniesta 2003, eq. 8.14; LL04 eq. 9.110)

        Δ = η_I²(η_I² − η_Q² − η_V² + ρ_Q² + ρ_V²) − ϖ²,  ϖ = η_Q ρ_Q + η_V ρ_V,
        P_I = μ η_I (η_I² + ρ_Q² + ρ_V²)/Δ,  P_Q = −μ (η_I² η_Q + ρ_Q ϖ)/Δ,
        P_U = −μ η_I (η_Q ρ_V − η_V ρ_Q)/Δ,  P_V = −μ (η_I² η_V + ρ_V ϖ)/Δ

    (η_I includes the continuum, 1 + line part). The derivatives are exact (no autograd, no
    finite differences): the chain rule through the five elements (η_I, η_Q, ρ_Q, η_V, ρ_V),
    whose derivatives follow from the Faddeeva identity w'(z) = −2 z w(z) + 2i/√π
    (∂H/∂v + i ∂L/∂v = w', ∂/∂a = i w'; LL04 eq. 5.47), summed component by component over the
    Zeeman pattern.

    Parameters
    ----------
    p : tensor (n, 9)
        Physical parameters in the order of :class:`MEParameters` (B [G], inclination [deg],
        azimuth [deg] (ignored here), v_LOS [km/s], η₀, Δλ_D [Å], a, S0, S1 (ignored)); the
        dtype (float32 or float64) is that of the computation.
    wavelength : array (nλ,)
        Air wavelengths [Å].
    lines : list of SpectralLine
        Lines sharing the atmosphere.
    mu : float
        Heliocentric cosine, in (0, 1].
    eta0_ratios : list of float, optional
        As in :func:`synth_me` (default :func:`default_eta0_ratios`).
    derivatives : bool
        Also return the derivatives (otherwise the third output is ``None``).
    n_terms : int
        Terms of the Faddeeva approximation (16 = that of :func:`synth_me`).
    deriv_stride : int
        Derivatives only at every ``deriv_stride``-th wavelength (``wavelength[::deriv_stride]``),
        e.g. for a Levenberg–Marquardt Jacobian convolved on a coarser grid; 1 = all.
    far_wing : float or None
        Where |v − sζ| + a ≥ ``far_wing`` (Doppler units) the Faddeeva function is Humlíček's
        region-II rational form (relative error < 2e-6 for 7), elsewhere Weideman's; ``None``
        = Weideman everywhere (as :func:`synth_me`).

    Returns
    -------
    P : tensor (n, 4, nλ)
        Unit-source Stokes vector at φ = 0.
    eta_I : tensor (n, nλ)
        Total η_I (1 + line part); unused by the caller but cheap and handy for checks.
    dP : tensor (n, 6, 4, nλ_d) or None (nλ_d = len(wavelength[::deriv_stride]))
        ∂P/∂q for q in :data:`FRAME_PARAMS` (B per G, inclination per **radian**, v_LOS per km/s,
        η₀, Δλ_D per Å, a).

    Raises
    ------
    ValueError
        If ``p`` is not (n, 9) or ``mu`` is not in (0, 1].
    """
    if p.ndim != 2 or p.shape[-1] != 9:
        raise ValueError(f"me_frame_profiles: p must be (n, 9) physical parameters, got shape {tuple(p.shape)}")
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    if eta0_ratios is None:
        eta0_ratios = default_eta0_ratios(lines)
    dt, dev = p.dtype, p.device
    B, inc, _, vlos, eta0, dld, damp = (p[:, k:k + 1] for k in range(7))
    gam = torch.deg2rad(inc)
    sin_g, cos_g = torch.sin(gam), torch.cos(gam)
    sin2, cos2 = sin_g ** 2, cos_g ** 2
    wav64 = torch.as_tensor(wavelength, dtype=torch.float64, device=dev)
    a = damp
    n, nw = p.shape[0], wav64.shape[0]
    E_I = torch.zeros(n, nw, dtype=dt, device=dev)  # line part of η_I
    cdt = torch.complex64 if dt == torch.float32 else torch.complex128
    E_lin = torch.zeros(n, nw, dtype=cdt, device=dev)  # η_Q + i ρ_Q at φ = 0
    E_V = torch.zeros(n, nw, dtype=cdt, device=dev)  # η_V + i ρ_V
    # de[q, e]: ∂(element e)/∂(parameter q), e = (η_I, η_Q, ρ_Q, η_V, ρ_V), q = FRAME_PARAMS order
    k_d = max(int(deriv_stride), 1)
    nw_d = len(range(0, nw, k_d))
    de = torch.zeros(6, 5, n, nw_d, dtype=dt, device=dev) if derivatives else None
    one_cos2 = 1.0 + cos2

    def add_elements(q, Xb, Xp, Xr, f, rotate_i=False):
        """de[q] += f · elements(Xb, Xp, Xr) (f (n, 1) real); ``rotate_i`` multiplies the X by i."""
        mean = (Xb + Xr).mul_(0.5)
        lin = (Xp - mean).mul_(f * sin2)
        vv = (Xr - Xb).mul_(f * cos_g)
        if rotate_i:  # i X: Re → −Im, Im → Re
            de[q, 0].sub_((Xp.imag * sin2 + mean.imag * one_cos2) * f)
            de[q, 1].sub_(lin.imag)
            de[q, 2].add_(lin.real)
            de[q, 3].sub_(vv.imag)
            de[q, 4].add_(vv.real)
        else:
            de[q, 0].add_((Xp.real * sin2 + mean.real * one_cos2) * f)
            de[q, 1].add_(lin.real)
            de[q, 2].add_(lin.imag)
            de[q, 3].add_(vv.real)
            de[q, 4].add_(vv.imag)

    for line, ratio in zip(lines, eta0_ratios):
        lam0 = line.wavelength_air
        offset64 = (wav64 - lam0).contiguous()
        offset = offset64.to(dt)
        shift = lam0 * vlos / C_KMS
        v = (offset - shift) / dld  # (n, nλ)
        lorentz = LORENTZ_SHIFT * lam0 ** 2
        zeta = lorentz * B / dld
        z = line.zeeman
        v_d = v[:, ::k_d] if k_d > 1 else v
        u_c = torch.complex(v_d, a.expand_as(v_d)) if derivatives else None  # v + ia
        groups = []
        for shifts, strengths in ((z.shift_b, z.strength_b), (z.shift_p, z.strength_p), (z.shift_r, z.strength_r)):
            # W = Σ c w_k, WS = Σ c s w_k, WSS = Σ c s² w_k, z_k = v − s ζ + ia; then, from
            # w' = −2zw + 2i/√π: Σ c w' = −2[(v + ia) W − ζ WS] + 2i/√π Σc, and likewise with s.
            W = WS = WSS = None
            C = CS = 0.0
            for s_k, c in zip(shifts, strengths):
                s_k, c = float(s_k), float(c)
                near = None
                if far_wing is not None:
                    # columns where some pixel has |v − sζ| + a < far_wing (v increases with λ)
                    centre = shift + s_k * lorentz * B
                    half_w = (far_wing - a).clamp_min(0.0) * dld
                    bounds = torch.stack([(centre - half_w).min(), (centre + half_w).max()]).to(torch.float64)
                    idx = torch.searchsorted(offset64, bounds)
                    near = (max(int(idx[0]) - 1, 0), min(int(idx[1]) + 1, nw))
                w = _faddeeva_split(v - s_k * zeta, a, n_terms, far_wing, near)
                w_d = w[:, ::k_d] if k_d > 1 else w
                if W is None:
                    W = w * c
                    if derivatives:
                        WS, WSS = w_d * (c * s_k), w_d * (c * s_k * s_k)
                else:
                    W.add_(w, alpha=c)
                    if derivatives:
                        WS.add_(w_d, alpha=c * s_k)
                        WSS.add_(w_d, alpha=c * s_k * s_k)
                C += c
                CS += c * s_k
            if derivatives:
                W_d = W[:, ::k_d] if k_d > 1 else W
                D1 = (u_c * W_d).sub_(zeta * WS).mul_(-2.0).add_(_TWO_I_SQRT_PI * C)
                DS = (u_c * WS).sub_(zeta * WSS).mul_(-2.0).add_(_TWO_I_SQRT_PI * CS)
                DX = (v_d * D1).sub_(zeta * DS)  # Σ c Re(z_k) w'_k
                groups.append((W, D1, DS, DX))
            else:
                groups.append((W, None, None, None))
        half = eta0 * (ratio / 2.0)
        (Wb, D1b, DSb, DXb), (Wp, D1p, DSp, DXp), (Wr, D1r, DSr, DXr) = groups
        mean = (Wb + Wr).mul_(0.5)
        pm = Wp - mean
        dif = Wr - Wb
        E_I.add_((Wp.real * sin2 + mean.real * one_cos2) * half)
        E_lin.add_(pm * (half * sin2))
        E_V.add_(dif * (half * cos_g))
        if derivatives:
            # ∂z/∂B = −s λ₀²·const/Δλ_D; ∂z/∂v_LOS = −λ₀/(c Δλ_D); ∂z/∂Δλ_D = −Re z/Δλ_D; ∂z/∂a = i
            add_elements(0, DSb, DSp, DSr, half * (-lorentz / dld))
            add_elements(2, D1b, D1p, D1r, half * (-(lam0 / C_KMS) / dld))
            add_elements(4, DXb, DXp, DXr, half * (-1.0 / dld))
            add_elements(5, D1b, D1p, D1r, half, rotate_i=True)
            pm_d, dif_d = (pm[:, ::k_d], dif[:, ::k_d]) if k_d > 1 else (pm, dif)
            hs = half * (2 * sin_g * cos_g)
            lin_g = pm_d * hs
            de[1, 0].add_(lin_g.real)
            de[1, 1].add_(lin_g.real)
            de[1, 2].add_(lin_g.imag)
            vg = dif_d * (-half * sin_g)
            de[1, 3].add_(vg.real)
            de[1, 4].add_(vg.imag)
    eI = 1.0 + E_I
    eQ, rQ = E_lin.real.contiguous(), E_lin.imag.contiguous()
    eV, rV = E_V.real.contiguous(), E_V.imag.contiguous()
    pi_ = eQ * rQ + eV * rV
    eI2 = eI * eI
    rQ2, rV2 = rQ * rQ, rV * rV
    A = eI2 - eQ * eQ - eV * eV + rQ2 + rV2
    delta = eI2 * A - pi_ * pi_
    beta = mu / delta
    NI = eI * (eI2 + rQ2 + rV2)
    NQ = eI2 * eQ + rQ * pi_
    NU = eI * (eQ * rV - eV * rQ)
    NV = eI2 * eV + rV * pi_
    P = torch.stack([beta * NI, -beta * NQ, -beta * NU, -beta * NV], 1)
    if not derivatives:
        return P, eI, None
    eI_full = eI
    if k_d > 1:
        E_I, eI, eQ, rQ, eV, rV, pi_, eI2, rQ2, rV2, A, delta, beta, NI, NQ, NU, NV = (
            t[:, ::k_d].contiguous() for t in (E_I, eI, eQ, rQ, eV, rV, pi_, eI2, rQ2, rV2, A, delta, beta, NI, NQ, NU, NV))
        P_d = P[:, :, ::k_d]
    else:
        P_d = P
    # η₀: every line element is proportional to η₀
    inv_eta = 1.0 / eta0
    for k, arr in enumerate((E_I, eQ, rQ, eV, rV)):
        torch.mul(arr, inv_eta, out=de[3, k])
    # ∂Δ/∂e and ∂N_X/∂e for e = (η_I, η_Q, ρ_Q, η_V, ρ_V); G[X][e] = ∂P_X/∂e = ±β ∂N_X/∂e − P_X ∂Δ/∂e / Δ
    dDelta = (2 * eI * (A + eI2), -2 * (eI2 * eQ + pi_ * rQ), 2 * (eI2 * rQ - pi_ * eQ),
              -2 * (eI2 * eV + pi_ * rV), 2 * (eI2 * rV - pi_ * eV))
    dN = (
        (3 * eI2 + rQ2 + rV2, None, 2 * eI * rQ, None, 2 * eI * rV),
        (2 * eI * eQ, eI2 + rQ2, pi_ + rQ * eQ, rQ * rV, rQ * eV),
        (eQ * rV - eV * rQ, eI * rV, -eI * eV, -eI * rQ, eI * eQ),
        (2 * eI * eV, rV * rQ, rV * eQ, eI2 + rV2, pi_ + rV * eV),
    )
    dP = torch.empty(n, 6, 4, nw_d, dtype=dt, device=dev)
    sb = (beta, -beta, -beta, -beta)
    inv_delta = 1.0 / delta
    for x in range(4):
        t = P_d[:, x] * inv_delta
        for e in range(5):
            g = -t * dDelta[e]
            if dN[x][e] is not None:
                g.addcmul_(sb[x], dN[x][e])
            for q in range(6):
                if e == 0:
                    torch.mul(g, de[q, 0], out=dP[:, q, x])
                else:
                    dP[:, q, x].addcmul_(g, de[q, e])
    return P, eI_full, dP


def me_frame_to_stokes(P: torch.Tensor, dP: torch.Tensor | None, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stokes vector and Jacobian with respect to all nine ME parameters from the φ = 0 frame.

    ``S = S0 e_I + S1 R(2φ) P``; ``∂S/∂q = S1 R(2φ) ∂P/∂q`` for the six parameters of
    :data:`FRAME_PARAMS`; ``∂(Q, U)/∂φ = 2 S1 (−U_φ, Q_φ)``; ``∂S/∂S0 = e_I``;
    ``∂S/∂S1 = R(2φ) P``. Every step is linear in ``P`` and ``dP``, so they may first be
    convolved with an instrument profile (whose rows sum to one, so that the constant S0
    passes unchanged).

    Parameters
    ----------
    P : tensor (n, 4, nλ) — from :func:`me_frame_profiles` (possibly convolved).
    dP : tensor (n, 6, 4, nλ_d) or None (nλ_d = len(wavelength[::deriv_stride])) — likewise.
    p : tensor (n, 9) — physical parameters (:class:`MEParameters` order, angles in degrees).

    Returns
    -------
    S : tensor (n, 4, nλ)
    J : tensor (n, 9, 4, nλ) or None
        ∂S/∂p in the units of :class:`MEParameters` (per G, per degree, per km/s, per Å, ...).
    """
    phi2 = 2.0 * torch.deg2rad(p[:, 2])[:, None]
    c, s = torch.cos(phi2), torch.sin(phi2)
    S0, S1 = p[:, 7:8], p[:, 8:9]

    def rot(X):  # X (..., 4, nλ) with leading n; c, s broadcast over the middle axes
        cc = c.reshape(c.shape[0], *([1] * (X.ndim - 3)), 1)
        ss = s.reshape(cc.shape)
        q, u = X[..., 1, :], X[..., 2, :]
        return torch.stack([X[..., 0, :], q * cc - u * ss, q * ss + u * cc, X[..., 3, :]], -2)

    RP = rot(P)
    S = S1[:, :, None] * RP
    S[:, 0] += S0
    if dP is None:
        return S, None
    n, nw = P.shape[0], P.shape[-1]
    J = torch.empty(n, 9, 4, nw, dtype=P.dtype, device=P.device)
    frame = S1[:, :, None, None] * rot(dP)  # (n, 6, 4, nλ)
    deg = math.pi / 180.0
    J[:, 0] = frame[:, 0]
    J[:, 1] = frame[:, 1] * deg
    J[:, 3:7] = frame[:, 2:6]
    J[:, 2] = 0.0
    J[:, 2, 1] = -2.0 * deg * S[:, 2]
    J[:, 2, 2] = 2.0 * deg * S[:, 1]
    J[:, 7] = 0.0
    J[:, 7, 0] = 1.0
    J[:, 8] = RP
    return S, J


def synth_me_jacobian(params: MEParameters, wavelength, lines: list[SpectralLine], mu: float = 1.0,
                      eta0_ratios: list[float] | None = None, n_terms: int = 16,
                      far_wing: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Milne-Eddington Stokes profiles and their analytic Jacobian (no autograd).

    Parameters
    ----------
    params : MEParameters
        Batch of model parameters, any batch shape (...,); the dtype of ``params.B`` is used.
    wavelength : array (nλ,)
        Air wavelengths [Å].
    lines, mu, eta0_ratios : as in :func:`synth_me`.
    n_terms : int
        Terms of the Faddeeva approximation.
    far_wing : float or None
        See :func:`me_frame_profiles` (default ``None``: Weideman everywhere, as :func:`synth_me`).

    Returns
    -------
    stokes : tensor (..., 4, nλ)
        Identical (to round-off) to :func:`synth_me` for ``far_wing=None``.
    jacobian : tensor (..., 9, 4, nλ)
        ∂stokes/∂parameter in the order and units of :class:`MEParameters` (angles per degree).

    Raises
    ------
    ValueError
        If ``mu`` is not in (0, 1].

    Notes
    -----
    Closed-form derivatives of the Unno-Rachkovsky solution (del Toro Iniesta 2003, §8.3;
    LL04 §9.8), see :func:`me_frame_profiles` and :func:`me_frame_to_stokes`; checked against
    finite differences in ``tests/test_me_fast_inversion.py``.
    """
    shape = params.B.shape
    p = torch.stack([torch.as_tensor(getattr(params, f.name)).reshape(-1) for f in fields(MEParameters)], -1)
    with torch.no_grad():
        P, _, dP = me_frame_profiles(p, wavelength, lines, mu, eta0_ratios, True, n_terms, 1, far_wing)
        S, J = me_frame_to_stokes(P, dP, p)
    nw = S.shape[-1]
    return S.reshape(*shape, 4, nw), J.reshape(*shape, 9, 4, nw)


# --------------------------------------------------------------------------- compiled (numba) synthesis
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
        As in :func:`synth_me` (default :func:`default_eta0_ratios`).
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
    L, coeffs = _weideman_coefficients(int(n_terms))
    return (off, lam0, np.asarray(eta0_ratios, dtype=np.float64), LORENTZ_SHIFT * lam0 ** 2,
            np.asarray(ptr, dtype=np.int64), np.asarray(cs, dtype=np.float64), np.asarray(cc, dtype=np.float64),
            np.asarray(gc, dtype=np.float64), np.asarray(gcs, dtype=np.float64), float(L),
            np.ascontiguousarray(coeffs, dtype=np.float64))


def me_frame_profiles_compiled(p, wavelength, lines: list[SpectralLine], mu: float = 1.0,
                               eta0_ratios: list[float] | None = None, derivatives: bool = True, n_terms: int = 16,
                               deriv_stride: int = 1,
                               far_wing: float | None = 7.0) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`me_frame_profiles` compiled with numba, one pixel at a time, in float64.

    Parameters
    ----------
    p : array or tensor (n, 9)
        Physical parameters in the order of :class:`MEParameters` (azimuth, S0, S1 ignored).
    wavelength, lines, mu, eta0_ratios, derivatives, n_terms, deriv_stride, far_wing
        As in :func:`me_frame_profiles`.

    Returns
    -------
    P : ndarray (n, 4, nλ) float64
        Unit-source Stokes vector at φ = 0.
    dP : ndarray (n, 6, 4, nλ_d) float64 or None
        ∂P/∂q for q in :data:`FRAME_PARAMS` (γ per radian), at ``wavelength[::deriv_stride]``.

    Raises
    ------
    ValueError
        If ``p`` is not (n, 9) or ``mu`` is not in (0, 1].

    Notes
    -----
    Same equations as :func:`me_frame_profiles` (del Toro Iniesta 2003, eq. 8.14; LL04 §9.8;
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
