"""The ME model of the inversion: parameters, their bounds and transforms, the torch forward model.

The nine parameters of :class:`helioforge.physics.me.MEParameters` are fitted in internal
variables u that keep them inside their bounds (B = 5000 σ(u) G; v_LOS = ±10 km/s,
Δλ_D ∈ [15, 60] mÅ and a ∈ [0, 1.5] by scaled logistic functions; η₀, S₀, S₁ = exp(u)); γ and φ
are left free and folded at the end. :class:`_Model` maps u to synthetic profiles on the
observed grid (optionally through the SP spectral profile), with Jacobians by autograd
(double-vjp) or in closed form. The inputs (pixels, weights) are checked here too.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from helioforge.data.hinode import read_instrument_profile
from helioforge.inversion.instrument import spectral_matrix
from helioforge.physics.atomic import TELLURIC_LINES_A, SpectralLine
from helioforge.physics.me import MEParameters, me_frame_profiles, me_frame_to_stokes, synth_me

__all__ = ["PARAM_NAMES", "PARAM_UNITS", "PARAM_BOUNDS"]

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
_SUB_BATCH = 256  # pixels per synthesis call of the torch analytic method


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
    if isinstance(spectral_profile, str):
        if spectral_profile != "hinode":
            raise ValueError(
                f"spectral_profile must be None, 'hinode' or (dlambda_A, transmission), got {spectral_profile!r}"
            )
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

