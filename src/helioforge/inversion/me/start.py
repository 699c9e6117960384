"""Start values of the ME inversion, in closed form (no synthesis).

:func:`initial_guess`: centre of gravity (Rees & Semel 1979) and weak field (LL04 eq. 9.78);
:func:`fast_start`: the analytic methods' start (η₀ from the depth ratio of the two lines, S₀/S₁
from the depth, Δλ_D from the depression area); the candidate generators of the fast start
(:func:`_start_variants`) and of the (η₀, Δλ_D) grid start (:func:`_grid_variants`) that the
solvers rank by χ² (:mod:`.solve_torch`, :mod:`.solve_compiled`).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from scipy.special import wofz

from helioforge.physics.atomic import SpectralLine, fe_lines, lande_factor
from helioforge.physics.me import C_KMS, LORENTZ_SHIFT, default_eta0_ratios

__all__ = ["initial_guess", "fast_start"]


# --------------------------------------------------------------------------- start candidates


def _keep_best(best, best_chi, cand, chi):
    """Per pixel, the start candidate (n, 9) with the lower χ² (n,) of ``best`` and ``cand``
    (``best`` ``None``: the first candidate); torch tensors or numpy arrays alike."""
    if best is None:
        return cand, chi
    better = chi < best_chi
    where = torch.where if isinstance(cand, torch.Tensor) else np.where
    return where(better[:, None], cand, best), where(better, chi, best_chi)



def _field_start(guess: dict[str, np.ndarray]):
    """(I_c, line depth, ``field(f_los, f_perp) -> (B [G], γ [deg])``) of the grid start: the
    weak-field B_LOS and B⊥ estimates scaled by the factors (B⊥ ≥ 5 G, 1 ≤ B ≤ 4900 G)."""
    Ic = np.clip(guess["Ic"], 1e-6, None)
    depth = np.clip(guess["depth"], 0.02, 0.95)
    b_los, b_perp = guess["B_los"], guess["B_perp"]

    def field(f_los, f_perp):
        bl, bp = b_los * f_los, np.maximum(b_perp * f_perp, 5.0)
        return np.clip(np.hypot(bl, bp), 1.0, 4900.0), np.degrees(np.arctan2(bp, bl))

    return Ic, depth, field


def _start_variants(p0: np.ndarray, guess: dict[str, np.ndarray], perp_factors: Sequence[float],
                    eta_width_factors: Sequence[tuple[float, float]], mu: float, best_physical):
    """The cheap start's candidates, physical (n, 9) arrays.

    Stage 1: the closed-form start ``p0`` with B⊥ × ``perp_factors`` (the weak-field estimate
    saturates in kG fields). Stage 2, at ``best_physical()`` (the best of stage 1, asked for
    after it): η₀ × f_e keeping the line depth (μS₁ ∝ (1 + η_c)/η_c) and Δλ_D × f_w for each
    (f_e, f_w) of ``eta_width_factors``.
    """
    b_los = guess["B_los"]
    h0 = float(_voigt_H(float(np.median(p0[:, 6])), np.zeros(1))[0])
    ic = p0[:, 7] + mu * p0[:, 8]
    for f in perp_factors:
        p = p0.copy()
        if f != 1.0:
            bp = np.maximum(guess["B_perp"] * f, 5.0)
            p[:, 0] = np.clip(np.hypot(b_los, bp), 5.0, 4900.0)
            p[:, 1] = np.degrees(np.arctan2(bp, b_los))
        yield p
    base = best_physical()
    for fe, fw in eta_width_factors:
        p = base.copy()
        if fe != 1.0:
            ec, ec2 = p[:, 4] * h0, p[:, 4] * h0 * fe
            p[:, 4] = np.clip(p[:, 4] * fe, 1.0, 100.0)
            p[:, 8] = np.clip(p[:, 8] * ((1 + ec2) / ec2) / ((1 + ec) / ec), 0.02 * ic, 0.99 * ic / mu)
            p[:, 7] = np.clip(ic - mu * p[:, 8], 1e-3 * ic, None)
        p[:, 5] = np.clip(p[:, 5] * fw, 0.016, 0.058)
        yield p



# --------------------------------------------------------------------------- initial guess


def _cog(wavelength: np.ndarray, depression: np.ndarray, sel: np.ndarray) -> np.ndarray:
    d = np.clip(depression, 0.0, None) * sel
    tot = d.sum(-1)
    return np.where(tot > 0, (d * wavelength).sum(-1) / np.where(tot > 0, tot, 1.0), np.nan)


def initial_guess(stokes: np.ndarray, wavelength: np.ndarray, lines: list[SpectralLine] | None = None,
                  half_window_A: float = 0.2) -> dict[str, np.ndarray]:
    """Weak-field and centre-of-gravity estimates of the ME parameters, per pixel.

    Parameters
    ----------
    stokes : (N, 4, nλ) in continuum units.
    wavelength : (nλ,) Å.
    lines : default :func:`~helioforge.physics.atomic.fe_lines`.
    half_window_A : half-width of the window around each line's I minimum (searched within
        ±0.35 Å of the rest wavelength).

    Returns
    -------
    dict of (N,) arrays: ``Ic`` (95th percentile of I), ``v_los`` [km/s] (COG of I, mean of
    the lines), ``B_los`` [G] (COG of I ± V, Rees & Semel 1979: B cos γ =
    (λ₊ − λ₋) / (2 · 4.6686·10⁻¹³ λ₀² ḡ)), ``B_perp`` [G] and ``azimuth`` [deg] (weak field:
    Q + iU ≈ −¼ Ḡ Δλ_B² sin²γ e^{2iφ} ∂²I/∂λ², LL04 eq. 9.78, least squares on the line
    windows), ``B``, ``inclination`` [deg], ``depth`` (1 − min I / I_c).
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _initial_guess(np.asarray(stokes, dtype=np.float64), np.asarray(wavelength, dtype=np.float64),
                              fe_lines() if lines is None else lines, half_window_A)


