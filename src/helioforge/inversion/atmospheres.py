"""2-D maps of depth-stratified model atmospheres for the SICON training set.

The SICON paper (Asensio Ramos & Díaz Baso 2019, §2) trains on MURaM snapshots (Rempel 2012;
Cheung et al. 2010). None is available here, so this module builds their stand-in: maps
(H, W) of atmospheres on a common log τ₅₀₀ grid made from the 1-D SIR models of
``data_root()/stokes/atmospheres``, with spatially correlated structure:

* **granulation** (every patch outside umbrae): a cellular pattern (jittered-grid Voronoi cells
  of ≈ 1.3 Mm ≈ 1.8″) with hot, upflowing granules and cool, downflowing narrow lanes. The
  temperature contrast (100–300 K at log τ = 0) decays with height and reverses sign above
  log τ ≈ −1.5 (reversed granulation, Rutten et al. 2004); the velocity (1–2 km s⁻¹) decays
  and weakly reverses above log τ ≈ −2.7. Mass flux balance: the map of v_z has zero mean, so
  the narrow lanes flow down faster than the broad granules flow up (Stein & Nordlund 1998).
* **weak internetwork field**: isotropic (uniform in cos γ and φ), Rayleigh-distributed
  strength, all from correlated Gaussian random fields.
* **flux concentrations** (plage patches; network elements in some quiet patches): Gaussian
  kG tubes sitting in intergranular lanes, nearly vertical, fanning out with height, with the
  plage (solanpl11) or network (solannt11) temperature stratification inside and a weak
  downflow.
* **sunspots** (spot patches): an umbra (a random mix of the Maltby et al. 1986 E and M
  models, 2.2–4 kG, nearly vertical) and a filamentary penumbra (penumjti11, 1–1.5 kG,
  inclination rising to 70–105° at the outer edge, radial azimuth with a small twist, bright
  hot filaments with more horizontal field, an Evershed-like upflow at the inner and downflow
  at the outer penumbra), mixed smoothly with the granulation outside.

Polarities are random, so every inclination 0–180° and azimuth 0–360° occurs; |B| is clipped
at 4 kG. The temperature is built on the τ scale; the electron and gas pressures, the density
and the geometric heights then follow from hydrostatic equilibrium
(:func:`helioforge.physics.lte.hydrostatic_equilibrium`), so that T and Pe stay consistent
(Pe depends on T through the Saha ionisation of the electron donors). Each column's heights
are put on a common scale by horizontal total-pressure balance (P_gas + B²/8π) with the
quiet-Sun reference column at ``balance_log_tau`` (thin flux-tube approximation; Solanki 1993,
Space Sci. Rev. 63, 1): magnetic, cool columns sink (Wilson depression), hot granules rise.
z = 0 is the log τ = 0 level of the unperturbed quiet-Sun reference model (HSRA).

Conventions: arrays are (H, W, n) with index [y, x, depth], depth index 0 the deepest point
(SIR ordering). The line of sight is +z (disk centre, μ = 1); Bx = B sinγ cosφ,
By = B sinγ sinφ, Bz = B cosγ with φ counted from the +x (column) axis towards +y (rows).
``vlos`` is in cm s⁻¹, positive for a redshift (downflow at disk centre), as in SIR.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from helioforge.data.sir import SIRModel, SIRReadError, model_path, read_sir
from helioforge.inversion.config import AtmosphereConfig, AtmosphereModelsConfig, DepthGridConfig
from helioforge.physics.lte import Atmosphere, hydrostatic_equilibrium

__all__ = [
    "KINDS",
    "ARCSEC_KM",
    "ModelSet",
    "PatchAtmosphere",
    "interpolate_model",
    "load_model_set",
    "gaussian_random_field",
    "granulation_pattern",
    "height_profile",
    "wilson_heights",
    "make_patch_atmosphere",
    "draw_kind",
]

logger = logging.getLogger(__name__)

#: Patch kinds, in the order of :attr:`AtmosphereConfig.kind_fractions`.
KINDS = ("quiet", "plage", "spot")

#: Kilometres per arcsec on the Sun seen from 1 AU (R_sun = 696,000 km over 959.6″).
ARCSEC_KM = 725.3

_DYN_TO_MAG = 1.0 / (8.0 * math.pi)  # B²/8π, G² → dyn cm⁻²


# --------------------------------------------------------------------------- the 1-D models
def interpolate_model(model: SIRModel, log_tau: np.ndarray, max_extrapolation_dex: float = 0.5) -> np.ndarray:
    """Temperature of a SIR model on another log τ grid.

    Linear in log τ inside the model's range; beyond it the end gradient (last two points) is
    continued, at most ``max_extrapolation_dex`` (emaltby11 stops at log τ = −3.6 and
    solannt11 starts at +1.0 while the default grid spans +1.2 … −4.0).

    Parameters
    ----------
    model : the SIR model (log τ decreasing with index).
    log_tau : target grid (n,), any order.
    max_extrapolation_dex : allowed reach beyond the model's range, dex.

    Returns
    -------
    T : float64 array (n,), K.

    Raises
    ------
    SIRReadError : the grid reaches further than allowed beyond the model (names the file).
    """
    lt = model.log_tau[::-1]
    T = model.T[::-1]
    grid = np.asarray(log_tau, dtype=np.float64)
    lo, hi = float(lt[0]), float(lt[-1])
    if grid.min() < lo - max_extrapolation_dex - 1e-9 or grid.max() > hi + max_extrapolation_dex + 1e-9:
        raise SIRReadError(
            model.source_path or model.name,
            f"covers log τ {hi:g} … {lo:g}; the grid needs {grid.max():g} … {grid.min():g} "
            f"(more than {max_extrapolation_dex:g} dex of extrapolation)",
        )
    out = np.interp(grid, lt, T)
    below = grid < lo
    above = grid > hi
    if below.any():
        slope = (T[1] - T[0]) / (lt[1] - lt[0])
        out[below] = T[0] + slope * (grid[below] - lo)
    if above.any():
        slope = (T[-1] - T[-2]) / (lt[-1] - lt[-2])
        out[above] = T[-1] + slope * (grid[above] - hi)
    if (out <= 0).any():
        raise SIRReadError(model.source_path or model.name, "extrapolated temperature ≤ 0 K on the grid")
    return out


@dataclass
class ModelSet:
    """The 1-D temperature stratifications behind every kind of region, on one log τ grid.

    Attributes
    ----------
    log_tau : the grid (n,), float64, decreasing (deepest first).
    quiet, umbra : lists of T (n,) arrays, K (quiet[0] is the reference column).
    penumbra, plage, network : T (n,) arrays, K.
    names : role → list of model names.
    paths : role → list of file paths.
    """

    log_tau: np.ndarray
    quiet: list[np.ndarray]
    umbra: list[np.ndarray]
    penumbra: np.ndarray
    plage: np.ndarray
    network: np.ndarray
    names: dict[str, list[str]] = field(default_factory=dict)
    paths: dict[str, list[str]] = field(default_factory=dict)
    _reference: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def n_depth(self) -> int:
        """Number of depth points n."""
        return int(self.log_tau.shape[0])

    def reference_column(self, hydrostatic: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Heights and gas pressure of the unperturbed quiet-Sun reference model.

        Both come from hydrostatic equilibrium on :attr:`log_tau`. Cached: the first call's result is
        returned afterwards (``hydrostatic`` is then not used).

        Parameters
        ----------
        hydrostatic : callable, optional
            Hydrostatic solver ``(log_tau, T) -> (_, Pg, _, z)``; default the package's LTE solver.

        Returns
        -------
        tuple of torch.Tensor
            ``(z_km, Pg)``, float64 (n,): z in km relative to its log τ = 0 level, positive upward;
            Pg in dyn cm⁻².
        """
        if self._reference is None:
            he = hydrostatic or _default_hydrostatic()
            lt = torch.as_tensor(self.log_tau, dtype=torch.float64)
            _, pg, _, z = he(lt, torch.as_tensor(self.quiet[0], dtype=torch.float64))
            self._reference = (z.to(torch.float64), pg.to(torch.float64))
        return self._reference


