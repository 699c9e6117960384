"""Atomic data of the photospheric lines: the SIR ``LINEAS`` list and Zeeman patterns in LS coupling.

The two Hinode SP lines are Fe I 6301.5012 Å (5P₂–5D₂, anomalous Zeeman pattern, g_eff = 1.67)
and Fe I 6302.4936 Å (5P₁–5D₀, normal triplet, g_eff = 2.5), entries 200/201 of the SIR line
list (``stokes/atmospheres/LINEAS`` in the data folder). Zeeman components follow Landi
Degl'Innocenti & Landolfi (2004, LL04) §3.1-3.3: Landé factors in LS coupling (eq. 3.8), shifts
in units of the Lorentz shift, and relative strengths from squared 3-j symbols (eq. 3.4),
normalised so each of σ_b, π, σ_r sums to one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from sympy import Rational
from sympy.physics.wigner import wigner_3j

from helioforge.config import data_root

__all__ = [
    "TELLURIC_LINES_A",
    "ZeemanComponents",
    "SpectralLine",
    "LineListError",
    "lande_factor",
    "zeeman_components",
    "effective_lande",
    "read_lineas",
    "fe_lines",
    "ELEMENT_MASS_AMU",
]

log = logging.getLogger(__name__)

#: Atomic masses (amu) of the elements the line list uses.
#: Telluric O₂ lines inside the Hinode SP range [Å, air]. They are seen from the ground only:
#: Hinode observes from orbit (≈ 680 km), and the mean I of the sample patch and of the 1,024
#: pixels of the 2007 slit file is flat at both positions (no dip beyond the 3·10⁻³ noise; from
#: the ground the O₂ lines are tens of per cent deep). Kept for ground-based data.
TELLURIC_LINES_A = (6302.0005, 6302.7629)
ELEMENT_MASS_AMU = {"FE": 55.845, "TI": 47.867, "CR": 51.996, "NI": 58.693, "CA": 40.078, "SI": 28.086,
                    "MG": 24.305, "NA": 22.990, "MN": 54.938, "CO": 58.933, "V": 50.942, "XX": 55.845}

_L_LETTERS = "SPDFGHIKLMNOQRTUV"


class LineListError(ValueError):
    """A line list entry is missing or cannot be parsed; names the file, entry and problem."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def lande_factor(S: float, L: float, J: float) -> float:
    """Landé factor of a level in LS coupling (LL04 eq. 3.8, g_s = 2); 0 for J = 0 (no splitting).

    Parameters
    ----------
    S, L, J : float
        Spin, orbital and total angular momentum quantum numbers of the level (half-integers allowed).

    Returns
    -------
    float
        g = 1 + [J(J+1) + S(S+1) − L(L+1)] / [2J(J+1)], dimensionless; 0.0 when J = 0.

    References
    ----------
    Landi Degl'Innocenti & Landolfi (2004), eq. 3.8.
    """
    if J == 0:
        return 0.0
    return 1.0 + (J * (J + 1) + S * (S + 1) - L * (L + 1)) / (2.0 * J * (J + 1))


@dataclass(frozen=True)
class ZeemanComponents:
    """Zeeman pattern of a line, grouped by Δm.

    Attributes
    ----------
    shift_b, shift_p, shift_r : np.ndarray
        Wavelength shifts of the σ_b (blue), π and σ_r (red) components in units of the
        Lorentz shift Δλ_B = 4.6686e-13 λ₀²[Å] B[G] Å; positive is redward.
    strength_b, strength_p, strength_r : np.ndarray
        Relative strengths, each group summing to one (LL04 eq. 3.4).
    """

    shift_b: np.ndarray
    strength_b: np.ndarray
    shift_p: np.ndarray
    strength_p: np.ndarray
    shift_r: np.ndarray
    strength_r: np.ndarray


def _jvals(J: float) -> list[Fraction]:
    Jf = Fraction(J).limit_denominator(2)
    return [Jf - k for k in range(int(2 * Jf) + 1)]


