"""Hinode SOT/SP instrument model: differentiable degradation of synthetic Stokes maps.

Implements steps 2–5 of the SICON training-set recipe (Asensio Ramos & Díaz Baso 2019, A&A
626, A102, §2) for the Hinode spectropolarimeter (SP; Lites et al. 2013, Sol. Phys. 283, 579):

2. spatial convolution with the Hinode PSF (Danilovic et al. 2010) at the resolution of the
   synthetic map, then rebinning to the 0.16″ SP pixel  (:func:`spatial_degrade`, :func:`rebin`);
3. convolution with the SP spectral transmission profile and re-interpolation onto the
   standard 112-point wavelength axis  (:func:`spectral_degrade`; the integral is formed by one
   of :data:`SPECTRAL_QUADRATURES`, see :func:`spectral_matrix`);
   normalisation to the median quiet-Sun continuum  (:func:`normalise_continuum`,
   :func:`quiet_sun_continuum`);
5. Gaussian noise of σ = 10⁻³ I_c on all four Stokes parameters  (:func:`add_noise`).

Everything is PyTorch, batched over any leading dimensions, and keeps autograd: gradients
flow from the degraded maps back to the synthetic Stokes maps (the instrument data are
constants). The spectral and spatial operators act on different axes and are linear, so they
commute; :meth:`HinodeSP.degrade` applies the spectral one first because it shrinks the
wavelength axis to 112 points before the (more expensive) spatial convolution; the result is
the paper's order up to rounding.

Conventions
-----------
* Stokes arrays end with ``(4, nλ)`` (I, Q, U, V); maps are ``(..., H, W, 4, nλ)``; images for
  the spatial operators are ``(..., H, W)``.
* Wavelengths are air wavelengths in Å (:func:`helioforge.data.hinode.hinode_wavelengths`).
* Pixel scales are in arcsec; ``factor`` = output pixel / input pixel.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from helioforge.config import data_root
from helioforge.data.hinode import (
    HINODE_PIXEL_ARCSEC,
    hinode_wavelengths,
    psf_for_pixel,
    read_instrument_profile,
    read_psf,
)

__all__ = [
    "SPECTRAL_QUADRATURES",
    "check_quadrature",
    "spectral_matrix",
    "spectral_degrade",
    "spatial_degrade",
    "rebin_matrix",
    "rebin",
    "quiet_sun_continuum",
    "normalise_continuum",
    "add_noise",
    "HinodeSP",
]

logger = logging.getLogger(__name__)

TensorLike = torch.Tensor | np.ndarray | Sequence[float]


def _as_1d_numpy(x: TensorLike, name: str, min_points: int = 2) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 1 or arr.size < min_points:
        raise ValueError(f"{name} must be 1-D with at least {min_points} point(s), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite values")
    return arr


#: Quadratures of :func:`spectral_matrix` → degree of the spline interpolant of the spectrum
#: (``None``: the sampled kernel with trapezoid weights).
SPECTRAL_QUADRATURES: dict[str, int | None] = {"trapezoid": None, "linear": 1, "cubic": 3, "quintic": 5}
#: Gauss–Legendre nodes per sub-interval: exact for polynomials of degree ≤ 7, i.e. for the
#: product of a quintic (or lower) spline piece with a linear piece of the profile.
_GAUSS_NODES = 4


def check_quadrature(quadrature: str) -> int | None:
    """The spline degree of ``quadrature`` (a key of :data:`SPECTRAL_QUADRATURES`).

    Raises
    ------
    ValueError : an unknown quadrature, naming the choices.
    """
    if quadrature not in SPECTRAL_QUADRATURES:
        raise ValueError(f"unknown quadrature {quadrature!r}; choose one of {tuple(SPECTRAL_QUADRATURES)}")
    return SPECTRAL_QUADRATURES[quadrature]


def _spline_matrix(wf: np.ndarray, wo: np.ndarray, dl: np.ndarray, tr: np.ndarray, degree: int) -> np.ndarray:
    """``M[o, j] = ∫ C_j(λ) P(λ_o − λ) dλ`` with ``C_j`` the cardinal functions of the
    interpolating spline of ``degree`` on ``wf`` (not-a-knot ends), integrated exactly.

    The spline is ``s(λ) = Σ_i c_i B_i(λ)`` with ``c = A⁻¹ S`` (``A`` the collocation matrix of
    the B-splines at ``wf``), so ``M = K A⁻¹`` with ``K[o, i] = ∫ B_i(λ) P(λ_o − λ) dλ``. On each
    interval between consecutive points of ``wf`` ∪ ``λ_o − dl`` both ``B_i`` (degree ≤ 5) and
    ``P`` (linear) are polynomials, so 4-point Gauss–Legendre integrates their product exactly.
    """
    from scipy.interpolate import BSpline, make_interp_spline
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import splu

    n = wf.size
    if n < degree + 1:
        raise ValueError(f"a degree-{degree} spline quadrature needs at least {degree + 1} fine wavelengths, got {n}")
    knots = make_interp_spline(wf, np.zeros(n), k=degree).t
    gx, gw = np.polynomial.legendre.leggauss(_GAUSS_NODES)
    nodes, weights, rows = [], [], []
    for o, w0 in enumerate(wo):
        lo, hi = max(w0 - dl[-1], wf[0]), min(w0 - dl[0], wf[-1])
        if not hi > lo:
            continue
        inner = np.concatenate([w0 - dl, wf])
        bp = np.unique(np.concatenate([[lo, hi], inner[(inner > lo) & (inner < hi)]]))
        a, b = bp[:-1], bp[1:]
        half, mid = 0.5 * (b - a), 0.5 * (a + b)
        x = (mid[:, None] + half[:, None] * gx[None, :]).ravel()
        w = (half[:, None] * gw[None, :]).ravel() * np.interp(w0 - x, dl, tr, left=0.0, right=0.0)
        nodes.append(x)
        weights.append(w)
        rows.append(np.full(x.size, o))
    x = np.clip(np.concatenate(nodes), wf[0], wf[-1])
    g = csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.arange(x.size))), shape=(wo.size, x.size))
    K = (g @ BSpline.design_matrix(x, knots, degree)).toarray()  # (n_out, n)
    A = BSpline.design_matrix(wf, knots, degree).tocsc()  # (n, n) collocation, banded
    return splu(A.T.tocsc()).solve(np.ascontiguousarray(K.T)).T  # K A⁻¹


def spectral_matrix(
    wav_fine: TensorLike,
    wav_out: TensorLike | None = None,
    profile: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    quadrature: str = "trapezoid",
) -> np.ndarray:
    """Linear operator of the spectral degradation: convolution with the profile, sampled at ``wav_out``.

    The output is ``(S * P)(λ_o) = ∫ S(λ) P(λ_o − λ) dλ`` with ``P`` the transmission profile
    (its table linearly interpolated, zero outside it), evaluated directly at the output
    wavelengths, so the "re-interpolation" onto the Hinode axis adds no interpolation error.
    ``quadrature`` says how the integral is formed from the samples ``S_j = S(λ_j)``:

    ``"trapezoid"`` (default; the original operator)
        ``M[o, j] = P(λ_o − λ_j) w_j / Σ_j' P(λ_o − λ_j') w_j'``, with ``w_j`` the trapezoid
        weights of the (possibly non-uniform) fine grid: the kernel is *sampled* on the fine
        grid. Accurate only when the grid resolves the profile (≲ 3 mÅ for the ≈ 24 mÅ wide SP
        profile): on the 10.7 mÅ grid of :func:`~helioforge.inversion.forward.synthesis_wavelengths`
        it errs by up to 2.7 × 10⁻³ I_c in I (see ``docs/synthesis.md``).
    ``"linear"``, ``"cubic"``, ``"quintic"``
        ``S`` is replaced by its interpolating spline of degree 1, 3 or 5 through the samples
        (not-a-knot ends for 3 and 5), ``S(λ) ≈ Σ_j S_j C_j(λ)``, and the integral of that
        spline against the piecewise-linear profile is computed *exactly* (4-point
        Gauss–Legendre on every interval between fine points and profile nodes):
        ``M[o, j] = ∫ C_j(λ) P(λ_o − λ) dλ``, rows then normalised. The only error left is
        the interpolation error of the spectrum: for the Fe I 630 nm lines on the 10.7 mÅ grid
        ``"quintic"`` stays below 4 × 10⁻⁵ I_c (``"cubic"`` 1.5 × 10⁻⁴). The spline's cardinal
        functions have global (exponentially decaying) support, so the matrix is dense with
        negligible entries far from the kernel, and a single-sample spike rings (use
        ``"trapezoid"`` or ``"linear"`` for spectra that are not smooth on the fine grid).

    Every row is normalised to unit sum (the kernel has unit area on the fine grid), so a
    constant spectrum is reproduced exactly, with any quadrature.

    Edges: where the kernel (±70 mÅ for the SP) reaches past the ends of ``wav_fine``, the
    missing part is dropped and the row renormalised over the covered part (a truncated,
    renormalised kernel). Pad the synthesis grid by ≥ 0.07 Å beyond ``wav_out`` to avoid it.

    Parameters
    ----------
    wav_fine : (n_fine,) strictly increasing synthesis wavelengths, Å.
    wav_out : (n_out,) output wavelengths, Å, inside ``[wav_fine[0], wav_fine[-1]]``;
        default the Hinode SP grid (112).
    profile : ``(dlambda_A, transmission)``; default
        :func:`helioforge.data.hinode.read_instrument_profile`.
    quadrature : ``"trapezoid"``, ``"linear"``, ``"cubic"`` or ``"quintic"`` (see above;
        :data:`SPECTRAL_QUADRATURES`).

    Returns
    -------
    float64 (n_out, n_fine), rows summing to 1.

    Raises
    ------
    ValueError : grids not strictly increasing, ``wav_out`` outside ``wav_fine``, a row with
        no fine point under the kernel (fine grid far too coarse), an unknown ``quadrature``,
        or fewer fine points than the spline needs (degree + 1).

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 3; profile of Lites et al. (2013); the
    spline quadratures are product integration (e.g. Davis & Rabinowitz 1984, *Methods of
    Numerical Integration*, §2.5) with B-spline interpolants (de Boor 2001).
    """
    degree = check_quadrature(quadrature)
    wf = _as_1d_numpy(wav_fine, "wav_fine")
    wo = _as_1d_numpy(hinode_wavelengths() if wav_out is None else wav_out, "wav_out", min_points=1)
    if not np.all(np.diff(wf) > 0):
        raise ValueError("wav_fine must be strictly increasing")
    if wo.min() < wf[0] - 1e-9 or wo.max() > wf[-1] + 1e-9:
        raise ValueError(
            f"wav_out {wo.min():.4f}..{wo.max():.4f} Å lies outside wav_fine {wf[0]:.4f}..{wf[-1]:.4f} Å"
        )
    if profile is None:
        profile = read_instrument_profile()
    dl, tr = np.asarray(profile[0], dtype=np.float64), np.asarray(profile[1], dtype=np.float64)
    step = np.diff(wf)
    half_width = 0.5 * (dl[-1] - dl[0])
    if step.max() > half_width / 4:
        warnings.warn(
            f"synthesis grid step {step.max():.4f} Å is coarse for a spectral profile of half-width "
            f"{half_width:.4f} Å; the convolution is under-resolved",
            stacklevel=2,
        )
    w = np.empty_like(wf)
    w[0], w[-1] = step[0] / 2, step[-1] / 2
    w[1:-1] = (step[:-1] + step[1:]) / 2
    kern = np.interp(wo[:, None] - wf[None, :], dl, tr, left=0.0, right=0.0) * w[None, :]
    norm = kern.sum(axis=1, keepdims=True)
    if np.any(norm <= 0):
        bad = wo[np.flatnonzero(norm[:, 0] <= 0)[0]]
        raise ValueError(f"no fine-grid point under the spectral profile at {bad:.4f} Å: wav_fine is too coarse")
    if degree is not None:
        kern = _spline_matrix(wf, wo, dl, tr, degree)
        norm = kern.sum(axis=1, keepdims=True)
    return kern / norm


def spectral_degrade(
    stokes: torch.Tensor,
    wav_fine: TensorLike,
    wav_out: TensorLike | None = None,
    profile: tuple[np.ndarray, np.ndarray] | None = None,
    matrix: np.ndarray | torch.Tensor | None = None,
    *,
    quadrature: str = "trapezoid",
) -> torch.Tensor:
    """Convolve spectra with the SP transmission profile and sample them on the Hinode grid.

    Parameters
    ----------
    stokes : (..., 4, n_fine) tensor (any leading shape; the last axis is wavelength).
    wav_fine : (n_fine,) wavelengths of ``stokes``, Å, strictly increasing.
    wav_out : (n_out,) output wavelengths, Å; default the 112-point Hinode grid.
    profile : ``(dlambda_A, transmission)``; default the SP profile (``hinode_instr_prof.dat``).
    matrix : a precomputed :func:`spectral_matrix` (then ``wav_out``/``profile``/``quadrature``
        are ignored).
    quadrature : how the convolution integral is formed (:func:`spectral_matrix`);
        ``"quintic"`` is the one accurate on the 10.7 mÅ synthesis grid.

    Returns
    -------
    (..., 4, n_out) tensor, same dtype/device; differentiable w.r.t. ``stokes``.

    Raises
    ------
    ValueError : ``stokes.shape[-1] != len(wav_fine)``; see :func:`spectral_matrix`.

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 3; edge handling and quadratures in
    :func:`spectral_matrix`.
    """
    stokes = torch.as_tensor(stokes)
    n_fine = len(wav_fine)
    if stokes.shape[-1] != n_fine:
        raise ValueError(f"stokes has {stokes.shape[-1]} wavelengths, wav_fine has {n_fine}")
    if matrix is None:
        matrix = spectral_matrix(wav_fine, wav_out, profile, quadrature=quadrature)
    m = torch.as_tensor(matrix, dtype=stokes.dtype, device=stokes.device)
    return torch.matmul(stokes, m.transpose(0, 1))


def _psf_tensor(psf: TensorLike, like: torch.Tensor) -> torch.Tensor:
    k = torch.as_tensor(psf, dtype=like.dtype, device=like.device)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"psf must be 2-D with odd sides (centre pixel), got shape {tuple(k.shape)}")
    total = k.sum()
    if not torch.isfinite(total) or total <= 0:
        raise ValueError("psf must have a positive finite sum")
    return k / total


def spatial_degrade(maps: torch.Tensor, psf: TensorLike, padding: str = "reflect") -> torch.Tensor:
    """Convolve images with a PSF (same-size output), by FFT on a padded copy.

    The map is padded by half the PSF size on each side (``padding``: ``"reflect"``: mirror
    without repeating the edge pixel, like ``scipy.ndimage`` ``mode="mirror"``; or
    ``"replicate"``, ``"circular"``, ``"constant"`` (zeros), as in ``torch.nn.functional.pad``),
    convolved by ``torch.fft`` (circular on the padded copy; the wrap-around only touches the
    padding, which is cropped), so the result equals the linear convolution of the padded map.
    The PSF is normalised to unit sum, so a constant map is unchanged.

    Parameters
    ----------
    maps : (..., H, W) tensor (e.g. (B, C, H, W) or (H, W)).
    psf : (h, w) PSF on the same pixel scale as ``maps``, odd sides, centre at (h//2, w//2).
    padding : see above.

    Returns
    -------
    (..., H, W) tensor; differentiable w.r.t. ``maps`` (and ``psf`` if it is a tensor).

    Raises
    ------
    ValueError : bad PSF, or ``"reflect"``/``"circular"`` padding larger than the map
        (H ≤ h//2 or W ≤ w//2): use ``"replicate"`` or a smaller PSF.

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 2 (PSF of Danilovic et al. 2010).
    """
    maps = torch.as_tensor(maps)
    if maps.ndim < 2:
        raise ValueError(f"maps must have at least 2 dimensions (H, W), got shape {tuple(maps.shape)}")
    if not maps.is_floating_point():
        maps = maps.to(torch.get_default_dtype())
    k = _psf_tensor(psf, maps)
    h, w = k.shape
    ph, pw = h // 2, w // 2
    H, W = maps.shape[-2:]
    if padding not in ("reflect", "replicate", "circular", "constant"):
        raise ValueError(f"unknown padding {padding!r}")
    if (padding == "reflect" and (ph >= H or pw >= W)) or (padding == "circular" and (ph > H or pw > W)):
        raise ValueError(
            f"{padding} padding of ({ph}, {pw}) needs a map larger than that, got ({H}, {W}); "
            "use padding='replicate' or a smaller PSF"
        )
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, H, W)
    x = F.pad(x, (pw, pw, ph, ph), mode=padding)
    Hp, Wp = x.shape[-2:]
    kp = torch.zeros((Hp, Wp), dtype=k.dtype, device=k.device)
    kp[:h, :w] = k
    kp = torch.roll(kp, shifts=(-ph, -pw), dims=(0, 1))
    out = torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(kp), s=(Hp, Wp))
    out = out[..., ph : ph + H, pw : pw + W]
    return out.reshape(*lead, H, W)


def rebin_matrix(n_in: int, factor: float) -> np.ndarray:
    """Area-overlap averaging matrix (n_out, n_in) for rebinning one axis by ``factor`` ≥ 1.

    Output pixel k covers input coordinates ``[k·factor, (k+1)·factor)`` (input pixel i covers
    ``[i, i+1)``); ``M[k, i]`` is the overlap length / ``factor``, so rows sum to 1 and each
    output is the exact area average of the piecewise-constant input. ``n_out =
    floor(n_in / factor)``: input pixels past the last whole output pixel are dropped. For an
    integer factor this is the plain block mean.

    Raises
    ------
    ValueError : ``factor`` < 1 or ``n_in / factor`` < 1.
    """
    if not factor >= 1.0:
        raise ValueError(f"rebin factor must be ≥ 1 (output pixel / input pixel), got {factor}")
    n_out = int(np.floor(n_in / factor + 1e-9))
    if n_out < 1:
        raise ValueError(f"cannot rebin {n_in} pixels by {factor}: no whole output pixel")
    lo = np.arange(n_out)[:, None] * factor
    hi = lo + factor
    i = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, i + 1) - np.maximum(lo, i), 0.0, None)
    return overlap / factor


def rebin(maps: torch.Tensor, factor: float | tuple[float, float]) -> torch.Tensor:
    """Area-average images to pixels ``factor`` times larger (e.g. 0.16 / pixel_in).

    Parameters
    ----------
    maps : (..., H, W) tensor.
    factor : output pixel / input pixel, ≥ 1, scalar or ``(factor_y, factor_x)``; non-integer
        factors use exact area overlaps (:func:`rebin_matrix`), anchored at pixel (0, 0).

    Returns
    -------
    (..., floor(H / fy), floor(W / fx)) tensor; differentiable. The mean of a map whose size
    is a multiple of the factor is conserved.

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 2 (rebinning to 0.16″).
    """
    maps = torch.as_tensor(maps)
    if not maps.is_floating_point():
        maps = maps.to(torch.get_default_dtype())
    fy, fx = (factor, factor) if np.isscalar(factor) else factor
    H, W = maps.shape[-2:]
    if float(fy) == 1.0 and float(fx) == 1.0:
        return maps
    my = torch.as_tensor(rebin_matrix(H, float(fy)), dtype=maps.dtype, device=maps.device)
    mx = torch.as_tensor(rebin_matrix(W, float(fx)), dtype=maps.dtype, device=maps.device)
    return torch.matmul(torch.matmul(my, maps), mx.transpose(0, 1))


def quiet_sun_continuum(
    stokes_map: torch.Tensor, quiet_mask: torch.Tensor | np.ndarray | None = None, continuum_index: int = 0
) -> torch.Tensor:
    """Median continuum intensity of the quiet Sun in a Stokes map.

    Parameters
    ----------
    stokes_map : (..., H, W, 4, nλ) tensor.
    quiet_mask : (H, W) bool, ``True`` on quiet-Sun pixels; default all pixels.
    continuum_index : wavelength index used as continuum (0: 6300.89 Å on the Hinode grid,
        ≈0.6 Å blue of Fe I 6301.5, |I/I_c − 1| < 10⁻³ in quiet-Sun models).

    Returns
    -------
    (...,) tensor: median of ``I[..., continuum_index]`` over the masked pixels.

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 3 ("normalized to the median continuum in
    the surrounding quiet Sun").
    """
    stokes_map = torch.as_tensor(stokes_map)
    ic = stokes_map[..., 0, continuum_index]  # (..., H, W)
    flat = ic.reshape(*ic.shape[:-2], -1)
    if quiet_mask is not None:
        mask = torch.as_tensor(quiet_mask, dtype=torch.bool, device=ic.device).reshape(-1)
        if mask.numel() != flat.shape[-1]:
            raise ValueError(f"quiet_mask has {mask.numel()} pixels, the map has {flat.shape[-1]}")
        if not mask.any():
            raise ValueError("quiet_mask selects no pixel")
        flat = flat[..., mask]
    return flat.median(dim=-1).values


def normalise_continuum(stokes: torch.Tensor, ic_quiet: float | torch.Tensor) -> torch.Tensor:
    """Divide Stokes profiles by the quiet-Sun continuum intensity.

    Parameters
    ----------
    stokes : (..., 4, nλ) tensor.
    ic_quiet : scalar, or tensor broadcastable to ``stokes.shape[:-2]`` (e.g. per-map values
        from :func:`quiet_sun_continuum`), same units as ``stokes``; > 0.

    Returns
    -------
    (..., 4, nλ) tensor in units of I_c; differentiable.

    Raises
    ------
    ValueError : ``ic_quiet`` not positive and finite.

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 3.
    """
    stokes = torch.as_tensor(stokes)
    ic = torch.as_tensor(ic_quiet, dtype=stokes.dtype, device=stokes.device)
    if not bool(torch.all(torch.isfinite(ic) & (ic > 0))):
        raise ValueError("ic_quiet must be positive and finite")
    if ic.ndim > 0:
        ic = ic[..., None, None]
    return stokes / ic


def add_noise(stokes: torch.Tensor, sigma: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``sigma`` to every Stokes parameter.

    Parameters
    ----------
    stokes : (..., 4, nλ) tensor normalised to I_c (so ``sigma`` is in units of I_c).
    sigma : noise standard deviation, I_c units; 10⁻³ mimics Hinode SP.
    generator : ``torch.Generator`` for reproducible noise (on the tensor's device).

    Returns
    -------
    ``stokes + sigma · N(0, 1)``, same shape; differentiable w.r.t. ``stokes`` (identity
    Jacobian).

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 5.
    """
    stokes = torch.as_tensor(stokes)
    if sigma < 0:
        raise ValueError(f"sigma must be ≥ 0, got {sigma}")
    if sigma == 0:
        return stokes
    noise = torch.randn(stokes.shape, generator=generator, dtype=stokes.dtype, device=stokes.device)
    return stokes + sigma * noise


@dataclass(eq=False)
class HinodeSP:
    """The Hinode SP as seen by a SICON-style training set: grid, spectral profile, spatial PSF.

    Attributes
    ----------
    wavelengths : (112,) float64 SP grid, air Å.
    profile_dlambda : (n,) profile offsets, Å.
    profile_transmission : (n,) profile, unit area (Å⁻¹).
    psf : (h, w) PSF on ``psf_pixel_arcsec`` pixels, unit sum.
    psf_pixel_arcsec : pixel scale of ``psf`` (0.16).
    pixel_arcsec : output pixel (0.16″).
    noise_sigma : default noise, I_c units (10⁻³).
    root : data folder used for PSFs at other pixel scales (``None``: ``data_root()``).

    Source: Asensio Ramos & Díaz Baso (2019) §2 steps 2–5; Lites et al. (2013).
    """

    wavelengths: np.ndarray
    profile_dlambda: np.ndarray
    profile_transmission: np.ndarray
    psf: np.ndarray
    psf_pixel_arcsec: float = HINODE_PIXEL_ARCSEC
    pixel_arcsec: float = HINODE_PIXEL_ARCSEC
    noise_sigma: float = 1e-3
    root: Path | None = None
    _psf_cache: dict = field(default_factory=dict, init=False, repr=False)
    _matrix_cache: dict = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_data(cls, root: str | Path | None = None) -> "HinodeSP":
        """Load grid, profile and 0.16″ PSF from ``root`` (default :func:`data_root`).

        Raises
        ------
        FileNotFoundError, helioforge.data.hinode.HinodeReadError : missing or bad files.
        """
        base = Path(root) if root is not None else None
        stokes_dir = (base if base is not None else data_root()) / "stokes"
        wav = hinode_wavelengths(stokes_dir / "instrument" / "wavelength_Hinode.txt")
        dl, tr = read_instrument_profile(stokes_dir / "hinode_sp_sample" / "hinode_instr_prof.dat")
        psf = read_psf(stokes_dir / "instrument" / f"hinode_psf_{HINODE_PIXEL_ARCSEC:.2f}.fits")
        return cls(wav, dl, tr, psf, root=base)

    @property
    def profile(self) -> tuple[np.ndarray, np.ndarray]:
        """``(dlambda_A, transmission)``."""
        return self.profile_dlambda, self.profile_transmission

    def psf_at(self, pixel_arcsec: float) -> np.ndarray:
        """PSF sampled on ``pixel_arcsec`` pixels.

        The instrument's own PSF if its pixel matches within 1 %, else
        :func:`helioforge.data.hinode.psf_for_pixel` (cached per pixel size).

        Parameters
        ----------
        pixel_arcsec : float
            Pixel size, arcsec.

        Returns
        -------
        np.ndarray
            (k, k) PSF, unit sum, k odd (the cached array itself: do not modify).

        Raises
        ------
        ValueError
            For ``pixel_arcsec`` ≤ 0 (from :func:`~helioforge.data.hinode.psf_for_pixel`).
        FileNotFoundError
            When no ``hinode_psf_<scale>.fits`` file is present.
        """
        if abs(pixel_arcsec - self.psf_pixel_arcsec) <= 0.01 * self.psf_pixel_arcsec:
            return self.psf
        key = round(float(pixel_arcsec), 6)
        if key not in self._psf_cache:
            self._psf_cache[key] = psf_for_pixel(pixel_arcsec, root=self.root)
        return self._psf_cache[key]

    def spectral_matrix(self, wav_fine: TensorLike, quadrature: str = "trapezoid") -> np.ndarray:
        """Cached :func:`spectral_matrix` from ``wav_fine`` to :attr:`wavelengths`.

        Parameters
        ----------
        wav_fine : (n_fine,) synthesis wavelengths, Å, strictly increasing.
        quadrature : see :func:`spectral_matrix`.

        Returns
        -------
        float64 (112, n_fine) matrix (the cached array: do not modify it).
        """
        check_quadrature(quadrature)
        wf = _as_1d_numpy(wav_fine, "wav_fine")
        key = (wf.size, wf.tobytes(), quadrature)
        if key not in self._matrix_cache:
            self._matrix_cache[key] = spectral_matrix(wf, self.wavelengths, self.profile, quadrature=quadrature)
        return self._matrix_cache[key]

    def degrade(
        self,
        stokes_map: torch.Tensor,
        wav_fine: TensorLike,
        pixel_arcsec_in: float = HINODE_PIXEL_ARCSEC,
        *,
        spatial: bool = True,
        padding: str = "reflect",
        ic_quiet: float | torch.Tensor | str | None = None,
        quiet_mask: torch.Tensor | np.ndarray | None = None,
        noise_sigma: float | None = 0.0,
        generator: torch.Generator | None = None,
        quadrature: str = "trapezoid",
    ) -> torch.Tensor:
        """Degrade synthetic Stokes maps to Hinode SP observations (paper §2 steps 2–5).

        Parameters
        ----------
        stokes_map : (..., H, W, 4, n_fine) tensor, e.g. (H, W, 4, nλ) or (B, H, W, 4, nλ).
        wav_fine : (n_fine,) synthesis wavelengths, Å; should cover the Hinode grid
            (6300.89–6303.27 Å) plus ≈0.07 Å on each side (see :func:`spectral_matrix`).
        pixel_arcsec_in : pixel scale of ``stokes_map``, ≤ 0.16″.
        spatial : apply the PSF (step 2); ``False`` skips it (rebinning still happens).
        padding : edge handling of the PSF convolution (:func:`spatial_degrade`).
        ic_quiet : ``None`` (no normalisation), a value or a tensor broadcastable to
            ``(..., H', W')`` (per map: shape ``(..., 1, 1)``), or ``"median"``:
            :func:`quiet_sun_continuum` of each degraded map (over
            ``quiet_mask``).
        quiet_mask : (H', W') mask of quiet-Sun pixels on the output grid for ``"median"``.
        noise_sigma : Gaussian noise σ (I_c units when normalised); 0 = none (the default, as
            SICON adds noise separately, once or per batch); ``None`` = :attr:`noise_sigma`.
        generator : ``torch.Generator`` for the noise.
        quadrature : how the spectral convolution is integrated (:func:`spectral_matrix`);
            the training-set chain (:class:`~helioforge.inversion.forward.StokesChain`) uses
            ``"quintic"``.

        Returns
        -------
        (..., H', W', 4, 112) tensor with H' = floor(H · pixel_in / 0.16); differentiable
        w.r.t. ``stokes_map``.

        Raises
        ------
        ValueError : bad shapes, ``pixel_arcsec_in`` > 0.16″, wavelength grids or quadrature
            (see :func:`spectral_matrix`), maps too small for reflect padding.
        """
        x = torch.as_tensor(stokes_map)
        if x.ndim < 4 or x.shape[-2] != 4:
            raise ValueError(f"stokes_map must be (..., H, W, 4, nλ), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        factor = self.pixel_arcsec / float(pixel_arcsec_in)
        if factor < 1.0 - 1e-6:
            raise ValueError(
                f"input pixel {pixel_arcsec_in}″ is larger than the SP pixel {self.pixel_arcsec}″: nothing to rebin"
            )
        factor = max(factor, 1.0)
        # step 3 first: linear and acting on another axis, it commutes with steps 2 (PSF, rebin)
        x = spectral_degrade(x, wav_fine, matrix=self.spectral_matrix(wav_fine, quadrature))
        nd = x.ndim
        # (..., H, W, 4, nλ) -> (..., 4, nλ, H, W)
        perm = list(range(nd - 4)) + [nd - 2, nd - 1, nd - 4, nd - 3]
        img = x.permute(*perm)
        if spatial:
            img = spatial_degrade(img, self.psf_at(float(pixel_arcsec_in)), padding=padding)
        img = rebin(img, factor)
        inv = list(range(nd - 4)) + [nd - 2, nd - 1, nd - 4, nd - 3]
        x = img.permute(*inv)
        if ic_quiet is not None:
            if isinstance(ic_quiet, str):
                if ic_quiet != "median":
                    raise ValueError(f"ic_quiet must be a number, a tensor, None or 'median', got {ic_quiet!r}")
                ic_quiet = quiet_sun_continuum(x, quiet_mask)[..., None, None]  # (..., 1, 1) over (H', W')
            x = normalise_continuum(x, ic_quiet)
        sigma = self.noise_sigma if noise_sigma is None else noise_sigma
        return add_noise(x, sigma, generator)
