"""The forward model of the SICON training sets: atmospheres → Stokes maps as Hinode SP sees
them (Asensio Ramos & Díaz Baso 2019, A&A 626, A102, §2 steps 1–3).

1. LTE synthesis of Fe I 6301.5/6302.5 Å at disk centre (:func:`helioforge.physics.lte.synth_lte`)
   on the uniform grid of :func:`synthesis_wavelengths`: ``wavelength_oversampling`` (2) times
   finer than the SP grid (10.7 mÅ, 238 points), padded by 0.08 Å beyond it (the SP profile is
   ±0.07 Å wide);
2.–3. spatial PSF at the model pixel, rebinning to 0.16″, convolution with the SP spectral
   profile onto the 112-point SP grid (:meth:`helioforge.inversion.instrument.HinodeSP.degrade`).
   The convolution integrates the quintic spline through the synthesised samples exactly
   against the piecewise-linear SP profile (``spectral_quadrature="quintic"``,
   :func:`helioforge.inversion.instrument.spectral_matrix`): < 4 × 10⁻⁵ I_c from a converged
   synthesis on this grid, where sampling the profile on the grid (``"trapezoid"``, the sets
   made before) erred by up to 2.7 × 10⁻³ I_c, above the 10⁻³ I_c noise (issue 13).

:class:`StokesChain` runs both; the training sets (:mod:`helioforge.inversion.dataset`), the
re-synthesis of inverted cubes (:func:`helioforge.inversion.atmos_cube.resynthesize`) and
single-model synthesis (:mod:`helioforge.inversion.synthesis`) use it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from helioforge.inversion.config import TrainsetConfig
from helioforge.inversion.instrument import HinodeSP, check_quadrature
from helioforge.physics.hydrostatic_fused import hydrostatic_equilibrium_fused
from helioforge.physics.lte import hydrostatic_equilibrium, synth_lte

__all__ = ["synthesis_wavelengths", "StokesChain", "kernel_functions"]


def kernel_functions(kernel: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The synthesis and hydrostatic-equilibrium functions of a training set's ``synthesis_kernel``.

    Parameters
    ----------
    kernel : {"torch", "fused"}
        ``"torch"``: :func:`~helioforge.physics.lte.synth_lte` and
        :func:`~helioforge.physics.lte.hydrostatic_equilibrium` as every set made before issue 15
        used them. ``"fused"``: the compiled one-pass synthesis (``synth_lte(kernel="fused")``,
        :mod:`helioforge.physics.lte_fused`) and the compiled hydrostatic equilibrium with
        warm-started Newton solves for P_e
        (:func:`~helioforge.physics.hydrostatic_fused.hydrostatic_equilibrium_fused`, the
        same solution to rounding).

    Returns
    -------
    (synthesize, hydrostatic) : callables
        ``synthesize(atmosphere, wavelengths, mu=...) -> (stokes, Ic)`` and
        ``hydrostatic(log_tau, T) -> (Pe, Pg, rho, z)``; picklable (module functions or
        :func:`functools.partial` of them), so that Dask workers receive them.

    Raises
    ------
    ValueError
        For another ``kernel``.
    """
    if kernel == "torch":
        return synth_lte, hydrostatic_equilibrium
    if kernel == "fused":
        return functools.partial(synth_lte, kernel="fused"), hydrostatic_equilibrium_fused
    raise ValueError(f"synthesis kernel must be 'torch' or 'fused', got {kernel!r}")