def _initial_guess(s: np.ndarray, wav: np.ndarray, lines: list[SpectralLine], half_window_A: float) -> dict[str, np.ndarray]:
    I, Q, U, V = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
    Ic = np.quantile(I, 0.95, axis=-1)
    d2 = np.gradient(np.gradient(I, wav, axis=-1), wav, axis=-1)
    vs, bl, depth = [], [], []
    a_num = b_num = den = 0.0
    for line in lines:
        lam0 = line.wavelength_air
        search = np.abs(wav - lam0) <= 0.35
        if search.sum() < 3:
            continue
        Isel = np.where(search, I, np.inf)
        k = np.argmin(Isel, axis=-1)
        lam_min = wav[k]
        sel = (np.abs(wav[None, :] - lam_min[:, None]) <= half_window_A).astype(np.float64)
        lc = _cog(wav, Ic[:, None] - I, sel)
        lp = _cog(wav, Ic[:, None] - (I + V), sel)
        lm = _cog(wav, Ic[:, None] - (I - V), sel)
        vs.append(C_KMS * (lc - lam0) / lam0)
        bl.append((lp - lm) / (2.0 * LORENTZ_SHIFT * lam0**2 * max(line.g_eff, 1e-3)))
        depth.append(1.0 - I[np.arange(len(k)), k] / Ic)
        # weak-field linear polarisation (second-order moment, G = ḡ² for the triplet; LL04 eq. 9.78)
        G = line.g_eff**2 - _delta(line)
        cl = 0.25 * G * (LORENTZ_SHIFT * lam0**2) ** 2
        a_num = a_num + (-(Q * d2) * sel).sum(-1) / cl
        b_num = b_num + (-(U * d2) * sel).sum(-1) / cl
        den = den + ((d2**2) * sel).sum(-1)
    v_los = np.nanmean(np.stack(vs), axis=0) if vs else np.zeros(len(I))
    b_los = np.nanmean(np.stack(bl), axis=0) if bl else np.zeros(len(I))
    den = np.where(np.asarray(den) > 0, den, 1.0)
    a, b = np.asarray(a_num) / den, np.asarray(b_num) / den  # ≈ B⊥² cos 2φ, B⊥² sin 2φ
    b_perp = np.sqrt(np.hypot(a, b))
    azimuth = np.mod(0.5 * np.degrees(np.arctan2(b, a)), 180.0)
    v_los = np.nan_to_num(v_los, nan=0.0)
    b_los = np.nan_to_num(b_los, nan=0.0)
    b_perp = np.nan_to_num(b_perp, nan=0.0)
    azimuth = np.nan_to_num(azimuth, nan=0.0)
    B = np.hypot(b_los, b_perp)
    inclination = np.degrees(np.arctan2(b_perp, b_los))
    depth = np.nanmean(np.stack(depth), axis=0) if depth else np.zeros(len(I))
    return {"Ic": Ic, "v_los": v_los, "B_los": b_los, "B_perp": b_perp, "azimuth": azimuth, "B": B,
            "inclination": inclination, "depth": np.nan_to_num(depth, nan=0.3)}