def _read_role(role: str, name: str, root, grid: np.ndarray, max_extra: float) -> tuple[np.ndarray, str]:
    try:
        path = model_path(name, root)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{role} model {name!r}: {exc}") from None
    try:
        model = read_sir(path)
    except SIRReadError as exc:
        raise SIRReadError(path, f"cannot use it as the {role} model: {exc.problem}") from None
    try:
        T = interpolate_model(model, grid, max_extra)
    except SIRReadError as exc:
        raise SIRReadError(path, f"cannot use it as the {role} model: {exc.problem}") from None
    return T, str(path)


def load_model_set(
    models: AtmosphereModelsConfig | None = None,
    grid: DepthGridConfig | None = None,
    root: str | Path | None = None,
) -> ModelSet:
    """Read the SIR models of every role and interpolate their temperatures to the grid.

    Parameters
    ----------
    models : which files (stems or paths) play which role (default
        :class:`~helioforge.inversion.config.AtmosphereModelsConfig`).
    grid : the common log τ grid (default :class:`~helioforge.inversion.config.DepthGridConfig`).
    root : data folder (default :func:`helioforge.config.data_root`).

    Returns
    -------
    ModelSet

    Raises
    ------
    FileNotFoundError : a model file is missing (the message names the role and the model).
    SIRReadError : a model file is unreadable, invalid, or does not cover the grid (names the
        file, the role and the problem).
    """
    models = models or AtmosphereModelsConfig()
    grid = grid or DepthGridConfig()
    lt = grid.log_tau()
    ex = grid.max_extrapolation_dex
    names: dict[str, list[str]] = {}
    paths: dict[str, list[str]] = {}

    def many(role: str, stems) -> list[np.ndarray]:
        if not stems:
            raise ValueError(f"no {role} model given")
        out = []
        for stem in stems:
            T, p = _read_role(role, stem, root, lt, ex)
            out.append(T)
            names.setdefault(role, []).append(Path(p).stem)
            paths.setdefault(role, []).append(p)
        return out

    quiet = many("quiet", list(models.quiet))
    umbra = many("umbra", list(models.umbra))
    penumbra = many("penumbra", [models.penumbra])[0]
    plage = many("plage", [models.plage])[0]
    network = many("network", [models.network])[0]
    return ModelSet(lt, quiet, umbra, penumbra, plage, network, names, paths)


