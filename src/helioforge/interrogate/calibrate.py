"""Latent directions in physical units: ΔTUF and ΔR in Mx, ΔPSEP in Mm per unit ε.

The paper (Chatterjee et al. 2025, last paragraph) names this as its future work: "calibrate the
change in magnetic-flux-influencing parameter to the value in actual physical units in Mx". Here
each direction n̂ (plain, or conditioned on any set of the others, as the studio's hold toggles
use it) is calibrated by a fit on generated images:

1. ``n_base`` latent vectors z from N(0, I) (seed ``calibration.seed``) and a symmetric ε grid.
2. The parameters of G(z + ε n̂), converted to the native SHARP scale (:class:`ImageScale`).
3. ΔP(z, ε) = P(z + ε n̂) − P(z) pooled over the bases; the slope through the origin
   s = Σ ε ΔP / Σ ε² in units per ε, with its R² = 1 − Σ (ΔP − s ε)² / Σ (ΔP − mean ΔP)².
4. The range of validity: the slope is fitted on nested windows |ε| ≤ w of the grid; the valid
   range is the widest window whose slope stays within ``linearity_tol`` of the narrowest
   window's (the response is still linear there). The reported slope and R² are that window's.
5. A 95 % bootstrap interval of the slope over the bases, and the same fit along a random unit
   direction (the chance yardstick: what an arbitrary move of the same length does to P).

The native scale (assumption, stated in every product): an N×N generated image stands for a
square patch of ``native_side_px`` SHARP CEA pixels of 0.03° (0.364 Mm at RSUN_REF), i.e. a
pixel side of 0.03° × native_side_px / N; the field is B = image × clip_gauss. Fluxes then
scale by clip_gauss × (pixel side in cm)² and PSEP by the pixel side. Down-sampling averages
B over the pixel, so the flux of a pixel is conserved except where polarities mix inside it,
and clipping at ±clip_gauss removes flux above 1000 G: the calibration is of the generator's
own images, not of the field a real full-resolution patch would have.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from helioforge.data.sharp import RSUN_REF_M
from helioforge.errors import InputError, ProductError
from helioforge.interrogate.config import Profile
from helioforge.interrogate.directions import LatentDirections, conditional_direction, traverse
from helioforge.interrogate.evaluate import image_params
from helioforge.interrogate.gan import Generator, generate
from helioforge.io import write_json
from helioforge.nn.checkpoint import read_json_product

__all__ = ["SHARP_CDELT_DEG", "PHYSICAL_UNITS", "ImageScale", "DirectionFit", "Calibration", "calibrate_directions",
           "fit_response", "parse_physical_move", "keep_key"]

log = logging.getLogger(__name__)

#: SHARP CEA pixel, heliographic degrees (``CDELT1`` of ``hmi.sharp_cea_720s``).
SHARP_CDELT_DEG = 0.03

#: Unit of each calibrated direction (polarity has none: its ε stays dimensionless).
PHYSICAL_UNITS = {"TUF": "Mx", "PSEP": "Mm", "R": "Mx"}


@dataclass(frozen=True)
class ImageScale:
    """The native SHARP scale an N×N image stands for (the calibration's stated assumption).

    Parameters
    ----------
    image_size : N, pixels.
    native_side_px : native SHARP CEA pixels across the patch the image stands for.
    clip_gauss : field of image value 1, G (paper 1000 G).
    cdelt_deg : native pixel, heliographic degrees (SHARP: 0.03°).
    rsun_m : solar radius of the CEA projection, m (JSOC ``RSUN_REF``).
    """

    image_size: int
    native_side_px: float
    clip_gauss: float = 1000.0
    cdelt_deg: float = SHARP_CDELT_DEG
    rsun_m: float = RSUN_REF_M

    @classmethod
    def of(cls, profile: Profile, native_side_px: float | None = None) -> "ImageScale":
        """The scale of a profile's images.

        Parameters
        ----------
        profile : gives N (``data.image_size``), the clip field and the default native side.
        native_side_px : native SHARP pixels across the patch; default the profile's
            ``calibration.native_side_px``, else ``data.tile_px``.

        Returns
        -------
        ImageScale
        """
        side = native_side_px or profile.calibration.native_side_px or profile.data.tile_px
        return cls(profile.data.image_size, float(side), float(profile.data.clip_gauss))

    @property
    def pixel_mm(self) -> float:
        """Side of one N×N image pixel, Mm."""
        return self.cdelt_deg * math.pi / 180.0 * self.rsun_m / 1e6 * self.native_side_px / self.image_size

    @property
    def flux_mx(self) -> float:
        """Mx of one image pixel at image value 1 (clip_gauss × pixel area in cm²)."""
        return self.clip_gauss * (self.pixel_mm * 1e8) ** 2

    def to_physical(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Image-unit parameters (:func:`~helioforge.interrogate.evaluate.image_params`) → Mx, Mm.

        Parameters
        ----------
        params : name → (n,) arrays in image units (kG px, px).

        Returns
        -------
        dict : a new dict: TUF, TPF, TNF, R in Mx, PSEP in Mm; other keys unchanged.
        """
        out = dict(params)
        for k in ("TUF", "TPF", "TNF", "R"):
            if k in out:
                out[k] = np.asarray(out[k], dtype=np.float64) * self.flux_mx
        if "PSEP" in out:
            out["PSEP"] = np.asarray(out["PSEP"], dtype=np.float64) * self.pixel_mm
        return out

    def measure(self, images: np.ndarray, profile: Profile) -> dict[str, np.ndarray]:
        """Parameters of preprocessed images in the paper's image units and at this scale.

        Parameters
        ----------
        images : (n, 1, N, N) images in units of the clip field.
        profile : gives the threshold and the R kernel (:func:`~helioforge.interrogate.evaluate.image_params`).

        Returns
        -------
        dict : name → (n,) arrays: :func:`~helioforge.interrogate.evaluate.image_params`'s keys
            (kG px, px) and ``TUF_Mx``, ``TPF_Mx``, ``TNF_Mx``, ``R_Mx``, ``PSEP_Mm``.
        """
        p = image_params(images, profile)
        phys = self.to_physical(p)
        p.update({f"{k}_{u}": phys[k] for k, u in (("TUF", "Mx"), ("TPF", "Mx"), ("TNF", "Mx"), ("R", "Mx"), ("PSEP", "Mm"))})
        return p

    def describe(self) -> str:
        """The assumption in words, for headers and reports."""
        return (f"an {self.image_size}x{self.image_size} image stands for a square patch of {self.native_side_px:g} SHARP "
                f"CEA pixels of {self.cdelt_deg} deg: pixel {self.pixel_mm:.3f} Mm, B = image x {self.clip_gauss:g} G")


def keep_key(keep: Sequence[str]) -> str:
    """Canonical key of a set of held directions.

    Parameters
    ----------
    keep : direction names, any case (blank entries ignored).

    Returns
    -------
    str : sorted canonical names joined by commas: ``["r", "TUF"]`` → ``"R,TUF"`` ("" for none).
    """
    names = {"tuf": "TUF", "psep": "PSEP", "r": "R", "polarity": "polarity"}
    return ",".join(sorted(names.get(k.strip().lower(), k.strip()) for k in keep if k.strip()))


@dataclass
class DirectionFit:
    """The calibration of one direction (``name`` moved with ``keep`` held).

    slope : change of the parameter per unit ε in ``unit`` (Mx or Mm), on the valid window.
    r2 : R² of the through-origin line on that window (pooled over bases).
    eps_valid : the valid range is |ε| ≤ eps_valid.
    slope_ci : 95 % bootstrap interval of the slope over the bases.
    eps_grid, mean_response : the ε grid and the mean ΔP at each ε (all bases).
    n_base, n_points : bases and (ε, ΔP) pairs used in the fit.
    """

    name: str
    keep: str
    unit: str
    slope: float
    r2: float
    eps_valid: float
    slope_ci: tuple[float, float]
    eps_grid: list[float]
    mean_response: list[float]
    n_base: int
    n_points: int

    @property
    def significant(self) -> bool:
        """Whether the slope's 95 % interval excludes 0 (else a change in units cannot be asked
        for along this direction: its effect is not distinguishable from the scatter)."""
        lo, hi = self.slope_ci
        return bool(np.isfinite(lo) and np.isfinite(hi) and lo * hi > 0)

    @property
    def valid_change(self) -> float:
        """The largest |ΔP| the fit covers: |slope| × eps_valid (in ``unit``)."""
        return abs(self.slope) * self.eps_valid


@dataclass
class Calibration:
    """Every calibrated direction of a work folder, with the scale and the chance yardstick."""

    scale: dict[str, Any]
    fits: dict[str, DirectionFit]
    random_direction: dict[str, dict[str, float]] = field(default_factory=dict)

    def get(self, name: str, keep: Sequence[str] = ()) -> DirectionFit:
        """The fit of direction ``name`` moved with ``keep`` held.

        Raises
        ------
        InputError : no calibration for that direction and hold set (not a calibrated name, or
            a hold set that includes the direction itself).
        """
        key = f"{keep_key([name])}|{keep_key(keep)}"
        if key not in self.fits:
            have = sorted({k.split('|')[0] for k in self.fits})
            raise InputError(f"no physical calibration of {name!r} with {keep_key(keep) or 'nothing'} held; "
                             f"calibrated: {', '.join(have)} (polarity has no physical unit: give its ε)")
        return self.fits[key]

    def save(self, path: str | Path) -> Path:
        """Write as JSON (atomically).

        Parameters
        ----------
        path : destination file.

        Returns
        -------
        Path : the file written.
        """
        return write_json(path, {"scale": self.scale, "random_direction": self.random_direction,
                                 "fits": {k: asdict(v) for k, v in self.fits.items()}})

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        """Read :meth:`save`'s JSON.

        Raises
        ------
        FileNotFoundError : no such file (names the command that makes it).
        ProductError : an unreadable or foreign file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no physical calibration (run `helioforge directions calibrate`)")
        d = read_json_product(path, "direction calibration")
        try:
            fits = {k: DirectionFit(**{**v, "slope_ci": tuple(v["slope_ci"])}) for k, v in d["fits"].items()}
            return cls(d["scale"], fits, d.get("random_direction", {}))
        except (KeyError, TypeError) as exc:
            raise ProductError(path, f"not a direction calibration of this helioforge ({exc})",
                               "redo it with `helioforge directions calibrate --force`") from None

    def table(self) -> list[dict[str, Any]]:
        """One row per fit (name, keep, unit, slope, CI, R², valid range) for reports."""
        return [{"direction": f.name, "keep": f.keep or "-", "unit": f.unit, "per_eps": f.slope,
                 "ci_low": f.slope_ci[0], "ci_high": f.slope_ci[1], "r2": f.r2, "eps_valid": f.eps_valid,
                 "valid_change": f.valid_change, "significant": f.significant, "n_base": f.n_base} for f in self.fits.values()]


def fit_response(eps: np.ndarray, delta: np.ndarray, linearity_tol: float = 0.25, n_boot: int = 200,
                 seed: int = 0) -> dict[str, Any]:
    """Through-origin fit of ΔP against ε with its valid window (module docstring, steps 3–5).

    Parameters
    ----------
    eps : (n_eps,) the ε grid (contains 0).
    delta : (n_base, n_eps) ΔP = P(z + ε n̂) − P(z); NaN entries are left out.
    linearity_tol : relative departure of a window's slope from the narrowest window's that
        ends the valid range.
    n_boot, seed : bootstrap resamples of the bases for the slope's 95 % interval.

    Returns
    -------
    dict : ``slope``, ``r2``, ``eps_valid``, ``slope_ci``, ``mean_response`` (per ε), ``n_points``.

    Raises
    ------
    ValueError : no non-zero ε, or no finite pair in the narrowest window.

    Examples
    --------
    A response exactly 3 per ε up to |ε| = 1 that is flat beyond (the window |ε| ≤ 2 would
    give a slope of 1.8, 40 % off):

    >>> eps = np.array([-3., -2., -1., 0., 1., 2., 3.])
    >>> d = np.tile(3 * np.clip(eps, -1, 1), (4, 1))
    >>> r = fit_response(eps, d)
    >>> r["slope"], r["eps_valid"], round(r["r2"], 6)
    (3.0, 1.0, 1.0)
    """
    eps = np.asarray(eps, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    windows = np.unique(np.abs(eps[eps != 0]))
    if windows.size == 0:
        raise ValueError("the ε grid needs a non-zero value")

    def fit(rows: np.ndarray, w: float) -> tuple[float, float, int]:
        cols = np.abs(eps) <= w
        e = np.broadcast_to(eps[cols], (len(rows), cols.sum())).ravel()
        d = delta[rows][:, cols].ravel()
        ok = np.isfinite(d)
        e, d = e[ok], d[ok]
        if (e != 0).sum() == 0:
            return float("nan"), float("nan"), 0
        s = float((e * d).sum() / (e * e).sum())
        tot = float(((d - d.mean()) ** 2).sum())
        r2 = 1.0 - float(((d - s * e) ** 2).sum()) / tot if tot > 0 else float("nan")
        return s, r2, int(ok.sum())

    rows = np.arange(len(delta))
    s0, _, n0 = fit(rows, windows[0])
    if n0 == 0 or not np.isfinite(s0):
        raise ValueError("no finite response in the narrowest ε window")
    valid = windows[0]
    for w in windows[1:]:
        s, _, _ = fit(rows, w)
        if not np.isfinite(s) or abs(s - s0) > linearity_tol * abs(s0):
            break
        valid = w
    slope, r2, n = fit(rows, valid)
    rng = np.random.default_rng(seed)
    boots = [fit(rng.integers(0, len(delta), len(delta)), valid)[0] for _ in range(n_boot)]
    lo, hi = np.nanpercentile(boots, [2.5, 97.5]) if n_boot else (float("nan"), float("nan"))
    with np.errstate(all="ignore"):
        mean = [float(np.nanmean(delta[:, j])) if np.isfinite(delta[:, j]).any() else float("nan") for j in range(len(eps))]
    return {"slope": slope, "r2": r2, "eps_valid": float(valid), "slope_ci": (float(lo), float(hi)),
            "mean_response": mean, "n_points": n}


def _delta(generator: Generator, profile: Profile, scale: ImageScale, z: np.ndarray, vec: np.ndarray, eps: np.ndarray,
           names: Sequence[str]) -> dict[str, np.ndarray]:
    """ΔP (n_base, n_eps) in physical units for each of ``names`` along ``vec``."""
    zz = traverse(z, vec, eps)
    p = scale.to_physical(image_params(generate(generator, zz, progress=False), profile))
    i0 = int(np.argmin(np.abs(eps)))
    out = {}
    for name in names:
        v = np.asarray(p[name], dtype=np.float64).reshape(len(z), len(eps))
        out[name] = v - v[:, i0:i0 + 1]
    return out


def calibrate_directions(generator: Generator, directions: LatentDirections, profile: Profile,
                         progress: bool = False) -> Calibration:
    """Calibrate every fitted direction of TUF, PSEP and R, plain and with each subset of the
    other fitted directions held (module docstring).

    Parameters
    ----------
    generator : the trained generator (eval mode).
    directions : the SVM directions of the same generator.
    profile : ``calibration`` (bases, ε grid, tolerance, seed, native side) and ``data``
        (N, clip) settings.
    progress : log each fit.

    Returns
    -------
    Calibration

    Raises
    ------
    ValueError : no direction of TUF, PSEP or R was fitted, or the ε grid has no 0.
    """
    cfg = profile.calibration
    eps = np.linspace(-cfg.eps_max, cfg.eps_max, cfg.n_eps)
    if not np.any(np.isclose(eps, 0.0)):
        raise ValueError(f"calibration.n_eps must be odd (the ε grid needs 0), got {cfg.n_eps}")
    eps[np.isclose(eps, 0.0)] = 0.0
    scale = ImageScale.of(profile)
    rng = np.random.default_rng(cfg.seed)
    z = rng.standard_normal((cfg.n_base, generator.latent_dim))
    names = [n for n in PHYSICAL_UNITS if directions.has(n)]
    if not names:
        raise ValueError(f"no direction of {', '.join(PHYSICAL_UNITS)} was fitted; nothing to calibrate")
    fitted = [n for n in ("TUF", "PSEP", "R", "polarity") if directions.has(n)]
    fits: dict[str, DirectionFit] = {}
    for name in names:
        others = [o for o in fitted if o != name]
        for r in range(len(others) + 1):
            for keep in itertools.combinations(others, r):
                vec = conditional_direction(directions.get(name), [directions.get(k) for k in keep])
                res = fit_response(eps, _delta(generator, profile, scale, z, vec, eps, [name])[name],
                                   cfg.linearity_tol, cfg.n_bootstrap, cfg.seed)
                key = f"{name}|{keep_key(keep)}"
                fits[key] = DirectionFit(name=name, keep=keep_key(keep), unit=PHYSICAL_UNITS[name],
                                         slope=res["slope"], r2=res["r2"], eps_valid=res["eps_valid"],
                                         slope_ci=res["slope_ci"], eps_grid=[float(e) for e in eps],
                                         mean_response=res["mean_response"], n_base=len(z), n_points=res["n_points"])
                if progress:
                    log.info("calibration %-5s keep %-14s %.3e %s/eps  R2 %.2f  |eps| <= %g", name, keep_key(keep) or "-",
                             res["slope"], PHYSICAL_UNITS[name], res["r2"], res["eps_valid"])
    # the chance yardstick: the same fit along a random unit direction of the latent space
    rand = rng.standard_normal(generator.latent_dim)
    rand /= np.linalg.norm(rand)
    d = _delta(generator, profile, scale, z, rand, eps, names)
    random_direction = {}
    for name in names:
        res = fit_response(eps, d[name], cfg.linearity_tol, 0, cfg.seed)
        random_direction[name] = {"slope": res["slope"], "r2": res["r2"], "eps_valid": res["eps_valid"]}
    scale_d = {**asdict(scale), "pixel_mm": scale.pixel_mm, "flux_mx_per_pixel": scale.flux_mx, "assumption": scale.describe()}
    return Calibration(scale_d, fits, random_direction)


_MOVE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")


def parse_physical_move(name: str, value: str) -> tuple[float, str | None]:
    """``"+2e22Mx"`` → ``(2e22, "Mx")``; ``"+5Mm"`` → ``(5.0, "Mm")``; ``"1.5"`` → ``(1.5, None)`` (ε).

    A value with a unit is converted to the direction's unit (:data:`PHYSICAL_UNITS`) with
    astropy, so ``psep=+5000km`` is 5 Mm.

    Raises
    ------
    InputError : not a number with an optional unit, an unknown unit, a unit of the wrong
        kind for the direction (``tuf=+3Mm``), a unit on polarity, or a non-finite value.

    Examples
    --------
    >>> parse_physical_move("tuf", "+2e22Mx")
    (2e+22, 'Mx')
    >>> parse_physical_move("psep", "-5000km")
    (-5.0, 'Mm')
    >>> parse_physical_move("r", "0.5")
    (0.5, None)
    """
    try:
        finite = math.isfinite(float(value))
    except ValueError:
        finite = True  # not a bare number: the pattern below decides
    if not finite:
        raise InputError(f"--move {name}={value}: the shift must be a finite number")
    m = _MOVE.match(str(value))
    if not m:
        raise InputError(f"--move {name}={value}: {value!r} is not a number with an optional unit "
                         "(e.g. tuf=+2, tuf=+2e22Mx, psep=+5Mm)")
    number, unit = float(m.group(1)), m.group(2)
    if not math.isfinite(number):
        raise InputError(f"--move {name}={value}: the shift must be finite")
    if not unit:
        return number, None
    target = PHYSICAL_UNITS.get(keep_key([name]))
    if target is None:
        raise InputError(f"--move {name}={value}: {name} has no physical unit; give its ε (e.g. {name}=+1)")
    import astropy.units as u

    try:
        q = (number * u.Unit(unit)).to(u.Unit(target))
    except ValueError:
        raise InputError(f"--move {name}={value}: {unit!r} is not a unit of {target} (or not a unit astropy knows)") from None
    return float(q.value), target
