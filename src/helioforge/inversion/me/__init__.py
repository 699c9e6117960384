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

  ``"analytic"`` runs this algorithm **compiled** (numba; :func:`~helioforge.inversion.me.me_frame_profiles_compiled`
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

The profiles must be in continuum units (e.g. :func:`helioforge.inversion.preprocess.normalise_quiet_sun`).

Modules
-------
``model``: parameters, bounds, transforms, the torch forward model and the input checks;
``start``: closed-form starts (:func:`initial_guess`, :func:`fast_start`) and the start
candidates; ``solve_torch``: the batched torch LM (``"analytic_torch"``, ``"autograd"``);
``kernels``: every numba kernel (synthesis and LM); ``solve_compiled``: the compiled solver's
Python side (``"analytic"``); ``invert``: :func:`invert_me` (method dispatch, chunks, threads),
:class:`MEResult`, :func:`me_chi2`, :func:`me_field_targets`.
"""

from helioforge.inversion.me.invert import MEResult, invert_me, me_chi2, me_field_targets
from helioforge.inversion.me.model import PARAM_BOUNDS, PARAM_NAMES, PARAM_UNITS, TELLURIC_LINES_A
from helioforge.inversion.me.solve_compiled import me_frame_profiles_compiled, me_line_constants
from helioforge.inversion.me.start import fast_start, initial_guess

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
    "me_line_constants",
    "me_frame_profiles_compiled",
]
