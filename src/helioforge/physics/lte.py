"""LTE polarised synthesis of photospheric lines in depth-stratified atmospheres (PyTorch).

Input: model atmospheres on a log τ₅₀₀ grid (SIR units: T [K], P_e [dyn cm⁻²], v_mic and v_LOS
[cm s⁻¹], B [G], inclination and azimuth [deg]), batched over any leading shape (pixels, maps).
Output: Stokes I, Q, U, V [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹] of the lines on any wavelength grid, and
everything in between is a differentiable torch operation.

Physics (each piece is a public function with its reference):
- the equation of state, in :mod:`helioforge.physics.eos`: ionisation (Saha) with the partition functions of Gray (2005, *The Observation and Analysis of
  Stellar Photospheres*, 3rd ed., Table D.2), interpolated linearly in log u against θ = 5040/T,
  for the 16 elements that supply electrons in the photosphere (abundances Asplund et al. 2009),
  and the H₂ and H₂⁺ dissociation equilibria (Saha-Boltzmann with the tabulated K_p(θ) of
  Mihalas 1967 as used by Wittmann 1974/SIR; :func:`chemical_equilibrium`): 14 % of the
  hydrogen nuclei are in H₂ at log τ₅₀₀ = 0 and 24 % at −1 in the umbral model M of Maltby
  et al. (1986) (3-6 % in the hotter model E), < 1.5 × 10⁻³ in the quiet Sun (HSRA);
- continuous opacity (Gray 2005 ch. 8): H⁻ bound-free (Wishart 1979 cross-section, Gray
  eq. 8.11-8.12), H⁻ free-free (Bell & Berrington 1987, Gray eq. 8.13), neutral H bound-free and
  free-free (Gray eq. 8.8), Rayleigh scattering on H (Dalgarno 1962) and H₂ (Dalgarno & Williams
  1962) and Thomson scattering;
- hydrostatic equilibrium dP_g/dτ₅₀₀ = g/κ₅₀₀ and the geometric height dz = −dτ₅₀₀/(κ₅₀₀ ρ);
- line opacity from the Boltzmann-Saha population of the lower level, Voigt/Faraday-Voigt
  profiles with thermal + microturbulent Doppler width, radiative (classical) and van der Waals
  damping (Anstee & O'Mara 1995 / Barklem et al. 2000, from the α, σ of the line list), Zeeman
  components in LS coupling (:mod:`helioforge.physics.atomic`);
- the polarised formal solution with the DELO-linear method (Rees, Durrant & Murphy 1989),
  whose 4×4 inversions use the closed form the propagation-matrix structure allows
  (Cayley-Hamilton, LL04 §8.x), so a step is a few dozen element-wise tensor operations.

Not included (negligible for Fe I 6301/6302 in the photosphere, or documented limits): Stark
broadening, molecules other than H₂ and H₂⁺ (CO, OH, H₂O bind < 10⁻³ of the nuclei), H⁻ in the
charge balance (< 10⁻⁷ of H), H₂ as a van der Waals perturber and H₂⁺ opacity, metal
bound-free opacity; the source function is the Planck function (LTE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from helioforge.physics.atomic import SpectralLine, fe_lines
from helioforge.physics.eos import (  # the equation of state, its constants and abundance table
    _ABUND,
    AMU,
    C_CGS,
    ELEMENTS,
    EV,
    E_CHARGE,
    H_PLANCK,
    K_B,
    M_E,
    GasState,
    chemical_equilibrium,
    electron_pressure,
    gas_state_from_pg,
    ionisation_fractions,
    partition_function,
    saha_ratio,
)
from helioforge.physics.me import PropagationElements, zeeman_propagation

#: Solar surface gravity [cm s⁻²].
GRAVITY = 2.7398e4
SIGMA_THOMSON = 6.6524587e-25  # Thomson cross-section [cm²]
_LN10 = math.log(10.0)
_PI_E2_MC = math.pi * E_CHARGE ** 2 / (M_E * C_CGS)  # 0.02654 cm² s⁻¹

__all__ = [
    "GRAVITY",
    "Atmosphere",
    "continuum_opacity",
    "hydrostatic_equilibrium",
    "depth_order",
    "planck_nu",
    "delo_linear",
    "synth_lte",
]


def _h_minus_bf_cross_section(wav_A: float) -> float:
    """Wishart (1979) H⁻ photo-detachment cross-section [cm²], Gray 2005 eq. 8.11 (2250-15000 Å)."""
    a = [1.99654, -1.18267e-5, 2.64243e-6, -4.40524e-10, 3.23992e-14, -1.39568e-18, 2.78701e-23]
    return 1e-18 * sum(c * wav_A ** i for i, c in enumerate(a))


def continuum_opacity(T: torch.Tensor, Pe: torch.Tensor, wavelength_A: float, molecules: bool = True,
                      gas: GasState | None = None) -> torch.Tensor:
    """Continuous absorption + scattering coefficient κ_c [cm⁻¹] at one wavelength.

    Parameters
    ----------
    T, Pe : tensors (...,)
        Temperature [K] and electron pressure [dyn cm⁻²].
    wavelength_A : float
        Wavelength [Å], 2250-15000 (the H⁻ bound-free fit's range).
    molecules : bool
        Include H₂ and H₂⁺ in the equation of state (default): hydrogen bound in H₂ does not
        absorb as H or H⁻ but scatters (Rayleigh on H₂).
    gas : GasState, optional
        The composition of :func:`chemical_equilibrium` for (T, P_e) if already computed.

    Returns
    -------
    tensor (...,)
        κ per unit volume; divide by ρ for the mass opacity.

    Raises
    ------
    ValueError
        Outside 2250-15000 Å.

    Notes
    -----
    Gray (2005) eq. 8.8 (H bf+ff, Gaunt factors 1), 8.11-8.12 (H⁻ bf), 8.13 (H⁻ ff,
    Bell & Berrington 1987), Rayleigh scattering on H I (Dalgarno 1962) and on H₂ (Dalgarno &
    Williams 1962, ApJ 136, 690, the fit of Kurucz's ATLAS) and Thomson scattering; the H I and
    H⁻ terms are per neutral *atomic* hydrogen of :func:`chemical_equilibrium`. Stimulated emission is included for the bound-free terms (the H⁻ ff fit includes it).
    """
    if not 2250.0 <= wavelength_A <= 15000.0:
        raise ValueError(f"continuum_opacity: {wavelength_A} Å is outside 2250-15000 Å")
    theta = 5040.0 / T
    log_theta = torch.log10(theta)
    chi_lambda = 1.2398e4 / wavelength_A  # photon energy [eV]
    stim = 1.0 - 10.0 ** (-chi_lambda * theta)
    # H⁻ bound-free, per neutral H atom (Gray eq. 8.12)
    k_hm_bf = 4.158e-10 * _h_minus_bf_cross_section(wavelength_A) * Pe * theta ** 2.5 * 10.0 ** (0.754 * theta) * stim
    # H⁻ free-free, per neutral H atom (Gray eq. 8.13)
    lw = math.log10(wavelength_A)
    f0 = -2.2763 - 1.6850 * log_theta + 0.76661 * log_theta ** 2 - 0.053346 * log_theta ** 3
    f1 = 15.2827 - 9.2846 * log_theta + 1.99381 * log_theta ** 2 - 0.142631 * log_theta ** 3
    f2 = (-197.789 + 190.266 * log_theta - 67.9775 * log_theta ** 2 + 10.6913 * log_theta ** 3
          - 0.625151 * log_theta ** 4)
    k_hm_ff = 1e-26 * Pe * 10.0 ** (f0 + f1 * lw + f2 * lw ** 2)
    # neutral H bound-free + free-free, per neutral H atom (Gray eq. 8.8)
    I_H = 13.598
    n0 = next(n for n in range(1, 20) if I_H / n ** 2 < chi_lambda)
    loge = math.log10(math.e)
    s = sum((1.0 / n ** 3) * 10.0 ** (-theta * I_H * (1 - 1.0 / n ** 2)) for n in range(n0, n0 + 3))
    n3 = n0 + 3
    s = s + loge / (2 * theta * I_H) * (10.0 ** (-theta * I_H * (1 - 1.0 / n3 ** 2)) - 10.0 ** (-theta * I_H))
    s = s + loge / (2 * theta * I_H) * 10.0 ** (-theta * I_H)
    k_h = 1.0449e-26 * wavelength_A ** 3 * s * stim
    # Rayleigh on H I (Dalgarno 1962), per neutral H atom
    k_ray = 5.799e-13 / wavelength_A ** 4 + 1.422e-6 / wavelength_A ** 6 + 2.784 / wavelength_A ** 8
    # Rayleigh scattering on H₂ per molecule (Dalgarno & Williams 1962)
    k_ray_h2 = 8.14e-13 / wavelength_A ** 4 + 1.28e-6 / wavelength_A ** 6 + 1.61 / wavelength_A ** 8
    gas = chemical_equilibrium(T, Pe, molecules) if gas is None else gas
    return gas.n_HI * (k_hm_bf + k_hm_ff + k_h + k_ray) + gas.n_H2 * k_ray_h2 + gas.n_e * SIGMA_THOMSON


def depth_order(log_tau: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Check a depth grid for the hydrostatic equilibrium and tell its order.

    Parameters
    ----------
    log_tau : tensor (n,) or (..., n)
        log τ₅₀₀ grid, broadcastable to ``T``.
    T : tensor (..., n)
        Temperature [K] (only its shape is used).

    Returns
    -------
    log_tau : tensor (..., n)
        The grid expanded to the shape of ``T``.
    top_first : bool
        True if log τ increases along the last axis (top first), False if it decreases (SIR order).

    Raises
    ------
    ValueError
        If there are fewer than two depth points or the grid is not strictly monotonic (in
        the same direction for every column).
    """
    log_tau = log_tau.expand_as(T)
    if T.shape[-1] < 2:
        raise ValueError("hydrostatic_equilibrium needs at least two depth points")
    d = torch.diff(log_tau, dim=-1)
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("log_tau must be strictly monotonic")
    return log_tau, bool((d > 0).all())


def hydrostatic_equilibrium(log_tau: torch.Tensor, T: torch.Tensor, gravity: float = GRAVITY,
                            substeps: int = 2, molecules: bool = True, warm_start: bool = False,
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gas and electron pressure, density and geometric height of a τ₅₀₀ stratification.

    Integrates dP_g/d log τ = ln10 τ g / κ₅₀₀(T, P_e(P_g, T)) downwards from the top with a
    second-order Runge-Kutta (Heun) scheme in ln P_g, the top boundary P_g = g τ_top / κ_m
    solved by fixed-point iteration, then dz = −ln10 τ d log τ / (κ₅₀₀ ρ) (Gray 2005, ch. 9).

    Parameters
    ----------
    log_tau : tensor (n,) or (..., n)
        log τ₅₀₀, ordered either way (deepest first as in SIR files, or top first).
    T : tensor (..., n)
        Temperature [K].
    gravity : float
        Surface gravity [cm s⁻²].
    substeps : int
        RK2 sub-steps per grid interval.
    molecules : bool
        Equation of state with H₂ and H₂⁺ (default, :func:`electron_pressure`); False gives the
        atomic one. In the Maltby et al. (1986) umbral model M H₂ binds 14-24 % of the
        hydrogen at log τ₅₀₀ = 0 … −1, which lowers the number of particles per nucleus and the
        H⁻ opacity per gram: P_g rises by 9.8, 9.5, 4.0 % at log τ₅₀₀ = 0, −1, −2, ρ by 17-24 %,
        and z(log τ₅₀₀ = −1, −2) falls from 109.4, 220.1 to 98.8, 203.3 km; in HSRA P_g and z
        change by < 0.1 % and < 0.2 km.
    warm_start : bool
        Solve for P_e at each stage by Newton steps from the previous stage's P_e/P_g
        (:func:`~helioforge.physics.eos.electron_pressure` ``initial``) instead of the
        bracketed solve: 3-4 residual evaluations instead of 16 and one Saha ratio per stage
        instead of two. The same solution to < 10⁻⁹ relative in float64 (tested); used by the
        fused training-set path.

    Returns
    -------
    Pe, Pg : tensor (..., n) [dyn cm⁻²]
    rho : tensor (..., n) [g cm⁻³]
    z : tensor (..., n) [km], height relative to log τ₅₀₀ = 0 (interpolated), positive upwards.

    Raises
    ------
    ValueError
        If the grid has fewer than two points or is not strictly monotonic.
    """
    log_tau, top_first = depth_order(torch.as_tensor(log_tau, dtype=T.dtype, device=T.device), T)
    if not top_first:  # work top → bottom
        return tuple(t.flip(-1) for t in hydrostatic_equilibrium(log_tau.flip(-1), T.flip(-1), gravity, substeps,
                                                                 molecules, warm_start))
    ratio = [None]  # ln P_e − ln P_g of the last solve: the warm start of the next one
    ratios = []  # … and at each grid point, the warm start of the final solve

    def kappa_mass(temp, pg):
        if warm_start:
            phi = saha_ratio(temp)
            ln_pg = torch.log(pg)
            guess = None if ratio[0] is None else ln_pg + ratio[0]
            pe = electron_pressure(temp, pg, molecules=molecules, phi=phi, initial=guess)
            ratio[0] = (torch.log(pe) - ln_pg).detach()
            gas = gas_state_from_pg(temp, pg, pe, molecules, phi=phi)
        else:
            pe = electron_pressure(temp, pg, molecules=molecules)
            gas = gas_state_from_pg(temp, pg, pe, molecules)
        return continuum_opacity(temp, pe, 5000.0, gas=gas) / gas.rho, pe

    tau0 = 10.0 ** log_tau[..., 0]
    pg = torch.full_like(tau0, 1.0) * 10.0
    for _ in range(25):  # top boundary: P_g = g τ / κ_m
        km, _ = kappa_mass(T[..., 0], pg)
        pg = torch.sqrt(pg * gravity * tau0 / km)
    ln_pg = [torch.log(pg)]
    if warm_start:
        ratios.append(ratio[0])

    def rhs(lt, temp, lnp):
        km, _ = kappa_mass(temp, torch.exp(lnp))
        return _LN10 * 10.0 ** lt * gravity / (km * torch.exp(lnp))

    n = T.shape[-1]
    for i in range(n - 1):
        lt0, lt1 = log_tau[..., i], log_tau[..., i + 1]
        t0, t1 = T[..., i], T[..., i + 1]
        y = ln_pg[-1]
        for k in range(substeps):
            fa, fb = k / substeps, (k + 1) / substeps
            la, lb = lt0 + (lt1 - lt0) * fa, lt0 + (lt1 - lt0) * fb
            ta, tb = t0 + (t1 - t0) * fa, t0 + (t1 - t0) * fb
            h = lb - la
            k1 = rhs(la, ta, y)
            k2 = rhs(lb, tb, y + h * k1)
            y = y + 0.5 * h * (k1 + k2)
        ln_pg.append(y)
        if warm_start:
            ratios.append(ratio[0])
    Pg = torch.exp(torch.stack(ln_pg, dim=-1))
    if warm_start:  # the first guess at every depth: the ratio of the last stage
        phi = saha_ratio(T)
        Pe = electron_pressure(T, Pg, molecules=molecules, phi=phi, initial=torch.log(Pg) + torch.stack(ratios, dim=-1))
        gas = gas_state_from_pg(T, Pg, Pe, molecules, phi=phi)
    else:
        Pe = electron_pressure(T, Pg, molecules=molecules)
        gas = gas_state_from_pg(T, Pg, Pe, molecules)
    rho = gas.rho
    kappa500 = continuum_opacity(T, Pe, 5000.0, gas=gas)
    integrand = _LN10 * 10.0 ** log_tau / kappa500  # dz/dlogτ = −this [cm]
    dz = 0.5 * (integrand[..., 1:] + integrand[..., :-1]) * torch.diff(log_tau, dim=-1)
    depth = torch.cat([torch.zeros_like(dz[..., :1]), torch.cumsum(dz, dim=-1)], dim=-1)  # increasing downwards
    z = -depth * 1e-5
    z0 = _interp_last(log_tau, z, 0.0)
    return Pe, Pg, rho, z - z0.unsqueeze(-1)


def _interp_last(x: torch.Tensor, y: torch.Tensor, x0: float) -> torch.Tensor:
    """Linear interpolation of y(x) at x0 along the last axis (x increasing), clamped at the ends."""
    idx = torch.searchsorted(x.contiguous(), torch.full_like(x[..., :1], x0)).clamp(1, x.shape[-1] - 1)
    xa, xb = x.gather(-1, idx - 1), x.gather(-1, idx)
    ya, yb = y.gather(-1, idx - 1), y.gather(-1, idx)
    w = ((x0 - xa) / (xb - xa)).clamp(0, 1)
    return (ya + w * (yb - ya)).squeeze(-1)


def planck_nu(T: torch.Tensor, wavelength_A: float) -> torch.Tensor:
    """Planck function B_ν(T) [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹] at wavelength λ [Å] (float32-safe).

    The prefactor 2hν³/c² is formed in double precision (ν³ overflows float32) before it meets T.

    Parameters
    ----------
    T : tensor (...,)
        Temperature [K].
    wavelength_A : float
        Wavelength λ [Å]; ν = c/λ.

    Returns
    -------
    tensor (...,)
        B_ν(T) = (2hν³/c²) / (exp(hν/kT) − 1) [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹], same shape and dtype as ``T``.
    """
    nu = C_CGS / (float(wavelength_A) * 1e-8)
    prefactor = 2.0 * H_PLANCK * nu ** 3 / C_CGS ** 2
    return prefactor / torch.expm1((H_PLANCK * nu / K_B) / T)


@dataclass
class Atmosphere:
    """A batch of model atmospheres on a log τ₅₀₀ grid, torch tensors (..., n) (deepest first or top first).

    Attributes
    ----------
    log_tau : log τ₅₀₀, (n,) or (..., n)
    T : temperature [K]
    Pe : electron pressure [dyn cm⁻²]
    vmic : microturbulence [cm s⁻¹]
    B : field strength [G]
    vlos : line-of-sight velocity [cm s⁻¹], positive = redshift (SIR convention)
    inclination : field inclination to the line of sight [deg]
    azimuth : field azimuth [deg]
    Pg : gas pressure [dyn cm⁻²] (optional; needed only for outputs, not for the synthesis)
    z : geometric height [km] (optional)
    """

    log_tau: torch.Tensor
    T: torch.Tensor
    Pe: torch.Tensor
    vmic: torch.Tensor
    B: torch.Tensor
    vlos: torch.Tensor
    inclination: torch.Tensor
    azimuth: torch.Tensor
    Pg: torch.Tensor | None = None
    z: torch.Tensor | None = None

    @classmethod
    def from_sir(cls, model, dtype: torch.dtype = torch.float64) -> "Atmosphere":
        """From a :class:`helioforge.data.sir.SIRModel` (units are the same).

        Parameters
        ----------
        model : SIRModel
            Depth-stratified model; arrays of shape (n,), cgs units (T [K], P_e and P_g [dyn cm⁻²],
            vmic and vlos [cm s⁻¹], B [G], angles [deg], z [km]).
        dtype : torch.dtype
            dtype of the tensors (default float64).

        Returns
        -------
        Atmosphere
            Tensors of shape (n,), in the model's depth order. ``Pg`` is None unless the model has a
            gas pressure that is positive at every depth (NaN counts as absent).
        """
        t = lambda name: torch.as_tensor(np.asarray(getattr(model, name), dtype=np.float64), dtype=dtype)  # noqa: E731
        pg = t("Pg") if getattr(model, "Pg", None) is not None and np.all(np.asarray(model.Pg) > 0) else None
        return cls(log_tau=t("log_tau"), T=t("T"), Pe=t("Pe"), vmic=t("vmic"), B=t("B"), vlos=t("vlos"),
                   inclination=t("inclination"), azimuth=t("azimuth"), Pg=pg, z=t("z"))

    @classmethod
    def stack(cls, atmospheres: list["Atmosphere"]) -> "Atmosphere":
        """Stack atmospheres on the same log τ grid into a batch (n_atm, n).

        Parameters
        ----------
        atmospheres : list of Atmosphere
            Atmospheres with tensors of the same shape (n,) (or same batch shape). The grid is not
            checked: ``log_tau`` of the first is kept as the shared grid.

        Returns
        -------
        Atmosphere
            Fields stacked along a new leading axis, (n_atm, ...); an optional field (``Pg``, ``z``)
            is None if any input lacks it.

        Raises
        ------
        RuntimeError
            From :func:`torch.stack` if the tensors differ in shape.
        IndexError
            If ``atmospheres`` is empty.
        """
        out = {}
        for f in fields(cls):
            vals = [getattr(a, f.name) for a in atmospheres]
            if f.name == "log_tau":
                out[f.name] = vals[0]
            elif any(v is None for v in vals):
                out[f.name] = None
            else:
                out[f.name] = torch.stack(vals)
        return cls(**out)

    def in_hydrostatic_equilibrium(self) -> "Atmosphere":
        """A copy whose P_e, P_g and z follow from T by :func:`hydrostatic_equilibrium`."""
        Pe, Pg, _, z = hydrostatic_equilibrium(self.log_tau, self.T)
        return replace(self, Pe=Pe, Pg=Pg, z=z)

    @property
    def batch_shape(self) -> torch.Size:
        """Leading shape of the atmospheres (all but the depth axis)."""
        return self.T.shape[:-1]


def delo_linear(tau: torch.Tensor, K: PropagationElements, S: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """Emergent Stokes vector of a polarised atmosphere by the DELO-linear method.

    Parameters
    ----------
    tau : tensor (..., n)
        Continuum optical depth at the line wavelengths, increasing with depth index (index 0 is
        the top), τ[0] ≥ 0.
    K : PropagationElements, tensors (..., n, nλ)
        The propagation matrix divided by the continuum opacity; ``eta_I`` includes the
        continuum (≥ 1).
    S : tensor (..., n)
        Source function (Planck function in LTE), unpolarised.
    mu : float
        Cosine of the heliocentric angle; the ray's optical depth is τ/μ.

    Returns
    -------
    tensor (..., 4, nλ)
        I, Q, U, V at the surface.

    Notes
    -----
    Rees, Durrant & Murphy (1989, ApJ 339, 1093), DELO with a source function linear in
    τ_I = ∫η_I dτ between grid points. The matrix (1 + (F−G) K̃) is inverted in closed form:
    for A with the propagation-matrix structure and zero diagonal, A⁴ = p A² + q 1 with
    p = η² − ρ², q = (η·ρ)² (Cayley-Hamilton), so (1 + A)⁻¹ = [(1−p)(1 − A) + A² − A³]/(1 − p − q).
    The lower boundary is the diffusion approximation I = S + μ/η_I dS/dτ.
    """
    ex = lambda t: t.unsqueeze(-1)  # noqa: E731
    n = tau.shape[-1]
    eI = K.eta_I
    hQ, hU, hV = K.eta_Q / eI, K.eta_U / eI, K.eta_V / eI
    rQ, rU, rV = K.rho_Q / eI, K.rho_U / eI, K.rho_V / eI

    def at(t, i):
        return t[..., i, :]

    def amul(i, c, x):  # (c K̃_i) x
        x0, x1, x2, x3 = x
        q, u, v = at(hQ, i), at(hU, i), at(hV, i)
        rq, ru, rv = at(rQ, i), at(rU, i), at(rV, i)
        return (c * (q * x1 + u * x2 + v * x3),
                c * (q * x0 + rv * x2 - ru * x3),
                c * (u * x0 - rv * x1 + rq * x3),
                c * (v * x0 + ru * x1 - rq * x2))

    S_ = ex(S)
    i = n - 1
    dtau_bot = (tau[..., i] - tau[..., i - 1]).clamp_min(1e-30)
    dS = ex((S[..., i] - S[..., i - 1]) / dtau_bot)
    I0 = S_[..., i, :] + mu * dS / at(eI, i)
    state = (I0, torch.zeros_like(I0), torch.zeros_like(I0), torch.zeros_like(I0))
    for i in range(n - 2, -1, -1):
        d, u = i + 1, i  # deeper, upper
        delta = 0.5 * (at(eI, d) + at(eI, u)) * ex(tau[..., d] - tau[..., u]) / mu
        E = torch.exp(-delta)
        F = -torch.expm1(-delta)
        # G = (1 − (1+δ)e^−δ)/δ; its Taylor series below δ = 0.1 avoids float32 cancellation
        series = delta * (0.5 + delta * (-1.0 / 3 + delta * (1.0 / 8 + delta * (-1.0 / 30 + delta / 144))))
        G = torch.where(delta > 0.1, (F - delta * E) / delta.clamp_min(1e-30), series)
        Sd, Su = S_[..., d, :], S_[..., u, :]
        src_d = (Sd, Sd * at(hQ, d), Sd * at(hU, d), Sd * at(hV, d))
        src_u = (Su, Su * at(hQ, u), Su * at(hU, u), Su * at(hV, u))
        gk = amul(d, G, state)
        FG = F - G
        rhs = tuple(E * s - g + FG * a + G * b for s, g, a, b in zip(state, gk, src_u, src_d))
        # (1 + A)^-1 rhs with A = (F-G) K̃_u
        A1 = amul(u, FG, rhs)
        A2 = amul(u, FG, A1)
        A3 = amul(u, FG, A2)
        q, uu, v = FG * at(hQ, u), FG * at(hU, u), FG * at(hV, u)
        rq, ru, rv = FG * at(rQ, u), FG * at(rU, u), FG * at(rV, u)
        p = q * q + uu * uu + v * v - rq * rq - ru * ru - rv * rv
        qq = (q * rq + uu * ru + v * rv) ** 2
        det = 1.0 - p - qq
        state = tuple(((1.0 - p) * (r - a1) + a2 - a3) / det for r, a1, a2, a3 in zip(rhs, A1, A2, A3))
    return torch.stack(state, dim=-2)


def _line_opacity_ratio(line: SpectralLine, T, Pe, n_H, x, kappa_c):
    """Peak line-to-continuum opacity ratio η₀ (with the 1/(√π Δν_D) of the profile) and Δλ_D, a."""
    iel = ELEMENTS.index(line.element.title())
    u = partition_function(T, line.element.title())[..., line.ion_stage - 1]
    frac_stage = (1.0 - x[..., iel]) if line.ion_stage == 1 else x[..., iel]
    n_stage = n_H * float(_ABUND[iel]) * frac_stage
    kT = K_B * T
    lam_cm = line.wavelength_air * 1e-8
    nu0 = C_CGS / lam_cm
    boltz = torch.exp(-line.excitation_potential * EV / kT)
    stim = -torch.expm1(-H_PLANCK * nu0 / kT)
    alpha_int = _PI_E2_MC * 10.0 ** line.log_gf * n_stage / u * boltz * stim  # ∫ α dν [cm⁻¹ s⁻¹]
    return alpha_int, n_stage


def _damping(line: SpectralLine, T, n_HI, dnu_D):
    """Voigt a = Γ/(4π Δν_D): classical radiative + ABO van der Waals (Barklem et al. 2000)."""
    lam_cm = line.wavelength_air * 1e-8
    gamma_rad = 8.0 * math.pi ** 2 * E_CHARGE ** 2 / (3.0 * M_E * C_CGS * lam_cm ** 2)
    if line.vdw_sigma > 0:
        alpha = line.vdw_alpha
        mu_red = AMU / (1.0 / 1.008 + 1.0 / line.mass_amu)
        vbar = torch.sqrt(8.0 * K_B * T / (math.pi * mu_red))
        v0 = 1e6  # cm/s
        sigma = line.vdw_sigma * (vbar / v0) ** (-alpha)
        w = (4.0 / math.pi) ** (alpha / 2.0) * math.gamma((4.0 - alpha) / 2.0) * vbar * sigma
        gamma_vdw = 2.0 * w * n_HI
    else:  # Unsöld with SIR's enhancement factor is not implemented: ABO data are required
        raise ValueError(f"{line.name}: no Anstee-Barklem-O'Mara (α, σ) damping data")
    return (gamma_rad + gamma_vdw) / (4.0 * math.pi * dnu_D)


def synth_lte(atmos: Atmosphere, wavelength: torch.Tensor | np.ndarray, lines: list[SpectralLine] | None = None,
              mu: float = 1.0, continuum_wavelength: float | None = None,
              chunk: int = 128, molecules: bool = True, kernel: str = "torch",
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stokes I, Q, U, V of LTE lines in depth-stratified atmospheres, batched and differentiable.

    Parameters
    ----------
    atmos : Atmosphere
        Batch (...,) of atmospheres with n depth points (deepest first or top first).
    wavelength : tensor or array (nλ,)
        Air wavelengths [Å].
    lines : list of SpectralLine, optional
        Default :func:`helioforge.physics.atomic.fe_lines` (Fe I 6301.5 and 6302.5).
    mu : float
        Cosine of the heliocentric angle, (0, 1]. The model's v_LOS and field angles are taken
        as given in the line-of-sight frame; μ sets the slant optical path τ/μ.
    continuum_wavelength : float, optional
        Wavelength [Å] for the continuum opacity and Planck function; default the mean of the
        grid (the continuum varies by < 0.1 % over the 2.4 Å Hinode window).
    chunk : int
        Atmospheres per vectorised pass (at least 1,024 with ``kernel="fused"``). Passes of ~128 keep the temporaries of the
        (atmospheres × depth × wavelength) arrays in cache-friendly sizes; on a CPU much larger
        passes are slower per profile (allocator churn), on a GPU use thousands.
    molecules : bool
        Equation of state with H₂ and H₂⁺ (default; :func:`chemical_equilibrium`). At given
        P_e, H₂ takes hydrogen from the H⁻ and H continua and from the van der Waals perturbers
        (atomic H), so umbral lines deepen; False gives the atomic equation of state.
    kernel : {"torch", "fused"}
        ``"torch"`` (default): element-wise torch operations, differentiable, any device (the
        reference). ``"fused"``: the compiled one-pass kernel of
        :mod:`helioforge.physics.lte_fused` (CPU, not differentiable, float32 arithmetic inside).

    Returns
    -------
    stokes : tensor (..., 4, nλ)
        Emergent I, Q, U, V [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹].
    Ic : tensor (...,)
        Continuum intensity of the same atmosphere (line opacity off) [same units].

    Raises
    ------
    ValueError
        If ``mu`` is not in (0, 1], the grid has fewer than 3 depth points, or T or P_e is not
        positive.

    Notes
    -----
    See the module docstring for the physics and references. The optical depth at the line
    wavelengths is τ_c = ∫ (κ_c(λ)/κ₅₀₀) dτ₅₀₀ (trapezoid rule in log τ₅₀₀).
    """
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    if kernel not in ("torch", "fused"):
        raise ValueError(f"kernel must be 'torch' or 'fused', got {kernel!r}")
    lines = fe_lines() if lines is None else lines
    batch = atmos.batch_shape
    n = atmos.T.shape[-1]
    flat = {f.name: (getattr(atmos, f.name) if f.name == "log_tau" and getattr(atmos, f.name).dim() == 1
                     else getattr(atmos, f.name).reshape(-1, n) if getattr(atmos, f.name) is not None else None)
            for f in fields(Atmosphere)}
    total = flat["T"].shape[0]
    if kernel == "fused":  # the compiled pass is parallel over a chunk's atmospheres: larger chunks
        chunk = max(chunk, 1024)
    if total <= chunk:
        stokes, Ic = _synth_chunk(Atmosphere(**flat), wavelength, lines, mu, continuum_wavelength, molecules, kernel)
    else:
        parts = []
        for start in range(0, total, chunk):
            sub = {k: (v if v is None or (k == "log_tau" and v.dim() == 1) else v[start:start + chunk])
                   for k, v in flat.items()}
            parts.append(_synth_chunk(Atmosphere(**sub), wavelength, lines, mu, continuum_wavelength, molecules, kernel))
        stokes = torch.cat([p[0] for p in parts])
        Ic = torch.cat([p[1] for p in parts])
    return stokes.reshape(*batch, 4, -1), Ic.reshape(batch)


@dataclass
class _DepthQuantities:
    """What the synthesis needs at each depth point, top first: the shared preamble of both kernels."""

    tau_c: torch.Tensor  # (B, n) continuum optical depth at lam_c
    S: torch.Tensor  # (B, n) Planck function at lam_c
    B: torch.Tensor  # (B, n) [G]
    inc_r: torch.Tensor  # (B, n) [rad]
    azi_r: torch.Tensor  # (B, n) [rad]
    eta0: list[torch.Tensor]  # per line (B, n): peak line/continuum opacity
    dlam_D: list[torch.Tensor]  # per line (B, n): Doppler width [Å]
    damping: list[torch.Tensor]  # per line (B, n): Voigt a
    shift: list[torch.Tensor]  # per line (B, n): Doppler shift [Å]


def _depth_quantities(atmos: Atmosphere, wavelength: torch.Tensor, lines, continuum_wavelength,
                      molecules: bool = True) -> _DepthQuantities:
    T = atmos.T
    if T.shape[-1] < 3:
        raise ValueError("synth_lte needs at least 3 depth points")
    if bool((T <= 0).any()) or bool((atmos.Pe <= 0).any()):
        raise ValueError("synth_lte: T and Pe must be positive")
    log_tau = torch.as_tensor(atmos.log_tau, dtype=T.dtype, device=T.device).expand_as(T)
    fields_ = [T, atmos.Pe, atmos.vmic, atmos.B, atmos.vlos, atmos.inclination, atmos.azimuth]
    if bool((torch.diff(log_tau, dim=-1) > 0).all()):  # already top first
        pass
    else:  # SIR order (deepest first) → top first
        log_tau = log_tau.flip(-1)
        fields_ = [f.flip(-1) for f in fields_]
    T, Pe, vmic, B, vlos, inc, azi = fields_
    lam_c = float(continuum_wavelength or wavelength.mean())
    phi = saha_ratio(T)
    x = ionisation_fractions(T, Pe, phi)
    gas = chemical_equilibrium(T, Pe, molecules, phi)
    n_H, n_HI = gas.n_H, gas.n_HI
    kappa_c = continuum_opacity(T, Pe, lam_c, gas=gas)
    kappa_500 = continuum_opacity(T, Pe, 5000.0, gas=gas)
    tau500 = 10.0 ** log_tau
    integrand = _LN10 * tau500 * kappa_c / kappa_500
    dtau = 0.5 * (integrand[..., 1:] + integrand[..., :-1]) * torch.diff(log_tau, dim=-1)
    tau_c = torch.cat([(tau500[..., :1] * kappa_c[..., :1] / kappa_500[..., :1]),
                       tau500[..., :1] * kappa_c[..., :1] / kappa_500[..., :1] + torch.cumsum(dtau, -1)], dim=-1)
    q = _DepthQuantities(tau_c=tau_c, S=planck_nu(T, lam_c), B=B, inc_r=torch.deg2rad(inc), azi_r=torch.deg2rad(azi),
                         eta0=[], dlam_D=[], damping=[], shift=[])
    for line in lines:
        alpha_int, _ = _line_opacity_ratio(line, T, Pe, n_H, x, kappa_c)
        lam0 = line.wavelength_air
        dlam_D = lam0 / C_CGS * torch.sqrt(2.0 * K_B * T / (line.mass_amu * AMU) + vmic ** 2)
        dnu_D = C_CGS / (lam0 * 1e-8) * dlam_D / lam0
        q.damping.append(_damping(line, T, n_HI, dnu_D))
        q.eta0.append(alpha_int / (math.sqrt(math.pi) * dnu_D) / kappa_c)
        q.dlam_D.append(dlam_D)
        q.shift.append(lam0 * vlos / C_CGS)
    return q


def _synth_chunk(atmos: Atmosphere, wavelength, lines, mu, continuum_wavelength, molecules=True, kernel="torch"):
    wavelength = torch.as_tensor(wavelength, dtype=torch.float64, device=atmos.T.device)  # see zeeman_propagation
    q = _depth_quantities(atmos, wavelength, lines, continuum_wavelength, molecules)
    if kernel == "fused":
        from helioforge.physics.lte_fused import fused_stokes

        return fused_stokes(q, wavelength, lines, mu)
    K = None
    for line, eta0, dlam_D, a, shift in zip(lines, q.eta0, q.dlam_D, q.damping, q.shift):
        k = zeeman_propagation(line, wavelength, dlam_D, a, shift, q.B, q.inc_r, q.azi_r, eta0, n_terms=12)  # B=0: η_I = η₀H
        K = k if K is None else K + k
    K = replace(K, eta_I=1.0 + K.eta_I)
    stokes = delo_linear(q.tau_c, K, q.S, mu)
    column = q.S.unsqueeze(-1)  # continuum only: η_I = 1, every other element 0
    ones = PropagationElements(*(torch.ones_like(column) if f.name == "eta_I" else torch.zeros_like(column)
                                 for f in fields(PropagationElements)))
    Ic = delo_linear(q.tau_c, ones, q.S, mu)[..., 0, 0]
    return stokes, Ic
