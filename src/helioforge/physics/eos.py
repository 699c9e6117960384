"""Equation of state of the photosphere in LTE (PyTorch): constants, abundances, partition
functions, ionisation (Saha), the H₂ and H₂⁺ dissociation equilibria, the gas state from
(T, P_e) or (T, P_g), and the electron pressure.

- ionisation (Saha) with the partition functions of Gray (2005, *The Observation and Analysis of
  Stellar Photospheres*, 3rd ed., Table D.2), interpolated linearly in log u against θ = 5040/T,
  for the 16 elements that supply electrons in the photosphere (abundances Asplund et al. 2009);
- H₂ and H₂⁺ (Saha-Boltzmann with the tabulated K_p(θ) of Mihalas 1967 as used by Wittmann
  1974/SIR; :func:`chemical_equilibrium`).

Every function is batched over any leading shape and differentiable. Used by the LTE synthesis
(:mod:`helioforge.physics.lte`) and the model atmospheres of the inversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "EOS_VERSION",
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


def ionisation_fractions(T: torch.Tensor, Pe: torch.Tensor, phi: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction x_j = n_II/(n_I + n_II) = Φ_j/(Φ_j + P_e) of each element that is singly ionised.

    Parameters
    ----------
    T : tensor (...,)
        Temperature [K] (θ = 5040/T clamped to 0.2-2.0 in the partition functions).
    Pe : tensor (...,)
        Electron pressure [dyn cm⁻²], same shape as ``T``.
    phi : tensor (..., n_el), optional
        :func:`saha_ratio` of ``T`` if already computed.

    Returns
    -------
    tensor (..., n_el)
        x_j in [0, 1], one per element of :data:`ELEMENTS` (in that order).

    References
    ----------
    Saha equation, Gray (2005) eq. 1.20 (:func:`saha_ratio`).
    """
    phi = saha_ratio(T) if phi is None else phi
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


def chemical_equilibrium(T: torch.Tensor, Pe: torch.Tensor, molecules: bool = True,
                         phi: torch.Tensor | None = None) -> GasState:
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
    phi : tensor (..., n_el), optional
        :func:`saha_ratio` of ``T`` if already computed.

    Returns
    -------
    GasState
        Densities, P_g and ρ. ``h2_fraction`` is the share of hydrogen nuclei in H₂
        (0.14-0.25 at log τ₅₀₀ = 0 … −1 of the umbral model M of Maltby et al. 1986, < 1.5e-3
        in HSRA).
    """
    phi = saha_ratio(T) if phi is None else phi
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
                      molecules: bool = True, phi: torch.Tensor | None = None) -> GasState:
    """Composition of the gas at given temperature and gas pressure.

    Parameters
    ----------
    T, Pg : tensors, same shape (...,)
        Temperature [K] and gas pressure [dyn cm⁻²].
    Pe : tensor, optional
        The electron pressure if already known (:func:`electron_pressure`); solved otherwise.
    molecules : bool
        Include H₂ and H₂⁺ (default).
    phi : tensor (..., n_el), optional
        :func:`saha_ratio` of ``T`` if already computed.

    Returns
    -------
    GasState
        Its ``Pg`` equals the input gas pressure to rounding.
    """
    phi = saha_ratio(T) if phi is None else phi
    if Pe is None:
        Pe = electron_pressure(T, Pg, molecules=molecules, phi=phi)
    y = phi[..., 0] / Pe
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


#: Newton steps tried from a warm start (:func:`electron_pressure` ``initial``) before the
#: bracketed solve takes over.
WARM_START_STEPS = 6


def electron_pressure(T: torch.Tensor, Pg: torch.Tensor, iterations: int = 12, molecules: bool = True,
                      phi: torch.Tensor | None = None, initial: torch.Tensor | None = None) -> torch.Tensor:
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
    phi : tensor (..., n_el), optional
        :func:`saha_ratio` of ``T`` if already computed.
    initial : tensor, same shape, optional
        A guess of ln P_e (e.g. the solution at the neighbouring depth point scaled by P_g):
        Newton steps start from it (warm start: 3-4 residual evaluations instead of 16) and
        stop when every step is below 10⁻¹⁰ (float64; 10⁻⁶ in float32); if any point has not
        converged after :data:`WARM_START_STEPS` steps, the whole batch is solved again with
        the bracketed method. Same root to rounding.

    Returns
    -------
    tensor, same shape
    """
    abund = _tensor(_ABUND[1:], T)
    phi = saha_ratio(T) if phi is None else phi
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
    if initial is not None:
        with torch.no_grad():
            tol = 1e-10 if T.dtype == torch.float64 else 1e-6
            lnPe = torch.minimum(initial.detach().to(lnPg.dtype), lnPg - math.log(2.0))
            step = None
            for _ in range(WARM_START_STEPS):
                f, df = residual(lnPe, with_derivative=True)
                step = f / df
                lnPe = lnPe - step
                if bool((step.abs() < tol).all()):
                    break
            bad = ~(step.abs() < tol)  # also catches NaN
        if not bool(bad.any()):
            f, df = residual(lnPe, with_derivative=True)
            return torch.exp(lnPe - f / df)
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
