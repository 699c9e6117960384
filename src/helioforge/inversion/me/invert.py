"""The entry point of the ME inversion: :func:`invert_me` and its result.

Checks the inputs, builds the model (:mod:`.model`), splits the pixels into chunks run in
parallel threads, and dispatches each chunk to the solver of ``method``: the compiled solver
(:mod:`.solve_compiled`, ``"analytic"``) or a torch solver (:mod:`.solve_torch`,
``"analytic_torch"``, ``"autograd"``), with the start of :mod:`.start`; then folds the angles
and returns an :class:`MEResult`. The method is described in :mod:`helioforge.inversion.me`.
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from helioforge.inversion.me.model import (PARAM_NAMES, _fold_angles, _make_model, _pixels, _to_internal, _to_physical,
                                           _weights)
from helioforge.inversion.me.solve_compiled import (_compiled, _fast_candidates_compiled, _grid_start_compiled,
                                                    _lm_compiled, _warm_compiled)
from helioforge.inversion.me.solve_torch import _fast_candidates, _grid_start, _lm, _lm_fast
from helioforge.inversion.me.start import fast_start, initial_guess
from helioforge.physics.atomic import SpectralLine, fe_lines
from helioforge.physics.me import MEParameters, synth_me
from helioforge.physics.sicon_targets import bq_bu_bv

__all__ = ["MEResult", "me_chi2", "invert_me", "me_field_targets"]

logger = logging.getLogger(__name__)

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
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


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
        """The fitted parameters as :class:`~helioforge.physics.me.MEParameters` (for re-synthesis).

        Parameters
        ----------
        dtype : torch.dtype, optional
            dtype of the tensors (default float64).

        Returns
        -------
        MEParameters
            Tensors of the batch shape ((N,) or (H, W)) in the order of :data:`PARAM_NAMES`: B [G],
            inclination and azimuth [deg], v_los [km/s], eta0, doppler_width [Å], damping, S0, S1 [I_c].
        """
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
        with numba and run pixel by pixel (:func:`~helioforge.inversion.me.me_frame_profiles_compiled`;
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
    observer, φ from +x towards +y), then eq. 1 of the paper (:func:`helioforge.physics.sicon_targets.bq_bu_bv`),
    which is free of the 180° ambiguity.

    Returns
    -------
    dict with ``BQ``, ``BU``, ``BV`` [G] and ``vlos`` [km/s, + = redshift = downflow at disk
    centre, the sign of the targets' ``vz``], arrays of the result's batch shape.
    """
    B = torch.as_tensor(np.asarray(result.B, dtype=np.float64))
    g = torch.deg2rad(torch.as_tensor(np.asarray(result.inclination, dtype=np.float64)))
    f = torch.deg2rad(torch.as_tensor(np.asarray(result.azimuth, dtype=np.float64)))
    bq, bu, bv = bq_bu_bv(B * torch.sin(g) * torch.cos(f), B * torch.sin(g) * torch.sin(f), B * torch.cos(g))
    return {"BQ": bq.numpy(), "BU": bu.numpy(), "BV": bv.numpy(), "vlos": np.asarray(result.v_los, dtype=np.float64).copy()}

