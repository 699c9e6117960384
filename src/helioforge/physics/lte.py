"""LTE polarised synthesis of photospheric lines in depth-stratified atmospheres (PyTorch).

Input: model atmospheres on a log τ₅₀₀ grid (SIR units: T [K], P_e [dyn cm⁻²], v_mic and v_LOS
[cm s⁻¹], B [G], inclination and azimuth [deg]), batched over any leading shape (pixels, maps).
Output: Stokes I, Q, U, V [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹] of the lines on any wavelength grid, and
everything in between is a differentiable torch operation.

Physics (each piece is a public function with its reference):
- ionisation (Saha) with the partition functions of Gray (2005, *The Observation and Analysis of
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
from helioforge.physics.me import PropagationElements, zeeman_propagation

__all__ = [
    "EOS_VERSION",
    "Atmosphere",
    "ELEMENTS",
    "partition_function",
    "saha_ratio",
    "ionisation_fractions",
    "electron_pressure",
    "hydrogen_density",
    "h2_dissociation_constants",
    "GasState",
    "chemical_equilibrium",
    "gas_state_from_pg",
    "continuum_opacity",
    "hydrostatic_equilibrium",
    "planck_nu",
    "delo_linear",
    "synth_lte",
    "GRAVITY",
]

#: Version of the equation of state and opacities: a product synthesised with another version is
#: stale (2: H₂ and H₂⁺ formation, atomic-H continua and damping, H₂ Rayleigh scattering).
EOS_VERSION = 2

# --- constants (cgs) -------------------------------------------------------------------------
K_B = 1.380649e-16
H_PLANCK = 6.62607015e-27
C_CGS = 2.99792458e10
M_E = 9.1093837e-28
E_CHARGE = 4.80320471e-10
AMU = 1.66053907e-24
EV = 1.602176634e-12
SIGMA_THOMSON = 6.6524587e-25
#: Solar surface gravity [cm s⁻²].
GRAVITY = 2.7398e4
_LN10 = math.log(10.0)
_PI_E2_MC = math.pi * E_CHARGE ** 2 / (M_E * C_CGS)  # 0.02654 cm² s⁻¹

# --- elements: (symbol, log ε (Asplund et al. 2009), mass [amu], χ_ion [eV],
#     log u_I and log u_II at θ = 0.2, 0.4, ..., 2.0 (Gray 2005, Table D.2)) --------------------
_THETA_GRID = np.arange(0.2, 2.01, 0.2)
_ELEMENT_TABLE = [
    ("H", 12.00, 1.008, 13.598, [0.368, 0.303] + [0.301] * 8, [0.0] * 10),
    ("He", 10.93, 4.0026, 24.587, [0.0] * 10, [0.301] * 10),
    ("C", 8.43, 12.011, 11.260, [1.163, 1.037, 0.994, 0.975, 0.964, 0.958, 0.954, 0.951, 0.950, 0.948],
     [0.853, 0.782, 0.775, 0.774, 0.773, 0.772, 0.771, 0.770, 0.769, 0.767]),
    ("N", 7.83, 14.007, 14.534, [1.060, 0.729, 0.645, 0.616, 0.606, 0.603, 0.602, 0.602, 0.602, 0.602],
     [1.073, 0.993, 0.965, 0.953, 0.946, 0.942, 0.939, 0.937, 0.934, 0.932]),
    ("O", 8.69, 15.999, 13.618, [1.095, 0.991, 0.964, 0.953, 0.947, 0.944, 0.941, 0.939, 0.937, 0.935],
     [0.895, 0.655, 0.614, 0.604, 0.602, 0.602, 0.602, 0.602, 0.602, 0.602]),
    ("Na", 6.24, 22.990, 5.139, [4.316, 1.043, 0.493, 0.357, 0.320, 0.309, 0.307, 0.306, 0.306, 0.306], [0.0] * 10),
    ("Mg", 7.60, 24.305, 7.646, [2.839, 0.478, 0.110, 0.027, 0.007, 0.002, 0.001, 0.001, 0.001, 0.000],
     [0.537, 0.326, 0.304] + [0.301] * 7),
    ("Al", 6.45, 26.982, 5.986, [2.208, 0.973, 0.806, 0.774, 0.768, 0.767, 0.766, 0.764, 0.762, 0.760],
     [0.488, 0.053, 0.006] + [0.0] * 7),
    ("Si", 7.51, 28.086, 8.152, [1.521, 1.111, 1.030, 0.996, 0.976, 0.961, 0.949, 0.940, 0.932, 0.925],
     [0.900, 0.778, 0.764, 0.759, 0.755, 0.750, 0.746, 0.741, 0.736, 0.731]),
    ("S", 7.12, 32.06, 10.360, [1.153, 1.036, 0.990, 0.965, 0.949, 0.937, 0.929, 0.921, 0.915, 0.910],
     [0.967, 0.792, 0.688, 0.640, 0.618, 0.608, 0.604, 0.603, 0.602, 0.602]),
    ("K", 5.03, 39.098, 4.341, [4.647, 1.329, 0.642, 0.429, 0.351, 0.320, 0.308, 0.303, 0.302, 0.302], [0.0] * 10),
    ("Ca", 6.34, 40.078, 6.113, [5.238, 1.332, 0.465, 0.181, 0.073, 0.028, 0.010, 0.003, 0.001, 0.000],
     [0.825, 0.658, 0.483, 0.391, 0.344, 0.320, 0.309, 0.304, 0.302, 0.301]),
    ("Cr", 5.64, 51.996, 6.767, [4.284, 1.977, 1.380, 1.141, 1.022, 0.956, 0.917, 0.892, 0.875, 0.865],
     [1.981, 1.489, 1.125, 0.944, 0.856, 0.813, 0.793, 0.784, 0.781, 0.780]),
    ("Mn", 5.43, 54.938, 7.434, [4.804, 1.640, 1.037, 0.865, 0.808, 0.788, 0.781, 0.779, 0.778, 0.778],
     [2.056, 1.319, 1.052, 0.940, 0.889, 0.866, 0.855, 0.850, 0.848, 0.848]),
    ("Fe", 7.50, 55.845, 7.902, [3.760, 2.049, 1.664, 1.519, 1.446, 1.402, 1.372, 1.350, 1.332, 1.317],
     [2.307, 1.881, 1.749, 1.682, 1.638, 1.604, 1.575, 1.549, 1.525, 1.504]),
    ("Ni", 6.22, 58.693, 7.640, [2.779, 1.753, 1.577, 1.521, 1.490, 1.467, 1.447, 1.428, 1.410, 1.394],
     [1.659, 1.386, 1.215, 1.198, 1.037, 0.988, 0.953, 0.927, 0.908, 0.893]),
]
#: Symbols of the elements in the ionisation balance, in table order.
ELEMENTS = [row[0] for row in _ELEMENT_TABLE]
_ABUND = np.array([10 ** (row[1] - 12.0) for row in _ELEMENT_TABLE])
_MASS = np.array([row[2] for row in _ELEMENT_TABLE])
_CHI = np.array([row[3] for row in _ELEMENT_TABLE])
_LOGU = np.array([[row[4], row[5]] for row in _ELEMENT_TABLE])  # (n_el, 2, n_theta)
_SUM_ABUND = float(_ABUND.sum())
_MEAN_MASS_PER_H = float((_ABUND * _MASS).sum()) * AMU  # grams of matter per H nucleus


def _tensor(x, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def partition_function(T: torch.Tensor, element: str | None = None) -> torch.Tensor:
    """Partition functions u_I(T), u_II(T) (Gray 2005, Table D.2, linear in log u vs θ = 5040/T).

    Parameters
    ----------
    T : tensor (...,)
        Temperature [K]; θ outside 0.2-2.0 (T < 2520 K or > 25200 K) is clamped to the table.
    element : str, optional
        One symbol of :data:`ELEMENTS`; default all of them.

    Returns
    -------
    tensor (..., n_el, 2) or (..., 2)
        u of the neutral and singly ionised stage.

    Raises
    ------
    KeyError
        For an element not in the table.
    """
    theta = (5040.0 / T).clamp(0.2, 2.0)
    pos = (theta - 0.2) / 0.2
    i0 = pos.floor().clamp(0, len(_THETA_GRID) - 2)
    frac = (pos - i0).unsqueeze(-1).unsqueeze(-1)
    table = _tensor(_LOGU, T)
    if element is not None:
        table = table[ELEMENTS.index(element)][None]
    i0 = i0.long()
    lo = torch.movedim(table[:, :, i0], (0, 1), (-2, -1))  # (..., n_el, 2)
    hi = torch.movedim(table[:, :, i0 + 1], (0, 1), (-2, -1))
    logu = lo + (hi - lo) * frac
    u = 10.0 ** logu
    return u[..., 0, :] if element is not None else u


def saha_ratio(T: torch.Tensor) -> torch.Tensor:
    """Φ_j(T) = P_e n_II/n_I [dyn cm⁻²] for every element (Saha equation, Gray 2005 eq. 1.20).

    Returns
    -------
    tensor (..., n_el)
    """
    u = partition_function(T)  # (..., n_el, 2)
    kT = K_B * T.unsqueeze(-1)
    chi = _tensor(_CHI, T) * EV
    const = 2.0 * (2.0 * math.pi * M_E * K_B / H_PLANCK ** 2) ** 1.5 * K_B
    return const * T.unsqueeze(-1) ** 2.5 * (u[..., 1] / u[..., 0]) * torch.exp(-chi / kT)


def ionisation_fractions(T: torch.Tensor, Pe: torch.Tensor) -> torch.Tensor:
    """Fraction x_j = n_II/(n_I + n_II) = Φ_j/(Φ_j + P_e) of each element that is singly ionised.

    Parameters
    ----------
    T : tensor (...,)
        Temperature [K] (θ = 5040/T clamped to 0.2-2.0 in the partition functions).
    Pe : tensor (...,)
        Electron pressure [dyn cm⁻²], same shape as ``T``.

    Returns
    -------
    tensor (..., n_el)
        x_j in [0, 1], one per element of :data:`ELEMENTS` (in that order).

    References
    ----------
    Saha equation, Gray (2005) eq. 1.20 (:func:`saha_ratio`).
    """
    phi = saha_ratio(T)
    return phi / (phi + Pe.unsqueeze(-1))


# --- molecular hydrogen (H₂, H₂⁺) ------------------------------------------------------------
#: log₁₀ of 1/K_p(H₂) = P(H₂)/P(H)² [cm² dyn⁻¹], a cubic in θ = 5040/T (see :func:`h2_dissociation_constants`).
_LOG_INV_K_H2 = (-12.533505, 4.9251644, -5.6191273e-2, 3.2687661e-3)
#: log₁₀ of 1/K_p(H₂⁺) = P(H₂⁺)/(P(H) P(H⁺)) [cm² dyn⁻¹], same source.
_LOG_INV_K_H2PLUS = (-11.206998, 2.7942767, 7.9196803e-2, -2.4790744e-2)
_OTHER_ABUND = float(_ABUND[1:].sum())  # Σ_{j ≠ H} A_j: nuclei of He and the metals per H nucleus


def _cubic(coef: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    return coef[0] + x * (coef[1] + x * (coef[2] + x * coef[3]))


def _inverse_dissociation(T: torch.Tensor, molecules: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(H₂)/P(H)², P(H₂⁺)/(P(H) P(H⁺))) [cm² dyn⁻¹]; zeros when ``molecules`` is False."""
    if not molecules:
        zero = torch.zeros_like(T)
        return zero, zero
    theta = (5040.0 / T).clamp(0.2, 2.0)
    return 10.0 ** _cubic(_LOG_INV_K_H2, theta), 10.0 ** _cubic(_LOG_INV_K_H2PLUS, theta)