def zeeman_components(S_l: float, L_l: float, J_l: float, S_u: float, L_u: float, J_u: float) -> ZeemanComponents:
    """Zeeman components of the transition lower (S_l, L_l, J_l) → upper (S_u, L_u, J_u) in LS coupling.

    A component M_u → M_l emits at frequency ν₀ + ν_L (g_u M_u − g_l M_l) (LL04 eq. 3.10), i.e. at a
    wavelength shifted by (g_l M_l − g_u M_u) Lorentz units; its strength is
    3 (J_u J_l 1; −M_u M_l −q)² with q = M_l − M_u (LL04 eq. 3.4). Components with q = −1 lie to the
    blue for positive Landé factors (σ_b), q = 0 is π and q = +1 is σ_r.

    Returns
    -------
    ZeemanComponents

    Raises
    ------
    ValueError
        If |J_u − J_l| > 1 or J_u = J_l = 0 (not an electric-dipole transition).
    """
    if abs(J_u - J_l) > 1 or (J_u == 0 and J_l == 0):
        raise ValueError(f"J_l={J_l} → J_u={J_u} is not an electric-dipole transition")
    g_l = lande_factor(S_l, L_l, J_l)
    g_u = lande_factor(S_u, L_u, J_u)
    groups: dict[int, tuple[list[float], list[float]]] = {-1: ([], []), 0: ([], []), 1: ([], [])}
    for Mu in _jvals(J_u):
        for Ml in _jvals(J_l):
            q = Ml - Mu
            if abs(q) > 1:
                continue
            s = wigner_3j(Rational(Fraction(J_u).limit_denominator(2)), Rational(Fraction(J_l).limit_denominator(2)), 1,
                          -Rational(Mu), Rational(Ml), -Rational(q))
            strength = 3.0 * float(s) ** 2
            if strength == 0.0:
                continue
            groups[int(q)][0].append(g_l * float(Ml) - g_u * float(Mu))
            groups[int(q)][1].append(strength)
    out = {}
    for q, name in [(-1, "b"), (0, "p"), (1, "r")]:
        shifts, strengths = (np.asarray(x, dtype=np.float64) for x in groups[q])
        out[f"shift_{name}"] = shifts
        out[f"strength_{name}"] = strengths / strengths.sum()
    return ZeemanComponents(**out)


def effective_lande(S_l, L_l, J_l, S_u, L_u, J_u) -> float:
    """Effective Landé factor ḡ = (g_u + g_l)/2 + (g_u − g_l)/4 [J_u(J_u+1) − J_l(J_l+1)] (LL04 eq. 3.44).

    Parameters
    ----------
    S_l, L_l, J_l : float
        Quantum numbers of the lower level.
    S_u, L_u, J_u : float
        Quantum numbers of the upper level.

    Returns
    -------
    float
        ḡ, dimensionless; g_l when J_u = 0 and g_u when J_l = 0 (e.g. 2.5 for Fe I 6302.5 Å, 1.67 for 6301.5 Å).

    References
    ----------
    Landi Degl'Innocenti & Landolfi (2004), eq. 3.44.
    """
    g_l = lande_factor(S_l, L_l, J_l)
    g_u = lande_factor(S_u, L_u, J_u)
    if J_u == 0:
        return g_l
    if J_l == 0:
        return g_u
    return 0.5 * (g_u + g_l) + 0.25 * (g_u - g_l) * (J_u * (J_u + 1) - J_l * (J_l + 1))


@dataclass(frozen=True)
class SpectralLine:
    """One spectral line with the data an LTE synthesis needs.

    Attributes
    ----------
    index : int
        Entry number in the line list.
    element : str
        Element symbol, upper case (``"FE"``).
    ion_stage : int
        1 for neutral, 2 for singly ionised.
    wavelength_air : float
        Line centre in air [Å].
    excitation_potential : float
        Lower-level excitation energy [eV].
    log_gf : float
        log₁₀ of the oscillator strength times the lower-level statistical weight.
    lower, upper : tuple[float, float, float]
        (S, L, J) of the lower and upper levels.
    vdw_alpha, vdw_sigma : float
        Anstee-Barklem-O'Mara velocity exponent α and cross-section σ [cm²] at 10⁴ m/s
        (0 when the list gives none).
    damping_enhancement : float
        SIR's enhancement factor of the collisional damping (used only without ABO data).
    mass_amu : float
        Atomic mass of the absorber [amu].
    """

    index: int
    element: str
    ion_stage: int
    wavelength_air: float
    excitation_potential: float
    log_gf: float
    lower: tuple[float, float, float]
    upper: tuple[float, float, float]
    vdw_alpha: float = 0.0
    vdw_sigma: float = 0.0
    damping_enhancement: float = 1.0
    mass_amu: float = 55.845
    zeeman: ZeemanComponents = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "zeeman", zeeman_components(*self.lower, *self.upper))

    @property
    def g_eff(self) -> float:
        """Effective Landé factor (LL04 eq. 3.44)."""
        return effective_lande(*self.lower, *self.upper)

    @property
    def name(self) -> str:
        """Spectroscopic name, e.g. ``'Fe I 6302.4936'`` (element, ion stage, air wavelength in Å)."""
        roman = {1: "I", 2: "II", 3: "III"}.get(self.ion_stage, str(self.ion_stage))
        return f"{self.element.title()} {roman} {self.wavelength_air:.4f}"


