"""Batched Milne-Eddington least-squares inversion: the classical baseline for SICON.

For every pixel, the nine parameters of :class:`helioforge.physics.me.MEParameters` (B, γ, φ,
v_LOS, η₀, Δλ_D, a, S₀, S₁) are fitted to the observed Stokes profiles of the Fe I 6301.5/6302.5 Å
pair by Levenberg–Marquardt (Levenberg 1944; Marquardt 1963; as in the Hinode ME codes MERLIN,
Lites et al. 2007, and VFISV, Borrero et al. 2011), minimising

    χ² = Σ_s Σ_λ [(O_s(λ) − S_s(λ)) / σ_s]²,

with the synthesis :func:`helioforge.physics.me.synth_me` (optionally convolved with the SP
spectral profile), all pixels at once.

Method
------
Three solvers share the model, the bounds, the damping rule and the stopping tests
(``invert_me(method=...)``):

* ``"analytic"`` (default) and ``"analytic_torch"`` — **closed-form Jacobians**: the derivatives
  of the Unno-Rachkovsky solution with respect to the nine parameters (:func:`helioforge.physics.me.me_frame_profiles`
  and :func:`~helioforge.physics.me.me_frame_to_stokes`: the chain rule through the propagation
  matrix elements, w'(z) = −2zw + 2i/√π for the Voigt and Faraday-Voigt profiles, the azimuth as
  a rotation of Q + iU by e^{2iφ}, S₀ and S₁ linear). The instrument profile is a linear map, so
  the derivatives are convolved with it like the profiles (by default on every third synthesis
  wavelength, ``jacobian_stride``; the residuals always use the full grid). One synthesis
  (profiles and Jacobian together) per LM iteration and pixel; the Faddeeva function is
  Weideman's (as in :func:`~helioforge.physics.me.synth_me`) near the line centres and
  Humlíček's region-II form (relative error < 2e-6) where |v| + a ≥ 7. **Start** in closed
  form (:func:`fast_start`): centre of gravity and weak field for the field and v_LOS, η₀ from
  the depth ratio of the two lines, S₀/S₁ from the depth, Δλ_D from the depression area; then
  seven cheap candidates (B⊥ × 1, 1.6, 2.5; η₀ × ½, 2; Δλ_D × 0.75, 1.3), each one synthesis
  on the observed grid without the instrument profile, with the least-squares azimuth in closed
  form; best χ² kept. Pixels left with χ²_red > ``restart_chi2`` are refitted from the grid
  start below and the better fit kept. Measured (``benchmarks/bench_inversion.py``) at equal
  accuracy with the autograd solver on the same pixels.

  ``"analytic"`` runs this algorithm **compiled** (numba; :func:`helioforge.physics.me.me_frame_profiles_compiled`
  for the synthesis) one pixel at a time in float64: every (pixels × wavelengths) temporary of
  the batched version becomes a row of a per-pixel work array that stays in the CPU cache, the
  wavelength loops are vectorised by LLVM, the derivatives are summed in registers, the
  instrument profile is applied as a banded matrix (±70 mÅ), the LM carries only JᵀJ and Jᵀr and
  solves the 9 × 9 system by Cholesky, and a converged pixel costs nothing more. Chunks of
  pixels run in parallel Python threads (the kernels release the GIL); the result of a pixel
  does not depend on the chunking or on the number of threads. The Weideman/Humlíček split is
  decided per pixel and component (the batched version takes the union of the windows over the
  batch), so the two versions differ at the 2e-6 relative level of Humlíček's form.
  ``"analytic_torch"`` is the batched torch version (float32 synthesis by default, cache-sized
  sub-batches), the default before the compiled one and kept for comparison.
* ``"autograd"`` — the older solver, kept for comparison (``benchmarks/bench_inversion.py``):

* **Jacobians from autograd.** The Faddeeva function of :mod:`helioforge.physics.faddeeva` has a
  custom backward but no forward-mode rule, so the Jacobian J = ∂S/∂u (4·nλ × 9 per pixel) is
  obtained by the "double-vjp" trick: g(w) = Jᵀw is built with ``create_graph=True`` for a dummy
  cotangent w; g is linear in w, so the nine rows of Jᵀ are ∂g_k/∂w, computed in one batched
  backward (``is_grads_batched``, i.e. ``vmap`` over the nine one-hot directions). Pixels are
  independent, so one pass serves the whole batch. (Forward mode through a Faddeeva with a
  ``jvp`` rule was measured ≈3.6× slower on this CPU.)
* **Per-pixel damping.** The step solves (JᵀJ + λ diag JᵀJ) δ = Jᵀr in float64 (Marquardt's
  scaling); λ follows Nielsen's rule pixel by pixel (Madsen, Nielsen & Tingleff 2004, §3.2):
  after an accepted step λ ← λ max(1/3, 1 − (2ρ − 1)³), ρ = actual / predicted χ² decrease;
  after a rejected one λ ← νλ, ν ← 2ν (the ×10/÷10 rule zig-zags along the η₀–S₀ valley of
  saturated lines).
* **Bounds by transforms** (internal variables u, physical p): B = 5000 σ(u) G; v_LOS = ±10 km/s
  and Δλ_D ∈ [15, 60] mÅ and a ∈ [0, 1.5] by scaled logistic functions; η₀, S₀, S₁ = exp(u)
  (> 0). γ and φ are left free and folded at the end (the profiles depend on cos γ, sin²γ and
  on 2φ): γ ∈ [0°, 180°], φ ∈ [0°, 180°) — the 180° ambiguity.
* **Initialisation** from the centre-of-gravity method (Rees & Semel 1979; Uitenbroek 2003) for
  v_LOS and B cos γ, the weak-field approximation (Landi Degl'Innocenti & Landolfi 2004, eq.
  9.78) for B⊥ and φ, and a small grid of (η₀, Δλ_D) with S₁ set from the line depth, the
  best χ² per pixel.
* **Stopping.** ``max_iter`` iterations at most; a pixel is *converged* (and frozen) when an
  accepted step lowers χ² by less than ``ftol`` (relative), or changes no internal parameter by
  more than 10⁻⁵ at λ ≤ 1 (noise-free data, where χ² keeps falling to round-off), or when λ
  exceeds 10⁸ (no further descent possible), or when χ² is at round-off (every residual below
  10⁻³ σ on average).
* **Weights.** σ per Stokes parameter (default 10⁻³ I_c, the Hinode noise used for SICON);
  for ground-based spectra, Stokes I can be given zero weight within ``telluric_mask_A`` of the
  telluric O₂ lines at 6302.0005 and 6302.7629 Å (absent from the ME model). Off by default:
  Hinode observes from orbit and its spectra have none.

The profiles must be in continuum units (e.g. :func:`helioforge.data.hinode_sp.normalise_quiet_sun`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numba
import numpy as np
import torch

from helioforge.physics.atomic import TELLURIC_LINES_A  # ground-based spectra only
from helioforge.physics.atomic import SpectralLine, fe_lines
from helioforge.physics.me import (_NB_FASTMATH, _NB_ROWS_FIXED, _NB_ROWS_LINE, C_KMS, LORENTZ_SHIFT, MEParameters, _nb_frame,
                                   default_eta0_ratios, me_frame_profiles, me_frame_to_stokes, synth_me)

__all__ = [
    "PARAM_NAMES",
    "PARAM_UNITS",
    "PARAM_BOUNDS",
    "TELLURIC_LINES_A",
    "MEResult",
    "initial_guess",
    "fast_start",
    "me_chi2",
    "invert_me",
    "me_field_targets",
]

logger = logging.getLogger(__name__)

#: Parameter order (that of :class:`~helioforge.physics.me.MEParameters`).
PARAM_NAMES = ("B", "inclination", "azimuth", "v_los", "eta0", "doppler_width", "damping", "S0", "S1")
#: Units of the parameters.
PARAM_UNITS = {"B": "G", "inclination": "deg", "azimuth": "deg (0-180, 180-degree ambiguous)",
               "v_los": "km/s, positive = redshift", "eta0": "", "doppler_width": "Angstrom", "damping": "",
               "S0": "I_c", "S1": "I_c"}
#: Bounds kept by the transforms; ``None`` = free (angles, folded at the end) or unbounded above.
PARAM_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "B": (0.0, 5000.0),
    "inclination": (0.0, 180.0),
    "azimuth": (0.0, 180.0),
    "v_los": (-10.0, 10.0),
    "eta0": (0.0, None),
    "doppler_width": (0.015, 0.060),
    "damping": (0.0, 1.5),
    "S0": (0.0, None),
    "S1": (0.0, None),
}

_SIGMOID = {"B": 0, "v_los": 3, "doppler_width": 5, "damping": 6}
_LOG = {"eta0": 4, "S0": 7, "S1": 8}
_LOG_CLAMP = {"eta0": (math.log(1e-3), math.log(1e4)), "S0": (math.log(1e-6), math.log(1e6)),
              "S1": (math.log(1e-6), math.log(1e6))}
_LOGIT_CLAMP = 12.0
_LAM_MAX = 1e8
_LAM_MIN = 1e-7
_SUB_BATCH = 256  # pixels per synthesis call of the torch analytic method
_METHODS = ("analytic", "analytic_torch", "autograd")
_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """Raise glibc's mmap and trim thresholds (64 MB / 256 MB), once per process.

    The analytic synthesis allocates many short-lived (pixels × wavelengths) temporaries of a
    few hundred kB; above glibc's default 128 kB mmap threshold every one of them is mapped
    and page-faulted anew, which doubles the run time. With the thresholds raised they are
    reused from the heap. No effect (and no error) on other C libraries.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _keep_best(best, best_chi, cand, chi):
    """Per pixel, the start candidate (n, 9) with the lower χ² (n,) of ``best`` and ``cand``
    (``best`` ``None``: the first candidate); torch tensors or numpy arrays alike."""
    if best is None:
        return cand, chi
    better = chi < best_chi
    where = torch.where if isinstance(cand, torch.Tensor) else np.where
    return where(better[:, None], cand, best), where(better, chi, best_chi)