def h2_dissociation_constants(T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dissociation constants of H₂ and H₂⁺ in partial pressures.

    K_p(H₂) = P(H)²/P(H₂) and K_p(H₂⁺) = P(H) P(H⁺)/P(H₂⁺), with P the partial pressures of
    neutral atomic H, H⁺ (protons), H₂ and H₂⁺.

    Parameters
    ----------
    T : tensor (...,)
        Temperature [K]. θ = 5040/T is clamped to 0.2-2.0 (2520-25 200 K), the range of the
        atomic partition functions of :func:`partition_function`.

    Returns
    -------
    K_H2, K_H2plus : tensors (...,)
        [dyn cm⁻²].

    Notes
    -----
    log₁₀ K_p = −(c₀ + c₁θ + c₂θ² + c₃θ³) with the coefficients of the hydrogen
    ionisation-dissociation equilibrium of Mihalas (1967, *Methods in Computational Physics* 7,
    p. 10, as cited in Synspec's ``ELDENS``), the tabulated fits used unchanged by the equation of state of Wittmann (1974, Sol.
    Phys. 35, 11) in SIR (Ruiz Cobo & del Toro Iniesta 1992, routine ``molecb``), by Synspec and
    by Lightweaver (``lightweaver.wittmann.molecb``, Osborne & Milić 2021); those codes apply them
    below 16 000 K. Checked in ``tests/core/test_eos_h2.py`` against a direct Saha-Boltzmann sum over
    the rovibrational levels of H₂ (X¹Σg⁺ constants of Huber & Herzberg 1979, D₀ = 4.4781 eV):
    the fit is 0.01-0.022 dex above the sum at 2600-4500 K, where umbral H₂ forms (at 4000 K
    log₁₀ K_p(H₂) = 6.41, K_p ≈ 2.6e6 dyn cm⁻²), and ≤ 0.05 dex up to 8000 K, where the
    H₂ fraction of the photosphere is below 10⁻³ anyway.
    """
    inv_h2, inv_h2p = _inverse_dissociation(T, True)
    return 1.0 / inv_h2, 1.0 / inv_h2p


@dataclass
class GasState:
    """Composition of an LTE gas of H (H, H⁺, H₂, H₂⁺), He and the metals (tensors (...,)).

    Attributes
    ----------
    n_H : number density of all hydrogen nuclei, n_HI + n_HII + 2 n_H2 + 2 n_H2plus [cm⁻³]
    n_HI, n_HII : neutral atomic hydrogen and protons [cm⁻³]
    n_H2, n_H2plus : H₂ and H₂⁺ molecules [cm⁻³]
    n_e : electrons [cm⁻³]
    Pg : gas pressure of all particles including electrons [dyn cm⁻²]
    rho : mass density [g cm⁻³]
    """

    n_H: torch.Tensor
    n_HI: torch.Tensor
    n_HII: torch.Tensor
    n_H2: torch.Tensor
    n_H2plus: torch.Tensor
    n_e: torch.Tensor
    Pg: torch.Tensor
    rho: torch.Tensor

    @property
    def h2_fraction(self) -> torch.Tensor:
        """Fraction 2 n(H₂)/n_H of the hydrogen nuclei bound in H₂."""
        return 2.0 * self.n_H2 / self.n_H


def _gas_state(T: torch.Tensor, Pe: torch.Tensor, p_HI: torch.Tensor, y: torch.Tensor, inv_h2: torch.Tensor,
               inv_h2p: torch.Tensor) -> GasState:
    """All densities from the partial pressure p_HI of neutral atomic H and y = n_HII/n_HI."""
    kT = K_B * T
    c = inv_h2 + y * inv_h2p  # (P(H₂) + P(H₂⁺))/P(H)²
    p_nuclei = p_HI * (1.0 + y) + 2.0 * c * p_HI ** 2  # n_H kT
    Pg = Pe + p_HI * (1.0 + y) + c * p_HI ** 2 + p_nuclei * _OTHER_ABUND
    n_H = p_nuclei / kT
    return GasState(n_H=n_H, n_HI=p_HI / kT, n_HII=y * p_HI / kT, n_H2=inv_h2 * p_HI ** 2 / kT,
                    n_H2plus=inv_h2p * y * p_HI ** 2 / kT, n_e=Pe / kT, Pg=Pg, rho=n_H * _MEAN_MASS_PER_H)


def chemical_equilibrium(T: torch.Tensor, Pe: torch.Tensor, molecules: bool = True) -> GasState:
    """Saha-Boltzmann composition of the gas at given temperature and electron pressure.

    Solves, with P = n k T the partial pressures, y = Φ_H/P_e = P(H⁺)/P(H) (Saha, Gray 2005
    eq. 1.20), P(H₂) = P(H)²/K_p(H₂), P(H₂⁺) = P(H) P(H⁺)/K_p(H₂⁺)
    (:func:`h2_dissociation_constants`) and the metals singly ionised (x_j of
    :func:`ionisation_fractions`), the charge balance

        P_e = P(H⁺) + P(H₂⁺) + n_H k T Σ_{j≠H} A_j x_j,
        n_H k T = P(H) + P(H⁺) + 2 P(H₂) + 2 P(H₂⁺)   (hydrogen nuclei conserved),

    a quadratic in P(H) solved in closed form (the H₂/H₂⁺ scheme of Mihalas 1967 and
    Wittmann 1974, without H⁻, whose share of hydrogen is < 10⁻⁷). Differentiable.

    Parameters
    ----------
    T, Pe : tensors, same shape (...,)
        Temperature [K] and electron pressure [dyn cm⁻²], positive.
    molecules : bool
        False drops H₂ and H₂⁺: the atomic equation of state of Gray (2005) eq. 9.8.

    Returns
    -------
    GasState
        Densities, P_g and ρ. ``h2_fraction`` is the share of hydrogen nuclei in H₂
        (0.14-0.25 at log τ₅₀₀ = 0 … −1 of the umbral model M of Maltby et al. 1986, < 1.5e-3
        in HSRA).
    """
    phi = saha_ratio(T)
    y = phi[..., 0] / Pe
    x_other = phi[..., 1:] / (phi[..., 1:] + Pe.unsqueeze(-1))
    s_other = (x_other * _tensor(_ABUND[1:], T)).sum(-1)
    inv_h2, inv_h2p = _inverse_dissociation(T, molecules)
    c = inv_h2 + y * inv_h2p
    # P_e = P(H) [y + S (1 + y)] + P(H)² [y/K(H₂⁺) + 2 S c], S = Σ_{j≠H} A_j x_j
    lin = y + s_other * (1.0 + y)
    quad = y * inv_h2p + 2.0 * s_other * c
    p_HI = 2.0 * Pe / (lin + torch.sqrt(lin ** 2 + 4.0 * quad * Pe))
    return _gas_state(T, Pe, p_HI, y, inv_h2, inv_h2p)


def _neutral_h_from_pg(y, c, D):
    """P(H) from the heavy-particle pressure D = P_g − P_e: c(1 + 2A) P(H)² + (1 + y)(1 + A) P(H) = D."""
    beta = (1.0 + y) * (1.0 + _OTHER_ABUND)
    alpha = c * (1.0 + 2.0 * _OTHER_ABUND)
    root = torch.sqrt(beta ** 2 + 4.0 * alpha * D)
    return 2.0 * D / (beta + root), alpha, beta


def gas_state_from_pg(T: torch.Tensor, Pg: torch.Tensor, Pe: torch.Tensor | None = None,
                      molecules: bool = True) -> GasState:
    """Composition of the gas at given temperature and gas pressure.

    Parameters
    ----------
    T, Pg : tensors, same shape (...,)
        Temperature [K] and gas pressure [dyn cm⁻²].
    Pe : tensor, optional
        The electron pressure if already known (:func:`electron_pressure`); solved otherwise.
    molecules : bool
        Include H₂ and H₂⁺ (default).

    Returns
    -------
    GasState
        Its ``Pg`` equals the input gas pressure to rounding.
    """
    if Pe is None:
        Pe = electron_pressure(T, Pg, molecules=molecules)
    y = saha_ratio(T)[..., 0] / Pe
    inv_h2, inv_h2p = _inverse_dissociation(T, molecules)
    p_HI, _, _ = _neutral_h_from_pg(y, inv_h2 + y * inv_h2p, (Pg - Pe).clamp_min(1e-30 * Pg))
    return _gas_state(T, Pe, p_HI, y, inv_h2, inv_h2p)


def hydrogen_density(T: torch.Tensor, Pe: torch.Tensor, molecules: bool = True) -> torch.Tensor:
    """Total hydrogen nuclei density n_H [cm⁻³] (atoms, ions and molecules) from T [K] and P_e [dyn cm⁻²].

    The charge balance of :func:`chemical_equilibrium`; with ``molecules=False`` it reduces to
    n_e = n_H Σ_j A_j x_j. Tensors of the same shape in and out.

    Parameters
    ----------
    T : tensor (...,)
        Temperature [K].
    Pe : tensor (...,)
        Electron pressure [dyn cm⁻²], same shape as ``T``.
    molecules : bool
        Include H₂ and H₂⁺ (default); False gives the atomic equation of state of Gray (2005) eq. 9.8.

    Returns
    -------
    tensor (...,)
        n_H [cm⁻³], differentiable with respect to ``T`` and ``Pe``.
    """
    return chemical_equilibrium(T, Pe, molecules).n_H


def electron_pressure(T: torch.Tensor, Pg: torch.Tensor, iterations: int = 12, molecules: bool = True) -> torch.Tensor:
    """Electron pressure P_e [dyn cm⁻²] in ionisation and dissociation equilibrium with gas pressure P_g.

    For a trial P_e the heavy-particle pressure P_g − P_e fixes the partial pressure of neutral
    atomic hydrogen P(H) (a quadratic with H₂ and H₂⁺, :func:`chemical_equilibrium`), and the
    residual is ln P_e − ln[P(H⁺) + P(H₂⁺) + n_H k T Σ_{j≠H} A_j x_j]; without molecules
    (``molecules=False``) this is Gray (2005) eq. 9.8, P_e = P_g Σ A_j x_j / (Σ A_j + Σ A_j x_j).
    The root is bracketed by bisection in ln P_e, then polished by Newton steps with the
    analytic derivative, which carry the gradient (implicit-function derivative), so the result
    is differentiable with respect to T and P_g.

    Parameters
    ----------
    T, Pg : tensors, same shape
        Temperature [K] and gas pressure [dyn cm⁻²].
    iterations : int
        Unused (kept for compatibility); the bisection and Newton counts are fixed.
    molecules : bool
        Include H₂ and H₂⁺ (default); False gives the atomic equation of state.

    Returns
    -------
    tensor, same shape
    """
    abund = _tensor(_ABUND[1:], T)
    phi = saha_ratio(T)
    phi_H, phi_o = phi[..., 0], phi[..., 1:]
    inv_h2, inv_h2p = _inverse_dissociation(T, molecules)

    def residual(lnPe, with_derivative=False):
        P = torch.exp(lnPe)
        y = phi_H / P
        c = inv_h2 + y * inv_h2p
        D = (Pg - P).clamp_min(1e-30 * Pg)
        p, alpha, beta = _neutral_h_from_pg(y, c, D)
        p_nuclei = (1.0 + y) * p + 2.0 * c * p ** 2
        x = phi_o / (phi_o + P.unsqueeze(-1))
        s = (abund * x).sum(-1)
        R = y * p * (1.0 + inv_h2p * p) + p_nuclei * s  # P(H⁺) + P(H₂⁺) + metals' electrons
        f = lnPe - torch.log(R)
        if not with_derivative:
            return f, None
        # d/d ln P_e of every term (y, c, α, β ∝ 1/P_e parts; D' = −P_e)
        dy, dc = -y, -y * inv_h2p
        dbeta, dalpha = -y * (1.0 + _OTHER_ABUND), -y * inv_h2p * (1.0 + 2.0 * _OTHER_ABUND)
        dp = -(dalpha * p ** 2 + dbeta * p + P) / (2.0 * alpha * p + beta)
        dnuc = dy * p + (1.0 + y) * dp + 2.0 * dc * p ** 2 + 4.0 * c * p * dp
        ds = -(abund * x * (1.0 - x)).sum(-1)
        dR = dy * p * (1.0 + inv_h2p * p) + y * dp * (1.0 + 2.0 * inv_h2p * p) + dnuc * s + p_nuclei * ds
        return f, 1.0 - dR / R

    lnPg = torch.log(Pg)
    with torch.no_grad():  # robust bracket: bisection in ln P_e (the residual increases with P_e)
        lo = lnPg - 30.0
        hi = lnPg - math.log(2.0)
        for _ in range(12):  # bracket 30 → 7e-3 in ln P_e, where Newton converges quadratically (f' ≥ 1)
            mid = 0.5 * (lo + hi)
            f, _ = residual(mid)
            lo = torch.where(f < 0, mid, lo)
            hi = torch.where(f < 0, hi, mid)
        lnPe = 0.5 * (lo + hi)
        for _ in range(3):  # 7e-3 → ≈ 1e-5 → 1e-10 → rounding
            f, df = residual(lnPe, with_derivative=True)
            lnPe = lnPe - f / df
    # one more Newton step from the converged (detached) root carries the gradient: the
    # implicit-function derivative d ln P_e = −(∂f/∂θ) dθ / f'
    f, df = residual(lnPe, with_derivative=True)
    return torch.exp(lnPe - f / df)


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


def hydrostatic_equilibrium(log_tau: torch.Tensor, T: torch.Tensor, gravity: float = GRAVITY,
                            substeps: int = 2, molecules: bool = True,
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
    log_tau = torch.as_tensor(log_tau, dtype=T.dtype, device=T.device)
    log_tau = log_tau.expand_as(T)
    if T.shape[-1] < 2:
        raise ValueError("hydrostatic_equilibrium needs at least two depth points")
    d = torch.diff(log_tau, dim=-1)
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("log_tau must be strictly monotonic")
    top_first = bool((d > 0).all())
    if not top_first:  # work top → bottom
        return tuple(t.flip(-1) for t in hydrostatic_equilibrium(log_tau.flip(-1), T.flip(-1), gravity, substeps,
                                                                 molecules))

    def kappa_mass(temp, pg):
        pe = electron_pressure(temp, pg, molecules=molecules)
        gas = gas_state_from_pg(temp, pg, pe, molecules)
        return continuum_opacity(temp, pe, 5000.0, gas=gas) / gas.rho, pe

    tau0 = 10.0 ** log_tau[..., 0]
    pg = torch.full_like(tau0, 1.0) * 10.0
    for _ in range(25):  # top boundary: P_g = g τ / κ_m
        km, _ = kappa_mass(T[..., 0], pg)
        pg = torch.sqrt(pg * gravity * tau0 / km)
    ln_pg = [torch.log(pg)]

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
    Pg = torch.exp(torch.stack(ln_pg, dim=-1))
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
              chunk: int = 128, molecules: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
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
        Atmospheres per vectorised pass. Passes of ~128 keep the temporaries of the
        (atmospheres × depth × wavelength) arrays in cache-friendly sizes; on a CPU much larger
        passes are slower per profile (allocator churn), on a GPU use thousands.
    molecules : bool
        Equation of state with H₂ and H₂⁺ (default; :func:`chemical_equilibrium`). At given
        P_e, H₂ takes hydrogen from the H⁻ and H continua and from the van der Waals perturbers
        (atomic H), so umbral lines deepen; False gives the atomic equation of state.

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
    lines = fe_lines() if lines is None else lines
    batch = atmos.batch_shape
    n = atmos.T.shape[-1]
    flat = {f.name: (getattr(atmos, f.name) if f.name == "log_tau" and getattr(atmos, f.name).dim() == 1
                     else getattr(atmos, f.name).reshape(-1, n) if getattr(atmos, f.name) is not None else None)
            for f in fields(Atmosphere)}
    total = flat["T"].shape[0]
    if total <= chunk:
        stokes, Ic = _synth_chunk(Atmosphere(**flat), wavelength, lines, mu, continuum_wavelength, molecules)
    else:
        parts = []
        for start in range(0, total, chunk):
            sub = {k: (v if v is None or (k == "log_tau" and v.dim() == 1) else v[start:start + chunk])
                   for k, v in flat.items()}
            parts.append(_synth_chunk(Atmosphere(**sub), wavelength, lines, mu, continuum_wavelength, molecules))
        stokes = torch.cat([p[0] for p in parts])
        Ic = torch.cat([p[1] for p in parts])
    return stokes.reshape(*batch, 4, -1), Ic.reshape(batch)


def _synth_chunk(atmos: Atmosphere, wavelength, lines, mu, continuum_wavelength, molecules=True):
    T = atmos.T
    if T.shape[-1] < 3:
        raise ValueError("synth_lte needs at least 3 depth points")
    if bool((T <= 0).any()) or bool((atmos.Pe <= 0).any()):
        raise ValueError("synth_lte: T and Pe must be positive")
    wavelength = torch.as_tensor(wavelength, dtype=torch.float64, device=T.device)  # see zeeman_propagation
    log_tau = torch.as_tensor(atmos.log_tau, dtype=T.dtype, device=T.device).expand_as(T)
    fields_ = [T, atmos.Pe, atmos.vmic, atmos.B, atmos.vlos, atmos.inclination, atmos.azimuth]
    if bool((torch.diff(log_tau, dim=-1) > 0).all()):  # already top first
        pass
    else:  # SIR order (deepest first) → top first
        log_tau = log_tau.flip(-1)
        fields_ = [f.flip(-1) for f in fields_]
    T, Pe, vmic, B, vlos, inc, azi = fields_
    lam_c = float(continuum_wavelength or wavelength.mean())
    x = ionisation_fractions(T, Pe)
    gas = chemical_equilibrium(T, Pe, molecules)
    n_H, n_HI = gas.n_H, gas.n_HI
    kappa_c = continuum_opacity(T, Pe, lam_c, gas=gas)
    kappa_500 = continuum_opacity(T, Pe, 5000.0, gas=gas)
    tau500 = 10.0 ** log_tau
    integrand = _LN10 * tau500 * kappa_c / kappa_500
    dtau = 0.5 * (integrand[..., 1:] + integrand[..., :-1]) * torch.diff(log_tau, dim=-1)
    tau_c = torch.cat([(tau500[..., :1] * kappa_c[..., :1] / kappa_500[..., :1]),
                       tau500[..., :1] * kappa_c[..., :1] / kappa_500[..., :1] + torch.cumsum(dtau, -1)], dim=-1)
    inc_r, azi_r = torch.deg2rad(inc), torch.deg2rad(azi)
    K = None
    for line in lines:
        alpha_int, _ = _line_opacity_ratio(line, T, Pe, n_H, x, kappa_c)
        lam0 = line.wavelength_air
        dlam_D = lam0 / C_CGS * torch.sqrt(2.0 * K_B * T / (line.mass_amu * AMU) + vmic ** 2)
        dnu_D = C_CGS / (lam0 * 1e-8) * dlam_D / lam0
        a = _damping(line, T, n_HI, dnu_D)
        eta0 = alpha_int / (math.sqrt(math.pi) * dnu_D) / kappa_c
        shift = lam0 * vlos / C_CGS
        k = zeeman_propagation(line, wavelength, dlam_D, a, shift, B, inc_r, azi_r, eta0, n_terms=12)  # B=0: η_I = η₀H
        K = k if K is None else K + k
    K = replace(K, eta_I=1.0 + K.eta_I)
    S = planck_nu(T, lam_c)
    stokes = delo_linear(tau_c, K, S, mu)
    ones = PropagationElements(*(torch.ones_like(T).unsqueeze(-1) if f.name == "eta_I" else torch.zeros_like(T).unsqueeze(-1)
                                 for f in fields(PropagationElements)))
    Ic = delo_linear(tau_c, ones, S, mu)[..., 0, 0]
    return stokes, Ic
