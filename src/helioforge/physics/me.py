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
derivatives with respect to all nine parameters, without autograd. The same profiles compiled
with numba (float64, one pixel at a time) are :func:`helioforge.inversion.me.me_frame_profiles_compiled`,
the synthesis of the ME inversion's default solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from helioforge.physics.atomic import SpectralLine
from helioforge.physics.faddeeva import weideman_coefficients, voigt_faraday

__all__ = ["LORENTZ_SHIFT", "C_KMS", "FRAME_PARAMS", "PropagationElements", "zeeman_propagation", "MEParameters", "synth_me",
           "default_eta0_ratios", "me_frame_profiles", "me_frame_to_stokes", "synth_me_jacobian"]

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
    L, coeffs = weideman_coefficients(n_terms)
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
    finite differences in ``tests/inversion/test_me_fast_inversion.py``.
    """
    shape = params.B.shape
    p = torch.stack([torch.as_tensor(getattr(params, f.name)).reshape(-1) for f in fields(MEParameters)], -1)
    with torch.no_grad():
        P, _, dP = me_frame_profiles(p, wavelength, lines, mu, eta0_ratios, True, n_terms, 1, far_wing)
        S, J = me_frame_to_stokes(P, dP, p)
    nw = S.shape[-1]
    return S.reshape(*shape, 4, nw), J.reshape(*shape, 9, 4, nw)