def _keep_better_fits(fit, refit, redo) -> None:
    """Merge a refit of the pixels ``redo`` into ``fit`` in place: each keeps the (u, χ²,
    converged) of the lower χ², and the iterations add up. ``fit`` and ``refit`` are
    (u (n, 9), χ² (n,), iterations (n,), converged (n,)), numpy arrays or torch tensors alike."""
    u, c2, it, cv = fit
    u1, c21, it1, cv1 = refit
    better = c21 < c2[redo]
    b = redo[better]
    u[b], c2[b], cv[b] = u1[better], c21[better], cv1[better]
    it[redo] += it1


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


# --------------------------------------------------------------------------- transforms


def _to_physical(u: torch.Tensor) -> torch.Tensor:
    """Internal (…, 9) → physical (…, 9) (angles unfolded)."""
    cols = list(u.unbind(-1))
    for name, k in _SIGMOID.items():
        lo, hi = PARAM_BOUNDS[name]
        cols[k] = lo + (hi - lo) * torch.sigmoid(cols[k])
    for name, k in _LOG.items():
        cols[k] = torch.exp(cols[k])
    return torch.stack(cols, -1)


def _to_internal(p: torch.Tensor) -> torch.Tensor:
    """Physical (…, 9) → internal (…, 9); values are pulled inside the bounds first."""
    cols = list(p.unbind(-1))
    for name, k in _SIGMOID.items():
        lo, hi = PARAM_BOUNDS[name]
        x = ((cols[k] - lo) / (hi - lo)).clamp(1e-4, 1 - 1e-4)
        cols[k] = torch.log(x) - torch.log1p(-x)
    for name, k in _LOG.items():
        cols[k] = torch.log(cols[k].clamp_min(1e-6))
    return _clamp_internal(torch.stack(cols, -1))


def _clamp_internal(u: torch.Tensor) -> torch.Tensor:
    cols = list(u.unbind(-1))
    for k in _SIGMOID.values():
        cols[k] = cols[k].clamp(-_LOGIT_CLAMP, _LOGIT_CLAMP)
    for name, k in _LOG.items():
        cols[k] = cols[k].clamp(*_LOG_CLAMP[name])
    return torch.stack(cols, -1)