# --------------------------------------------------------------------------- random fields
def gaussian_random_field(
    shape: tuple[int, int],
    corr_length_px: float,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Zero-mean, unit-variance, periodic Gaussian random field with a Gaussian covariance.

    White noise is filtered in Fourier space (``torch.fft``) by exp(−k²ℓ²/4), so that the
    power spectrum is P(k) ∝ exp(−k²ℓ²/2) and the covariance C(r) = exp(−r²/2ℓ²): the
    correlation at lag ℓ is e^{−1/2} ≈ 0.61. The variance is normalised analytically (mean of
    the squared filter), so single realisations are not forced to exactly unit variance.

    Parameters
    ----------
    shape : (H, W) pixels.
    corr_length_px : ℓ, pixels (> 0).
    generator : torch random generator (seeded for reproducibility).
    dtype : floating dtype of the result.

    Returns
    -------
    Tensor (H, W).

    Raises
    ------
    ValueError : ℓ ≤ 0.
    """
    if not corr_length_px > 0:
        raise ValueError(f"corr_length_px must be > 0, got {corr_length_px}")
    H, W = shape
    noise = torch.randn(H, W, generator=generator, dtype=torch.float64)
    ky = 2 * math.pi * torch.fft.fftfreq(H, dtype=torch.float64)
    kx = 2 * math.pi * torch.fft.fftfreq(W, dtype=torch.float64)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    filt = torch.exp(-k2 * corr_length_px**2 / 4)
    out = torch.fft.ifft2(torch.fft.fft2(noise) * filt).real / torch.sqrt((filt**2).mean())
    return out.to(dtype)


def _uniform_field(shape, corr_px, generator, lo: float, hi: float) -> torch.Tensor:
    """Correlated field with a uniform marginal in [lo, hi] (Gaussian field through Φ)."""
    return lo + (hi - lo) * torch.special.ndtr(gaussian_random_field(shape, corr_px, generator))


def granulation_pattern(
    shape: tuple[int, int],
    cell_px: float,
    generator: torch.Generator | None = None,
    lane_threshold: float = 0.2,
    lane_width: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cellular granulation pattern: bright granules (+) separated by narrow dark lanes (−).

    Cell centres lie on a square grid of spacing ``cell_px`` jittered by ±0.4 cell (so cell
    sizes vary), over a box one cell larger than the map on every side (no edge artefacts).
    With d₁, d₂ the distances to the nearest and second-nearest centre,
    s = (d₂ − d₁)/(d₂ + d₁) is 1 at a cell centre and 0 on the Voronoi edges. The edges are
    warped by a random field, and g = tanh((s − s₀)/w) gives granules g > 0 (amplitude scaled
    per granule by U(0.6, 1.2)) and lanes g < 0 (for s < s₀ = ``lane_threshold``).

    Parameters
    ----------
    shape : (H, W) pixels.
    cell_px : mean cell size, pixels (≈ 1.3 Mm / pixel size).
    generator : torch random generator.
    lane_threshold, lane_width : s₀ and w.

    Returns
    -------
    g : Tensor (H, W) in (−1, 1.2), float64.
    s : Tensor (H, W) in [0, 1]: the distance-to-lane measure (0 on the lanes), float64.
    """
    H, W = shape
    c = float(cell_px)
    ny = int(math.ceil(H / c)) + 3
    nx = int(math.ceil(W / c)) + 3
    gy, gx = torch.meshgrid(torch.arange(ny, dtype=torch.float64), torch.arange(nx, dtype=torch.float64), indexing="ij")
    jitter = (torch.rand(2, ny, nx, generator=generator, dtype=torch.float64) - 0.5) * 0.8
    cy = ((gy + jitter[0]) - 1.0) * c
    cx = ((gx + jitter[1]) - 1.0) * c
    centres = torch.stack([cy.reshape(-1), cx.reshape(-1)], dim=1)
    amp = 0.6 + 0.6 * torch.rand(centres.shape[0], generator=generator, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    pix = torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)
    d = torch.cdist(pix, centres)
    dist, idx = torch.topk(d, 2, dim=1, largest=False)
    s = ((dist[:, 1] - dist[:, 0]) / (dist[:, 1] + dist[:, 0] + 1e-12)).reshape(H, W)
    s = (s + 0.08 * gaussian_random_field((H, W), max(c / 5, 0.5), generator)).clamp(0, 1)
    g = torch.tanh((s - lane_threshold) / lane_width)
    g = torch.where(g > 0, g * amp[idx[:, 0]].reshape(H, W), g)
    return g, s


def height_profile(nodes, log_tau) -> torch.Tensor:
    """Piecewise-linear factor of log τ from ``(log τ, value)`` nodes, constant outside them.

    Parameters
    ----------
    nodes : iterable of (float, float)
        ``(log τ, value)`` pairs, in any order (sorted by log τ here).
    log_tau : array_like
        The log τ at which to evaluate, any shape.

    Returns
    -------
    torch.Tensor
        float64, shaped like ``log_tau``.
    """
    pts = sorted((float(a), float(b)) for a, b in nodes)
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    lt = np.asarray(log_tau, dtype=np.float64)
    return torch.as_tensor(np.interp(lt, xs, ys), dtype=torch.float64)


# --------------------------------------------------------------------------- pressure and z
def _default_hydrostatic() -> Callable:
    return hydrostatic_equilibrium


def wilson_heights(
    log_tau: torch.Tensor,
    z_local: torch.Tensor,
    Pg: torch.Tensor,
    B: torch.Tensor,
    z_ref: torch.Tensor,
    Pg_ref: torch.Tensor,
    balance_log_tau: float = 0.0,
) -> torch.Tensor:
    """Put columns on a common height scale by horizontal total-pressure balance.

    Each column's ``balance_log_tau`` level is placed at the height Z_b where the reference
    (non-magnetic, quiet-Sun) column has the gas pressure P_gas + B²/8π of that column at that
    level (thin flux-tube approximation; Solanki 1993). ln P_ref(z) is interpolated linearly
    and continued linearly beyond the reference's ends (isothermal extension with the end
    scale height) for strongly depressed umbrae.

    Parameters
    ----------
    log_tau : (n,) decreasing grid.
    z_local : (..., n) heights of each column relative to its own log τ = 0 level, km.
    Pg : (..., n) gas pressure, dyn cm⁻².
    B : (..., n) field strength, G.
    z_ref, Pg_ref : (n,) the reference column (z = 0 at its log τ = 0).
    balance_log_tau : level at which the balance is imposed.

    Returns
    -------
    z : (..., n) heights, km, relative to the reference's log τ = 0 level, positive upward.
    """
    lt = torch.as_tensor(log_tau, dtype=torch.float64)
    # the balance level lies between grid points j and j+1 (lt decreasing)
    j = int(torch.clamp((lt >= balance_log_tau).sum() - 1, 0, lt.numel() - 2))
    t = float((lt[j] - balance_log_tau) / (lt[j] - lt[j + 1]))

    def at_level(x):
        return x[..., j] * (1 - t) + x[..., j + 1] * t

    p_tot = torch.exp(at_level(torch.log(Pg))) + at_level(B) ** 2 * _DYN_TO_MAG
    zb_local = at_level(z_local)
    # reference: ln P decreasing with z; interpolate z(ln P) with linear continuation
    lnp = torch.log(Pg_ref).flip(0)  # increasing
    zr = z_ref.flip(0)  # decreasing heights (deepest last)
    x = torch.log(p_tot)
    k = torch.searchsorted(lnp.contiguous(), x.contiguous().reshape(-1)).reshape(x.shape)
    k = k.clamp(1, lnp.numel() - 1)
    x0, x1 = lnp[k - 1], lnp[k]
    y0, y1 = zr[k - 1], zr[k]
    zb = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return z_local - zb_local[..., None] + zb[..., None]


# --------------------------------------------------------------------------- the patch
@dataclass
class PatchAtmosphere:
    """A 2-D map of model atmospheres and the quantities the targets are made from.

    Attributes
    ----------
    atmosphere : :class:`helioforge.physics.lte.Atmosphere`, tensors (H, W, n): log_tau, T [K],
        Pe [dyn cm⁻²], vmic [cm s⁻¹], B [G], vlos [cm s⁻¹, + = redshift/downflow],
        inclination [deg, 0–180], azimuth [deg, 0–360), Pg [dyn cm⁻²], z [km].
    z_km : (H, W, n) geometric heights relative to the quiet-Sun reference log τ = 0 level,
        positive upward (the Wilson depression included).
    Bx, By, Bz : (H, W, n) field components, G (z along the line of sight, towards the observer).
    kind : one of :data:`KINDS`.
    weights : region maps (H, W) in [0, 1]: ``umbra``, ``penumbra``, ``flux`` (flux
        concentrations), ``quiet`` (the rest).
    params : the scalar parameters drawn for this patch (JSON-able).
    """

    atmosphere: Atmosphere
    z_km: torch.Tensor
    Bx: torch.Tensor
    By: torch.Tensor
    Bz: torch.Tensor
    kind: str
    weights: dict[str, torch.Tensor]
    params: dict[str, Any]


def draw_kind(rng: np.random.Generator, fractions) -> str:
    """Draw a patch kind from :data:`KINDS` with probabilities ∝ ``fractions``.

    Parameters
    ----------
    rng : np.random.Generator
        Random generator.
    fractions : array_like
        (3,) non-negative weights of ``quiet``, ``plage``, ``spot``, normalised here.

    Returns
    -------
    str
        ``"quiet"``, ``"plage"`` or ``"spot"``.

    Raises
    ------
    ValueError
        From ``rng.choice`` when ``fractions`` is not 3 non-negative values with a positive sum.
    """
    p = np.asarray(fractions, dtype=np.float64)
    return KINDS[int(rng.choice(len(KINDS), p=p / p.sum()))]


def _flux_concentrations(shape, s_lane, n_blobs, sigma_px, B0, pol, generator, log_tau, fan_base, B_hf):
    """Gaussian flux tubes in intergranular lanes → weight (H, W) and field vectors (3, H, W, n)."""
    H, W = shape
    lanes = torch.nonzero(s_lane.reshape(-1) < 0.12).reshape(-1)
    if lanes.numel() == 0:
        lanes = torch.arange(H * W)
    pick = lanes[torch.randint(lanes.numel(), (n_blobs,), generator=generator)]
    cy = (pick // W).to(torch.float64) + torch.rand(n_blobs, generator=generator, dtype=torch.float64) - 0.5
    cx = (pick % W).to(torch.float64) + torch.rand(n_blobs, generator=generator, dtype=torch.float64) - 0.5
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    sig = torch.as_tensor(sigma_px, dtype=torch.float64)[:, None, None]
    prof = torch.exp(-(dx**2 + dy**2) / (2 * sig**2))  # (K, H, W)
    w, owner = prof.max(dim=0)
    ody = torch.gather(dy, 0, owner[None])[0]
    odx = torch.gather(dx, 0, owner[None])[0]
    r = torch.sqrt(odx**2 + ody**2) / torch.as_tensor(sigma_px, dtype=torch.float64)[owner]
    theta = torch.atan2(ody, odx)
    b0 = torch.as_tensor(B0, dtype=torch.float64)[owner] * w  # (H, W)
    sgn = torch.as_tensor(pol, dtype=torch.float64)[owner]
    # fanning: horizontal fraction grows with distance from the axis and with height (canopy)
    lt = torch.as_tensor(log_tau, dtype=torch.float64)
    fan = fan_base + 0.25 * torch.clamp(-lt / 3.0, 0.0, 1.4)  # (n,)
    h = (r[..., None] * fan) * b0[..., None] * B_hf  # (H, W, n)
    bz = b0[..., None] * B_hf * sgn[..., None]
    bx = h * torch.cos(theta)[..., None] * sgn[..., None]
    by = h * torch.sin(theta)[..., None] * sgn[..., None]
    return w, torch.stack([bx, by, bz])


def make_patch_atmosphere(
    models: ModelSet,
    cfg: AtmosphereConfig,
    size: int | tuple[int, int],
    pixel_arcsec: float,
    rng: np.random.Generator,
    kind: str | None = None,
    hydrostatic: Callable | None = None,
    dtype: torch.dtype = torch.float64,
) -> PatchAtmosphere:
    """Build one patch (H, W) of depth-stratified atmospheres (see the module docstring).

    Parameters
    ----------
    models : the 1-D models on the common grid (:func:`load_model_set`).
    cfg : the structure settings (:class:`~helioforge.inversion.config.AtmosphereConfig`).
    size : H = W, or (H, W), model pixels.
    pixel_arcsec : model pixel size, arcsec (1″ = :data:`ARCSEC_KM` km).
    rng : numpy generator; every random draw of the patch derives from it (reproducible).
    kind : ``quiet``, ``plage`` or ``spot``; ``None`` draws it from ``cfg.kind_fractions``.
    hydrostatic : ``f(log_tau, T) -> (Pe, Pg, rho, z_km)`` (default
        :func:`helioforge.physics.lte.hydrostatic_equilibrium`).
    dtype : dtype of the returned tensors.

    Returns
    -------
    PatchAtmosphere

    Raises
    ------
    ValueError : unknown kind, non-positive size or pixel.
    """
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    if H < 1 or W < 1 or not pixel_arcsec > 0:
        raise ValueError(f"patch size and pixel must be positive, got size={size}, pixel={pixel_arcsec}")
    kind = kind or draw_kind(rng, cfg.kind_fractions)
    if kind not in KINDS:
        raise ValueError(f"unknown patch kind {kind!r}; choose one of {KINDS}")
    he = hydrostatic or _default_hydrostatic()
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    km_px = pixel_arcsec * ARCSEC_KM
    arcsec_px = 1.0 / pixel_arcsec
    lt_np = models.log_tau
    lt = torch.as_tensor(lt_np, dtype=torch.float64)
    n = lt.numel()
    shape = (H, W)

    def U(lohi) -> float:
        return float(rng.uniform(*lohi))

    params: dict[str, Any] = {"kind": kind}

    # ---- quiet-Sun background with granulation --------------------------------------------
    a = float(rng.uniform()) if len(models.quiet) > 1 else 1.0
    T_qs = torch.as_tensor(a * models.quiet[0] + (1 - a) * models.quiet[-1], dtype=torch.float64)
    params["quiet_mix"] = a
    g, s_lane = granulation_pattern(shape, cfg.granule_size_mm * 1000.0 / km_px, gen)
    dT = U(cfg.granule_dT_K)
    dv = U(cfg.granule_dv_kms)
    params.update(granule_dT_K=dT, granule_dv_kms=dv)
    g0 = g - g.mean()
    fT = height_profile(cfg.granule_T_profile, lt_np)
    fv = height_profile(cfg.granule_v_profile, lt_np)
    small = cfg.small_scale_dT_K * gaussian_random_field(shape, max(cfg.small_scale_corr_arcsec * arcsec_px, 0.5), gen)
    T_gran = T_qs + dT * g0[..., None] * fT + small[..., None] * fT.abs()
    v_gran = -dv * 1e5 * g0[..., None] * fv  # cm/s, + = downflow: granules (g > 0) rise

    # ---- weak isotropic internetwork field ----------------------------------------------
    corr_in = max(1.0 * arcsec_px, 1.0)
    b_rms = U(cfg.internetwork_B_G)
    g1, g2 = gaussian_random_field(shape, corr_in, gen), gaussian_random_field(shape, corr_in, gen)
    b_in = b_rms * torch.sqrt((g1**2 + g2**2) / 2)
    cosg = 2 * torch.special.ndtr(gaussian_random_field(shape, corr_in, gen)) - 1
    phi_in = torch.atan2(gaussian_random_field(shape, corr_in, gen), gaussian_random_field(shape, corr_in, gen))
    sing = torch.sqrt(torch.clamp(1 - cosg**2, min=0))
    B_in = torch.stack([b_in * sing * torch.cos(phi_in), b_in * sing * torch.sin(phi_in), b_in * cosg])
    B_in = B_in[..., None].expand(3, H, W, n)
    params["internetwork_B_G"] = b_rms
    B_hf = torch.clamp(1.0 + cfg.B_height_gradient * lt / 3.0, min=0.3)  # |B| decrease with height

    # ---- flux concentrations (plage, network) -----------------------------------------------
    w_fc = torch.zeros(shape, dtype=torch.float64)
    B_fc = torch.zeros(3, H, W, n, dtype=torch.float64)
    T_tube = torch.as_tensor(models.plage, dtype=torch.float64)
    filling = 0.0
    if kind == "plage":
        filling = U(cfg.plage_filling)
    elif rng.uniform() < cfg.network_probability:
        filling = U(cfg.network_filling)
        T_tube = torch.as_tensor(models.network, dtype=torch.float64)
    if filling > 0:
        sig_km = rng.uniform(*cfg.fc_sigma_km, size=1)[0]
        area_px = math.pi * (1.18 * sig_km / km_px) ** 2  # area with w > 1/2
        nb = max(1, int(round(filling * H * W / area_px)))
        sigma_px = rng.uniform(*cfg.fc_sigma_km, size=nb) / km_px
        B0 = rng.uniform(*cfg.fc_B_G, size=nb)
        dominant = 1.0 if rng.uniform() < 0.5 else -1.0
        p_dom = rng.uniform(0.5, 1.0)
        pol = np.where(rng.uniform(size=nb) < p_dom, dominant, -dominant)
        w_fc, B_fc = _flux_concentrations(shape, s_lane, nb, sigma_px, B0, pol, gen, lt_np, 0.1, B_hf)
        params.update(filling=filling, n_flux_tubes=nb)
        # abnormal granulation: weaker convection where the field is strong
        T_gran = T_qs + (T_gran - T_qs) * (1 - 0.6 * w_fc[..., None])
        v_gran = v_gran * (1 - 0.8 * w_fc[..., None])
    wf = w_fc[..., None]
    T_rest = (1 - wf) * T_gran + wf * T_tube
    v_rest = (1 - wf) * v_gran + wf * 0.3e5
    B_rest = (1 - wf)[None] * B_in + B_fc

    # ---- sunspot ----------------------------------------------------------------------------
    w_u = torch.zeros(shape, dtype=torch.float64)
    w_p = torch.zeros(shape, dtype=torch.float64)
    if kind == "spot":
        Ru = U(cfg.spot_umbra_radius_arcsec) * arcsec_px  # pixels
        Rp = Ru * U(cfg.spot_penumbra_ratio)
        dist = rng.uniform(0.0, Rp + 0.5 * arcsec_px)
        ang = rng.uniform(0, 2 * math.pi)
        cy = (H - 1) / 2 + dist * math.sin(ang)
        cx = (W - 1) / 2 + dist * math.cos(ang)
        yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
        ry, rx = yy - cy, xx - cx
        theta = torch.atan2(ry, rx)
        r = torch.sqrt(rx**2 + ry**2)
        # ragged boundaries: radius jitter from a random field (±0.25″)
        rj = r + 0.25 * arcsec_px * gaussian_random_field(shape, max(0.6 * arcsec_px, 1.0), gen)
        delta = max(0.15 * arcsec_px, 0.5)
        w_u = torch.sigmoid((Ru - rj) / delta)
        w_in = torch.sigmoid((Rp - rj) / delta)
        w_p = torch.clamp(w_in - w_u, min=0.0)
        # filaments: periodic random function of the (slightly twisted) position angle
        m = torch.arange(12, 60, dtype=torch.float64)
        amp = torch.rand(m.numel(), generator=gen, dtype=torch.float64)
        ph = 2 * math.pi * torch.rand(m.numel(), generator=gen, dtype=torch.float64)
        twist_fil = 0.15 * (r - Ru) / max(Rp - Ru, 1.0)
        F = (amp[:, None, None] * torch.cos(m[:, None, None] * (theta + twist_fil)[None] + ph[:, None, None])).sum(0)
        F = F / (F.std() + 1e-12)
        F = torch.tanh(F)  # (−1, 1): + bright filament (intraspine), − dark spine
        rho = torch.clamp((r - Ru) / max(Rp - Ru, 1e-6), 0.0, 1.0)
        # thermodynamics
        au = float(rng.uniform()) if len(models.umbra) > 1 else 1.0
        T_u = torch.as_tensor(au * models.umbra[0] + (1 - au) * models.umbra[-1], dtype=torch.float64)
        T_u = T_u + 40.0 * gaussian_random_field(shape, max(0.4 * arcsec_px, 0.5), gen)[..., None] * fT.abs()
        dT_fil = float(rng.uniform(150.0, 400.0))
        T_p = torch.as_tensor(models.penumbra, dtype=torch.float64) + dT_fil * F[..., None] * fT
        # velocities: Evershed-like upflow at the inner, downflow at the outer penumbra
        Vp = float(rng.uniform(0.5, 3.0)) * 1e5
        v_p = Vp * (rho - 0.4)[..., None] * ((1 + F) / 2)[..., None] * torch.clamp(fv, min=0.2)
        v_u = 0.1e5 * gaussian_random_field(shape, max(0.5 * arcsec_px, 0.5), gen)[..., None].expand(H, W, n)
        # magnetic field: strength falls with radius, inclination rises, azimuth radial
        Bu = U(cfg.spot_B_G)
        g_out = U(cfg.penumbra_inclination_deg)
        g_edge = 35.0
        rr = r / max(Rp, 1e-6)
        Bmag = Bu * torch.clamp(1 - 0.75 * rr**2, min=0.2) * (1 - 0.15 * F * w_p)  # weaker in intraspines
        incl = torch.where(r <= Ru, g_edge * (r / max(Ru, 1e-6)) ** 2, g_edge + (g_out - g_edge) * rho)
        # spines (F < 0) more vertical, intraspines (F > 0) more horizontal; the contrast fades
        # with height (uncombed penumbra, Solanki & Montavon 1993)
        fil = 15.0 * F * (r > Ru)
        fil_h = torch.clamp(0.4 + 0.6 * (lt + 3.0) / 3.0, 0.2, 1.2)  # (n,)
        incl_n = torch.clamp(incl[..., None] + fil[..., None] * fil_h, 0.0, 120.0)
        twist = float(rng.uniform(-20.0, 20.0))
        phi = theta + math.radians(twist)
        polarity = 1.0 if rng.uniform() < 0.5 else -1.0
        gam = torch.deg2rad(incl_n)
        bm = (Bmag[..., None] * B_hf)
        B_spot = polarity * torch.stack(
            [bm * torch.sin(gam) * torch.cos(phi)[..., None], bm * torch.sin(gam) * torch.sin(phi)[..., None], bm * torch.cos(gam)]
        )
        wu, wp, wq = w_u[..., None], w_p[..., None], (1 - w_in)[..., None]
        T = wu * T_u + wp * T_p + wq * T_rest
        vlos = wu * v_u + wp * v_p + wq * v_rest
        Bvec = w_in[None, ..., None] * B_spot + (1 - w_in)[None, ..., None] * B_rest
        params.update(
            umbra_radius_arcsec=Ru / arcsec_px,
            penumbra_radius_arcsec=Rp / arcsec_px,
            spot_centre_px=(cy, cx),
            umbra_mix=au,
            spot_B_G=Bu,
            penumbra_outer_inclination_deg=g_out,
            polarity=polarity,
            twist_deg=twist,
        )
    else:
        T = T_rest
        vlos = v_rest
        Bvec = B_rest

    # ---- field clip and spherical components ----------------------------------------------
    Bmod = torch.sqrt((Bvec**2).sum(0))
    scale = torch.clamp(cfg.B_max_G / torch.clamp(Bmod, min=1e-12), max=1.0)
    Bvec = Bvec * scale
    Bx, By, Bz = Bvec[0], Bvec[1], Bvec[2]
    Bmod = torch.sqrt(Bx**2 + By**2 + Bz**2)
    inclination = torch.rad2deg(torch.atan2(torch.sqrt(Bx**2 + By**2), Bz))
    azimuth = torch.remainder(torch.rad2deg(torch.atan2(By, Bx)), 360.0)
    vmic = _uniform_field(shape, max(1.0 * arcsec_px, 1.0), gen, *cfg.vmic_kms)[..., None].expand(H, W, n) * 1e5

    # ---- hydrostatic equilibrium and heights --------------------------------------------
    T = torch.clamp(T, min=2000.0)
    lt_b = lt.expand(H, W, n)
    Pe, Pg, rho_gas, z_loc = he(lt_b, T)
    z_ref, Pg_ref = models.reference_column(he)
    z = wilson_heights(lt, z_loc.to(torch.float64), Pg.to(torch.float64), Bmod, z_ref, Pg_ref, cfg.balance_log_tau)

    def c(x):
        return x.to(dtype).contiguous()

    atmos = Atmosphere(
        log_tau=c(lt_b),
        T=c(T),
        Pe=c(Pe),
        vmic=c(vmic),
        B=c(Bmod),
        vlos=c(vlos),
        inclination=c(inclination),
        azimuth=c(azimuth),
        Pg=c(Pg),
        z=c(z),
    )
    weights = {"umbra": w_u, "penumbra": w_p, "flux": w_fc * (1 - w_u - w_p), "quiet": (1 - w_u - w_p) * (1 - w_fc)}
    return PatchAtmosphere(atmos, c(z), c(Bx), c(By), c(Bz), kind, {k: c(v) for k, v in weights.items()}, params)