def synthesis_wavelengths(sp_wavelengths: np.ndarray, oversampling: int = 2, pad_A: float = 0.08) -> np.ndarray:
    """Uniform synthesis grid covering the SP grid plus ``pad_A`` on each side, Å (air).

    The grid starts at ``sp_wavelengths[0] − pad_A`` with step = mean SP step / ``oversampling``
    and ends at the first point ≥ ``sp_wavelengths[-1] + pad_A``: for the Hinode SP grid and
    the defaults, 238 points 10.7 mÅ apart from 6300.812 to 6303.347 Å.

    The grid and the quadrature of the SP profile go together. With the quadrature of the
    training sets, ``spectral_quadrature="quintic"`` (exact integral of the quintic spline
    through the samples against the piecewise-linear profile;
    :func:`helioforge.inversion.instrument.spectral_matrix`), the default grid gives the
    degraded Fe I 630 nm profiles within 4 × 10⁻⁵ I_c of a converged (1.3 mÅ) synthesis in
    I, Q, U and V, for quiet-Sun, plage, penumbral and umbral atmospheres up to 4 kG and
    ±8 km s⁻¹ (``benchmarks/bench_synthesis_grid.py``). With the sampled kernel
    (``"trapezoid"``, the default of :func:`~helioforge.inversion.instrument.spectral_matrix`)
    the same grid errs by up to 2.7 × 10⁻³ I_c, and even ``oversampling=4`` by 1 × 10⁻⁴; the
    error of the quintic quadrature falls as the step⁶ (a 14.3 mÅ grid, 179 points, errs by
    6 × 10⁻⁴). A line-adapted, non-uniform grid was not used: the cores move by ±0.35 Å with
    the velocities and Zeeman splittings of the sets, so it saves little and would tie the grid
    to one line list.

    Parameters
    ----------
    sp_wavelengths : (n_sp,) increasing output (SP) wavelengths, Å; n_sp ≥ 2.
    oversampling : grid step = mean SP step / this; values below 1 count as 1 and fractions
        are dropped (as in earlier versions). 2 (the default) with the ``"quintic"``
        quadrature; ≥ 8 is needed for 5 × 10⁻⁵ I_c with ``"trapezoid"``.
    pad_A : margin beyond the SP grid on each side, Å; ≥ the profile's half-width (0.07 Å)
        so that no output sees a truncated kernel.

    Returns
    -------
    (n,) float64 array, Å, uniformly spaced, strictly increasing.

    Raises
    ------
    ValueError : fewer than 2 SP wavelengths, a non-increasing SP grid, or a negative or
        non-finite ``pad_A``.

    Source: Asensio Ramos & Díaz Baso (2019) §2 step 1; accuracy measured in
    ``docs/synthesis.md`` ("Synthesis grid and SP-profile quadrature").
    """
    w = np.asarray(sp_wavelengths, dtype=np.float64)
    if w.ndim != 1 or w.size < 2 or not w[-1] > w[0]:
        raise ValueError(f"sp_wavelengths must be an increasing 1-D grid of ≥ 2 points, got shape {w.shape}")
    if not (np.isfinite(pad_A) and pad_A >= 0):
        raise ValueError(f"pad_A must be finite and ≥ 0, got {pad_A}")
    step = (w[-1] - w[0]) / (w.size - 1) / max(int(oversampling), 1)
    n = int(math.ceil((w[-1] - w[0] + 2 * pad_A) / step)) + 1
    return w[0] - pad_A + step * np.arange(n)


SynthesizeFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass
class StokesChain:
    """Synthesis then instrument: atmospheres (H, W, n) → Stokes maps (H/r, W/r, 4, 112).

    Attributes
    ----------
    synthesize : ``f(atmosphere, wavelengths_A, mu=...) -> (stokes (..., 4, nλ), Ic (...))``;
        default :func:`helioforge.physics.lte.synth_lte`.
    instrument : object with ``wavelengths`` (112,) and
        ``degrade(stokes (H, W, 4, nλ), wav_fine, pixel_arcsec_in, padding=..., quadrature=...)``
        → (H', W', 4, 112); default :meth:`helioforge.inversion.instrument.HinodeSP.from_data`.
    wavelengths : synthesis grid (nλ,), Å; default :func:`synthesis_wavelengths` (238 points).
    mu : heliocentric cosine.
    chunk : columns synthesised per call (bounds the memory).
    oversampling : used for the default ``wavelengths``.
    device : where the synthesis and the degradation run (``"cpu"``, ``"cuda"``); results come
        back on the CPU.
    dtype : precision of the synthesis (float32: twice the speed, 2e-5 of I_c from float64,
        far below the 1e-3 I_c noise); the atmospheres and hydrostatic pressures stay float64.
    quadrature : how the SP profile is integrated over the synthesised samples
        (:func:`helioforge.inversion.instrument.spectral_matrix`); ``"quintic"`` (default) is
        accurate to < 4 × 10⁻⁵ I_c on the default grid, ``"trapezoid"`` reproduces the sets
        made before issue 13's fix (2.7 × 10⁻³ I_c).
    """

    synthesize: SynthesizeFn | None = None
    instrument: Any = None
    wavelengths: np.ndarray | None = None
    mu: float = 1.0
    chunk: int = 1024
    oversampling: int = 2
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    quadrature: str = TrainsetConfig.spectral_quadrature

    def __post_init__(self) -> None:
        if self.synthesize is None:
            self.synthesize = synth_lte
        if self.instrument is None:
            self.instrument = HinodeSP.from_data()
        check_quadrature(self.quadrature)
        if self.wavelengths is None:
            self.wavelengths = synthesis_wavelengths(np.asarray(self.instrument.wavelengths), self.oversampling)

    def synthesize_map(self, atmos) -> tuple[torch.Tensor, torch.Tensor]:
        """Absolute Stokes and continuum of a map, synthesised in chunks of :attr:`chunk` columns.

        Parameters
        ----------
        atmos : Atmosphere
            Model atmosphere with (H, W, n) depth stratifications (fields of other shapes are passed
            whole).

        Returns
        -------
        tuple of torch.Tensor
            ``(stokes (H, W, 4, nλ), continuum (H, W))`` in absolute intensity
            (erg s⁻¹ cm⁻² sr⁻¹ Hz⁻¹), dtype of ``atmos.T``, on the device of the synthesis.
        """
        H, W = atmos.T.shape[:2]
        flat = {f.name: getattr(atmos, f.name) for f in dataclasses.fields(atmos)}
        cols = H * W
        wav = torch.as_tensor(self.wavelengths, dtype=torch.float64)  # λ − λ₀ is formed in float64
        outs, ics = [], []
        for s in range(0, cols, self.chunk):
            part = {}
            for k, v in flat.items():
                if v is None:
                    part[k] = None
                elif v.ndim >= 3:
                    part[k] = v.reshape(cols, v.shape[-1])[s : s + self.chunk].to(self.device, self.dtype)
                else:
                    part[k] = v.to(self.device, self.dtype)
            st, ic = self.synthesize(type(atmos)(**part), wav.to(self.device), mu=self.mu)
            outs.append(st)
            ics.append(ic)
        return (torch.cat(outs).to(atmos.T.dtype).reshape(H, W, 4, -1),
                torch.cat(ics).to(atmos.T.dtype).reshape(H, W))

    def __call__(self, atmos, pixel_arcsec: float) -> torch.Tensor:
        """Degraded Stokes maps (H', W', 4, 112) in absolute units (not normalised, no noise)."""
        stokes, _ = self.synthesize_map(atmos)
        return self.degrade(stokes, pixel_arcsec)

    def degrade(self, stokes: torch.Tensor, pixel_arcsec: float) -> torch.Tensor:
        """Apply the instrument to synthesised maps: PSF, rebin, SP spectral profile.

        The PSF uses reflecting edges, or replicating ones for maps smaller than the PSF; the
        spectral profile is applied with :attr:`quadrature`.

        Parameters
        ----------
        stokes : torch.Tensor
            (H, W, 4, nλ) synthesised maps on the model grid.
        pixel_arcsec : float
            Pixel size of ``stokes`` [arcsec].

        Returns
        -------
        torch.Tensor
            (H', W', 4, 112) on the CPU, rebinned to SP pixels.

        Raises
        ------
        ValueError, FileNotFoundError
            From :meth:`psf_at` (no PSF for that pixel size).
        """
        H, W = stokes.shape[:2]
        psf = self.instrument.psf_at(pixel_arcsec) if hasattr(self.instrument, "psf_at") else None
        half = (min(psf.shape) // 2) if psf is not None else 0
        padding = "reflect" if half < min(H, W) else "replicate"
        return self.instrument.degrade(stokes, self.wavelengths, pixel_arcsec, padding=padding,
                                       quadrature=self.quadrature).cpu()