def _dp_du(u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """∂p/∂u (n, 9) of the transforms of :func:`_to_physical` (diagonal)."""
    d = torch.ones_like(u)
    for name, k in _SIGMOID.items():
        lo, hi = PARAM_BOUNDS[name]
        sg = torch.sigmoid(u[:, k])
        d[:, k] = (hi - lo) * sg * (1.0 - sg)
    for k in _LOG.values():
        d[:, k] = p[:, k]
    return d


def _fold_angles(inclination: np.ndarray, azimuth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """γ → [0, 180] (the profiles depend on cos γ and sin² γ), φ → [0, 180) (they depend on 2φ)."""
    g = np.mod(inclination, 360.0)
    g = np.where(g > 180.0, 360.0 - g, g)
    return g, np.mod(azimuth, 180.0)


# --------------------------------------------------------------------------- model


@dataclass
class _Model:
    wavelength: torch.Tensor  # synthesis grid (float64)
    lines: list[SpectralLine]
    mu: float
    matrix: torch.Tensor | None  # (n_obs, n_fine) spectral profile, or None
    dtype: torch.dtype
    device: torch.device
    observed: np.ndarray | None = None  # observed wavelengths [Å]
    profile: tuple[np.ndarray, np.ndarray] | None = None  # (Δλ [Å], transmission)
    jacobian_matrices: dict = field(default_factory=dict, repr=False)  # stride → (n_obs, n_fine[::stride])

    def _jacobian_matrix(self, stride: int) -> torch.Tensor:
        """Spectral-profile matrix from ``wavelength[::stride]`` to the observed grid (cached)."""
        if stride not in self.jacobian_matrices:
            from helioforge.inversion.instrument import spectral_matrix

            fine = self.wavelength.cpu().numpy()
            with warnings.catch_warnings():  # the coarse quadrature is intended (Jacobian only)
                warnings.simplefilter("ignore", UserWarning)
                m = spectral_matrix(fine[::stride], self.observed, self.profile)
            self.jacobian_matrices[stride] = torch.as_tensor(m, dtype=self.dtype, device=self.device)
        return self.jacobian_matrices[stride]

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """Internal parameters (n, 9) → synthetic profiles flattened (n, 4·nλ_obs)."""
        p = _to_physical(u)
        params = MEParameters(*p.unbind(-1))
        s = synth_me(params, self.wavelength, self.lines, mu=self.mu)
        if self.matrix is not None:
            s = torch.matmul(s, self.matrix.transpose(0, 1))
        return s.reshape(u.shape[0], -1)

    def residual_jacobian(self, u: torch.Tensor, obs: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted residuals r = (O − S) w (n, M) and J = ∂S/∂u · w (n, M, 9), by double-vjp."""
        n = u.shape[0]
        with torch.enable_grad():
            uu = u.detach().clone().requires_grad_(True)
            syn = self(uu)
            cot = torch.zeros_like(syn, requires_grad=True)
            (g,) = torch.autograd.grad(syn, uu, grad_outputs=cot, create_graph=True)
            eye = torch.eye(9, dtype=u.dtype, device=u.device)[:, None, :].expand(9, n, 9)
            (jt,) = torch.autograd.grad(g, cot, grad_outputs=eye, is_grads_batched=True)  # (9, n, M)
        J = jt.permute(1, 2, 0) * w.unsqueeze(-1)
        r = (obs - syn.detach()) * w
        return r, J

    def residual(self, u: torch.Tensor, obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (obs - self(u)) * w

    def analytic(self, u: torch.Tensor, obs: torch.Tensor, w: torch.Tensor, derivatives: bool = True,
                 n_terms: int = 16, jacobian_stride: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weighted residuals r = (O − S) w (n, M) and, optionally, J = ∂S/∂u · w as (n, 9, M).

        Closed-form derivatives (:func:`~helioforge.physics.me.me_frame_profiles`); the
        instrument profile is applied to the profiles and to their derivatives alike (it is
        linear), before the rotation by 2φ (which commutes with it). With an instrument profile
        and ``jacobian_stride`` = k > 1 the derivatives are evaluated at every k-th synthesis
        wavelength and convolved with the profile matrix of that sub-grid (an inexact-Jacobian
        LM: the residuals, hence the solution, are unchanged).
        """
        n = u.shape[0]
        k = max(int(jacobian_stride), 1) if self.matrix is not None else 1
        with torch.no_grad():
            p = _to_physical(u)
            Ps, dPs = [], []
            for lo in range(0, n, _SUB_BATCH):  # cache-sized batches
                P, _, dP = me_frame_profiles(p[lo:lo + _SUB_BATCH], self.wavelength, self.lines, self.mu, None,
                                             derivatives, n_terms, k)
                if self.matrix is not None:
                    P = P @ self.matrix.transpose(0, 1)
                    if dP is not None:
                        dP = dP @ (self.matrix if k == 1 else self._jacobian_matrix(k)).transpose(0, 1)
                Ps.append(P)
                dPs.append(dP)
            P = Ps[0] if len(Ps) == 1 else torch.cat(Ps)
            dP = None if not derivatives else dPs[0] if len(dPs) == 1 else torch.cat(dPs)
            S, J = me_frame_to_stokes(P, dP, p)
            r = (obs - S.reshape(n, -1)) * w
            if J is None:
                return r, None
            J = (J * _dp_du(u, p)[:, :, None, None]).reshape(n, 9, -1) * w.unsqueeze(1)
        return r, J


def _make_model(wavelength: np.ndarray, lines: list[SpectralLine], mu: float, spectral_profile: Any,
                oversampling: int, dtype: torch.dtype, device: torch.device) -> _Model:
    wav = np.asarray(wavelength, dtype=np.float64)
    if spectral_profile is None:
        return _Model(torch.as_tensor(wav, device=device), lines, mu, None, dtype, device, observed=wav)
    from helioforge.inversion.instrument import spectral_matrix

    if isinstance(spectral_profile, str):
        if spectral_profile != "hinode":
            raise ValueError(
                f"spectral_profile must be None, 'hinode' or (dlambda_A, transmission), got {spectral_profile!r}"
            )
        from helioforge.data.hinode import read_instrument_profile

        profile = read_instrument_profile()
    else:
        profile = (np.asarray(spectral_profile[0], dtype=np.float64), np.asarray(spectral_profile[1], dtype=np.float64))
    pad = 0.5 * (profile[0][-1] - profile[0][0]) + 0.01
    step = (wav[-1] - wav[0]) / (wav.size - 1) / max(int(oversampling), 1)
    n = int(math.ceil((wav[-1] - wav[0] + 2 * pad) / step)) + 1
    fine = wav[0] - pad + step * np.arange(n)
    m = spectral_matrix(fine, wav, profile)
    return _Model(torch.as_tensor(fine, device=device), lines, mu, torch.as_tensor(m, dtype=dtype, device=device),
                  dtype, device, observed=wav, profile=profile)


# --------------------------------------------------------------------------- inputs


def _pixels(stokes: Any, wavelength: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(N, 4, nλ) or (4, nλ, H, W) → ((P, 4, nλ) float64, batch shape)."""
    arr = stokes.detach().cpu().numpy() if isinstance(stokes, torch.Tensor) else np.asarray(stokes)
    nw = wavelength.size
    if arr.ndim == 3 and arr.shape[1] == 4 and arr.shape[2] == nw:
        return arr.astype(np.float64), (arr.shape[0],)
    if arr.ndim == 4 and arr.shape[0] == 4 and arr.shape[1] == nw:
        H, W = arr.shape[2:]
        return arr.transpose(2, 3, 0, 1).reshape(H * W, 4, nw).astype(np.float64), (H, W)
    raise ValueError(
        f"stokes must be (N, 4, {nw}) pixels or a (4, {nw}, H, W) map matching the {nw} wavelengths, "
        f"got shape {arr.shape}"
    )


def _weights(sigma: float | Sequence[float], wavelength: np.ndarray, telluric_mask_A: float) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, 4)
    if s.size != 4 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"sigma must be a positive number or 4 positive numbers (I, Q, U, V), got {sigma!r}")
    w = np.repeat((1.0 / s)[:, None], wavelength.size, axis=1)
    if telluric_mask_A > 0:
        for lt in TELLURIC_LINES_A:
            w[0, np.abs(wavelength - lt) <= telluric_mask_A] = 0.0
    return w


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
    from helioforge.physics.atomic import lande_factor

    g_l, g_u = lande_factor(*line.lower), lande_factor(*line.upper)
    J_l, J_u = line.lower[2], line.upper[2]
    s = J_u * (J_u + 1) + J_l * (J_l + 1)
    d = J_u * (J_u + 1) - J_l * (J_l + 1)
    return (g_u - g_l) ** 2 / 80.0 * (16 * s - 7 * d**2 - 4)


def _eval_rotated(obs: torch.Tensor, w: torch.Tensor, p: torch.Tensor, model: _Model) -> tuple[torch.Tensor, torch.Tensor]:
    """χ² with the best azimuth for physical parameters ``p`` (azimuth column ignored).

    Changing φ rotates the whole linear polarisation, Q + iU → e^{2iΔφ}(Q + iU), magneto-optical
    terms included, so one synthesis at φ = 0 gives the least-squares φ in closed form:
    2φ = arg Σ w² (Q_o + iU_o)(Q_0 − iU_0) (exact for σ_Q = σ_U; weights of Q used).
    Returns (χ² (n,), φ [deg] (n,)).
    """
    n = obs.shape[0]
    p0 = p.clone()
    p0[:, 2] = 0.0
    with torch.no_grad():
        syn = model(_to_internal(p0)).reshape(n, 4, -1).double()
    o = obs.reshape(n, 4, -1).double()
    ww = w.reshape(w.shape[0], 4, -1).double()
    wq2 = ww[:, 1] ** 2
    re = (wq2 * (o[:, 1] * syn[:, 1] + o[:, 2] * syn[:, 2])).sum(-1)
    im = (wq2 * (o[:, 2] * syn[:, 1] - o[:, 1] * syn[:, 2])).sum(-1)
    two_phi = torch.atan2(im, re)
    c, s = torch.cos(two_phi)[:, None], torch.sin(two_phi)[:, None]
    q = syn[:, 1] * c - syn[:, 2] * s
    u = syn[:, 1] * s + syn[:, 2] * c
    rot = torch.stack([syn[:, 0], q, u, syn[:, 3]], 1)
    chi = (((o - rot) * ww) ** 2).sum((-1, -2))
    return chi, torch.rad2deg(two_phi / 2.0)


def _grid_start(obs: torch.Tensor, w: torch.Tensor, guess: dict[str, np.ndarray], model: _Model,
                eta0_grid: Sequence[float], width_grid: Sequence[float], damping: float) -> torch.Tensor:
    """Start values: a small grid around the weak-field / COG guess, best χ² per pixel.

    Stage 1: (η₀, Δλ_D) grid with S₁ from the line depth (depth ≈ S₁ η₀ / ((1 + η₀) I_c)) and the
    field of ``guess``; stage 2: B_LOS × {1, 1.6} and B⊥ × {1, 1.6, 2.5} (the weak-field and COG
    estimates saturate in kG fields) at the best stage-1 values. The azimuth of every
    candidate is the closed-form optimum (:func:`_eval_rotated`).
    """
    dt, dev = model.dtype, model.device
    best_p, best_chi = None, None
    for p in _grid_variants(guess, obs.shape[0], eta0_grid, width_grid, damping,
                            lambda: best_p.double().cpu().numpy()):
        p = torch.as_tensor(p, dtype=dt, device=dev)
        chi, phi = _eval_rotated(obs, w, p, model)
        p[:, 2] = phi.to(dt)
        best_p, best_chi = _keep_best(best_p, best_chi, p, chi)
    return _to_internal(best_p)


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


# --------------------------------------------------------------------------- LM


def _lm(obs: torch.Tensor, w: torch.Tensor, u: torch.Tensor, model: _Model, max_iter: int, ftol: float,
        lam0: float, xtol: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Levenberg–Marquardt on a chunk. Returns (u, χ², iterations, converged)."""
    n = u.shape[0]
    dev = u.device
    u = u.clone()
    r, J = model.residual_jacobian(u, obs, w)
    chi2 = (r.double() ** 2).sum(-1)
    lam = torch.full((n,), lam0, dtype=torch.float64, device=dev)
    nu = torch.full((n,), 2.0, dtype=torch.float64, device=dev)
    iters = torch.zeros(n, dtype=torch.int64, device=dev)
    conv = ~torch.isfinite(chi2)  # pixels whose start is not finite are dropped (flagged below)
    bad_start = conv.clone()
    # residuals at round-off (every point within 10⁻³ σ): nothing left to fit
    floor = 1e-6 * float((w > 0).sum(-1).max())
    conv |= chi2 <= floor
    eye = torch.eye(9, dtype=torch.float64, device=dev)
    for _ in range(max_iter):
        idx = torch.nonzero(~conv).squeeze(-1)
        if idx.numel() == 0:
            break
        Ja = J[idx].double().transpose(1, 2)  # (k, 9, m)
        delta, g, lD, u_try = _lm_trial(Ja, r[idx].double(), lam[idx], u[idx], eye)
        r_try = model.residual(u_try, obs[idx], w[idx] if w.shape[0] > 1 else w)
        chi_try = (r_try.double() ** 2).sum(-1)
        acc, ai, _ = _lm_update(idx, delta, g, lD, chi_try, u_try, u, chi2, lam, nu, iters, conv, ftol, xtol, floor)
        need = ai[~conv[ai]]
        if need.numel():
            r_new, J_new = model.residual_jacobian(u[need], obs[need], w[need] if w.shape[0] > 1 else w)
            r[need] = r_new
            J[need] = J_new
    conv = conv & ~bad_start
    return u, chi2, iters, conv


# --------------------------------------------------------------------------- analytic method: start


def _voigt_H(a: float, v: np.ndarray) -> np.ndarray:
    from scipy.special import wofz

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


def _fast_candidates(obs: torch.Tensor, w: torch.Tensor, p0: np.ndarray, guess: dict[str, np.ndarray], model: _Model,
                     n_terms: int, perp_factors: Sequence[float],
                     eta_width_factors: Sequence[tuple[float, float]] = ()) -> torch.Tensor:
    """Best χ² among the closed-form start with B⊥ scaled by ``perp_factors`` (the weak-field
    B⊥ saturates in kG fields); one forward synthesis at φ = 0 per factor, the azimuth of each
    candidate set to its least-squares value in closed form (as in :func:`_eval_rotated`; the
    weak-field azimuth turns by 90° when the σ components split). Returns internal u (n, 9)."""
    dt, dev = model.dtype, model.device
    n = obs.shape[0]
    best_u, best_chi = None, None
    o = obs.reshape(n, 4, -1).double()
    ww = w.reshape(w.shape[0], 4, -1).double()
    wq2 = ww[:, 1] ** 2
    ones = torch.ones_like(w)
    for p in _start_variants(p0, guess, perp_factors, eta_width_factors, model.mu,
                             lambda: _to_physical(best_u).double().cpu().numpy()):
        p[:, 2] = 0.0
        u = _to_internal(torch.as_tensor(p, dtype=dt, device=dev))
        r, _ = model.analytic(u, torch.zeros_like(obs), ones, derivatives=False, n_terms=n_terms)
        syn = (-r).reshape(n, 4, -1).double()
        re = (wq2 * (o[:, 1] * syn[:, 1] + o[:, 2] * syn[:, 2])).sum(-1)
        im = (wq2 * (o[:, 2] * syn[:, 1] - o[:, 1] * syn[:, 2])).sum(-1)
        two_phi = torch.atan2(im, re)
        c, sn = torch.cos(two_phi)[:, None], torch.sin(two_phi)[:, None]
        rot = torch.stack([syn[:, 0], syn[:, 1] * c - syn[:, 2] * sn, syn[:, 1] * sn + syn[:, 2] * c, syn[:, 3]], 1)
        chi = (((o - rot) * ww) ** 2).sum((-1, -2))
        u = u.clone()
        u[:, 2] = torch.rad2deg(two_phi / 2.0).to(dt)
        best_u, best_chi = _keep_best(best_u, best_chi, u, chi)
    return best_u


# --------------------------------------------------------------------------- analytic method: LM


def _lm_trial(Jt: torch.Tensor, r: torch.Tensor, lam: torch.Tensor, u: torch.Tensor, eye: torch.Tensor):
    """One damped Gauss–Newton trial of Levenberg–Marquardt for k pixels.

    ``Jt`` (k, 9, m) transposed Jacobians and ``r`` (k, m) residuals (float64), ``lam`` (k,)
    damping, ``u`` (k, 9) internal parameters. Solves (JᵀJ + λ·diag(JᵀJ)) δ = Jᵀr (Marquardt's
    scaling, the diagonal floored at 10⁻⁹ of its largest entry). Returns ``delta``, ``g`` = Jᵀr,
    ``lD`` = λ·diag and the clamped trial point ``u + δ``.
    """
    A = Jt @ Jt.transpose(1, 2)
    g = (Jt @ r.unsqueeze(-1)).squeeze(-1)
    dA = torch.diagonal(A, dim1=1, dim2=2)
    dA = dA.clamp_min(1e-9 * dA.amax(-1, keepdim=True).clamp_min(1e-30))
    lD = lam[:, None] * dA
    M = A + lD.unsqueeze(-1) * eye + 1e-12 * eye
    delta = torch.linalg.solve(M, g.unsqueeze(-1)).squeeze(-1)
    return delta, g, lD, _clamp_internal(u + delta.to(u.dtype))


def _lm_update(idx, delta, g, lD, chi_try, u_try, u, chi2, lam, nu, iters, conv, ftol: float, xtol: float,
               floor: float):
    """Accept or reject the trial of the pixels ``idx`` and update, in place, the parameters
    ``u``, χ² ``chi2``, the damping ``lam``/``nu`` (Nielsen's rule, Madsen, Nielsen & Tingleff
    2004, §3.2; the gain ratio uses the predicted decrease χ² − |r − Jδ|² = δ·(g + λDδ)),
    ``iters`` and the convergence flags ``conv`` (relative decrease < ``ftol``, a step below
    ``xtol`` at small damping, damping above its ceiling, or χ² at the round-off ``floor``).
    Returns the accepted mask (over ``idx``), the accepted and the rejected pixel indices."""
    old = chi2[idx]
    predicted = (delta * (g + lD * delta)).sum(-1).clamp_min(1e-300)
    rho = (old - chi_try) / predicted
    acc = torch.isfinite(chi_try) & (chi_try < old)
    iters[idx] += 1
    rel = (old - chi_try) / old.clamp_min(1e-300)
    ai, rj = idx[acc], idx[~acc]
    u[ai] = u_try[acc]
    chi2[ai] = chi_try[acc]
    factor = torch.clamp(1.0 - (2.0 * rho[acc] - 1.0) ** 3, min=1.0 / 3.0)
    lam[ai] = (lam[ai] * factor).clamp_min(_LAM_MIN)
    nu[ai] = 2.0
    lam[rj] = lam[rj] * nu[rj]
    nu[rj] = nu[rj] * 2.0
    small_step = (delta[acc].abs().amax(-1) < xtol) & (lam[ai] <= 1.0)
    conv[ai[(rel[acc] < ftol) | small_step]] = True
    conv[rj[(lam[rj] > _LAM_MAX) | (chi2[rj] <= floor)]] = True
    conv[ai[chi2[ai] <= floor]] = True
    return acc, ai, rj




def _lm_fast(obs: torch.Tensor, w: torch.Tensor, u: torch.Tensor, model: _Model, max_iter: int, ftol: float,
             lam0: float, n_terms: int, xtol: float = 1e-5, jacobian_stride: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Levenberg–Marquardt with closed-form Jacobians, one synthesis (profiles + Jacobian) per
    iteration and pixel; same damping rule and stopping tests as :func:`_lm`."""
    n = u.shape[0]
    dev = u.device
    u = u.clone()
    r, J = model.analytic(u, obs, w, True, n_terms, jacobian_stride)
    chi2 = (r.double() ** 2).sum(-1)
    lam = torch.full((n,), lam0, dtype=torch.float64, device=dev)
    nu = torch.full((n,), 2.0, dtype=torch.float64, device=dev)
    iters = torch.zeros(n, dtype=torch.int64, device=dev)
    conv = ~torch.isfinite(chi2)
    bad_start = conv.clone()
    floor = 1e-6 * float((w > 0).sum(-1).max())
    conv |= chi2 <= floor
    eye = torch.eye(9, dtype=torch.float64, device=dev)
    shared_w = w.shape[0] == 1
    for _ in range(max_iter):
        idx = torch.nonzero(~conv).squeeze(-1)
        if idx.numel() == 0:
            break
        delta, g, lD, u_try = _lm_trial(J[idx].double(), r[idx].double(), lam[idx], u[idx], eye)
        r_try, J_try = model.analytic(u_try, obs[idx], w if shared_w else w[idx], True, n_terms, jacobian_stride)
        chi_try = (r_try.double() ** 2).sum(-1)
        acc, ai, _ = _lm_update(idx, delta, g, lD, chi_try, u_try, u, chi2, lam, nu, iters, conv, ftol, xtol, floor)
        r[ai] = r_try[acc]
        J[ai] = J_try[acc]
    conv = conv & ~bad_start
    return u, chi2, iters, conv


# --------------------------------------------------------------------------- compiled method (numba)
#
# method="analytic": the same model, start, damping rule and stopping tests as the torch solver
# below (_fast_candidates, _lm_fast; kept as method="analytic_torch"), one pixel at a time in
# float64 machine code (helioforge.physics.me._nb_frame for the synthesis). Each pixel's
# working set (≈ 200 kB) stays in the L2 cache; the LM keeps only JᵀJ and Jᵀr of the current
# point, and a converged pixel costs nothing more. Pixels are independent, so chunks run in
# parallel Python threads (the kernels release the GIL) and the result does not depend on the
# chunking or on the number of threads.

# numba's on-disk cache (cache=True) checks only the file that defines a kernel: the kernels below
# call physics.me._nb_frame, so after editing a kernel in physics/me.py delete
# src/helioforge/inversion/__pycache__/*.nbi/*.nbc (or touch this file), else they keep the old code.
_NB_FM = _NB_FASTMATH


def _transform_tables() -> tuple[np.ndarray, ...]:
    """(kind, lo, hi, u_min, u_max) per parameter for the compiled transforms: kind 0 free,
    1 scaled logistic on [lo, hi], 2 exp; u clamped to [u_min, u_max] (:func:`_clamp_internal`)."""
    kind = np.zeros(9, dtype=np.int64)
    lo, hi = np.zeros(9), np.zeros(9)
    umin, umax = np.full(9, -np.inf), np.full(9, np.inf)
    for name, k in _SIGMOID.items():
        kind[k] = 1
        lo[k], hi[k] = PARAM_BOUNDS[name]
        umin[k], umax[k] = -_LOGIT_CLAMP, _LOGIT_CLAMP
    for name, k in _LOG.items():
        kind[k] = 2
        umin[k], umax[k] = _LOG_CLAMP[name]
    return kind, lo, hi, umin, umax


_TRANSFORMS = _transform_tables()


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FM)
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


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FM)
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


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FM)
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


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FM)
def _nb_synth(u, derivs, consts, tables, mu, far_wing, kd, conv, Mv, Ms, Mjv, Mjs, p, dpdu, P, dP, Pc, dPc,
              wk):  # pragma: no cover - compiled
    """Frame profiles P (nλ, 4) and derivatives dP (nλ_d, 24) (:func:`~helioforge.physics.me._nb_frame`)
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


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FM)
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


def _nb_scratch(consts: tuple, kd: int, n_obs: int) -> tuple:
    """Per-call work arrays of :func:`_nb_residual` (argument order after ``Mjs``)."""
    nl, nf = consts[0].shape
    nfd = len(range(0, nf, kd))
    return (np.empty(9), np.empty(9), np.empty((nf, 4)), np.empty((nfd, 24)), np.empty((n_obs, 4)),
            np.empty((n_obs, 24)), np.empty((_NB_ROWS_FIXED + _NB_ROWS_LINE * nl, nf)))


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_NB_FM)
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


def _band(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (n_out, n_fine) matrix as (values (n_out, width), first column (n_out,) int64) of its
    non-zero band (rows of the spectral-profile matrix are a ±70 mÅ window)."""
    nz = np.abs(m) > 0
    first = np.where(nz.any(1), nz.argmax(1), 0)
    last = np.where(nz.any(1), m.shape[1] - 1 - nz[:, ::-1].argmax(1), 0)
    width = int((last - first).max()) + 1
    start = np.minimum(first, m.shape[1] - width).astype(np.int64)
    vals = np.stack([m[i, s:s + width] for i, s in enumerate(start)])
    return np.ascontiguousarray(vals, dtype=np.float64), np.ascontiguousarray(start)


@dataclass
class _Compiled:
    """Constants of the compiled model: line data on the synthesis grid, banded profile matrices."""

    consts: tuple
    mu: float
    far_wing: float
    kd: int
    conv: bool
    Mv: np.ndarray
    Ms: np.ndarray
    Mjv: np.ndarray
    Mjs: np.ndarray
    n_obs: int

    def args(self) -> tuple:
        return (self.consts, _TRANSFORMS, self.mu, self.far_wing, self.kd, self.conv, self.Mv, self.Ms, self.Mjv,
                self.Mjs)

    def scratch(self) -> tuple:
        return _nb_scratch(self.consts, self.kd, self.n_obs)

    def residual_jacobian(self, U: np.ndarray, obs: np.ndarray, w: np.ndarray,
                          derivatives: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Weighted residuals r = (O − S) w (n, 4·nλ) and J = ∂S/∂u · w (n, 9, 4·nλ) at internal
        ``U`` (n, 9) for ``obs`` (n, 4, nλ), ``w`` (4, nλ) (as :meth:`_Model.analytic`)."""
        n, m = U.shape[0], 4 * self.n_obs
        R, JJ, chi = np.empty((n, m)), np.empty((n, 9, m)), np.empty(n)
        _nb_residual_batch(np.ascontiguousarray(U, dtype=np.float64), np.ascontiguousarray(obs, dtype=np.float64),
                           np.ascontiguousarray(w, dtype=np.float64), bool(derivatives), *self.args(), *self.scratch(),
                           R, JJ, chi)
        return R, (JJ if derivatives else None)

    def rank(self, U: np.ndarray, obs: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """χ² and least-squares azimuth [deg] of the candidates ``U`` (n, 9) internal."""
        chi, phi = np.empty(U.shape[0]), np.empty(U.shape[0])
        _nb_rank(np.ascontiguousarray(U, dtype=np.float64), obs, w, *self.args(), *self.scratch(), chi, phi)
        return chi, phi


def _compiled(model: _Model, n_terms: int, jacobian_stride: int, far_wing: float = 7.0) -> _Compiled:
    """The :class:`_Compiled` twin of ``model`` (same grid, lines, μ and spectral profile)."""
    from helioforge.physics.me import me_line_constants

    consts = me_line_constants(model.wavelength.cpu().numpy(), model.lines, None, n_terms)
    n_obs = int(model.observed.size)
    if model.matrix is None:
        z, zi = np.zeros((1, 1)), np.zeros(1, dtype=np.int64)
        return _Compiled(consts, float(model.mu), float(far_wing), 1, False, z, zi, z, zi, n_obs)
    kd = max(int(jacobian_stride), 1)
    Mv, Ms = _band(model.matrix.double().cpu().numpy())
    Mj = model.matrix if kd == 1 else model._jacobian_matrix(kd)
    Mjv, Mjs = _band(Mj.double().cpu().numpy())
    return _Compiled(consts, float(model.mu), float(far_wing), kd, True, Mv, Ms, Mjv, Mjs, n_obs)


def _lm_compiled(obs: np.ndarray, w: np.ndarray, U0: np.ndarray, cm: _Compiled, max_iter: int, ftol: float,
                 lam0: float, xtol: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_nb_lm` on a chunk: ``obs`` (n, 4, nλ), ``w`` (4, nλ), ``U0`` (n, 9) internal start.
    Returns (u (n, 9), χ² (n,), iterations (n,), converged (n,))."""
    n = U0.shape[0]
    U = np.empty((n, 9))
    chi, it, cv = np.empty(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.bool_)
    floor = 1e-6 * float((w > 0).sum())
    _nb_lm(np.ascontiguousarray(U0, dtype=np.float64), obs, w, *cm.args(), *cm.scratch(), int(max_iter), float(ftol),
           float(lam0), float(xtol), floor, _LAM_MIN, _LAM_MAX, U, chi, it, cv)
    return U, chi, it, cv


def _fast_candidates_compiled(obs: np.ndarray, w: np.ndarray, p0: np.ndarray, guess: dict[str, np.ndarray],
                              cm: _Compiled, perp_factors: Sequence[float],
                              eta_width_factors: Sequence[tuple[float, float]] = ()) -> np.ndarray:
    """:func:`_fast_candidates` with the compiled synthesis: the closed-form start with B⊥ ×
    ``perp_factors``, then (η₀, Δλ_D) × ``eta_width_factors`` at the best B⊥, each ranked by one
    forward synthesis at its least-squares azimuth. Returns internal u (n, 9) float64."""
    best_u, best_chi = None, None

    def keep(p: np.ndarray) -> None:  # p is a fresh array; its azimuth is not read by the ranking
        nonlocal best_u, best_chi
        u = _to_internal(torch.as_tensor(p, dtype=torch.float64)).numpy()
        chi, phi = cm.rank(u, obs, w)
        u[:, 2] = phi
        best_u, best_chi = _keep_best(best_u, best_chi, u, chi)

    for p in _start_variants(p0, guess, perp_factors, eta_width_factors, cm.mu,
                             lambda: _to_physical(torch.as_tensor(best_u)).numpy()):
        keep(p)
    return best_u


def _grid_start_compiled(obs: np.ndarray, w: np.ndarray, guess: dict[str, np.ndarray], cm: _Compiled,
                         eta0_grid: Sequence[float], width_grid: Sequence[float], damping: float) -> np.ndarray:
    """:func:`_grid_start` with the compiled synthesis (same candidates, same ranking); internal u (n, 9)."""
    best_p, best_chi = None, None
    for p in _grid_variants(guess, obs.shape[0], eta0_grid, width_grid, damping, lambda: best_p):
        chi, phi = cm.rank(_to_internal(torch.as_tensor(p)).numpy(), obs, w)
        p[:, 2] = phi
        best_p, best_chi = _keep_best(best_p, best_chi, p, chi)
    return _to_internal(torch.as_tensor(best_p)).numpy()


def _warm_compiled(cm: _Compiled, n_obs: int) -> None:
    """Compile (or load from numba's cache) the kernels before a timed run: one dummy pixel."""
    obs = np.full((1, 4, n_obs), 0.5)
    obs[:, 1:] = 0.0
    w = np.ones((4, n_obs))
    U = _to_internal(torch.tensor([[100.0, 45.0, 0.0, 0.0, 5.0, 0.03, 0.3, 0.3, 0.7]], dtype=torch.float64)).numpy()
    cm.rank(U, obs, w)
    _lm_compiled(obs, w, U, cm, 1, 1e-4, 1e-2)


# --------------------------------------------------------------------------- result


@dataclass
class MEResult:
    """Result of :func:`invert_me`; every array has the batch shape ((N,) or (H, W)).

    Attributes
    ----------
    B [G], inclination [deg, 0–180], azimuth [deg, 0–180, ambiguous by 180°], v_los [km/s,
    + = redshift], eta0, doppler_width [Å], damping, S0, S1 [I_c] : fitted parameters (NaN
    for pixels with non-finite input).
    chi2 : reduced χ² (χ² / (number of weighted points − 9)); ≈ 1 for a perfect model at the
        stated σ.
    iterations : LM iterations done per pixel.
    converged : the convergence test was met within ``max_iter`` (see module notes).
    time_s : wall-clock time of the inversion [s]. n_pixels : pixels inverted.
    settings : the options used (σ, iterations, lines, μ, spectral profile, dtype, device).
    """

    B: np.ndarray
    inclination: np.ndarray
    azimuth: np.ndarray
    v_los: np.ndarray
    eta0: np.ndarray
    doppler_width: np.ndarray
    damping: np.ndarray
    S0: np.ndarray
    S1: np.ndarray
    chi2: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    time_s: float
    n_pixels: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The nine parameters by name (:data:`PARAM_NAMES`)."""
        return {k: getattr(self, k) for k in PARAM_NAMES}

    @property
    def pixels_per_s(self) -> float:
        """Throughput, pixels per second."""
        return self.n_pixels / self.time_s if self.time_s > 0 else float("inf")

    def to_me_parameters(self, dtype: torch.dtype = torch.float64) -> MEParameters:
        """The fitted parameters as :class:`~helioforge.physics.me.MEParameters` (for re-synthesis)."""
        return MEParameters(*(torch.as_tensor(np.asarray(getattr(self, k)), dtype=dtype) for k in PARAM_NAMES))


# --------------------------------------------------------------------------- public API


def me_chi2(stokes: Any, params: MEParameters, wavelength: Any, lines: list[SpectralLine] | None = None,
            sigma: float | Sequence[float] = 1e-3, mu: float = 1.0, spectral_profile: Any = None,
            telluric_mask_A: float = 0.0) -> np.ndarray:
    """Reduced χ² of ME profiles with ``params`` against observed ``stokes``.

    Parameters
    ----------
    stokes : (N, 4, nλ) observed profiles [I_c].
    params : MEParameters of batch shape (N,).
    wavelength, lines, sigma, mu, spectral_profile, telluric_mask_A : as in :func:`invert_me`.

    Returns
    -------
    (N,) float64: Σ [(O − S)/σ]² / (number of weighted points − 9).
    """
    wav = np.asarray(wavelength, dtype=np.float64)
    lines = fe_lines() if lines is None else lines
    obs, _ = _pixels(stokes, wav)
    model = _make_model(wav, lines, mu, spectral_profile, 3, torch.float64, torch.device("cpu"))
    p = torch.stack([torch.as_tensor(getattr(params, k), dtype=torch.float64).reshape(-1) for k in PARAM_NAMES], -1)
    with torch.no_grad():
        s = synth_me(MEParameters(*p.unbind(-1)), model.wavelength, lines, mu=mu)
        if model.matrix is not None:
            s = s @ model.matrix.T
    w = _weights(sigma, wav, telluric_mask_A)
    chi = (((obs - s.numpy()) * w) ** 2).sum(axis=(1, 2))
    return chi / max(int((w > 0).sum()) - 9, 1)


def invert_me(
    stokes: Any,
    wavelength: Any,
    lines: list[SpectralLine] | None = None,
    sigma: float | Sequence[float] = 1e-3,
    max_iter: int = 30,
    *,
    mu: float = 1.0,
    spectral_profile: Any = None,
    oversampling: int = 3,
    telluric_mask_A: float = 0.0,
    ftol: float = 1e-4,
    lam0: float = 1e-2,
    eta0_grid: Sequence[float] = (2.0, 5.0, 12.0, 30.0),
    width_grid: Sequence[float] = (0.02, 0.03, 0.04, 0.05),
    initial: dict[str, Any] | None = None,
    chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    method: str = "analytic",
    n_terms: int = 16,
    perp_factors: Sequence[float] = (1.0, 1.6, 2.5),
    restart_chi2: float | None = 4.0,
    jacobian_stride: int = 3,
    eta_width_factors: Sequence[tuple[float, float]] = ((0.5, 1.0), (2.0, 1.0), (1.0, 0.75), (1.0, 1.3)),
    workers: int | None = None,
) -> MEResult:
    """Milne-Eddington least-squares inversion of many pixels at once (see the module notes).

    Parameters
    ----------
    stokes : (N, 4, nλ) pixels or a (4, nλ, H, W) map (e.g. ``SPMap.stokes``), continuum units.
    wavelength : (nλ,) air wavelengths [Å].
    lines : spectral lines; default the Fe I 6301.5/6302.5 Å pair (one η₀, fixed ratio,
        :func:`~helioforge.physics.me.synth_me`).
    sigma : noise σ, one value or four (I, Q, U, V) [I_c]; the weights are 1/σ.
    max_iter : LM iterations at most.
    mu : heliocentric cosine (enters as μ S₁).
    spectral_profile : ``None`` (ME profiles compared directly: no instrument profile),
        ``"hinode"`` (the SP transmission profile, :func:`~helioforge.data.hinode.read_instrument_profile`)
        or ``(dlambda_A, transmission)``: the model is synthesised on a grid ``oversampling``
        times finer, padded by the profile half-width, and convolved onto ``wavelength``
        (:func:`~helioforge.inversion.instrument.spectral_matrix`); ≈3× slower.
    telluric_mask_A : Stokes I points within this distance of the telluric O₂ lines get zero
        weight (0, the default, disables: Hinode spectra have no telluric lines; for
        ground-based spectra, e.g. 0.03 Å).
    ftol : relative χ² decrease below which an accepted step marks convergence.
    lam0 : initial LM damping.
    eta0_grid, width_grid : the (η₀, Δλ_D [Å]) grid of the autograd start and of the analytic
        methods' restarts.
    initial : optional start values, a dict with any of :data:`PARAM_NAMES` (arrays of the batch
        shape or scalars); they replace the grid start for those parameters.
    chunk : pixels per batch (memory ∝ chunk); default 256 (analytic: pixels are fitted one at
        a time, the chunks only spread the work over the threads, at least four per worker),
        4096 (analytic_torch: the synthesis runs in cache-sized sub-batches of 256, and a large
        chunk amortises the per-iteration overhead of the last few unconverged pixels) or 512
        (autograd).
    dtype : synthesis/Jacobian precision of the torch solvers (float32 default; normal equations
        in float64); ``method="analytic"`` computes everything in float64.
    device : torch device (the compiled ``method="analytic"`` runs on the CPU whatever it is).
    method : ``"analytic"`` (default): closed-form Jacobians of the Unno-Rachkovsky solution
        (convolved with the instrument profile like the profiles), one synthesis per LM
        iteration, and the closed-form start of :func:`fast_start` (centre of gravity + weak
        field + line depths) tried with B⊥ × ``perp_factors`` (one synthesis each), compiled
        with numba and run pixel by pixel (:func:`~helioforge.physics.me.me_frame_profiles_compiled`;
        the first call of a fresh installation compiles the kernels, ≈ 20 s, outside the
        reported ``time_s``; later processes load them from numba's disk cache, ≈ 0.5 s, in
        ``__pycache__`` or ``NUMBA_CACHE_DIR``). ``"analytic_torch"``: the same algorithm as
        batched torch operations (:func:`~helioforge.physics.me.me_frame_profiles`), the
        previous default, kept for comparison. ``"autograd"``: the older solver (autograd double-vjp Jacobians, a
        21-candidate grid start of ≈ 60 syntheses per pixel), kept for comparison
        (``benchmarks/bench_inversion.py``).
    n_terms : terms of the Faddeeva approximation (analytic methods; 16 = :func:`synth_me`).
    perp_factors : B⊥ multipliers of the start candidates (analytic methods).
    eta_width_factors : analytic methods: (η₀, Δλ_D) multipliers of the second-stage
        start candidates, tried at the best B⊥ (S₁ rescaled to keep the line depth).
    workers : chunks inverted in parallel Python threads (each with one torch intra-op thread
        for the torch solvers); default ``torch.get_num_threads()`` for the analytic methods, 1
        for ``"autograd"``; for the torch solvers at most one per 512 pixels.
    restart_chi2 : analytic methods: pixels whose reduced χ² stays above this value are
        inverted again from the (η₀, Δλ_D) grid start of the autograd method (forward
        syntheses only) and the better fit is kept (a local minimum of the closed-form start);
        ``None`` disables.
    jacobian_stride : analytic methods with an instrument profile: the closed-form
        Jacobian is evaluated at every k-th synthesis wavelength and convolved with the profile
        matrix of that sub-grid (the residuals stay on the full grid, so the fitted minimum is
        the same; only the LM steps use the coarser derivative quadrature); 1 = exact. The
        default 3 puts the Jacobian on the observed sampling, ≈ 1.4× faster per iteration.

    Returns
    -------
    MEResult

    Raises
    ------
    ValueError : stokes not (N, 4, nλ) / (4, nλ, H, W) matching ``wavelength``, wavelength not
        1-D increasing, bad ``sigma``, ``max_iter`` < 1, μ outside (0, 1], bad
        ``spectral_profile``, unknown ``method``.

    Source: Levenberg–Marquardt ME inversion as in Lites et al. (2007, MERLIN) and Borrero et
    al. (2011, VFISV); initial guesses: Rees & Semel (1979), LL04 §9.6.
    """
    wav = np.asarray(wavelength.detach().cpu().numpy() if isinstance(wavelength, torch.Tensor) else wavelength,
                     dtype=np.float64)
    if wav.ndim != 1 or wav.size < 10 or not np.all(np.diff(wav) > 0):
        raise ValueError(f"wavelength must be 1-D, strictly increasing, ≥ 10 points; got shape {wav.shape}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be ≥ 1, got {max_iter}")
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    obs_np, batch_shape = _pixels(stokes, wav)
    w_np = _weights(sigma, wav, telluric_mask_A)
    if method == "analytic_torch":
        _tune_malloc()
    if chunk is None:
        chunk = {"analytic": 256, "analytic_torch": 4096}.get(method, 512)
    lines = fe_lines() if lines is None else list(lines)
    device = torch.device(device)
    # the compiled solver works in float64 throughout: its grids and profile matrices too
    m_dtype, m_device = (torch.float64, torch.device("cpu")) if method == "analytic" else (dtype, device)
    model = _make_model(wav, lines, mu, spectral_profile, oversampling, m_dtype, m_device)
    model_start = (model if model.matrix is None
                   else _make_model(wav, lines, mu, None, oversampling, m_dtype, m_device))
    if method == "analytic":
        cm = _compiled(model, n_terms, jacobian_stride)
        cm_start = cm if model.matrix is None else _compiled(model_start, n_terms, 1)
        w_c = np.ascontiguousarray(w_np, dtype=np.float64)
    n_total = obs_np.shape[0]
    ok = np.isfinite(obs_np).all(axis=(1, 2))
    out = np.full((n_total, 9), np.nan)
    chi2 = np.full(n_total, np.nan)
    iters = np.zeros(n_total, dtype=np.int64)
    conv = np.zeros(n_total, dtype=bool)
    n_dof = max(int((w_np > 0).sum()) - 9, 1)
    good = np.flatnonzero(ok)
    init_over = {}
    if initial:
        for k, v in initial.items():
            if k not in PARAM_NAMES:
                raise ValueError(f"unknown initial parameter {k!r}; expected some of {PARAM_NAMES}")
            init_over[PARAM_NAMES.index(k)] = np.broadcast_to(np.asarray(v, dtype=np.float64).reshape(-1)
                                                             if np.ndim(v) else np.asarray(v, dtype=np.float64),
                                                             (n_total,))
    w_t = torch.as_tensor(w_np.reshape(1, -1), dtype=dtype, device=device)
    # pixels left with χ²_red above this after the fast start are refitted from the grid start
    restart_limit = float("inf") if restart_chi2 is None or init_over else float(restart_chi2)

    def run(sel: np.ndarray) -> None:
        obs_c = obs_np[sel]
        obs_t = (None if method == "analytic"
                 else torch.as_tensor(obs_c.reshape(len(sel), -1), dtype=dtype, device=device))
        guess = initial_guess(obs_c, wav, lines)
        if method in ("analytic", "analytic_torch"):
            p_start = fast_start(obs_c, wav, lines, mu, damping=0.3, guess=guess)
            for k, v in init_over.items():
                p_start[:, k] = v[sel]
        if method == "analytic":
            obs_n = np.ascontiguousarray(obs_c, dtype=np.float64)
            if init_over:
                U0 = _to_internal(torch.as_tensor(p_start, dtype=torch.float64)).numpy()
            else:  # candidates ranked without the instrument profile (3× fewer wavelengths)
                U0 = _fast_candidates_compiled(obs_n, w_c, p_start, guess, cm_start, perp_factors, eta_width_factors)
            fit = _lm_compiled(obs_n, w_c, U0, cm, int(max_iter), ftol, lam0)
            redo = np.flatnonzero(~(fit[1] / n_dof <= restart_limit))
            if redo.size:
                g_r = {k: v[redo] for k, v in guess.items()}
                U1 = _grid_start_compiled(obs_n[redo], w_c, g_r, cm, eta0_grid, width_grid, damping=0.3)
                _keep_better_fits(fit, _lm_compiled(obs_n[redo], w_c, U1, cm, int(max_iter), ftol, lam0), redo)
            u, c2, it, cv = (torch.as_tensor(x) for x in fit)
        elif method == "analytic_torch":
            if init_over:
                u0 = _to_internal(torch.as_tensor(p_start, dtype=dtype, device=device))
            else:  # candidates ranked without the instrument profile (3× fewer wavelengths)
                u0 = _fast_candidates(obs_t, w_t, p_start, guess, model_start, n_terms, perp_factors,
                                      eta_width_factors)
            u, c2, it, cv = _lm_fast(obs_t, w_t, u0, model, int(max_iter), ftol, lam0, n_terms,
                                     jacobian_stride=jacobian_stride)
            # restart the pixels left far above the noise from the grid start (forward syntheses only)
            redo = torch.nonzero(~(c2 / n_dof <= restart_limit)).squeeze(-1)
            if redo.numel():
                g_r = {k: v[redo.cpu().numpy()] for k, v in guess.items()}
                u1 = _grid_start(obs_t[redo], w_t, g_r, model, eta0_grid, width_grid, damping=0.3)
                _keep_better_fits((u, c2, it, cv), _lm_fast(obs_t[redo], w_t, u1, model, int(max_iter), ftol, lam0,
                                                            n_terms, jacobian_stride=jacobian_stride), redo)
        else:
            u0 = _grid_start(obs_t, w_t, guess, model, eta0_grid, width_grid, damping=0.3)
            if init_over:
                p0 = _to_physical(u0)
                for k, v in init_over.items():
                    p0[:, k] = torch.as_tensor(v[sel], dtype=dtype, device=device)
                u0 = _to_internal(p0)
            u, c2, it, cv = _lm(obs_t, w_t, u0, model, int(max_iter), ftol, lam0)
        out[sel] = _to_physical(u).double().cpu().numpy()
        chi2[sel] = c2.cpu().numpy() / n_dof
        iters[sel] = it.cpu().numpy()
        conv[sel] = cv.cpu().numpy()
        logger.debug("ME inversion: %d pixels done", len(sel))

    step = max(int(chunk), 1)
    default_workers = 1 if method == "autograd" else torch.get_num_threads()
    n_workers = max(int(workers if workers is not None else default_workers), 1)
    if method != "analytic":  # the torch solvers: threads pay off only on large chunks
        n_workers = min(n_workers, max(good.size // 512, 1))
    if n_workers > 1 and good.size:  # at least one chunk per worker
        step = min(step, int(math.ceil(good.size / n_workers)))
    if method == "analytic":  # pieces balance the threads; a pixel's result does not depend on its chunk
        step = min(int(chunk), max(int(math.ceil(good.size / (4 * n_workers))), 16)) if good.size else 1
    pieces = [good[i:i + step] for i in range(0, good.size, step)]
    if method == "analytic_torch" and model.matrix is not None:
        model._jacobian_matrix(max(int(jacobian_stride), 1))  # build the cache before the threads start
    if method == "analytic":
        _warm_compiled(cm, wav.size)  # compile (or load from the cache) before the clock starts
    t0 = time.perf_counter()
    if n_workers > 1 and len(pieces) > 1:
        # chunks in parallel Python threads (torch releases the GIL in its kernels), one intra-op
        # thread each: the elementwise kernels of a few hundred kB scale poorly over threads
        from concurrent.futures import ThreadPoolExecutor

        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                list(pool.map(run, pieces))
        finally:
            torch.set_num_threads(n_threads)
    else:
        for sel in pieces:
            run(sel)
    elapsed = time.perf_counter() - t0
    out[~np.isfinite(chi2)] = np.nan
    inc, azi = _fold_angles(out[:, 1], out[:, 2])
    out[:, 1], out[:, 2] = inc, azi
    shape = batch_shape
    res = {k: out[:, i].reshape(shape) for i, k in enumerate(PARAM_NAMES)}
    settings = {
        "sigma": np.asarray(sigma, dtype=float).tolist(),
        "max_iter": int(max_iter),
        "ftol": ftol,
        "lines": [ln.name for ln in lines],
        "mu": mu,
        "spectral_profile": (None if spectral_profile is None
                             else spectral_profile if isinstance(spectral_profile, str) else "custom"),
        "telluric_mask_A": telluric_mask_A,
        "dtype": str(model.matrix.dtype if model.matrix is not None else m_dtype).replace("torch.", ""),
        "device": str(device),
        "method": method,
        "torch_threads": torch.get_num_threads(),
        "workers": n_workers,
        "n_wavelengths": int(wav.size),
        "n_skipped_nonfinite": int((~ok).sum()),
    }
    logger.info("ME inversion of %d pixels in %.2f s (%.1f px/s), %.1f%% converged", good.size, elapsed,
                good.size / elapsed if elapsed > 0 else float("inf"), 100.0 * conv[ok].mean() if ok.any() else 0.0)
    return MEResult(**res, chi2=chi2.reshape(shape), iterations=iters.reshape(shape), converged=conv.reshape(shape),
                    time_s=elapsed, n_pixels=int(good.size), settings=settings)


def me_field_targets(result: MEResult) -> dict[str, np.ndarray]:
    """SICON's field targets from an ME result, for comparison with the networks' outputs.

    Bx = B sin γ cos φ, By = B sin γ sin φ, Bz = B cos γ (line-of-sight frame, z towards the
    observer, φ from +x towards +y), then eq. 1 of the paper (:func:`helioforge.inversion.trainset.bq_bu_bv`),
    which is free of the 180° ambiguity.

    Returns
    -------
    dict with ``BQ``, ``BU``, ``BV`` [G] and ``vlos`` [km/s, + = redshift = downflow at disk
    centre, the sign of the targets' ``vz``], arrays of the result's batch shape.
    """
    from helioforge.inversion.trainset import bq_bu_bv

    B = torch.as_tensor(np.asarray(result.B, dtype=np.float64))
    g = torch.deg2rad(torch.as_tensor(np.asarray(result.inclination, dtype=np.float64)))
    f = torch.deg2rad(torch.as_tensor(np.asarray(result.azimuth, dtype=np.float64)))
    bq, bu, bv = bq_bu_bv(B * torch.sin(g) * torch.cos(f), B * torch.sin(g) * torch.sin(f), B * torch.cos(g))
    return {"BQ": bq.numpy(), "BU": bu.numpy(), "BV": bv.numpy(), "vlos": np.asarray(result.v_los, dtype=np.float64).copy()}