_TERM = re.compile(r"(\d+)([A-Z])\s*([\d.]+)\s*-\s*(\d+)([A-Z])\s*([\d.]+)")


def _parse_term(mult: str, letter: str, J: str) -> tuple[float, float, float]:
    S = (int(mult) - 1) / 2.0
    L = float(_L_LETTERS.index(letter))
    return S, L, float(J)


def read_lineas(path: str | Path | None = None, indices: tuple[int, ...] = (200, 201)) -> list[SpectralLine]:
    """Read entries of a SIR ``LINEAS`` line list.

    Each entry reads ``N=EL ION  λ_air  enh  χ_l  log gf  ²ˢ⁺¹L J- ²ˢ⁺¹L J  [α σ]``, the lower
    term first (SIR manual, Ruiz Cobo & del Toro Iniesta 1992).

    Parameters
    ----------
    path : path, optional
        The line list; default ``data_root()/stokes/atmospheres/LINEAS``.
    indices : tuple of int
        Entry numbers to return, in this order.

    Returns
    -------
    list of SpectralLine

    Raises
    ------
    LineListError
        If the file is missing, an entry is absent or a field cannot be parsed.
    """
    path = Path(path) if path is not None else data_root() / "stokes" / "atmospheres" / "LINEAS"
    if not path.is_file():
        raise LineListError(path, "line list not found")
    entries: dict[int, SpectralLine] = {}
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if "=" not in raw:
            continue
        head, _, rest = raw.partition("=")
        try:
            idx = int(head.strip())
        except ValueError:
            continue
        if idx not in indices:
            continue
        parts = rest.split()
        term = _TERM.search(rest)
        try:
            element, stage, wav, enh, chi, loggf = parts[0], int(parts[1]), *map(float, parts[2:6])
            if term is None:
                raise ValueError("no 'nL J- nL J' term designation")
            lower = _parse_term(*term.group(1, 2, 3))
            upper = _parse_term(*term.group(4, 5, 6))
            tail = rest[term.end():].split()
            alpha, sigma = (float(tail[0]), float(tail[1])) if len(tail) >= 2 else (0.0, 0.0)
        except (ValueError, IndexError) as exc:
            raise LineListError(path, f"line {lineno} (entry {idx}) cannot be parsed: {exc}") from exc
        entries[idx] = SpectralLine(
            index=idx, element=element.upper(), ion_stage=stage, wavelength_air=wav, excitation_potential=chi,
            log_gf=loggf, lower=lower, upper=upper, vdw_alpha=alpha, vdw_sigma=sigma, damping_enhancement=enh,
            mass_amu=ELEMENT_MASS_AMU.get(element.upper(), 55.845),
        )
    missing = [i for i in indices if i not in entries]
    if missing:
        raise LineListError(path, f"entries {missing} not found")
    return [entries[i] for i in indices]


def fe_lines(path: str | Path | None = None) -> list[SpectralLine]:
    """Fe I 6301.5012 Å and 6302.4936 Å (LINEAS entries 200/201), the Hinode SP pair.

    Parameters
    ----------
    path : str or Path, optional
        The SIR ``LINEAS`` file; default ``data_root()/stokes/atmospheres/LINEAS``.

    Returns
    -------
    list of SpectralLine
        The two lines, 6301.5 Å first.

    Raises
    ------
    LineListError
        If the file is missing, an entry is absent or cannot be parsed (from :func:`read_lineas`).
    """
    return read_lineas(path, (200, 201))
