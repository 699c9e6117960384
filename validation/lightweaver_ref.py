"""Independent LTE Stokes synthesis of Fe I 6301.5/6302.5 Å with Lightweaver, for validation.

Lightweaver (Osborne & Milić 2021, ApJ 917, 14; PyPI ``lightweaver``, MIT) is an RH-style
radiative-transfer framework with its own background opacities (H⁻, H, He, Thomson and Rayleigh
scattering, the C++ ``FastBackground`` of RH), Voigt/Faraday-Voigt Zeeman profiles in LS
coupling and a polarised (DELO-Bézier) formal solver. This module drives it as an independent
reference for :func:`helioforge.physics.lte.synth_lte` and shares no physics code with it: only
the input atmosphere (a :class:`helioforge.data.sir.SIRModel`) and the line list values.

How a SIR model becomes a Lightweaver atmosphere (:func:`lightweaver_stokes`):

* depth order: Lightweaver wants the top first, SIR files are deepest first; the points are
  sorted by log τ₅₀₀;
* n_e = P_e / (k T); the total hydrogen density n_H,tot from (T, P_e) with Lightweaver's own
  Wittmann equation of state (``rho_from_pe``), which is what ``Atmosphere.make_1d`` does when
  given n_e alone (``hydrogen_from="pe"``, the default). ``hydrogen_from="pg"`` uses instead
  the model's gas pressure, n_H,tot = (P_g − P_e) / (k T Σ_el A_el) (abundances of Asplund et
  al. 2009). The tabulated SIR models are not self-consistent in this respect: their P_g gives
  an n_H about 10 % higher than (T, P_e) does with either Wittmann's equation of state or
  :func:`helioforge.physics.eos.hydrogen_density` (these two agree within 1 %, 2.6 % in the
  umbra at log τ = 0). n_H,tot cancels to first order from κ_line/κ_c (both ∝ n_H at fixed
  P_e); it enters through scattering and the van der Waals width (∝ n_H I);
* heights: ``Atmosphere.make_1d(scale=ScaleType.Tau500)`` computes z from τ₅₀₀ with the
  Wittmann continuum opacity in a Python loop (≈ 14 s per model). Instead the atmosphere is
  built from a :class:`lightweaver.Layout` and z is integrated from τ₅₀₀ with **Lightweaver's
  own background opacity at 500 nm** (dz = −τ d ln τ / χ₅₀₀, z = 0 at τ₅₀₀ = 1), so the τ₅₀₀
  scale seen by the formal solver is exactly the model's. For HSRA the heights agree with the
  model's ``z`` column to ≈ 6 km;
* velocity: Lightweaver's v_z is positive upwards (towards the observer at μ = 1, a
  blueshift), SIR's v_LOS is positive for a redshift: v_z = −v_LOS (checked: +2 km s⁻¹ SIR
  moves the core of 6301.5 to the red);
* field: B [T] = 10⁻⁴ B [G], γ_B = inclination, χ_B = azimuth (radians). With γ = 0 (field
  towards the observer) Lightweaver gives a positive blue lobe of V, and for a transverse
  field along x (χ = 0) a negative Q in the line core, U ∝ sin 2χ with the same sign as
  Q ∝ cos 2χ: the convention of Landi Degl'Innocenti & Landolfi (2004), used by SIR.

Fe I atom: a 5-level model (z⁵P₂, z⁵P₁, e⁵D₂, e⁵D₀, Fe II) built from LINEAS entries 200/201
(:data:`FE_LINES`): lower-level energy = the listed excitation potential, upper level = lower +
hc/λ_vac (air → vacuum with Lightweaver's Edlén 1966 conversion), f = gf/g_l, LS-coupling J, L, S
for the anomalous Zeeman pattern, van der Waals broadening of Anstee & O'Mara/Barklem with the
listed σ (converted to a₀²) and α (``VdwBarklem``, which adds He by Unsöld's formula as RH
does), classical radiative damping γ = 0.2223/λ²[cm] s⁻¹, CRD, no Stark broadening.

Partition functions (the brief's question): Lightweaver's LTE populations sum only over the
levels of the model atom. ``rh_atoms.Fe23_atom`` does contain the four levels (and both lines),
but its truncated level set gives U(Fe I) = 27.4 instead of 27.8 at 5000 K (Kurucz) and lumps
Fe II into one level, so its n(z⁵P₂)/N_Fe is 10 % (0.045 dex) too low at 5000 K, 5 % at
6000 K; ``Fe_atom``/``FeI_atom`` lack the levels. The atom here is therefore *detailed static*
with populations set from **Kurucz partition functions shipped with Lightweaver**
(``pf_Kurucz.input`` of RH, :class:`lightweaver.KuruczPfTable`): Saha over all Fe stages
(``KuruczPf.lte_ionisation``) and Boltzmann within Fe I, n_i = N(Fe I) g_i e^{−E_i/kT} / U_I(T).
The line source function is then exactly the Planck function, as in LTE.

Scattering: Lightweaver's background includes Thomson and Rayleigh scattering with source
term σJ. To make the reference an LTE calculation (S_c = B_ν, what SIR and
:func:`~helioforge.physics.lte.synth_lte` do) J is set to B_ν(T) before the formal solution.

Output units: Lightweaver's J s⁻¹ m⁻² sr⁻¹ Hz⁻¹ × 10³ = erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹.
The continuum I_c is a second formal solution of the same context with the Fe populations set
to zero (background only) at 6302.0 Å (air).

Requires the optional dependency ``lightweaver`` (``pip install helioforge[test]``); importing
this module does not import it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch

from helioforge.physics.lte import Atmosphere, hydrostatic_equilibrium, synth_lte

__all__ = [
    "LIGHTWEAVER_INSTALL_HINT",
    "FeLineData",
    "FE_LINES",
    "CONTINUUM_WAVELENGTH_A",
    "lightweaver_available",
    "import_lightweaver",
    "air_to_vacuum_nm",
    "fe_model_atom",
    "lightweaver_stokes",
    "lightweaver_continuum",
    "perturbed_atmospheres",
    "PairedProfiles",
    "paired_profiles",
    "compare_with_lightweaver",
    "summarise_comparison",
    "comparison_markdown",
]

logger = logging.getLogger(__name__)

#: How to get the optional dependency.
LIGHTWEAVER_INSTALL_HINT = "pip install helioforge[test]"

#: Air wavelength [Å] at which the continuum intensity I_c is reported.
CONTINUUM_WAVELENGTH_A = 6302.0

_K_B_CGS = 1.380649e-16  # erg K⁻¹
_EV_CM = 8065.543937  # cm⁻¹ per eV (CODATA 2018)
_A0_CM = 5.29177210903e-9  # Bohr radius, cm
_SI_TO_CGS_INTENSITY = 1.0e3  # J s⁻¹ m⁻² sr⁻¹ Hz⁻¹ → erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹
_LAMBDA_REF_NM = 500.0


@dataclass(frozen=True)
class FeLineData:
    """Atomic data of one Fe I line as listed in SIR's LINEAS file.

    Attributes
    ----------
    lineas_index : entry number in LINEAS.
    wavelength_air_A : line-centre air wavelength [Å].
    excitation_eV : excitation potential of the lower level [eV].
    log_gf : log10 of the oscillator strength times the lower-level statistical weight.
    lower, upper : (2S+1, L, J) of the lower and upper levels (LS coupling).
    alpha_abo : velocity exponent α of the Anstee-Barklem-O'Mara cross-section.
    sigma_abo_cm2 : ABO cross-section σ at 10⁴ m s⁻¹ [cm²].
    """

    lineas_index: int
    wavelength_air_A: float
    excitation_eV: float
    log_gf: float
    lower: tuple[int, int, float]
    upper: tuple[int, int, float]
    alpha_abo: float
    sigma_abo_cm2: float

    @property
    def g_lower(self) -> int:
        """Statistical weight 2J+1 of the lower level."""
        return int(round(2 * self.lower[2] + 1))

    @property
    def sigma_abo_a0sq(self) -> float:
        """σ in units of a₀² (what Lightweaver's ``VdwBarklem`` expects)."""
        return self.sigma_abo_cm2 / _A0_CM ** 2


#: LINEAS entries 200 and 201 (``data_root()/stokes/atmospheres/LINEAS``):
#: ``200=FE 1 6301.5012 1.0 3.654 -0.718 5P 2.0- 5D 2.0 0.242 2.33543e-14`` and
#: ``201=FE 1 6302.4936 1.0 3.686 -1.131 5P 1.0- 5D 0.0 0.239 2.38024e-14``.
FE_LINES: tuple[FeLineData, ...] = (
    FeLineData(200, 6301.5012, 3.654, -0.718, (5, 1, 2.0), (5, 2, 2.0), 0.242, 2.33543e-14),
    FeLineData(201, 6302.4936, 3.686, -1.131, (5, 1, 1.0), (5, 2, 0.0), 0.239, 2.38024e-14),
)


# ------------------------------------------------------------------------------- import
def lightweaver_available() -> bool:
    """True when ``lightweaver`` can be imported."""
    try:
        import_lightweaver()
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def import_lightweaver():
    """Import and return the ``lightweaver`` module (its config warning silenced).

    Raises
    ------
    ImportError
        When Lightweaver is not installed; the message names the extra to install.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lightweaver  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "validation.lightweaver_ref needs the optional dependency 'lightweaver' "
            f"(Osborne & Milić 2021); install it with `{LIGHTWEAVER_INSTALL_HINT}` ({err})"
        ) from err
    return lightweaver


def air_to_vacuum_nm(wavelength_air_A: np.ndarray | float) -> np.ndarray:
    """Air → vacuum wavelength with Lightweaver's conversion (Edlén 1966, via specutils).

    Parameters
    ----------
    wavelength_air_A : float or array [Å], air.

    Returns
    -------
    ndarray, vacuum wavelength [nm] (≈ +1.743 Å at 6302 Å).
    """
    lw = import_lightweaver()
    return np.atleast_1d(np.asarray(lw.air_to_vac(np.asarray(wavelength_air_A, dtype=np.float64) / 10.0),
                                    dtype=np.float64))


# ------------------------------------------------------------------------------- atom
def fe_model_atom(lines: Sequence[FeLineData] = FE_LINES):
    """Lightweaver model atom of the Fe I 6301.5/6302.5 lines (LINEAS 200/201).

    Levels: the lower and upper level of each line (energies from the excitation potential and
    the vacuum wavelength, LS-coupling quantum numbers from the LINEAS terms) and the Fe II
    ground term as continuum (7.9024 eV; needed by Lightweaver's He van der Waals term).

    Parameters
    ----------
    lines : the lines to include; default :data:`FE_LINES`.

    Returns
    -------
    lightweaver.atomic_model.AtomicModel

    Raises
    ------
    ImportError : Lightweaver is not installed.
    """
    import_lightweaver()  # the clear ImportError first
    from lightweaver.atomic_model import AtomicLevel, AtomicModel, LinearCoreExpWings, LineType, VoigtLine
    from lightweaver.atomic_table import PeriodicTable
    from lightweaver.broadening import LineBroadening, RadiativeBroadening, VdwBarklem

    lam_vac_nm = air_to_vacuum_nm(np.array([ln.wavelength_air_A for ln in lines]))
    pairs = []
    for ln, lam in zip(lines, lam_vac_nm):
        e_low = ln.excitation_eV * _EV_CM
        e_up = e_low + 1.0e7 / lam
        pairs.append((e_low, e_up, ln))

    def level(e_cm, term, label):
        mult, L, J = term
        S = Fraction(mult - 1, 2)
        Jf = Fraction(J).limit_denominator(2)
        return AtomicLevel(E=float(e_cm), g=int(2 * Jf + 1), label=label, stage=0, J=Jf, L=int(L), S=S)

    entries = []
    for e_low, e_up, ln in pairs:
        entries.append((e_low, level(e_low, ln.lower, f"FeI lower of {ln.wavelength_air_A:.4f}")))
        entries.append((e_up, level(e_up, ln.upper, f"FeI upper of {ln.wavelength_air_A:.4f}")))
    entries.sort(key=lambda t: t[0])
    levels = [lev for _, lev in entries]
    energies = [e for e, _ in entries]
    levels.append(AtomicLevel(E=7.9024 * _EV_CM, g=30, label="FeII 3d6 4s a6D", stage=1))

    vlines = []
    for e_low, e_up, ln in pairs:
        i, j = energies.index(e_low), energies.index(e_up)
        lam_cm = 1.0 / (e_up - e_low)
        gamma_rad = 0.22233 / lam_cm ** 2  # classical radiative damping [s⁻¹]
        vlines.append(VoigtLine(
            j=j, i=i, f=10.0 ** ln.log_gf / ln.g_lower, type=LineType.CRD,
            quadrature=LinearCoreExpWings(qCore=5.0, qWing=300.0, Nlambda=201),
            broadening=LineBroadening(natural=[RadiativeBroadening(gamma=gamma_rad)],
                                      elastic=[VdwBarklem(vals=[ln.sigma_abo_a0sq, ln.alpha_abo])])))
    return AtomicModel(element=PeriodicTable["Fe"], levels=levels, lines=vlines, continua=[], collisions=[])


# ------------------------------------------------------------------------------- set-up caches
@functools.lru_cache(maxsize=1)
def _kurucz_fe():
    lw = import_lightweaver()
    from lightweaver.atomic_table import PeriodicTable

    return lw.KuruczPfTable()[PeriodicTable["Fe"]]


@functools.lru_cache(maxsize=4)
def _radiative_set(lines: tuple[FeLineData, ...] = FE_LINES):
    """(RadiativeSet, global SpectrumConfiguration): H (6 levels) and He passive, Fe detailed."""
    lw = import_lightweaver()
    from lightweaver.rh_atoms import H_6_atom, He_9_atom

    aset = lw.RadiativeSet([H_6_atom(), He_9_atom(), fe_model_atom(lines)])
    aset.set_detailed_static("Fe")
    spect = aset.compute_wavelength_grid(lambdaReference=_LAMBDA_REF_NM)
    return aset, spect


@functools.lru_cache(maxsize=16)
def _subset_spectrum(wavelengths_nm: tuple[float, ...], lines: tuple[FeLineData, ...] = FE_LINES):
    _, spect = _radiative_set(lines)
    return spect.subset_configuration(np.array(wavelengths_nm))


# ------------------------------------------------------------------------------- atmosphere
def _model_columns(model) -> dict[str, np.ndarray]:
    """The model's columns, sorted top first (log τ increasing), validated."""
    names = ("log_tau", "T", "Pe", "vmic", "B", "vlos", "inclination", "azimuth")
    cols = {}
    for name in names:
        if not hasattr(model, name):
            raise ValueError(f"model has no attribute {name!r} (expected a SIRModel)")
        cols[name] = np.asarray(getattr(model, name), dtype=np.float64).ravel()
    n = cols["log_tau"].size
    for name, arr in cols.items():
        if arr.size != n:
            raise ValueError(f"model column {name} has {arr.size} points, log_tau has {n}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"model column {name} has non-finite values")
    if n < 3:
        raise ValueError(f"model needs at least 3 depth points, got {n}")
    if np.any(cols["T"] <= 0) or np.any(cols["Pe"] <= 0):
        raise ValueError("model T and Pe must be positive")
    pg = getattr(model, "Pg", None)
    pg = None if pg is None else np.asarray(pg, dtype=np.float64).ravel()
    if pg is not None and (pg.size != n or not np.all(np.isfinite(pg)) or np.any(pg <= cols["Pe"])):
        pg = None
    cols["Pg"] = pg
    order = np.argsort(cols["log_tau"])
    if np.any(np.diff(cols["log_tau"][order]) <= 0):
        raise ValueError("model log_tau values must be distinct")
    return {k: (None if v is None else v[order]) for k, v in cols.items()}


def _hydrogen_density_m3(cols, lw, hydrogen_from: str = "pe") -> np.ndarray:
    T, Pe, Pg = cols["T"], cols["Pe"], cols["Pg"]
    ab = lw.DefaultAtomicAbundance
    if hydrogen_from not in ("pe", "pg"):
        raise ValueError(f"hydrogen_from must be 'pe' or 'pg', got {hydrogen_from!r}")
    if hydrogen_from == "pg":
        if Pg is None:
            raise ValueError("hydrogen_from='pg' needs a model with a finite gas pressure Pg > Pe")
        return (Pg - Pe) / (_K_B_CGS * T) / ab.totalAbundance * 1.0e6
    eos = _wittmann()
    rho = np.array([eos.rho_from_pe(t, p) for t, p in zip(T, Pe)])  # g cm⁻³
    import lightweaver.constants as const

    return rho * 1.0e3 / (const.Amu * ab.massPerH)


@functools.lru_cache(maxsize=1)
def _wittmann():
    lw = import_lightweaver()
    from lightweaver.atomic_table import PeriodicTable
    from lightweaver.wittmann import Wittmann

    ab = lw.DefaultAtomicAbundance
    return Wittmann(abund_init=np.array([ab[e] for e in PeriodicTable.elements]))


@dataclass
class _Run:
    ctx: Any
    eq_pops: Any
    fe_pops: np.ndarray
    wavelengths_nm: np.ndarray
    T: np.ndarray


def _fe_populations(atmos, model_atom, fe_abundance: float) -> np.ndarray:
    """Level populations [m⁻³] from Kurucz partition functions (Saha + Boltzmann)."""
    import lightweaver.constants as const

    pf = _kurucz_fe()
    stages = pf.lte_ionisation(atmos)  # (Nstage, Nspace), abundance of Lightweaver's table
    stages = stages * (10.0 ** (fe_abundance - 12.0) / pf.abundance)
    T = np.asarray(atmos.temperature)
    u_I = np.exp(np.interp(T, pf.Tpf, pf.pf[0]))
    pops = np.zeros((len(model_atom.levels), T.size))
    for k, lev in enumerate(model_atom.levels):
        if lev.stage == 0:
            pops[k] = stages[0] * lev.g * np.exp(-lev.E_SI / (const.KBoltzmann * T)) / u_I
        else:
            pops[k] = stages[lev.stage]
    return pops


def _prepare(model, wavelengths_air_A: np.ndarray, mu: float, fe_abundance: float, hydrogen_from: str,
             lines: tuple[FeLineData, ...] = FE_LINES) -> _Run:
    lw = import_lightweaver()
    wav = np.asarray(wavelengths_air_A, dtype=np.float64).ravel()
    if wav.size < 1 or not np.all(np.isfinite(wav)):
        raise ValueError("wavelengths_air_A must be a non-empty array of finite air wavelengths [Å]")
    if not (0.0 < float(mu) <= 1.0):
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    cols = _model_columns(model)
    T = cols["T"]
    tau = 10.0 ** cols["log_tau"]
    ne = cols["Pe"] / (_K_B_CGS * T) * 1.0e6
    nh_tot = _hydrogen_density_m3(cols, lw, hydrogen_from)
    # provisional heights (only their order matters for the background opacity)
    z0 = -cols["log_tau"] * 1.0e5
    layout = lw.Layout.make_1d(z=z0, vz=-cols["vlos"] * 1.0e-2, lowerBc=lw.ThermalisedRadiation(),
                               upperBc=lw.ZeroRadiation(),
                               stratifications=lw.Stratifications(cmass=np.zeros_like(T), tauRef=tau))
    atmos = lw.Atmosphere(structure=layout, temperature=T, vturb=cols["vmic"] * 1.0e-2, ne=ne, nHTot=nh_tot,
                          B=cols["B"] * 1.0e-4, gammaB=np.deg2rad(cols["inclination"]),
                          chiB=np.deg2rad(cols["azimuth"]))
    atmos.rays([float(mu)])
    if not lines:
        raise ValueError("at least one line is needed")
    aset, _ = _radiative_set(lines)
    lam_vac = air_to_vacuum_nm(np.concatenate([wav, [CONTINUUM_WAVELENGTH_A]]))
    grid = np.unique(np.concatenate([[_LAMBDA_REF_NM], lam_vac]))
    sub = _subset_spectrum(tuple(float(x) for x in grid), lines)
    eq_pops = aset.compute_eq_pops(atmos)
    fe = eq_pops["Fe"]
    fe_pops = _fe_populations(atmos, aset["Fe"], fe_abundance)
    fe[:] = fe_pops
    ctx = lw.Context(atmos, sub, eq_pops, Nthreads=1, conserveCharge=False)
    chi500 = np.asarray(ctx.background.chi)[int(np.argmin(np.abs(grid - _LAMBDA_REF_NM)))]  # m⁻¹
    ln_tau = np.log(tau)
    integrand = tau / chi500
    height = np.concatenate([[0.0], -np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(ln_tau))])
    height -= np.interp(0.0, ln_tau, height)
    atmos.z[:] = height
    ctx = lw.Context(atmos, sub, eq_pops, Nthreads=1, conserveCharge=False)
    return _Run(ctx=ctx, eq_pops=eq_pops, fe_pops=fe_pops, wavelengths_nm=grid, T=T)


def _nearest(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest point of the sorted ``grid`` to each value (exact matches here)."""
    hi = np.clip(np.searchsorted(grid, values), 1, grid.size - 1)
    lo = hi - 1
    return np.where(np.abs(grid[hi] - values) < np.abs(grid[lo] - values), hi, lo)


def _formal_solution(run: _Run, lines_on: bool) -> tuple[np.ndarray, np.ndarray]:
    lw = import_lightweaver()
    fe = run.eq_pops["Fe"]
    fe[:] = run.fe_pops if lines_on else 0.0
    lam = np.asarray(run.ctx.spect.wavelength)
    J = np.asarray(run.ctx.spect.J)
    J[:] = lw.planck(run.T[None, :], lam[:, None])  # LTE continuum source function: J = B_ν
    run.ctx.single_stokes_fs()
    intensity = np.asarray(run.ctx.spect.I).reshape(lam.size)
    quv = np.asarray(run.ctx.spect.Quv).reshape(3, lam.size)
    return lam, np.vstack([intensity[None], quv]) * _SI_TO_CGS_INTENSITY


def lightweaver_stokes(model, wavelengths_air_A: np.ndarray, mu: float = 1.0,
                       fe_abundance: float = 7.50, hydrogen_from: str = "pe",
                       lines: Sequence[FeLineData] = FE_LINES) -> tuple[np.ndarray, float]:
    """Emergent LTE Stokes profiles of Fe I 6301.5/6302.5 Å computed by Lightweaver.

    Parameters
    ----------
    model : SIRModel
        Model atmosphere (any depth order): log τ₅₀₀, T [K], P_e [dyn cm⁻²], v_mic and v_LOS
        [cm s⁻¹, v_LOS > 0 redshift], B [G], inclination and azimuth [deg], and optionally P_g.
    wavelengths_air_A : array (nλ,)
        Air wavelengths [Å] (converted to vacuum for Lightweaver).
    mu : float
        Cosine of the viewing angle, (0, 1]. At μ < 1 Lightweaver takes the field angles and
        the velocity in the local vertical frame (v_z = −v_LOS, ray in the x–z plane), unlike
        :func:`~helioforge.physics.lte.synth_lte`, which takes them in the line-of-sight frame;
        compare the two codes at μ = 1 only, or with B = 0 and v = 0.
    fe_abundance : float
        Iron abundance log ε(Fe) (H = 12); 7.50 as in Asplund et al. (2009) and SIR.
    hydrogen_from : {"pe", "pg"}
        Total hydrogen density from (T, P_e) with Lightweaver's Wittmann equation of state
        (default), or from the model's gas pressure P_g.
    lines : sequence of FeLineData
        Lines to synthesise (default both, :data:`FE_LINES`; one alone isolates its profile).

    Returns
    -------
    stokes : ndarray (4, nλ)
        I, Q, U, V [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹].
    Ic : float
        Continuum intensity of the same atmosphere without the line opacity, at 6302.0 Å (air)
        [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹].

    Raises
    ------
    ImportError
        Lightweaver is not installed (``pip install helioforge[test]``).
    ValueError
        Bad model columns (wrong lengths, non-finite, T or P_e ≤ 0, fewer than 3 points),
        empty or non-finite wavelengths, μ outside (0, 1], or ``hydrogen_from="pg"`` without
        a usable P_g.

    Notes
    -----
    See the module docstring for the construction (Osborne & Milić 2021; Kurucz partition
    functions; J = B_ν). Takes ≈ 0.1-0.5 s per model on one core.
    """
    wav = np.asarray(wavelengths_air_A, dtype=np.float64).ravel()
    run = _prepare(model, wav, mu, fe_abundance, hydrogen_from, tuple(lines))
    lam, stokes = _formal_solution(run, lines_on=True)
    _, cont = _formal_solution(run, lines_on=False)
    idx = _nearest(lam, air_to_vacuum_nm(wav))
    ic_idx = _nearest(lam, air_to_vacuum_nm(CONTINUUM_WAVELENGTH_A))[0]
    return stokes[:, idx], float(cont[0, ic_idx])


def lightweaver_continuum(model, wavelengths_air_A: np.ndarray, mu: float = 1.0,
                          hydrogen_from: str = "pe") -> np.ndarray:
    """Continuum (background only, line opacity off) intensity of a model atmosphere.

    Parameters
    ----------
    model : SIRModel
        As in :func:`lightweaver_stokes`.
    wavelengths_air_A : array (nλ,)
        Air wavelengths [Å]; any in Lightweaver's range (e.g. 5000 Å, 6302 Å).
    mu : float
        Cosine of the viewing angle, (0, 1].
    hydrogen_from : {"pe", "pg"}
        As in :func:`lightweaver_stokes`.

    Returns
    -------
    ndarray (nλ,)
        I_c [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹] with the LTE continuum source function (J = B_ν).

    Raises
    ------
    ImportError, ValueError : as :func:`lightweaver_stokes`.
    """
    wav = np.asarray(wavelengths_air_A, dtype=np.float64).ravel()
    run = _prepare(model, wav, mu, 7.50, hydrogen_from)
    lam, cont = _formal_solution(run, lines_on=False)
    return cont[0, _nearest(lam, air_to_vacuum_nm(wav))]


# ------------------------------------------------------------------------------- perturbed set
def _smooth_noise(rng: np.random.Generator, log_tau: np.ndarray, scale_dex: float = 0.8) -> np.ndarray:
    """Smooth random function of log τ in [−1, 1] (random Fourier series with scale ≳ scale_dex)."""
    span = float(log_tau.max() - log_tau.min()) or 1.0
    x = (log_tau - log_tau.min()) / span
    n_modes = max(2, int(span / scale_dex))
    f = np.zeros_like(x)
    for k in range(1, n_modes + 1):
        f += rng.normal() / k * np.sin(math.pi * k * x + rng.uniform(0, 2 * math.pi))
    return f / max(np.max(np.abs(f)), 1e-12)


def perturbed_atmospheres(base_models: Sequence[Any], n: int = 24, seed: int = 0, *, dT_max: float = 300.0,
                          B_max: float = 3000.0, v_max: float = 2.0e5, hydrostatic: bool = True) -> list[Any]:
    """Randomly perturbed, magnetised versions of SIR models for the Lightweaver validation.

    Each atmosphere i (seeded by ``(seed, i)``) starts from ``base_models[i % len(base_models)]``
    and gets: a smooth temperature perturbation of peak |ΔT| ∈ [0.3, 1] × ``dT_max``; a field
    B(log τ) = B₀ + g log τ with B₀ ∈ [0, B_max], |g| ≤ 0.3 B_max per dex, clipped to
    [0, B_max]; an isotropic random inclination and an azimuth ∈ [0°, 180°), each with a
    gradient ≤ 10° per dex; v_LOS = v₀ + v₁ log τ clipped to ±``v_max`` [cm s⁻¹]. T is kept
    ≥ 3000 K. With ``hydrostatic`` and :func:`helioforge.physics.lte.hydrostatic_equilibrium`
    importable, P_e, P_g, ρ and z are recomputed from the new T; otherwise the base P_e, P_g are
    kept (P_e then lags the temperature change, which both codes see identically).

    Parameters
    ----------
    base_models : sequence of SIRModel
    n : number of atmospheres (≥ 1).
    seed : random seed.
    dT_max, B_max, v_max : perturbation bounds [K], [G], [cm s⁻¹].
    hydrostatic : recompute the pressures from hydrostatic equilibrium.

    Returns
    -------
    list of SIRModel (``dataclasses.replace`` of the base), named ``pertNN_<base name>``.

    Raises
    ------
    ValueError : empty ``base_models`` or n < 1.
    """
    if not base_models:
        raise ValueError("perturbed_atmospheres needs at least one base model")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    he = hydrostatic_equilibrium if hydrostatic else None
    drafts = []
    for i in range(n):
        base = base_models[i % len(base_models)]
        rng = np.random.default_rng([seed, i])
        lt = np.asarray(base.log_tau, dtype=np.float64)
        T = np.asarray(base.T, dtype=np.float64) + rng.uniform(0.3, 1.0) * dT_max * _smooth_noise(rng, lt)
        T = np.maximum(T, 3000.0)
        B = np.clip(rng.uniform(0, B_max) + rng.uniform(-0.3, 0.3) * B_max * lt, 0.0, B_max)
        inc0 = math.degrees(math.acos(rng.uniform(-1.0, 1.0)))
        inc = np.clip(inc0 + rng.uniform(-10, 10) * lt, 0.0, 180.0)
        azi = np.mod(rng.uniform(0.0, 180.0) + rng.uniform(-10, 10) * lt, 180.0)
        vlos = np.clip(rng.uniform(-1, 1) * v_max + rng.uniform(-0.25, 0.25) * v_max * lt, -v_max, v_max)
        drafts.append((i % len(base_models), dict(T=T, B=B, inclination=inc, azimuth=azi, vlos=vlos,
                                                  name=f"pert{i:02d}_{getattr(base, 'name', '') or 'model'}")))
    if he is not None:  # one batched hydrostatic integration per base model (shared log τ grid)
        import torch  # noqa: PLC0415

        for b, base in enumerate(base_models):
            members = [kw for j, kw in drafts if j == b]
            if not members:
                continue
            T = torch.as_tensor(np.stack([kw["T"] for kw in members]))
            Pe, Pg, rho, z = he(torch.as_tensor(np.asarray(base.log_tau, dtype=np.float64)), T)
            for k, kw in enumerate(members):
                kw.update(Pe=Pe[k].numpy(), Pg=Pg[k].numpy(), rho=rho[k].numpy(), z=z[k].numpy())
    return [replace(base_models[j], **kw) for j, kw in drafts]


# ------------------------------------------------------------------------------- comparison
@dataclass
class PairedProfiles:
    """Stokes profiles of one model from both codes.

    Attributes
    ----------
    name : model name.
    ours, lw : (4, nλ) I, Q, U, V [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹] from ``synth_lte`` and Lightweaver.
    ours_Ic, lw_Ic : continuum intensities of each code [same units].
    lw_seconds : wall time of the Lightweaver synthesis [s].
    """

    name: str
    ours: np.ndarray
    ours_Ic: float
    lw: np.ndarray
    lw_Ic: float
    lw_seconds: float

    @property
    def ours_norm(self) -> np.ndarray:
        """(4, nλ) Stokes of ``synth_lte`` divided by its own I_c."""
        return self.ours / self.ours_Ic

    @property
    def lw_norm(self) -> np.ndarray:
        """(4, nλ) Stokes of Lightweaver divided by its own I_c."""
        return self.lw / self.lw_Ic


def paired_profiles(models: Sequence[Any], names: Sequence[str] | None, wavelengths_air_A: np.ndarray,
                    mu: float = 1.0) -> list[PairedProfiles]:
    """Synthesise each model with :func:`helioforge.physics.lte.synth_lte` and with Lightweaver.

    Parameters
    ----------
    models : sequence of SIRModel.
    names : one name per model (default: the models' ``name``).
    wavelengths_air_A : (nλ,) air wavelengths [Å], e.g. the Hinode SP grid.
    mu : cosine of the viewing angle.

    Returns
    -------
    list of :class:`PairedProfiles`.

    Raises
    ------
    ImportError : Lightweaver missing.
    ValueError : ``names`` and ``models`` of different lengths, or bad models.
    """
    names = [getattr(m, "name", f"model{i}") for i, m in enumerate(models)] if names is None else list(names)
    if len(names) != len(models):
        raise ValueError(f"{len(names)} names for {len(models)} models")
    wav = np.asarray(wavelengths_air_A, dtype=np.float64)
    out = []
    for name, model in zip(names, models):
        t0 = time.perf_counter()
        lw_stokes, lw_ic = lightweaver_stokes(model, wav, mu=mu)
        t_lw = time.perf_counter() - t0
        with torch.no_grad():
            stokes, ic = synth_lte(Atmosphere.from_sir(model), torch.as_tensor(wav), mu=mu)
        out.append(PairedProfiles(name=name, ours=stokes.double().numpy().reshape(4, -1), ours_Ic=float(ic),
                                  lw=lw_stokes, lw_Ic=lw_ic, lw_seconds=t_lw))
        logger.info("%s: Lightweaver %.2f s, Ic ours/LW = %.4f", name, t_lw, float(ic) / lw_ic)
    return out


_STOKES = ("I", "Q", "U", "V")
#: Below this peak |X/Ic| of Lightweaver an amplitude ratio is not meaningful (NaN).
_MIN_AMPLITUDE = 1.0e-3


def compare_with_lightweaver(models: Sequence[Any], names: Sequence[str] | None, wavelengths: np.ndarray,
                             mu: float = 1.0, pairs: Sequence[PairedProfiles] | None = None):
    """Per model and Stokes parameter, differences between ``synth_lte`` and Lightweaver.

    Each code's profiles are divided by its own continuum intensity I_c.

    Parameters
    ----------
    models : sequence of SIRModel (ignored when ``pairs`` is given).
    names : model names (default the models' ``name``).
    wavelengths : (nλ,) air wavelengths [Å] (the Hinode SP grid in the validation).
    mu : cosine of the viewing angle.
    pairs : already computed :func:`paired_profiles` (to reuse them for a figure).

    Returns
    -------
    pandas.DataFrame with one row per (model, stokes) and columns ``model``, ``stokes``,
    ``rms`` (RMS over wavelength of the difference of X/I_c), ``max_abs`` (max |difference|),
    ``amp_ours``, ``amp_lw`` (line depth 1 − min I/I_c for I, max |X/I_c| for Q, U, V),
    ``amp_ratio`` (ours / Lightweaver; NaN where Lightweaver's amplitude < 10⁻³), ``Ic_ours``,
    ``Ic_lw`` [erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹], ``Ic_ratio`` and ``lw_seconds``.

    Raises
    ------
    ImportError : Lightweaver missing.
    ValueError : as :func:`paired_profiles`.

    Notes
    -----
    The issue's goals: RMS of I/I_c < 0.02 and the V amplitude within 5 %.
    """
    import pandas as pd  # noqa: PLC0415

    if pairs is None:
        pairs = paired_profiles(models, names, wavelengths, mu=mu)
    rows = []
    for p in pairs:
        a, b = p.ours_norm, p.lw_norm
        for k, s in enumerate(_STOKES):
            d = a[k] - b[k]
            if k == 0:
                amp_a, amp_b = 1.0 - a[0].min(), 1.0 - b[0].min()
            else:
                amp_a, amp_b = np.abs(a[k]).max(), np.abs(b[k]).max()
            rows.append(dict(model=p.name, stokes=s, rms=float(np.sqrt(np.mean(d ** 2))),
                             max_abs=float(np.abs(d).max()), amp_ours=float(amp_a), amp_lw=float(amp_b),
                             amp_ratio=float(amp_a / amp_b) if amp_b >= _MIN_AMPLITUDE else float("nan"),
                             Ic_ours=p.ours_Ic, Ic_lw=p.lw_Ic, Ic_ratio=p.ours_Ic / p.lw_Ic,
                             lw_seconds=p.lw_seconds))
    return pd.DataFrame(rows)


def summarise_comparison(df):
    """Worst case over models per Stokes parameter of a :func:`compare_with_lightweaver` table.

    Returns
    -------
    pandas.DataFrame indexed by stokes with ``max_rms``, ``mean_rms``, ``max_abs``,
    ``amp_ratio_min``, ``amp_ratio_max`` and ``n_models``.
    """
    g = df.groupby("stokes", sort=False)
    return g.agg(max_rms=("rms", "max"), mean_rms=("rms", "mean"), max_abs=("max_abs", "max"),
                 amp_ratio_min=("amp_ratio", "min"), amp_ratio_max=("amp_ratio", "max"),
                 n_models=("model", "nunique"))


def comparison_markdown(df, models: Sequence[str] | None = None) -> str:
    """Markdown table (one row per model) of RMS / max differences and amplitude ratios.

    Parameters
    ----------
    df : output of :func:`compare_with_lightweaver`.
    models : subset and order of model names to list (default all).

    Returns
    -------
    str : a GitHub-flavoured markdown table.
    """
    models = list(dict.fromkeys(df["model"])) if models is None else list(models)
    head = ("| model | I_c ours/LW | RMS I/Ic | max I/Ic | RMS Q/Ic | RMS U/Ic | RMS V/Ic | max V/Ic "
            "| depth ratio | V amp. ratio |")
    lines = [head, "|" + "|".join(["---"] * 10) + "|"]
    for m in models:
        sub = df[df["model"] == m].set_index("stokes")

        def f(v, fmt="{:.4f}"):
            return "—" if not np.isfinite(v) else fmt.format(v)

        lines.append("| " + " | ".join([
            m, f(sub.loc["I", "Ic_ratio"]), f(sub.loc["I", "rms"]), f(sub.loc["I", "max_abs"]),
            f(sub.loc["Q", "rms"]), f(sub.loc["U", "rms"]), f(sub.loc["V", "rms"]), f(sub.loc["V", "max_abs"]),
            f(sub.loc["I", "amp_ratio"], "{:.3f}"), f(sub.loc["V", "amp_ratio"], "{:.3f}")]) + " |")
    return "\n".join(lines)