def _delta(line: SpectralLine) -> float:
    """Δ of the second-order Landé factor Ḡ = ḡ² − Δ (LL04 eq. 3.47).

    Δ = (g_u − g_l)²/80 · (16 s − 7 d² − 4), s = J_u(J_u+1) + J_l(J_l+1), d = J_u(J_u+1) − J_l(J_l+1);
    0 for a normal triplet (Fe I 6302.5).
    """
    g_l, g_u = lande_factor(*line.lower), lande_factor(*line.upper)
    J_l, J_u = line.lower[2], line.upper[2]
    s = J_u * (J_u + 1) + J_l * (J_l + 1)
    d = J_u * (J_u + 1) - J_l * (J_l + 1)
    return (g_u - g_l) ** 2 / 80.0 * (16 * s - 7 * d**2 - 4)



# --------------------------------------------------------------------------- grid start and fast start


def _grid_variants(guess: dict[str, np.ndarray], n: int, eta0_grid: Sequence[float], width_grid: Sequence[float],
                   damping: float, best_physical):
    """The grid start's candidates, physical (n, 9) float64 arrays (azimuth 0: each is ranked at
    its closed-form optimum azimuth).

    Stage 1: the (η₀, Δλ_D) grid with S₁ from the line depth (depth ≈ S₁ η₀ / ((1 + η₀) I_c)) and
    the field of ``guess``; stage 2, at ``best_physical()`` (the best of stage 1, asked for after
    it): B_LOS × {1, 1.6} and B⊥ × {1, 1.6, 2.5} (the weak-field and COG estimates saturate in
    kG fields).
    """
    Ic, depth, field = _field_start(guess)
    B0, g0 = field(1.0, 1.0)
    v0 = np.clip(guess["v_los"], -9.5, 9.5)
    one = np.ones(n)
    for eta0 in eta0_grid:
        s1 = np.clip(depth * (1.0 + eta0) / eta0, 0.05, 0.98) * Ic
        s0 = np.clip(Ic - s1, 1e-4 * Ic, None)
        for width in width_grid:
            yield np.stack([B0, g0, 0 * one, v0, eta0 * one, width * one, damping * one, s0, s1], -1)
    base = np.array(best_physical(), dtype=np.float64)
    for f_los in (1.0, 1.6):
        for f_perp in (1.0, 1.6, 2.5):
            if f_los == 1.0 and f_perp == 1.0:
                continue
            B, g = field(f_los, f_perp)
            p = base.copy()
            p[:, 0], p[:, 1] = B, g
            yield p



def _voigt_H(a: float, v: np.ndarray) -> np.ndarray:
    return wofz(v + 1j * a).real


