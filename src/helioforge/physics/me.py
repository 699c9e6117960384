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
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from helioforge.physics.atomic import SpectralLine
from helioforge.physics.faddeeva import voigt_faraday

__all__ = ["LORENTZ_SHIFT", "C_KMS", "PropagationElements", "zeeman_propagation", "MEParameters", "synth_me"]

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
        ref = lines[0]
        eta0_ratios = [10 ** (ln.log_gf - ref.log_gf) * 10 ** (-5040.0 * (ln.excitation_potential - ref.excitation_potential) / 5800.0)
                       for ln in lines]
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