def fast_start(stokes: np.ndarray, wavelength: np.ndarray, lines: list[SpectralLine] | None = None, mu: float = 1.0,
               damping: float = 0.3, guess: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Closed-form start of the ME parameters for every pixel (no synthesis).

    Parameters
    ----------
    stokes : (N, 4, nλ) profiles in continuum units.
    wavelength : (nλ,) air wavelengths [Å].
    lines : default :func:`~helioforge.physics.atomic.fe_lines`; the first two lines set η₀.
    mu : heliocentric cosine.
    damping : the start value of a.
    guess : output of :func:`initial_guess` for these pixels (computed if omitted).

    Returns
    -------
    (N, 9) float64 physical parameters (:data:`PARAM_NAMES` order):

    * B, γ, φ, v_LOS: centre of gravity (Rees & Semel 1979) for v_LOS and B cos γ, weak field
      (LL04 eq. 9.78) for B sin γ and φ (:func:`initial_guess`);
    * η₀ from the depth ratio of the two lines: with one η₀ and a fixed ratio r (line 2 to
      line 1) and central depths d_k ∝ η_k/(1 + η_k), η_c = η₀ H(a, 0) solves
      d₂/d₁ = r (1 + η_c)/(1 + r η_c); μ S₁ = d₁ I_c (1 + η_c)/η_c, S₀ = I_c − μ S₁;
    * Δλ_D from the area of the normalised depression, ∫D dλ = Δλ_D ∫ D(v) dv, with D(v) the
      unpolarised ME depression for these η_c and a (LL04 eq. 9.110 with B = 0).
    """
    s = np.asarray(stokes, dtype=np.float64)
    wav = np.asarray(wavelength, dtype=np.float64)
    lines = fe_lines() if lines is None else list(lines)
    if guess is None:
        guess = initial_guess(s, wav, lines)
    n = s.shape[0]
    I = s[:, 0]
    Ic = np.clip(guess["Ic"], 1e-6, None)
    ratios = default_eta0_ratios(lines)
    h0 = float(_voigt_H(damping, np.zeros(1))[0])
    depth, area = [], []
    dlam = np.gradient(wav)
    with np.errstate(all="ignore"):
        for line in lines[:2]:
            search = np.abs(wav - line.wavelength_air) <= 0.35
            Isel = np.where(search[None, :], I, np.inf)
            k = np.argmin(Isel, axis=-1)
            lam_min = wav[k]
            win = np.abs(wav[None, :] - lam_min[:, None]) <= 0.25
            imin = I[np.arange(n), k]
            d = np.clip(1.0 - imin / Ic, 1e-3, 0.99)
            depth.append(d)
            dep = np.clip((Ic[:, None] - I) / (Ic - imin)[:, None], 0.0, 1.0) * win
            area.append((dep * dlam).sum(-1))
        if len(lines) >= 2 and ratios[1] != 1.0:
            r = ratios[1]
            q = np.clip(depth[1] / depth[0], 1e-3, 1e3)
            eta_c = (r - q) / (r * (q - 1.0))
            bad = ~np.isfinite(eta_c) | (eta_c <= 0)
            eta_c = np.where(bad, 8.0 * h0, eta_c)
        else:
            eta_c = np.full(n, 8.0 * h0)
        eta0 = np.clip(eta_c / h0, 1.5, 60.0)
        eta_c = eta0 * h0
        mus1 = np.clip(depth[0] * Ic * (1.0 + eta_c) / eta_c, 0.05 * Ic, 0.98 * Ic)
        s1 = mus1 / mu
        s0 = np.clip(Ic - mus1, 1e-3 * Ic, None)
        # depression area in Doppler units for these η: ∫ D(v) dv, D = (1 − 1/(1+η H)) / (1 − 1/(1+η H0))
        v = np.linspace(-8.0, 8.0, 161)
        H = _voigt_H(damping, v)
        widths = []
        for j, a_k in enumerate(area):
            e = eta0 * ratios[j] if j < len(ratios) else eta0
            Dv = (1.0 - 1.0 / (1.0 + e[:, None] * H)) / (1.0 - 1.0 / (1.0 + e[:, None] * h0))
            widths.append(a_k / np.trapezoid(np.clip(Dv, 0, 1), v, axis=-1))
        width = np.clip(np.nanmean(np.stack(widths), 0), 0.018, 0.055)
    width = np.nan_to_num(width, nan=0.03)
    p = np.empty((n, 9))
    p[:, 0] = np.clip(guess["B"], 5.0, 4900.0)
    p[:, 1] = guess["inclination"]
    p[:, 2] = guess["azimuth"]
    p[:, 3] = np.clip(guess["v_los"], -9.5, 9.5)
    p[:, 4] = eta0
    p[:, 5] = width
    p[:, 6] = damping
    p[:, 7] = s0
    p[:, 8] = s1
    return p

